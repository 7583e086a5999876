//! Instrumentation HTTP server (SPEC 9): PyBal's read-only view of the pools.
//!
//! This module owns the small HTTP/1.x server behind `instrumentation = yes`,
//! hand-written on `std::net` with blocking I/O:
//!
//! - one accept thread per listening address hands connections over a
//!   bounded channel to a fixed pool of worker threads; when the queue is
//!   full the accept thread answers `503` at once and closes;
//! - a worker reads one request head (at most [`MAX_HEAD`] bytes, within a
//!   read deadline), answers it with `Connection: close` and closes;
//! - requests are answered by pure functions ([`handle_request`] → [`route`]),
//!   which read state only through [`SnapshotStore`] (cloned `Arc`s; no lock
//!   is held while a socket is written).
//!
//! Routes follow PyBal's `pybal/instrumentation.py`: `/pools`,
//! `/pools/<pool>`, `/pools/<pool>/<host>`, JSON when the request accepts
//! `application/json`, plain text otherwise, and a 404 body of
//! `The desired url was not found`; `/alerts` (PyBal's pool health, see
//! `alerts`), `/metrics` (Prometheus text format) and, beyond PyBal, `/`: the
//! HTML status page (`status_page`), or the status document as JSON
//! (`status_doc`) for `Accept: application/json`.

use crate::coordinator::ServerState;
use crate::snapshot::{ServiceSnapshot, SnapshotStore};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use serde_json::{json, Map, Value};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Largest accepted request head (request line and headers), in bytes.
pub const MAX_HEAD: usize = 8 * 1024;

/// How often blocked accept and read calls look at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Body of every 404, as PyBal words it.
const NOT_FOUND: &str = "The desired url was not found";

/// Sizes and deadlines of the server.
#[derive(Debug, Clone, Copy)]
struct Limits {
    workers: usize,
    queue: usize,
    /// Time a client has to send its whole request head.
    read_timeout: Duration,
    write_timeout: Duration,
    /// Time spent discarding what the client still sends after the answer.
    linger: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            workers: 4,
            queue: 64,
            read_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            linger: Duration::from_secs(1),
        }
    }
}

/// The running server: its threads and the addresses it listens on.
pub struct InstrumentationServer {
    stop: Arc<AtomicBool>,
    addrs: Vec<SocketAddr>,
    accepters: Vec<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

/// Starts the server on every address of `addrs` that can be bound.
///
/// An address that cannot be bound (e.g. `::1` on a host without IPv6) is
/// logged and skipped; the call fails only when none can be bound.
pub fn start(addrs: &[SocketAddr], store: Arc<SnapshotStore>) -> io::Result<InstrumentationServer> {
    start_with(addrs, store, Limits::default())
}

fn start_with(
    addrs: &[SocketAddr],
    store: Arc<SnapshotStore>,
    limits: Limits,
) -> io::Result<InstrumentationServer> {
    let mut listeners = Vec::new();
    let mut last_err = None;
    for addr in addrs {
        match bind(*addr) {
            Ok(l) => listeners.push(l),
            Err(e) => {
                log::warn!("instrumentation: cannot listen on {addr}: {e}; skipping it");
                last_err = Some(e);
            }
        }
    }
    if listeners.is_empty() {
        return Err(last_err.unwrap_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "no instrumentation address given",
            )
        }));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = crossbeam_channel::bounded::<TcpStream>(limits.queue.max(1));
    let mut server = InstrumentationServer {
        stop: stop.clone(),
        addrs: Vec::new(),
        accepters: Vec::new(),
        workers: Vec::new(),
    };
    for i in 0..limits.workers.max(1) {
        let (rx, store, stop) = (rx.clone(), store.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("instr-worker-{i}"))
            .spawn(move || worker_loop(rx, store, stop, limits));
        match spawned {
            Ok(h) => server.workers.push(h),
            Err(e) => {
                server.shutdown();
                return Err(e);
            }
        }
    }
    drop(rx);
    for listener in listeners {
        let addr = listener.local_addr()?;
        let (tx, stop) = (tx.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("instr-accept-{addr}"))
            .spawn(move || accept_loop(listener, tx, stop));
        match spawned {
            Ok(h) => {
                server.accepters.push(h);
                server.addrs.push(addr);
            }
            Err(e) => {
                server.shutdown();
                return Err(e);
            }
        }
    }
    log::info!(
        "instrumentation: listening on {}",
        server
            .addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(server)
}

impl InstrumentationServer {
    /// The addresses actually listened on (ports resolved when 0 was asked).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.addrs.clone()
    }

    /// Stops accepting, ends every thread and waits for them. Requests being
    /// read are abandoned; this returns within a few hundred milliseconds.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Accept threads first: once they are gone, the channel is
        // disconnected and idle workers leave as well.
        for h in self.accepters.drain(..).chain(self.workers.drain(..)) {
            if h.join().is_err() {
                log::error!("instrumentation: a server thread panicked");
            }
        }
    }
}

impl Drop for InstrumentationServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A listening socket whose `accept` wakes up every [`POLL`] (Linux honours
/// `SO_RCVTIMEO` on `accept`), so the loop can see the stop flag.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `::` and `0.0.0.0` may both be configured.
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    socket.set_read_timeout(Some(POLL))?;
    Ok(socket.into())
}

fn accept_loop(listener: TcpListener, tx: Sender<TcpStream>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match tx.try_send(stream) {
                    Ok(()) => {}
                    Err(TrySendError::Full(stream)) => {
                        log::warn!("instrumentation: too many requests, refusing {peer}");
                        refuse_busy(stream);
                    }
                    Err(TrySendError::Disconnected(_)) => break,
                }
            }
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset => {}
                _ => {
                    // E.g. out of file descriptors: do not spin.
                    log::warn!("instrumentation: accept failed: {e}");
                    std::thread::sleep(POLL);
                }
            },
        }
    }
}

/// Answers `503` without blocking the accept thread.
fn refuse_busy(mut stream: TcpStream) {
    let resp = Response::text(503, "Server busy, try again later\n")
        .with_header("Retry-After", "1".into());
    if stream.set_nonblocking(true).is_err() {
        return;
    }
    // Take what the client already sent, so closing does not reset the
    // connection before it reads the answer.
    let mut buf = [0u8; MAX_HEAD];
    let _ = stream.read(&mut buf);
    let _ = stream.write_all(&resp.to_bytes());
    let _ = stream.shutdown(Shutdown::Write);
}

fn worker_loop(
    rx: Receiver<TcpStream>,
    store: Arc<SnapshotStore>,
    stop: Arc<AtomicBool>,
    limits: Limits,
) {
    loop {
        match rx.recv_timeout(POLL) {
            Ok(stream) => {
                if !stop.load(Ordering::SeqCst) {
                    serve(stream, &store, &stop, limits);
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

/// Why no request head could be read.
#[derive(Debug, PartialEq, Eq)]
enum ReadError {
    /// The client closed (or reset) before sending anything.
    Closed,
    /// The client closed in the middle of the head.
    Truncated,
    TooLarge,
    Timeout,
    Stopped,
}

/// One connection: read a head, answer it, close.
fn serve(mut stream: TcpStream, store: &SnapshotStore, stop: &AtomicBool, limits: Limits) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    let _ = stream.set_write_timeout(Some(limits.write_timeout));
    let deadline = Instant::now() + limits.read_timeout;
    let resp = match read_head(&mut stream, deadline, stop) {
        Ok(head) => handle_request(&head, store),
        Err(ReadError::TooLarge) => Response::text(431, "Request header fields too large\n"),
        Err(ReadError::Timeout) => Response::text(408, "Request timeout\n"),
        Err(ReadError::Truncated) => Response::text(400, "Bad request\n"),
        Err(ReadError::Closed) | Err(ReadError::Stopped) => return,
    };
    log::debug!("instrumentation: {peer}: {}", resp.status);
    if let Err(e) = stream.write_all(&resp.to_bytes()) {
        log::debug!("instrumentation: {peer}: cannot write answer: {e}");
        return;
    }
    let _ = stream.shutdown(Shutdown::Write);
    linger(&mut stream, limits.linger, stop);
}

/// Position just past the end of the head (`\r\n\r\n` or `\n\n`), ignoring
/// empty lines before the request line.
fn head_end(buf: &[u8]) -> Option<usize> {
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

/// Reads until the end of the request head, at most [`MAX_HEAD`] bytes,
/// before `deadline`.
fn read_head(
    stream: &mut TcpStream,
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<Vec<u8>, ReadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = head_end(&buf) {
            if end > MAX_HEAD {
                return Err(ReadError::TooLarge);
            }
            buf.truncate(end);
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            return Err(ReadError::TooLarge);
        }
        if stop.load(Ordering::SeqCst) {
            return Err(ReadError::Stopped);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadError::Timeout);
        }
        if stream.set_read_timeout(Some(left.min(POLL))).is_err() {
            return Err(ReadError::Closed);
        }
        match stream.read(&mut chunk) {
            Ok(0) if buf.iter().all(|b| *b == b'\r' || *b == b'\n') => {
                return Err(ReadError::Closed)
            }
            Ok(0) => return Err(ReadError::Truncated),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => {}
                _ => return Err(ReadError::Closed),
            },
        }
    }
}

/// After answering, discards what the client still sends (until it closes,
/// or for at most `limit`), so that closing does not reset the connection
/// before the client has read the answer.
fn linger(stream: &mut TcpStream, limit: Duration, stop: &AtomicBool) {
    let deadline = Instant::now() + limit;
    let mut chunk = [0u8; 4096];
    let mut total = 0usize;
    while total < 256 * 1024 && !stop.load(Ordering::SeqCst) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left.min(POLL))).is_err() {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => total += n,
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted => {}
                _ => return,
            },
        }
    }
}

// ---------------------------------------------------------------------------
// Requests and responses (pure).

/// The methods served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
}

/// How the client wants the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// Path of the request target, still percent-encoded, without query.
    pub path: String,
    pub format: Format,
}

/// An answer, before serialisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Headers besides `Date`, `Server`, `Content-Length` and `Connection`.
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// HEAD: send the headers only (with the body's length).
    pub head_only: bool,
}

impl Response {
    fn new(status: u16, content_type: &'static str, body: String) -> Self {
        Response {
            status,
            headers: vec![("Content-Type", content_type.to_string())],
            body,
            head_only: false,
        }
    }

    fn text(status: u16, body: &str) -> Self {
        Self::new(status, "text/plain", body.to_string())
    }

    fn json(status: u16, value: &Value) -> Self {
        Self::new(status, "application/json", to_json(value))
    }

    /// `body` as text or `value` as JSON, as the client asked.
    fn negotiated(status: u16, format: Format, body: String, value: &Value) -> Self {
        match format {
            Format::Text => Self::new(status, "text/plain", body),
            Format::Json => Self::json(status, value),
        }
    }

    fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The value of a header set on this response.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The bytes sent on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nDate: {}\r\nServer: rsbal/{}\r\n",
            self.status,
            reason(self.status),
            http_date(SystemTime::now()),
            env!("CARGO_PKG_VERSION"),
        );
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut bytes = out.into_bytes();
        if !self.head_only {
            bytes.extend_from_slice(self.body.as_bytes());
        }
        bytes
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// IMF-fixdate, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        day,
        MONTHS[(month as usize).saturating_sub(1) % 12],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// JSON the way Python's `json.dumps` writes it (`", "` and `": "`
/// separators), so output stays byte-compatible with PyBal's where the key
/// order allows.
fn to_json(value: &Value) -> String {
    struct PyFormatter;
    impl serde_json::ser::Formatter for PyFormatter {
        fn begin_array_value<W: ?Sized + Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            if first {
                Ok(())
            } else {
                w.write_all(b", ")
            }
        }
        fn begin_object_key<W: ?Sized + Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            if first {
                Ok(())
            } else {
                w.write_all(b", ")
            }
        }
        fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PyFormatter);
    match serde::Serialize::serialize(value, &mut ser) {
        Ok(()) => String::from_utf8(out).unwrap_or_else(|_| value.to_string()),
        Err(_) => value.to_string(),
    }
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Whether an `Accept` header value names `application/json`.
fn accepts_json(value: &str) -> bool {
    value.split(',').any(|range| {
        range
            .split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// Parses a request head (request line and headers). An `Err` is the answer
/// to send instead (400, 405, 505).
pub fn parse_request(head: &[u8]) -> Result<Request, Response> {
    let bad = || Response::text(400, "Bad request\n");
    let text = String::from_utf8_lossy(head);
    let mut lines = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .skip_while(|l| l.is_empty());
    let request_line = lines.next().ok_or_else(bad)?;
    let parts: Vec<&str> = request_line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err(bad());
    };
    if method.is_empty() || !method.chars().all(is_tchar) {
        return Err(bad());
    }
    let minor_version = match version {
        "HTTP/1.0" => 0,
        "HTTP/1.1" => 1,
        v if v.len() == 8
            && v.starts_with("HTTP/")
            && v.as_bytes()[5].is_ascii_digit()
            && v.as_bytes()[6] == b'.'
            && v.as_bytes()[7].is_ascii_digit() =>
        {
            return Err(Response::text(505, "HTTP version not supported\n"));
        }
        _ => return Err(bad()),
    };

    let mut format = Format::Text;
    let mut host_seen = false;
    for line in lines {
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').ok_or_else(bad)?;
        // No whitespace in or around names, no obsolete line folding.
        if name.is_empty() || !name.chars().all(is_tchar) {
            return Err(bad());
        }
        if name.eq_ignore_ascii_case("host") {
            host_seen = true;
        } else if name.eq_ignore_ascii_case("accept") && accepts_json(value) {
            format = Format::Json;
        }
    }
    if minor_version == 1 && !host_seen {
        return Err(bad());
    }

    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => {
            let mut resp = Response::negotiated(
                405,
                format,
                "Method not allowed\n".into(),
                &json!({"error": "Method not allowed"}),
            );
            resp.headers.push(("Allow", "GET, HEAD".into()));
            return Err(resp);
        }
    };

    // Origin form `/path?query`, or absolute form `http://host/path?query`.
    let path = if target.starts_with('/') {
        target
    } else {
        let lower = target.to_ascii_lowercase();
        let rest = if lower.starts_with("http://") {
            &target[7..]
        } else if lower.starts_with("https://") {
            &target[8..]
        } else {
            return Err(bad());
        };
        rest.find('/').map_or("/", |i| &rest[i..])
    };
    let path = path.split(['?', '#']).next().unwrap_or("/");
    if path.chars().any(|c| c.is_ascii_control() || c == ' ') {
        return Err(bad());
    }
    Ok(Request {
        method,
        path: path.to_string(),
        format,
    })
}

/// Answers one request head: parse, route, and strip the body for HEAD.
pub fn handle_request(head: &[u8], store: &SnapshotStore) -> Response {
    match parse_request(head) {
        Ok(req) => {
            let mut resp = route(&req, store);
            resp.head_only = req.method == Method::Head;
            resp
        }
        Err(resp) => resp,
    }
}

/// Percent-decodes one path segment; `None` when it is malformed.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = segment.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The decoded segments of a path: `/` → `[]`, `/pools/` → `["pools"]`
/// (one trailing slash is tolerated).
fn path_segments(path: &str) -> Option<Vec<String>> {
    let inner = path.strip_prefix('/').unwrap_or(path);
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner.split('/').map(percent_decode).collect()
}

/// Picks the handler of a request; each route is a function of the store
/// and the format.
pub fn route(req: &Request, store: &SnapshotStore) -> Response {
    let Some(segments) = path_segments(&req.path) else {
        return Response::text(400, "Bad request\n");
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        [] => status(store, req.format),
        ["alerts"] => alerts(store, req.format),
        ["pools"] => pools(store, req.format),
        ["pools", pool] => pool_servers(store, req.format, pool),
        ["pools", pool, host] => pool_server(store, req.format, pool, host),
        ["metrics"] => metrics(),
        _ => not_found(req.format),
    }
}

/// 404 in the requested format.
pub fn not_found(format: Format) -> Response {
    Response::negotiated(404, format, NOT_FOUND.into(), &json!({"error": NOT_FOUND}))
}

/// `/metrics`: Prometheus text format, whatever the `Accept` header says.
fn metrics() -> Response {
    Response::new(200, crate::metrics::CONTENT_TYPE, crate::metrics::render())
}

/// `/`: the status page, or the status document as JSON.
fn status(store: &SnapshotStore, format: Format) -> Response {
    let doc = crate::status_doc::build(store);
    match format {
        Format::Json => match serde_json::to_value(&doc) {
            Ok(value) => Response::json(200, &value),
            Err(e) => Response::text(500, &format!("cannot encode the status: {e}\n")),
        },
        Format::Text => Response::new(
            200,
            "text/html; charset=utf-8",
            crate::status_page::render(&doc),
        ),
    }
}

/// `/alerts`: PyBal's `OK - All pools are healthy` / `{"status", "msg"}`.
fn alerts(store: &SnapshotStore, format: Format) -> Response {
    let pools = store.all();
    let alert = crate::alerts::evaluate(pools.iter().map(|p| &**p));
    Response::negotiated(
        200,
        format,
        alert.text(),
        &json!({"status": alert.level.lower(), "msg": alert.msg}),
    )
}

/// `/pools`: the service names.
fn pools(store: &SnapshotStore, format: Format) -> Response {
    let names: Vec<String> = store.all().iter().map(|s| s.name.clone()).collect();
    // PyBal: "\n".join(pools) + "\n".
    let text = format!("{}\n", names.join("\n"));
    Response::negotiated(200, format, text, &json!(names))
}

/// `/pools/<pool>`: every server of one service.
fn pool_servers(store: &SnapshotStore, format: Format, pool: &str) -> Response {
    let Some(snap) = store.get(pool) else {
        return not_found(format);
    };
    let text: String = snap
        .servers
        .iter()
        .map(|s| format!("{}:\t{}\n", s.host, s.text_status()))
        .collect();
    let json: Map<String, Value> = snap
        .servers
        .iter()
        .map(|s| (s.host.clone(), server_json(s)))
        .collect();
    Response::negotiated(200, format, text, &Value::Object(json))
}

/// `/pools/<pool>/<host>`: one server.
fn pool_server(store: &SnapshotStore, format: Format, pool: &str, host: &str) -> Response {
    let Some(server) = store
        .get(pool)
        .as_deref()
        .and_then(|s| find_server(s, host))
    else {
        return not_found(format);
    };
    Response::negotiated(
        200,
        format,
        format!("{}\n", server.text_status()),
        &server_json(&server),
    )
}

fn find_server(snap: &ServiceSnapshot, host: &str) -> Option<ServerState> {
    snap.servers.iter().find(|s| s.host == host).cloned()
}

/// PyBal's `Server.dumpState()`.
fn server_json(s: &ServerState) -> Value {
    json!({"pooled": s.pooled, "weight": s.weight, "up": s.up, "enabled": s.enabled})
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use crate::coordinator::MonitorState;
    use std::net::Ipv4Addr;

    fn server(
        host: &str,
        enabled: bool,
        up: bool,
        pooled: bool,
        monitors: &[Option<bool>],
    ) -> ServerState {
        ServerState {
            host: host.into(),
            ip: Some(Ipv4Addr::new(10, 0, 0, 2).into()),
            weight: 10,
            enabled,
            ready: true,
            up,
            pooled,
            monitors: monitors
                .iter()
                .map(|up| MonitorState {
                    up: *up,
                    ..Default::default()
                })
                .collect(),
        }
    }

    fn snapshot(name: &str, servers: Vec<ServerState>) -> ServiceSnapshot {
        ServiceSnapshot {
            name: name.into(),
            protocol: Protocol::Tcp,
            ip: Ipv4Addr::new(10, 0, 0, 1).into(),
            port: 80,
            scheduler: "wrr".into(),
            depool_threshold: 0.5,
            can_depool: true,
            pooled_down: vec![],
            could_not_depool_total: 0,
            monitor_names: vec!["ProxyFetch".into(), "IdleConnection".into()],
            servers,
        }
    }

    fn store() -> Arc<SnapshotStore> {
        let store = Arc::new(SnapshotStore::new());
        let mut mw2 = server("mw1002", false, false, false, &[Some(false), Some(true)]);
        mw2.weight = 5;
        store.publish(snapshot(
            "apaches_80",
            vec![
                server("mw1001", true, true, true, &[Some(true), Some(true)]),
                mw2,
                server("mw1003", true, false, true, &[Some(false), None]),
            ],
        ));
        store.publish(snapshot("text_443", vec![]));
        store
    }

    fn get(path: &str, json: bool) -> Response {
        let accept = if json {
            "Accept: application/json\r\n"
        } else {
            ""
        };
        let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{accept}\r\n");
        handle_request(head.as_bytes(), &store())
    }

    fn body_json(resp: &Response) -> Value {
        serde_json::from_str(&resp.body).unwrap()
    }

    #[test]
    fn pools_text_and_json() {
        let r = get("/pools", false);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_eq!(r.body, "apaches_80\ntext_443\n");
        let r = get("/pools/", true);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.body, r#"["apaches_80", "text_443"]"#);
    }

    #[test]
    fn pool_text_and_json() {
        let r = get("/pools/apaches_80", false);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            "mw1001:\tenabled/up/pooled\nmw1002:\tdisabled/partially up/not pooled\n\
             mw1003:\tenabled/down/pooled\n"
        );
        let r = get("/pools/apaches_80/", true);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(
            body_json(&r),
            json!({
                "mw1001": {"pooled": true, "weight": 10, "up": true, "enabled": true},
                "mw1002": {"pooled": false, "weight": 5, "up": false, "enabled": false},
                "mw1003": {"pooled": true, "weight": 10, "up": false, "enabled": true},
            })
        );
        let r = get("/pools/text_443", false);
        assert_eq!((r.status, r.body.as_str()), (200, ""));
        assert_eq!(get("/pools/text_443", true).body, "{}");
    }

    #[test]
    fn server_text_and_json() {
        let r = get("/pools/apaches_80/mw1002", false);
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "disabled/partially up/not pooled\n")
        );
        let r = get("/pools/apaches_80/mw1001/", true);
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            r#"{"enabled": true, "pooled": true, "up": true, "weight": 10}"#
        );
    }

    #[test]
    fn not_found_everywhere() {
        for path in [
            "/nothing",
            "/pools/nope",
            "/pools/nope/mw1001",
            "/pools/apaches_80/mw9999",
            "/pools/apaches_80/mw1001/extra",
            "//pools",
            "/pools//",
            "/alerts/x",
        ] {
            let r = get(path, false);
            assert_eq!((r.status, r.body.as_str()), (404, NOT_FOUND), "{path}");
            assert_eq!(r.header("content-type"), Some("text/plain"));
            let r = get(path, true);
            assert_eq!(r.status, 404, "{path}");
            assert_eq!(r.body, r#"{"error": "The desired url was not found"}"#);
            assert_eq!(r.header("content-type"), Some("application/json"));
        }
    }

    #[test]
    fn request_forms() {
        let s = store();
        // HTTP/1.0 without Host, query string, percent-encoding, absolute form.
        let r = handle_request(b"GET /pools/apaches%5F80/mw1001?x=1 HTTP/1.0\r\n\r\n", &s);
        assert_eq!((r.status, r.body.as_str()), (200, "enabled/up/pooled\n"));
        let r = handle_request(
            b"GET http://lvs1001:9090/pools HTTP/1.1\r\nHost: lvs1001\r\n\r\n",
            &s,
        );
        assert_eq!(r.status, 200);
        // Bare LF line ends, leading empty line, Accept list with parameters.
        let r = handle_request(
            b"\r\nGET /pools HTTP/1.1\nhost: x\naccept: text/html, Application/JSON;q=0.9\n\n",
            &s,
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        // HEAD: headers with the GET body's length, no body.
        let r = handle_request(b"HEAD /pools HTTP/1.1\r\nHost: x\r\n\r\n", &s);
        assert!(r.head_only);
        let wire = String::from_utf8(r.to_bytes()).unwrap();
        assert!(wire.contains("Content-Length: 20\r\n"), "{wire}");
        assert!(wire.ends_with("\r\n\r\n"), "{wire}");
    }

    #[test]
    fn method_not_allowed() {
        let s = store();
        for m in ["POST", "PUT", "DELETE", "OPTIONS", "get"] {
            let head = format!("{m} /pools HTTP/1.1\r\nHost: x\r\n\r\n");
            let r = handle_request(head.as_bytes(), &s);
            assert_eq!(r.status, 405, "{m}");
            assert_eq!(r.header("Allow"), Some("GET, HEAD"));
        }
    }

    #[test]
    fn malformed_requests() {
        let s = store();
        let cases: &[(&[u8], u16)] = &[
            (b"GARBAGE\r\n\r\n", 400),
            (b"GET /pools\r\n\r\n", 400),
            (b"GET  /pools HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET /pools HTTP/1.1\r\n\r\n", 400),
            (b"GET /pools HTTP/1.1\r\nHost x\r\n\r\n", 400),
            (b"GET /pools HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400),
            (
                b"GET /pools HTTP/1.1\r\nBad Name: x\r\nHost: x\r\n\r\n",
                400,
            ),
            (b"GET pools HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET /pools/%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET /pools/%ff HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET /pools/%f HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"G\xffT /pools HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"GET /pools HTTP/2.0\r\nHost: x\r\n\r\n", 505),
            (b"GET /pools FTP/1.0\r\n\r\n", 400),
            (b"\r\n\r\n", 400),
            (b"", 400),
        ];
        for (head, status) in cases {
            let r = handle_request(head, &s);
            assert_eq!(r.status, *status, "{:?}", String::from_utf8_lossy(head));
        }
    }

    #[test]
    fn random_input_never_panics() {
        let s = store();
        let mut rng = fastrand::Rng::with_seed(9090);
        let alphabet = b"GETHAD /%:\r\n?#1.PTpols\xff\x00";
        for _ in 0..20_000 {
            let len = rng.usize(0..64);
            let mut head: Vec<u8> = b"GET /".to_vec();
            head.extend((0..len).map(|_| alphabet[rng.usize(..alphabet.len())]));
            let r = handle_request(&head, &s);
            assert!(r.status >= 200);
            let raw: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            let _ = handle_request(&raw, &s);
            let _ = head_end(&raw);
        }
    }

    #[test]
    fn head_end_finds_terminators() {
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\nrest"), Some(16));
        assert_eq!(head_end(b"\r\n\r\nGET / HTTP/1.0\r\n\r\n"), Some(22));
        assert_eq!(head_end(b"GET / HTTP/1.0\r\n"), None);
        assert_eq!(head_end(b"\r\n"), None);
    }

    #[test]
    fn http_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_208_000); // 2024-02-29 12:00
        assert_eq!(http_date(t), "Thu, 29 Feb 2024 12:00:00 GMT");
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
    fn full_queue_gets_503() {
        let limits = Limits {
            workers: 1,
            queue: 1,
            ..Limits::default()
        };
        let srv = start_with(&local(), store(), limits).unwrap();
        let addr = srv.local_addrs()[0];
        // The only worker waits on the first client, the second waits in the
        // queue, the third finds the queue full.
        let _busy = TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let _queued = TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let (st, head, _) = http_get(addr, "/pools", false);
        assert_eq!(st, 503);
        assert!(head.contains("Retry-After: 1\r\n"), "{head}");
        srv.stop();
    }

    #[test]
    fn unbindable_addresses_are_skipped() {
        // 192.0.2.1 (TEST-NET-1) is not an address of this host.
        let foreign: SocketAddr = "192.0.2.1:0".parse().unwrap();
        let srv = start(&[foreign, local()[0]], store()).unwrap();
        assert_eq!(srv.local_addrs().len(), 1);
        let (st, _, _) = http_get(srv.local_addrs()[0], "/pools", false);
        assert_eq!(st, 200);
        srv.stop();
        assert!(start(&[foreign], store()).is_err());
        assert!(start(&[], store()).is_err());
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
