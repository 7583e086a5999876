//! A service section: the LVS service, where its servers come from, its
//! monitors, and warnings for the keys nothing reads.

use super::keys::SERVICE_KEYS;
use super::monitors::*;
use super::report::Reader;
use super::values::*;
use crate::config::{Protocol, ServiceConfig, SourceOptions};

pub(super) fn read_service(r: &mut Reader) -> Option<ServiceConfig> {
    let protocol = r.required("protocol", parse_protocol);
    let ip = r.required("ip", parse_ip);
    let port = r.required("port", parse_port);
    let scheduler = r.required("scheduler", parse_scheduler);
    let source = r.required("config", parse_source);
    let source_options = read_source_options(r);
    let ops = r.optional("ops", parse_boolean).unwrap_or(false);
    let forwarding = r
        .optional("forwarding-method", parse_forwarding_method)
        .unwrap_or_default();
    let depool_threshold = r
        .optional("depool-threshold", parse_threshold)
        .unwrap_or(0.5);
    let monitor_kinds = read_monitor_list(r);
    let monitors = read_monitors(r, &monitor_kinds);
    let bgp = r.optional("bgp", parse_boolean).unwrap_or(true);
    let bgp_med = r.optional("bgp-med", parse_u32);

    if ops && protocol == Some(Protocol::Tcp) {
        r.error(
            "ops",
            "one-packet scheduling (ops) is only for udp services".to_string(),
        );
    }
    warn_service_keys(r, &monitor_kinds);

    Some(ServiceConfig {
        name: r.name().to_string(),
        protocol: protocol?,
        ip: ip?,
        port: port?,
        scheduler: scheduler?,
        source: source?,
        source_options,
        ops,
        forwarding,
        depool_threshold,
        monitors: monitors?,
        bgp,
        bgp_med,
    })
}

/// `config-poll-interval` and `config-timeout`, defaults filled in.
pub(super) fn read_source_options(r: &mut Reader) -> SourceOptions {
    let d = SourceOptions::default();
    SourceOptions {
        poll_interval: r
            .optional("config-poll-interval", parse_duration)
            .unwrap_or(d.poll_interval),
        timeout: r
            .optional("config-timeout", parse_duration)
            .unwrap_or(d.timeout),
    }
}

/// Warnings for a service's own keys that nothing reads: unknown keys,
/// unknown options of a used monitor, options of an unused monitor.
pub(super) fn warn_service_keys(r: &mut Reader, used: &[MonitorKind]) {
    let section = r.section;
    for entry in &section.entries {
        let key = entry.key.as_str();
        if SERVICE_KEYS.contains(&key) {
            continue;
        }
        let Some((monitor, option)) = monitor_option_key(key) else {
            r.warning(key, "unknown key, ignored".to_string());
            continue;
        };
        match used.iter().find(|kind| kind.name() == monitor) {
            Some(kind) if kind.options().contains(&option) => {}
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
