//! `etcd://host[:port]/key` server lists through etcd's v2 keys API, the way
//! conftool publishes pools: one node per server under the key, named after
//! the host, whose value is JSON `{"weight": 10, "pooled": "yes"}`.
//!
//! The thread reads the whole directory (`GET /v2/keys<key>?recursive=true`),
//! then long-polls for changes (`?wait=true&recursive=true&waitIndex=N`),
//! starting after the read's `X-Etcd-Index` and after each change's
//! `modifiedIndex`. When etcd has forgotten the index it is asked for (error
//! 401) or ends a watch without an event, the directory is read again. When
//! etcd cannot be reached or answers nonsense, the last good list stays and
//! the thread retries with a doubling delay, starting again with a full read.
//!
//! `etcd://` speaks HTTPS (as PyBal did); `etcd+http://` speaks plain HTTP.
//! Decoding responses and keeping the current view of the directory is pure
//! code ([`View`]), tested without a server.

use super::{Backoff, ListKeeper, SourceError, USER_AGENT};
use crate::net::tls::tls_config;
use crate::source::serverlist::ServerEntry;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use ureq::Agent;

/// A watch with no change is renewed after this long (with the same index,
/// so nothing is missed); it also bounds how long a silently dead etcd goes
/// unnoticed.
const WATCH_TIMEOUT: Duration = Duration::from_secs(60);
/// First retry delay after a failure; doubles up to [`RETRY_MAX`].
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(10);
/// etcd's "the event in requested index is outdated and cleared".
const INDEX_CLEARED: u64 = 401;
/// Weight of a node whose value gives none (or a wrong one).
const DEFAULT_WEIGHT: u32 = 10;

/// The agent of one etcd source: `timeout` for connecting and for a read;
/// watches set their own, longer limit.
pub(super) fn agent(timeout: Duration) -> Agent {
    let config = Agent::config_builder()
        .timeout_global(Some(timeout))
        .timeout_connect(Some(timeout))
        .http_status_as_error(false)
        .user_agent(USER_AGENT)
        .tls_config(tls_config())
        .build();
    Agent::new_with_config(config)
}

/// Where the directory lives.
pub(super) struct Server {
    /// `https://host:port` or `http://host:port`.
    base: String,
    /// The directory key: leading `/`, no trailing `/`.
    key: String,
}

/// What one long-poll got (a timeout, [`WATCH_TIMEOUT`] without a change,
/// is an error the caller takes for a quiet watch).
#[derive(Debug)]
enum Watched {
    Event(Response),
    /// etcd ended the watch without an event (it does when a watcher falls
    /// behind): read everything again.
    Ended,
}

/// Why following the watch stopped.
enum Followed {
    /// The service thread is gone: end the source.
    ServiceGone,
    /// etcd cannot continue this watch: read the directory again.
    ReadAgain,
    /// etcd failed.
    Failed(SourceError),
}

impl Server {
    pub(super) fn new(host: &str, port: u16, key: &str, tls: bool) -> Self {
        let scheme = if tls { "https" } else { "http" };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        Server {
            base: format!("{scheme}://{host}:{port}"),
            key: normalize_key(key),
        }
    }

    fn url(&self, query: &str) -> String {
        format!("{}/v2/keys{}?{query}", self.base, encode_path(&self.key))
    }

    /// The source thread's body: read, follow changes, and after a failure
    /// wait and start over with a read.
    pub(super) fn watch(self, mut keeper: ListKeeper, agent: &Agent) {
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        loop {
            let failure = match self.read(agent) {
                Ok((view, index, problems)) => {
                    log_problems(&keeper, problems);
                    log::debug!(target: &keeper.service, "etcd {}: {} servers, watching from index {index}", self.key, view.servers.len());
                    if !apply(&mut keeper, &view) {
                        return;
                    }
                    backoff.reset();
                    match self.follow(&mut keeper, agent, view, index) {
                        Followed::ServiceGone => return,
                        Followed::ReadAgain => None,
                        Followed::Failed(e) => Some(e),
                    }
                }
                Err(e) => Some(e),
            };
            if keeper.stopped() {
                return;
            }
            if let Some(e) = failure {
                keeper.fail(&e);
                if !keeper.sleep(backoff.next_delay()) {
                    return;
                }
            }
        }
    }

    /// Watches from `index` on, applying each change to `view`, until the
    /// directory must be read again.
    fn follow(
        &self,
        keeper: &mut ListKeeper,
        agent: &Agent,
        mut view: View,
        mut index: u64,
    ) -> Followed {
        loop {
            match self.wait(agent, index) {
                Ok(Watched::Event(event)) => {
                    log_problems(keeper, view.apply_event(&event));
                    index = max_modified_index(&event.node) + 1;
                    if !apply(keeper, &view) {
                        return Followed::ServiceGone;
                    }
                }
                Ok(Watched::Ended) => return Followed::ReadAgain,
                // WATCH_TIMEOUT without a change: watch again.
                Err(e) if e.is_timeout() => {}
                // The index asked for is older than etcd's history.
                Err(SourceError::Http {
                    etcd: Some(why), ..
                }) if why.error_code == INDEX_CLEARED => {
                    log::info!(target: &keeper.service, "etcd {}: {why}; reading the whole list again", self.key);
                    return Followed::ReadAgain;
                }
                Err(e) => return Followed::Failed(e),
            }
        }
    }

    /// The whole directory, the index to watch from and the nodes that
    /// could not be used.
    fn read(&self, agent: &Agent) -> Result<(View, u64, Vec<String>), SourceError> {
        let mut response = agent
            .get(self.url("recursive=true"))
            .call()
            .map_err(SourceError::request)?;
        let status = response.status().as_u16();
        let etcd_index = response
            .headers()
            .get("x-etcd-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let body = read_body(&mut response)?;
        if status != 200 {
            return Err(http_error(status, &body));
        }
        let read = parse_response(&body)?;
        let (view, problems) = View::from_read(&self.key, &read);
        let index = etcd_index.unwrap_or_else(|| max_modified_index(&read.node));
        Ok((view, index + 1, problems))
    }

    /// One long-poll for the first change at or after `index`.
    fn wait(&self, agent: &Agent, index: u64) -> Result<Watched, SourceError> {
        let url = self.url(&format!("wait=true&recursive=true&waitIndex={index}"));
        let request = agent
            .get(url)
            .config()
            .timeout_global(Some(WATCH_TIMEOUT))
            .build();
        let mut response = request.call().map_err(SourceError::request)?;
        let status = response.status().as_u16();
        let body = read_body(&mut response)?;
        if status != 200 {
            return Err(http_error(status, &body));
        }
        if body.trim().is_empty() {
            return Ok(Watched::Ended);
        }
        parse_response(&body).map(Watched::Event)
    }
}

/// The whole body of an answer.
fn read_body(response: &mut ureq::http::Response<ureq::Body>) -> Result<String, SourceError> {
    response
        .body_mut()
        .read_to_string()
        .map_err(|source| SourceError::Body {
            context: "reading the answer",
            source,
        })
}

/// Hands the view's servers to the keeper; false when the service is gone.
fn apply(keeper: &mut ListKeeper, view: &View) -> bool {
    keeper.apply_entries(view.entries()).0
}

fn log_problems(keeper: &ListKeeper, problems: Vec<String>) {
    for problem in problems {
        log::error!(target: &keeper.service, "{}: {problem}", keeper.source);
    }
}

/// `/a/b/` → `/a/b`; always one leading `/`.
fn normalize_key(key: &str) -> String {
    format!("/{}", key.trim_matches('/'))
}

/// Percent-encodes what may not stand in a URL path as it is.
fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~:@".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Responses (pure)
// ---------------------------------------------------------------------------

/// An etcd v2 keys API answer: a read or one watched change.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct Response {
    /// `get`, `set`, `create`, `update`, `compareAndSwap`, `delete`,
    /// `compareAndDelete`, `expire`.
    action: String,
    node: Node,
}

/// One node; a directory has `dir` and (when read) `nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Node {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    dir: bool,
    #[serde(default)]
    nodes: Vec<Node>,
    #[serde(default)]
    modified_index: u64,
}

/// etcd's error body, e.g. `{"errorCode": 100, "message": "Key not found"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct EtcdError {
    pub(super) error_code: u64,
    message: String,
    #[serde(default)]
    cause: Option<String>,
}

impl fmt::Display for EtcdError {
    /// `etcd error 100: Key not found (/nokey)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd error {}: {}", self.error_code, self.message)?;
        match &self.cause {
            Some(cause) => write!(f, " ({cause})"),
            None => Ok(()),
        }
    }
}

fn parse_response(body: &str) -> Result<Response, SourceError> {
    serde_json::from_str(body).map_err(SourceError::NotEtcd)
}

fn parse_error(body: &str) -> Option<EtcdError> {
    serde_json::from_str(body).ok()
}

/// A non-200 answer, with etcd's own error when the body is one.
fn http_error(status: u16, body: &str) -> SourceError {
    SourceError::Http {
        status,
        etcd: parse_error(body),
    }
}

/// For the fuzz targets (`crate::fuzzing`): everything rsbal does with
/// one etcd answer `body` for the key `key`: as a read, as an error, and
/// as a watched event applied to that view.
pub(crate) fn decode_for_fuzzing(key: &str, body: &str) {
    let _ = parse_error(body);
    if let Ok(response) = parse_response(body) {
        let _ = max_modified_index(&response.node);
        let (mut view, _) = View::from_read(key, &response);
        let _ = view.apply_event(&response);
        let _ = view.entries();
    }
}

/// The highest `modifiedIndex` in a node tree.
fn max_modified_index(node: &Node) -> u64 {
    node.nodes
        .iter()
        .map(max_modified_index)
        .fold(node.modified_index, u64::max)
}

/// What one node's value means for the server list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NodeValue {
    /// `pooled` is `yes` or `no`.
    Server(ServerEntry),
    /// `pooled` is `inactive`: as if the node were not there.
    Absent,
    /// Not usable; the server is left out, as a bad line of a file is.
    Bad(String),
}

/// Decodes the value of node `host`: `{"weight": 10, "pooled": "yes"}`.
/// A missing or wrong `weight` is 10. Without `pooled`, a boolean `enabled`
/// is taken, else the server is enabled.
fn decode_value(host: &str, value: &str) -> NodeValue {
    let document: serde_json::Value = match serde_json::from_str(value) {
        Ok(document) => document,
        Err(e) => return NodeValue::Bad(format!("{host}: value is not JSON: {e}")),
    };
    let serde_json::Value::Object(fields) = document else {
        return NodeValue::Bad(format!(
            "{host}: value must be an object like {{\"weight\": 10, \"pooled\": \"yes\"}}"
        ));
    };
    let weight = fields
        .get("weight")
        .and_then(serde_json::Value::as_u64)
        .and_then(|w| u32::try_from(w).ok())
        .unwrap_or(DEFAULT_WEIGHT);
    let enabled = match fields.get("pooled") {
        Some(serde_json::Value::String(pooled)) => match pooled.as_str() {
            "yes" => true,
            "no" => false,
            "inactive" => return NodeValue::Absent,
            other => {
                return NodeValue::Bad(format!(
                    "{host}: \"pooled\" is {other:?}, not \"yes\", \"no\" or \"inactive\""
                ))
            }
        },
        Some(other) => {
            return NodeValue::Bad(format!(
                "{host}: \"pooled\" must be \"yes\", \"no\" or \"inactive\", not {other}"
            ))
        }
        None => fields
            .get("enabled")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(true),
    };
    NodeValue::Server(ServerEntry::new(host, weight, enabled))
}

/// The servers etcd currently has under one key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct View {
    key: String,
    servers: BTreeMap<String, ServerEntry>,
}

impl View {
    /// The view a full read gives, with the nodes that could not be used.
    fn from_read(key: &str, read: &Response) -> (View, Vec<String>) {
        let mut view = View {
            key: normalize_key(key),
            servers: BTreeMap::new(),
        };
        let mut problems = Vec::new();
        let members: Vec<&Node> = if read.node.dir {
            read.node.nodes.iter().collect()
        } else {
            vec![&read.node]
        };
        for node in members {
            if let Some(problem) = view.set_node(node) {
                problems.push(problem);
            }
        }
        (view, problems)
    }

    /// Applies one watched change; returns the problems it had.
    fn apply_event(&mut self, event: &Response) -> Vec<String> {
        let node = &event.node;
        let removed = matches!(
            event.action.as_str(),
            "delete" | "expire" | "compareAndDelete"
        );
        if node.dir && normalize_key(&node.key) == self.key {
            // The directory itself: deleted or expired means no servers.
            if removed {
                self.servers.clear();
            }
            return Vec::new();
        }
        if removed || node.value.is_none() {
            if let Some(host) = self.member_host(node) {
                self.servers.remove(&host);
            }
            return Vec::new();
        }
        self.set_node(node).into_iter().collect()
    }

    /// Puts a node with a value into the view (or takes it out when it is
    /// inactive or bad); subdirectories and deeper nodes are not servers.
    fn set_node(&mut self, node: &Node) -> Option<String> {
        let host = self.member_host(node)?;
        let Some(value) = &node.value else {
            self.servers.remove(&host);
            return None;
        };
        match decode_value(&host, value) {
            NodeValue::Server(entry) => {
                self.servers.insert(host, entry);
                None
            }
            NodeValue::Absent => {
                self.servers.remove(&host);
                None
            }
            NodeValue::Bad(problem) => {
                self.servers.remove(&host);
                Some(format!("skipping bad etcd node: {problem}"))
            }
        }
    }

    /// The host a node stands for: the last path component of a direct
    /// child of the key (or of the key itself, when it names one value).
    fn member_host(&self, node: &Node) -> Option<String> {
        if node.dir {
            return None;
        }
        let key = normalize_key(&node.key);
        let host = if key == self.key {
            key.rsplit('/').next()
        } else {
            key.strip_prefix(&self.key)
                .and_then(|rest| rest.strip_prefix('/'))
                .filter(|rest| !rest.contains('/'))
        };
        host.filter(|h| !h.trim().is_empty()).map(str::to_string)
    }

    /// The servers, ordered by host.
    fn entries(&self) -> Vec<ServerEntry> {
        self.servers.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(host: &str, weight: u32, enabled: bool) -> ServerEntry {
        ServerEntry::new(host, weight, enabled)
    }

    /// A read of `/pools/text` as etcd 3.4 answers it.
    const READ: &str = r#"{"action":"get","node":{"key":"/pools/text","dir":true,"nodes":[
        {"key":"/pools/text/cp1.example","value":"{\"weight\": 10, \"pooled\": \"yes\"}","modifiedIndex":4,"createdIndex":4},
        {"key":"/pools/text/cp2.example","value":"{\"weight\": 5, \"pooled\": \"no\"}","modifiedIndex":5,"createdIndex":5},
        {"key":"/pools/text/cp3.example","value":"{\"weight\": 7, \"pooled\": \"inactive\"}","modifiedIndex":9,"createdIndex":6},
        {"key":"/pools/text/sub","dir":true,"modifiedIndex":7,"createdIndex":7},
        {"key":"/pools/text/cp4.example","value":"not json","modifiedIndex":8,"createdIndex":8}
        ],"modifiedIndex":4,"createdIndex":4}}"#;

    fn read_view() -> View {
        let read = parse_response(READ).unwrap();
        View::from_read("/pools/text/", &read).0
    }

    fn event(json: &str) -> Response {
        parse_response(json).unwrap()
    }

    #[test]
    fn node_values_map_to_server_entries() {
        assert_eq!(
            decode_value("a", r#"{"weight": 10, "pooled": "yes"}"#),
            NodeValue::Server(server("a", 10, true))
        );
        assert_eq!(
            decode_value("a", r#"{"weight": 3, "pooled": "no", "extra": 1}"#),
            NodeValue::Server(server("a", 3, false))
        );
        assert_eq!(
            decode_value("a", r#"{"weight": 3, "pooled": "inactive"}"#),
            NodeValue::Absent
        );
        // Defaults: weight 10; without `pooled`, `enabled` or true.
        assert_eq!(
            decode_value("a", r#"{"pooled": "yes", "weight": "20"}"#),
            NodeValue::Server(server("a", 10, true))
        );
        assert_eq!(
            decode_value("a", r#"{"weight": -1}"#),
            NodeValue::Server(server("a", 10, true))
        );
        assert_eq!(
            decode_value("a", r#"{"enabled": false}"#),
            NodeValue::Server(server("a", 10, false))
        );
        for bad in [
            "not json",
            "[1]",
            r#"{"pooled": "maybe"}"#,
            r#"{"pooled": true}"#,
        ] {
            match decode_value("a", bad) {
                NodeValue::Bad(reason) => assert!(reason.starts_with("a: "), "{reason}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_read_gives_the_direct_children_with_values() {
        let read = parse_response(READ).unwrap();
        assert_eq!(read.action, "get");
        assert!(read.node.dir);
        assert_eq!(read.node.nodes.len(), 5);
        assert_eq!(max_modified_index(&read.node), 9);
        let (view, problems) = View::from_read("/pools/text/", &read);
        assert_eq!(
            view.entries(),
            vec![
                server("cp1.example", 10, true),
                server("cp2.example", 5, false)
            ]
        );
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("cp4.example"), "{problems:?}");
    }

    #[test]
    fn watched_changes_update_the_view() {
        let mut view = read_view();
        // Weight change.
        let problems = view.apply_event(&event(
            r#"{"action":"set","node":{"key":"/pools/text/cp1.example","value":"{\"weight\": 20, \"pooled\": \"yes\"}","modifiedIndex":12,"createdIndex":4},"prevNode":{"key":"/pools/text/cp1.example","value":"{}","modifiedIndex":4,"createdIndex":4}}"#,
        ));
        assert!(problems.is_empty());
        assert_eq!(view.servers["cp1.example"], server("cp1.example", 20, true));
        // A new server, then set inactive: gone.
        view.apply_event(&event(
            r#"{"action":"create","node":{"key":"/pools/text/cp9.example","value":"{\"weight\": 1, \"pooled\": \"yes\"}","modifiedIndex":13,"createdIndex":13}}"#,
        ));
        assert!(view.servers.contains_key("cp9.example"));
        view.apply_event(&event(
            r#"{"action":"compareAndSwap","node":{"key":"/pools/text/cp9.example","value":"{\"weight\": 1, \"pooled\": \"inactive\"}","modifiedIndex":14,"createdIndex":13}}"#,
        ));
        assert!(!view.servers.contains_key("cp9.example"));
        // Deleted and expired nodes carry no value.
        view.apply_event(&event(
            r#"{"action":"delete","node":{"key":"/pools/text/cp2.example","modifiedIndex":15,"createdIndex":5},"prevNode":{"key":"/pools/text/cp2.example","value":"{}","modifiedIndex":5,"createdIndex":5}}"#,
        ));
        assert_eq!(view.entries(), vec![server("cp1.example", 20, true)]);
        view.apply_event(&event(
            r#"{"action":"expire","node":{"key":"/pools/text/cp1.example","modifiedIndex":16,"createdIndex":4}}"#,
        ));
        assert!(view.entries().is_empty());
    }

    #[test]
    fn deeper_nodes_and_other_keys_are_not_servers() {
        let mut view = read_view();
        let before = view.clone();
        for other in [
            r#"{"action":"set","node":{"key":"/pools/text/sub/cp7","value":"{}","modifiedIndex":20,"createdIndex":20}}"#,
            r#"{"action":"set","node":{"key":"/pools/textual/cp7","value":"{}","modifiedIndex":21,"createdIndex":21}}"#,
            r#"{"action":"set","node":{"key":"/pools/text/newdir","dir":true,"modifiedIndex":22,"createdIndex":22}}"#,
            r#"{"action":"update","node":{"key":"/pools/text","dir":true,"ttl":100,"modifiedIndex":23,"createdIndex":4}}"#,
        ] {
            assert!(view.apply_event(&event(other)).is_empty());
            assert_eq!(view, before, "{other}");
        }
        // A bad value of a known server takes it out and says why.
        let problems = view.apply_event(&event(
            r#"{"action":"set","node":{"key":"/pools/text/cp1.example","value":"{\"pooled\": 1}","modifiedIndex":24,"createdIndex":4}}"#,
        ));
        assert_eq!(problems.len(), 1);
        assert!(!view.servers.contains_key("cp1.example"));
        // The directory deleted: no servers.
        view.apply_event(&event(
            r#"{"action":"delete","node":{"key":"/pools/text","dir":true,"modifiedIndex":25,"createdIndex":4}}"#,
        ));
        assert!(view.entries().is_empty());
    }

    #[test]
    fn a_key_naming_one_value_is_one_server() {
        let read = event(
            r#"{"action":"get","node":{"key":"/pools/one/cp1","value":"{\"weight\": 2, \"pooled\": \"yes\"}","modifiedIndex":3,"createdIndex":3}}"#,
        );
        let (view, problems) = View::from_read("/pools/one/cp1", &read);
        assert!(problems.is_empty());
        assert_eq!(view.entries(), vec![server("cp1", 2, true)]);
    }

    #[test]
    fn etcd_errors() {
        let cleared = r#"{"errorCode":401,"message":"The event in requested index is outdated and cleared","cause":"the requested history has been cleared [19/5]","index":1018}"#;
        let e = parse_error(cleared).unwrap();
        assert_eq!(e.error_code, INDEX_CLEARED);
        assert!(e.to_string().contains("outdated and cleared"));
        assert_eq!(
            http_error(
                404,
                r#"{"errorCode":100,"message":"Key not found","cause":"/nokey","index":6}"#
            )
            .to_string(),
            "HTTP status 404, etcd error 100: Key not found (/nokey)"
        );
        assert_eq!(http_error(502, "<html>").to_string(), "HTTP status 502");
        assert_eq!(
            http_error(400, r#"{"errorCode":401,"message":"cleared"}"#).to_string(),
            "HTTP status 400, etcd error 401: cleared"
        );
        assert!(parse_response("").is_err());
        assert!(parse_response(r#"{"action":"get"}"#).is_err());
        assert!(parse_response(
            r#"{"action":"get","node":{"key":"/a","dir":true,"nodes":[{"key":"/a/b"#
        )
        .is_err());
    }

    #[test]
    fn urls() {
        let s = Server::new("conf1001.example", 2379, "/conftool/v1/pools/text/", true);
        assert_eq!(
            s.url("recursive=true"),
            "https://conf1001.example:2379/v2/keys/conftool/v1/pools/text?recursive=true"
        );
        let s = Server::new("::1", 4001, "/a b/c%", false);
        assert_eq!(s.url("x"), "http://[::1]:4001/v2/keys/a%20b/c%25?x");
    }
}
