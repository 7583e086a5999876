//! The typed configuration: what `pybal.conf` means once parsed and validated.
//!
//! `ini` reads the file (with line numbers), `pyliteral` parses the Python
//! literal values PyBal used to `eval()`, `validate` turns both into the types
//! below through its key tables (`validate/keys.rs`: every key, its parser,
//! default and doc line) and collects every problem as a [`ConfigError`]
//! naming file, line, section and key. `diff` compares two configs for
//! SIGHUP reloads.

pub(crate) mod diff;
pub(crate) mod ini;
pub(crate) mod pyliteral;
pub(crate) mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default path of the main configuration file.
pub(crate) const DEFAULT_CONFIG_PATH: &str = "/etc/rsbal/rsbal.conf";

/// A whole, valid configuration.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    /// The file it was read from.
    pub(crate) path: PathBuf,
    pub(crate) global: GlobalConfig,
    /// Services by section name.
    pub(crate) services: BTreeMap<String, ServiceConfig>,
}

/// The `[global]` section.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GlobalConfig {
    pub(crate) bgp: bool,
    pub(crate) bgp_local_asn: Option<u32>,
    pub(crate) bgp_peer_addresses: Vec<IpAddr>,
    /// AS path to announce; defaults to `[bgp_local_asn]`.
    pub(crate) bgp_as_path: Vec<u32>,
    pub(crate) bgp_med: u32,
    pub(crate) bgp_nexthop_ipv4: Option<Ipv4Addr>,
    pub(crate) bgp_nexthop_ipv6: Option<Ipv6Addr>,
    pub(crate) bgp_local_ips: Vec<IpAddr>,
    pub(crate) bgp_local_port: u16,
    /// **Beyond**: port rsbal connects to on each peer (`bgp-peer-port`, default 179).
    pub(crate) bgp_peer_port: u16,
    /// **Beyond**: graceful restart (RFC 4724) restart time in seconds
    /// (`bgp-graceful-restart`); `None` (the default, `0`) = off, as PyBal.
    pub(crate) bgp_graceful_restart: Option<u16>,
    pub(crate) instrumentation: bool,
    pub(crate) instrumentation_port: u16,
    pub(crate) instrumentation_ips: Vec<IpAddr>,
    /// `advertised_instrumentation_ips` [[]] (PyBal, T334703): addresses
    /// that follow the active balancer. Served like `instrumentation_ips`
    /// (bound even before the address is configured) and, while `bgp` is
    /// on, announced like a service IP with the global MED and AS path.
    pub(crate) advertised_instrumentation_ips: Vec<IpAddr>,
    /// Path of the `ipvsadm` binary (default `/sbin/ipvsadm`).
    pub(crate) ipvsadm: PathBuf,
    /// `ipvs-backend`: how IPVS is changed; `None` = netlink when the
    /// kernel's IPVS generic netlink family resolves, else ipvsadm.
    pub(crate) ipvs_backend: Option<IpvsBackendKind>,
    /// `ipvs-reconcile-interval` [60 s]: how often the kernel's table is
    /// re-read and drift repaired; zero = never.
    pub(crate) ipvs_reconcile_interval: Duration,
    /// `ipvs-command-timeout` [10 s]: how long one `ipvsadm` run or one
    /// netlink answer may take before it counts as failed (and the
    /// `ipvsadm` child's process group is killed).
    pub(crate) ipvs_command_timeout: Duration,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            bgp: false,
            bgp_local_asn: None,
            bgp_peer_addresses: Vec::new(),
            bgp_as_path: Vec::new(),
            bgp_med: 0,
            bgp_nexthop_ipv4: None,
            bgp_nexthop_ipv6: None,
            bgp_local_ips: Vec::new(),
            bgp_local_port: 179,
            bgp_peer_port: 179,
            bgp_graceful_restart: None,
            instrumentation: false,
            instrumentation_port: 9090,
            instrumentation_ips: vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
            advertised_instrumentation_ips: Vec::new(),
            ipvsadm: PathBuf::from("/sbin/ipvsadm"),
            ipvs_backend: None,
            ipvs_reconcile_interval: Duration::from_secs(60),
            ipvs_command_timeout: Duration::from_secs(10),
        }
    }
}

/// Transport protocol of a virtual service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// `tcp` / `udp`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the IpvsWriter talks to the kernel (`[global] ipvs-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IpvsBackendKind {
    /// Generic netlink, from rsbal itself.
    Netlink,
    /// The `ipvsadm` binary (`-R` batches, `-Sn` to read).
    Ipvsadm,
}

/// How IPVS forwards packets to a real server (`forwarding-method`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ForwardingMethod {
    /// Direct routing (`-g`, gatewaying), the default.
    #[default]
    Dr,
    /// Masquerading / NAT (`-m`).
    Nat,
    /// IP-in-IP tunnelling (`-i`).
    Tunnel,
}

impl ForwardingMethod {
    /// `dr` / `nat` / `tunnel`, as in the config.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ForwardingMethod::Dr => "dr",
            ForwardingMethod::Nat => "nat",
            ForwardingMethod::Tunnel => "tunnel",
        }
    }
}

impl fmt::Display for ForwardingMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// IPVS schedulers rsbal accepts (PyBal's plus newer kernel ones).
pub(crate) const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "mh", "fo", "ovf", "twos",
];

/// Where a service's server list comes from (`config = …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SourceUrl {
    /// `file:///path`
    File(PathBuf),
    /// `http://…` or `https://…`, kept whole.
    Http(String),
    /// `etcd://host[:port]/key` (HTTPS, as PyBal) or `etcd+http://…` (plain).
    Etcd {
        host: String,
        port: u16,
        key: String,
        /// False for `etcd+http://`.
        tls: bool,
    },
}

impl SourceUrl {
    /// True when the list is in the JSON format (name ends in `.json`).
    pub(crate) fn is_json(&self) -> bool {
        match self {
            SourceUrl::File(p) => p.to_string_lossy().ends_with(".json"),
            SourceUrl::Http(u) => u.split(['?', '#']).next().unwrap_or("").ends_with(".json"),
            SourceUrl::Etcd { .. } => false,
        }
    }
}

impl fmt::Display for SourceUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceUrl::File(p) => write!(f, "file://{}", p.display()),
            SourceUrl::Http(u) => f.write_str(u),
            SourceUrl::Etcd {
                host,
                port,
                key,
                tls,
            } => {
                let scheme = if *tls { "etcd" } else { "etcd+http" };
                if host.contains(':') {
                    write!(f, "{scheme}://[{host}]:{port}{key}")
                } else {
                    write!(f, "{scheme}://{host}:{port}{key}")
                }
            }
        }
    }
}

/// How a service's server list is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SourceOptions {
    /// `config-poll-interval` [1 s]: how often `file://` and `http(s)://`
    /// lists are re-read (etcd is watched, not polled).
    pub(crate) poll_interval: Duration,
    /// `config-timeout` [5 s]: limit of one HTTP request (a whole `http(s)://`
    /// fetch, an etcd read; an etcd watch waits longer).
    pub(crate) timeout: Duration,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            poll_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// One LVS service section.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceConfig {
    /// Section name.
    pub(crate) name: String,
    pub(crate) protocol: Protocol,
    pub(crate) ip: IpAddr,
    pub(crate) port: u16,
    /// One of [`SCHEDULERS`].
    pub(crate) scheduler: String,
    pub(crate) source: SourceUrl,
    /// How the source is polled (`config-poll-interval`, `config-timeout`).
    pub(crate) source_options: SourceOptions,
    /// One-packet scheduling (UDP only).
    pub(crate) ops: bool,
    /// `forwarding-method` [dr]: how IPVS reaches every real server;
    /// PyBal's `tunneling = true` means `tunnel`.
    pub(crate) forwarding: ForwardingMethod,
    pub(crate) depool_threshold: f64,
    /// Monitors in the order the `monitors` list names them.
    pub(crate) monitors: Vec<MonitorConfig>,
    /// Announce this IP over BGP when BGP is on globally.
    pub(crate) bgp: bool,
    pub(crate) bgp_med: Option<u32>,
}

/// A monitor with its options, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MonitorConfig {
    IdleConnection(IdleConnectionOptions),
    ProxyFetch(ProxyFetchOptions),
    RunCommand(RunCommandOptions),
    DnsQuery(DnsQueryOptions),
    Udp(UdpOptions),
}

impl MonitorConfig {
    /// The monitor's name as PyBal spells it (`IdleConnection`, `ProxyFetch`).
    pub(crate) fn name(&self) -> &'static str {
        match self {
            MonitorConfig::IdleConnection(_) => "IdleConnection",
            MonitorConfig::ProxyFetch(_) => "ProxyFetch",
            MonitorConfig::RunCommand(_) => "RunCommand",
            MonitorConfig::DnsQuery(_) => "DNSQuery",
            MonitorConfig::Udp(_) => "UDP",
        }
    }
}

/// `idleconnection.*` options.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct IdleConnectionOptions {
    /// `max-delay` [300 s]: cap of the reconnect backoff.
    pub(crate) max_delay: Duration,
    /// `timeout-clean-reconnect` [3 s].
    pub(crate) timeout_clean_reconnect: Duration,
    /// `keepalive` [yes].
    pub(crate) keepalive: bool,
    /// `keepalive-idle` [10 s].
    pub(crate) keepalive_idle: Duration,
    /// `keepalive-interval` [30 s].
    pub(crate) keepalive_interval: Duration,
    /// `keepalive-retries` [3].
    pub(crate) keepalive_retries: u32,
}

impl Default for IdleConnectionOptions {
    fn default() -> Self {
        IdleConnectionOptions {
            max_delay: Duration::from_secs(300),
            timeout_clean_reconnect: Duration::from_secs(3),
            keepalive: true,
            keepalive_idle: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_retries: 3,
        }
    }
}

/// `proxyfetch.*` options.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProxyFetchOptions {
    /// `interval` [10 s].
    pub(crate) interval: Duration,
    /// `timeout` [5 s], for the whole request.
    pub(crate) timeout: Duration,
    /// `url`: one or more `http://` / `https://` URLs (at least one).
    pub(crate) urls: Vec<String>,
    /// `check_all` [no]: fetch every URL instead of one at random.
    pub(crate) check_all: bool,
    /// `max_failures` [0]: with `check_all`, failures tolerated.
    pub(crate) max_failures: u32,
    /// `http_status` [200]: the status that means up.
    pub(crate) http_status: u16,
    /// `verify-tls` [no]: verify an `https://` server's certificate (by
    /// default nothing is verified, as PyBal).
    pub(crate) verify_tls: bool,
}

impl Default for ProxyFetchOptions {
    /// The defaults of the optional options; `url` is required.
    fn default() -> Self {
        ProxyFetchOptions {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            urls: Vec::new(),
            check_all: false,
            max_failures: 0,
            http_status: 200,
            verify_tls: false,
        }
    }
}

/// `runcommand.*` options.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RunCommandOptions {
    /// `interval` [60 s].
    pub(crate) interval: Duration,
    /// `timeout` [20 s]: the process group is killed after this long.
    pub(crate) timeout: Duration,
    /// `command` (required): the program to run, without a shell.
    pub(crate) command: String,
    /// `arguments` [none]: may contain the identifiers `server.host`,
    /// `server.ip`, `server.port` and `server.weight`, replaced per server.
    pub(crate) arguments: Vec<String>,
    /// `log-output` [yes]: log what the command prints.
    pub(crate) log_output: bool,
}

impl Default for RunCommandOptions {
    /// The defaults of the optional options; `command` is required.
    fn default() -> Self {
        RunCommandOptions {
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(20),
            command: String::new(),
            arguments: Vec::new(),
            log_output: true,
        }
    }
}

/// `dnsquery.*` options.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DnsQueryOptions {
    /// `interval` [10 s].
    pub(crate) interval: Duration,
    /// `timeout` [5 s] of one query.
    pub(crate) timeout: Duration,
    /// `hostnames` (required, at least one): one is asked per check.
    pub(crate) hostnames: Vec<String>,
    /// `fail-on-nxdomain` [no]: an NXDOMAIN answer means down.
    pub(crate) fail_on_nxdomain: bool,
}

impl Default for DnsQueryOptions {
    /// The defaults of the optional options; `hostnames` is required.
    fn default() -> Self {
        DnsQueryOptions {
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            hostnames: Vec::new(),
            fail_on_nxdomain: false,
        }
    }
}

/// `udp.*` options.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct UdpOptions {
    /// `interval` [10 s].
    pub(crate) interval: Duration,
    /// `icmp-timeout` [20 s]: up again once no ICMP error was seen this long.
    pub(crate) icmp_timeout: Duration,
}

impl Default for UdpOptions {
    fn default() -> Self {
        UdpOptions {
            interval: Duration::from_secs(10),
            icmp_timeout: Duration::from_secs(20),
        }
    }
}

/// A problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    pub(crate) file: PathBuf,
    /// 1-based line, when known.
    pub(crate) line: Option<usize>,
    pub(crate) section: Option<String>,
    pub(crate) key: Option<String>,
    /// What is wrong: the text of a typed error (`validate`'s `ValueError`,
    /// a [`pyliteral::Error`]) or of a check. Nothing decides on it, so
    /// it stays text.
    pub(crate) reason: String,
}

impl fmt::Display for ConfigError {
    /// `file:line: [section] key: reason`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(":")?;
        if let Some(section) = &self.section {
            write!(f, " [{section}]")?;
        }
        if let Some(key) = &self.key {
            write!(f, " {key}:")?;
        }
        write!(f, " {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// Outcome of loading a config: the config, plus warnings that do not stop it
/// (unknown keys, a service with no monitors).
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub(crate) config: Config,
    pub(crate) warnings: Vec<ConfigError>,
}

/// Reads and validates the main config file. On any error returns every
/// error found (not only the first).
pub(crate) fn load(path: &Path) -> Result<Loaded, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            file: path.to_path_buf(),
            line: None,
            section: None,
            key: None,
            reason: format!("cannot read file: {e}"),
        }]
    })?;
    let probe = |program: &Path| {
        validate::programs::filesystem(program, crate::monitor::run_command::COMMAND_PATH)
    };
    validate::from_str_probing(path, &text, &probe)
}
