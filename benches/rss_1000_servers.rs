//! Benchmark: rsbal's memory and CPU with 1,000 servers under
//! IdleConnection + ProxyFetch.
//!
//! 1,000 real backends (one asyncio process, `benches/backends.py`, on
//! 127.201.x.y), one service with the example config's monitor options
//! (ProxyFetch every 2 s), a no-op ipvsadm. Once every server is pooled the
//! benchmark lets checks run for a while and reads `/proc/<pid>/status`
//! (VmRSS, VmHWM, Threads) and the CPU time rsbal used meanwhile.
//!
//! `cargo bench --bench rss_1000_servers` (SERVERS=n, SECONDS=n to change).

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a failed set-up panics; helpers are shared by several crates

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use common::{wait_until, write_atomic};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const PORT: u16 = 8080;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn status_field(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l[field.len()..].trim().to_string())
        .unwrap_or_default()
}

fn main() {
    let servers = env_or("SERVERS", 1000);
    let seconds = env_or("SECONDS", 30);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("ipvsadm.log");
    let script = write_atomic(
        dir.path(),
        "ipvsadm",
        &format!(
            "#!/bin/sh\n[ \"$1\" = \"-R\" ] && cat >> '{}'\nexit 0\n",
            log.display()
        ),
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let hosts: Vec<String> = (0..servers)
        .map(|i| format!("127.201.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let mut backends = Command::new("python3")
        .arg("benches/backends.py")
        .arg(PORT.to_string())
        .args(&hosts)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start benches/backends.py");
    let mut ready = String::new();
    if let Some(out) = backends.stdout.take() {
        let _ = BufReader::new(out).read_line(&mut ready);
    }
    assert_eq!(ready.trim(), "ready", "backends did not start");

    let conf = support::write_bench_config(dir.path(), &script, "192.0.2.201", PORT, &hosts);
    let mut rsbal = Command::new(env!("CARGO_BIN_EXE_rsbal"))
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rsbal");
    let pid = rsbal.id();
    let pooled = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("-a "))
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(60), || pooled() >= servers),
        "only {} of {servers} servers pooled",
        pooled()
    );
    let removed = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("-d "))
            .count()
    };
    let cpu_before = support::cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs(seconds as u64));
    let cpu = support::cpu_seconds(pid) - cpu_before;
    println!(
        "{servers} servers (IdleConnection + ProxyFetch every 2 s), after {seconds} s of checks: \
         VmRSS {}, VmHWM {}, threads {}, CPU {:.1}% of one core, servers wrongly depooled: {}",
        status_field(pid, "VmRSS:"),
        status_field(pid, "VmHWM:"),
        status_field(pid, "Threads:"),
        cpu / seconds as f64 * 100.0,
        removed()
    );
    let _ = rsbal.kill();
    let _ = rsbal.wait();
    let _ = backends.kill();
    let _ = backends.wait();
}
