//! Instrumentation end to end: the real rsbal binary, real backends on
//! loopback (127.30.0.0/16 – 127.39.0.0/16), a fake ipvsadm; `/alerts`,
//! `/metrics` (parsed by the Python Prometheus client), the status page (and
//! a screenshot of it by headless Chromium), `rsbal status`, and clients that
//! misbehave.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a failed set-up panics; helpers are shared by several crates

mod common;

use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PORT: u16 = 8080;
const HTTP_PORT: u16 = 9090;
const T: Duration = Duration::from_secs(20);

/// A daemon under test: its directory, fake ipvsadm, config and backends.
struct Site {
    dir: tempfile::TempDir,
    ipvsadm: FakeIpvsadm,
    /// Network byte of this test's loopback addresses (127.<net>.0.x).
    net: u8,
    backends: Vec<Backend>,
}

/// How a service section is written.
struct Svc<'a> {
    name: &'a str,
    vip: &'a str,
    list: &'a str,
    threshold: f64,
    /// `[]`, `['IdleConnection']`, `['IdleConnection', 'ProxyFetch']`.
    monitors: &'a str,
}

impl Site {
    /// Backends on 127.<net>.0.<h> for every `h` of `hosts`.
    fn new(net: u8, hosts: &[u8]) -> Site {
        let dir = tempfile::tempdir().unwrap();
        let ipvsadm = FakeIpvsadm::new(dir.path());
        let backends = hosts
            .iter()
            .map(|h| Backend::start(SocketAddr::new(lo(net, *h), PORT)))
            .collect();
        Site {
            dir,
            ipvsadm,
            net,
            backends,
        }
    }

    fn http(&self) -> SocketAddr {
        SocketAddr::new(lo(self.net, 1), HTTP_PORT)
    }

    fn url(&self) -> String {
        format!("http://{}", self.http())
    }

    fn host(&self, h: u8) -> String {
        lo(self.net, h).to_string()
    }

    /// Writes a server list `name`: (host byte, weight, enabled).
    fn list(&self, name: &str, servers: &[(u8, u32, bool)]) {
        let text: String = servers
            .iter()
            .map(|(h, w, e)| {
                format!(
                    "{{ 'host': '{}', 'weight': {w}, 'enabled': {} }}\n",
                    self.host(*h),
                    if *e { "True" } else { "False" }
                )
            })
            .collect();
        write_atomic(self.dir.path(), name, &text);
    }

    /// Writes the main config; returns its path.
    fn config(&self, services: &[Svc]) -> PathBuf {
        let mut text = format!(
            "[global]\nipvsadm = {}\nipvs-backend = ipvsadm\nipvs-reconcile-interval = 0\ninstrumentation = yes\ninstrumentation_port = {HTTP_PORT}\n\
             instrumentation_ips = ['{}']\n\n",
            self.ipvsadm.script.display(),
            lo(self.net, 1)
        );
        for s in services {
            text.push_str(&format!(
                "[{}]\nprotocol = tcp\nip = {}\nport = {PORT}\nscheduler = wrr\n\
                 config = file://{}\ndepool-threshold = {}\nmonitors = {}\n\
                 proxyfetch.url = [ 'http://www.example.org/health' ]\n\
                 proxyfetch.interval = 1\nproxyfetch.timeout = 1\n\
                 idleconnection.max-delay = 1\nidleconnection.timeout-clean-reconnect = 1\n\n",
                s.name,
                s.vip,
                self.dir.path().join(s.list).display(),
                s.threshold,
                s.monitors
            ));
        }
        let path = self.dir.path().join("rsbal.conf");
        let tmp = self.dir.path().join(".rsbal.conf.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        path
    }

    fn backend(&self, h: u8) -> &Backend {
        let addr = SocketAddr::new(lo(self.net, h), PORT);
        self.backends.iter().find(|b| b.addr == addr).unwrap()
    }
}

/// GET with or without `Accept: application/json`; the body, if 200.
fn get_ok(addr: SocketAddr, path: &str, json: bool) -> Option<String> {
    match http_get(addr, path, json) {
        Some((200, body)) => Some(body),
        _ => None,
    }
}

fn get_json(addr: SocketAddr, path: &str) -> Option<Value> {
    serde_json::from_str(&get_ok(addr, path, true)?).ok()
}

/// `(enabled, up, pooled)` of every server of `pool`.
fn pool_state(addr: SocketAddr, pool: &str) -> BTreeMap<String, (bool, bool, bool)> {
    let Some(Value::Object(map)) = get_json(addr, &format!("/pools/{pool}")) else {
        return BTreeMap::new();
    };
    map.into_iter()
        .map(|(host, s)| {
            let b = |k: &str| s[k].as_bool().unwrap_or(false);
            (host, (b("enabled"), b("up"), b("pooled")))
        })
        .collect()
}

/// Waits until `cond` holds for the state of `pool`.
fn wait_pool(
    addr: SocketAddr,
    pool: &str,
    what: &str,
    mut cond: impl FnMut(&BTreeMap<String, (bool, bool, bool)>) -> bool,
) {
    let mut last = BTreeMap::new();
    let ok = wait_until(T, || {
        last = pool_state(addr, pool);
        cond(&last)
    });
    assert!(ok, "{pool}: waited for {what}; state is {last:?}");
}

fn all_up_and_pooled(n: usize) -> impl FnMut(&BTreeMap<String, (bool, bool, bool)>) -> bool {
    move |s| s.len() == n && s.values().all(|(_, up, pooled)| *up && *pooled)
}

/// Waits until `/alerts` (text) satisfies `cond`; returns the text.
fn wait_alert(addr: SocketAddr, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    let ok = wait_until(T, || {
        last = get_ok(addr, "/alerts", false).unwrap_or_default();
        cond(&last)
    });
    assert!(ok, "waited for /alerts {what}; last answer {last:?}");
    last
}

/// Four healthy backends 127.<net>.0.2–5 in the list `web`.
fn four_servers(net: u8) -> Site {
    let site = Site::new(net, &[2, 3, 4, 5]);
    site.list(
        "web",
        &[(2, 10, true), (3, 10, true), (4, 10, true), (5, 10, true)],
    );
    site
}

/// Service `web` on `vip` over the list `web`, checked by IdleConnection.
fn web_svc(vip: &str, threshold: f64) -> Svc<'_> {
    Svc {
        name: "web",
        vip,
        list: "web",
        threshold,
        monitors: "['IdleConnection']",
    }
}

// ---------------------------------------------------------------------------

#[test]
fn alerts_follow_real_backends() {
    let site = four_servers(30);
    let web = |threshold| web_svc("192.0.2.30", threshold);
    let conf = site.config(&[web(0.5)]);
    let rsbal = Rsbal::start(&conf, &[]);
    let http = site.http();

    // OK.
    wait_pool(http, "web", "every server up", all_up_and_pooled(4));
    wait_alert(http, "OK", |t| t == "OK - All pools are healthy");
    assert_eq!(
        get_json(http, "/alerts").unwrap(),
        serde_json::json!({"status": "ok", "msg": "All pools are healthy"})
    );

    // CRITICAL: three of four down; two are depooled, the threshold keeps
    // the third pooled.
    for h in [2, 3, 4] {
        site.backend(h).set_mode(Mode::Down);
    }
    let text = wait_alert(http, "CRITICAL", |t| t.starts_with("CRITICAL"));
    let down: Vec<String> = [2, 3, 4].iter().map(|h| site.host(*h)).collect();
    let kept = down
        .iter()
        .find(|h| text == format!("CRITICAL - web: Servers {h} are marked down but pooled"))
        .unwrap_or_else(|| panic!("unexpected alert {text:?}"));
    let json = get_json(http, "/alerts").unwrap();
    assert_eq!(json["status"], "critical");
    assert_eq!(
        json["msg"],
        format!("web: Servers {kept} are marked down but pooled")
    );

    // Back to OK once they recover.
    for h in [2, 3, 4] {
        site.backend(h).set_mode(Mode::Healthy);
    }
    wait_pool(http, "web", "recovery", all_up_and_pooled(4));
    wait_alert(http, "OK again", |t| t == "OK - All pools are healthy");

    // WARNING: a threshold of 0.9 leaves 4 servers no room to depool any.
    site.config(&[web(0.9)]);
    rsbal.signal(Signal::SIGHUP);
    let warning = "Pool web is too small to allow depooling. ";
    wait_alert(http, "WARNING", |t| t == format!("WARNING - {warning}"));
    assert_eq!(
        get_json(http, "/alerts").unwrap(),
        serde_json::json!({"status": "warning", "msg": warning})
    );
    drop(rsbal);
}

// ---------------------------------------------------------------------------

/// One sample of the exposition, as the Python client parsed it.
#[derive(Debug, Clone)]
struct Sample {
    family: String,
    kind: String,
    help: String,
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

const PARSE_METRICS: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.append({"family": fam.name, "type": fam.type, "help": fam.documentation,
                    "name": s.name, "labels": s.labels, "value": s.value})
print(json.dumps(out))
"#;

/// `/metrics` through `prometheus_client.parser` (Debian's
/// python3-prometheus-client): fails the test if it does not parse.
fn scrape(addr: SocketAddr) -> Vec<Sample> {
    let text = get_ok(addr, "/metrics", false).expect("GET /metrics");
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", PARSE_METRICS])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (Debian package python3-prometheus-client) is needed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .into_iter()
        .map(|v| Sample {
            family: v["family"].as_str().unwrap().into(),
            kind: v["type"].as_str().unwrap().into(),
            help: v["help"].as_str().unwrap().into(),
            name: v["name"].as_str().unwrap().into(),
            labels: v["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect(),
            value: v["value"].as_f64().unwrap(),
        })
        .collect()
}

/// Asserts the value of one sample.
fn expect(m: &[Sample], name: &str, labels: &[(&str, &str)], want: f64) {
    assert_eq!(value(m, name, labels), Some(want), "{name} {labels:?}");
}

/// The value of the sample `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

#[test]
fn metrics_follow_the_pool_state() {
    let site = Site::new(31, &[2, 3, 4]);
    site.list("web", &[(2, 10, true), (3, 10, true), (4, 10, true)]);
    site.list("other", &[(9, 10, true)]);
    let web = Svc {
        name: "web",
        vip: "192.0.2.31",
        list: "web",
        threshold: 0.5,
        monitors: "['IdleConnection', 'ProxyFetch']",
    };
    let other = Svc {
        name: "other",
        vip: "192.0.2.32",
        list: "other",
        threshold: 0.5,
        monitors: "[]",
    };
    let conf = site.config(&[web, other]);
    let rsbal = Rsbal::start(&conf, &[]);
    let http = site.http();
    let (h2, h3, h4) = (site.host(2), site.host(3), site.host(4));

    wait_pool(http, "web", "every server up", all_up_and_pooled(3));
    site.backend(3).set_mode(Mode::Down);
    wait_pool(http, "web", "the downed server depooled", |s| {
        s.get(&h3) == Some(&(true, false, false))
    });
    let svc = [("service", "web")];
    let mut m = Vec::new();
    let settled = wait_until(T, || {
        m = scrape(http);
        let down = [("service", "web"), ("host", h3.as_str())];
        value(&m, "pybal_service_servers_up", &svc) == Some(2.0)
            && value(&m, "pybal_service_servers_pooled", &svc) == Some(2.0)
            && value(
                &m,
                "pybal_monitor_idleconnection_connections_failed_total",
                &down,
            )
            .is_some()
            && value(
                &m,
                "pybal_monitor_proxyfetch_request_duration_seconds",
                &[("host", h3.as_str()), ("result", "failed")],
            )
            .is_some()
    });
    assert!(settled, "metrics never matched the state: {m:#?}");

    // Every value printed as PyBal's Python client printed it (`3.0`, `0.5`,
    // `1.796e+09`): consumers compare the text.
    let text = get_ok(http, "/metrics", false).unwrap();
    assert!(
        text.contains("\npybal_service_servers{service=\"web\"} 3.0\n"),
        "{text}"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let value = line.rsplit(' ').next().unwrap();
        let python_float = value.contains('.')
            || value.contains("e+")
            || value.contains("e-")
            || ["+Inf", "-Inf", "NaN"].contains(&value);
        assert!(python_float, "not a Python float: {line}");
    }

    // Service gauges, with PyBal's HELP texts and types.
    expect(&m, "pybal_service_servers", &svc, 3.0);
    expect(&m, "pybal_service_servers_enabled", &svc, 3.0);
    expect(&m, "pybal_service_servers_up", &svc, 2.0);
    expect(&m, "pybal_service_servers_pooled", &svc, 2.0);
    expect(&m, "pybal_service_can_depool", &svc, 1.0);
    expect(&m, "pybal_service_pooled_down_servers", &svc, 0.0);
    expect(&m, "pybal_service_depool_threshold", &svc, 0.5);
    expect(&m, "pybal_service_could_not_depool_total", &svc, 0.0);
    expect(&m, "pybal_service_servers", &[("service", "other")], 1.0);
    let family = |name: &str| m.iter().find(|s| s.name == name).unwrap().clone();
    let servers = family("pybal_service_servers");
    assert_eq!(
        (servers.kind.as_str(), servers.help.as_str()),
        ("gauge", "Amount of servers")
    );
    let cnd = family("pybal_service_could_not_depool_total");
    assert_eq!(
        (cnd.kind.as_str(), cnd.family.as_str()),
        ("counter", "pybal_service_could_not_depool")
    );

    // Monitor counters and status.
    for host in [&h2, &h4] {
        for monitor in ["IdleConnection", "ProxyFetch"] {
            let l = [
                ("service", "web"),
                ("host", host.as_str()),
                ("monitor", monitor),
            ];
            expect(&m, "pybal_monitor_status", &l, 1.0);
            expect(&m, "pybal_monitor_up_transitions_total", &l, 1.0);
            assert!(value(&m, "pybal_monitor_down_transitions_total", &l).is_none());
            assert!(value(&m, "pybal_monitor_up_results_total", &l).unwrap() >= 1.0);
        }
    }
    let idle3 = [
        ("service", "web"),
        ("host", h3.as_str()),
        ("monitor", "IdleConnection"),
    ];
    expect(&m, "pybal_monitor_status", &idle3, 0.0);
    expect(&m, "pybal_monitor_up_transitions_total", &idle3, 1.0);
    expect(&m, "pybal_monitor_down_transitions_total", &idle3, 1.0);
    assert!(value(&m, "pybal_monitor_down_results_total", &idle3).unwrap() >= 1.0);
    assert_eq!(family("pybal_monitor_status").help, "Monitor up status");
    // Monitor-specific metrics.
    assert!(
        value(
            &m,
            "pybal_monitor_idleconnection_connections_lost_total",
            &[("host", h3.as_str()), ("reason", "ConnectionLost")]
        )
        .unwrap()
            >= 1.0
    );
    // PyBal's reason: the Twisted failure's class name.
    assert!(
        value(
            &m,
            "pybal_monitor_idleconnection_connections_failed_total",
            &[("host", h3.as_str()), ("reason", "ConnectionRefusedError")]
        )
        .unwrap()
            >= 1.0
    );
    let fetch = value(
        &m,
        "pybal_monitor_proxyfetch_request_duration_seconds",
        &[
            ("service", "web"),
            ("host", h2.as_str()),
            ("monitor", "ProxyFetch"),
            ("result", "successful"),
            ("url", "http://www.example.org/health"),
        ],
    )
    .unwrap();
    assert!((0.0..5.0).contains(&fetch), "{fetch}");
    // rsbal's own, and BGP (off).
    expect(
        &m,
        "rsbal_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    expect(&m, "pybal_bgp_enabled", &[], 0.0);
    assert!(value(&m, "rsbal_ipvs_commands_applied_total", &[]).unwrap() >= 5.0);
    expect(&m, "rsbal_ipvs_commands_failed_total", &[], 0.0);
    expect(&m, "rsbal_reloads_total", &[("result", "success")], 0.0);

    // A server removed from the list takes its series along.
    site.list("web", &[(2, 10, true), (4, 10, true)]);
    let gone = wait_until(T, || {
        m = scrape(http);
        value(&m, "pybal_service_servers", &svc) == Some(2.0)
            && !m.iter().any(|s| s.labels.get("host") == Some(&h3))
    });
    assert!(gone, "series of the removed server remain: {m:#?}");

    // A service removed by reload takes its series along.
    let conf = site.config(&[Svc {
        name: "other",
        vip: "192.0.2.32",
        list: "other",
        threshold: 0.5,
        monitors: "[]",
    }]);
    assert!(conf.exists());
    rsbal.signal(Signal::SIGHUP);
    let gone = wait_until(T, || {
        m = scrape(http);
        value(&m, "rsbal_reloads_total", &[("result", "success")]) == Some(1.0)
            && !m
                .iter()
                .any(|s| s.labels.get("service").map(String::as_str) == Some("web"))
    });
    assert!(gone, "series of the removed service remain: {m:#?}");
    expect(&m, "rsbal_last_reload_successful", &[], 1.0);
    assert!(value(&m, "rsbal_last_reload_timestamp_seconds", &[]).unwrap() > 1.7e9);
    expect(&m, "pybal_service_servers", &[("service", "other")], 1.0);
    drop(rsbal);
}

// ---------------------------------------------------------------------------

/// Where test artifacts go: `<target dir>/artifacts`.
fn artifacts_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .join("artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Headless Chromium (Debian's `chromium`) renders `url` into `png`.
fn screenshot(url: &str, png: &Path, width: u32, height: u32) {
    let profile = tempfile::tempdir().unwrap();
    let _ = std::fs::remove_file(png);
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("chromium (Debian package chromium) is needed");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(png).expect("chromium wrote no screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        bytes.len() > 10_000,
        "suspiciously small: {} bytes",
        bytes.len()
    );
}

#[test]
fn status_page_shows_every_pool_and_server() {
    let site = Site::new(32, &[2, 3, 4, 5, 6, 7, 8, 10, 11]);
    site.list(
        "appservers",
        &[
            (2, 10, true),
            (3, 10, true),
            (4, 20, true),
            (5, 10, false),
            (6, 5, true),
        ],
    );
    site.list("api", &[(7, 10, true), (8, 10, true), (9, 10, true)]);
    site.list("edge", &[(10, 10, true), (11, 10, true)]);
    let conf = site.config(&[
        Svc {
            name: "appservers",
            vip: "192.0.2.40",
            list: "appservers",
            threshold: 0.5,
            monitors: "['IdleConnection', 'ProxyFetch']",
        },
        Svc {
            name: "api",
            vip: "192.0.2.41",
            list: "api",
            threshold: 0.5,
            monitors: "['IdleConnection']",
        },
        Svc {
            name: "edge",
            vip: "192.0.2.42",
            list: "edge",
            threshold: 0.5,
            monitors: "['IdleConnection']",
        },
    ]);
    let rsbal = Rsbal::start(&conf, &[]);
    let http = site.http();
    let (h3, h8, h9) = (site.host(3), site.host(8), site.host(9));

    // appservers: one server down and depooled, one disabled.
    wait_pool(http, "appservers", "4 enabled servers up", |s| {
        s.len() == 5 && s.values().filter(|(e, up, p)| *e && *up && *p).count() == 4
    });
    site.backend(3).set_mode(Mode::Down);
    wait_pool(http, "appservers", "the downed server depooled", |s| {
        s.get(&h3) == Some(&(true, false, false))
    });
    // api: 127.32.0.9 never answers (depooled), then 127.32.0.8 goes down
    // and the threshold keeps it pooled.
    wait_pool(http, "api", "one server depooled", |s| {
        s.get(&h9) == Some(&(true, false, false))
    });
    site.backend(8).set_mode(Mode::Down);
    wait_pool(http, "api", "a down server kept pooled", |s| {
        s.get(&h8) == Some(&(true, false, true))
    });
    wait_pool(http, "edge", "every server up", all_up_and_pooled(2));
    // Every monitor has reported (monitor states reach the page within a
    // second), the downed appserver's ProxyFetch too.
    let reported = wait_until(T, || {
        let Some(doc) = get_json(http, "/") else {
            return false;
        };
        let servers = doc["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["servers"].as_array().cloned().unwrap_or_default());
        let mut all_known = true;
        let mut fetch_down = false;
        for s in servers {
            for m in s["monitors"].as_array().cloned().unwrap_or_default() {
                all_known &= !m["up"].is_null();
                fetch_down |= s["host"] == h3 && m["name"] == "ProxyFetch" && m["up"] == false;
            }
        }
        all_known && fetch_down
    });
    assert!(
        reported,
        "monitor results never all reached the status page"
    );

    let page = get_ok(http, "/", false).expect("GET /");
    assert!(page.contains("<meta http-equiv=\"refresh\""), "{page}");
    assert!(page.contains("name=\"viewport\""), "{page}");
    assert!(page.contains(&format!(
        "CRITICAL - api: Servers {h8} are marked down but pooled"
    )));
    for pool in ["appservers", "api", "edge"] {
        assert!(page.contains(&format!("id=\"pool-{pool}\"")), "{pool}");
    }
    for h in [2, 3, 4, 5, 6, 7, 8, 9, 10, 11] {
        let host = site.host(h);
        assert!(
            page.contains(&format!("data-host=\"{host}\"")),
            "{host} missing"
        );
    }
    assert!(page.contains(&format!("class=\"down-pooled\" data-host=\"{h8}\"")));
    assert!(page.contains(&format!("class=\"depooled\" data-host=\"{h3}\"")));
    assert!(page.contains(&format!(
        "class=\"fine disabled\" data-host=\"{}\"",
        site.host(5)
    )));
    assert!(page.contains("another depool allowed: <span class=\"no\">no</span>"));
    assert!(page.contains("BGP is disabled"));
    assert!(!page.contains("<script") && !page.contains("src=\"http"));

    // The same as JSON.
    let doc = get_json(http, "/").unwrap();
    assert_eq!(doc["alert"]["status"], "critical");
    assert_eq!(doc["pools"].as_array().unwrap().len(), 3);

    let png = artifacts_dir().join("status-page.png");
    screenshot(&format!("{}/", site.url()), &png, 1100, 1060);
    println!("status page screenshot: {}", png.display());
    let phone = artifacts_dir().join("status-page-phone.png");
    screenshot(&format!("{}/", site.url()), &phone, 390, 1400);
    println!("status page screenshot (phone width): {}", phone.display());
    drop(rsbal);
}

// ---------------------------------------------------------------------------

/// Runs `rsbal status ARGS`: (exit code, stdout).
fn rsbal_status(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rsbal"))
        .arg("status")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Waits until `rsbal status ARGS` exits with `code`; returns its output.
fn wait_status(args: &[&str], code: i32) -> String {
    let mut last = (0, String::new());
    let ok = wait_until(T, || {
        last = rsbal_status(args);
        last.0 == code
    });
    assert!(
        ok,
        "rsbal status {args:?}: wanted exit {code}, last {last:?}"
    );
    last.1
}

#[test]
fn rsbal_status_exit_codes() {
    let site = four_servers(33);
    let web = |threshold| web_svc("192.0.2.33", threshold);
    let conf = site.config(&[web(0.5)]);
    let mut rsbal = Rsbal::start(&conf, &[]);
    let url = site.url();
    let by_url = ["--url", url.as_str()];

    wait_pool(site.http(), "web", "every server up", all_up_and_pooled(4));
    let out = wait_status(&by_url, 0);
    println!("rsbal status (healthy):\n{out}");
    assert!(out.starts_with("OK - All pools are healthy\n"), "{out}");
    assert!(out.contains("TCP  192.0.2.33:8080"), "{out}");
    for h in [2, 3, 4, 5] {
        assert!(out.contains(&format!("-> {} ", site.host(h))), "{out}");
    }

    for h in [2, 3, 4] {
        site.backend(h).set_mode(Mode::Down);
    }
    let out = wait_status(&by_url, 2);
    println!("rsbal status (critical):\n{out}");
    assert!(out.starts_with("CRITICAL - web: Servers "), "{out}");
    assert!(out.contains("DOWN BUT POOLED"), "{out}");
    let (code, json) = rsbal_status(&["--json", "--url", &url]);
    assert_eq!(code, 2);
    let doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["alert"]["status"], "critical");

    for h in [2, 3, 4] {
        site.backend(h).set_mode(Mode::Healthy);
    }
    wait_status(&by_url, 0);
    site.config(&[web(0.9)]);
    rsbal.signal(Signal::SIGHUP);
    let out = wait_status(&by_url, 1);
    println!("rsbal status (warning):\n{out}");
    assert!(
        out.starts_with("WARNING - Pool web is too small to allow depooling."),
        "{out}"
    );
    assert!(out.contains("last reload: "), "{out}");
    // The address from the config's instrumentation settings.
    let conf_arg = conf.display().to_string();
    assert_eq!(rsbal_status(&["-c", &conf_arg]).0, 1);

    // Nothing listening: UNKNOWN.
    rsbal.signal(Signal::SIGTERM);
    assert!(rsbal.wait_exit(T).is_some());
    let (code, out) = rsbal_status(&by_url);
    assert_eq!(code, 3, "{out}");
    assert!(out.starts_with("UNKNOWN - "), "{out}");
    let (code, _) = rsbal_status(&[
        "-c",
        &site.dir.path().join("missing.conf").display().to_string(),
    ]);
    assert_eq!(code, 3);
}

// ---------------------------------------------------------------------------

/// Sends `raw` and reads the whole answer.
fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let _ = s.write_all(raw);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn misbehaving_clients_do_not_stop_the_server() {
    let site = Site::new(34, &[2]);
    site.list("web", &[(2, 10, true)]);
    let conf = site.config(&[Svc {
        name: "web",
        vip: "192.0.2.34",
        list: "web",
        threshold: 0.5,
        monitors: "[]",
    }]);
    let rsbal = Rsbal::start(&conf, &[]);
    let http = site.http();
    assert!(wait_until(T, || get_ok(http, "/pools", false).is_some()));

    // Far more slow clients than worker threads: silent ones, and ones that
    // stop in the middle of their request head.
    let mut slow: Vec<TcpStream> = Vec::new();
    for i in 0..40 {
        let mut s = TcpStream::connect(http).unwrap();
        if i % 2 == 1 {
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
        }
        slow.push(s);
    }
    // A client that sends an endless head, and one that trickles bytes.
    let flood = std::thread::spawn(move || {
        exchange(
            http,
            format!(
                "GET /pools HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(64 * 1024)
            )
            .as_bytes(),
        )
    });
    let trickle = std::thread::spawn(move || {
        let mut s = TcpStream::connect(http).unwrap();
        for b in b"GET /pools HTTP/1.1\r\nHost: x\r\n" {
            if s.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    });
    std::thread::sleep(Duration::from_millis(300));

    // Everyone else is still answered, at once (well within the 5 s the slow
    // clients are given).
    let started = Instant::now();
    for path in ["/pools", "/pools/web", "/alerts", "/metrics", "/"] {
        let t0 = Instant::now();
        assert!(get_ok(http, path, false).is_some(), "{path} not answered");
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{path} took {:?}",
            t0.elapsed()
        );
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(http_get(http, "/nope", false).map(|r| r.0), Some(404));
    let post = exchange(
        http,
        b"POST /pools HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    );
    assert!(post.starts_with("HTTP/1.1 405 "), "{post}");
    assert!(post.contains("Allow: GET, HEAD\r\n"), "{post}");
    let head = exchange(http, b"HEAD /pools HTTP/1.0\r\n\r\n");
    assert!(
        head.starts_with("HTTP/1.1 200 ") && head.ends_with("\r\n\r\n"),
        "{head}"
    );

    // The oversized head was refused; the slow ones time out with 408.
    let flood = flood.join().unwrap();
    assert!(flood.starts_with("HTTP/1.1 431 "), "{flood:?}");
    let mut first = slow.swap_remove(1);
    first
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut answer = String::new();
    let _ = first.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");
    drop(trickle.join().unwrap());
    drop(slow);
    assert!(get_ok(http, "/pools", false).is_some());

    // rsbal itself kept going: its service thread is untouched.
    assert!(rsbal.log_text().contains("instrumentation"));
    let ip: IpAddr = lo(34, 2);
    assert!(get_ok(http, &format!("/pools/web/{ip}"), false).is_some());
    drop(rsbal);
}
