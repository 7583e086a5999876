//! Which keys each kind of section takes, and warnings for the others.

use super::monitors::monitor_option_key;
use super::report::{Place, Reader, Report};
use crate::config::ini::{self, Ini};

/// Name of the section holding daemon-wide settings.
pub(super) const GLOBAL_SECTION: &str = "global";

/// Keys of the `[global]` section.
pub(super) const GLOBAL_KEYS: &[&str] = &[
    "bgp",
    "bgp-local-asn",
    "bgp-peer-address",
    "bgp-as-path",
    "bgp-med",
    "bgp-nexthop-ipv4",
    "bgp-nexthop-ipv6",
    "bgp-local-ips",
    "bgp-local-port",
    "bgp-peer-port",
    "bgp-graceful-restart",
    "instrumentation",
    "instrumentation_port",
    "instrumentation_ips",
    "ipvsadm",
    "ipvs-backend",
    "ipvs-reconcile-interval",
];

/// Keys of a service section, besides `<monitor>.<option>`.
pub(super) const SERVICE_KEYS: &[&str] = &[
    "protocol",
    "ip",
    "port",
    "scheduler",
    "config",
    "config-poll-interval",
    "config-timeout",
    "ops",
    "forwarding-method",
    "depool-threshold",
    "monitors",
    "bgp",
    "bgp-med",
];

/// Options of the IdleConnection monitor (`idleconnection.<option>`).
pub(super) const IDLE_CONNECTION_OPTIONS: &[&str] = &[
    "max-delay",
    "timeout-clean-reconnect",
    "keepalive",
    "keepalive-idle",
    "keepalive-interval",
    "keepalive-retries",
];

/// Options of the ProxyFetch monitor (`proxyfetch.<option>`).
pub(super) const PROXY_FETCH_OPTIONS: &[&str] = &[
    "interval",
    "timeout",
    "url",
    "check_all",
    "max_failures",
    "http_status",
];

/// Options of the RunCommand monitor (`runcommand.<option>`).
pub(super) const RUN_COMMAND_OPTIONS: &[&str] =
    &["interval", "timeout", "command", "arguments", "log-output"];

/// Options of the DNSQuery monitor (`dnsquery.<option>`).
pub(super) const DNS_QUERY_OPTIONS: &[&str] =
    &["interval", "timeout", "hostnames", "fail-on-nxdomain"];

/// Options of the UDP monitor (`udp.<option>`).
pub(super) const UDP_OPTIONS: &[&str] = &["interval", "icmp-timeout"];

/// Warnings for a section's own keys that `known` rejects.
pub(super) fn warn_unknown_keys(r: &mut Reader, known: impl Fn(&str) -> bool) {
    let section = r.section;
    for entry in &section.entries {
        if !known(&entry.key) {
            r.warning(&entry.key, "unknown key, ignored".to_string());
        }
    }
}

/// `[DEFAULT]` keys that no section could use.
pub(super) fn warn_unknown_default_keys(ini: &Ini, report: &mut Report) {
    for entry in &ini.defaults {
        let key = entry.key.as_str();
        let known = GLOBAL_KEYS.contains(&key)
            || SERVICE_KEYS.contains(&key)
            || monitor_option_key(key).is_some();
        if !known {
            report.warning(
                Place {
                    line: Some(entry.line),
                    section: Some(ini::DEFAULT_SECTION.to_string()),
                    key: Some(entry.key.clone()),
                },
                "unknown key, ignored".to_string(),
            );
        }
    }
}

pub(super) fn warn_repeated_sections(ini: &Ini, report: &mut Report) {
    for section in &ini.sections {
        for &line in &section.repeated_at {
            report.warning(
                Place {
                    line: Some(line),
                    section: Some(section.name.clone()),
                    key: None,
                },
                format!(
                    "section repeated; its keys are merged into the [{}] at line {} (later values win)",
                    section.name, section.line
                ),
            );
        }
    }
}
