//! A service section: the LVS service, where its servers come from, its
//! monitors, and warnings for the keys nothing reads.

use super::keys::{has, read_keys, SERVICE_KEYS};
use super::monitors::*;
use super::report::Reader;
use super::values::*;
use crate::config::{ForwardingMethod, Protocol, ServiceConfig, SourceOptions, SourceUrl};
use std::net::IpAddr;

/// A service section's keys as read so far: what [`SERVICE_KEYS`] fill in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceDraft {
    pub(crate) protocol: Option<Protocol>,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) port: Option<u16>,
    pub(crate) scheduler: Option<String>,
    pub(crate) source: Option<SourceUrl>,
    pub(crate) source_options: SourceOptions,
    pub(crate) ops: bool,
    /// `forwarding-method` when given.
    pub(crate) forwarding: Option<ForwardingMethod>,
    /// PyBal's `tunneling` when given.
    pub(crate) tunneling: Option<bool>,
    pub(crate) depool_threshold: f64,
    /// The names in `monitors`, unchecked.
    pub(crate) monitors: Option<Vec<String>>,
    pub(crate) bgp: bool,
    pub(crate) bgp_med: Option<u32>,
}

impl Default for ServiceDraft {
    fn default() -> Self {
        ServiceDraft {
            protocol: None,
            ip: None,
            port: None,
            scheduler: None,
            source: None,
            source_options: SourceOptions::default(),
            ops: false,
            forwarding: None,
            tunneling: None,
            depool_threshold: 0.5,
            monitors: None,
            bgp: true,
            bgp_med: None,
        }
    }
}

pub(super) fn read_service(r: &mut Reader) -> Option<ServiceConfig> {
    let mut s = ServiceDraft::default();
    read_keys(r, SERVICE_KEYS, "", "required key is missing", &mut s);
    let monitor_kinds = read_monitor_list(r, s.monitors.take());
    let monitors = read_monitors(r, &monitor_kinds);
    if s.ops && s.protocol == Some(Protocol::Tcp) {
        r.error(
            "ops",
            "one-packet scheduling (ops) is only for udp services".to_string(),
        );
    }
    let forwarding = forwarding_method(r, &s);
    warn_service_keys(r, &monitor_kinds);

    Some(ServiceConfig {
        name: r.name().to_string(),
        protocol: s.protocol?,
        ip: s.ip?,
        port: s.port?,
        scheduler: s.scheduler?,
        source: s.source?,
        source_options: s.source_options,
        ops: s.ops,
        forwarding: forwarding?,
        depool_threshold: s.depool_threshold,
        monitors: monitors?,
        bgp: s.bgp,
        bgp_med: s.bgp_med,
    })
}

/// The forwarding method from `forwarding-method` and PyBal's `tunneling`
/// (T351069: `true` is IPIP, `-i`). Either alone decides; both must agree:
/// `tunneling = true` only with `tunnel`, `tunneling = false` never with it.
/// `None` after an error.
fn forwarding_method(r: &mut Reader, s: &ServiceDraft) -> Option<ForwardingMethod> {
    // An invalid `forwarding-method` or `tunneling` is already an error.
    let invalid = |key: &str, parsed: bool| r.entry(key).is_some() && !parsed;
    if invalid("forwarding-method", s.forwarding.is_some())
        || invalid("tunneling", s.tunneling.is_some())
    {
        return None;
    }
    match (s.tunneling, s.forwarding) {
        (None, method) => Some(method.unwrap_or_default()),
        (Some(true), None | Some(ForwardingMethod::Tunnel)) => Some(ForwardingMethod::Tunnel),
        (Some(false), None) => Some(ForwardingMethod::default()),
        (Some(false), Some(method)) if method != ForwardingMethod::Tunnel => Some(method),
        (Some(tunneling), Some(method)) => {
            let line = r.line_of("forwarding-method");
            r.error(
                "tunneling",
                format!(
                    "tunneling = {tunneling} contradicts forwarding-method = {method} (line {line}); \
                     tunneling = true means forwarding-method = tunnel: keep one of the two keys"
                ),
            );
            None
        }
    }
}

/// Warnings for a service's own keys that nothing reads: unknown keys,
/// unknown options of a used monitor, options of an unused monitor.
pub(super) fn warn_service_keys(r: &mut Reader, used: &[MonitorKind]) {
    let section = r.section;
    for entry in &section.entries {
        let key = entry.key.as_str();
        if has(SERVICE_KEYS, key) {
            continue;
        }
        let Some((monitor, option)) = monitor_option_key(key) else {
            r.warning(key, "unknown key, ignored".to_string());
            continue;
        };
        match used.iter().find(|kind| kind.name() == monitor) {
            Some(kind) if kind.has_option(option) => {}
            Some(_) => r.warning(
                key,
                format!("unknown option {option:?} of monitor {monitor}, ignored"),
            ),
            None if NOT_YET_SUPPORTED_MONITORS.contains(&monitor) && lists_monitor(r, monitor) => {}
            None => r.warning(
                key,
                format!("option for monitor {monitor}, which this service does not use; ignored"),
            ),
        }
    }
}

/// Whether the service's `monitors` names `monitor` (even if unsupported).
pub(super) fn lists_monitor(r: &Reader, monitor: &str) -> bool {
    r.entry("monitors")
        .and_then(|e| parse_str_list(&e.value).ok())
        .is_some_and(|names| names.iter().any(|n| n.eq_ignore_ascii_case(monitor)))
}
