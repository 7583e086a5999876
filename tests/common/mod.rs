//! Test harness: real backends on loopback, a fake `ipvsadm` that records
//! every batch it is given, and the real `rsbal` binary as a child process.
#![allow(dead_code)]

pub mod bgp;
pub mod etcd;
pub mod pool;
pub mod stateful_ipvsadm;

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// How a backend behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Accepts, answers HTTP with 200, keeps idle connections open.
    Healthy,
    /// Listener closed and every open connection reset.
    Down,
    /// Accepts and never answers anything.
    Hung,
}

struct BackendShared {
    addr: SocketAddr,
    /// SO_REUSEPORT: share the port with another listener (a wildcard one;
    /// the kernel prefers the exact address).
    reuse_port: bool,
    mode: Mutex<Mode>,
    /// The listening socket while the backend is not Down.
    listener: Mutex<Option<TcpListener>>,
    /// Open connections, so that going Down can reset them at once.
    conns: Mutex<Vec<Arc<TcpStream>>>,
    requests: AtomicU64,
    stop: AtomicBool,
}

impl BackendShared {
    fn listen(&self) {
        let mut listener = self.listener.lock().unwrap();
        if listener.is_some() {
            return;
        }
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(self.addr),
            socket2::Type::STREAM,
            None,
        )
        .unwrap();
        socket.set_reuse_address(true).unwrap();
        if self.reuse_port {
            socket.set_reuse_port(true).unwrap();
        }
        socket
            .bind(&self.addr.into())
            .unwrap_or_else(|e| panic!("bind {}: {e}", self.addr));
        socket.listen(1024).unwrap();
        let l: TcpListener = socket.into();
        l.set_nonblocking(true).unwrap();
        *listener = Some(l);
    }

    /// Closes the listener and resets every open connection: SO_LINGER 0,
    /// then a read shutdown wakes the connection's thread, whose close of
    /// the last reference sends the RST.
    fn reset_all(&self) {
        *self.listener.lock().unwrap() = None;
        self.reset_connections();
    }

    /// Resets every open connection; the listener stays.
    fn reset_connections(&self) {
        for conn in self.conns.lock().unwrap().drain(..) {
            let _ = socket2::SockRef::from(&*conn).set_linger(Some(Duration::ZERO));
            let _ = conn.shutdown(std::net::Shutdown::Read);
        }
    }
}

/// A real TCP/HTTP backend on `addr`.
pub struct Backend {
    pub addr: SocketAddr,
    shared: Arc<BackendShared>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Backend {
    pub fn start(addr: SocketAddr) -> Backend {
        Backend::start_with(addr, false)
    }

    /// A backend whose listener shares its port (SO_REUSEPORT) with
    /// another's, e.g. a wildcard listener serving the other addresses.
    pub fn start_sharing_port(addr: SocketAddr) -> Backend {
        Backend::start_with(addr, true)
    }

    fn start_with(addr: SocketAddr, reuse_port: bool) -> Backend {
        let shared = Arc::new(BackendShared {
            addr,
            reuse_port,
            mode: Mutex::new(Mode::Healthy),
            listener: Mutex::new(None),
            conns: Mutex::new(Vec::new()),
            requests: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        shared.listen();
        let s = Arc::clone(&shared);
        let thread = thread::spawn(move || accept_loop(s));
        Backend {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
        match mode {
            Mode::Down => self.shared.reset_all(),
            _ => self.shared.listen(),
        }
    }

    /// Resets every open connection (SO_LINGER 0) and keeps listening: each
    /// client sees its connection reset and can connect again at once.
    pub fn reset_connections(&self) {
        self.shared.reset_connections();
    }

    /// HTTP requests answered or received so far.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.reset_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(shared: Arc<BackendShared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let accepted = match shared.listener.lock().unwrap().as_ref() {
            Some(l) => l.accept().ok(),
            None => None,
        };
        match accepted {
            Some((stream, _)) => {
                let _ = stream.set_nonblocking(false);
                let stream = Arc::new(stream);
                shared.conns.lock().unwrap().push(Arc::clone(&stream));
                let s = Arc::clone(&shared);
                thread::spawn(move || serve(stream, s));
            }
            None => thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn serve(stream: Arc<TcpStream>, shared: Arc<BackendShared>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match (&*stream).read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    shared.requests.fetch_add(1, Ordering::SeqCst);
                    let mode = *shared.mode.lock().unwrap();
                    if mode == Mode::Healthy {
                        let _ = (&*stream).write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        );
                        break;
                    }
                    buf.clear(); // Hung: never answer.
                }
            }
        }
    }
    shared
        .conns
        .lock()
        .unwrap()
        .retain(|c| !Arc::ptr_eq(c, &stream));
}

/// A fake `ipvsadm`: records each `-R` batch (stdin) into a log file,
/// batches separated by a `--` line; prints an empty table for `-Sn`.
/// Configs that use it set `ipvs-backend = ipvsadm` (never touch a real
/// kernel's table) and `ipvs-reconcile-interval = 0` (its empty `-Sn` would
/// read as drift and make the writer re-add everything).
pub struct FakeIpvsadm {
    pub script: PathBuf,
    pub log: PathBuf,
}

impl FakeIpvsadm {
    pub fn new(dir: &Path) -> FakeIpvsadm {
        let script = dir.join("ipvsadm");
        let log = dir.join("ipvsadm.log");
        fs::write(
            &script,
            format!(
                "#!/bin/sh\nif [ \"$1\" = \"-R\" ]; then cat >> '{log}'; echo -- >> '{log}'; fi\nexit 0\n",
                log = log.display()
            ),
        )
        .unwrap();
        let mut perm = fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        fs::set_permissions(&script, perm).unwrap();
        FakeIpvsadm { script, log }
    }

    /// Every command line received so far.
    pub fn lines(&self) -> Vec<String> {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l != "--")
            .map(str::to_string)
            .collect()
    }

    /// Number of lines equal to `line`.
    pub fn count(&self, line: &str) -> usize {
        self.lines().iter().filter(|l| *l == line).count()
    }

    pub fn wait_for(&self, line: &str, n: usize, timeout: Duration) -> bool {
        wait_until(timeout, || self.count(line) >= n)
    }

    /// Asserts that `line` arrives at least `n` times within 20 s.
    pub fn assert_seen(&self, line: &str, n: usize) {
        assert!(
            self.wait_for(line, n, Duration::from_secs(20)),
            "expected {n} x {line:?}, ipvsadm got {:#?}",
            self.lines()
        );
    }
}

/// The real rsbal binary, run in the foreground with `-d`.
pub struct Rsbal {
    pub child: Child,
    pub log: PathBuf,
}

impl Rsbal {
    pub fn start(config: &Path, extra: &[&str]) -> Rsbal {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rsbal"));
        command.arg("-d").arg("-c").arg(config).args(extra);
        Rsbal::spawn(command, config)
    }

    /// Runs `command` (which runs rsbal on `config`) with its output in
    /// `config`'s `.log` file.
    pub fn spawn(mut command: Command, config: &Path) -> Rsbal {
        let log = config.with_extension("log");
        let out = fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        Rsbal { child, log }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Rsbal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!("---- rsbal log ----\n{}", self.log_text());
        }
    }
}

/// GET `path` from `addr`; `json` sets `Accept: application/json`.
/// Returns (status, body).
pub fn http_get(addr: SocketAddr, path: &str, json: bool) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let accept = if json {
        "Accept: application/json\r\n"
    } else {
        ""
    };
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).ok()?;
    let status: u16 = status_line.split_whitespace().nth(1)?.parse().ok()?;
    let mut rest = String::new();
    reader.read_to_string(&mut rest).ok()?;
    let body = rest.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Writes an executable shell script `dir/name`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    let mut perm = fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    fs::set_permissions(&path, perm).unwrap();
    path
}

/// A loopback address `127.<net>.0.<host>`.
pub fn lo(net: u8, host: u8) -> IpAddr {
    IpAddr::from([127, net, 0, host])
}

/// Writes `text` to `dir/name` atomically (rename), so rsbal never reads a
/// half-written file.
pub fn write_atomic(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    fs::write(&tmp, text).unwrap();
    fs::rename(&tmp, &path).unwrap();
    path
}

/// Runs `openssl` with `args` in `dir`; panics when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("cannot run openssl (apt-get install openssl)");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A self-signed certificate for `subject` (`/CN=…`), valid one day, with a
/// new RSA key: `key` and `cert` are written in `dir`.
pub fn self_signed(dir: &Path, subject: &str, key: &str, cert: &str) {
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", subject,
            "-keyout", key, "-out", cert,
        ],
    );
}

/// `openssl s_server -WWW` serving the files of `dir` over HTTPS on `addr`
/// with `cert` and `key` (in `dir`); killed when the test ends.
pub fn https_file_server(dir: &Path, cert: &str, key: &str, addr: SocketAddr) -> KillOnDrop {
    KillOnDrop(
        Command::new("openssl")
            .args(["s_server", "-quiet", "-WWW", "-cert", cert, "-key", key])
            .arg("-accept")
            .arg(addr.to_string())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("cannot run openssl (apt-get install openssl)"),
    )
}

/// A child process killed when the test ends, even by a panic.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
