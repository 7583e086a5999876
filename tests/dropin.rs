//! rsbal in PyBal's place: what a balancer's operators and PyBal's consumers
//! see. ProxyFetch over https verifies nothing unless asked (as PyBal's
//! Twisted client) and sends the URL's host as SNI and Host, a stopped
//! IdleConnection never reconnects, every log line
//! has PyBal's `[system] LEVEL: text` shape, and `/pools/<pool>/<host>` has
//! exactly the keys conftool's safe-service-restart accepts.
//! Addresses: 127.125.0.0/16.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a failed set-up panics; helpers are shared by several crates

mod common;

use common::pool::{del, legacy_list, PORT};
use common::*;
use nix::sys::signal::Signal;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// `[global]` with the fake ipvsadm and instrumentation on `api`.
fn global(ipvsadm: &FakeIpvsadm, api: SocketAddr) -> String {
    format!(
        "[global]\nipvsadm = {}\nipvs-backend = ipvsadm\nipvs-reconcile-interval = 0\n\
         instrumentation = yes\ninstrumentation_port = {}\ninstrumentation_ips = ['{}']\n\n",
        ipvsadm.script.display(),
        api.port(),
        api.ip()
    )
}

/// A TCP service on `vip`:`port` with the servers of `list` and `monitors`.
fn service(name: &str, vip: &str, port: u16, list: &Path, monitors: &str) -> String {
    format!(
        "[{name}]\nprotocol = tcp\nip = {vip}\nport = {port}\nscheduler = wrr\n\
         config = file://{}\n{monitors}\n",
        list.display()
    )
}

/// `GET /pools/<pool>/<host>` as safe-service-restart sends it (JSON): the
/// object must have exactly PyBal's four keys, booleans as JSON booleans.
fn server_state(api: SocketAddr, pool: &str, host: &str) -> Option<serde_json::Value> {
    let (status, body) = http_get(api, &format!("/pools/{pool}/{host}"), true)?;
    if status != 200 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let keys: BTreeSet<&str> = v.as_object()?.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["enabled", "pooled", "up", "weight"]),
        "{body}"
    );
    for key in ["enabled", "pooled", "up"] {
        assert!(v[key].is_boolean(), "{body}");
    }
    Some(v)
}

/// Whether `/pools/<pool>/<host>` says `up`.
fn is_up(api: SocketAddr, pool: &str, host: &str) -> Option<bool> {
    server_state(api, pool, host)?["up"].as_bool()
}

/// Every line of rsbal's log (`-d`: with a timestamp first) has PyBal's
/// shape `[<system>] <LEVEL>: <text>`, the system being no Rust module path.
fn assert_pybal_shape(log: &str, timestamped: bool) {
    for line in log.lines() {
        let rest = if timestamped {
            line.split_once(' ').map_or("", |(_, rest)| rest)
        } else {
            line
        };
        let ok = rest
            .strip_prefix('[')
            .and_then(|r| r.split_once("] "))
            .is_some_and(|(system, text)| {
                !system.is_empty()
                    && !system.contains("::")
                    && ["DEBUG", "INFO", "WARN", "ERROR", "CRITICAL"]
                        .iter()
                        .any(|level| text.starts_with(&format!("{level}: ")))
            });
        assert!(
            ok || line.starts_with('\t'),
            "not PyBal's log shape: {line:?}\n{log}"
        );
    }
}

/// A TLS server (Python's `ssl`, certificate `server.pem`): logs each
/// connection's SNI and request head, answers 200.
const TLS_SERVER: &str = r#"
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain('server.pem', 'server.key')
def sni(sock, name, c):
    print('SNI:', repr(name), flush=True)
ctx.sni_callback = sni
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
while True:
    c, _ = s.accept()
    c.settimeout(5)
    try:
        t = ctx.wrap_socket(c, server_side=True)
        data = b''
        while b'\r\n\r\n' not in data:
            chunk = t.recv(4096)
            if not chunk:
                break
            data += chunk
        print('REQUEST:', data.split(b'\r\n\r\n')[0].decode() + '\r\n', flush=True)
        t.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n')
        t.close()
    except Exception as e:
        print('ERROR:', e, flush=True)
        c.close()
"#;

#[test]
fn proxyfetch_https_verifies_nothing_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ipvsadm = FakeIpvsadm::new(d);
    // A self-signed certificate for a name that is neither the URL's host
    // (localhost) nor the server's address, as real servers have.
    self_signed(d, "/CN=appserver.example.org", "server.key", "server.pem");
    let server = "127.125.0.2";
    let port = free_port();
    let seen = d.join("tls-server.log");
    let _tls = KillOnDrop(
        Command::new("/usr/bin/python3")
            .args(["-c", TLS_SERVER, server, &port.to_string()])
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&seen).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(wait_until(T, || TcpStream::connect((server, port)).is_ok()));
    let list = write_atomic(d, "servers", &legacy_list(&[(server, 10, true)]));
    let monitor = |extra: &str| {
        format!(
            "monitors = [ 'ProxyFetch' ]\nproxyfetch.url = [ 'https://localhost/health' ]\n\
             proxyfetch.interval = 1\nproxyfetch.timeout = 2\n{extra}"
        )
    };
    let api = SocketAddr::new(IpAddr::from([127, 125, 0, 1]), free_port());
    let config = write_atomic(
        d,
        "rsbal.conf",
        &(global(&ipvsadm, api)
            + &service("plain", "192.0.2.125", port, &list, &monitor(""))
            + &service(
                "verified",
                "192.0.2.126",
                port,
                &list,
                &monitor("proxyfetch.verify-tls = yes\n"),
            )),
    );
    let rsbal = Rsbal::start(&config, &[]);

    // As PyBal: the handshake completes and the status decides. (A new
    // server starts up: wait for results, not for the first state.)
    let series = |name: &str, svc: &str| {
        format!("{name}{{host=\"{server}\",monitor=\"ProxyFetch\",service=\"{svc}\"}} ")
    };
    let metric = |line: &str| -> Option<String> {
        let (_, body) = http_get(api, "/metrics", false)?;
        body.lines()
            .find_map(|l| l.strip_prefix(line).map(str::to_string))
    };
    let ok = wait_until(T, || {
        metric(&series("pybal_monitor_up_results_total", "plain")).is_some()
            && metric(&series("pybal_monitor_down_results_total", "verified")).is_some()
    });
    assert!(ok, "{}", rsbal.log_text());
    // Verified: the certificate is for another name and from no trusted CA.
    // What the PybalBackendDown alert reads: status 0.0 and down results.
    assert_eq!(is_up(api, "verified", server), Some(false));
    assert_eq!(
        metric(&series("pybal_monitor_status", "verified")).as_deref(),
        Some("0.0")
    );
    assert!(
        rsbal.log_text().contains("certificate"),
        "{}",
        rsbal.log_text()
    );
    // The default check succeeds, and keeps succeeding.
    assert_eq!(is_up(api, "plain", server), Some(true));
    thread::sleep(Duration::from_secs(2));
    assert_eq!(is_up(api, "plain", server), Some(true));
    assert_eq!(
        metric(&series("pybal_monitor_status", "plain")).as_deref(),
        Some("1.0")
    );
    assert_eq!(
        metric(&series("pybal_monitor_down_results_total", "plain")),
        None
    );
    // The URL's host went out as SNI (PyBal sent none) and in Host.
    let seen = std::fs::read_to_string(&seen).unwrap().to_lowercase();
    assert!(seen.contains("sni: 'localhost'\n"), "{seen}");
    assert!(!seen.contains("sni: none"), "{seen}");
    assert!(seen.contains("request: get /health http/1.1\r\n"), "{seen}");
    assert!(seen.contains("\r\nhost: localhost\r\n"), "{seen}");
    assert_pybal_shape(&rsbal.log_text(), true);
}

/// A TCP backend that counts the connections it accepts and keeps them open.
struct CountingBackend {
    accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl CountingBackend {
    fn start(addr: SocketAddr) -> CountingBackend {
        let listener = TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (Arc::clone(&accepted), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let open = Mutex::new(Vec::new());
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        open.lock().unwrap().push(stream);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        CountingBackend {
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for CountingBackend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const RECONNECTING: &str = "connection closed cleanly, reconnecting";

#[test]
fn stopped_idle_connection_monitors_never_reconnect() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ipvsadm = FakeIpvsadm::new(d);
    // Many servers: the race the stop order closes is lost by some of them.
    let hosts: Vec<String> = (2..=25).map(|h| format!("127.125.1.{h}")).collect();
    let backends: Vec<CountingBackend> = hosts
        .iter()
        .map(|h| CountingBackend::start(SocketAddr::new(h.parse().unwrap(), PORT)))
        .collect();
    let all: Vec<(&str, u32, bool)> = hosts.iter().map(|h| (h.as_str(), 10, true)).collect();
    let list = write_atomic(d, "servers", &legacy_list(&all));
    let vip = "192.0.2.127";
    let api = SocketAddr::new(IpAddr::from([127, 125, 1, 1]), free_port());
    let config = write_atomic(
        d,
        "rsbal.conf",
        &(global(&ipvsadm, api)
            + &service(
                "idle",
                vip,
                PORT,
                &list,
                "monitors = [ 'IdleConnection' ]\nidleconnection.timeout-clean-reconnect = 1\n",
            )),
    );
    let mut rsbal = Rsbal::start(&config, &[]);
    assert!(
        wait_until(T, || backends.iter().all(|b| b.accepted() == 1)),
        "{}",
        rsbal.log_text()
    );

    // Half the servers leave the list: their monitors stop for good.
    let (kept, removed) = all.split_at(hosts.len() / 2);
    write_atomic(d, "servers", &legacy_list(kept));
    for (host, _, _) in removed {
        ipvsadm.assert_seen(&del(vip, host), 1);
    }
    thread::sleep(Duration::from_millis(1500));
    let counts: Vec<u64> = backends.iter().map(CountingBackend::accepted).collect();
    assert!(counts.iter().all(|n| *n == 1), "{counts:?}");
    assert!(
        !rsbal.log_text().contains(RECONNECTING),
        "{}",
        rsbal.log_text()
    );

    // SIGTERM: the remaining monitors stop, none reconnects on its way out.
    rsbal.signal(Signal::SIGTERM);
    assert!(rsbal.wait_exit(T).is_some(), "rsbal did not exit");
    thread::sleep(Duration::from_millis(500));
    let counts: Vec<u64> = backends.iter().map(CountingBackend::accepted).collect();
    assert!(counts.iter().all(|n| *n == 1), "{counts:?}");
    let log = rsbal.log_text();
    assert!(!log.contains(RECONNECTING), "{log}");
    assert_pybal_shape(&log, true);
}

/// Without `-d` (as under systemd): every line of stderr has PyBal's shape,
/// from start-up through a reload to the exit, and the instrumentation server
/// announces itself once.
#[test]
fn every_log_line_has_pybal_shape() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ipvsadm = FakeIpvsadm::new(d);
    let up = "127.125.2.2";
    let _backend = Backend::start(SocketAddr::new(up.parse().unwrap(), PORT));
    // 127.125.2.3 refuses: warnings and errors are logged too.
    let list = write_atomic(
        d,
        "servers",
        &legacy_list(&[(up, 10, true), ("127.125.2.3", 10, true)]),
    );
    let api = SocketAddr::new(IpAddr::from([127, 125, 2, 1]), free_port());
    let config = write_atomic(
        d,
        "rsbal.conf",
        &(global(&ipvsadm, api)
            + &service(
                "shape",
                "192.0.2.128",
                PORT,
                &list,
                "monitors = [ 'IdleConnection', 'ProxyFetch' ]\n\
                 proxyfetch.url = [ 'http://localhost/' ]\nproxyfetch.interval = 1\n\
                 idleconnection.max-delay = 1\nunknown-key = 1\n",
            )),
    );
    let log_path = d.join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_rsbal"))
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let read = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        wait_until(T, || is_up(api, "shape", "127.125.2.3") == Some(false)),
        "{}",
        read()
    );
    let pid = nix::unistd::Pid::from_raw(child.0.id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGHUP).unwrap();
    assert!(wait_until(T, || read().contains("reload")), "{}", read());
    nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
    assert!(wait_until(T, || matches!(child.0.try_wait(), Ok(Some(_)))));
    let text = read();
    eprintln!("{text}");
    assert!(text.contains("unknown key"), "{text}");
    assert_pybal_shape(&text, false);
    let listening: Vec<&str> = text.lines().filter(|l| l.contains("listening")).collect();
    assert_eq!(listening.len(), 1, "{text}");
    assert!(listening[0].starts_with("[rsbal] INFO: "), "{text}");
}
