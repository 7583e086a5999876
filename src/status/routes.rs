//! Instrumentation HTTP server (SPEC 9): PyBal's read-only view of the pools.
//!
//! This module owns the small HTTP/1.x server behind `instrumentation = yes`:
//! the sockets and threads are in `server` (see there); the answers come
//! from pure functions here.
//!
//! requests are answered by [`handle_request`] → [`route`], which read
//! state only through [`SnapshotStore`] (cloned `Arc`s; no lock is held
//! while a socket is written).
//!
//! Routes follow PyBal's `pybal/instrumentation.py`: `/pools`,
//! `/pools/<pool>`, `/pools/<pool>/<host>`, JSON when the request accepts
//! `application/json`, plain text otherwise, and a 404 body of
//! `The desired url was not found`; `/alerts` (PyBal's pool health, see
//! `alerts`), `/metrics` (Prometheus text format) and, beyond PyBal, `/`: the
//! HTML status page (`status_page`), or the status document as JSON
//! (`status_doc`) for `Accept: application/json`.

use crate::service::coordinator::ServerState;
use crate::status::snapshot::{ServiceSnapshot, SnapshotStore};
use serde_json::{json, Map, Value};
use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

/// Body of every 404, as PyBal words it.
const NOT_FOUND: &str = "The desired url was not found";

// ---------------------------------------------------------------------------
// Requests and responses (pure).

/// The methods served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Head,
}

/// How the client wants the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    Json,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    pub(crate) method: Method,
    /// Path of the request target, still percent-encoded, without query.
    pub(crate) path: String,
    pub(crate) format: Format,
}

/// An answer, before serialisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    /// Headers besides `Date`, `Server`, `Content-Length` and `Connection`.
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: String,
    /// HEAD: send the headers only (with the body's length).
    pub(crate) head_only: bool,
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

    pub(super) fn text(status: u16, body: &str) -> Self {
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

    pub(super) fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    #[cfg(test)]
    /// The value of a header set on this response.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The bytes sent on the wire.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
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
    fn comma_unless_first<W: ?Sized + Write>(w: &mut W, first: bool) -> io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    struct PyFormatter;
    impl serde_json::ser::Formatter for PyFormatter {
        fn begin_array_value<W: ?Sized + Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            comma_unless_first(w, first)
        }
        fn begin_object_key<W: ?Sized + Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            comma_unless_first(w, first)
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
pub(crate) fn parse_request(head: &[u8]) -> Result<Request, Response> {
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
pub(crate) fn handle_request(head: &[u8], store: &SnapshotStore) -> Response {
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
pub(crate) fn route(req: &Request, store: &SnapshotStore) -> Response {
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
pub(crate) fn not_found(format: Format) -> Response {
    Response::negotiated(404, format, NOT_FOUND.into(), &json!({"error": NOT_FOUND}))
}

/// `/metrics`: Prometheus text format, whatever the `Accept` header says.
fn metrics() -> Response {
    Response::new(
        200,
        crate::status::metrics::CONTENT_TYPE,
        crate::status::metrics::render(),
    )
}

/// `/`: the status page, or the status document as JSON.
fn status(store: &SnapshotStore, format: Format) -> Response {
    let doc = crate::status::document::build(store);
    match format {
        Format::Json => match serde_json::to_value(&doc) {
            Ok(value) => Response::json(200, &value),
            Err(e) => Response::text(500, &format!("cannot encode the status: {e}\n")),
        },
        Format::Text => Response::new(
            200,
            "text/html; charset=utf-8",
            crate::status::page::render(&doc),
        ),
    }
}

/// `/alerts`: PyBal's `OK - All pools are healthy` / `{"status", "msg"}`.
fn alerts(store: &SnapshotStore, format: Format) -> Response {
    let pools = store.all();
    let alert = crate::status::alerts::of(pools.iter().map(|p| &**p), &store.daemon());
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
        .map(|s| {
            let host = crate::daemon::logging::escape_control(&s.host);
            format!("{host}:\t{}\n", line_status(s))
        })
        .collect();
    let json: Map<String, Value> = snap
        .servers
        .iter()
        .map(|s| {
            let mut state = server_json(s);
            if let (Some(why), Some(fields)) = (&s.unresolved, state.as_object_mut()) {
                fields.insert("unresolved".into(), json!(why));
            }
            (s.host.clone(), state)
        })
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
        format!("{}\n", line_status(&server)),
        &server_json(&server),
    )
}

/// PyBal's `enabled/up/pooled`, and for a server without an address why its
/// name does not resolve (a line that does not end in `/pooled`, as
/// `check_pybal_ipvs_diff` reads it, stays so).
fn line_status(s: &ServerState) -> String {
    match (&s.ip, &s.unresolved) {
        (None, Some(why)) => format!("{} (unresolved: {why})", s.text_status()),
        _ => s.text_status(),
    }
}

fn find_server(snap: &ServiceSnapshot, host: &str) -> Option<ServerState> {
    snap.servers.iter().find(|s| s.host == host).cloned()
}

/// PyBal's `Server.dumpState()`: these four keys only (conftool's
/// safe-service-restart refuses any other).
fn server_json(s: &ServerState) -> Value {
    json!({"pooled": s.pooled, "weight": s.weight, "up": s.up, "enabled": s.enabled})
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Protocol;
    use crate::service::coordinator::MonitorState;
    use std::net::Ipv4Addr;
    use std::sync::Arc;
    use std::time::Duration;

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
            unresolved: None,
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

    pub(crate) fn store() -> Arc<SnapshotStore> {
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
    fn control_characters_in_host_names_are_escaped_in_pool_text() {
        let store = SnapshotStore::new();
        let evil = "a\u{1b}[2J\nfake:\tenabled/up/pooled\r";
        store.publish(snapshot("p", vec![server(evil, true, true, true, &[])]));
        let head = "GET /pools/p HTTP/1.1\r\nHost: x\r\n\r\n";
        let r = handle_request(head.as_bytes(), &store);
        assert_eq!(
            r.body,
            "a\\x1b[2J\\nfake:\\tenabled/up/pooled\\r:\tenabled/up/pooled\n"
        );
        // JSON carries the name as it is, escaped by JSON's own rules.
        let head = "GET /pools/p HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n";
        let r = handle_request(head.as_bytes(), &store);
        assert!(body_json(&r).get(evil).is_some(), "{}", r.body);
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
    fn unresolved_servers_say_so_and_why() {
        let store = Arc::new(SnapshotStore::new());
        let mut never = server("new.example", true, false, false, &[None]);
        never.ip = None;
        never.ready = false;
        never.unresolved = Some("no answer yet".into());
        store.publish(snapshot("web", vec![never]));
        let get = |path: &str, json: bool| {
            let accept = if json {
                "Accept: application/json\r\n"
            } else {
                ""
            };
            let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{accept}\r\n");
            handle_request(head.as_bytes(), &store)
        };
        assert_eq!(
            get("/pools/web", false).body,
            "new.example:\tenabled/down/not pooled (unresolved: no answer yet)\n"
        );
        assert_eq!(
            body_json(&get("/pools/web", true)),
            json!({"new.example": {"pooled": false, "weight": 10, "up": false, "enabled": true,
                "unresolved": "no answer yet"}})
        );
        // One server's JSON keeps PyBal's four keys (conftool reads no other).
        assert_eq!(
            body_json(&get("/pools/web/new.example", true)),
            json!({"pooled": false, "weight": 10, "up": false, "enabled": true})
        );
        assert_eq!(
            get("/pools/web/new.example", false).body,
            "enabled/down/not pooled (unresolved: no answer yet)\n"
        );
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
    fn alerts_text_and_json() {
        let r = get("/alerts", false);
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "OK - All pools are healthy")
        );
        assert_eq!(r.header("content-type"), Some("text/plain"));
        let r = get("/alerts", true);
        assert_eq!(
            body_json(&r),
            json!({"status": "ok", "msg": "All pools are healthy"})
        );
        let s = store();
        let mut snap = ServiceSnapshot::clone(&s.get("apaches_80").unwrap());
        snap.pooled_down = vec!["mw1003".into()];
        s.publish(snap);
        let r = handle_request(b"GET /alerts HTTP/1.0\r\n\r\n", &s);
        assert_eq!(
            r.body,
            "CRITICAL - apaches_80: Servers mw1003 are marked down but pooled"
        );
        let r = handle_request(
            b"GET /alerts HTTP/1.0\r\nAccept: application/json\r\n\r\n",
            &s,
        );
        assert_eq!(
            body_json(&r),
            json!({"status": "critical", "msg": "apaches_80: Servers mw1003 are marked down but pooled"})
        );
    }

    /// Issue 11 item 6: what the IpvsWriter publishes reaches `/alerts`
    /// and the status document.
    #[test]
    fn alerts_and_status_name_a_pool_out_of_sync_with_the_kernel() {
        let s = store();
        s.update_daemon(|d| {
            d.ipvs_out_of_sync
                .insert("text_443".into(), "applying 2 command(s) failed: x".into());
        });
        let r = handle_request(b"GET /alerts HTTP/1.0\r\n\r\n", &s);
        assert_eq!(
            r.body,
            "WARNING - Pool text_443 is out of sync with the kernel's IPVS table: \
             applying 2 command(s) failed: x. "
        );
        let r = handle_request(b"GET / HTTP/1.0\r\nAccept: application/json\r\n\r\n", &s);
        let doc = body_json(&r);
        assert_eq!(doc["alert"]["status"], "warning");
        let pools = doc["pools"].as_array().unwrap();
        let text = pools.iter().find(|p| p["name"] == "text_443").unwrap();
        assert_eq!(text["status"], "warning");
        assert_eq!(text["ipvs_out_of_sync"], "applying 2 command(s) failed: x");
        let apaches = pools.iter().find(|p| p["name"] == "apaches_80").unwrap();
        assert_eq!(apaches["ipvs_out_of_sync"], Value::Null);
    }

    #[test]
    fn status_page_html_and_json() {
        let r = get("/", false);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
        assert!(r.body.contains("<table>"), "{}", r.body);
        for host in ["mw1001", "mw1002", "mw1003"] {
            assert!(r.body.contains(&format!("data-host=\"{host}\"")), "{host}");
        }
        let r = get("/", true);
        assert_eq!(r.header("content-type"), Some("application/json"));
        let doc: crate::status::document::StatusDoc = serde_json::from_str(&r.body).unwrap();
        assert_eq!(doc.pools.len(), 2);
        assert_eq!(doc.pools[0].servers.len(), 3);
        assert_eq!(doc.alert.status, crate::status::alerts::Level::Ok);
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
            let _ = super::super::server::head_end(&raw);
        }
    }

    #[test]
    fn http_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_208_000); // 2024-02-29 12:00
        assert_eq!(http_date(t), "Thu, 29 Feb 2024 12:00:00 GMT");
    }
}
