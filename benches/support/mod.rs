//! What the daemon benchmarks share: the service config they run, built
//! from the example config's monitor options, and the CPU time of a process.
//! Each bench crate uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Writes a server list of `hosts` (weight 10) and a config with one service
/// `[bench]` at `vip`:`port` under IdleConnection + ProxyFetch with the
/// options of `conf/rsbal.conf`, using `ipvsadm`. Returns the config path.
pub fn write_bench_config(
    dir: &Path,
    ipvsadm: &Path,
    vip: &str,
    port: u16,
    hosts: &[String],
) -> PathBuf {
    let list: String = hosts
        .iter()
        .map(|h| format!("{{ 'host': '{h}', 'weight': 10, 'enabled': True }}\n"))
        .collect();
    let list = crate::common::write_atomic(dir, "servers", &list);
    let example = std::fs::read_to_string("conf/rsbal.conf").expect("conf/rsbal.conf");
    let options: String = example
        .lines()
        .filter(|l| l.starts_with("proxyfetch.") || l.starts_with("idleconnection."))
        .map(|l| format!("{l}\n"))
        .collect();
    let conf = dir.join("rsbal.conf");
    std::fs::write(
        &conf,
        format!(
            "[global]\nipvsadm = {}\nipvs-backend = ipvsadm\nipvs-reconcile-interval = 0\n\n[bench]\nprotocol = tcp\nip = {vip}\nport = {port}\n\
             scheduler = wrr\nconfig = file://{}\ndepool-threshold = 0.5\n\
             monitors = [ \"IdleConnection\", \"ProxyFetch\" ]\n{options}",
            ipvsadm.display(),
            list.display()
        ),
    )
    .expect("write config");
    conf
}

/// utime + stime of `pid`, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_comm = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    ticks / 100.0
}
