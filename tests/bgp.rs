//! BGP end to end: the real rsbal binary announces its service IPs to real
//! BIRD 2 and GoBGP daemons on loopback (Debian packages `bird2`, `gobgpd`).
//!
//! Each test has its own /24 in 127.40.0.0/16: rsbal on .1, BIRD on .2,
//! GoBGP on .3. Next hops are documentation addresses (GoBGP refuses
//! loopback next hops). The last tests script the peer's side by hand
//! (collisions, malformed input, hold timer).

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a failed set-up panics; helpers are shared by several crates

mod common;

use common::bgp::{scripted_open, Bird, GoBgp, PeerConfig, Rib, SeenRoute, Wire};
use common::*;
use nix::sys::signal::Signal;
use rsbal::bgp::message::{error, Message, Notification, Open};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
const RSBAL_ASN: u32 = 64600;
const BIRD_ASN: u32 = 64512;
const GOBGP_ASN: u32 = 64513;

/// Addresses, ports and files of one test.
struct Lab {
    dir: tempfile::TempDir,
    net: u8,
    ipvsadm: FakeIpvsadm,
    /// rsbal's BGP listening port.
    rsbal_port: u16,
    /// The peers' BGP port (both listen on it, each on its own address).
    peer_port: u16,
    http_port: u16,
}

impl Lab {
    fn new(net: u8) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let ipvsadm = FakeIpvsadm::new(dir.path());
        write_atomic(
            dir.path(),
            "servers",
            &format!("{{ 'host': '127.40.{net}.9', 'weight': 10, 'enabled': True }}\n"),
        );
        Lab {
            dir,
            net,
            ipvsadm,
            rsbal_port: free_port(),
            peer_port: free_port(),
            http_port: free_port(),
        }
    }

    fn ip(&self, host: u8) -> IpAddr {
        IpAddr::from([127, 40, self.net, host])
    }

    fn rsbal_ip(&self) -> IpAddr {
        self.ip(1)
    }

    fn peer(&self, host: u8, asn: u32, graceful_restart: bool) -> PeerConfig {
        PeerConfig {
            address: self.ip(host),
            port: self.peer_port,
            asn,
            rsbal: self.rsbal_ip(),
            rsbal_port: self.rsbal_port,
            rsbal_asn: RSBAL_ASN,
            graceful_restart,
        }
    }

    fn subdir(&self, name: &str) -> std::path::PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// The `[global]` section: BGP to `peers`, plus `extra` lines.
    fn global(&self, peers: &[IpAddr], extra: &str) -> String {
        let peers: Vec<String> = peers.iter().map(|p| format!("'{p}'")).collect();
        format!(
            "[global]\nipvsadm = {ipvsadm}\nipvs-backend = ipvsadm\nipvs-reconcile-interval = 0\n\
             instrumentation = yes\ninstrumentation_port = {http}\ninstrumentation_ips = ['{me}']\n\
             bgp = yes\nbgp-local-asn = {RSBAL_ASN}\nbgp-peer-address = [ {peers} ]\n\
             bgp-peer-port = {peer_port}\nbgp-local-ips = [ '{me}' ]\nbgp-local-port = {port}\n\
             bgp-as-path = {RSBAL_ASN} 64601\nbgp-med = 10\n\
             bgp-nexthop-ipv4 = 192.0.2.254\nbgp-nexthop-ipv6 = 2001:db8::254\n{extra}\n",
            ipvsadm = self.ipvsadm.script.display(),
            http = self.http_port,
            me = self.rsbal_ip(),
            peers = peers.join(", "),
            peer_port = self.peer_port,
            port = self.rsbal_port,
        )
    }

    fn service(&self, name: &str, ip: &str, port: u16, extra: &str) -> String {
        format!(
            "[{name}]\nprotocol = tcp\nip = {ip}\nport = {port}\nscheduler = wrr\n\
             config = file://{list}\nmonitors = []\n{extra}\n",
            list = self.dir.path().join("servers").display()
        )
    }

    /// The usual services: two sharing 198.51.100.1, one with its own MED,
    /// one not announced, one IPv6. `with_api = false` leaves out
    /// 198.51.100.2.
    fn services(&self, with_api: bool) -> String {
        let mut s = self.service("web", "198.51.100.1", 80, "");
        s += &self.service("web-https", "198.51.100.1", 443, "");
        if with_api {
            s += &self.service("api", "198.51.100.2", 80, "bgp-med = 50\n");
        }
        s += &self.service("quiet", "198.51.100.3", 80, "bgp = no\n");
        s += &self.service("web6", "2001:db8:1::1", 80, "bgp-med = 20\n");
        s
    }

    fn write_config(&self, text: &str) -> std::path::PathBuf {
        write_atomic(self.dir.path(), "rsbal.conf", text)
    }

    fn metrics(&self) -> String {
        http_get(
            SocketAddr::new(self.rsbal_ip(), self.http_port),
            "/metrics",
            false,
        )
        .map(|(_, body)| body)
        .unwrap_or_default()
    }
}

/// What the services of [`Lab::services`] announce.
fn expected(with_api: bool) -> Rib {
    let path = [RSBAL_ASN, 64601];
    let mut rib = Rib::new();
    rib.insert(
        "198.51.100.1/32".into(),
        SeenRoute::new(&path, "192.0.2.254", 10),
    );
    if with_api {
        rib.insert(
            "198.51.100.2/32".into(),
            SeenRoute::new(&path, "192.0.2.254", 50),
        );
    }
    rib.insert(
        "2001:db8:1::1/128".into(),
        SeenRoute::new(&path, "2001:db8::254", 20),
    );
    rib
}

/// Waits until `rib()` equals `want`; fails with the last value seen.
fn assert_rib(what: &str, want: &Rib, mut rib: impl FnMut() -> Rib) {
    let mut last = Rib::new();
    let ok = wait_until(T, || {
        last = rib();
        last == *want
    });
    assert!(ok, "{what}: expected {want:#?}, got {last:#?}");
}

fn assert_within(what: &str, cond: impl FnMut() -> bool) {
    assert!(wait_until(T, cond), "timed out waiting for: {what}");
}

/// What operations-cookbooks' `sre.loadbalancer.restart-pybal` reads from
/// `/metrics`: `(local_asn, peer, value)` of each line its regex matches,
/// matched by Python's `re` with the cookbook's exact pattern.
fn cookbook_bgp_sessions(metrics: &str) -> Vec<(String, String, String)> {
    const COOKBOOK: &str = r#"
import json, re, sys
pattern = re.compile(r'^pybal_bgp_session_established\{local_asn="(\d+)",peer="(.+?)"\} (.+)$')
out = []
for line in sys.stdin.read().splitlines():
    m = pattern.match(line)
    if m:
        out.append(list(m.groups()))
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("/usr/bin/python3")
        .args(["-c", COOKBOOK])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let rows: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
    rows.into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
        .collect()
}

#[test]
fn announces_to_bird_and_gobgp_and_withdraws_on_reload_and_shutdown() {
    let lab = Lab::new(1);
    let bird = Bird::start(&lab.subdir("bird"), lab.peer(2, BIRD_ASN, false));
    let gobgp = GoBgp::start(
        &lab.subdir("gobgp"),
        lab.peer(3, GOBGP_ASN, false),
        free_port(),
    );
    let peers = [lab.ip(2), lab.ip(3)];
    let config = lab.write_config(&(lab.global(&peers, "") + &lab.services(true)));
    let mut rsbal = Rsbal::start(&config, &[]);

    assert_within("session with BIRD established", || bird.established());
    assert_within("session with GoBGP established", || gobgp.established());
    assert_rib("BIRD", &expected(true), || bird.rib());
    assert_rib("GoBGP", &expected(true), || gobgp.rib());

    // The restart-pybal cookbook's post-restart check, with its own regex
    // (Python's `re`, as the cookbook): each session up means "1.0".
    let mut metrics = String::new();
    let mut sessions = Vec::new();
    let ok = wait_until(T, || {
        metrics = lab.metrics();
        sessions = cookbook_bgp_sessions(&metrics);
        sessions.len() == 2 && sessions.iter().all(|(_, _, v)| v == "1.0")
    });
    assert!(ok, "cookbook reads {sessions:?} from {metrics}");
    let seen: std::collections::BTreeSet<String> = sessions
        .iter()
        .inspect(|(asn, _, _)| assert_eq!(*asn, RSBAL_ASN.to_string()))
        .map(|(_, peer, _)| peer.clone())
        .collect();
    assert_eq!(
        seen,
        [lab.ip(2).to_string(), lab.ip(3).to_string()].into(),
        "{metrics}"
    );
    // PyBalBGPUnstable: `pybal_bgp_session_established != 1 and ignoring
    // (local_asn, peer) pybal_bgp_enabled == 1` matches only when, without
    // those two labels, the session series has the labels of
    // pybal_bgp_enabled (none).
    assert!(metrics.contains("\npybal_bgp_enabled 1.0\n"), "{metrics}");
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("pybal_bgp_session_established"))
    {
        let labels = line.split_once('{').unwrap().1.split_once('}').unwrap().0;
        let names: Vec<&str> = labels
            .split(',')
            .map(|l| l.split_once('=').unwrap().0)
            .collect();
        assert_eq!(names, ["local_asn", "peer"], "{line}");
    }
    // PyBal's per-connection state counts.
    for peer in [lab.ip(2), lab.ip(3)] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("pybal_bgp_session_state_count{")
                    && l.contains(&format!("remote_ip=\"{peer}\""))
                    && l.contains("state=\"ESTABLISHED\"")
                    && l.ends_with(" 1.0")),
            "{metrics}"
        );
    }

    // The status document (status page, `rsbal status`) lists both sessions.
    let http = SocketAddr::new(lab.rsbal_ip(), lab.http_port);
    let (_, doc) = http_get(http, "/", true).expect("status document");
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let sessions = doc["bgp"]["sessions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(sessions.len(), 2, "{doc}");
    assert!(
        sessions
            .iter()
            .all(|s| s["established"] == true && s["state"] == "Established"),
        "{doc}"
    );

    // A service removed by SIGHUP is withdrawn; the others stay.
    lab.write_config(&(lab.global(&peers, "") + &lab.services(false)));
    rsbal.signal(Signal::SIGHUP);
    assert_rib("BIRD after reload", &expected(false), || bird.rib());
    assert_rib("GoBGP after reload", &expected(false), || gobgp.rib());
    assert!(
        bird.established() && gobgp.established(),
        "sessions kept across the reload"
    );

    // SIGTERM withdraws everything and ends with Cease / Administrative Shutdown.
    rsbal.signal(Signal::SIGTERM);
    assert!(rsbal.wait_exit(T).is_some(), "rsbal did not stop");
    assert_rib("BIRD after SIGTERM", &Rib::new(), || bird.rib());
    assert_rib("GoBGP after SIGTERM", &Rib::new(), || gobgp.rib());
    let protocol = bird.protocol();
    assert!(
        protocol.contains("Received: Administrative shutdown"),
        "BIRD saw no Cease: {protocol}"
    );
    assert!(
        gobgp
            .log()
            .contains("notification-received code 6(cease) subcode 2(administrative shutdown)"),
        "GoBGP saw no Cease: {}",
        gobgp.log()
    );
    let log = rsbal.log_text();
    assert!(log.contains("withdrawing 2 route(s)"), "{log}");
}

#[test]
fn reconnects_and_reannounces_when_peers_restart() {
    let lab = Lab::new(2);
    let mut bird = Bird::start(&lab.subdir("bird"), lab.peer(2, BIRD_ASN, false));
    let mut gobgp = GoBgp::start(
        &lab.subdir("gobgp"),
        lab.peer(3, GOBGP_ASN, false),
        free_port(),
    );
    let config = lab.write_config(&(lab.global(&[lab.ip(2), lab.ip(3)], "") + &lab.services(true)));
    let rsbal = Rsbal::start(&config, &[]);
    assert_rib("BIRD", &expected(true), || bird.rib());
    assert_rib("GoBGP", &expected(true), || gobgp.rib());

    // BIRD stops cleanly (Cease) and comes back.
    bird.restart();
    assert_rib("BIRD after its restart", &expected(true), || bird.rib());
    assert_within("rsbal logs BIRD's Cease", || {
        rsbal
            .log_text()
            .contains(&format!("peer {}: received NOTIFICATION Cease", lab.ip(2)))
    });

    // GoBGP dies (SIGKILL: the connection just closes) and comes back.
    gobgp.restart_after_kill();
    assert_rib("GoBGP after its restart", &expected(true), || gobgp.rib());
    assert!(bird.established(), "the other session is untouched");
}

#[test]
fn accepts_incoming_connections_with_a_four_octet_asn() {
    let lab = Lab::new(3);
    let asn: u32 = 4_200_000_001;
    // Nothing listens on the peer port: BIRD must connect to rsbal.
    let mut peer = lab.peer(2, BIRD_ASN, false);
    peer.rsbal_asn = asn;
    let bird = Bird::start(&lab.subdir("bird"), peer);
    let global = lab
        .global(&[lab.ip(2)], "")
        .replace(
            &format!("bgp-local-asn = {RSBAL_ASN}"),
            &format!("bgp-local-asn = {asn}"),
        )
        .replace(
            &format!("bgp-as-path = {RSBAL_ASN} 64601"),
            &format!("bgp-as-path = {asn} 64601"),
        )
        .replace(
            &format!("bgp-peer-port = {}", lab.peer_port),
            &format!("bgp-peer-port = {}", free_port()),
        );
    let config = lab.write_config(&(global + &lab.services(true)));
    let rsbal = Rsbal::start(&config, &[]);
    let want: Rib = expected(true)
        .into_iter()
        .map(|(prefix, mut route)| {
            route.as_path = vec![asn, 64601];
            (prefix, route)
        })
        .collect();
    assert_rib("BIRD", &want, || bird.rib());
    assert!(bird
        .protocol()
        .contains("Session:          external multihop AS4"));
    let log = rsbal.log_text();
    assert!(
        log.contains(&format!("peer {}: incoming connection", lab.ip(2))),
        "{log}"
    );
}

/// Polls BIRD until `done` holds, failing if the routes in `keep` are ever
/// missing meanwhile.
fn keeps_routes_until(bird: &Bird, keep: &[&str], what: &str, mut done: impl FnMut(&Rib) -> bool) {
    let deadline = Instant::now() + T;
    loop {
        let rib = bird.rib();
        for prefix in keep {
            assert!(
                rib.contains_key(*prefix),
                "{what}: BIRD lost {prefix}: {rib:#?}"
            );
        }
        if done(&rib) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: timed out, BIRD has {rib:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn start_rsbal(config: &Path) -> Rsbal {
    Rsbal::start(config, &[])
}

#[test]
fn graceful_restart_keeps_routes_while_rsbal_restarts() {
    let lab = Lab::new(4);
    let bird = Bird::start(&lab.subdir("bird"), lab.peer(2, BIRD_ASN, true));
    let gr = "bgp-graceful-restart = 60";
    let config = lab.write_config(&(lab.global(&[lab.ip(2)], gr) + &lab.services(true)));
    let mut rsbal = start_rsbal(&config);
    assert_rib("BIRD", &expected(true), || bird.rib());
    let protocol = bird.protocol();
    assert!(protocol.contains("Restart time: 60"), "{protocol}");
    assert!(protocol.contains("AF preserved: ipv4 ipv6"), "{protocol}");
    let kept = ["198.51.100.1/32", "2001:db8:1::1/128"];

    // SIGKILL: BIRD keeps every route (stale) while rsbal is away…
    rsbal.signal(Signal::SIGKILL);
    let _ = rsbal.wait_exit(T);
    let mut polls = 0;
    keeps_routes_until(&bird, &kept, "after SIGKILL", |rib| {
        polls += 1;
        rib.len() == 3 && bird.graceful_restart_active() && polls >= 10
    });
    // …and after the restart (with "api" gone from the config) the End-of-RIB
    // ends the restart: the stale route nobody re-announced is flushed.
    lab.write_config(&(lab.global(&[lab.ip(2)], gr) + &lab.services(false)));
    let mut rsbal = start_rsbal(&config);
    keeps_routes_until(&bird, &kept, "after the restart", |rib| {
        *rib == expected(false) && !bird.graceful_restart_active() && bird.established()
    });
    assert!(!bird.protocol().contains("Neighbor GR:"));

    // SIGTERM with graceful restart on: nothing is withdrawn.
    rsbal.signal(Signal::SIGTERM);
    assert!(rsbal.wait_exit(T).is_some(), "rsbal did not stop");
    assert!(
        rsbal
            .log_text()
            .contains("graceful restart: leaving 2 route(s) announced"),
        "{}",
        rsbal.log_text()
    );
    let mut polls = 0;
    keeps_routes_until(&bird, &kept, "after SIGTERM", |_| {
        polls += 1;
        bird.graceful_restart_active() && polls >= 10
    });
    let rsbal = start_rsbal(&config);
    keeps_routes_until(&bird, &kept, "after the second restart", |rib| {
        *rib == expected(false) && !bird.graceful_restart_active() && bird.established()
    });

    // Turning BGP off by reload is no restart: the routes are withdrawn.
    let off = lab
        .global(&[lab.ip(2)], gr)
        .replace("bgp = yes", "bgp = no");
    lab.write_config(&(off + &lab.services(false)));
    rsbal.signal(Signal::SIGHUP);
    assert_rib("BIRD after bgp = no", &Rib::new(), || bird.rib());
    assert!(!bird.graceful_restart_active());
    assert!(bird
        .protocol()
        .contains("Received: Administrative shutdown"));
}

#[test]
fn graceful_restart_with_gobgp_ends_with_cease_and_the_n_bit() {
    let lab = Lab::new(9);
    let gobgp = GoBgp::start(
        &lab.subdir("gobgp"),
        lab.peer(3, GOBGP_ASN, true),
        free_port(),
    );
    let gr = "bgp-graceful-restart = 60";
    let config = lab.write_config(&(lab.global(&[lab.ip(3)], gr) + &lab.services(true)));
    let mut rsbal = Rsbal::start(&config, &[]);
    assert_rib("GoBGP", &expected(true), || gobgp.rib());
    let all = |stale: bool, rib: &Rib| -> BTreeMap<String, bool> {
        rib.keys().map(|p| (p.clone(), stale)).collect()
    };
    assert_within("fresh routes", || {
        gobgp.stale() == all(false, &expected(true))
    });

    // GoBGP advertised the N bit: rsbal says Cease, GoBGP keeps the routes stale.
    rsbal.signal(Signal::SIGTERM);
    assert!(rsbal.wait_exit(T).is_some(), "rsbal did not stop");
    assert!(
        rsbal.log_text().contains("(Cease with the N bit)"),
        "{}",
        rsbal.log_text()
    );
    assert_within("stale routes", || {
        gobgp.stale() == all(true, &expected(true))
    });
    assert!(
        gobgp.log().contains("peer graceful restart"),
        "{}",
        gobgp.log()
    );

    // Back (without "api"): the re-announced routes are fresh, the rest gone.
    lab.write_config(&(lab.global(&[lab.ip(3)], gr) + &lab.services(false)));
    let _rsbal = Rsbal::start(&config, &[]);
    assert_within("fresh routes after the restart", || {
        gobgp.stale() == all(false, &expected(false))
    });
    assert_eq!(gobgp.rib(), expected(false));
    // The restarted rsbal said so (R bit).
    assert!(
        !gobgp.log().contains("restart flag is not set"),
        "{}",
        gobgp.log()
    );
}

// ---- scripted peers: the peer's side written message by message ----

/// Accepts one connection on `listener` (non-blocking, polled).
fn accept(listener: &TcpListener) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + T;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return stream;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("rsbal did not connect: {e}"),
        }
    }
}

/// A TCP connection from `from` to `to`.
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(from, 0).into()).unwrap();
    socket.connect_timeout(&to.into(), T).unwrap();
    socket.into()
}

/// rsbal with the usual services and one peer at `.2`, where the test
/// listens itself.
fn scripted(net: u8) -> (Lab, TcpListener, Rsbal) {
    let lab = Lab::new(net);
    let listener = TcpListener::bind((lab.ip(2), lab.peer_port)).unwrap();
    let config = lab.write_config(&(lab.global(&[lab.ip(2)], "") + &lab.services(true)));
    let rsbal = Rsbal::start(&config, &[]);
    (lab, listener, rsbal)
}

fn expect_open(wire: &mut Wire, lab: &Lab) -> Open {
    match wire.recv(T) {
        Ok(Message::Open(open)) => {
            assert_eq!(IpAddr::V4(open.bgp_id), lab.rsbal_ip());
            assert_eq!(open.asn, RSBAL_ASN);
            open
        }
        other => panic!("expected OPEN, got {other:?}"),
    }
}

/// The next NOTIFICATION, skipping KEEPALIVEs and UPDATEs.
fn expect_notification(wire: &mut Wire) -> Notification {
    loop {
        match wire.recv(T) {
            Ok(Message::Notification(n)) => return n,
            Ok(Message::Keepalive | Message::Update(_)) => continue,
            other => panic!("expected NOTIFICATION, got {other:?}"),
        }
    }
}

#[test]
fn connection_collision_keeps_the_connection_of_the_higher_identifier() {
    // rsbal's identifier is 127.40.N.1: a peer above it keeps its own
    // (incoming) connection, a peer below keeps rsbal's (outgoing) one.
    for (net, peer_id, outgoing_loses) in [
        (5, Ipv4Addr::new(127, 40, 5, 200), true),
        (6, Ipv4Addr::new(10, 0, 0, 1), false),
    ] {
        let (lab, listener, rsbal) = scripted(net);
        let mut outgoing = Wire::new(accept(&listener));
        expect_open(&mut outgoing, &lab);
        let mut incoming = Wire::new(connect_from(
            lab.ip(2),
            SocketAddr::new(lab.rsbal_ip(), lab.rsbal_port),
        ));
        expect_open(&mut incoming, &lab);
        let open = Message::Open(scripted_open(BIRD_ASN, peer_id, 90));
        outgoing.send(&open);
        incoming.send(&open);
        assert_eq!(outgoing.recv(T), Ok(Message::Keepalive));
        assert_eq!(incoming.recv(T), Ok(Message::Keepalive));
        let (mut loser, mut winner) = if outgoing_loses {
            (outgoing, incoming)
        } else {
            (incoming, outgoing)
        };
        assert_eq!(
            loser.recv_skipping_keepalives(T),
            Ok(Message::Notification(Notification::cease(
                error::CEASE_COLLISION
            )))
        );
        assert_eq!(loser.recv(T), Err("eof".to_string()));
        winner.send(&Message::Keepalive);
        match winner.recv_skipping_keepalives(T) {
            Ok(Message::Update(update)) => assert!(!update.nlri.is_empty()),
            other => panic!("expected the routes, got {other:?}"),
        }
        assert!(rsbal.log_text().contains("connection collision"));
    }
}

#[test]
fn malformed_update_gets_the_matching_notification_then_a_reconnect() {
    let (lab, listener, rsbal) = scripted(7);
    let mut wire = Wire::new(accept(&listener));
    expect_open(&mut wire, &lab);
    wire.send(&Message::Open(scripted_open(
        BIRD_ASN,
        Ipv4Addr::new(192, 0, 2, 7),
        90,
    )));
    wire.send(&Message::Keepalive);
    // An UPDATE whose ORIGIN is flagged optional.
    let mut bad = vec![0xff; 16];
    bad.extend_from_slice(&[
        0x00, 0x1b, 0x02, 0x00, 0x00, 0x00, 0x04, 0xc0, 0x01, 0x01, 0x00,
    ]);
    wire.send_raw(&bad);
    assert_eq!(
        expect_notification(&mut wire),
        Notification::new(
            error::UPDATE,
            error::UPDATE_ATTRIBUTE_FLAGS,
            vec![0xc0, 1, 1, 0]
        )
    );
    // rsbal closes, then tries again after its backoff.
    while wire.recv(T).is_ok() {}
    let mut again = Wire::new(accept(&listener));
    expect_open(&mut again, &lab);
    let log = rsbal.log_text();
    assert!(
        log.contains("sending NOTIFICATION UPDATE Message Error / Attribute Flags Error (3/4)"),
        "{log}"
    );
}

#[test]
fn a_silent_peer_gets_hold_timer_expired() {
    let (lab, listener, _rsbal) = scripted(8);
    let mut wire = Wire::new(accept(&listener));
    expect_open(&mut wire, &lab);
    // Hold time 3 s: rsbal keeps alive every second, and gives up after 3 s
    // without a word from the peer.
    wire.send(&Message::Open(scripted_open(
        BIRD_ASN,
        Ipv4Addr::new(192, 0, 2, 8),
        3,
    )));
    wire.send(&Message::Keepalive);
    let silent_since = Instant::now();
    let mut keepalives = 0;
    let notification = loop {
        match wire.recv(T) {
            Ok(Message::Keepalive) => keepalives += 1,
            Ok(Message::Update(_)) => {}
            Ok(Message::Notification(n)) => break n,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(
        notification,
        Notification::new(error::HOLD_TIMER_EXPIRED, 0, vec![])
    );
    assert!(silent_since.elapsed() >= Duration::from_secs(2));
    assert!(keepalives >= 2, "{keepalives} keepalives");
}
