//! Benchmark: time from a backend resetting its connections to the `-d` for
//! it reaching the ipvsadm process.
//!
//! Ten real backends on loopback, the example config's service options
//! (IdleConnection + ProxyFetch), and an `ipvsadm` stand-in that stamps each
//! batch with bash's `$EPOCHREALTIME` as soon as it has read it from stdin.
//! The benchmark takes the time just before it resets a backend (SO_LINGER 0
//! close of every connection and the listener); the figure is the gap.
//! Backends are reset in turn, each only once every server is pooled again
//! (so the depool threshold never holds a removal back).
//!
//! `cargo bench --bench reset_to_depool` (TRIES=n to change the count).

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a failed set-up panics; helpers are shared by several crates

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{lo, wait_until, write_atomic, Backend, Mode};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PORT: u16 = 8080;
const BACKENDS: u8 = 10;
const VIP: &str = "192.0.2.200";

fn main() {
    let tries: usize = std::env::var("TRIES")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(100);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("ipvsadm.log");
    let script = write_atomic(
        dir.path(),
        "ipvsadm",
        &format!(
            "#!/bin/bash\n[ \"$1\" = \"-R\" ] || exit 0\nbatch=$(cat)\nnow=$EPOCHREALTIME\n\
             while IFS= read -r l; do printf '%s %s\\n' \"$now\" \"$l\"; done <<< \"$batch\" >> '{}'\n",
            log.display()
        ),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let hosts: Vec<String> = (1..=BACKENDS).map(|h| lo(200, h).to_string()).collect();
    let backends: Vec<Backend> = hosts
        .iter()
        .map(|h| Backend::start(SocketAddr::new(h.parse().expect("ip"), PORT)))
        .collect();
    let conf = support::write_bench_config(dir.path(), &script, VIP, PORT, &hosts);
    let mut rsbal = Command::new(env!("CARGO_BIN_EXE_rsbal"))
        .arg("-c")
        .arg(&conf)
        .args(std::env::var("RSBAL_DEBUG").ok().map(|_| "-d"))
        .stdout(
            std::fs::File::create("/tmp/bench-rsbal.log")
                .map(Stdio::from)
                .unwrap_or(Stdio::null()),
        )
        .stderr(Stdio::null())
        .spawn()
        .expect("start rsbal");

    let stamped = |prefix: &str| -> Vec<f64> {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(_, cmd)| *cmd == prefix)
            .filter_map(|(t, _)| t.parse().ok())
            .collect()
    };
    let add = |h: &str| format!("-a -t {VIP}:{PORT} -r {h}:{PORT} -w 10");
    let del = |h: &str| format!("-d -t {VIP}:{PORT} -r {h}:{PORT}");
    let mut latencies = Vec::with_capacity(tries);
    for i in 0..tries {
        let k = i % hosts.len();
        let h = &hosts[k];
        let removed = stamped(&del(h)).len();
        // Every server pooled again (as many adds as removes plus the first
        // one), so the depool threshold never holds a removal back.
        assert!(
            wait_until(Duration::from_secs(30), || hosts.iter().all(|x| stamped(
                &add(x)
            )
            .len()
                > stamped(&del(x)).len())),
            "servers never came back"
        );
        let t0 = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_secs_f64();
        backends[k].set_mode(Mode::Down);
        assert!(
            wait_until(Duration::from_secs(10), || stamped(&del(h)).len() > removed),
            "{h} was never removed"
        );
        let t1 = stamped(&del(h))[removed];
        latencies.push((t1 - t0) * 1000.0);
        if std::env::var("RSBAL_DEBUG").is_ok() {
            println!("{h} t0={t0:.6} t1={t1:.6} {:.2} ms", (t1 - t0) * 1000.0);
        }
        backends[k].set_mode(Mode::Healthy);
    }
    let _ = rsbal.kill();
    let _ = rsbal.wait();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "reset -> '-d' at ipvsadm, {} tries: median {:.2} ms, p90 {:.2} ms, min {:.2} ms, max {:.2} ms",
        latencies.len(),
        pct(0.5),
        pct(0.9),
        latencies[0],
        latencies[latencies.len() - 1]
    );
}
