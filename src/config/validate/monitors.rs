//! The monitors a service lists (`monitors = [...]`) and their
//! `<monitor>.<option>` keys, defaults filled in.

use super::keys::*;
use super::report::Reader;
use super::values::*;
use crate::config::{
    DnsQueryOptions, IdleConnectionOptions, MonitorConfig, ProxyFetchOptions, RunCommandOptions,
    UdpOptions,
};
use std::time::Duration;

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

    pub(super) fn options(self) -> &'static [&'static str] {
        match self {
            MonitorKind::IdleConnection => IDLE_CONNECTION_OPTIONS,
            MonitorKind::ProxyFetch => PROXY_FETCH_OPTIONS,
            MonitorKind::RunCommand => RUN_COMMAND_OPTIONS,
            MonitorKind::DnsQuery => DNS_QUERY_OPTIONS,
            MonitorKind::Udp => UDP_OPTIONS,
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

/// The runnable monitor called `name`, or why there is none.
pub(super) fn monitor_kind(name: &str) -> Result<MonitorKind, String> {
    if let Some(kind) = MonitorKind::ALL
        .into_iter()
        .find(|kind| kind.name().eq_ignore_ascii_case(name))
    {
        return Ok(kind);
    }
    match known_monitor_name(name) {
        Some(known) => Err(format!(
            "monitor {known} is not supported by this version yet"
        )),
        None => Err(format!("unknown monitor {name}")),
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
pub(super) fn read_monitor_list(r: &mut Reader) -> Vec<MonitorKind> {
    let Some(names) = r.optional("monitors", parse_str_list) else {
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
            Err(reason) => r.error("monitors", reason),
        }
    }
    kinds
}

/// Each listed monitor with its options; `None` when an option is invalid.
pub(super) fn read_monitors(r: &mut Reader, kinds: &[MonitorKind]) -> Option<Vec<MonitorConfig>> {
    let mut monitors = Vec::new();
    let mut valid = true;
    for kind in kinds {
        let monitor = match kind {
            MonitorKind::IdleConnection => {
                read_idle_connection(r).map(MonitorConfig::IdleConnection)
            }
            MonitorKind::ProxyFetch => read_proxy_fetch(r).map(MonitorConfig::ProxyFetch),
            MonitorKind::RunCommand => read_run_command(r).map(MonitorConfig::RunCommand),
            MonitorKind::DnsQuery => read_dns_query(r).map(MonitorConfig::DnsQuery),
            MonitorKind::Udp => read_udp(r).map(MonitorConfig::Udp),
        };
        match monitor {
            Some(monitor) => monitors.push(monitor),
            None => valid = false,
        }
    }
    valid.then_some(monitors)
}

/// Tracks whether every option read so far was valid.
pub(super) struct OptionReader<'r, 'a> {
    r: &'r mut Reader<'a>,
    prefix: &'static str,
    valid: bool,
}

impl<'r, 'a> OptionReader<'r, 'a> {
    fn new(r: &'r mut Reader<'a>, prefix: &'static str) -> Self {
        OptionReader {
            r,
            prefix,
            valid: true,
        }
    }

    fn key(&self, option: &str) -> String {
        format!("{}.{option}", self.prefix)
    }

    /// Records an error when `option` is absent; `monitor` names who needs it.
    fn require(&mut self, option: &str, monitor: &str) {
        let key = self.key(option);
        if self.r.entry(&key).is_none() {
            self.r.error(
                &key,
                format!("required by the {monitor} monitor is missing"),
            );
            self.valid = false;
        }
    }

    fn get<T>(&mut self, option: &str, default: T, parse: impl Fn(&str) -> Result<T, String>) -> T {
        let key = self.key(option);
        let present = self.r.entry(&key).is_some();
        match self.r.optional(&key, parse) {
            Some(value) => value,
            None => {
                self.valid &= !present;
                default
            }
        }
    }
}

pub(super) fn read_idle_connection(r: &mut Reader) -> Option<IdleConnectionOptions> {
    let d = IdleConnectionOptions::default();
    let mut o = OptionReader::new(r, "idleconnection");
    let options = IdleConnectionOptions {
        max_delay: o.get("max-delay", d.max_delay, parse_duration),
        timeout_clean_reconnect: o.get(
            "timeout-clean-reconnect",
            d.timeout_clean_reconnect,
            parse_duration,
        ),
        keepalive: o.get("keepalive", d.keepalive, parse_boolean),
        keepalive_idle: o.get("keepalive-idle", d.keepalive_idle, parse_duration),
        keepalive_interval: o.get("keepalive-interval", d.keepalive_interval, parse_duration),
        keepalive_retries: o.get("keepalive-retries", d.keepalive_retries, parse_u32),
    };
    o.valid.then_some(options)
}

pub(super) fn read_proxy_fetch(r: &mut Reader) -> Option<ProxyFetchOptions> {
    let mut o = OptionReader::new(r, "proxyfetch");
    o.require("url", "ProxyFetch");
    let options = ProxyFetchOptions {
        interval: o.get("interval", Duration::from_secs(10), parse_duration),
        timeout: o.get("timeout", Duration::from_secs(5), parse_duration),
        urls: o.get("url", Vec::new(), parse_urls),
        check_all: o.get("check_all", false, parse_boolean),
        max_failures: o.get("max_failures", 0, parse_u32),
        http_status: o.get("http_status", 200, parse_http_status),
    };
    o.valid.then_some(options)
}

pub(super) fn read_run_command(r: &mut Reader) -> Option<RunCommandOptions> {
    let mut o = OptionReader::new(r, "runcommand");
    o.require("command", "RunCommand");
    let options = RunCommandOptions {
        interval: o.get("interval", Duration::from_secs(60), parse_duration),
        timeout: o.get("timeout", Duration::from_secs(20), parse_duration),
        command: o.get("command", String::new(), parse_command),
        arguments: o.get("arguments", Vec::new(), parse_arguments),
        log_output: o.get("log-output", true, parse_boolean),
    };
    o.valid.then_some(options)
}

pub(super) fn read_dns_query(r: &mut Reader) -> Option<DnsQueryOptions> {
    let mut o = OptionReader::new(r, "dnsquery");
    o.require("hostnames", "DNSQuery");
    let options = DnsQueryOptions {
        interval: o.get("interval", Duration::from_secs(10), parse_duration),
        timeout: o.get("timeout", Duration::from_secs(5), parse_duration),
        hostnames: o.get("hostnames", Vec::new(), parse_hostnames),
        fail_on_nxdomain: o.get("fail-on-nxdomain", false, parse_boolean),
    };
    o.valid.then_some(options)
}

pub(super) fn read_udp(r: &mut Reader) -> Option<UdpOptions> {
    let mut o = OptionReader::new(r, "udp");
    let options = UdpOptions {
        interval: o.get("interval", Duration::from_secs(10), parse_duration),
        icmp_timeout: o.get("icmp-timeout", Duration::from_secs(20), parse_duration),
    };
    o.valid.then_some(options)
}
