//! A real etcd (Debian's `etcd-server`) on loopback for tests, with its v2
//! keys API enabled, and a small v2 client to change keys.

use super::wait_until;
use std::fs;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One etcd member; killed when dropped. Its data directory outlives
/// [`Etcd::kill`], so [`Etcd::start`] brings it back with the same keys.
pub struct Etcd {
    pub client: SocketAddr,
    peer: SocketAddr,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A port free on `ip` right now (bound and released).
fn free_port_on(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

impl Etcd {
    /// An etcd listening on `ip` (client and peer ports picked free), keeping
    /// its data and log under `dir`. Not started yet.
    pub fn new(ip: IpAddr, dir: &Path) -> Etcd {
        Etcd {
            client: SocketAddr::new(ip, free_port_on(ip)),
            peer: SocketAddr::new(ip, free_port_on(ip)),
            data_dir: dir.join("etcd-data"),
            log: dir.join("etcd.log"),
            child: None,
        }
    }

    /// Starts the member and waits until its v2 API answers.
    pub fn start(&mut self) {
        let client = format!("http://{}", self.client);
        let peer = format!("http://{}", self.peer);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut command = Command::new("etcd");
        command
            .arg("--name=rsbal-test")
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg("--enable-v2=true")
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=rsbal-test={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if !cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            command.env("ETCD_UNSUPPORTED_ARCH", std::env::consts::ARCH);
        }
        self.child = Some(
            command
                .spawn()
                .expect("cannot run etcd (apt-get install etcd-server)"),
        );
        let url = format!("{client}/v2/keys/?recursive=true");
        assert!(
            wait_until(Duration::from_secs(30), || ureq::get(&url).call().is_ok()),
            "etcd did not come up; its log:\n{}",
            fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// SIGKILL, as a crash; the data directory stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn key_url(&self, key: &str) -> String {
        format!("http://{}/v2/keys{key}", self.client)
    }

    /// Sets `key` to `value` (v2 `PUT`).
    pub fn put(&self, key: &str, value: &str) {
        let response = ureq::put(&self.key_url(key))
            .send_form([("value", value)])
            .unwrap_or_else(|e| panic!("PUT {key}: {e}"));
        assert!(response.status().is_success(), "PUT {key}: {response:?}");
    }

    /// Deletes `key` (v2 `DELETE`).
    pub fn delete(&self, key: &str) {
        let response = ureq::delete(&self.key_url(key))
            .call()
            .unwrap_or_else(|e| panic!("DELETE {key}: {e}"));
        assert!(response.status().is_success(), "DELETE {key}: {response:?}");
    }

    /// etcd's gauge of open v2 watches (`etcd_debugging_store_watchers`).
    pub fn v2_watchers(&self) -> Option<u64> {
        let text = ureq::get(&format!("http://{}/metrics", self.client))
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("etcd_debugging_store_watchers "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    }

    /// conftool's value of a server: `{"weight": w, "pooled": "yes|no|inactive"}`.
    pub fn put_server(&self, dir: &str, host: &str, weight: u32, pooled: &str) {
        self.put(
            &format!("{dir}/{host}"),
            &format!("{{\"weight\": {weight}, \"pooled\": \"{pooled}\"}}"),
        );
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- etcd log (tail) ----\n{}",
                fs::read_to_string(&self.log)
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}
