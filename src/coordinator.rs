//! The Coordinator: PyBal's pooling rules for one service, as pure code.
//!
//! It owns every server's state (enabled, ready, up, pooled, per-monitor
//! results) and the pooled-down set, and decides pool changes from server-list
//! updates and monitor results under the depool threshold (SPEC 4 and 5).
//! It does no I/O: callers get an [`Outcome`] with the pool operations to
//! carry out, log lines to write and monitors to start or stop.

use std::net::IpAddr;

/// A server as the server list (after name resolution) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUpdate {
    pub host: String,
    /// Resolved address; `None` = could not be resolved (not ready).
    pub ip: Option<IpAddr>,
    pub weight: u32,
    pub enabled: bool,
}

/// A change of the IPVS pool of this service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolOp {
    Add {
        host: String,
        ip: IpAddr,
        weight: u32,
    },
    Edit {
        host: String,
        ip: IpAddr,
        weight: u32,
    },
    Remove {
        host: String,
        ip: IpAddr,
    },
}

/// A log line the caller should write, in the service's log context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub level: log::Level,
    /// The server the line is about, if any.
    pub host: Option<String>,
    pub text: String,
}

/// What a coordinator call decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub ops: Vec<PoolOp>,
    pub logs: Vec<LogLine>,
    /// Hosts (new and ready) whose monitors must be started.
    pub start_monitors: Vec<String>,
    /// Hosts (removed) whose monitors must be stopped.
    pub stop_monitors: Vec<String>,
}

/// One monitor's view of one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorState {
    /// `None` until the first result.
    pub up: Option<bool>,
    pub up_results: u64,
    pub down_results: u64,
    pub up_transitions: u64,
    pub down_transitions: u64,
    /// Reason given with the last down result.
    pub last_reason: Option<String>,
}

/// One server's full state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub host: String,
    pub ip: Option<IpAddr>,
    pub weight: u32,
    pub enabled: bool,
    pub ready: bool,
    pub up: bool,
    pub pooled: bool,
    /// Per monitor, in configuration order.
    pub monitors: Vec<MonitorState>,
}
