//! Benchmark: time to apply 1,000 and 10,000 destination changes through
//! netlink and through `ipvsadm -R`, in the same guest kernel.
//!
//! Boots the Debian kernel under qemu (TCG, see `tests/kernel/harness.rs`)
//! and runs `tests/kernel/guest/bench.sh`: `rsbal --ipvs-debug bench N`
//! adds N destinations to a scratch service, re-weights them and deletes
//! them, each step as one batch through each backend, three rounds per N.
//! TCG makes absolute times slow; the ratio between the backends is the
//! figure to read.
//!
//! `cargo bench --bench ipvs_apply`

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a failed set-up panics; helpers are shared by several crates

#[path = "../tests/kernel/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::time::Duration;

fn main() {
    let run = harness::boot("bench.sh", Duration::from_secs(1200));
    // (n, backend, step) -> times in ms
    let mut times: BTreeMap<(usize, String, String), Vec<f64>> = BTreeMap::new();
    for line in run.console.lines().filter(|l| l.starts_with("BENCH ")) {
        let fields: BTreeMap<&str, &str> = line
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .collect();
        let (Some(backend), Some(n)) = (fields.get("backend"), fields.get("n")) else {
            continue;
        };
        let n: usize = n.parse().unwrap_or(0);
        for step in ["add", "edit", "delete", "total", "read"] {
            if let Some(ms) = fields
                .get(format!("{step}_ms").as_str())
                .and_then(|v| v.parse::<f64>().ok())
            {
                times
                    .entry((n, backend.to_string(), step.to_string()))
                    .or_default()
                    .push(ms);
            }
        }
    }
    if times.is_empty() || !run.finished {
        eprintln!("no figures; guest console:\n{}", run.console);
        std::process::exit(1);
    }
    let median = |v: &Vec<f64>| {
        let mut v = v.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("| changes | step | netlink (ms) | ipvsadm -R (ms) | ipvsadm / netlink |");
    println!("|---|---|---|---|---|");
    for n in [1000usize, 10_000] {
        for step in ["add", "edit", "delete", "total", "read"] {
            let get = |b: &str| times.get(&(n, b.to_string(), step.to_string())).map(median);
            if let (Some(nl), Some(adm)) = (get("netlink"), get("ipvsadm")) {
                println!(
                    "| {n} | {step} | {nl:.1} | {adm:.1} | {:.1}x |",
                    adm / nl.max(0.001)
                );
            }
        }
    }
}
