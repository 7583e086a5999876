//! From INI text to a typed [`Config`](super::Config), collecting every error.
//!
//! This module owns the meaning of every key of `pybal.conf`: which keys the
//! `[global]` section and the service sections take, their types, defaults
//! and ranges, the monitor options, and the checks that span sections
//! (duplicate services, BGP next hops and MEDs). It never stops at the first
//! problem: every error is collected with file, line, section and key, and
//! harmless oddities (unknown keys, unused monitor options, a service without
//! monitors) become warnings.

use super::ini::{self, Entry, Ini, Section};
use super::pyliteral::{self, PyValue};
use super::{
    Config, ConfigError, DnsQueryOptions, ForwardingMethod, GlobalConfig, IdleConnectionOptions,
    IpvsBackendKind, Loaded, MonitorConfig, Protocol, ProxyFetchOptions, RunCommandOptions,
    ServiceConfig, SourceOptions, SourceUrl, UdpOptions, SCHEDULERS,
};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Name of the section holding daemon-wide settings.
const GLOBAL_SECTION: &str = "global";

/// Keys of the `[global]` section.
const GLOBAL_KEYS: &[&str] = &[
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
const SERVICE_KEYS: &[&str] = &[
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
const IDLE_CONNECTION_OPTIONS: &[&str] = &[
    "max-delay",
    "timeout-clean-reconnect",
    "keepalive",
    "keepalive-idle",
    "keepalive-interval",
    "keepalive-retries",
];

/// Options of the ProxyFetch monitor (`proxyfetch.<option>`).
const PROXY_FETCH_OPTIONS: &[&str] = &[
    "interval",
    "timeout",
    "url",
    "check_all",
    "max_failures",
    "http_status",
];

/// Options of the RunCommand monitor (`runcommand.<option>`).
const RUN_COMMAND_OPTIONS: &[&str] = &["interval", "timeout", "command", "arguments", "log-output"];

/// Options of the DNSQuery monitor (`dnsquery.<option>`).
const DNS_QUERY_OPTIONS: &[&str] = &["interval", "timeout", "hostnames", "fail-on-nxdomain"];

/// Options of the UDP monitor (`udp.<option>`).
const UDP_OPTIONS: &[&str] = &["interval", "icmp-timeout"];

/// The identifiers `runcommand.arguments` may use, replaced per server when
/// the monitor starts (PyBal evaluated the list with `server` in scope).
pub(crate) const SERVER_IDENTIFIERS: &[&str] =
    &["server.host", "server.ip", "server.port", "server.weight"];

/// Default ETCD client port for `etcd://host/key`.
const ETCD_DEFAULT_PORT: u16 = 2379;

// ---------------------------------------------------------------------------
// Not yet supported by this version. Everything rsbal recognises but cannot
// run yet lives here, so that enabling a feature means deleting lines here.
// ---------------------------------------------------------------------------

/// PyBal monitors that rsbal recognises but does not implement yet.
const NOT_YET_SUPPORTED_MONITORS: &[&str] = &[];

// ---------------------------------------------------------------------------

/// Parses and validates the main config text read from `path`.
pub(crate) fn from_str(path: &Path, text: &str) -> Result<Loaded, Vec<ConfigError>> {
    let (ini, line_problems) = ini::parse(text);
    let mut report = Report::new(path);
    for (line, reason) in line_problems {
        report.error(Place::line(line), reason);
    }
    warn_repeated_sections(&ini, &mut report);
    warn_unknown_default_keys(&ini, &mut report);

    let global = match ini.section(GLOBAL_SECTION) {
        Some(section) => read_global(&mut Reader::new(&ini, section, &mut report)),
        None => GlobalConfig::default(),
    };
    let mut services = BTreeMap::new();
    for section in ini.sections.iter().filter(|s| s.name != GLOBAL_SECTION) {
        let service = read_service(&mut Reader::new(&ini, section, &mut report));
        if let Some(service) = service {
            services.insert(service.name.clone(), service);
        }
    }
    check_duplicate_services(&ini, &services, &mut report);
    resolve_relative_sources(path, &mut services);
    if global.bgp {
        check_bgp_next_hops(&ini, &global, &services, &mut report);
        check_bgp_meds(&ini, &global, &services, &mut report);
    }
    report.finish(Config {
        path: path.to_path_buf(),
        global,
        services,
    })
}

// ---------------------------------------------------------------------------
// Collecting problems
// ---------------------------------------------------------------------------

/// Where a problem is: line, section and key, each optional.
#[derive(Debug, Clone, Default)]
struct Place {
    line: Option<usize>,
    section: Option<String>,
    key: Option<String>,
}

impl Place {
    fn line(line: usize) -> Self {
        Place {
            line: Some(line),
            ..Place::default()
        }
    }

    fn section(section: &Section) -> Self {
        Place {
            line: Some(section.line),
            section: Some(section.name.clone()),
            key: None,
        }
    }

    fn key(section: &Section, key: &str, line: usize) -> Self {
        Place {
            line: Some(line),
            section: Some(section.name.clone()),
            key: Some(key.to_string()),
        }
    }
}

/// Errors and warnings found so far.
struct Report {
    file: PathBuf,
    errors: Vec<ConfigError>,
    warnings: Vec<ConfigError>,
}

impl Report {
    fn new(file: &Path) -> Self {
        Report {
            file: file.to_path_buf(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn problem(&self, place: Place, reason: String) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: place.line,
            section: place.section,
            key: place.key,
            reason,
        }
    }

    fn error(&mut self, place: Place, reason: String) {
        let problem = self.problem(place, reason);
        self.errors.push(problem);
    }

    fn warning(&mut self, place: Place, reason: String) {
        let problem = self.problem(place, reason);
        self.warnings.push(problem);
    }

    fn finish(self, config: Config) -> Result<Loaded, Vec<ConfigError>> {
        let by_line = |e: &ConfigError| e.line.unwrap_or(usize::MAX);
        let mut errors = self.errors;
        if !errors.is_empty() {
            errors.sort_by_key(by_line);
            return Err(errors);
        }
        let mut warnings = self.warnings;
        warnings.sort_by_key(by_line);
        Ok(Loaded { config, warnings })
    }
}

/// Reads typed values out of one section (with `[DEFAULT]` inheritance),
/// recording errors as it goes.
struct Reader<'a> {
    ini: &'a Ini,
    section: &'a Section,
    report: &'a mut Report,
}

impl<'a> Reader<'a> {
    fn new(ini: &'a Ini, section: &'a Section, report: &'a mut Report) -> Self {
        Reader {
            ini,
            section,
            report,
        }
    }

    fn name(&self) -> &'a str {
        &self.section.name
    }

    fn entry(&self, key: &str) -> Option<&'a Entry> {
        self.ini.get(self.section, key)
    }

    /// The value of `key` parsed with `parse`; `None` when the key is absent
    /// or invalid (then an error is recorded).
    fn optional<T>(&mut self, key: &str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let entry = self.entry(key)?;
        match parse(&entry.value) {
            Ok(value) => Some(value),
            Err(reason) => {
                self.error_at(key, entry.line, reason);
                None
            }
        }
    }

    /// Like [`Reader::optional`], but a missing key is an error too.
    fn required<T>(&mut self, key: &str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        if self.entry(key).is_none() {
            let reason = "required key is missing".to_string();
            self.error_at(key, self.section.line, reason);
            return None;
        }
        self.optional(key, parse)
    }

    /// The line to blame for `key`: its own, else the section header's.
    fn line_of(&self, key: &str) -> usize {
        self.entry(key).map_or(self.section.line, |e| e.line)
    }

    fn error_at(&mut self, key: &str, line: usize, reason: String) {
        self.report
            .error(Place::key(self.section, key, line), reason);
    }

    fn error(&mut self, key: &str, reason: String) {
        let line = self.line_of(key);
        self.error_at(key, line, reason);
    }

    fn warning(&mut self, key: &str, reason: String) {
        let line = self.line_of(key);
        self.report
            .warning(Place::key(self.section, key, line), reason);
    }
}

// ---------------------------------------------------------------------------
// [global]
// ---------------------------------------------------------------------------

fn read_global(r: &mut Reader) -> GlobalConfig {
    let defaults = GlobalConfig::default();
    let bgp_local_asn = r.optional("bgp-local-asn", parse_u32);
    let bgp_as_path = r
        .optional("bgp-as-path", parse_as_path)
        .unwrap_or_else(|| bgp_local_asn.into_iter().collect());
    let global = GlobalConfig {
        bgp: r.optional("bgp", parse_boolean).unwrap_or(defaults.bgp),
        bgp_local_asn,
        bgp_peer_addresses: r
            .optional("bgp-peer-address", parse_ip_list)
            .unwrap_or_default(),
        bgp_as_path,
        bgp_med: r.optional("bgp-med", parse_u32).unwrap_or(defaults.bgp_med),
        bgp_nexthop_ipv4: r.optional("bgp-nexthop-ipv4", parse_ipv4),
        bgp_nexthop_ipv6: r.optional("bgp-nexthop-ipv6", parse_ipv6),
        bgp_local_ips: r
            .optional("bgp-local-ips", parse_ip_list)
            .unwrap_or(defaults.bgp_local_ips),
        bgp_local_port: r
            .optional("bgp-local-port", parse_port)
            .unwrap_or(defaults.bgp_local_port),
        bgp_peer_port: r
            .optional("bgp-peer-port", parse_nonzero_port)
            .unwrap_or(defaults.bgp_peer_port),
        bgp_graceful_restart: r
            .optional("bgp-graceful-restart", parse_restart_time)
            .unwrap_or(defaults.bgp_graceful_restart),
        instrumentation: r
            .optional("instrumentation", parse_boolean)
            .unwrap_or(defaults.instrumentation),
        instrumentation_port: r
            .optional("instrumentation_port", parse_port)
            .unwrap_or(defaults.instrumentation_port),
        instrumentation_ips: r
            .optional("instrumentation_ips", parse_ip_list)
            .unwrap_or(defaults.instrumentation_ips),
        ipvsadm: r
            .optional("ipvsadm", parse_path)
            .unwrap_or(defaults.ipvsadm),
        ipvs_backend: r.optional("ipvs-backend", parse_ipvs_backend),
        ipvs_reconcile_interval: r
            .optional("ipvs-reconcile-interval", parse_interval_or_off)
            .unwrap_or(defaults.ipvs_reconcile_interval),
    };
    if global.bgp {
        require_bgp_basics(r, &global);
    }
    warn_unknown_keys(r, |key| GLOBAL_KEYS.contains(&key));
    global
}

/// With `bgp = yes`, a local ASN and at least one peer are needed.
fn require_bgp_basics(r: &mut Reader, global: &GlobalConfig) {
    if global.bgp_local_asn.is_none() && r.entry("bgp-local-asn").is_none() {
        r.error("bgp-local-asn", "required when bgp is on".to_string());
    }
    let peers = r.entry("bgp-peer-address");
    if peers.is_none() {
        r.error(
            "bgp-peer-address",
            "required when bgp is on: at least one peer address".to_string(),
        );
    } else if peers.is_some_and(|e| parse_ip_list(&e.value).is_ok_and(|ips| ips.is_empty())) {
        r.error(
            "bgp-peer-address",
            "bgp is on but no peer address is given".to_string(),
        );
    }
}

// ---------------------------------------------------------------------------
// Service sections
// ---------------------------------------------------------------------------

/// A monitor rsbal can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MonitorKind {
    IdleConnection,
    ProxyFetch,
    RunCommand,
    DnsQuery,
    Udp,
}

impl MonitorKind {
    const ALL: [MonitorKind; 5] = [
        MonitorKind::IdleConnection,
        MonitorKind::ProxyFetch,
        MonitorKind::RunCommand,
        MonitorKind::DnsQuery,
        MonitorKind::Udp,
    ];

    fn name(self) -> &'static str {
        match self {
            MonitorKind::IdleConnection => "IdleConnection",
            MonitorKind::ProxyFetch => "ProxyFetch",
            MonitorKind::RunCommand => "RunCommand",
            MonitorKind::DnsQuery => "DNSQuery",
            MonitorKind::Udp => "UDP",
        }
    }

    fn options(self) -> &'static [&'static str] {
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
fn known_monitor_name(name: &str) -> Option<&'static str> {
    MonitorKind::ALL
        .iter()
        .map(|kind| kind.name())
        .chain(NOT_YET_SUPPORTED_MONITORS.iter().copied())
        .find(|known| known.eq_ignore_ascii_case(name))
}

/// The runnable monitor called `name`, or why there is none.
fn monitor_kind(name: &str) -> Result<MonitorKind, String> {
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
fn monitor_option_key(key: &str) -> Option<(&'static str, &str)> {
    let (monitor, option) = key.split_once('.')?;
    Some((known_monitor_name(monitor)?, option))
}

fn read_service(r: &mut Reader) -> Option<ServiceConfig> {
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
fn read_source_options(r: &mut Reader) -> SourceOptions {
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

/// The names in `monitors`, each checked. Returns the runnable ones; the
/// others have been reported.
fn read_monitor_list(r: &mut Reader) -> Vec<MonitorKind> {
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
fn read_monitors(r: &mut Reader, kinds: &[MonitorKind]) -> Option<Vec<MonitorConfig>> {
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
struct OptionReader<'r, 'a> {
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

fn read_idle_connection(r: &mut Reader) -> Option<IdleConnectionOptions> {
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

fn read_proxy_fetch(r: &mut Reader) -> Option<ProxyFetchOptions> {
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

fn read_run_command(r: &mut Reader) -> Option<RunCommandOptions> {
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

fn read_dns_query(r: &mut Reader) -> Option<DnsQueryOptions> {
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

fn read_udp(r: &mut Reader) -> Option<UdpOptions> {
    let mut o = OptionReader::new(r, "udp");
    let options = UdpOptions {
        interval: o.get("interval", Duration::from_secs(10), parse_duration),
        icmp_timeout: o.get("icmp-timeout", Duration::from_secs(20), parse_duration),
    };
    o.valid.then_some(options)
}

/// Warnings for a service's own keys that nothing reads: unknown keys,
/// unknown options of a used monitor, options of an unused monitor.
fn warn_service_keys(r: &mut Reader, used: &[MonitorKind]) {
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
fn lists_monitor(r: &Reader, monitor: &str) -> bool {
    r.entry("monitors")
        .and_then(|e| parse_str_list(&e.value).ok())
        .is_some_and(|names| names.iter().any(|n| n.eq_ignore_ascii_case(monitor)))
}

/// Warnings for a section's own keys that `known` rejects.
fn warn_unknown_keys(r: &mut Reader, known: impl Fn(&str) -> bool) {
    let section = r.section;
    for entry in &section.entries {
        if !known(&entry.key) {
            r.warning(&entry.key, "unknown key, ignored".to_string());
        }
    }
}

/// `[DEFAULT]` keys that no section could use.
fn warn_unknown_default_keys(ini: &Ini, report: &mut Report) {
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

fn warn_repeated_sections(ini: &Ini, report: &mut Report) {
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

// ---------------------------------------------------------------------------
// Checks across sections
// ---------------------------------------------------------------------------

/// Two services with the same protocol, IP and port cannot both exist.
fn check_duplicate_services(
    ini: &Ini,
    services: &BTreeMap<String, ServiceConfig>,
    report: &mut Report,
) {
    let mut seen: Vec<(&Section, &ServiceConfig)> = Vec::new();
    for section in &ini.sections {
        let Some(service) = services.get(&section.name) else {
            continue;
        };
        let twin = seen.iter().find(|(_, other)| {
            (other.protocol, other.ip, other.port) == (service.protocol, service.ip, service.port)
        });
        if let Some((other_section, _)) = twin {
            report.error(
                Place::section(section),
                format!(
                    "same protocol, ip and port ({} {}) as service [{}] at line {}",
                    service.protocol,
                    socket_text(service.ip, service.port),
                    other_section.name,
                    other_section.line
                ),
            );
        }
        seen.push((section, service));
    }
}

fn socket_text(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(ip) => format!("{ip}:{port}"),
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    }
}

/// Each address family that is announced needs its next hop.
fn check_bgp_next_hops(
    ini: &Ini,
    global: &GlobalConfig,
    services: &BTreeMap<String, ServiceConfig>,
    report: &mut Report,
) {
    let announced = || services.values().filter(|s| s.bgp);
    let missing = [
        (
            "bgp-nexthop-ipv4",
            "IPv4",
            global.bgp_nexthop_ipv4.is_none(),
            announced().find(|s| s.ip.is_ipv4()),
        ),
        (
            "bgp-nexthop-ipv6",
            "IPv6",
            global.bgp_nexthop_ipv6.is_none(),
            announced().find(|s| s.ip.is_ipv6()),
        ),
    ];
    let Some(section) = ini.section(GLOBAL_SECTION) else {
        return;
    };
    for (key, family, absent, service) in missing {
        let (true, Some(service)) = (absent, service) else {
            continue;
        };
        if ini.get(section, key).is_some() {
            continue; // present but invalid: already reported
        }
        report.error(
            Place::key(section, key, section.line),
            format!(
                "required: bgp is on and {family} service [{}] is announced",
                service.name
            ),
        );
    }
}

/// Services sharing an IP announce one route, so they must agree on its MED.
fn check_bgp_meds(
    ini: &Ini,
    global: &GlobalConfig,
    services: &BTreeMap<String, ServiceConfig>,
    report: &mut Report,
) {
    let mut first_med: BTreeMap<IpAddr, (&str, u32)> = BTreeMap::new();
    for section in &ini.sections {
        let Some(service) = services.get(&section.name).filter(|s| s.bgp) else {
            continue;
        };
        let med = service.bgp_med.unwrap_or(global.bgp_med);
        match first_med.get(&service.ip) {
            Some(&(other, other_med)) if other_med != med => {
                let line = ini.get(section, "bgp-med").map_or(section.line, |e| e.line);
                report.error(
                    Place::key(section, "bgp-med", line),
                    format!(
                        "MED {med} differs from {other_med} of service [{other}] on the same IP {}; services sharing an IP must agree",
                        service.ip
                    ),
                );
            }
            Some(_) => {}
            None => {
                first_med.insert(service.ip, (&section.name, med));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Value parsers: text of one value → typed value or a reason
// ---------------------------------------------------------------------------

/// The text of a scalar value: a quoted Python string is unquoted, anything
/// else is taken as written.
fn scalar(text: &str) -> Result<String, String> {
    let text = text.trim();
    let quoted = text.starts_with(['\'', '"'])
        || (text.len() > 1
            && text.starts_with(['u', 'U', 'r', 'R', 'b', 'B'])
            && text
                .get(1..)
                .is_some_and(|rest| rest.starts_with(['\'', '"'])));
    if !quoted {
        return Ok(text.to_string());
    }
    match pyliteral::parse(text)? {
        PyValue::Str(s) => Ok(s.trim().to_string()),
        other => Err(format!("expected one value, found a {}", other.type_name())),
    }
}

fn parse_boolean(text: &str) -> Result<bool, String> {
    let value = scalar(text)?;
    pyliteral::parse_bool(&value)
        .ok_or_else(|| format!("{value:?} is not a boolean (yes/no, true/false, on/off, 1/0)"))
}

/// A scalar parsed with `FromStr`; the error says it is not `what`.
fn parse_as<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
    let value = scalar(text)?;
    value
        .parse()
        .map_err(|_| format!("{value:?} is not {what}"))
}

fn parse_u32(text: &str) -> Result<u32, String> {
    parse_as(text, "a whole number (0-4294967295)")
}

fn parse_port(text: &str) -> Result<u16, String> {
    parse_as(text, "a port number (0-65535)")
}

fn parse_nonzero_port(text: &str) -> Result<u16, String> {
    match parse_port(text)? {
        0 => Err("port 0 cannot be connected to (1-65535)".to_string()),
        port => Ok(port),
    }
}

/// `bgp-graceful-restart`: restart time in seconds, 0 = off; the capability
/// carries 12 bits.
fn parse_restart_time(text: &str) -> Result<Option<u16>, String> {
    let value = scalar(text)?;
    match value.parse::<u16>() {
        Ok(0) => Ok(None),
        Ok(secs) if secs <= 4095 => Ok(Some(secs)),
        _ => Err(format!(
            "{value:?} is not a restart time in seconds (1-4095, 0 = off)"
        )),
    }
}

fn parse_http_status(text: &str) -> Result<u16, String> {
    let value = scalar(text)?;
    value
        .parse()
        .ok()
        .filter(|status| (100..=599).contains(status))
        .ok_or_else(|| format!("{value:?} is not an HTTP status (100-599)"))
}

/// Seconds, int or float, finite and accepted by `allowed`; the error says
/// it is not `what`.
fn parse_seconds(text: &str, allowed: fn(f64) -> bool, what: &str) -> Result<Duration, String> {
    let value = scalar(text)?;
    value
        .parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && allowed(*secs))
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("{value:?} is not {what}"))
}

/// Seconds, int or float, greater than zero.
fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_seconds(
        text,
        |secs| secs > 0.0,
        "a duration (seconds, a number greater than 0)",
    )
}

/// Seconds, int or float, zero or more (zero = off).
fn parse_interval_or_off(text: &str) -> Result<Duration, String> {
    parse_seconds(text, |secs| secs >= 0.0, "a number of seconds (0 = off)")
}

/// One of `choices` (by keyword, any case); the error lists them as `what`.
fn parse_keyword<T: Copy>(text: &str, choices: &[(&str, T)], what: &str) -> Result<T, String> {
    let value = scalar(text)?;
    let lower = value.to_ascii_lowercase();
    choices
        .iter()
        .find(|(keyword, _)| *keyword == lower)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("{value:?} is not {what}"))
}

fn parse_ipvs_backend(text: &str) -> Result<IpvsBackendKind, String> {
    let choices = [
        ("netlink", IpvsBackendKind::Netlink),
        ("ipvsadm", IpvsBackendKind::Ipvsadm),
    ];
    parse_keyword(text, &choices, "an IPVS backend (netlink or ipvsadm)")
}

fn parse_forwarding_method(text: &str) -> Result<ForwardingMethod, String> {
    let choices = [
        ("dr", ForwardingMethod::Dr),
        ("nat", ForwardingMethod::Nat),
        ("tunnel", ForwardingMethod::Tunnel),
    ];
    parse_keyword(text, &choices, "a forwarding method (dr, nat or tunnel)")
}

fn parse_threshold(text: &str) -> Result<f64, String> {
    let value = scalar(text)?;
    value
        .parse::<f64>()
        .ok()
        .filter(|t| (0.0..=1.0).contains(t))
        .ok_or_else(|| format!("{value:?} is not a number between 0.0 and 1.0"))
}

fn parse_protocol(text: &str) -> Result<Protocol, String> {
    let choices = [("tcp", Protocol::Tcp), ("udp", Protocol::Udp)];
    parse_keyword(text, &choices, "a protocol (tcp or udp)")
}

fn parse_scheduler(text: &str) -> Result<String, String> {
    let value = scalar(text)?;
    let lower = value.to_ascii_lowercase();
    if SCHEDULERS.contains(&lower.as_str()) {
        Ok(lower)
    } else {
        Err(format!(
            "{value:?} is not an IPVS scheduler (one of: {})",
            SCHEDULERS.join(" ")
        ))
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    parse_as(text, "an IPv4 or IPv6 address")
}

fn parse_ipv4(text: &str) -> Result<Ipv4Addr, String> {
    parse_as(text, "an IPv4 address")
}

fn parse_ipv6(text: &str) -> Result<Ipv6Addr, String> {
    parse_as(text, "an IPv6 address")
}

fn parse_path(text: &str) -> Result<PathBuf, String> {
    let value = scalar(text)?;
    if value.is_empty() {
        return Err("empty path".to_string());
    }
    Ok(PathBuf::from(value))
}

/// Space-separated ASNs (`bgp-as-path = 64600 64601`).
fn parse_as_path(text: &str) -> Result<Vec<u32>, String> {
    let value = scalar(text)?;
    let path: Vec<u32> = value
        .split_whitespace()
        .map(|asn| {
            asn.parse()
                .map_err(|_| format!("{asn:?} is not an AS number (0-4294967295)"))
        })
        .collect::<Result<_, _>>()?;
    if path.is_empty() {
        return Err("empty AS path".to_string());
    }
    Ok(path)
}

/// A Python list (or tuple) of strings, a quoted string, or one bare word
/// (`10.0.0.1`, `ProxyFetch`) as a one-element list. Empty = empty list.
fn parse_str_list(text: &str) -> Result<Vec<String>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    match pyliteral::parse(text) {
        Ok(value) => value.as_str_list(),
        Err(_) if is_bare_word(text) => Ok(vec![text.to_string()]),
        Err(why) => Err(format!(
            "not a Python list of strings like ['a', 'b']: {why}"
        )),
    }
}

/// One token that cannot be mistaken for a list or a literal.
fn is_bare_word(text: &str) -> bool {
    !text.is_empty()
        && !text.contains(|c: char| {
            c.is_whitespace() || matches!(c, ',' | '[' | ']' | '(' | ')' | '{' | '}' | '\'' | '"')
        })
}

fn parse_ip_list(text: &str) -> Result<Vec<IpAddr>, String> {
    parse_str_list(text)?
        .iter()
        .map(|ip| {
            ip.trim()
                .parse()
                .map_err(|_| format!("{ip:?} is not an IPv4 or IPv6 address"))
        })
        .collect()
}

/// `proxyfetch.url`: one or more `http(s)://host/…` URLs.
fn parse_urls(text: &str) -> Result<Vec<String>, String> {
    let urls = parse_str_list(text)?;
    if urls.is_empty() {
        return Err("at least one URL is needed".to_string());
    }
    for url in &urls {
        check_http_url(url)?;
    }
    Ok(urls)
}

/// An `http://` or `https://` URL with a host.
fn check_http_url(url: &str) -> Result<(), String> {
    let rest = strip_scheme(url, "http://")
        .or_else(|| strip_scheme(url, "https://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("{url:?} has no host"));
    }
    if url.contains(char::is_whitespace) {
        return Err(format!("{url:?} contains whitespace"));
    }
    Ok(())
}

/// `url` without `scheme` (matched case-insensitively).
fn strip_scheme<'u>(url: &'u str, scheme: &str) -> Option<&'u str> {
    let head = url.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| url.get(scheme.len()..))
        .flatten()
}

/// `runcommand.command`: the program to run (a path or a name looked up in
/// the command's `PATH`).
fn parse_command(text: &str) -> Result<String, String> {
    let command = scalar(text)?;
    if command.is_empty() {
        return Err("empty command".to_string());
    }
    if command.contains('\0') {
        return Err(format!("{command:?} contains a NUL character"));
    }
    Ok(command)
}

/// `runcommand.arguments`: a Python list of strings in which the bare
/// identifiers of [`SERVER_IDENTIFIERS`] may also stand unquoted, as in
/// PyBal's `[ '--host', server.host ]`. They are kept as text and replaced
/// per server when the monitor starts.
fn parse_arguments(text: &str) -> Result<Vec<String>, String> {
    let trimmed = text.trim();
    if !trimmed.starts_with(['[', '(']) {
        return parse_str_list(trimmed);
    }
    let arguments = parse_str_list(&quote_server_identifiers(trimmed)?)?;
    if let Some(bad) = arguments.iter().find(|a| a.contains('\0')) {
        return Err(format!("argument {bad:?} contains a NUL character"));
    }
    Ok(arguments)
}

/// `text` with every bare [`SERVER_IDENTIFIERS`] outside string literals put
/// in quotes; an unknown `server.…` identifier is an error.
fn quote_server_identifiers(text: &str) -> Result<String, String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    let mut out = String::with_capacity(text.len() + 8);
    let mut quote: Option<char> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' {
                if let Some((_, escaped)) = chars.next() {
                    out.push(escaped);
                }
            } else if c == q {
                quote = None;
            }
        } else if c == '\'' || c == '"' {
            quote = Some(c);
            out.push(c);
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut end = start + c.len_utf8();
            while let Some(&(at, next)) = chars.peek() {
                if !is_ident(next) {
                    break;
                }
                end = at + next.len_utf8();
                chars.next();
            }
            let token = &text[start..end];
            if SERVER_IDENTIFIERS.contains(&token) {
                out.push('\'');
                out.push_str(token);
                out.push('\'');
            } else if token.starts_with("server.") {
                return Err(format!(
                    "unknown identifier {token} (known: {})",
                    SERVER_IDENTIFIERS.join(", ")
                ));
            } else {
                out.push_str(token);
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// `dnsquery.hostnames`: one or more DNS names.
fn parse_hostnames(text: &str) -> Result<Vec<String>, String> {
    let names = parse_str_list(text)?;
    if names.is_empty() {
        return Err("at least one host name is needed".to_string());
    }
    names.iter().map(|name| check_dns_name(name)).collect()
}

/// A DNS name: labels of 1-63 bytes, at most 253 bytes, no white space; a
/// trailing dot is dropped.
fn check_dns_name(name: &str) -> Result<String, String> {
    let bare = name.trim().strip_suffix('.').unwrap_or(name.trim());
    let bad = |why: &str| Err(format!("{name:?} is not a DNS name: {why}"));
    if bare.is_empty() {
        return bad("empty");
    }
    if bare.len() > 253 {
        return bad("longer than 253 characters");
    }
    if bare.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return bad("contains white space");
    }
    if bare
        .split('.')
        .any(|label| label.is_empty() || label.len() > 63)
    {
        return bad("each dot-separated label must have 1 to 63 characters");
    }
    Ok(bare.to_string())
}

/// `config = …`: where the server list comes from.
fn parse_source(text: &str) -> Result<SourceUrl, String> {
    let url = scalar(text)?;
    if let Some(path) = strip_scheme(&url, "file://") {
        return parse_file_source(&url, path);
    }
    if let Some(rest) =
        strip_scheme(&url, "etcd://").or_else(|| strip_scheme(&url, "etcd+https://"))
    {
        return parse_etcd_source(&url, rest, true);
    }
    if let Some(rest) = strip_scheme(&url, "etcd+http://") {
        return parse_etcd_source(&url, rest, false);
    }
    if strip_scheme(&url, "http://").is_some() || strip_scheme(&url, "https://").is_some() {
        check_http_url(&url)?;
        return Ok(SourceUrl::Http(url));
    }
    Err(format!(
        "{url:?} is not a server list URL (file:///path, http://…, https://…, etcd://host[:port]/key or etcd+http://host[:port]/key)"
    ))
}

/// `file:///abs/path`, or (beyond PyBal) `file://relative/path`, which
/// [`resolve_relative_sources`] later anchors at the config file's directory.
fn parse_file_source(url: &str, path: &str) -> Result<SourceUrl, String> {
    if path.is_empty() || path == "/" {
        return Err(format!(
            "{url:?} names no file; use file:///etc/pybal/pools/service"
        ));
    }
    Ok(SourceUrl::File(PathBuf::from(path)))
}

/// Relative `file://` paths are relative to the directory of the main config.
fn resolve_relative_sources(config_path: &Path, services: &mut BTreeMap<String, ServiceConfig>) {
    let base = config_path.parent().unwrap_or(Path::new("."));
    for service in services.values_mut() {
        if let SourceUrl::File(file) = &mut service.source {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
    }
}

/// `etcd://host[:port]/key` (HTTPS) or `etcd+http://…` (plain, `tls`
/// false); the key keeps its leading `/`.
fn parse_etcd_source(url: &str, rest: &str, tls: bool) -> Result<SourceUrl, String> {
    let (authority, key) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if key.len() < 2 {
        return Err(format!("{url:?} has no key: use etcd://host[:port]/key"));
    }
    let (host, port) = split_host_port(authority)
        .ok_or_else(|| format!("{url:?}: {authority:?} is not host or host:port"))?;
    Ok(SourceUrl::Etcd {
        host,
        port: port.unwrap_or(ETCD_DEFAULT_PORT),
        key: key.to_string(),
        tls,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(port) => Some(port.parse().ok()?),
        None => None,
    };
    Some((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shaped like Wikimedia's pybal.conf: BGP on, v4 and v6 services,
    /// ProxyFetch + IdleConnection.
    const WIKIMEDIA_LIKE: &str = r#"# PyBal configuration (managed by Puppet)
[global]
bgp = yes
bgp-local-asn = 64600
bgp-peer-address = [ '208.80.154.196', "2620:0:861:ffff::1" ]
bgp-as-path = 64600 64601
bgp-nexthop-ipv4 = 208.80.154.10
bgp-nexthop-ipv6 = 2620:0:861:1:208:80:154:10
bgp-med = 0
instrumentation = yes
instrumentation_port = 9090
instrumentation_ips = ['127.0.0.1', '::1', '10.64.0.10']

; text cluster
[text_80]
protocol = tcp
ip = 208.80.154.224
port = 80
scheduler = sh
config = file:///etc/pybal/pools/text
bgp = yes
depool-threshold = .5
monitors = [ "ProxyFetch", "IdleConnection" ]
proxyfetch.url = [ 'http://en.wikipedia.org/wiki/Special:BlankPage' ]
idleconnection.timeout-clean-reconnect = 3
idleconnection.max-delay = 300

[text_443_ipv6]
protocol: TCP
ip: 2620:0:861:ed1a::1
port: 443
scheduler: sh
config: file:///etc/pybal/pools/text-https.json
depool-threshold: 0.6
bgp-med: 0
monitors: [
    'ProxyFetch',
    'IdleConnection',
    ]
proxyfetch.url: [
    'https://en.wikipedia.org/wiki/Special:BlankPage#x;y',
    'https://www.wikidata.org/',
    ]
proxyfetch.timeout = 2.5
proxyfetch.interval = '5'
proxyfetch.check_all = yes
proxyfetch.max_failures = 1
proxyfetch.http_status = 301
idleconnection.keepalive = no
idleconnection.keepalive-retries = 5
"#;

    fn load(text: &str) -> Result<Loaded, Vec<ConfigError>> {
        from_str(Path::new("/etc/pybal/pybal.conf"), text)
    }

    fn load_ok(text: &str) -> Loaded {
        match load(text) {
            Ok(loaded) => loaded,
            Err(errors) => panic!("unexpected errors: {errors:#?}"),
        }
    }

    fn errors(text: &str) -> Vec<ConfigError> {
        match load(text) {
            Ok(loaded) => panic!("expected errors, got {:#?}", loaded.config),
            Err(errors) => errors,
        }
    }

    /// One minimal valid service, to append keys to.
    fn service(name: &str, extra: &str) -> String {
        format!(
            "[{name}]\nprotocol = tcp\nip = 10.2.2.1\nport = 80\nscheduler = wrr\n\
             config = file:///etc/pybal/pools/{name}\nmonitors = ['IdleConnection']\n{extra}"
        )
    }

    #[test]
    fn relative_file_sources_are_anchored_at_the_config_directory() {
        let text = service("svc", "").replace("file:///etc/pybal/pools/svc", "file://lists/svc");
        let loaded = from_str(Path::new("/etc/rsbal/rsbal.conf"), &text).unwrap();
        assert_eq!(
            loaded.config.services["svc"].source,
            SourceUrl::File(PathBuf::from("/etc/rsbal/lists/svc"))
        );
    }

    fn find<'e>(errors: &'e [ConfigError], key: &str) -> &'e ConfigError {
        errors
            .iter()
            .find(|e| e.key.as_deref() == Some(key))
            .unwrap_or_else(|| panic!("no problem for key {key}: {errors:#?}"))
    }

    #[test]
    fn wikimedia_like_config() {
        let loaded = load_ok(WIKIMEDIA_LIKE);
        assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
        let config = loaded.config;
        assert_eq!(config.path, PathBuf::from("/etc/pybal/pybal.conf"));

        let g = &config.global;
        assert!(g.bgp);
        assert_eq!(g.bgp_local_asn, Some(64600));
        assert_eq!(
            g.bgp_peer_addresses,
            vec![
                "208.80.154.196".parse::<IpAddr>().unwrap(),
                "2620:0:861:ffff::1".parse().unwrap()
            ]
        );
        assert_eq!(g.bgp_as_path, vec![64600, 64601]);
        assert_eq!(g.bgp_nexthop_ipv4, Some(Ipv4Addr::new(208, 80, 154, 10)));
        assert!(g.bgp_nexthop_ipv6.is_some());
        assert!(g.instrumentation);
        assert_eq!(g.instrumentation_ips.len(), 3);
        assert_eq!(g.bgp_local_port, 179);
        assert_eq!(g.ipvsadm, PathBuf::from("/sbin/ipvsadm"));

        assert_eq!(config.services.len(), 2);
        let text = &config.services["text_80"];
        assert_eq!(text.name, "text_80");
        assert_eq!(text.protocol, Protocol::Tcp);
        assert_eq!(text.port, 80);
        assert_eq!(text.scheduler, "sh");
        assert_eq!(
            text.source,
            SourceUrl::File(PathBuf::from("/etc/pybal/pools/text"))
        );
        assert!(!text.ops);
        assert_eq!(text.depool_threshold, 0.5);
        assert!(text.bgp);
        assert_eq!(text.bgp_med, None);
        let names: Vec<_> = text.monitors.iter().map(|m| m.name()).collect();
        assert_eq!(names, ["ProxyFetch", "IdleConnection"]);
        assert_eq!(
            text.monitors[0],
            MonitorConfig::ProxyFetch(ProxyFetchOptions {
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(5),
                urls: vec!["http://en.wikipedia.org/wiki/Special:BlankPage".to_string()],
                check_all: false,
                max_failures: 0,
                http_status: 200,
            })
        );
        assert_eq!(
            text.monitors[1],
            MonitorConfig::IdleConnection(IdleConnectionOptions::default())
        );

        let https = &config.services["text_443_ipv6"];
        assert!(https.ip.is_ipv6());
        assert_eq!(https.depool_threshold, 0.6);
        assert_eq!(https.bgp_med, Some(0));
        assert!(https.source.is_json());
        let MonitorConfig::ProxyFetch(pf) = &https.monitors[0] else {
            panic!("ProxyFetch first");
        };
        assert_eq!(pf.urls.len(), 2);
        assert_eq!(
            pf.urls[0],
            "https://en.wikipedia.org/wiki/Special:BlankPage#x;y"
        );
        assert_eq!(pf.timeout, Duration::from_millis(2500));
        assert_eq!(pf.interval, Duration::from_secs(5));
        assert!(pf.check_all);
        assert_eq!(pf.max_failures, 1);
        assert_eq!(pf.http_status, 301);
        let MonitorConfig::IdleConnection(ic) = &https.monitors[1] else {
            panic!("IdleConnection second");
        };
        assert!(!ic.keepalive);
        assert_eq!(ic.keepalive_retries, 5);
    }

    #[test]
    fn no_global_section_means_defaults() {
        let config = load_ok(&service("svc", "")).config;
        assert_eq!(config.global, GlobalConfig::default());
        assert_eq!(config.services["svc"].scheduler, "wrr");
    }

    #[test]
    fn bad_port_names_line_section_and_key() {
        let text = service("svc", "").replace("port = 80", "port = 80a");
        let errors = errors(&text);
        assert_eq!(errors.len(), 1);
        let e = &errors[0];
        assert_eq!(e.line, Some(4));
        assert_eq!(e.section.as_deref(), Some("svc"));
        assert_eq!(e.key.as_deref(), Some("port"));
        assert_eq!(
            e.to_string(),
            r#"/etc/pybal/pybal.conf:4: [svc] port: "80a" is not a port number (0-65535)"#
        );
    }

    #[test]
    fn every_error_is_collected() {
        let text = "[svc]\nprotocol = sctp\nip = 10.0.0.300\nport = 99999\nscheduler = fast\n\
                    config = ftp://x/y\ndepool-threshold = 1.5\nops = maybe\nbgp-med = -1\n\
                    monitors = ['IdleConnection']\nidleconnection.max-delay = 0\n\
                    idleconnection.keepalive-retries = many\n";
        let errors = errors(text);
        let keys: Vec<_> = errors.iter().filter_map(|e| e.key.as_deref()).collect();
        assert_eq!(
            keys,
            [
                "protocol",
                "ip",
                "port",
                "scheduler",
                "config",
                "depool-threshold",
                "ops",
                "bgp-med",
                "idleconnection.max-delay",
                "idleconnection.keepalive-retries"
            ]
        );
        let lines: Vec<_> = errors.iter().map(|e| e.line).collect();
        assert_eq!(
            lines,
            (2..=12).filter(|l| *l != 10).map(Some).collect::<Vec<_>>()
        );
        assert!(errors.iter().all(|e| e.section.as_deref() == Some("svc")));
        assert!(find(&errors, "scheduler").reason.contains("wrr"));
    }

    #[test]
    fn missing_required_keys_point_at_the_section() {
        let errors = errors("[global]\n\n[empty]\nmonitors = []\n");
        let keys: Vec<_> = errors.iter().filter_map(|e| e.key.as_deref()).collect();
        assert_eq!(keys, ["protocol", "ip", "port", "scheduler", "config"]);
        assert!(errors.iter().all(|e| e.line == Some(3)));
        assert!(errors.iter().all(|e| e.reason == "required key is missing"));
    }

    #[test]
    fn ini_syntax_errors_are_reported_with_validation_errors() {
        let text = format!("stray = 1\n{}garbage line\n", service("svc", "port = x\n"));
        let errors = errors(&text);
        assert_eq!(errors.len(), 3);
        assert_eq!(
            (errors[0].line, errors[0].section.as_deref()),
            (Some(1), None)
        );
        assert!(errors[0].reason.contains("before any [section]"));
        assert_eq!(errors[1].key.as_deref(), Some("port"));
        assert_eq!(errors[1].line, Some(9));
        assert_eq!(errors[2].line, Some(10));
    }

    #[test]
    fn ops_only_for_udp() {
        let errors = errors(&service("svc", "ops = yes\n"));
        assert_eq!(find(&errors, "ops").line, Some(8));
        let udp = service("dns", "ops = yes\n").replace("tcp", "UDP");
        let config = load_ok(&udp).config;
        assert!(config.services["dns"].ops);
        assert_eq!(config.services["dns"].protocol, Protocol::Udp);
    }

    #[test]
    fn source_urls() {
        let etcd = |text: &str| parse_source(text);
        assert_eq!(
            etcd("etcd://conf1001.eqiad.wmnet/conftool/v1/pools/text"),
            Ok(SourceUrl::Etcd {
                host: "conf1001.eqiad.wmnet".into(),
                port: 2379,
                key: "/conftool/v1/pools/text".into(),
                tls: true,
            })
        );
        assert_eq!(
            etcd("etcd://[::1]:4001/k"),
            Ok(SourceUrl::Etcd {
                host: "::1".into(),
                port: 4001,
                key: "/k".into(),
                tls: true,
            })
        );
        assert_eq!(
            etcd("etcd+http://127.0.0.1:2379/pools/text"),
            Ok(SourceUrl::Etcd {
                host: "127.0.0.1".into(),
                port: 2379,
                key: "/pools/text".into(),
                tls: false,
            })
        );
        assert_eq!(
            etcd("ETCD+HTTPS://h/k").map(|u| u.to_string()),
            Ok("etcd://h:2379/k".into())
        );
        assert_eq!(
            etcd("etcd+http://[::1]/k").map(|u| u.to_string()),
            Ok("etcd+http://[::1]:2379/k".into())
        );
        assert_eq!(
            parse_source("http://config-master.wikimedia.org/pybal/eqiad/text"),
            Ok(SourceUrl::Http(
                "http://config-master.wikimedia.org/pybal/eqiad/text".into()
            ))
        );
        assert_eq!(
            parse_source("'file:///srv/x.json'"),
            Ok(SourceUrl::File(PathBuf::from("/srv/x.json")))
        );
        assert_eq!(
            parse_source("file://relative/x"),
            Ok(SourceUrl::File(PathBuf::from("relative/x")))
        );
        for bad in [
            "file://",
            "etcd://host",
            "etcd://host:port/k",
            "etcd:///k",
            "etcd+http://host",
            "etcd+ftp://host/k",
            "http:///x",
            "ftp://x/y",
            "/etc/pybal/x",
            "",
        ] {
            assert!(parse_source(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn http_and_etcd_sources_with_poll_options() {
        let http = service("svc", "config-poll-interval = 0.5\nconfig-timeout = 2\n").replace(
            "file:///etc/pybal/pools/svc",
            "https://config-master/pybal/svc.json",
        );
        let svc = &load_ok(&http).config.services["svc"];
        assert!(svc.source.is_json());
        assert_eq!(
            svc.source_options,
            SourceOptions {
                poll_interval: Duration::from_millis(500),
                timeout: Duration::from_secs(2),
            }
        );
        let etcd = service("svc", "").replace("file:///etc/pybal/pools/svc", "etcd://h/k");
        let svc = &load_ok(&etcd).config.services["svc"];
        assert_eq!(svc.source_options, SourceOptions::default());
        let errors = errors(&service(
            "svc",
            "config-poll-interval = 0\nconfig-timeout = x\n",
        ));
        assert_eq!(find(&errors, "config-poll-interval").line, Some(8));
        assert_eq!(find(&errors, "config-timeout").line, Some(9));
    }

    fn errors_of(text: &str) -> Vec<ConfigError> {
        errors(text)
    }

    #[test]
    fn monitor_names() {
        let with = |monitors: &str| service("svc", "").replace("['IdleConnection']", monitors);
        let config = load_ok(&with("'idleconnection'")).config;
        assert_eq!(config.services["svc"].monitors.len(), 1);
        let errors = errors(&with("['Bogus', 'idleconnection', 'IdleConnection']"));
        let reasons: Vec<_> = errors.iter().map(|e| e.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "unknown monitor Bogus",
                "monitor IdleConnection is listed twice"
            ]
        );
        assert!(errors.iter().all(|e| e.line == Some(7)));
        let errors = errors_of(&with("['DNSQuery', 'UDP'"));
        assert!(find(&errors, "monitors").reason.contains("unclosed"));
    }

    #[test]
    fn proxyfetch_needs_valid_urls() {
        let pf =
            |extra: &str| service("svc", extra).replace("['IdleConnection']", "['ProxyFetch']");
        let errors = errors(&pf(""));
        assert!(find(&errors, "proxyfetch.url").reason.contains("required"));
        let errors = errors_of(&pf("proxyfetch.url = ['gopher://x/', 'http:///nohost']\n"));
        assert!(find(&errors, "proxyfetch.url").reason.contains("gopher"));
        let errors = errors_of(&pf(
            "proxyfetch.url = http://x/\nproxyfetch.http_status = 700\nproxyfetch.timeout = -1\n",
        ));
        assert_eq!(find(&errors, "proxyfetch.http_status").line, Some(9));
        assert_eq!(find(&errors, "proxyfetch.timeout").line, Some(10));
        let config = load_ok(&pf("proxyfetch.url = 'http://x/'\n")).config;
        let MonitorConfig::ProxyFetch(opts) = &config.services["svc"].monitors[0] else {
            panic!("ProxyFetch");
        };
        assert_eq!(opts.urls, ["http://x/"]);
    }

    /// `service` with only `monitors` as its monitor list.
    fn monitored(monitors: &str, extra: &str) -> String {
        service("svc", extra).replace("['IdleConnection']", monitors)
    }

    #[test]
    fn run_command_options() {
        let config = load_ok(&monitored(
            "['RunCommand']",
            "runcommand.command = /usr/local/bin/check\n\
             runcommand.arguments = [ '--host', server.host, \"--port=server.port\", server.ip, server.weight ]\n\
             runcommand.interval = 30\nruncommand.timeout = 2.5\nruncommand.log-output = no\n",
        ))
        .config;
        let MonitorConfig::RunCommand(rc) = &config.services["svc"].monitors[0] else {
            panic!("RunCommand");
        };
        assert_eq!(
            rc,
            &RunCommandOptions {
                interval: Duration::from_secs(30),
                timeout: Duration::from_millis(2500),
                command: "/usr/local/bin/check".into(),
                arguments: vec![
                    "--host".into(),
                    "server.host".into(),
                    "--port=server.port".into(),
                    "server.ip".into(),
                    "server.weight".into()
                ],
                log_output: false,
            }
        );
        // Defaults.
        let config = load_ok(&monitored(
            "['RunCommand']",
            "runcommand.command = 'check'\n",
        ))
        .config;
        let MonitorConfig::RunCommand(rc) = &config.services["svc"].monitors[0] else {
            panic!("RunCommand");
        };
        assert_eq!(rc.interval, Duration::from_secs(60));
        assert_eq!(rc.timeout, Duration::from_secs(20));
        assert_eq!(rc.command, "check");
        assert!(rc.arguments.is_empty());
        assert!(rc.log_output);
    }

    #[test]
    fn run_command_errors_name_the_key() {
        let errors = errors(&monitored("['RunCommand']", ""));
        let e = find(&errors, "runcommand.command");
        assert!(e.reason.contains("required"), "{}", e.reason);
        assert_eq!(e.line, Some(1));
        let errors = errors_of(&monitored(
            "['RunCommand']",
            "runcommand.command = ''\nruncommand.arguments = [ server.name ]\n\
             runcommand.timeout = 0\nruncommand.log-output = perhaps\nruncommand.interval = x\n",
        ));
        let lines: Vec<_> = errors
            .iter()
            .map(|e| (e.key.as_deref().unwrap_or(""), e.line))
            .collect();
        assert_eq!(
            lines,
            [
                ("runcommand.command", Some(8)),
                ("runcommand.arguments", Some(9)),
                ("runcommand.timeout", Some(10)),
                ("runcommand.log-output", Some(11)),
                ("runcommand.interval", Some(12)),
            ]
        );
        assert!(find(&errors, "runcommand.arguments")
            .reason
            .contains("unknown identifier server.name"));
        let errors = errors_of(&monitored(
            "['RunCommand']",
            "runcommand.command = x\nruncommand.arguments = [ '--a', 80 ]\n",
        ));
        assert!(find(&errors, "runcommand.arguments").reason.contains("int"));
    }

    #[test]
    fn server_identifiers_are_quoted_only_outside_strings() {
        assert_eq!(
            parse_arguments("[ server.host, 'server.ip', \"a 'server.port'\" ]"),
            Ok(vec![
                "server.host".to_string(),
                "server.ip".to_string(),
                "a 'server.port'".to_string()
            ])
        );
        assert_eq!(
            parse_arguments(r"( 'it\'s', server.port )"),
            Ok(vec!["it's".to_string(), "server.port".to_string()])
        );
        assert_eq!(
            parse_arguments("--verbose"),
            Ok(vec!["--verbose".to_string()])
        );
        assert_eq!(parse_arguments("[]"), Ok(vec![]));
        assert!(parse_arguments("[ server.ip + 1 ]").is_err());
        assert!(parse_arguments("[ os.system ]").is_err());
    }

    #[test]
    fn dns_query_options() {
        let config = load_ok(&monitored(
            "['DNSQuery']",
            "dnsquery.hostnames = [ 'en.wikipedia.org', 'ns0.wikimedia.org.' ]\n\
             dnsquery.interval = 2\ndnsquery.timeout = 1\ndnsquery.fail-on-nxdomain = yes\n",
        ))
        .config;
        let MonitorConfig::DnsQuery(dq) = &config.services["svc"].monitors[0] else {
            panic!("DNSQuery");
        };
        assert_eq!(
            dq,
            &DnsQueryOptions {
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                hostnames: vec!["en.wikipedia.org".into(), "ns0.wikimedia.org".into()],
                fail_on_nxdomain: true,
            }
        );
        let config = load_ok(&monitored("'dnsquery'", "dnsquery.hostnames = a.example\n")).config;
        let MonitorConfig::DnsQuery(dq) = &config.services["svc"].monitors[0] else {
            panic!("DNSQuery");
        };
        assert_eq!(
            (dq.interval, dq.timeout, dq.fail_on_nxdomain),
            (Duration::from_secs(10), Duration::from_secs(5), false)
        );
        assert_eq!(dq.hostnames, ["a.example"]);

        let errors = errors(&monitored("['DNSQuery']", ""));
        assert!(find(&errors, "dnsquery.hostnames")
            .reason
            .contains("required"));
        for bad in ["[]", "[ 'a..b' ]", "[ 'white space' ]", "'.'"] {
            let text = monitored("['DNSQuery']", &format!("dnsquery.hostnames = {bad}\n"));
            let errors = errors_of(&text);
            assert_eq!(find(&errors, "dnsquery.hostnames").line, Some(8), "{bad}");
        }
        let long = format!("dnsquery.hostnames = '{}.org'\n", "x".repeat(64));
        let errors = errors_of(&monitored("['DNSQuery']", &long));
        assert!(find(&errors, "dnsquery.hostnames").reason.contains("63"));
        let text = monitored(
            "['DNSQuery']",
            "dnsquery.hostnames = a\ndnsquery.fail-on-nxdomain = 2\ndnsquery.timeout = soon\n",
        );
        let errors = errors_of(&text);
        assert_eq!(find(&errors, "dnsquery.fail-on-nxdomain").line, Some(9));
        assert_eq!(find(&errors, "dnsquery.timeout").line, Some(10));
    }

    #[test]
    fn udp_options() {
        let config = load_ok(&monitored(
            "['UDP']",
            "udp.interval = 1\nudp.icmp-timeout = 2\n",
        ))
        .config;
        assert_eq!(
            config.services["svc"].monitors,
            [MonitorConfig::Udp(UdpOptions {
                interval: Duration::from_secs(1),
                icmp_timeout: Duration::from_secs(2),
            })]
        );
        let config = load_ok(&monitored("['udp']", "")).config;
        assert_eq!(
            config.services["svc"].monitors,
            [MonitorConfig::Udp(UdpOptions {
                interval: Duration::from_secs(10),
                icmp_timeout: Duration::from_secs(20),
            })]
        );
        let errors = errors(&monitored("['UDP']", "udp.icmp-timeout = -2\n"));
        assert_eq!(find(&errors, "udp.icmp-timeout").line, Some(8));
        let loaded = load_ok(&monitored("['UDP']", "udp.timeout = 2\n"));
        assert!(loaded.warnings[0].reason.contains("unknown option"));
    }

    #[test]
    fn all_monitors_together() {
        let config = load_ok(&monitored(
            "['IdleConnection', 'ProxyFetch', 'RunCommand', 'DNSQuery', 'UDP']",
            "proxyfetch.url = http://x/\nruncommand.command = /bin/true\ndnsquery.hostnames = x\n",
        ))
        .config;
        let names: Vec<_> = config.services["svc"]
            .monitors
            .iter()
            .map(MonitorConfig::name)
            .collect();
        assert_eq!(
            names,
            [
                "IdleConnection",
                "ProxyFetch",
                "RunCommand",
                "DNSQuery",
                "UDP"
            ]
        );
    }

    #[test]
    fn warnings_for_unknown_keys_and_unused_monitor_options() {
        let text = format!(
            "[global]\nbogus = 1\n{}",
            service(
                "svc",
                "colour = blue\nproxyfetch.url = http://x/\nidleconnection.nope = 1\n\
                 runcommand.command = /bin/true\n"
            )
        );
        let loaded = load_ok(&text);
        let warnings: Vec<_> = loaded
            .warnings
            .iter()
            .map(|w| (w.line, w.key.as_deref(), w.section.as_deref()))
            .collect();
        assert_eq!(
            warnings,
            [
                (Some(2), Some("bogus"), Some("global")),
                (Some(10), Some("colour"), Some("svc")),
                (Some(11), Some("proxyfetch.url"), Some("svc")),
                (Some(12), Some("idleconnection.nope"), Some("svc")),
                (Some(13), Some("runcommand.command"), Some("svc")),
            ]
        );
        assert!(loaded.warnings[2].reason.contains("does not use"));
    }

    #[test]
    fn service_without_monitors_is_a_warning() {
        let text = service("svc", "").replace("monitors = ['IdleConnection']\n", "");
        let loaded = load_ok(&text);
        assert_eq!(loaded.warnings.len(), 1);
        assert_eq!(
            loaded.warnings[0].reason,
            "no monitors: servers will never be marked down"
        );
        assert_eq!(loaded.warnings[0].line, Some(1));
        assert!(loaded.config.services["svc"].monitors.is_empty());
    }

    #[test]
    fn duplicate_service_names_both_sections() {
        let text = format!("{}{}", service("a", ""), service("b", "ip = 10.2.2.1\n"));
        let errors = errors(&text);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].section.as_deref(), Some("b"));
        assert_eq!(errors[0].line, Some(8));
        assert!(errors[0].reason.contains("[a]"), "{}", errors[0].reason);
        let udp = format!(
            "{}{}",
            service("a", ""),
            service("b", "").replace("tcp", "udp")
        );
        assert!(load(&udp).is_ok());
    }

    #[test]
    fn bgp_requirements() {
        let errors = errors(&format!("[global]\nbgp = yes\n{}", service("svc", "")));
        let keys: Vec<_> = errors.iter().filter_map(|e| e.key.as_deref()).collect();
        assert_eq!(
            keys,
            ["bgp-local-asn", "bgp-peer-address", "bgp-nexthop-ipv4"]
        );
        assert!(errors
            .iter()
            .all(|e| e.section.as_deref() == Some("global")));

        // A service with bgp off needs no next hop; the v6 one does.
        let global = "[global]\nbgp = yes\nbgp-local-asn = 64600\nbgp-peer-address = 10.0.0.1\n";
        let off = service("svc", "bgp = no\n");
        let loaded = load_ok(&format!("{global}{off}"));
        assert_eq!(loaded.config.global.bgp_as_path, vec![64600]);
        assert_eq!(
            loaded.config.global.bgp_peer_addresses,
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        let v6 = service("v6", "").replace("10.2.2.1", "2001:db8::1");
        let errors = errors_of(&format!("{global}bgp-nexthop-ipv4 = 10.0.0.2\n{v6}"));
        assert_eq!(find(&errors, "bgp-nexthop-ipv6").line, Some(1));
    }

    #[test]
    fn bgp_peer_port_and_graceful_restart() {
        let global = "[global]\nbgp = yes\nbgp-local-asn = 64600\nbgp-peer-address = 10.0.0.1\n";
        let off = service("svc", "bgp = no\n");
        let g = load_ok(&format!("{global}{off}")).config.global;
        assert_eq!((g.bgp_peer_port, g.bgp_graceful_restart), (179, None));
        let g = load_ok(&format!(
            "{global}bgp-peer-port = 1179\nbgp-graceful-restart = 120\n{off}"
        ))
        .config
        .global;
        assert_eq!((g.bgp_peer_port, g.bgp_graceful_restart), (1179, Some(120)));
        let g = load_ok(&format!("{global}bgp-graceful-restart = 0\n{off}"))
            .config
            .global;
        assert_eq!(g.bgp_graceful_restart, None);
        for bad in [
            "bgp-graceful-restart = 4096",
            "bgp-graceful-restart = yes",
            "bgp-peer-port = 0",
        ] {
            let errors = errors(&format!("{global}{bad}\n{off}"));
            let key = bad.split(' ').next().unwrap();
            assert_eq!(find(&errors, key).line, Some(5), "{bad}: {errors:?}");
        }
    }

    #[test]
    fn bgp_meds_must_agree_per_ip() {
        let global =
            "[global]\nbgp = yes\nbgp-local-asn = 64600\nbgp-peer-address = ['10.0.0.1']\n\
                      bgp-nexthop-ipv4 = 10.0.0.2\nbgp-med = 5\n";
        let a = service("a", "bgp-med = 5\n");
        let b = service("b", "port = 443\n");
        assert!(load(&format!("{global}{a}{b}")).is_ok());
        let c = service("c", "port = 8080\nbgp-med = 7\n");
        let errors = errors_of(&format!("{global}{a}{b}{c}"));
        assert_eq!(errors.len(), 1);
        let e = find(&errors, "bgp-med");
        assert_eq!(e.section.as_deref(), Some("c"));
        assert_eq!(e.line, Some(6 + 8 + 8 + 9));
        // With BGP off globally the MEDs do not matter (PyBal accepted it).
        let off = global.replace("bgp = yes", "bgp = no");
        assert!(load(&format!("{off}{a}{b}{c}")).is_ok());
    }

    #[test]
    fn default_section_applies_to_services() {
        let text = "[DEFAULT]\nscheduler = wrr\nmonitors = ['IdleConnection']\nwhatever = 1\n\
                    [svc]\nprotocol = tcp\nip = 10.0.0.1\nport = 80\nconfig = file:///x\n";
        let loaded = load_ok(text);
        assert_eq!(loaded.config.services["svc"].scheduler, "wrr");
        assert_eq!(loaded.warnings.len(), 1);
        assert_eq!(loaded.warnings[0].section.as_deref(), Some("DEFAULT"));
        assert_eq!(loaded.warnings[0].line, Some(4));
    }

    #[test]
    fn quoted_and_bare_values() {
        let text = service(
            "svc",
            "depool-threshold = '0.25'\nbgp = \"off\"\nidleconnection.keepalive-idle = 1.5\n",
        )
        .replace("port = 80", "port = '80'");
        let config = load_ok(&text).config;
        let svc = &config.services["svc"];
        assert_eq!(svc.port, 80);
        assert_eq!(svc.depool_threshold, 0.25);
        assert!(!svc.bgp);
        let MonitorConfig::IdleConnection(ic) = &svc.monitors[0] else {
            panic!("IdleConnection");
        };
        assert_eq!(ic.keepalive_idle, Duration::from_millis(1500));
    }

    #[test]
    fn value_parsers() {
        assert_eq!(parse_duration("1e400").map_err(|_| ()), Err(()));
        assert!(parse_duration("nan").is_err());
        assert!(parse_duration("0").is_err());
        assert_eq!(
            parse_str_list("ProxyFetch"),
            Ok(vec!["ProxyFetch".to_string()])
        );
        assert!(parse_str_list("ProxyFetch, IdleConnection").is_err());
        assert_eq!(parse_ip_list("::1").map(|v| v.len()), Ok(1));
        assert!(parse_ip_list("['10.0.0.1', 'nope']").is_err());
        assert!(parse_as_path("64600 x").is_err());
        assert!(parse_threshold("-0.1").is_err());
        assert_eq!(scalar("u'x'"), Ok("x".to_string()));
        assert_eq!(scalar("under"), Ok("under".to_string()));
        assert!(scalar("'unterminated").is_err());
    }

    #[test]
    fn never_panics_on_truncated_or_mangled_configs() {
        for (at, _) in WIKIMEDIA_LIKE.char_indices() {
            let _ = load(&WIKIMEDIA_LIKE[..at]);
            let _ = load(&WIKIMEDIA_LIKE[at..]);
        }
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet: Vec<char> = "[]()'\"\\=:#; \n\tabcu01.,-é".chars().collect();
        for _ in 0..2000 {
            let len = rng.usize(0..60);
            let noise: String = (0..len)
                .map(|_| alphabet[rng.usize(0..alphabet.len())])
                .collect();
            let _ = load(&noise);
            let _ = pyliteral::parse(&noise);
            let _ = crate::source::serverlist::parse(&noise, false);
        }
    }

    #[test]
    fn repeated_section_is_a_warning() {
        let text = format!("{}[svc]\nport = 81\n", service("svc", ""));
        let loaded = load_ok(&text);
        assert_eq!(loaded.config.services["svc"].port, 81);
        assert_eq!(loaded.warnings.len(), 1);
        assert_eq!(loaded.warnings[0].line, Some(8));
    }

    #[test]
    fn ipvs_backend_and_reconcile_interval() {
        let g = load_ok(&service("svc", "")).config.global;
        assert_eq!(g.ipvs_backend, None);
        assert_eq!(g.ipvs_reconcile_interval, Duration::from_secs(60));
        let text = format!(
            "[global]\nipvs-backend = Netlink\nipvs-reconcile-interval = 0\n{}",
            service("svc", "")
        );
        let g = load_ok(&text).config.global;
        assert_eq!(g.ipvs_backend, Some(IpvsBackendKind::Netlink));
        assert_eq!(g.ipvs_reconcile_interval, Duration::ZERO);
        let text = format!(
            "[global]\nipvs-backend = ipvsadm\nipvs-reconcile-interval = 2.5\n{}",
            service("svc", "")
        );
        let g = load_ok(&text).config.global;
        assert_eq!(g.ipvs_backend, Some(IpvsBackendKind::Ipvsadm));
        assert_eq!(g.ipvs_reconcile_interval, Duration::from_millis(2500));

        let text = format!(
            "[global]\nipvs-backend = ioctl\nipvs-reconcile-interval = -1\n{}",
            service("svc", "")
        );
        let errors = errors(&text);
        let e = find(&errors, "ipvs-backend");
        assert_eq!((e.line, e.section.as_deref()), (Some(2), Some("global")));
        assert!(e.reason.contains("netlink or ipvsadm"), "{e}");
        assert_eq!(find(&errors, "ipvs-reconcile-interval").line, Some(3));
    }

    #[test]
    fn forwarding_method() {
        let config = load_ok(&service("svc", "")).config;
        assert_eq!(config.services["svc"].forwarding, ForwardingMethod::Dr);
        for (text, method) in [
            ("dr", ForwardingMethod::Dr),
            ("NAT", ForwardingMethod::Nat),
            ("tunnel", ForwardingMethod::Tunnel),
        ] {
            let svc = service("svc", &format!("forwarding-method = {text}\n"));
            let loaded = load_ok(&svc);
            assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
            assert_eq!(loaded.config.services["svc"].forwarding, method);
        }
        let errors = errors(&service("svc", "forwarding-method = fullnat\n"));
        let e = find(&errors, "forwarding-method");
        assert_eq!(e.line, Some(8));
        assert!(e.reason.contains("dr, nat or tunnel"), "{e}");
    }
}
