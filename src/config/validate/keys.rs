//! The key tables: every key of `[global]`, of a service section and of
//! each monitor, with its parser, its default and one line of
//! documentation. Reading a section, warning about unknown keys, `--check`
//! (which loads through here) and the man page test all read these tables;
//! adding a key means adding one entry.

use super::monitors::monitor_option_key;
use super::report::{Place, Reader, Report};
use super::service::ServiceDraft;
use super::values::*;
use crate::config::ini::{self, Ini};
use crate::config::{
    DnsQueryOptions, GlobalConfig, IdleConnectionOptions, ProxyFetchOptions, RunCommandOptions,
    UdpOptions,
};

/// Name of the section holding daemon-wide settings.
pub(super) const GLOBAL_SECTION: &str = "global";

/// What a key means when it is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Absent {
    /// A missing key is an error.
    Required,
    /// The default, written as it would be in the config.
    Default(&'static str),
    /// Nothing is set; the key's doc line says what that means.
    Unset,
}

/// One key of a section (or one option of a monitor) read into a `T`.
pub(crate) struct Key<T> {
    /// As written in the config (a monitor option without its prefix).
    pub(crate) name: &'static str,
    pub(crate) absent: Absent,
    /// One line for the reader of the table (the man page says more);
    /// the tests check that there is one.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "read by people and by the key table's tests")
    )]
    pub(crate) doc: &'static str,
    /// Parses the value's text and stores it in `T`.
    pub(crate) read: fn(&mut T, &str) -> Result<(), ValueError>,
}

/// Stores a parsed value, or passes its error on.
fn set<T>(slot: &mut T, value: Result<T, ValueError>) -> Result<(), ValueError> {
    *slot = value?;
    Ok(())
}

/// Whether `table` has a key called `name`.
pub(super) fn has<T>(table: &[Key<T>], name: &str) -> bool {
    table.iter().any(|key| key.name == name)
}

/// Reads every key of `table` (named `<prefix>.<name>` when `prefix` is not
/// empty) that the section has into `into`; a missing required key gets
/// `missing` as its error. Returns whether every key was valid.
pub(super) fn read_keys<T>(
    r: &mut Reader,
    table: &[Key<T>],
    prefix: &str,
    missing: &str,
    into: &mut T,
) -> bool {
    let mut valid = true;
    for key in table {
        let name = match prefix {
            "" => key.name.to_string(),
            _ => format!("{prefix}.{}", key.name),
        };
        match r.entry(&name) {
            None if key.absent == Absent::Required => {
                r.error(&name, missing.to_string());
                valid = false;
            }
            None => {}
            Some(entry) => {
                if let Err(reason) = (key.read)(into, &entry.value) {
                    r.error_at(&name, entry.line, reason.to_string());
                    valid = false;
                }
            }
        }
    }
    valid
}

/// Keys of the `[global]` section.
pub(crate) const GLOBAL_KEYS: &[Key<GlobalConfig>] = &[
    Key {
        name: "bgp",
        absent: Absent::Default("no"),
        doc: "announce the services' IPs over BGP",
        read: |g, v| set(&mut g.bgp, parse_boolean(v)),
    },
    Key {
        name: "bgp-local-asn",
        absent: Absent::Unset,
        doc: "rsbal's own AS number (1-4294967295); required when bgp is on",
        read: |g, v| set(&mut g.bgp_local_asn, parse_asn(v).map(Some)),
    },
    Key {
        name: "bgp-peer-address",
        absent: Absent::Default("[]"),
        doc: "the routers to peer with; at least one when bgp is on",
        read: |g, v| set(&mut g.bgp_peer_addresses, parse_ip_list(v)),
    },
    Key {
        name: "bgp-as-path",
        absent: Absent::Unset,
        doc: "space-separated AS path to announce; unset, the bgp-local-asn alone",
        read: |g, v| set(&mut g.bgp_as_path, parse_as_path(v)),
    },
    Key {
        name: "bgp-med",
        absent: Absent::Default("0"),
        doc: "MED of the routes, unless a service sets its own",
        read: |g, v| set(&mut g.bgp_med, parse_u32(v)),
    },
    Key {
        name: "bgp-nexthop-ipv4",
        absent: Absent::Unset,
        doc: "next hop of IPv4 routes; required when one is announced",
        read: |g, v| set(&mut g.bgp_nexthop_ipv4, parse_ipv4(v).map(Some)),
    },
    Key {
        name: "bgp-nexthop-ipv6",
        absent: Absent::Unset,
        doc: "next hop of IPv6 routes; required when one is announced",
        read: |g, v| set(&mut g.bgp_nexthop_ipv6, parse_ipv6(v).map(Some)),
    },
    Key {
        name: "bgp-local-ips",
        absent: Absent::Default("[]"),
        doc: "local addresses to connect to the peers from",
        read: |g, v| set(&mut g.bgp_local_ips, parse_ip_list(v)),
    },
    Key {
        name: "bgp-local-port",
        absent: Absent::Default("179"),
        doc: "port rsbal listens on for BGP (1-65535)",
        read: |g, v| set(&mut g.bgp_local_port, parse_listen_port(v)),
    },
    Key {
        name: "bgp-peer-port",
        absent: Absent::Default("179"),
        doc: "port rsbal connects to on each peer",
        read: |g, v| set(&mut g.bgp_peer_port, parse_nonzero_port(v)),
    },
    Key {
        name: "bgp-graceful-restart",
        absent: Absent::Default("0"),
        doc: "graceful restart time in seconds (1-4095); 0 = off",
        read: |g, v| set(&mut g.bgp_graceful_restart, parse_restart_time(v)),
    },
    Key {
        name: "instrumentation",
        absent: Absent::Default("no"),
        doc: "serve the status page, JSON and metrics over HTTP",
        read: |g, v| set(&mut g.instrumentation, parse_boolean(v)),
    },
    Key {
        name: "instrumentation_port",
        absent: Absent::Default("9090"),
        doc: "port of the HTTP status server (1-65535)",
        read: |g, v| set(&mut g.instrumentation_port, parse_listen_port(v)),
    },
    Key {
        name: "instrumentation_ips",
        absent: Absent::Default("['127.0.0.1', '::1']"),
        doc: "addresses the HTTP status server listens on",
        read: |g, v| set(&mut g.instrumentation_ips, parse_ip_list(v)),
    },
    Key {
        name: "advertised_instrumentation_ips",
        absent: Absent::Default("[]"),
        doc: "more instrumentation addresses, also announced over BGP like a service IP",
        read: |g, v| set(&mut g.advertised_instrumentation_ips, parse_ip_list(v)),
    },
    Key {
        name: "dry-run",
        absent: Absent::Default("no"),
        doc: "written by PyBal's puppet template, read by neither PyBal nor rsbal: use -n",
        read: |_, v| parse_boolean(v).map(|_| ()),
    },
    Key {
        name: "ipvsadm",
        absent: Absent::Default("/sbin/ipvsadm"),
        doc: "path of the ipvsadm binary",
        read: |g, v| set(&mut g.ipvsadm, parse_path(v)),
    },
    Key {
        name: "ipvs-backend",
        absent: Absent::Unset,
        doc: "netlink or ipvsadm; unset, netlink when the kernel offers it",
        read: |g, v| set(&mut g.ipvs_backend, parse_ipvs_backend(v).map(Some)),
    },
    Key {
        name: "ipvs-reconcile-interval",
        absent: Absent::Default("60"),
        doc: "seconds between re-reads of the kernel's table (at least 1); 0 = never",
        read: |g, v| set(&mut g.ipvs_reconcile_interval, parse_interval_or_off(v)),
    },
    Key {
        name: "ipvs-command-timeout",
        absent: Absent::Default("10"),
        doc: "seconds one ipvsadm run or netlink answer may take; then it is killed and retried",
        read: |g, v| set(&mut g.ipvs_command_timeout, parse_duration(v)),
    },
];

/// Keys of a service section, besides `<monitor>.<option>`.
pub(crate) const SERVICE_KEYS: &[Key<ServiceDraft>] = &[
    Key {
        name: "protocol",
        absent: Absent::Required,
        doc: "tcp or udp",
        read: |s, v| set(&mut s.protocol, parse_protocol(v).map(Some)),
    },
    Key {
        name: "ip",
        absent: Absent::Required,
        doc: "the service's (virtual) IPv4 or IPv6 address",
        read: |s, v| set(&mut s.ip, parse_ip(v).map(Some)),
    },
    Key {
        name: "port",
        absent: Absent::Required,
        doc: "the service's port",
        read: |s, v| set(&mut s.port, parse_service_port(v).map(Some)),
    },
    Key {
        name: "scheduler",
        absent: Absent::Required,
        doc: "the IPVS scheduler, one of SCHEDULERS",
        read: |s, v| set(&mut s.scheduler, parse_scheduler(v).map(Some)),
    },
    Key {
        name: "config",
        absent: Absent::Required,
        doc: "where the server list comes from: file://, http(s)://, etcd://",
        read: |s, v| set(&mut s.source, parse_source(v).map(Some)),
    },
    Key {
        name: "config-poll-interval",
        absent: Absent::Default("1"),
        doc: "seconds between re-reads of a file:// or http(s):// list (at least 0.1)",
        read: |s, v| set(&mut s.source_options.poll_interval, parse_interval(v)),
    },
    Key {
        name: "config-timeout",
        absent: Absent::Default("5"),
        doc: "seconds one HTTP request of the source may take (at least 0.1)",
        read: |s, v| set(&mut s.source_options.timeout, parse_timeout(v)),
    },
    Key {
        name: "ops",
        absent: Absent::Default("no"),
        doc: "one-packet scheduling (udp services only)",
        read: |s, v| set(&mut s.ops, parse_boolean(v)),
    },
    Key {
        name: "forwarding-method",
        absent: Absent::Unset,
        doc: "how IPVS reaches the real servers: dr, nat or tunnel; unset, dr (tunnel with tunneling = true)",
        read: |s, v| set(&mut s.forwarding, parse_forwarding_method(v).map(Some)),
    },
    Key {
        name: "tunneling",
        absent: Absent::Unset,
        doc: "PyBal's IPIP switch: true = forwarding-method tunnel",
        read: |s, v| set(&mut s.tunneling, parse_boolean(v).map(Some)),
    },
    Key {
        name: "depool-threshold",
        absent: Absent::Default("0.5"),
        doc: "share of the servers that stay pooled even when down (0.0-1.0)",
        read: |s, v| set(&mut s.depool_threshold, parse_threshold(v)),
    },
    Key {
        name: "monitors",
        absent: Absent::Unset,
        doc: "the monitors to run, e.g. ['ProxyFetch', 'IdleConnection']",
        read: |s, v| set(&mut s.monitors, parse_str_list(v).map(Some)),
    },
    Key {
        name: "bgp",
        absent: Absent::Default("yes"),
        doc: "announce this service's IP when bgp is on globally",
        read: |s, v| set(&mut s.bgp, parse_boolean(v)),
    },
    Key {
        name: "bgp-med",
        absent: Absent::Unset,
        doc: "MED of this service's route; unset, the global bgp-med",
        read: |s, v| set(&mut s.bgp_med, parse_u32(v).map(Some)),
    },
];

/// Options of the IdleConnection monitor (`idleconnection.<option>`).
pub(crate) const IDLE_CONNECTION_OPTIONS: &[Key<IdleConnectionOptions>] = &[
    Key {
        name: "max-delay",
        absent: Absent::Default("300"),
        doc: "seconds, cap of the reconnect backoff (at least 0.1)",
        read: |o, v| set(&mut o.max_delay, parse_interval(v)),
    },
    Key {
        name: "timeout-clean-reconnect",
        absent: Absent::Default("3"),
        doc: "seconds before reconnecting after a clean close (at least 0.1)",
        read: |o, v| set(&mut o.timeout_clean_reconnect, parse_interval(v)),
    },
    Key {
        name: "keepalive",
        absent: Absent::Default("yes"),
        doc: "TCP keepalive on the idle connection",
        read: |o, v| set(&mut o.keepalive, parse_boolean(v)),
    },
    Key {
        name: "keepalive-idle",
        absent: Absent::Default("10"),
        doc: "seconds of silence before the first keepalive probe (at least 1)",
        read: |o, v| set(&mut o.keepalive_idle, parse_keepalive_time(v)),
    },
    Key {
        name: "keepalive-interval",
        absent: Absent::Default("30"),
        doc: "seconds between keepalive probes (at least 1)",
        read: |o, v| set(&mut o.keepalive_interval, parse_keepalive_time(v)),
    },
    Key {
        name: "keepalive-retries",
        absent: Absent::Default("3"),
        doc: "unanswered probes before the connection is dead",
        read: |o, v| set(&mut o.keepalive_retries, parse_u32(v)),
    },
];

/// Options of the ProxyFetch monitor (`proxyfetch.<option>`).
pub(crate) const PROXY_FETCH_OPTIONS: &[Key<ProxyFetchOptions>] = &[
    Key {
        name: "interval",
        absent: Absent::Default("10"),
        doc: "seconds between checks (at least 0.1)",
        read: |o, v| set(&mut o.interval, parse_interval(v)),
    },
    Key {
        name: "timeout",
        absent: Absent::Default("5"),
        doc: "seconds the whole request may take (at least 0.1)",
        read: |o, v| set(&mut o.timeout, parse_timeout(v)),
    },
    Key {
        name: "url",
        absent: Absent::Required,
        doc: "one or more http:// or https:// URLs",
        read: |o, v| set(&mut o.urls, parse_urls(v)),
    },
    Key {
        name: "check_all",
        absent: Absent::Default("no"),
        doc: "fetch every URL instead of one at random",
        read: |o, v| set(&mut o.check_all, parse_boolean(v)),
    },
    Key {
        name: "max_failures",
        absent: Absent::Default("0"),
        doc: "with check_all, failed URLs tolerated",
        read: |o, v| set(&mut o.max_failures, parse_u32(v)),
    },
    Key {
        name: "http_status",
        absent: Absent::Default("200"),
        doc: "the HTTP status that means up",
        read: |o, v| set(&mut o.http_status, parse_http_status(v)),
    },
    Key {
        name: "verify-tls",
        absent: Absent::Default("no"),
        doc: "verify an https:// server's certificate against the URL's host (PyBal never did)",
        read: |o, v| set(&mut o.verify_tls, parse_boolean(v)),
    },
];

/// Options of the RunCommand monitor (`runcommand.<option>`).
pub(crate) const RUN_COMMAND_OPTIONS: &[Key<RunCommandOptions>] = &[
    Key {
        name: "interval",
        absent: Absent::Default("60"),
        doc: "seconds between runs (at least 0.1)",
        read: |o, v| set(&mut o.interval, parse_interval(v)),
    },
    Key {
        name: "timeout",
        absent: Absent::Default("20"),
        doc: "seconds before the process group is killed (at least 0.1)",
        read: |o, v| set(&mut o.timeout, parse_timeout(v)),
    },
    Key {
        name: "command",
        absent: Absent::Required,
        doc: "the program to run, without a shell",
        read: |o, v| set(&mut o.command, parse_command(v)),
    },
    Key {
        name: "arguments",
        absent: Absent::Default("[]"),
        doc: "its arguments; server.host, server.ip, server.port, server.weight are replaced",
        read: |o, v| set(&mut o.arguments, parse_arguments(v)),
    },
    Key {
        name: "log-output",
        absent: Absent::Default("yes"),
        doc: "log what the command prints",
        read: |o, v| set(&mut o.log_output, parse_boolean(v)),
    },
];

/// Options of the DNSQuery monitor (`dnsquery.<option>`).
pub(crate) const DNS_QUERY_OPTIONS: &[Key<DnsQueryOptions>] = &[
    Key {
        name: "interval",
        absent: Absent::Default("10"),
        doc: "seconds between queries (at least 0.1)",
        read: |o, v| set(&mut o.interval, parse_interval(v)),
    },
    Key {
        name: "timeout",
        absent: Absent::Default("5"),
        doc: "seconds one query may take (at least 0.1)",
        read: |o, v| set(&mut o.timeout, parse_timeout(v)),
    },
    Key {
        name: "hostnames",
        absent: Absent::Required,
        doc: "one or more DNS names; one is asked per check",
        read: |o, v| set(&mut o.hostnames, parse_hostnames(v)),
    },
    Key {
        name: "fail-on-nxdomain",
        absent: Absent::Default("no"),
        doc: "an NXDOMAIN answer means down",
        read: |o, v| set(&mut o.fail_on_nxdomain, parse_boolean(v)),
    },
];

/// Options of the UDP monitor (`udp.<option>`).
pub(crate) const UDP_OPTIONS: &[Key<UdpOptions>] = &[
    Key {
        name: "interval",
        absent: Absent::Default("10"),
        doc: "seconds between probes (at least 0.1)",
        read: |o, v| set(&mut o.interval, parse_interval(v)),
    },
    Key {
        name: "icmp-timeout",
        absent: Absent::Default("20"),
        doc: "seconds without an ICMP error before the server is up again (at least 0.1)",
        read: |o, v| set(&mut o.icmp_timeout, parse_interval(v)),
    },
];

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
        let known =
            has(GLOBAL_KEYS, key) || has(SERVICE_KEYS, key) || monitor_option_key(key).is_some();
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
        for (key, earlier, line) in &section.repeated_keys {
            report.warning(
                Place {
                    line: Some(*line),
                    section: Some(section.name.clone()),
                    key: Some(key.clone()),
                },
                format!("key given twice (also at line {earlier}); this later value is used"),
            );
        }
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
