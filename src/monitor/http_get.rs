//! ProxyFetch's plain-HTTP GET: one request on a fresh connection, the
//! status of the response head, nothing else.
//!
//! `http://` checks are most of a balancer's checks (10,000 a second at
//! production scale), and a general HTTP client spends more CPU than the
//! kernel's loopback TCP: agent and request set-up, header maps, buffers
//! allocated and zeroed per connection, a non-blocking connect and a poll.
//! Here the request bytes are built once per monitor ([`Request::new`]);
//! a check is a blocking `connect` bounded by `SO_SNDTIMEO` (the kernel
//! honours it for `connect`), one `write`, `read`s into a stack buffer until
//! the response head is complete (parsed by `httparse`, at most
//! [`MAX_HEAD`] bytes), and a close. The whole check is bounded by its
//! timeout. The body is not read (as before with ureq, which returned after
//! the head). `https://` checks keep ureq and rustls.

use super::Step;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use ureq::http::Uri;

/// The largest response head accepted.
pub(crate) const MAX_HEAD: usize = 32 * 1024;

/// Response heads up to this size are read on the stack.
const STACK_BUFFER: usize = 4096;

/// How long the one read after the deadline waits.
const LAST_LOOK: Duration = Duration::from_millis(1);

/// Most header lines accepted in a response head.
const MAX_HEADERS: usize = 100;

/// The bytes of one URL's GET, built once.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    bytes: Vec<u8>,
}

/// Why a GET failed.
#[derive(Debug)]
pub(crate) enum GetError {
    /// No complete response head within the check's timeout.
    Timeout,
    /// A socket call failed (`step` says whether it was acquiring the
    /// socket or using it, for `CheckError::io`).
    Io(Step, io::Error),
    /// The server's bytes are not an HTTP/1.x response head.
    BadResponse(String),
}

impl Request {
    /// The GET of `url` with `user_agent`, or `None` when `url` is not an
    /// `http://` URL (then ureq handles it).
    pub(crate) fn new(url: &str, user_agent: &str) -> Option<Request> {
        let uri: Uri = url.parse().ok()?;
        if uri.scheme_str() != Some("http") {
            return None;
        }
        let authority = uri.authority()?;
        // Without user info: `Host` is host[:port] as the URL gives it.
        let host = authority
            .as_str()
            .rsplit_once('@')
            .map_or(authority.as_str(), |(_, host)| host);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let path = if path.is_empty() { "/" } else { path };
        let text = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {user_agent}\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        );
        Some(Request {
            bytes: text.into_bytes(),
        })
    }

    /// Sends the request to `addr` on a new connection and returns the
    /// response's status code, all within `timeout`.
    pub(crate) fn get(&self, addr: SocketAddr, timeout: Duration) -> Result<u16, GetError> {
        let deadline = Instant::now() + timeout;
        let mut stream = connect(addr, timeout)?;
        stream
            .write_all(&self.bytes)
            .map_err(|e| use_error(e, deadline))?;
        read_status(&mut stream, deadline)
    }
}

/// A connected stream to `addr`, the connect bounded by `timeout`.
fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, GetError> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .map_err(|e| GetError::Io(Step::Acquire, e))?;
    // Bounds the connect and the request's write.
    socket
        .set_write_timeout(Some(timeout))
        .map_err(|e| GetError::Io(Step::Acquire, e))?;
    match socket.connect(&addr.into()) {
        Ok(()) => Ok(socket.into()),
        // A blocking connect cut short by SO_SNDTIMEO.
        Err(e) if e.raw_os_error() == Some(nix::libc::EINPROGRESS) => Err(GetError::Timeout),
        Err(e) if is_timeout(&e) => Err(GetError::Timeout),
        Err(e) => Err(GetError::Io(Step::Use, e)),
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A failed write or read: a timeout once the deadline passed, else I/O.
fn use_error(e: io::Error, deadline: Instant) -> GetError {
    if is_timeout(&e) || Instant::now() >= deadline {
        GetError::Timeout
    } else {
        GetError::Io(Step::Use, e)
    }
}

/// Reads until the response head is complete and returns its status.
fn read_status(stream: &mut TcpStream, deadline: Instant) -> Result<u16, GetError> {
    let mut stack = [0u8; STACK_BUFFER];
    let mut heap: Vec<u8> = Vec::new();
    let mut len = 0;
    let mut last_look = false;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            // The deadline passed while this thread waited for the CPU (or
            // the bytes came in pieces): what has arrived by now counts.
            if last_look {
                return Err(GetError::Timeout);
            }
            last_look = true;
        }
        stream
            .set_read_timeout(Some(remaining.max(LAST_LOOK)))
            .map_err(|e| GetError::Io(Step::Use, e))?;
        let buf: &mut [u8] = if heap.is_empty() {
            &mut stack
        } else {
            &mut heap
        };
        let n = match stream.read(&mut buf[len..]) {
            Ok(0) => {
                return Err(GetError::BadResponse(if len == 0 {
                    "connection closed before a response".to_string()
                } else {
                    "connection closed within the response head".to_string()
                }))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(use_error(e, deadline)),
        };
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                return response
                    .code
                    .ok_or_else(|| GetError::BadResponse("no status code".to_string()));
            }
            Ok(httparse::Status::Partial) => {}
            Err(e) => return Err(GetError::BadResponse(format!("bad response head: {e}"))),
        }
        if len == buf.len() {
            if len >= MAX_HEAD {
                return Err(GetError::BadResponse(format!(
                    "response head over {MAX_HEAD} bytes"
                )));
            }
            if heap.is_empty() {
                heap = stack.to_vec();
            }
            heap.resize((len * 2).min(MAX_HEAD), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::thread;

    fn text(r: &Request) -> String {
        String::from_utf8(r.bytes.clone()).unwrap()
    }

    #[test]
    fn requests_name_the_urls_host_and_path() {
        let r = Request::new("http://en.wikipedia.org/wiki/Main?x=1", "ua").unwrap();
        assert_eq!(
            text(&r),
            "GET /wiki/Main?x=1 HTTP/1.1\r\nHost: en.wikipedia.org\r\nUser-Agent: ua\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        );
        let r = Request::new("http://user:pw@localhost:8080", "ua").unwrap();
        assert!(text(&r).starts_with("GET / HTTP/1.1\r\nHost: localhost:8080\r\n"));
        assert!(Request::new("https://localhost/", "ua").is_none());
        assert!(Request::new("not a url", "ua").is_none());
    }

    /// A server that answers one connection with `response` (after reading
    /// the request), then closes.
    fn serve(response: Vec<u8>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            for chunk in response.chunks(700) {
                let _ = s.write_all(chunk);
                thread::sleep(Duration::from_millis(2));
            }
        });
        addr
    }

    #[test]
    fn the_status_of_a_complete_head_however_it_arrives() {
        let second = Duration::from_secs(1);
        let r = Request::new("http://x/", "ua").unwrap();
        let addr = serve(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n".to_vec());
        assert_eq!(r.get(addr, second).unwrap(), 503);
        // A head larger than the stack buffer, in pieces.
        let mut big = b"HTTP/1.0 200 OK\r\n".to_vec();
        for i in 0..90 {
            big.extend(format!("X-Filler-{i}: {}\r\n", "y".repeat(80)).bytes());
        }
        big.extend(b"\r\nbody");
        assert!(big.len() > STACK_BUFFER);
        assert_eq!(r.get(serve(big), second).unwrap(), 200);
    }

    #[test]
    fn bad_closed_and_silent_servers_fail() {
        let r = Request::new("http://x/", "ua").unwrap();
        let short = Duration::from_millis(300);
        let closed = r.get(serve(Vec::new()), short).unwrap_err();
        assert!(matches!(closed, GetError::BadResponse(_)), "{closed:?}");
        let garbage = r.get(serve(b"SSH-2.0-OpenSSH\r\n\r\n".to_vec()), short);
        assert!(matches!(garbage, Err(GetError::BadResponse(_))));
        let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
        while huge.len() <= MAX_HEAD {
            huge.extend(b"X-A: b\r\n");
        }
        let too_big = r.get(serve(huge), short);
        assert!(matches!(too_big, Err(GetError::BadResponse(_))));
        // Accepts (the listen queue does) and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").unwrap();
        let started = Instant::now();
        let timed_out = r.get(silent.local_addr().unwrap(), short);
        assert!(matches!(timed_out, Err(GetError::Timeout)));
        assert!(started.elapsed() < Duration::from_secs(2));
        // Nobody listening.
        let port = silent.local_addr().unwrap().port();
        drop(silent);
        let refused = r.get(SocketAddr::from(([127, 0, 0, 1], port)), short);
        assert!(
            matches!(&refused, Err(GetError::Io(Step::Use, e)) if e.kind() == io::ErrorKind::ConnectionRefused),
            "{refused:?}"
        );
    }
}
