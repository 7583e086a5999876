//! The monitors a service lists (`monitors = [...]`) and their
//! `<monitor>.<option>` keys, defaults filled in.

use super::keys::*;
use super::report::Reader;
use crate::config::MonitorConfig;
use std::fmt;

/// PyBal monitors that rsbal recognises but does not implement yet.
pub(super) const NOT_YET_SUPPORTED_MONITORS: &[&str] = &[];

/// A monitor rsbal can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MonitorKind {
    IdleConnection,
    ProxyFetch,
    RunCommand,
    DnsQuery,
    Udp,
}

impl MonitorKind {
    pub(super) const ALL: [MonitorKind; 5] = [
        MonitorKind::IdleConnection,
        MonitorKind::ProxyFetch,
        MonitorKind::RunCommand,
        MonitorKind::DnsQuery,
        MonitorKind::Udp,
    ];

    pub(super) fn name(self) -> &'static str {
        match self {
            MonitorKind::IdleConnection => "IdleConnection",
            MonitorKind::ProxyFetch => "ProxyFetch",
            MonitorKind::RunCommand => "RunCommand",
            MonitorKind::DnsQuery => "DNSQuery",
            MonitorKind::Udp => "UDP",
        }
    }

    /// Whether the monitor's key table has `option`.
    pub(super) fn has_option(self, option: &str) -> bool {
        match self {
            MonitorKind::IdleConnection => has(IDLE_CONNECTION_OPTIONS, option),
            MonitorKind::ProxyFetch => has(PROXY_FETCH_OPTIONS, option),
            MonitorKind::RunCommand => has(RUN_COMMAND_OPTIONS, option),
            MonitorKind::DnsQuery => has(DNS_QUERY_OPTIONS, option),
            MonitorKind::Udp => has(UDP_OPTIONS, option),
        }
    }

    /// The monitor's options from its key table, defaults filled in; `None`
    /// when one is invalid or a required one is missing (both reported).
    fn read(self, r: &mut Reader) -> Option<MonitorConfig> {
        match self {
            MonitorKind::IdleConnection => {
                read_options(r, self, IDLE_CONNECTION_OPTIONS).map(MonitorConfig::IdleConnection)
            }
            MonitorKind::ProxyFetch => {
                read_options(r, self, PROXY_FETCH_OPTIONS).map(MonitorConfig::ProxyFetch)
            }
            MonitorKind::RunCommand => {
                read_options(r, self, RUN_COMMAND_OPTIONS).map(MonitorConfig::RunCommand)
            }
            MonitorKind::DnsQuery => {
                read_options(r, self, DNS_QUERY_OPTIONS).map(MonitorConfig::DnsQuery)
            }
            MonitorKind::Udp => read_options(r, self, UDP_OPTIONS).map(MonitorConfig::Udp),
        }
    }
}

/// The canonical name of any monitor PyBal knows, matched case-insensitively.
pub(super) fn known_monitor_name(name: &str) -> Option<&'static str> {
    MonitorKind::ALL
        .iter()
        .map(|kind| kind.name())
        .chain(NOT_YET_SUPPORTED_MONITORS.iter().copied())
        .find(|known| known.eq_ignore_ascii_case(name))
}

/// Why a name in `monitors` names no monitor rsbal can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum MonitorError {
    /// A PyBal monitor (canonical name) this version does not implement.
    NotYetSupported(&'static str),
    /// No monitor PyBal knows.
    Unknown(String),
}

impl fmt::Display for MonitorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MonitorError::NotYetSupported(known) => {
                write!(f, "monitor {known} is not supported by this version yet")
            }
            MonitorError::Unknown(name) => write!(f, "unknown monitor {name}"),
        }
    }
}

impl std::error::Error for MonitorError {}

/// The runnable monitor called `name`, or why there is none.
pub(super) fn monitor_kind(name: &str) -> Result<MonitorKind, MonitorError> {
    if let Some(kind) = MonitorKind::ALL
        .into_iter()
        .find(|kind| kind.name().eq_ignore_ascii_case(name))
    {
        return Ok(kind);
    }
    match known_monitor_name(name) {
        Some(known) => Err(MonitorError::NotYetSupported(known)),
        None => Err(MonitorError::Unknown(name.to_string())),
    }
}

/// A key's monitor part, when it looks like `<monitor>.<option>` for a
/// monitor PyBal knows: (canonical monitor name, option).
pub(super) fn monitor_option_key(key: &str) -> Option<(&'static str, &str)> {
    let (monitor, option) = key.split_once('.')?;
    Some((known_monitor_name(monitor)?, option))
}

/// The names in `monitors`, each checked. Returns the runnable ones; the
/// others have been reported.
pub(super) fn read_monitor_list(r: &mut Reader, names: Option<Vec<String>>) -> Vec<MonitorKind> {
    let Some(names) = names else {
        if r.entry("monitors").is_none() {
            r.warning(
                "monitors",
                "no monitors: servers will never be marked down".to_string(),
            );
        }
        return Vec::new();
    };
    if names.is_empty() {
        r.warning(
            "monitors",
            "no monitors: servers will never be marked down".to_string(),
        );
    }
    let mut kinds = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for name in names {
        let folded = name.to_ascii_lowercase();
        if seen.contains(&folded) {
            r.error("monitors", format!("monitor {name} is listed twice"));
            continue;
        }
        seen.push(folded);
        match monitor_kind(&name) {
            Ok(kind) => kinds.push(kind),
            Err(reason) => r.error("monitors", reason.to_string()),
        }
    }
    kinds
}

/// Each listed monitor with its options; `None` when an option is invalid.
pub(super) fn read_monitors(r: &mut Reader, kinds: &[MonitorKind]) -> Option<Vec<MonitorConfig>> {
    let mut monitors = Vec::new();
    let mut valid = true;
    for kind in kinds {
        let monitor = kind.read(r);
        match monitor {
            Some(monitor) => monitors.push(monitor),
            None => valid = false,
        }
    }
    valid.then_some(monitors)
}

/// `<monitor>.<option>` keys read with `table`.
fn read_options<T: Default>(r: &mut Reader, kind: MonitorKind, table: &[Key<T>]) -> Option<T> {
    let mut options = T::default();
    let prefix = kind.name().to_ascii_lowercase();
    let missing = format!("required by the {} monitor is missing", kind.name());
    read_keys(r, table, &prefix, &missing, &mut options).then_some(options)
}
