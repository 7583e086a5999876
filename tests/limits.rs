//! Issue 13, items 2 and 4: rsbal's own limits. A config that cannot fit
//! the process's limits is refused at start (before IPVS is touched) and
//! rejected on reload, and `--check` prints the figures; a resource that
//! runs out at run time (EMFILE, forced with `prlimit --pid`) changes no
//! server and is said once, as a metric and a CRITICAL `/alerts`;
//! IdleConnection costs one fd per server.
//!
//! Addresses: real servers on 127.(130+N).0.x:8080, VIPs 198.51.100.(130+N),
//! N the test's number below, so the tests run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a failed set-up panics

mod common;

use common::pool::{legacy_list, PORT};
use common::*;
use nix::sys::signal::Signal;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// An `ipvsadm` that only records that it ran (every argument line).
fn recording_ipvsadm(dir: &Path) -> (PathBuf, PathBuf) {
    let script = dir.join("ipvsadm");
    let log = dir.join("ipvsadm.calls");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{log}'\nif [ \"$1\" = \"-R\" ]; then cat >> '{log}'; fi\nexit 0\n",
            log = log.display()
        ),
    )
    .unwrap();
    let mut perm = fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    fs::set_permissions(&script, perm).unwrap();
    (script, log)
}

fn global(ipvsadm: &Path, http_port: u16) -> String {
    format!(
        "[global]\nipvsadm = {}\nipvs-backend = ipvsadm\nipvs-reconcile-interval = 0\n\
         instrumentation = yes\ninstrumentation_port = {http_port}\n\
         instrumentation_ips = ['127.0.0.1']\n\n",
        ipvsadm.display()
    )
}

fn service(name: &str, vip: &str, list: &Path, monitors: &str) -> String {
    format!(
        "[{name}]\nprotocol = tcp\nip = {vip}\nport = {PORT}\nscheduler = wrr\n\
         config = file://{}\ndepool-threshold = 0.5\n{monitors}\n\n",
        list.display()
    )
}

const IDLE: &str = "monitors = [ 'IdleConnection' ]\nidleconnection.max-delay = 1";

/// A server list of `n` servers 127.`net`.x.y.
fn servers(dir: &Path, name: &str, net: u8, n: usize) -> PathBuf {
    let hosts: Vec<String> = (0..n)
        .map(|i| format!("127.{net}.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let entries: Vec<(&str, u32, bool)> = hosts.iter().map(|h| (h.as_str(), 10, true)).collect();
    write_atomic(dir, name, &legacy_list(&entries))
}

/// rsbal (foreground, `-d`) under `prlimit --nofile=N:N`, output to `log`.
fn start_limited(config: &Path, nofile: u64, log: &Path) -> Child {
    let out = fs::File::create(log).unwrap();
    Command::new("prlimit")
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_rsbal"))
        .args(["-d", "-c"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let mut status = None;
    wait_until(timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    status
}

fn metric(http: SocketAddr, line_start: &str) -> Option<f64> {
    let (_, body) = http_get(http, "/metrics", false)?;
    body.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Test 1: a config needing more fds than the hard limit is refused at
/// start, naming `LimitNOFILE=`, and `ipvsadm` is never run.
#[test]
fn start_is_refused_when_the_config_cannot_fit_the_fd_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (ipvsadm, calls) = recording_ipvsadm(dir.path());
    let list = servers(dir.path(), "servers.txt", 131, 400);
    let config = write_atomic(
        dir.path(),
        "rsbal.conf",
        &(global(&ipvsadm, free_port()) + &service("big", "198.51.100.131", &list, IDLE)),
    );
    let log = dir.path().join("rsbal.log");
    let mut child = start_limited(&config, 300, &log);
    let status = wait_exit(&mut child, T).expect("rsbal did not exit");
    let text = fs::read_to_string(&log).unwrap();
    assert!(!status.success(), "{text}");
    assert!(text.contains("cannot start"), "{text}");
    assert!(text.contains("RLIMIT_NOFILE is 300"), "{text}");
    assert!(text.contains("LimitNOFILE="), "{text}");
    assert!(
        !calls.exists(),
        "ipvsadm ran: {:?}",
        fs::read_to_string(&calls)
    );

    // `--check` says the same, and exits 1; with room it prints the figures
    // and exits 0.
    let check = |nofile: u64| {
        Command::new("prlimit")
            .arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_rsbal"))
            .arg("--check")
            .arg("-c")
            .arg(&config)
            .output()
            .unwrap()
    };
    let small = check(300);
    let (out, err) = (
        String::from_utf8_lossy(&small.stdout),
        String::from_utf8_lossy(&small.stderr),
    );
    assert_eq!(small.status.code(), Some(1), "{out}{err}");
    assert!(
        out.contains("resources: 1 service(s), 400 server(s)"),
        "{out}"
    );
    assert!(out.contains("resources: fds: need"), "{out}");
    assert!(out.contains("RLIMIT_NOFILE 300"), "{out}");
    assert!(
        err.contains("error: the configuration needs about"),
        "{err}"
    );
    assert!(err.contains("LimitNOFILE="), "{err}");
    let roomy = check(20_000);
    let out = String::from_utf8_lossy(&roomy.stdout);
    assert!(
        roomy.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&roomy.stderr)
    );
    assert!(out.contains("RLIMIT_NOFILE 20000"), "{out}");
    assert!(out.contains("resources: tasks: need"), "{out}");
    assert!(out.contains("resources: memory maps: need"), "{out}");
}

/// Test 2: a reload to a config that cannot fit is rejected whole; the
/// running config stays (its servers stay pooled, the new service is never
/// created), and a later reload that fits is applied.
#[test]
fn a_reload_that_cannot_fit_is_rejected_and_the_old_config_stays() {
    let dir = tempfile::tempdir().unwrap();
    let (ipvsadm, calls) = recording_ipvsadm(dir.path());
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let small = servers(dir.path(), "small.txt", 132, 3);
    let big = servers(dir.path(), "big.txt", 132, 400);
    let base = global(&ipvsadm, http.port())
        + &service("small", "198.51.100.132", &small, "monitors = []");
    let config = write_atomic(dir.path(), "rsbal.conf", &base);
    let log = dir.path().join("rsbal.log");
    let mut child = start_limited(&config, 400, &log);
    let log_text = || fs::read_to_string(&log).unwrap_or_default();
    let calls_text = || fs::read_to_string(&calls).unwrap_or_default();
    assert!(
        wait_until(T, || calls_text()
            .contains("-a -t 198.51.100.132:8080 -r 127.132.0.3:8080")),
        "{}",
        log_text()
    );
    write_atomic(
        dir.path(),
        "rsbal.conf",
        &(base.clone() + &service("big", "198.51.100.133", &big, IDLE)),
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, Signal::SIGHUP).unwrap();
    assert!(
        wait_until(T, || log_text().contains(
            "reload rejected, the running configuration stays: the configuration needs about"
        )),
        "{}",
        log_text()
    );
    assert!(log_text().contains("LimitNOFILE="), "{}", log_text());
    let (_, status) = http_get(http, "/", true).unwrap();
    assert!(status.contains("rejected"), "{status}");
    // A reload that fits is applied.
    let extra = servers(dir.path(), "extra.txt", 132, 2);
    write_atomic(
        dir.path(),
        "rsbal.conf",
        &(base + &service("extra", "198.51.100.134", &extra, "monitors = []")),
    );
    nix::sys::signal::kill(pid, Signal::SIGHUP).unwrap();
    assert!(
        wait_until(T, || calls_text().contains("-A -t 198.51.100.134:8080")),
        "{}",
        log_text()
    );
    assert!(!calls_text().contains("198.51.100.133"), "{}", calls_text());
    assert!(!calls_text().contains("-d "), "{}", calls_text());
    let _ = child.kill();
    let _ = child.wait();
}

/// Accepts connections on `addrs` and keeps them open; counts them.
struct Holder {
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Holder {
    fn start(addrs: &[SocketAddr]) -> Holder {
        let listeners: Vec<TcpListener> = addrs
            .iter()
            .map(|a| {
                let l = TcpListener::bind(a).unwrap();
                l.set_nonblocking(true).unwrap();
                l
            })
            .collect();
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, s) = (Arc::clone(&accepted), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let mut open = Vec::new();
            while !s.load(Ordering::Relaxed) {
                for l in &listeners {
                    while let Ok((conn, _)) = l.accept() {
                        open.push(conn);
                        a.fetch_add(1, Ordering::Relaxed);
                    }
                }
                thread::sleep(Duration::from_millis(20));
            }
        });
        Holder {
            accepted,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Socket fds of process `pid`.
fn sockets(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                .filter(|target| target.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// Test 3: N servers with IdleConnection cost about N sockets, not 2N.
#[test]
fn idle_connection_costs_one_fd_per_server() {
    const N: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let (ipvsadm, _) = recording_ipvsadm(dir.path());
    let addrs: Vec<SocketAddr> = (1..=N as u8)
        .map(|h| SocketAddr::new(lo(135, h), PORT))
        .collect();
    let holder = Holder::start(&addrs);
    let list = servers(dir.path(), "servers.txt", 135, N);
    let config = write_atomic(
        dir.path(),
        "rsbal.conf",
        &(global(&ipvsadm, free_port()) + &service("idle", "198.51.100.135", &list, IDLE)),
    );
    let rsbal = Rsbal::start(&config, &[]);
    assert!(
        wait_until(T, || holder.accepted.load(Ordering::Relaxed) >= N),
        "{} of {N} connected\n{}",
        holder.accepted.load(Ordering::Relaxed),
        rsbal.log_text()
    );
    thread::sleep(Duration::from_millis(500));
    assert_eq!(holder.accepted.load(Ordering::Relaxed), N, "reconnects");
    let count = sockets(rsbal.child.id());
    // N connections, plus the status listener, a status client at most and
    // the log's sockets if any: well under 2N.
    assert!(
        (N..N + 8).contains(&count),
        "{count} sockets for {N} servers"
    );
}

/// Test 4: rsbal runs out of fds at run time (`prlimit --pid` lowers its
/// limit to what it has open): ProxyFetch checks fail with EMFILE, which is
/// rsbal's own shortage: no server is depooled, the log says so once,
/// `rsbal_resource_exhausted_total{resource="fds"}` counts the episode and
/// `/alerts` is CRITICAL and names it; with the limit back, the episode
/// ends and everything is normal.
#[test]
fn running_out_of_fds_at_run_time_changes_no_server() {
    let dir = tempfile::tempdir().unwrap();
    let (ipvsadm, calls) = recording_ipvsadm(dir.path());
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let backends: Vec<Backend> = (1..=4)
        .map(|h| Backend::start(SocketAddr::new(lo(136, h), PORT)))
        .collect();
    let list = servers(dir.path(), "servers.txt", 136, backends.len());
    let monitors = "monitors = [ 'ProxyFetch' ]\n\
         proxyfetch.url = [ 'http://example.org/' ]\nproxyfetch.interval = 0.3\nproxyfetch.timeout = 2";
    let config = write_atomic(
        dir.path(),
        "rsbal.conf",
        &(global(&ipvsadm, http.port()) + &service("fetch", "198.51.100.136", &list, monitors)),
    );
    let rsbal = Rsbal::start(&config, &[]);
    let pid = rsbal.child.id();
    let calls_text = || fs::read_to_string(&calls).unwrap_or_default();
    assert!(
        wait_until(T, || calls_text().contains("-r 127.136.0.4:8080")),
        "{}",
        rsbal.log_text()
    );
    // Checks pass.
    assert!(wait_until(T, || backends.iter().all(|b| b.requests() >= 2)));
    // Two status connections opened (and accepted) before the fds run out.
    let mut alerts = TcpStream::connect(http).unwrap();
    let mut metrics = TcpStream::connect(http).unwrap();
    thread::sleep(Duration::from_millis(200));
    let open = fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    // The soft limit only: raising a hard limit back needs CAP_SYS_RESOURCE.
    let prlimit = |n: usize| {
        let ok = Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--nofile={n}:"))
            .status()
            .unwrap()
            .success();
        assert!(ok, "prlimit failed");
    };
    // Below what is open by the checks that may be in flight now, so that
    // no new fd can be had once they close.
    prlimit(open - backends.len());
    assert!(
        wait_until(Duration::from_secs(4), || rsbal
            .log_text()
            .contains("out of fds: ")),
        "{}",
        rsbal.log_text()
    );
    let ask = |stream: &mut TcpStream, path: &str| {
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    };
    // Let the episode go on for several check rounds first.
    thread::sleep(Duration::from_secs(1));
    let alert = ask(&mut alerts, "/alerts");
    let exposition = ask(&mut metrics, "/metrics");
    // A status client now: the kernel queues it, rsbal cannot accept it,
    // says so once and retries (no busy loop of warnings).
    let _queued = TcpStream::connect(http).unwrap();
    thread::sleep(Duration::from_millis(800));
    prlimit(open + 1000);
    assert!(alert.contains("CRITICAL - rsbal is out of fds"), "{alert}");
    assert!(alert.contains("LimitNOFILE="), "{alert}");
    assert!(
        exposition.contains("rsbal_resource_exhausted_total{resource=\"fds\"} 1"),
        "{exposition}"
    );
    assert!(
        exposition.contains("rsbal_resource_exhausted{resource=\"fds\"} 1"),
        "{exposition}"
    );
    // Once, not per failed check.
    assert_eq!(
        rsbal.log_text().matches("out of fds: ").count(),
        1,
        "{}",
        rsbal.log_text()
    );
    let log = rsbal.log_text();
    assert_eq!(
        log.matches("[instrumentation] WARN: accept failed").count(),
        1,
        "{log}"
    );
    assert!(
        wait_until(T, || rsbal
            .log_text()
            .contains("[instrumentation] INFO: accepting connections again")),
        "{}",
        rsbal.log_text()
    );
    // The episode ends; everything is as before.
    assert!(
        wait_until(T, || rsbal.log_text().contains("no longer out of fds")),
        "{}",
        rsbal.log_text()
    );
    assert!(wait_until(T, || http_get(http, "/alerts", false)
        .is_some_and(|(_, body)| body.starts_with("OK"))));
    assert_eq!(
        metric(http, "rsbal_resource_exhausted{resource=\"fds\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(http, "rsbal_resource_exhausted_total{resource=\"fds\"}"),
        Some(1.0)
    );
    let before: Vec<u64> = backends.iter().map(Backend::requests).collect();
    assert!(wait_until(T, || backends
        .iter()
        .zip(&before)
        .all(|(b, n)| b.requests() > *n)));
    assert!(
        !calls_text().contains("-d "),
        "a server was depooled: {}",
        calls_text()
    );
}

/// Test 7 (item 5, quiet at scale): one INFO line per IPVS batch (the
/// commands at DEBUG only), and a config warning once, not on every reload.
#[test]
fn one_info_line_per_batch_and_each_warning_once() {
    let dir = tempfile::tempdir().unwrap();
    let (ipvsadm, calls) = recording_ipvsadm(dir.path());
    let list = servers(dir.path(), "servers.txt", 137, 30);
    let text = global(&ipvsadm, free_port())
        + "no-such-key = 1\n\n"
        + &service("quiet", "198.51.100.137", &list, "monitors = []");
    let config = write_atomic(dir.path(), "rsbal.conf", &text);
    let rsbal = Rsbal::start(&config, &[]);
    let calls_text = || fs::read_to_string(&calls).unwrap_or_default();
    assert!(wait_until(T, || calls_text().contains("127.137.0.30:8080")));
    // The same warning, on another line after the edit.
    write_atomic(dir.path(), "rsbal.conf", &format!("# moved\n{text}"));
    for n in 1..=2 {
        rsbal.signal(Signal::SIGHUP);
        assert!(
            wait_until(T, || rsbal.log_text().matches("SIGHUP: reloading").count()
                == n),
            "{}",
            rsbal.log_text()
        );
    }
    assert!(wait_until(T, || rsbal
        .log_text()
        .matches("reload: nothing changed")
        .count()
        == 2));
    let log = rsbal.log_text();
    assert_eq!(
        log.matches("no-such-key: unknown key, ignored").count(),
        1,
        "{log}"
    );
    let info: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[IpvsWriter] INFO"))
        .collect();
    let batches: Vec<&&str> = info.iter().filter(|l| l.contains("IPVS batch:")).collect();
    assert_eq!(batches.len(), 1, "{info:#?}");
    assert!(
        batches[0].contains("31 command(s) on 1 service(s): 1 service(s) added, 30 dest(s) added"),
        "{info:#?}"
    );
    assert!(!info.iter().any(|l| l.contains("ipvsadm -a")), "{info:#?}");
    assert_eq!(
        log.matches("DEBUG: ipvsadm -a -t 198.51.100.137:8080")
            .count(),
        30,
        "{log}"
    );
}
