//! The instrumentation server's sockets: a small HTTP/1.x server on
//! `std::net`, built so that no client can stall it.
//!
//! - One I/O thread polls every listening socket and every connection whose
//!   request head is still arriving (non-blocking reads, `poll(2)`). A slow
//!   or silent client costs a slot in that set, never a thread: at most
//!   [`Limits::max_pending`] such connections, each answered `408` after
//!   [`Limits::read_timeout`]; a head over [`MAX_HEAD`] bytes gets `431`.
//!   When the set is full, a new connection is still taken: the oldest
//!   pending connection of the client address holding the most slots is
//!   answered `408` instead ([`victim`]), so slow clients cannot lock out a
//!   client that sends its request at once.
//! - A complete head goes over a bounded channel to a fixed pool of worker
//!   threads, which answer it ([`super::routes::handle_request`], reading only the
//!   snapshot store) with `Connection: close`, bounded by a write timeout.
//!   With the worker queue full, the I/O thread answers `503` itself.
//! - Every answer the I/O thread decides (408, 431, 400, 503) is written
//!   without blocking by the I/O thread itself, and no thread waits for a
//!   client to close: after an answer the connection joins the *closing* set
//!   of the I/O thread (workers hand theirs back), which discards what the
//!   client still sends until it closes or for [`Limits::linger`], so that
//!   closing does not reset the connection before the answer is read.
//!
//! Nothing here takes a lock a service thread holds: workers clone `Arc`s
//! from the store.

use super::routes::{handle_request, Response};
use crate::status::snapshot::SnapshotStore;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use nix::poll::{poll, PollFd, PollFlags};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Log target of the HTTP server's lines (`[instrumentation] …`).
const LOG_TARGET: &str = "instrumentation";

/// Largest accepted request head (request line and headers), in bytes.
pub(crate) const MAX_HEAD: usize = 8 * 1024;

/// How often the threads look at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Sizes and deadlines of the server.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub(crate) workers: usize,
    /// Complete requests waiting for a worker.
    pub(crate) queue: usize,
    /// Connections whose request head is still being read.
    pub(crate) max_pending: usize,
    /// Time a client has to send its whole request head.
    pub(crate) read_timeout: Duration,
    pub(crate) write_timeout: Duration,
    /// Time spent discarding what the client still sends after the answer.
    pub(crate) linger: Duration,
    /// Answered connections waiting for the client to close; over this,
    /// the oldest is closed at once.
    pub(crate) max_closing: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            workers: 4,
            queue: 64,
            max_pending: 256,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            linger: Duration::from_secs(1),
            max_closing: 256,
        }
    }
}

/// The running server: its threads and the addresses it listens on.
pub(crate) struct InstrumentationServer {
    stop: Arc<AtomicBool>,
    /// The addresses asked for, in the order of the listeners.
    wanted: Vec<SocketAddr>,
    addrs: Vec<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
    /// The I/O thread, which hands its listening sockets back when it ends.
    io: Option<JoinHandle<Vec<TcpListener>>>,
}

/// One address to listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenAddr {
    pub(crate) addr: SocketAddr,
    /// Bind even when the address is not (yet) configured on the host
    /// (`IP_FREEBIND`), for addresses that follow the active balancer.
    pub(crate) freebind: bool,
}

/// A listening socket, bound but not served yet (or any more).
#[derive(Debug)]
pub(crate) struct Bound {
    /// The address asked for (its port may be 0).
    pub(crate) addr: SocketAddr,
    listener: TcpListener,
}

/// An address that could not be bound, and why.
#[derive(Debug)]
pub(crate) struct BindError {
    pub(crate) addr: SocketAddr,
    pub(crate) error: io::Error,
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot listen on {}: {}", self.addr, self.error)
    }
}

/// Binds one listening socket, non-blocking.
pub(crate) fn bind(want: ListenAddr) -> Result<Bound, BindError> {
    let bound = || -> io::Result<TcpListener> {
        let socket = crate::net::listen::listening_socket_with(want.addr, 128, want.freebind)?;
        socket.set_nonblocking(true)?;
        Ok(socket.into())
    };
    match bound() {
        Ok(listener) => Ok(Bound {
            addr: want.addr,
            listener,
        }),
        Err(error) => Err(BindError {
            addr: want.addr,
            error,
        }),
    }
}

/// Starts the server on every address of `addrs`; fails, listening on
/// none, when one of them cannot be bound or none is given.
#[cfg(test)]
pub(crate) fn start(
    addrs: &[SocketAddr],
    store: Arc<SnapshotStore>,
) -> io::Result<InstrumentationServer> {
    start_with(addrs, store, Limits::default())
}

#[cfg(test)]
pub(super) fn start_with(
    addrs: &[SocketAddr],
    store: Arc<SnapshotStore>,
    limits: Limits,
) -> io::Result<InstrumentationServer> {
    let bound = addrs
        .iter()
        .map(|addr| {
            bind(ListenAddr {
                addr: *addr,
                freebind: false,
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| io::Error::new(e.error.kind(), e.to_string()))?;
    serve_with(bound, store, limits)
}

/// Serves HTTP on sockets bound by [`bind`] (at least one).
pub(crate) fn serve(
    bound: Vec<Bound>,
    store: Arc<SnapshotStore>,
) -> io::Result<InstrumentationServer> {
    serve_with(bound, store, Limits::default())
}

fn serve_with(
    bound: Vec<Bound>,
    store: Arc<SnapshotStore>,
    limits: Limits,
) -> io::Result<InstrumentationServer> {
    if bound.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no instrumentation address given",
        ));
    }
    let wanted = bound.iter().map(|b| b.addr).collect();
    let listeners: Vec<TcpListener> = bound.into_iter().map(|b| b.listener).collect();
    let addrs = listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<io::Result<Vec<_>>>()?;

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = crossbeam_channel::bounded::<Job>(limits.queue.max(1));
    let (closing_tx, closing_rx) = crossbeam_channel::bounded::<TcpStream>(limits.max_closing);
    let mut server = InstrumentationServer {
        stop: stop.clone(),
        wanted,
        addrs,
        threads: Vec::new(),
        io: None,
    };
    for i in 0..limits.workers.max(1) {
        let (rx, store, stop) = (rx.clone(), store.clone(), stop.clone());
        let closing = closing_tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("instr-worker-{i}"))
            .spawn(move || worker_loop(rx, closing, store, stop, limits));
        match spawned {
            Ok(h) => server.threads.push(h),
            Err(e) => {
                server.shutdown();
                return Err(e);
            }
        }
    }
    drop(rx);
    drop(closing_tx);
    let io_stop = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("instr-io".into())
        .spawn(move || io_loop(listeners, tx, closing_rx, io_stop, limits));
    match spawned {
        Ok(h) => server.io = Some(h),
        Err(e) => {
            server.shutdown();
            return Err(e);
        }
    }
    Ok(server)
}

impl InstrumentationServer {
    /// The addresses actually listened on (ports resolved when 0 was asked).
    pub(crate) fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// The addresses asked for (as configured).
    pub(crate) fn wanted_addrs(&self) -> &[SocketAddr] {
        &self.wanted
    }

    /// Stops accepting, ends every thread and waits for them. Requests being
    /// read are abandoned; this returns within a few hundred milliseconds.
    pub(crate) fn stop(mut self) {
        self.shutdown();
    }

    /// Stops serving like [`stop`](Self::stop) but hands the listening
    /// sockets back still bound, so a new server can take them over without
    /// a moment in which their addresses are free. Connections that arrive
    /// meanwhile wait in the sockets' backlog.
    pub(crate) fn into_listeners(mut self) -> Vec<Bound> {
        let listeners = self.shutdown();
        let wanted = std::mem::take(&mut self.wanted);
        wanted
            .into_iter()
            .zip(listeners)
            .map(|(addr, listener)| Bound { addr, listener })
            .collect()
    }

    fn shutdown(&mut self) -> Vec<TcpListener> {
        self.stop.store(true, Ordering::SeqCst);
        let mut listeners = Vec::new();
        if let Some(io) = self.io.take() {
            match io.join() {
                Ok(l) => listeners = l,
                Err(_) => log::error!("instrumentation: a server thread panicked"),
            }
        }
        for h in self.threads.drain(..) {
            if h.join().is_err() {
                log::error!(target: LOG_TARGET, "a server thread panicked");
            }
        }
        listeners
    }
}

impl Drop for InstrumentationServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Work for a worker thread: a connection and its complete request head.
struct Job(TcpStream, Vec<u8>);

/// A connection whose request head is still arriving.
struct Pending {
    stream: TcpStream,
    /// The client's address (slots are shared out by address).
    peer: IpAddr,
    accepted: Instant,
    buf: Vec<u8>,
    deadline: Instant,
    eof: bool,
    failed: bool,
}

/// An answered connection, waiting for the client to close.
struct Closing {
    stream: TcpStream,
    deadline: Instant,
}

/// What became of a pending connection.
enum Settled {
    Waiting,
    Head(Vec<u8>),
    Answer(Response),
    /// Closed or reset by the client before a request: nothing to answer.
    Gone,
}

impl Pending {
    /// Reads what is there without blocking.
    fn read_available(&mut self) {
        let mut chunk = [0u8; 4096];
        while self.buf.len() <= MAX_HEAD && head_end(&self.buf).is_none() {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.eof = true;
                    return;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.failed = true;
                    return;
                }
            }
        }
    }

    fn settle(&mut self, now: Instant) -> Settled {
        if let Some(end) = head_end(&self.buf) {
            if end > MAX_HEAD {
                return Settled::Answer(Response::text(431, "Request header fields too large\n"));
            }
            self.buf.truncate(end);
            return Settled::Head(std::mem::take(&mut self.buf));
        }
        if self.buf.len() > MAX_HEAD {
            Settled::Answer(Response::text(431, "Request header fields too large\n"))
        } else if self.failed || (self.eof && self.buf.iter().all(|b| *b == b'\r' || *b == b'\n')) {
            Settled::Gone
        } else if self.eof {
            Settled::Answer(Response::text(400, "Bad request\n"))
        } else if now >= self.deadline {
            Settled::Answer(Response::text(408, "Request timeout\n"))
        } else {
            Settled::Waiting
        }
    }
}

/// The I/O thread: accepts, reads request heads of every pending connection
/// as bytes arrive, hands complete ones to the workers, answers the others
/// itself and lingers on answered connections until their clients close.
/// Returns the listeners when it stops.
fn io_loop(
    listeners: Vec<TcpListener>,
    jobs: Sender<Job>,
    answered: Receiver<TcpStream>,
    stop: Arc<AtomicBool>,
    limits: Limits,
) -> Vec<TcpListener> {
    let mut pending: Vec<Pending> = Vec::new();
    // Accept failed for want of fds: said once, retried every POLL (the
    // listener stays readable, so polling again at once would spin).
    let mut starved = false;
    let mut closing: VecDeque<Closing> = VecDeque::new();
    while !stop.load(Ordering::SeqCst) {
        for stream in answered.try_iter() {
            linger_later(stream, &mut closing, &limits);
        }
        let now = Instant::now();
        let wait = pending
            .iter()
            .map(|p| p.deadline)
            .chain(closing.iter().map(|c| c.deadline))
            .map(|deadline| deadline.saturating_duration_since(now))
            .fold(POLL, Duration::min);
        let wait_ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = listeners
                .iter()
                .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
                .chain(
                    pending
                        .iter()
                        .map(|p| PollFd::new(p.stream.as_fd(), PollFlags::POLLIN)),
                )
                .chain(
                    closing
                        .iter()
                        .map(|c| PollFd::new(c.stream.as_fd(), PollFlags::POLLIN)),
                )
                .collect();
            match poll(&mut fds, wait_ms) {
                Ok(_) => fds.iter().map(|f| f.any().unwrap_or(true)).collect(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!(target: LOG_TARGET, "poll failed: {e}");
                    std::thread::sleep(POLL);
                    continue;
                }
            }
        };
        let (ready_listeners, ready) = ready.split_at(listeners.len());
        let (ready_pending, ready_closing) = ready.split_at(pending.len());
        for (p, ready) in pending.iter_mut().zip(ready_pending) {
            if *ready {
                p.read_available();
            }
        }
        let now = Instant::now();
        let mut i = 0;
        let mut still_closing = VecDeque::with_capacity(closing.len());
        for (mut c, ready) in closing.drain(..).zip(ready_closing.iter().copied()) {
            if (!ready || discard_available(&mut c.stream)) && now < c.deadline {
                still_closing.push_back(c);
            }
        }
        closing = still_closing;
        let mut failed = None;
        for (listener, ready) in listeners.iter().zip(ready_listeners) {
            if *ready {
                failed = failed.or(accept_all(listener, &mut pending, &mut closing, &limits));
            }
        }
        match (&failed, starved) {
            (Some(e), false) => {
                log::warn!(target: LOG_TARGET, "accept failed: {e}; retrying every {POLL:?} until it works"
                );
                starved = true;
            }
            (None, true) if ready_listeners.iter().any(|r| *r) => {
                log::info!(target: LOG_TARGET, "accepting connections again");
                starved = false;
            }
            _ => {}
        }
        if failed.is_some() {
            std::thread::sleep(POLL);
        }
        while i < pending.len() {
            match pending[i].settle(now) {
                Settled::Waiting => i += 1,
                Settled::Gone => {
                    pending.swap_remove(i);
                }
                Settled::Answer(resp) => {
                    let stream = pending.swap_remove(i).stream;
                    answer_now(stream, &resp, &mut closing, &limits);
                }
                Settled::Head(head) => {
                    let stream = pending.swap_remove(i).stream;
                    match jobs.try_send(Job(stream, head)) {
                        Ok(()) => {}
                        Err(TrySendError::Full(Job(stream, _))) => {
                            log::warn!(target: LOG_TARGET, "every worker is busy, refusing a request");
                            answer_now(stream, &busy(), &mut closing, &limits);
                        }
                        Err(TrySendError::Disconnected(_)) => return listeners,
                    }
                }
            }
        }
    }
    listeners
}

/// Takes every connection waiting on `listener`; when the pending set is
/// full, the [`victim`] gets `408` to make room. Returns the error when
/// accepting failed for another reason than the client's (e.g. out of fds).
fn accept_all(
    listener: &TcpListener,
    pending: &mut Vec<Pending>,
    closing: &mut VecDeque<Closing>,
    limits: &Limits,
) -> Option<io::Error> {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                if pending.len() >= limits.max_pending.max(1) {
                    let slots: Vec<(IpAddr, Instant)> =
                        pending.iter().map(|p| (p.peer, p.accepted)).collect();
                    if let Some(i) = victim(&slots) {
                        let evicted = pending.swap_remove(i);
                        log::debug!(target: LOG_TARGET, "too many pending connections, dropping the oldest of {}",
                            evicted.peer
                        );
                        answer_now(evicted.stream, &timeout(), closing, limits);
                    }
                }
                let now = Instant::now();
                pending.push(Pending {
                    stream,
                    peer: peer.ip(),
                    accepted: now,
                    buf: Vec::new(),
                    deadline: now + limits.read_timeout,
                    eof: false,
                    failed: false,
                });
            }
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock => return None,
                io::ErrorKind::Interrupted
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset => {}
                // E.g. out of file descriptors: the caller retries.
                _ => return Some(e),
            },
        }
    }
}

/// Which pending connection (by index into `slots`, each its client's
/// address and when it was accepted) makes room for a new one: the oldest
/// of the address holding the most slots.
fn victim(slots: &[(IpAddr, Instant)]) -> Option<usize> {
    let mut count: HashMap<IpAddr, usize> = HashMap::new();
    for (ip, _) in slots {
        *count.entry(*ip).or_default() += 1;
    }
    let heaviest = count
        .iter()
        .max_by_key(|(ip, n)| (**n, std::cmp::Reverse(**ip)))
        .map(|(ip, _)| *ip)?;
    slots
        .iter()
        .enumerate()
        .filter(|(_, (ip, _))| *ip == heaviest)
        .min_by_key(|(_, (_, accepted))| *accepted)
        .map(|(i, _)| i)
}

fn timeout() -> Response {
    Response::text(408, "Request timeout\n")
}

fn busy() -> Response {
    Response::text(503, "Server busy, try again later\n").with_header("Retry-After", "1".into())
}

/// Writes `resp` without blocking (an answer of the I/O thread is small
/// enough for the socket's buffer) and lingers on the connection.
fn answer_now(
    mut stream: TcpStream,
    resp: &Response,
    closing: &mut VecDeque<Closing>,
    limits: &Limits,
) {
    // Take what the client already sent, so closing does not reset the
    // connection before it reads the answer.
    discard_available(&mut stream);
    let _ = stream.write(&resp.to_bytes());
    linger_later(stream, closing, limits);
}

/// Ends the answer (FIN) and keeps the connection in `closing` until the
/// client closes or `limits.linger` passes.
fn linger_later(stream: TcpStream, closing: &mut VecDeque<Closing>, limits: &Limits) {
    if stream.shutdown(Shutdown::Write).is_err() || stream.set_nonblocking(true).is_err() {
        return;
    }
    while closing.len() >= limits.max_closing.max(1) {
        closing.pop_front();
    }
    closing.push_back(Closing {
        stream,
        deadline: Instant::now() + limits.linger,
    });
}

/// Reads and drops what is there; false once the client closed or failed.
fn discard_available(stream: &mut TcpStream) -> bool {
    let mut chunk = [0u8; 4096];
    for _ in 0..64 {
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return e.kind() == io::ErrorKind::WouldBlock,
        }
    }
    true
}

fn worker_loop(
    rx: Receiver<Job>,
    closing: Sender<TcpStream>,
    store: Arc<SnapshotStore>,
    stop: Arc<AtomicBool>,
    limits: Limits,
) {
    loop {
        match rx.recv_timeout(POLL) {
            Ok(job) => {
                if !stop.load(Ordering::SeqCst) {
                    if let Some(stream) = answer(job, &store, limits) {
                        // The I/O thread lingers; when it is swamped, close.
                        let _ = closing.try_send(stream);
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
}

/// Writes the answer to one request; returns the connection to linger on.
fn answer(job: Job, store: &SnapshotStore, limits: Limits) -> Option<TcpStream> {
    let Job(mut stream, head) = job;
    let resp = handle_request(&head, store);
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_write_timeout(Some(limits.write_timeout))
            .is_err()
    {
        return None;
    }
    log::debug!(target: LOG_TARGET, "{peer}: {}", resp.status);
    if let Err(e) = stream.write_all(&resp.to_bytes()) {
        log::debug!(target: LOG_TARGET, "{peer}: cannot write answer: {e}");
        return None;
    }
    Some(stream)
}

/// Position just past the end of the head (`\r\n\r\n` or `\n\n`), ignoring
/// empty lines before the request line.
pub(super) fn head_end(buf: &[u8]) -> Option<usize> {
    let start = buf.iter().position(|b| *b != b'\r' && *b != b'\n')?;
    let mut i = start;
    while i < buf.len() {
        if buf[i] == b'\n' {
            match buf.get(i + 1) {
                Some(b'\n') => return Some(i + 2),
                Some(b'\r') if buf.get(i + 2) == Some(&b'\n') => return Some(i + 3),
                _ => {}
            }
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::routes::tests::store;
    use serde_json::{json, Value};

    const NOT_FOUND: &str = "The desired url was not found";

    #[test]
    fn head_end_finds_terminators() {
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\nrest"), Some(16));
        assert_eq!(head_end(b"\r\n\r\nGET / HTTP/1.0\r\n\r\n"), Some(22));
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n"), None);
        assert_eq!(head_end(b"\r\n"), None);
    }

    // --- The real server over TCP. ---

    fn local() -> Vec<SocketAddr> {
        vec!["127.0.0.1:0".parse().unwrap()]
    }

    /// Sends `raw`, reads until the server closes: (status, head, body).
    fn exchange(addr: SocketAddr, raw: &[u8]) -> (u16, String, String) {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(raw).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let status = head[9..12].parse().unwrap();
        (status, format!("{head}\r\n"), body.to_string())
    }

    fn http_get(addr: SocketAddr, path: &str, json: bool) -> (u16, String, String) {
        let accept = if json {
            "Accept: application/json\r\n"
        } else {
            ""
        };
        let raw = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{accept}\r\n");
        exchange(addr, raw.as_bytes())
    }

    #[test]
    fn server_answers_every_route() {
        let srv = start(&local(), store()).unwrap();
        let addr = srv.local_addrs()[0];
        assert_ne!(addr.port(), 0);

        let (st, head, body) = http_get(addr, "/pools", false);
        assert_eq!((st, body.as_str()), (200, "apaches_80\ntext_443\n"));
        assert!(head.contains("Content-Type: text/plain\r\n"), "{head}");
        assert!(head.contains("Connection: close\r\n"), "{head}");
        assert!(head.contains("Content-Length: 20\r\n"), "{head}");
        assert!(head.contains("Date: "), "{head}");
        let (st, head, body) = http_get(addr, "/pools", true);
        assert_eq!((st, body.as_str()), (200, r#"["apaches_80", "text_443"]"#));
        assert!(
            head.contains("Content-Type: application/json\r\n"),
            "{head}"
        );

        let (st, _, body) = http_get(addr, "/pools/apaches_80", false);
        assert_eq!(st, 200);
        assert!(body.starts_with("mw1001:\tenabled/up/pooled\n"), "{body}");
        let (st, _, body) = http_get(addr, "/pools/apaches_80", true);
        assert_eq!(st, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["mw1002"],
            json!({"pooled": false, "weight": 5, "up": false, "enabled": false})
        );

        let (st, _, body) = http_get(addr, "/pools/apaches_80/mw1003", false);
        assert_eq!((st, body.as_str()), (200, "enabled/down/pooled\n"));
        let (st, _, body) = http_get(addr, "/pools/apaches_80/mw1003", true);
        assert_eq!(st, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            json!({"pooled": true, "weight": 10, "up": false, "enabled": true})
        );

        let (st, _, body) = http_get(addr, "/pools/apaches_80/nope", false);
        assert_eq!((st, body.as_str()), (404, NOT_FOUND));
        let (st, head, body) = http_get(addr, "/whatever", true);
        assert_eq!(
            (st, body.as_str()),
            (404, r#"{"error": "The desired url was not found"}"#)
        );
        assert!(
            head.contains("Content-Type: application/json\r\n"),
            "{head}"
        );

        let (st, head, _) = exchange(
            addr,
            b"POST /pools HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        );
        assert_eq!(st, 405);
        assert!(head.contains("Allow: GET, HEAD\r\n"), "{head}");

        let (st, head, body) = exchange(addr, b"HEAD /pools HTTP/1.0\r\n\r\n");
        assert_eq!((st, body.as_str()), (200, ""));
        assert!(head.contains("Content-Length: 20\r\n"), "{head}");

        let (st, _, _) = exchange(addr, b"NONSENSE\r\n\r\n");
        assert_eq!(st, 400);
        srv.stop();
    }

    #[test]
    fn server_refuses_oversized_heads() {
        let srv = start(&local(), store()).unwrap();
        let addr = srv.local_addrs()[0];
        let big = format!(
            "GET /pools HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
            "a".repeat(3 * MAX_HEAD)
        );
        let (st, _, _) = exchange(addr, big.as_bytes());
        assert_eq!(st, 431);
        // Just under the limit is fine.
        let filler = MAX_HEAD - 100;
        let ok = format!(
            "GET /pools HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
            "a".repeat(filler)
        );
        let (st, _, _) = exchange(addr, ok.as_bytes());
        assert_eq!(st, 200);
        srv.stop();
    }

    #[test]
    fn slow_client_does_not_block_others() {
        let srv = start(&local(), store()).unwrap();
        let addr = srv.local_addrs()[0];
        let _silent = TcpStream::connect(addr).unwrap();
        let _half = {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /pools HTTP/1.1\r\n").unwrap();
            s
        };
        std::thread::sleep(Duration::from_millis(100));
        let t0 = Instant::now();
        let (st, _, _) = http_get(addr, "/pools", false);
        assert_eq!(st, 200);
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        let t0 = Instant::now();
        srv.stop();
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "stop took {:?}",
            t0.elapsed()
        );
    }

    #[test]
    fn silent_client_times_out_with_408() {
        let limits = Limits {
            read_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let srv = start_with(&local(), store(), limits).unwrap();
        let addr = srv.local_addrs()[0];
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /po").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
        srv.stop();
    }

    #[test]
    fn a_full_pending_set_drops_its_oldest_connection_for_a_new_one() {
        let limits = Limits {
            max_pending: 2,
            ..Limits::default()
        };
        let srv = start_with(&local(), store(), limits).unwrap();
        let addr = srv.local_addrs()[0];
        // Two silent clients fill the pending set; a third client is
        // answered, and the oldest silent one gets 408 to make room.
        let mut oldest = TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let _newer = TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let (st, _, _) = http_get(addr, "/pools", false);
        assert_eq!(st, 200);
        oldest
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut out = String::new();
        oldest.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 408 "), "{out}");
        srv.stop();
    }

    #[test]
    fn the_victim_is_the_oldest_of_the_busiest_address() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(victim(&[]), None);
        assert_eq!(victim(&[(a, at(5))]), Some(0));
        // b holds more slots: its oldest goes, though a's is older.
        let slots = [(a, at(0)), (b, at(9)), (b, at(3)), (a, at(1)), (b, at(4))];
        assert_eq!(victim(&slots), Some(2));
        // A tie between addresses: the same address every time.
        let tie = [(a, at(2)), (b, at(1))];
        assert_eq!(victim(&tie), Some(0));
    }

    #[test]
    fn more_slow_clients_than_workers_do_not_block_others() {
        let limits = Limits {
            workers: 2,
            ..Limits::default()
        };
        let srv = start_with(&local(), store(), limits).unwrap();
        let addr = srv.local_addrs()[0];
        let slow: Vec<TcpStream> = (0..20)
            .map(|i| {
                let mut s = TcpStream::connect(addr).unwrap();
                if i % 2 == 0 {
                    s.write_all(b"GET /pools HTTP/1.1\r\nHost: x\r\n").unwrap();
                }
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..5 {
            let t0 = Instant::now();
            let (st, _, _) = http_get(addr, "/pools", false);
            assert_eq!(st, 200);
            assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
        }
        drop(slow);
        srv.stop();
    }

    #[test]
    fn an_address_that_cannot_be_bound_fails_the_start() {
        // 192.0.2.1 (TEST-NET-1) is not an address of this host.
        let foreign: SocketAddr = "192.0.2.1:0".parse().unwrap();
        let e = start(&[local()[0], foreign], store()).err().unwrap();
        assert!(
            e.to_string().starts_with("cannot listen on 192.0.2.1:0: "),
            "{e}"
        );
        assert!(start(&[], store()).is_err());
        // A taken port too.
        let srv = start(&local(), store()).unwrap();
        let taken = srv.local_addrs()[0];
        let e = start(&[taken], store()).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
        // With IP_FREEBIND the foreign address is bound (it may come later).
        let want = ListenAddr {
            addr: foreign,
            freebind: true,
        };
        assert!(bind(want).is_ok());
        srv.stop();
    }

    #[test]
    fn listeners_handed_back_stay_bound_and_serve_again() {
        let srv = start(&local(), store()).unwrap();
        let addr = srv.local_addrs()[0];
        let bound = srv.into_listeners();
        assert_eq!(bound.len(), 1);
        // Still bound: nobody else can take the port.
        let again = bind(ListenAddr {
            addr,
            freebind: false,
        });
        assert!(again.is_err());
        let srv = serve(bound, store()).unwrap();
        assert_eq!(srv.local_addrs(), vec![addr]);
        let (st, _, _) = http_get(addr, "/pools", false);
        assert_eq!(st, 200);
        srv.stop();
    }

    #[test]
    fn stop_closes_the_listener() {
        let srv = start(&local(), store()).unwrap();
        let addr = srv.local_addrs()[0];
        let t0 = Instant::now();
        srv.stop();
        assert!(t0.elapsed() < Duration::from_secs(1));
        assert!(TcpStream::connect(addr).is_err());
    }
}
