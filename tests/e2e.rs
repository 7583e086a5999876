//! End-to-end tests: the real rsbal binary, real backends on loopback, a fake
//! ipvsadm that records every batch.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a failed set-up panics; helpers are shared by several crates

mod common;

use common::pool::{add, del, edit, legacy_list as line, PORT};
use common::*;
use nix::sys::signal::Signal;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

/// A `[global]` section with the fake ipvsadm and instrumentation on `http_port`.
fn global(ipvsadm: &FakeIpvsadm, http_port: u16) -> String {
    format!(
        "[global]\nipvsadm = {}\nipvs-backend = ipvsadm\nipvs-reconcile-interval = 0\ninstrumentation = yes\ninstrumentation_port = {http_port}\ninstrumentation_ips = ['127.0.0.1']\n\n",
        ipvsadm.script.display()
    )
}

/// A service section with IdleConnection + ProxyFetch checking every second.
fn checked_service(name: &str, vip: &str, list: &Path, threshold: f64) -> String {
    format!(
        "[{name}]\nprotocol = tcp\nip = {vip}\nport = {PORT}\nscheduler = wrr\n\
         config = file://{}\ndepool-threshold = {threshold}\n\
         monitors = [ 'IdleConnection', 'ProxyFetch' ]\n\
         proxyfetch.url = [ 'http://www.example.org/health' ]\n\
         proxyfetch.interval = 1\nproxyfetch.timeout = 1\n\
         idleconnection.max-delay = 1\nidleconnection.timeout-clean-reconnect = 1\n\n",
        list.display()
    )
}

/// A service section without monitors (servers stay as the list says).
fn plain_service(name: &str, vip: &str, list: &Path) -> String {
    format!(
        "[{name}]\nprotocol = tcp\nip = {vip}\nport = {PORT}\nscheduler = wrr\n\
         config = file://{}\nmonitors = []\n\n",
        list.display()
    )
}

#[test]
fn pools_and_depools_real_backends() {
    let dir = tempfile::tempdir().unwrap();
    let ipvsadm = FakeIpvsadm::new(dir.path());
    let backends: Vec<Backend> = (2..=4)
        .map(|h| Backend::start(SocketAddr::new(lo(1, h), PORT)))
        .collect();
    let vip = "192.0.2.1";
    let list = write_atomic(
        dir.path(),
        "servers",
        &line(&[
            ("127.1.0.2", 10, true),
            ("127.1.0.3", 20, true),
            ("127.1.0.4", 30, true),
        ]),
    );
    let conf = dir.path().join("rsbal.conf");
    std::fs::write(
        &conf,
        global(&ipvsadm, free_port()) + &checked_service("web", vip, &list, 0.5),
    )
    .unwrap();
    let rsbal = Rsbal::start(&conf, &[]);

    ipvsadm.assert_seen(&format!("-A -t {vip}:{PORT} -s wrr"), 1);
    for (rip, w) in [("127.1.0.2", 10), ("127.1.0.3", 20), ("127.1.0.4", 30)] {
        ipvsadm.assert_seen(&add(vip, rip, w), 1);
    }

    // A backend that resets its connections is depooled…
    backends[1].set_mode(Mode::Down);
    ipvsadm.assert_seen(&del(vip, "127.1.0.3"), 1);
    // …and pooled again with its weight when it recovers.
    backends[1].set_mode(Mode::Healthy);
    ipvsadm.assert_seen(&add(vip, "127.1.0.3", 20), 2);

    // Weight changed in the list: -e.
    write_atomic(
        dir.path(),
        "servers",
        &line(&[
            ("127.1.0.2", 15, true),
            ("127.1.0.3", 20, true),
            ("127.1.0.4", 30, true),
        ]),
    );
    ipvsadm.assert_seen(&edit(vip, "127.1.0.2", 15), 1);

    // Server removed from the list: -d.
    write_atomic(
        dir.path(),
        "servers",
        &line(&[("127.1.0.2", 15, true), ("127.1.0.3", 20, true)]),
    );
    ipvsadm.assert_seen(&del(vip, "127.1.0.4"), 1);

    // Disabled: -d.
    write_atomic(
        dir.path(),
        "servers",
        &line(&[("127.1.0.2", 15, true), ("127.1.0.3", 20, false)]),
    );
    ipvsadm.assert_seen(&del(vip, "127.1.0.3"), 2);

    assert!(
        !ipvsadm.lines().iter().any(|l| l.starts_with("-D")),
        "service deleted: {:?}",
        ipvsadm.lines()
    );
    drop(rsbal);
}

#[test]
fn depool_threshold_keeps_the_last_servers_pooled() {
    let dir = tempfile::tempdir().unwrap();
    let ipvsadm = FakeIpvsadm::new(dir.path());
    let hosts = ["127.2.0.2", "127.2.0.3", "127.2.0.4", "127.2.0.5"];
    let backends: Vec<Backend> = hosts
        .iter()
        .map(|h| Backend::start(SocketAddr::new(h.parse().unwrap(), PORT)))
        .collect();
    let vip = "192.0.2.2";
    let list = write_atomic(
        dir.path(),
        "servers",
        &line(&hosts.iter().map(|h| (*h, 10, true)).collect::<Vec<_>>()),
    );
    let http_port = free_port();
    let conf = dir.path().join("rsbal.conf");
    std::fs::write(
        &conf,
        global(&ipvsadm, http_port) + &checked_service("web", vip, &list, 0.5),
    )
    .unwrap();
    let rsbal = Rsbal::start(&conf, &[]);
    for h in hosts {
        ipvsadm.assert_seen(&add(vip, h, 10), 1);
    }

    for b in &backends[1..] {
        b.set_mode(Mode::Down);
    }
    let removed = |ipvsadm: &FakeIpvsadm| {
        ipvsadm
            .lines()
            .iter()
            .filter(|l| l.starts_with("-d "))
            .count()
    };
    assert!(
        wait_until(T, || removed(&ipvsadm) >= 2),
        "{:?}",
        ipvsadm.lines()
    );
    // Every failing server has been seen down by now; give it time to (wrongly) remove a third.
    let api = SocketAddr::from(([127, 0, 0, 1], http_port));
    assert!(wait_until(T, || {
        http_get(api, "/pools/web", true)
            .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
            .map(|v| hosts[1..].iter().all(|h| v[*h]["up"] == false))
            .unwrap_or(false)
    }));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(removed(&ipvsadm), 2, "{:?}", ipvsadm.lines());

    let (status, body) = http_get(api, "/pools/web", true).unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["127.2.0.2"]["pooled"], true);
    assert_eq!(v["127.2.0.2"]["up"], true);
    let down_but_pooled: Vec<&str> = hosts[1..]
        .iter()
        .copied()
        .filter(|h| v[*h]["pooled"] == true && v[*h]["up"] == false)
        .collect();
    assert_eq!(down_but_pooled.len(), 1, "{body}");
    assert!(rsbal.log_text().contains(&format!(
        "Could not depool server {} because of too many down!",
        down_but_pooled[0]
    )));
}

#[test]
fn hung_backend_is_depooled_without_delaying_other_checks() {
    let dir = tempfile::tempdir().unwrap();
    let ipvsadm = FakeIpvsadm::new(dir.path());
    let hosts = ["127.3.0.2", "127.3.0.3", "127.3.0.4"];
    let backends: Vec<Backend> = hosts
        .iter()
        .map(|h| Backend::start(SocketAddr::new(h.parse().unwrap(), PORT)))
        .collect();
    let vip = "192.0.2.3";
    let list = write_atomic(
        dir.path(),
        "servers",
        &line(&hosts.iter().map(|h| (*h, 10, true)).collect::<Vec<_>>()),
    );
    let conf = dir.path().join("rsbal.conf");
    // ProxyFetch timeout 3 s: a serial checker would stall the others that long.
    let service = checked_service("web", vip, &list, 0.3)
        .replace("proxyfetch.timeout = 1", "proxyfetch.timeout = 3");
    std::fs::write(&conf, global(&ipvsadm, free_port()) + &service).unwrap();
    let _rsbal = Rsbal::start(&conf, &[]);
    for h in hosts {
        ipvsadm.assert_seen(&add(vip, h, 10), 1);
    }

    backends[0].set_mode(Mode::Hung);
    let before: Vec<u64> = backends.iter().map(Backend::requests).collect();
    ipvsadm.assert_seen(&del(vip, "127.3.0.2"), 1);
    // The hung server's checks take 3 s each; the others keep their 1 s
    // interval (6 checks in 6 s; a serial checker would manage 2; 4 leaves
    // room for a loaded machine).
    std::thread::sleep(Duration::from_secs(6));
    for (i, b) in backends.iter().enumerate().skip(1) {
        let done = b.requests() - before[i];
        assert!(
            done >= 4,
            "backend {i} was checked only {done} times while another hung"
        );
    }
    let hung = backends[0].requests() - before[0];
    assert!(hung <= 4, "hung backend checked {hung} times");
    assert!(!ipvsadm
        .lines()
        .iter()
        .any(|l| l.contains("127.3.0.3") && l.starts_with("-d")));
}

#[test]
fn sighup_adds_removes_and_changes_services_and_rejects_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    let ipvsadm = FakeIpvsadm::new(dir.path());
    let a = write_atomic(dir.path(), "a", &line(&[("127.4.0.2", 10, true)]));
    let b = write_atomic(dir.path(), "b", &line(&[("127.4.0.3", 10, true)]));
    let c = write_atomic(dir.path(), "c", &line(&[("127.4.0.4", 10, true)]));
    let d1 = write_atomic(dir.path(), "d1", &line(&[("127.4.0.5", 10, true)]));
    let d2 = write_atomic(dir.path(), "d2", &line(&[("127.4.0.5", 99, true)]));
    let http_port = free_port();
    let conf = dir.path().join("rsbal.conf");
    let g = global(&ipvsadm, http_port);
    std::fs::write(
        &conf,
        format!(
            "{g}{}{}{}",
            plain_service("a", "192.0.2.41", &a),
            plain_service("b", "192.0.2.42", &b),
            plain_service("d", "192.0.2.44", &d1)
        ),
    )
    .unwrap();
    let mut rsbal = Rsbal::start(&conf, &[]);
    for (vip, rip) in [
        ("192.0.2.41", "127.4.0.2"),
        ("192.0.2.42", "127.4.0.3"),
        ("192.0.2.44", "127.4.0.5"),
    ] {
        ipvsadm.assert_seen(&add(vip, rip, 10), 1);
    }
    let before = ipvsadm.lines().len();

    std::fs::write(
        &conf,
        format!(
            "{g}{}{}{}",
            plain_service("a", "192.0.2.41", &a),
            plain_service("c", "192.0.2.43", &c),
            plain_service("d", "192.0.2.44", &d2)
        ),
    )
    .unwrap();
    rsbal.signal(Signal::SIGHUP);
    ipvsadm.assert_seen(&format!("-D -t 192.0.2.42:{PORT}"), 1);
    ipvsadm.assert_seen(&format!("-A -t 192.0.2.43:{PORT} -s wrr"), 1);
    ipvsadm.assert_seen(&add("192.0.2.43", "127.4.0.4", 10), 1);
    ipvsadm.assert_seen(&edit("192.0.2.44", "127.4.0.5", 99), 1);
    let after: Vec<String> = ipvsadm.lines()[before..].to_vec();
    assert!(
        !after.iter().any(|l| l.contains("192.0.2.41")),
        "unchanged service touched: {after:?}"
    );
    let api = SocketAddr::from(([127, 0, 0, 1], http_port));
    let (_, pools) = http_get(api, "/pools", false).unwrap();
    assert_eq!(pools.lines().collect::<Vec<_>>(), vec!["a", "c", "d"]);

    // A broken config is rejected as a whole.
    let count = ipvsadm.lines().len();
    std::fs::write(
        &conf,
        format!("{g}[a]\nprotocol = tcp\nthis line is garbage\n"),
    )
    .unwrap();
    rsbal.signal(Signal::SIGHUP);
    assert!(wait_until(T, || rsbal
        .log_text()
        .contains("reload rejected")));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ipvsadm.lines().len(), count, "{:?}", ipvsadm.lines());
    assert!(rsbal.child.try_wait().unwrap().is_none(), "rsbal died");
    let (_, pools) = http_get(api, "/pools", false).unwrap();
    assert_eq!(pools.lines().collect::<Vec<_>>(), vec!["a", "c", "d"]);

    // SIGTERM: stops within a second and leaves IPVS alone.
    rsbal.signal(Signal::SIGTERM);
    let status = rsbal
        .wait_exit(Duration::from_secs(1))
        .expect("still running 1 s after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert_eq!(ipvsadm.lines().len(), count, "{:?}", ipvsadm.lines());
}

#[test]
fn check_names_file_section_and_key_of_a_broken_config() {
    let dir = tempfile::tempdir().unwrap();
    let list = write_atomic(dir.path(), "servers", &line(&[("127.5.0.2", 10, true)]));
    let conf = dir.path().join("broken.conf");
    let check = |port: &str| {
        std::fs::write(
            &conf,
            format!(
                "[global]\n\n[web]\nprotocol = tcp\nip = 192.0.2.5\nport = {port}\nscheduler = wrr\nconfig = file://{}\nmonitors = []\n",
                list.display()
            ),
        )
        .unwrap();
        Command::new(env!("CARGO_BIN_EXE_rsbal"))
            .args(["--check", "-c"])
            .arg(&conf)
            .output()
            .unwrap()
    };
    let out = check("eighty");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&conf.display().to_string()), "{err}");
    assert!(err.contains("[web]"), "{err}");
    assert!(err.contains("port"), "{err}");
    assert!(err.contains(":6"), "line number missing: {err}");

    let out = check("80");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn garbage_server_line_does_not_stop_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let ipvsadm = FakeIpvsadm::new(dir.path());
    let list = write_atomic(
        dir.path(),
        "servers",
        "{ 'host': '127.6.0.2', 'weight': 10 }\n}}} this is not a server {{{\n{ 'host': '127.6.0.3', 'weight': 5 }\n",
    );
    let conf = dir.path().join("rsbal.conf");
    std::fs::write(
        &conf,
        global(&ipvsadm, free_port()) + &plain_service("web", "192.0.2.6", &list),
    )
    .unwrap();
    let rsbal = Rsbal::start(&conf, &[]);
    ipvsadm.assert_seen(&add("192.0.2.6", "127.6.0.2", 10), 1);
    ipvsadm.assert_seen(&add("192.0.2.6", "127.6.0.3", 5), 1);
    let log = rsbal.log_text();
    assert!(log.contains(&format!("{}:2:", list.display())), "{log}");
}

#[test]
fn every_example_config_passes_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let conf = entry.unwrap().path();
        if conf.extension().and_then(|e| e.to_str()) != Some("conf") {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_rsbal"))
            .arg("--check")
            .arg("-c")
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}{}",
            conf.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 3, "only {checked} example configs found");
}
