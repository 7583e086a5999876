//! Server-list sources end to end: the real rsbal binary reading its lists
//! from a small HTTP server of the test's own and from a real etcd, with a
//! fake ipvsadm recording what is pooled. A failing source must never empty
//! a pool, and its failures must be counted in `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a failed set-up panics; helpers are shared by several crates

mod common;

use common::etcd::Etcd;
use common::pool::{add, del, edit, legacy_list as legacy, PORT};
use common::*;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// What the list server answers.
#[derive(Debug, Clone)]
enum Reply {
    /// 200 with this body and an ETag; 304 when the client has it.
    List(String),
    /// This status, no body.
    Status(u16),
    /// 200 announcing more bytes than it sends, then closing.
    Truncated(String),
    /// 200 with an empty body.
    Empty,
}

struct ListServerShared {
    reply: Mutex<Reply>,
    requests: AtomicU64,
    not_modified: AtomicU64,
    stop: AtomicBool,
}

/// A tiny HTTP server on a std `TcpListener` that serves one server list.
struct ListServer {
    addr: SocketAddr,
    shared: Arc<ListServerShared>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ListServer {
    fn start(ip: IpAddr, reply: Reply) -> ListServer {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(ListServerShared {
            reply: Mutex::new(reply),
            requests: AtomicU64::new(0),
            not_modified: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let thread = thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => answer(stream, &s),
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        ListServer {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    fn set(&self, reply: Reply) {
        *self.shared.reply.lock().unwrap() = reply;
    }

    fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }

    fn not_modified(&self) -> u64 {
        self.shared.not_modified.load(Ordering::SeqCst)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for ListServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn etag(body: &str) -> String {
    let mut h = DefaultHasher::new();
    body.hash(&mut h);
    format!("\"{:x}\"", h.finish())
}

/// Reads one request head and answers it as the current [`Reply`] says.
fn answer(mut stream: TcpStream, shared: &ListServerShared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
        }
    }
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let if_none_match = head
        .lines()
        .find_map(|l| l.strip_prefix("if-none-match:"))
        .map(|v| v.trim().to_string());
    let reply = shared.reply.lock().unwrap().clone();
    let response = match reply {
        Reply::List(body) => {
            let tag = etag(&body);
            if if_none_match.as_deref() == Some(tag.as_str()) {
                shared.not_modified.fetch_add(1, Ordering::SeqCst);
                format!("HTTP/1.1 304 Not Modified\r\nETag: {tag}\r\nConnection: close\r\n\r\n")
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nETag: {tag}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            }
        }
        Reply::Status(status) => {
            format!("HTTP/1.1 {status} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        }
        Reply::Truncated(body) => format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len() + 100
        ),
        Reply::Empty => {
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string()
        }
    };
    let _ = stream.write_all(response.as_bytes());
}

/// `[global]` with the fake ipvsadm and instrumentation on `http`.
fn global(ipvsadm: &FakeIpvsadm, http: SocketAddr) -> String {
    format!(
        "[global]\nipvsadm = {}\nipvs-backend = ipvsadm\nipvs-reconcile-interval = 0\ninstrumentation = yes\ninstrumentation_port = {}\ninstrumentation_ips = ['{}']\n\n",
        ipvsadm.script.display(),
        http.port(),
        http.ip()
    )
}

/// A service without monitors whose list comes from `config`.
fn service(name: &str, vip: &str, config: &str, extra: &str) -> String {
    format!(
        "[{name}]\nprotocol = tcp\nip = {vip}\nport = {PORT}\nscheduler = wrr\n\
         config = {config}\nmonitors = []\n{extra}\n"
    )
}

/// `rsbal_config_source_errors_total{service=…}` from `/metrics`.
fn source_errors(http: SocketAddr, service: &str) -> Option<u64> {
    let (_, body) = http_get(http, "/metrics", false)?;
    let prefix = format!("rsbal_config_source_errors_total{{service=\"{service}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Waits until the error counter of `service` reaches `n`.
fn assert_errors_reach(http: SocketAddr, service: &str, n: u64) -> u64 {
    let mut seen = None;
    let ok = wait_until(T, || {
        seen = source_errors(http, service);
        seen.is_some_and(|v| v >= n)
    });
    assert!(ok, "{service}: source errors {seen:?}, expected >= {n}");
    seen.unwrap_or_default()
}

/// Waits a little and checks that ipvsadm got no command meanwhile.
fn assert_pool_untouched(ipvsadm: &FakeIpvsadm, during: Duration) {
    let before = ipvsadm.lines();
    thread::sleep(during);
    let after = ipvsadm.lines();
    assert_eq!(
        before,
        after,
        "pool changed while the source was failing: {:?}",
        &after[before.len().min(after.len())..]
    );
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let conf = dir.join("rsbal.conf");
    std::fs::write(&conf, text).unwrap();
    conf
}

#[test]
fn http_lists_follow_good_versions_and_survive_failures() {
    let dir = tempfile::tempdir().unwrap();
    let ipvsadm = FakeIpvsadm::new(dir.path());
    let http = SocketAddr::new(lo(20, 1), free_port());
    let (a, b, c) = ("127.20.0.11", "127.20.0.12", "127.20.0.13");
    let (vip, json_vip) = ("192.0.2.20", "192.0.2.21");
    let lists = ListServer::start(
        lo(20, 2),
        Reply::List(legacy(&[(a, 10, true), (b, 20, true)])),
    );
    let json_list = ListServer::start(
        lo(20, 3),
        Reply::List(format!("{{\"{c}\": {{\"weight\": 7, \"enabled\": true}}}}")),
    );
    let poll = "config-poll-interval = 0.2\nconfig-timeout = 1\n";
    let conf = write_config(
        dir.path(),
        &(global(&ipvsadm, http)
            + &service("web", vip, &lists.url("/pools/web"), poll)
            + &service("api", json_vip, &json_list.url("/pools/api.json?v=1"), poll)),
    );
    let rsbal = Rsbal::start(&conf, &[]);

    ipvsadm.assert_seen(&add(vip, a, 10), 1);
    ipvsadm.assert_seen(&add(vip, b, 20), 1);
    // The `.json` URL is read as JSON.
    ipvsadm.assert_seen(&add(json_vip, c, 7), 1);
    // Unchanged lists are not sent again: the client asks conditionally.
    assert!(
        wait_until(T, || lists.not_modified() >= 3),
        "no conditional requests: {} requests, {} answered 304",
        lists.requests(),
        lists.not_modified()
    );
    assert_eq!(source_errors(http, "web"), Some(0));

    // A new version: weight changed, one removed, one added.
    lists.set(Reply::List(legacy(&[(a, 15, true), (c, 30, true)])));
    ipvsadm.assert_seen(&edit(vip, a, 15), 1);
    ipvsadm.assert_seen(&del(vip, b), 1);
    ipvsadm.assert_seen(&add(vip, c, 30), 1);

    // 500s: counted every poll, logged once, the pool stays.
    lists.set(Reply::Status(500));
    assert_errors_reach(http, "web", 3);
    assert_pool_untouched(&ipvsadm, Duration::from_millis(600));
    assert_eq!(
        rsbal.log_text().matches("HTTP status 500").count(),
        1,
        "failure not logged exactly once:\n{}",
        rsbal.log_text()
    );

    // A truncated body (half of a list that would empty nothing, but is cut).
    let errors = source_errors(http, "web").unwrap_or_default();
    lists.set(Reply::Truncated(legacy(&[(a, 99, true)])));
    assert_errors_reach(http, "web", errors + 2);
    assert!(wait_until(T, || rsbal
        .log_text()
        .contains("reading the body")));
    assert_pool_untouched(&ipvsadm, Duration::from_millis(600));

    // An empty body: zero servers while the last list had some (counted on
    // every poll while it lasts, though parsed once).
    let errors = source_errors(http, "web").unwrap_or_default();
    lists.set(Reply::Empty);
    assert_errors_reach(http, "web", errors + 3);
    assert_pool_untouched(&ipvsadm, Duration::from_millis(600));
    assert!(rsbal.log_text().contains("list has no servers"));

    // Good again: the next version applies.
    lists.set(Reply::List(legacy(&[(a, 15, true), (c, 35, true)])));
    ipvsadm.assert_seen(&edit(vip, c, 35), 1);
    assert!(wait_until(T, || rsbal.log_text().contains("is good again")));

    // Through all of it the pool never lost a or c, and the JSON service
    // never saw an error.
    for line in ipvsadm.lines() {
        assert!(
            line != del(vip, a) && line != del(vip, c),
            "{line}: {:#?}",
            ipvsadm.lines()
        );
    }
    assert_eq!(source_errors(http, "api"), Some(0));
    drop(rsbal);
}

#[test]
fn etcd_lists_follow_changes_and_survive_an_etcd_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ipvsadm = FakeIpvsadm::new(dir.path());
    let http = SocketAddr::new(lo(21, 1), free_port());
    let mut etcd = Etcd::new(lo(21, 2), dir.path());
    etcd.start();
    let pool = "/conftool/v1/pools/test/web";
    let (a, b, c, d) = ("127.21.0.11", "127.21.0.12", "127.21.0.13", "127.21.0.14");
    etcd.put_server(pool, a, 10, "yes");
    etcd.put_server(pool, b, 20, "yes");
    let vip = "192.0.2.30";
    let conf = write_config(
        dir.path(),
        &(global(&ipvsadm, http)
            + &service(
                "web",
                vip,
                &format!("etcd+http://{}{pool}", etcd.client),
                "config-timeout = 2\n",
            )),
    );
    let rsbal = Rsbal::start(&conf, &[]);

    ipvsadm.assert_seen(&add(vip, a, 10), 1);
    ipvsadm.assert_seen(&add(vip, b, 20), 1);

    // Added.
    etcd.put_server(pool, c, 30, "yes");
    ipvsadm.assert_seen(&add(vip, c, 30), 1);
    // Disabled: depooled.
    etcd.put_server(pool, b, 20, "no");
    ipvsadm.assert_seen(&del(vip, b), 1);
    // Inactive: gone.
    etcd.put_server(pool, c, 30, "inactive");
    ipvsadm.assert_seen(&del(vip, c), 1);
    // Pooled again, then deleted.
    etcd.put_server(pool, b, 20, "yes");
    ipvsadm.assert_seen(&add(vip, b, 20), 2);
    etcd.delete(&format!("{pool}/{b}"));
    ipvsadm.assert_seen(&del(vip, b), 2);
    // Weight change.
    etcd.put_server(pool, a, 25, "yes");
    ipvsadm.assert_seen(&edit(vip, a, 25), 1);
    assert_eq!(source_errors(http, "web"), Some(0));

    // etcd dies: the pool stays, the failure is counted and logged.
    etcd.kill();
    assert_errors_reach(http, "web", 1);
    assert_pool_untouched(&ipvsadm, Duration::from_secs(2));
    assert!(rsbal.log_text().contains("failing"));

    // etcd is back with its data: rsbal reads it again and watches on.
    etcd.start();
    etcd.put_server(pool, a, 30, "yes");
    ipvsadm.assert_seen(&edit(vip, a, 30), 1);
    etcd.put_server(pool, d, 5, "yes");
    ipvsadm.assert_seen(&add(vip, d, 5), 1);
    assert!(wait_until(T, || rsbal.log_text().contains("is good again")));
    assert!(
        !ipvsadm.lines().contains(&del(vip, a)),
        "{:#?}",
        ipvsadm.lines()
    );

    // A reload that replaces the source ends the blocked long-poll at once
    // (etcd's count of v2 watchers drops to zero), not at its timeout.
    assert!(
        wait_until(T, || etcd.v2_watchers() == Some(1)),
        "{:?}",
        etcd.v2_watchers()
    );
    let list = write_atomic(
        dir.path(),
        "web",
        &format!("{{'host': '{a}', 'weight': 30}}\n{{'host': '{d}', 'weight': 5}}\n"),
    );
    write_config(
        dir.path(),
        &(global(&ipvsadm, http) + &service("web", vip, &format!("file://{}", list.display()), "")),
    );
    rsbal.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || etcd.v2_watchers() == Some(0)),
        "the old etcd watch is still open: {:?} watchers",
        etcd.v2_watchers()
    );
    assert!(rsbal.log_text().contains("applying changed configuration"));
    assert!(!ipvsadm.lines().contains(&del(vip, a)));
    drop(rsbal);
}

/// rsbal with `SSL_CERT_FILE` set (or not).
fn rsbal_with_ca(conf: &Path, ca: Option<&Path>) -> Rsbal {
    let log = conf.with_extension("log");
    let out = std::fs::File::create(&log).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rsbal"));
    command
        .arg("-d")
        .arg("-c")
        .arg(conf)
        .env_remove("SSL_CERT_FILE")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    if let Some(ca) = ca {
        command.env("SSL_CERT_FILE", ca);
    }
    Rsbal {
        child: command.spawn().unwrap(),
        log,
    }
}

#[test]
fn https_lists_are_verified_against_the_trusted_cas() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ipvsadm = FakeIpvsadm::new(d);
    let ip = lo(20, 4);
    // A private CA and a certificate for the list server's address.
    self_signed(d, "/CN=rsbal test CA", "ca.key", "ca.pem");
    openssl(
        d,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={ip}"),
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(d.join("san.ext"), format!("subjectAltName=IP:{ip}\n")).unwrap();
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ],
    );
    write_atomic(d, "list", "{'host': '127.20.0.15', 'weight': 10}\n");
    let port = free_port();
    let _server = https_file_server(d, "server.pem", "server.key", SocketAddr::new(ip, port));
    let vip = "192.0.2.40";
    let conf = write_config(
        d,
        &(global(&ipvsadm, SocketAddr::new(lo(20, 5), free_port()))
            + &service("tls", vip, &format!("https://{ip}:{port}/list"), "")),
    );

    // Not signed by a CA rsbal trusts: refused, nothing pooled.
    let rsbal = rsbal_with_ca(&conf, None);
    assert!(
        wait_until(T, || rsbal.log_text().contains("invalid peer certificate")),
        "{}",
        rsbal.log_text()
    );
    assert!(!ipvsadm.lines().iter().any(|l| l.starts_with("-a")));
    drop(rsbal);

    // With the CA trusted through SSL_CERT_FILE the list is read.
    let rsbal = rsbal_with_ca(&conf, Some(&d.join("ca.pem")));
    ipvsadm.assert_seen(&add(vip, "127.20.0.15", 10), 1);
    drop(rsbal);
}
