use super::keys::*;
use super::values::*;
use super::*;
use crate::config::pyliteral;
use crate::config::{
    DnsQueryOptions, ForwardingMethod, IdleConnectionOptions, IpvsBackendKind, MonitorConfig,
    Protocol, ProxyFetchOptions, RunCommandOptions, SourceOptions, SourceUrl, UdpOptions,
};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

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
            verify_tls: false,
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
    let pf = |extra: &str| service("svc", extra).replace("['IdleConnection']", "['ProxyFetch']");
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
    let global = "[global]\nbgp = yes\nbgp-local-asn = 64600\nbgp-peer-address = ['10.0.0.1']\n\
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
    // Floors: the floor itself is fine.
    assert_eq!(parse_interval("0.1"), Ok(Duration::from_millis(100)));
    assert_eq!(parse_timeout("0.1"), Ok(Duration::from_millis(100)));
    assert_eq!(parse_keepalive_time("1"), Ok(Duration::from_secs(1)));
    assert_eq!(parse_interval_or_off("0"), Ok(Duration::ZERO));
    assert_eq!(parse_interval_or_off("1"), Ok(Duration::from_secs(1)));
    assert!(parse_interval("0.099").is_err());
    assert_eq!(parse_listen_port("1"), Ok(1));
    assert_eq!(parse_service_port("65535"), Ok(65535));
    assert_eq!(parse_asn("1"), Ok(1));
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
    // The section, and its key given again.
    let lines: Vec<_> = loaded.warnings.iter().map(|w| w.line).collect();
    assert_eq!(lines, [Some(8), Some(9)], "{:#?}", loaded.warnings);
    assert_eq!(loaded.warnings[1].key.as_deref(), Some("port"));
}

#[test]
fn a_key_given_twice_is_a_warning_and_the_later_value_wins() {
    let text = service(
        "svc",
        "scheduler = sh
",
    );
    let loaded = load_ok(&text);
    assert_eq!(loaded.config.services["svc"].scheduler, "sh");
    assert_eq!(loaded.warnings.len(), 1, "{:#?}", loaded.warnings);
    let w = &loaded.warnings[0];
    assert_eq!((w.line, w.key.as_deref()), (Some(8), Some("scheduler")));
    assert_eq!(
        w.reason,
        "key given twice (also at line 5); this later value is used"
    );
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
fn ipvs_command_timeout() {
    let g = load_ok(&service("svc", "")).config.global;
    assert_eq!(g.ipvs_command_timeout, Duration::from_secs(10));
    let text = format!(
        "[global]\nipvs-command-timeout = 2.5\n{}",
        service("svc", "")
    );
    let g = load_ok(&text).config.global;
    assert_eq!(g.ipvs_command_timeout, Duration::from_millis(2500));
    for bad in ["0", "-1", "x"] {
        let text = format!(
            "[global]\nipvs-command-timeout = {bad}\n{}",
            service("svc", "")
        );
        let errors = errors(&text);
        assert_eq!(find(&errors, "ipvs-command-timeout").line, Some(2), "{bad}");
    }
}

/// Issue 11 item 11: `ipvs-reconcile-interval = 10000000000000000000` once
/// panicked the IPVS writer (`Instant + Duration` overflow). Every interval
/// and timeout key now refuses more than a day, naming the key.
#[test]
fn absurd_durations_are_refused_naming_the_key() {
    let huge = "10000000000000000000";
    let text = format!(
        "[global]\nipvs-reconcile-interval = {huge}\nipvs-command-timeout = 86401\n{}",
        service(
            "svc",
            &format!("config-poll-interval = {huge}\nconfig-timeout = 1e300\n")
        )
    );
    let errors = errors(&text);
    for key in [
        "ipvs-reconcile-interval",
        "ipvs-command-timeout",
        "config-poll-interval",
        "config-timeout",
    ] {
        let e = find(&errors, key);
        assert!(e.reason.contains("too long (at most 86400"), "{e}");
        assert!(e.to_string().contains(key), "{e}");
    }
    // A day is still fine.
    let text = format!(
        "[global]\nipvs-reconcile-interval = 86400\n{}",
        service("svc", "")
    );
    let g = load_ok(&text).config.global;
    assert_eq!(g.ipvs_reconcile_interval, Duration::from_secs(86_400));
    assert!(matches!(
        parse_duration("1e400"),
        Err(ValueError::Not { .. })
    ));
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

/// PyBal's `tunneling` (T351069) is the forwarding method `tunnel`, in
/// every boolean spelling PyBal accepts; contradicting `forwarding-method`
/// is an error naming both keys, and nothing else of the service is lost.
#[test]
fn tunneling_is_the_tunnel_forwarding_method() {
    for (text, method) in [
        ("true", ForwardingMethod::Tunnel),
        ("True", ForwardingMethod::Tunnel),
        ("yes", ForwardingMethod::Tunnel),
        ("on", ForwardingMethod::Tunnel),
        ("1", ForwardingMethod::Tunnel),
        ("t", ForwardingMethod::Tunnel),
        ("false", ForwardingMethod::Dr),
        ("False", ForwardingMethod::Dr),
        ("no", ForwardingMethod::Dr),
        ("off", ForwardingMethod::Dr),
        ("0", ForwardingMethod::Dr),
    ] {
        let loaded = load_ok(&service("svc", &format!("tunneling = {text}\n")));
        assert!(loaded.warnings.is_empty(), "{text}: {:#?}", loaded.warnings);
        assert_eq!(loaded.config.services["svc"].forwarding, method, "{text}");
    }
    // Agreeing with forwarding-method is fine.
    for (both, method) in [
        (
            "tunneling = true\nforwarding-method = tunnel\n",
            ForwardingMethod::Tunnel,
        ),
        (
            "tunneling = false\nforwarding-method = nat\n",
            ForwardingMethod::Nat,
        ),
        (
            "tunneling = false\nforwarding-method = dr\n",
            ForwardingMethod::Dr,
        ),
    ] {
        let loaded = load_ok(&service("svc", both));
        assert_eq!(loaded.config.services["svc"].forwarding, method, "{both}");
    }
    // Contradictions: an error at tunneling's line naming both keys.
    for (both, line) in [
        ("tunneling = true\nforwarding-method = dr\n", 8),
        ("forwarding-method = nat\ntunneling = yes\n", 9),
        ("tunneling = false\nforwarding-method = tunnel\n", 8),
    ] {
        let errors = errors(&service("svc", both));
        assert_eq!(errors.len(), 1, "{both}: {errors:#?}");
        let e = find(&errors, "tunneling");
        assert_eq!(e.line, Some(line), "{both}");
        assert!(
            e.reason.contains("contradicts forwarding-method"),
            "{both}: {e}"
        );
    }
    let e = errors(&service(
        "svc",
        "tunneling = true\nforwarding-method = dr\n",
    ));
    assert_eq!(
        e[0].to_string(),
        "/etc/pybal/pybal.conf:8: [svc] tunneling: tunneling = true contradicts \
         forwarding-method = dr (line 9); tunneling = true means forwarding-method = tunnel: \
         keep one of the two keys"
    );
    // A bad value is one error, not also a contradiction.
    let errors = errors(&service(
        "svc",
        "tunneling = maybe\nforwarding-method = dr\n",
    ));
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(find(&errors, "tunneling").reason.contains("not a boolean"));
}

/// `advertised_instrumentation_ips` takes both list syntaxes of the
/// template; announced IPs need their family's next hop and the global MED
/// must agree with a service announcing the same IP.
#[test]
fn advertised_instrumentation_ips() {
    let g = load_ok("[global]\nadvertised_instrumentation_ips = [\"10.2.2.21\", \"10.2.2.22\"]\n")
        .config
        .global;
    assert_eq!(
        g.advertised_instrumentation_ips,
        vec![
            "10.2.2.21".parse::<IpAddr>().unwrap(),
            "10.2.2.22".parse().unwrap()
        ]
    );
    let g = load_ok("[global]\nadvertised_instrumentation_ips = [ '2001:db8::21' ]\n")
        .config
        .global;
    assert_eq!(g.advertised_instrumentation_ips.len(), 1);
    assert!(load_ok("[global]\n")
        .config
        .global
        .advertised_instrumentation_ips
        .is_empty());
    let e = errors("[global]\nadvertised_instrumentation_ips = ['10.2.2.300']\n");
    assert_eq!(find(&e, "advertised_instrumentation_ips").line, Some(2));

    let global = "[global]\nbgp = yes\nbgp-local-asn = 64600\nbgp-peer-address = 10.0.0.1\n\
                  bgp-nexthop-ipv4 = 10.0.0.2\nbgp-med = 100\n";
    let off = service("svc", "bgp = no\n");
    let v6 = "advertised_instrumentation_ips = ['2001:db8::21']\n";
    let e = errors_of(&format!("{global}{v6}{off}"));
    let e = find(&e, "bgp-nexthop-ipv6");
    assert!(
        e.reason
            .contains("advertised_instrumentation_ips announces 2001:db8::21"),
        "{e}"
    );
    // The same IP as a service with another MED: they must agree.
    let same = "advertised_instrumentation_ips = ['10.2.2.1']\n";
    let e = errors_of(&format!(
        "{global}{same}{}",
        service("svc", "bgp-med = 5\n")
    ));
    let e = find(&e, "advertised_instrumentation_ips");
    assert_eq!(e.line, Some(7));
    assert!(
        e.reason.contains("service [svc] announces it with MED 5"),
        "{e}"
    );
    assert!(load(&format!("{global}{same}{}", service("svc", ""))).is_ok());
}

/// The template's `dry-run` key: known (no unknown-key warning), does
/// nothing, and `yes` says so.
#[test]
fn dry_run_key_is_accepted_and_does_nothing() {
    let loaded = load_ok("[global]\ndry-run = no\n");
    assert!(loaded.warnings.is_empty(), "{:#?}", loaded.warnings);
    let loaded = load_ok("[global]\ndry-run = yes\n");
    assert_eq!(loaded.warnings.len(), 1);
    assert!(
        loaded.warnings[0].reason.contains("has no effect"),
        "{}",
        loaded.warnings[0]
    );
    assert_eq!(loaded.config, load_ok("[global]\n").config);
    assert!(!errors("[global]\ndry-run = perhaps\n").is_empty());
}

/// Every key of `table` as a config names it, after checking that its
/// default (when it has one) parses to `T`'s default and that it has a doc
/// line.
fn table_keys<T: Default + PartialEq + std::fmt::Debug>(
    table: &[Key<T>],
    prefix: &str,
) -> Vec<String> {
    let mut names = Vec::new();
    for key in table {
        assert!(!key.doc.is_empty(), "{} has no doc line", key.name);
        if let Absent::Default(text) = key.absent {
            let mut value = T::default();
            assert_eq!((key.read)(&mut value, text), Ok(()), "{}", key.name);
            assert_eq!(value, T::default(), "default of {}", key.name);
        }
        names.push(match prefix {
            "" => key.name.to_string(),
            _ => format!("{prefix}.{}", key.name),
        });
    }
    names
}

/// Every key of every table, checked by [`table_keys`].
fn every_key() -> Vec<String> {
    [
        table_keys(GLOBAL_KEYS, ""),
        table_keys(SERVICE_KEYS, ""),
        table_keys(IDLE_CONNECTION_OPTIONS, "idleconnection"),
        table_keys(PROXY_FETCH_OPTIONS, "proxyfetch"),
        table_keys(RUN_COMMAND_OPTIONS, "runcommand"),
        table_keys(DNS_QUERY_OPTIONS, "dnsquery"),
        table_keys(UDP_OPTIONS, "udp"),
    ]
    .concat()
}

#[test]
fn key_tables_defaults_parse_to_the_typed_defaults() {
    let keys = every_key();
    assert_eq!(keys.len(), 20 + 14 + 6 + 7 + 5 + 4 + 2);
    // No key twice in one table (bgp and bgp-med are global and per service).
    let mut unique = keys.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), keys.len() - 2);
}

/// The man page (`packaging/rsbal.8`) documents every key of the tables and
/// every scheduler.
#[test]
fn man_page_documents_every_key_of_the_tables_and_every_scheduler() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/rsbal.8");
    let mut man = std::fs::read_to_string(path).unwrap().replace("\\-", "-");
    for font in ["\\fB", "\\fI", "\\fR", "\\fP"] {
        man = man.replace(font, " ");
    }
    let words: std::collections::HashSet<&str> = man
        .split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .map(|word| word.trim_end_matches('.'))
        .collect();
    let schedulers = crate::config::SCHEDULERS.iter().map(|s| s.to_string());
    let missing: Vec<String> = every_key()
        .into_iter()
        .chain(schedulers)
        .filter(|key| !words.contains(key.as_str()))
        .collect();
    assert!(missing.is_empty(), "{path} does not document: {missing:?}");
}

/// Each kind of [`ValueError`] with the text users see.
#[test]
fn value_errors_are_typed_and_keep_their_texts() {
    fn text<T: std::fmt::Debug>(parsed: Result<T, ValueError>) -> String {
        parsed.unwrap_err().to_string()
    }
    let cases = [
        (
            text(parse_port("80a")),
            r#""80a" is not a port number (0-65535)"#,
        ),
        (
            text(parse_boolean("maybe")),
            r#""maybe" is not a boolean (yes/no, true/false, on/off, 1/0)"#,
        ),
        (
            text(parse_boolean("'a")),
            "unterminated string at column 1",
        ),
        (text(parse_u32("[1]")), r#""[1]" is not a whole number (0-4294967295)"#),
        (text(parse_boolean("'a' 'b' ,")), "expected one value, found a tuple"),
        (
            text(parse_nonzero_port("0")),
            "port 0 cannot be connected to (1-65535)",
        ),
        (
            text(parse_listen_port("0")),
            "port 0 would listen on a random port (1-65535)",
        ),
        (
            text(parse_service_port("'0'")),
            "port 0 is not a service port (1-65535)",
        ),
        (text(parse_asn("0")), "AS number 0 is reserved (1-4294967295)"),
        (
            text(parse_interval("0.0000001")),
            r#""0.0000001" is too small: this key's floor is 0.1 s"#,
        ),
        (
            text(parse_timeout("0.05")),
            r#""0.05" is too small: this key's floor is 0.1 s"#,
        ),
        (
            text(parse_keepalive_time("0.5")),
            r#""0.5" is too small: this key's floor is 1 s"#,
        ),
        (
            text(parse_interval_or_off("0.001")),
            r#""0.001" is too small: this key's floor is 1 s"#,
        ),
        (
            text(parse_restart_time("4096")),
            r#""4096" is not a restart time in seconds (1-4095, 0 = off)"#,
        ),
        (text(parse_http_status("99")), r#""99" is not an HTTP status (100-599)"#),
        (
            text(parse_duration("0")),
            r#""0" is not a duration (seconds, a number greater than 0)"#,
        ),
        (
            text(parse_interval_or_off("-1")),
            r#""-1" is not a number of seconds (0 = off)"#,
        ),
        (
            text(parse_ipvs_backend("ioctl")),
            r#""ioctl" is not an IPVS backend (netlink or ipvsadm)"#,
        ),
        (
            text(parse_threshold("2")),
            r#""2" is not a number between 0.0 and 1.0"#,
        ),
        (
            text(parse_scheduler("fast")),
            r#""fast" is not an IPVS scheduler (one of: rr wrr lc wlc lblc lblcr dh sh sed nq mh fo ovf twos)"#,
        ),
        (text(parse_path("''")), "empty path"),
        (
            text(parse_as_path("64600 x")),
            r#""x" is not an AS number (0-4294967295)"#,
        ),
        (text(parse_as_path("''")), "empty AS path"),
        (
            text(parse_str_list("[1, 2")),
            "not a Python list of strings like ['a', 'b']: unclosed '[' at column 1",
        ),
        (
            text(parse_str_list("[1]")),
            "expected a list of strings, but it contains an int",
        ),
        (
            text(parse_ip_list("['nope']")),
            r#""nope" is not an IPv4 or IPv6 address"#,
        ),
        (text(parse_urls("[]")), "at least one URL is needed"),
        (
            text(parse_urls("ftp://x")),
            r#""ftp://x" is not an http:// or https:// URL"#,
        ),
        (text(parse_urls("http://:80/")), r#""http://:80/" has no host"#),
        (
            text(parse_urls("'http://a b/'")),
            r#""http://a b/" contains whitespace"#,
        ),
        (text(parse_command("''")), "empty command"),
        (
            text(parse_command(r"'a\0'")),
            r#""a\0" contains a NUL character"#,
        ),
        (
            text(parse_arguments(r"[ 'a\0' ]")),
            r#"argument "a\0" contains a NUL character"#,
        ),
        (
            text(parse_arguments("[ server.foo ]")),
            "unknown identifier server.foo (known: server.host, server.ip, server.port, server.weight)",
        ),
        (text(parse_hostnames("[]")), "at least one host name is needed"),
        (
            text(parse_hostnames("'a..b'")),
            r#""a..b" is not a DNS name: each dot-separated label must have 1 to 63 characters"#,
        ),
        (
            text(parse_source("ftp://x")),
            r#""ftp://x" is not a server list URL (file:///path, http://…, https://…, etcd://host[:port]/key or etcd+http://host[:port]/key)"#,
        ),
        (
            text(parse_source("file:///")),
            r#""file:///" names no file; use file:///etc/pybal/pools/service"#,
        ),
        (
            text(parse_source("etcd://host")),
            r#""etcd://host" has no key: use etcd://host[:port]/key"#,
        ),
        (
            text(parse_source("etcd://h:x/k")),
            r#""etcd://h:x/k": "h:x" is not host or host:port"#,
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got, want);
    }
    assert_eq!(
        parse_port("x"),
        Err(ValueError::Not {
            value: "x".into(),
            what: "a port number (0-65535)"
        })
    );
    assert!(matches!(
        parse_str_list("[1, 2"),
        Err(ValueError::NotAStrList(pyliteral::Error::Syntax(..)))
    ));
}

#[test]
fn programs_that_cannot_be_run_are_warnings_at_their_key() {
    let text = format!(
        "[global]\nipvs-backend = ipvsadm\nipvsadm = /x/ipvsadm\n\n{}",
        service("svc", "runcommand.command = /x/check\n")
            .replace("['IdleConnection']", "['RunCommand']")
    );
    let probe = |p: &Path| -> Option<String> {
        p.starts_with("/x")
            .then(|| format!("{} does not exist", p.display()))
    };
    let loaded = from_str_probing(Path::new("/t.conf"), &text, &probe).unwrap();
    let found: Vec<(Option<usize>, Option<&str>, &str)> = loaded
        .warnings
        .iter()
        .map(|w| (w.line, w.key.as_deref(), w.reason.as_str()))
        .collect();
    assert_eq!(
        found,
        [
            (Some(3), Some("ipvsadm"), "/x/ipvsadm does not exist"),
            (
                Some(12),
                Some("runcommand.command"),
                "/x/check does not exist; every check of this service will fail"
            ),
        ]
    );
    // The netlink backend (or the choice left to rsbal) does not run ipvsadm.
    let netlink = text.replace("ipvs-backend = ipvsadm", "ipvs-backend = netlink");
    let loaded = from_str_probing(Path::new("/t.conf"), &netlink, &probe).unwrap();
    assert_eq!(loaded.warnings.len(), 1, "{:#?}", loaded.warnings);
}
