//! A production-shaped configuration, run for real (issue 12, "be sure, not
//! hopeful"): `conf/production-shaped/pybal.conf`, written by its
//! `generate.py` in the shape of what Wikimedia's puppet template writes for
//! the eqiad secondary balancer (every key the template can write: PyBal's
//! `tunneling`, `advertised_instrumentation_ips`, `dry-run`, Ruby and
//! puppet list syntaxes, a udp section), with its real servers on loopback.
//!
//! The config is run unchanged but for the fake ipvsadm: its addresses
//! (the balancer on 127.0.0.10, routers on 127.0.0.11/.12, servers on
//! 127.1.0.x and fd7f::1:0:x, instrumentation on port 9090) are those
//! of the file, so each such test runs in its own network namespace
//! (`unshare(CLONE_NEWNET)` of the test's thread, inherited by every thread
//! and process it starts: backends, BIRD, rsbal). Plain HTTP and idle
//! servers are the harness's `Backend`s; HTTPS servers (a self-signed
//! certificate for another name, as production's `https://localhost/…`
//! checks meet) and UDP servers are `tests/production/backends.py`.
//! Expectations are derived from the config file itself.
//!
//! The other tests (instrumentation binding, reloads) use 127.120.0.0/16 –
//! 127.129.0.0/16 of the host's own namespace.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a failed set-up panics; helpers are shared by several crates

mod common;

use common::bgp::{Bird, PeerConfig, Rib, SeenRoute};
use common::pool::legacy_list;
use common::stateful_ipvsadm::StatefulIpvsadm;
use common::*;
use nix::sys::signal::Signal;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);
const SHAPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/production-shaped");
const BIRD_ASN: u32 = 64512;

/// One service section of the shaped config, as far as the tests need it.
#[derive(Debug, Clone)]
struct Section {
    name: String,
    keys: BTreeMap<String, String>,
    /// The server addresses of its list.
    servers: Vec<String>,
}

impl Section {
    fn get(&self, key: &str) -> &str {
        self.keys.get(key).map(String::as_str).unwrap_or("")
    }
    fn ip(&self) -> IpAddr {
        self.get("ip").parse().unwrap()
    }
    fn port(&self) -> u16 {
        self.get("port").parse().unwrap()
    }
    fn udp(&self) -> bool {
        self.get("protocol") == "udp"
    }
    fn tunnelled(&self) -> bool {
        self.get("tunneling") == "true"
    }
    /// `-t 10.2.2.11:4737`, `-t [2620:0:861:ed1a::9]:80` as ipvsadm writes it.
    fn ipvs_key(&self) -> String {
        let flag = if self.udp() { "-u" } else { "-t" };
        format!("{flag} {}", SocketAddr::new(self.ip(), self.port()))
    }
    fn dest(&self, server: &str) -> String {
        SocketAddr::new(server.parse().unwrap(), self.port()).to_string()
    }
    /// ProxyFetch with an https:// URL: the server must speak TLS.
    fn https(&self) -> bool {
        self.get("monitors").contains("ProxyFetch")
            && self.get("proxyfetch.url").contains("https://")
    }
    /// The names in `monitors`.
    fn monitors(&self) -> Vec<String> {
        self.get("monitors")
            .trim_matches(|c| c == '[' || c == ']')
            .split(',')
            .map(|m| m.trim().trim_matches('"').to_string())
            .filter(|m| !m.is_empty())
            .collect()
    }
    fn http_status(&self) -> u16 {
        self.keys
            .get("proxyfetch.http_status")
            .map_or(200, |s| s.parse().unwrap())
    }
}

/// The `[global]` keys and every service section of `dir/pybal.conf`.
fn read_shaped(dir: &Path) -> (BTreeMap<String, String>, Vec<Section>) {
    let text = std::fs::read_to_string(dir.join("pybal.conf")).unwrap();
    let mut global = BTreeMap::new();
    let mut sections: Vec<Section> = Vec::new();
    let mut in_global = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_global = name == "global";
            if !in_global {
                sections.push(Section {
                    name: name.to_string(),
                    keys: BTreeMap::new(),
                    servers: Vec::new(),
                });
            }
            continue;
        }
        let (key, value) = line.split_once(" = ").unwrap();
        let keys = match sections.last_mut() {
            Some(s) if !in_global => &mut s.keys,
            _ => &mut global,
        };
        keys.insert(key.to_string(), value.to_string());
    }
    for s in &mut sections {
        let list = s.get("config").strip_prefix("file://").unwrap().to_string();
        let list = std::fs::read_to_string(dir.join(list)).unwrap();
        s.servers = list
            .lines()
            .filter_map(|l| l.split("'host': '").nth(1))
            .map(|rest| rest.split('\'').next().unwrap().to_string())
            .collect();
        assert!(!s.servers.is_empty(), "[{}] has no servers", s.name);
    }
    (global, sections)
}

/// The addresses of a Python list value (either quoting).
fn ip_list(value: &str) -> Vec<IpAddr> {
    value
        .trim_matches(|c| c == '[' || c == ']' || c == ' ')
        .split(',')
        .map(|s| s.trim().trim_matches(|c| c == '\'' || c == '"'))
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect()
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
}

/// Moves the calling thread (and everything it starts from now on) into a
/// new network namespace with `lo` up and `ips` added to it.
fn private_network(ips: &BTreeSet<IpAddr>) {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .expect("unshare(CLONE_NEWNET): these tests run as root, as CI does");
    run("ip", &["link", "set", "lo", "up"]);
    for ip in ips {
        let addr = format!("{ip}/{}", if ip.is_ipv6() { 128 } else { 32 });
        let mut args = vec!["addr", "add", &addr, "dev", "lo"];
        if ip.is_ipv6() {
            args.push("nodad");
        }
        run("ip", &args);
    }
}

/// A child process killed when the test ends, even by a panic.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The shaped config running: its real servers, the fake ipvsadm seeded
/// with what PyBal left (every service, direct routing: PyBal 1.15 ignores
/// `tunneling`), and rsbal.
struct Production {
    dir: tempfile::TempDir,
    global: BTreeMap<String, String>,
    sections: Vec<Section>,
    ipvs: StatefulIpvsadm,
    /// Plain HTTP / idle servers by address.
    backends: BTreeMap<SocketAddr, Backend>,
    _python: KillOnDrop,
    bird: Option<Bird>,
    rsbal: Option<Rsbal>,
}

impl Production {
    fn start(with_bird: bool) -> Production {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        run(
            "cp",
            &["-r", &format!("{SHAPED}/pools"), &d.display().to_string()],
        );
        let (global, sections) = read_shaped(Path::new(SHAPED));
        // The IPv6 servers, and the advertised instrumentation IPs (puppet
        // puts those on lo of every balancer).
        let ips: BTreeSet<IpAddr> = sections
            .iter()
            .flat_map(|s| s.servers.iter().map(|h| h.parse::<IpAddr>().unwrap()))
            .filter(IpAddr::is_ipv6)
            .chain(ip_list(&global["advertised_instrumentation_ips"]))
            .collect();
        private_network(&ips);

        // Real servers: TLS and UDP ones in Python, the others in Rust.
        let mut backends = BTreeMap::new();
        let mut python = Vec::new();
        let mut seen = BTreeSet::new();
        for s in &sections {
            for server in &s.servers {
                let addr: SocketAddr = s.dest(server).parse().unwrap();
                if !seen.insert((addr, s.udp())) {
                    continue;
                }
                if s.udp() || s.https() {
                    python.push(serde_json::json!({
                        "ip": addr.ip().to_string(), "port": addr.port(),
                        "proto": if s.udp() { "udp" } else { "tcp" },
                        "status": s.http_status(),
                    }));
                } else {
                    backends.insert(addr, Backend::start(addr));
                }
            }
        }
        let python = start_python_backends(d, &python);

        let ipvs = StatefulIpvsadm::new(d);
        let mut seed = Vec::new();
        for s in &sections {
            seed.push(format!("-A {} -s {}", s.ipvs_key(), s.get("scheduler")));
            for server in &s.servers {
                let dest = s.dest(server);
                seed.push(format!("-a {} -r {dest} -g -w 10", s.ipvs_key()));
            }
        }
        ipvs.seed(&seed);

        let bird = with_bird.then(|| {
            let peer = ip_list(&global["bgp-peer-address"])[0];
            let me = ip_list(&global["bgp-local-ips"])[0];
            let bird_dir = d.join("bird");
            std::fs::create_dir_all(&bird_dir).unwrap();
            Bird::start(
                &bird_dir,
                PeerConfig {
                    address: peer,
                    port: 179,
                    asn: BIRD_ASN,
                    rsbal: me,
                    rsbal_port: 179,
                    rsbal_asn: global["bgp-local-asn"].parse().unwrap(),
                    graceful_restart: false,
                },
            )
        });

        // The file as it is, plus the fake ipvsadm.
        let text = std::fs::read_to_string(Path::new(SHAPED).join("pybal.conf")).unwrap();
        let text = text.replacen(
            "[global]\n",
            &format!(
                "[global]\nipvsadm = {}\nipvs-backend = ipvsadm\nipvs-reconcile-interval = 0\n",
                ipvs.script.display()
            ),
            1,
        );
        let conf = write_atomic(d, "pybal.conf", &text);
        let rsbal = Rsbal::start(&conf, &[]);
        Production {
            dir,
            global,
            sections,
            ipvs,
            backends,
            _python: python,
            bird,
            rsbal: Some(rsbal),
        }
    }

    fn rsbal(&self) -> &Rsbal {
        self.rsbal.as_ref().unwrap()
    }

    fn instrumentation(&self) -> SocketAddr {
        SocketAddr::new("127.0.0.1".parse().unwrap(), 9090)
    }

    fn section(&self, name: &str) -> &Section {
        self.sections.iter().find(|s| s.name == name).unwrap()
    }

    /// `/pools/<section>` as JSON: host → (up, pooled).
    fn pool(&self, name: &str) -> BTreeMap<String, (bool, bool)> {
        let Some((200, body)) = http_get(self.instrumentation(), &format!("/pools/{name}"), true)
        else {
            return BTreeMap::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        v.as_object()
            .into_iter()
            .flatten()
            .map(|(h, s)| (h.clone(), (s["up"] == true, s["pooled"] == true)))
            .collect()
    }

    /// The fake's table lines of one destination, e.g. `-a -t … -r … -i -w 10`.
    fn dest_line(&self, s: &Section, server: &str) -> Option<String> {
        let prefix = format!("-a {} -r {} ", s.ipvs_key(), s.dest(server));
        self.ipvs
            .table_text()
            .lines()
            .find(|l| l.starts_with(&prefix))
            .map(str::to_string)
    }
}

impl Drop for Production {
    fn drop(&mut self) {
        // rsbal first (it withdraws from BIRD), then the servers.
        self.rsbal.take();
        self.bird.take();
        if std::thread::panicking() {
            eprintln!("---- ipvsadm table ----\n{}", self.ipvs.table_text());
            eprintln!("dir: {}", self.dir.path().display());
        }
    }
}

/// A self-signed certificate for a name no check asks for, and the Python
/// servers; waits for their "ready".
fn start_python_backends(dir: &Path, spec: &[serde_json::Value]) -> KillOnDrop {
    let args = "req -x509 -newkey rsa:2048 -nodes -days 1 -keyout key.pem -out cert.pem \
                -subj /CN=not-the-checked-name.invalid";
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .current_dir(dir)
        .output()
        .expect("cannot run openssl");
    assert!(out.status.success(), "openssl: {out:?}");
    std::fs::write(
        dir.join("backends.json"),
        serde_json::to_string(spec).unwrap(),
    )
    .unwrap();
    let mut child = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/production/backends.py"
        ))
        .args(["backends.json", "cert.pem", "key.pem"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "backends.py did not start");
    KillOnDrop(child)
}

fn check(config: &Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rsbal"))
        .arg("--check")
        .arg("-c")
        .arg(config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// `--check` accepts the shaped config without a single warning; the
/// committed files are what `generate.py` writes.
#[test]
fn production_shaped_config_checks_without_warnings() {
    let (code, text) = check(&Path::new(SHAPED).join("pybal.conf"));
    assert_eq!(code, Some(0), "{text}");
    assert!(!text.contains("warning"), "{text}");
    assert!(text.contains("configuration OK (14 service(s))"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    run(
        "python3",
        &[
            &format!("{SHAPED}/generate.py"),
            "--out",
            &dir.path().display().to_string(),
        ],
    );
    for file in ["pybal.conf", "pools/text-https.v6", "pools/synthetic-udp"] {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(file)).unwrap(),
            std::fs::read_to_string(Path::new(SHAPED).join(file)).unwrap(),
            "{file} is not what generate.py writes"
        );
    }
}

/// The shaped config for real: tunnelled services get `-i` (existing
/// destinations left by PyBal edited in place, never removed), the others
/// keep `-g`; the service IPs and the advertised instrumentation IPs reach
/// BIRD with the global MED; instrumentation answers on every address; the
/// depool threshold holds as PyBal's rule says.
#[test]
fn production_shaped_config_runs_with_real_servers_and_bird() {
    let p = Production::start(true);

    // IPIP: every destination of a tunnelled service is edited to -i, the
    // others keep -g. (A server whose https check fails while ProxyFetch
    // verifies certificates may be depooled: see the next test.)
    for s in &p.sections {
        for server in &s.servers {
            let flag = if s.tunnelled() { " -i " } else { " -g " };
            let ok = wait_until(T, || match p.dest_line(s, server) {
                Some(line) => line.contains(flag),
                None => s.https(),
            });
            assert!(
                ok,
                "[{}] {server}: want{flag}in {:?}",
                s.name,
                p.dest_line(s, server)
            );
            if s.tunnelled() && p.dest_line(s, server).is_some() {
                let edit = format!("-e {} -r {} -i -w 10", s.ipvs_key(), s.dest(server));
                assert!(
                    p.ipvs.commands().contains(&edit),
                    "[{}] no {edit:?} in {:#?}",
                    s.name,
                    p.ipvs.commands()
                );
            }
        }
        // Servers that are up are never removed, not even for a moment.
        if !s.https() {
            let rips: Vec<String> = s.servers.iter().map(|h| s.dest(h)).collect();
            let rips: Vec<&str> = rips.iter().map(String::as_str).collect();
            p.ipvs.assert_never_removed(&s.ipvs_key(), &rips);
        }
    }
    assert!(
        p.ipvs.commands_starting("-D").is_empty() && p.ipvs.commands_starting("-A").is_empty(),
        "services were re-created: {:#?}",
        p.ipvs.commands()
    );

    // BGP: what the config announces, seen by BIRD.
    let bird = p.bird.as_ref().unwrap();
    let med: u32 = p.global["bgp-med"].parse().unwrap();
    let asn: u32 = p.global["bgp-local-asn"].parse().unwrap();
    let mut want = Rib::new();
    let announced = p
        .sections
        .iter()
        .filter(|s| s.get("bgp") != "false")
        .map(Section::ip)
        .chain(ip_list(&p.global["advertised_instrumentation_ips"]));
    for ip in announced {
        let (prefix, hop) = match ip {
            IpAddr::V4(_) => (format!("{ip}/32"), &p.global["bgp-nexthop-ipv4"]),
            IpAddr::V6(_) => (format!("{ip}/128"), &p.global["bgp-nexthop-ipv6"]),
        };
        want.insert(prefix, SeenRoute::new(&[asn], hop, med));
    }
    for ip in ip_list(&p.global["advertised_instrumentation_ips"]) {
        assert!(want.contains_key(&format!("{ip}/32")));
    }
    let mut rib = Rib::new();
    let ok = wait_until(T, || {
        rib = bird.rib();
        rib == want
    });
    assert!(
        ok,
        "BIRD: want {want:#?}\ngot {rib:#?}\n{}",
        bird.protocol()
    );

    // Instrumentation on instrumentation_ips and advertised_instrumentation_ips.
    let port = 9090;
    let addrs = ip_list(&p.global["instrumentation_ips"])
        .into_iter()
        .chain(ip_list(&p.global["advertised_instrumentation_ips"]));
    for ip in addrs {
        let addr = SocketAddr::new(ip, port);
        let got = http_get(addr, "/pools", false);
        assert!(
            got.as_ref().is_some_and(|(status, body)| *status == 200
                && p.sections.iter().all(|s| body.contains(&s.name))),
            "{addr}: {got:?}"
        );
    }

    // PyBal's depool rule on apertium (threshold 0.5, 3 servers): the first
    // server down is depooled (2 up ≥ 1.5), the second stays pooled (1 < 1.5).
    let apertium = p.section("apertium_4737");
    assert_eq!(apertium.get("depool-threshold"), "0.5");
    let [a, b, c] = &apertium.servers[..] else {
        panic!("{:?}", apertium.servers)
    };
    let all_up = wait_until(T, || {
        let pool = p.pool(&apertium.name);
        pool.len() == 3 && pool.values().all(|s| *s == (true, true))
    });
    assert!(all_up, "{:?}", p.pool(&apertium.name));
    let backend = |h: &str| &p.backends[&apertium.dest(h).parse::<SocketAddr>().unwrap()];
    backend(a).set_mode(Mode::Down);
    let ok = p
        .ipvs
        .wait_table(T, |t| !t.has_dest(&apertium.ipvs_key(), &apertium.dest(a)));
    assert!(ok, "{a} not depooled: {}", p.ipvs.table_text());
    backend(b).set_mode(Mode::Down);
    let ok = wait_until(T, || {
        p.pool(&apertium.name).get(b.as_str()) == Some(&(false, true))
    });
    assert!(ok, "{b} not kept pooled: {:?}", p.pool(&apertium.name));
    let table = p.ipvs.table();
    assert!(table.has_dest(&apertium.ipvs_key(), &apertium.dest(b)));
    assert!(table.has_dest(&apertium.ipvs_key(), &apertium.dest(c)));
    let alerts = http_get(p.instrumentation(), "/alerts", false).unwrap().1;
    assert!(
        alerts.contains(&format!(
            "apertium_4737: Servers {b} are marked down but pooled"
        )),
        "{alerts}"
    );
    assert!(
        p.rsbal().log_text().contains("Could not depool server"),
        "{}",
        p.rsbal().log_text()
    );
}

/// ProxyFetch over https against servers whose certificate is self-signed
/// and for another name (production checks `https://localhost/…` against
/// each server's IP): every server of every service is up and pooled, as
/// under PyBal, whose ProxyFetch verifies nothing.
#[test]
fn https_proxyfetch_servers_with_self_signed_certificates_are_up() {
    let p = Production::start(false);
    // Every monitor of every server has reported (servers start up and
    // pooled, so only results say anything), and none reported down.
    for s in &p.sections {
        for monitor in s.monitors() {
            for server in &s.servers {
                let labels = [
                    ("host", server.as_str()),
                    ("monitor", monitor.as_str()),
                    ("service", s.name.as_str()),
                ];
                let (mut up, mut down) = (None, None);
                let reported = wait_until(T, || {
                    let text = metrics_text(p.instrumentation());
                    up = sample(&text, "pybal_monitor_up_results_total", &labels);
                    down = sample(&text, "pybal_monitor_down_results_total", &labels);
                    up.is_some() || down.is_some()
                });
                assert!(reported, "[{}] {server} {monitor}: no result", s.name);
                assert!(
                    down.is_none_or(|d| d == 0.0),
                    "[{}] {server} {monitor}: {down:?} down result(s), {up:?} up; log:\n{}",
                    s.name,
                    failures(&p.rsbal().log_text(), server)
                );
            }
        }
        let pool = p.pool(&s.name);
        assert!(
            pool.len() == s.servers.len() && pool.values().all(|st| *st == (true, true)),
            "[{}]: {pool:?}",
            s.name
        );
    }
    let alerts = http_get(p.instrumentation(), "/alerts", false).unwrap().1;
    assert!(alerts.starts_with("OK"), "{alerts}");
}

fn metrics_text(addr: SocketAddr) -> String {
    http_get(addr, "/metrics", false)
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// The value of the sample `name{labels…}` (labels in any order), if any.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The log lines saying why `server` was down.
fn failures(log: &str, server: &str) -> String {
    log.lines()
        .filter(|l| l.contains(server) && l.contains("down:"))
        .take(3)
        .collect::<Vec<_>>()
        .join("\n")
}

// ---- instrumentation binding and reloads (host namespace, 127.12x) ----

/// A config with one IdleConnection service on `servers` (port 8080).
fn small_config(dir: &Path, ipvs: &StatefulIpvsadm, global: &str, service: &str) -> PathBuf {
    let list = dir.join("servers");
    write_atomic(
        dir,
        "rsbal.conf",
        &format!(
            "[global]\nipvsadm = {}\nipvs-backend = ipvsadm\nipvs-reconcile-interval = 0\n\
             instrumentation = yes\n{global}\n\
             [web]\nprotocol = tcp\nip = 192.0.2.120\nport = 8080\nscheduler = wrr\n\
             config = file://{}\nmonitors = ['IdleConnection']\n\
             idleconnection.max-delay = 1\n{service}\n",
            ipvs.script.display(),
            list.display()
        ),
    )
}

/// A port taken on one instrumentation address (plain or advertised) stops
/// the start with exit status 1 and a clear error, before IPVS is touched.
#[test]
fn a_taken_instrumentation_port_stops_the_start_before_ipvs_is_touched() {
    for (net, key) in [
        (121, "instrumentation_ips"),
        (122, "advertised_instrumentation_ips"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let ipvs = StatefulIpvsadm::new(dir.path());
        let taken = TcpListener::bind(SocketAddr::new(lo(net, 1), 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        write_atomic(
            dir.path(),
            "servers",
            &legacy_list(&[(&lo(net, 2).to_string(), 10, true)]),
        );
        let global = match key {
            "instrumentation_ips" => format!("instrumentation_port = {port}\ninstrumentation_ips = ['{}']", lo(net, 1)),
            _ => format!(
                "instrumentation_port = {port}\ninstrumentation_ips = ['{}']\nadvertised_instrumentation_ips = [\"{}\"]",
                lo(net, 3),
                lo(net, 1)
            ),
        };
        let conf = small_config(dir.path(), &ipvs, &global, "");
        let mut rsbal = Rsbal::start(&conf, &[]);
        let status = rsbal.wait_exit(T).expect("rsbal kept running");
        assert_eq!(status.code(), Some(1), "{key}");
        let log = rsbal.log_text();
        let want = format!(
            "cannot start: instrumentation cannot listen on {}:{port}: Address already in use",
            lo(net, 1)
        );
        assert!(log.contains(&want), "{key}: {log}");
        assert!(
            ipvs.batches().is_empty(),
            "{key}: IPVS was touched: {:#?}",
            ipvs.commands()
        );
    }
}

/// Reloads: an advertised address added is served, one removed is not any
/// more, one whose port is taken rejects the reload and the running
/// listeners stay; `tunneling = true` edits every destination to `-i`
/// without removing any.
#[test]
fn reload_moves_instrumentation_listeners_and_switches_to_tunneling() {
    let net = 123;
    let dir = tempfile::tempdir().unwrap();
    let ipvs = StatefulIpvsadm::new(dir.path());
    let servers: Vec<String> = [2, 3].iter().map(|h| lo(net, *h).to_string()).collect();
    let _backends: Vec<Backend> = servers
        .iter()
        .map(|h| Backend::start(SocketAddr::new(h.parse().unwrap(), 8080)))
        .collect();
    write_atomic(
        dir.path(),
        "servers",
        &legacy_list(
            &servers
                .iter()
                .map(|h| (h.as_str(), 10, true))
                .collect::<Vec<_>>(),
        ),
    );
    let port = free_port();
    let plain = SocketAddr::new(lo(net, 1), port);
    let (a, b, c) = (
        SocketAddr::new(lo(net, 21), port),
        SocketAddr::new(lo(net, 22), port),
        SocketAddr::new(lo(net, 23), port),
    );
    let global = |advertised: &[SocketAddr]| {
        let list: Vec<String> = advertised
            .iter()
            .map(|a| format!("\"{}\"", a.ip()))
            .collect();
        format!(
            "instrumentation_port = {port}\ninstrumentation_ips = ['{}']\nadvertised_instrumentation_ips = [{}]",
            plain.ip(),
            list.join(", ")
        )
    };
    let serves = |addr: SocketAddr| http_get(addr, "/alerts", false).is_some_and(|(s, _)| s == 200);
    let conf = small_config(dir.path(), &ipvs, &global(&[a]), "");
    let rsbal = Rsbal::start(&conf, &[]);
    let dests = |flag: &str| {
        let table = ipvs.table_text();
        servers
            .iter()
            .all(|h| table.contains(&format!("-r {h}:8080 {flag} -w 10")))
    };
    assert!(wait_until(T, || dests("-g")), "{}", ipvs.table_text());
    assert!(serves(plain) && serves(a) && !serves(b));

    // b instead of a.
    small_config(dir.path(), &ipvs, &global(&[b]), "");
    rsbal.signal(Signal::SIGHUP);
    assert!(
        wait_until(T, || serves(b) && !serves(a)),
        "{}",
        rsbal.log_text()
    );
    assert!(serves(plain));

    // c's port is taken: the reload is rejected, b stays served.
    let _taken = TcpListener::bind(c).unwrap();
    small_config(dir.path(), &ipvs, &global(&[c]), "tunneling = true\n");
    rsbal.signal(Signal::SIGHUP);
    let rejected = format!(
        "reload rejected, the running configuration stays: instrumentation cannot listen on {c}"
    );
    assert!(
        wait_until(T, || rsbal.log_text().contains(&rejected)),
        "{}",
        rsbal.log_text()
    );
    assert!(serves(b) && serves(plain));
    assert!(
        dests("-g"),
        "a rejected reload changed IPVS: {}",
        ipvs.table_text()
    );

    // Tunnelling: every destination edited in place.
    small_config(dir.path(), &ipvs, &global(&[b]), "tunneling = true\n");
    rsbal.signal(Signal::SIGHUP);
    assert!(wait_until(T, || dests("-i")), "{}", ipvs.table_text());
    for h in &servers {
        let edit = format!("-e -t 192.0.2.120:8080 -r {h}:8080 -i -w 10");
        assert!(ipvs.commands().contains(&edit), "{:#?}", ipvs.commands());
    }
    let rips: Vec<String> = servers.iter().map(|h| format!("{h}:8080")).collect();
    let rips: Vec<&str> = rips.iter().map(String::as_str).collect();
    ipvs.assert_never_removed("-t 192.0.2.120:8080", &rips);
    assert!(serves(b) && serves(plain));
}
