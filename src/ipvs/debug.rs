//! Hidden maintenance commands, `rsbal --ipvs-debug …`, used by the
//! real-kernel tests and benchmarks; not part of the documented interface.
//!
//! - `dump [netlink | ipvsadm [PATH]]`: the kernel's table as `ipvsadm -R`
//!   lines, read through either backend.
//! - `watch SECONDS`: netlink dumps in a tight loop; prints how many samples
//!   were taken and every change seen, so a destination that disappears for
//!   a moment (a gap) shows up.
//! - `bench N [IPVSADM]`: times adding, re-weighting and deleting N
//!   destinations of a scratch service, through netlink and through one
//!   `ipvsadm -R` batch per step.

use super::backend::{IpvsBackend, Ipvsadm};
use super::diff::diff_tables;
use super::ipvsadm::restore_line;
use super::netlink::Netlink;
use super::{ForwardingMethod, IpvsCommand, ServiceKey, Table, VirtualService};
use crate::config::Protocol;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What went wrong: a usage error, an [`IpvsError`](super::error::IpvsError)
/// or a bench whose kernel table is not what it wrote; only printed.
type DebugResult<T> = Result<T, Box<dyn std::error::Error>>;

/// How long one netlink answer or `ipvsadm` run may take here: long, for
/// `bench` batches of up to 600,000 commands.
const TIMEOUT: Duration = Duration::from_secs(600);
const USAGE: &str = "usage: rsbal --ipvs-debug dump [netlink | ipvsadm [PATH]]\n\
                     \x20      rsbal --ipvs-debug watch SECONDS\n\
                     \x20      rsbal --ipvs-debug bench N [IPVSADM]";
const DEFAULT_IPVSADM: &str = "/sbin/ipvsadm";
/// The bench's scratch service (TEST-NET-1; no traffic goes there).
const BENCH_VIP: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 250)), 80);

/// Runs one command; returns the exit code.
pub(crate) fn main(args: &[String]) -> i32 {
    let rest = args.get(1..).unwrap_or_default();
    let result = match args.first().map(String::as_str) {
        Some("dump") => dump(rest),
        Some("watch") => watch(rest),
        Some("bench") => bench(rest),
        _ => Err(USAGE.into()),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rsbal --ipvs-debug: {e}");
            1
        }
    }
}

/// The table as the `ipvsadm -R` lines that would create it.
fn table_lines(table: &Table) -> Vec<String> {
    diff_tables(&Table::new(), table)
        .iter()
        .map(restore_line)
        .collect()
}

fn ipvsadm(path: Option<&String>) -> Ipvsadm {
    Ipvsadm {
        path: PathBuf::from(path.map_or(DEFAULT_IPVSADM, String::as_str)),
        timeout: TIMEOUT,
    }
}

fn dump(args: &[String]) -> DebugResult<()> {
    let mut backend: Box<dyn IpvsBackend> = match args.first().map(String::as_str) {
        None | Some("netlink") => Box::new(Netlink::connect(TIMEOUT)?),
        Some("ipvsadm") => Box::new(ipvsadm(args.get(1))),
        Some(other) => return Err(format!("unknown backend {other:?}\n{USAGE}").into()),
    };
    for line in table_lines(&backend.read()?) {
        println!("{line}");
    }
    Ok(())
}

fn watch(args: &[String]) -> DebugResult<()> {
    let secs: f64 = args
        .first()
        .and_then(|s| s.parse().ok())
        .filter(|s: &f64| s.is_finite() && *s > 0.0)
        .ok_or(USAGE)?;
    let duration = Duration::from_secs_f64(secs);
    let mut netlink = Netlink::connect(TIMEOUT)?;
    let start = Instant::now();
    let mut last: Option<Vec<String>> = None;
    let (mut samples, mut changes) = (0u64, 0u64);
    while start.elapsed() < duration {
        let lines = table_lines(&netlink.read()?);
        samples += 1;
        if last.as_ref() != Some(&lines) {
            let what = if last.is_some() { "change" } else { "first" };
            if last.is_some() {
                changes += 1;
            }
            println!(
                "WATCH {what} at {} ms: {}",
                start.elapsed().as_millis(),
                lines.join(" | ")
            );
            last = Some(lines);
        }
    }
    println!("WATCH samples={samples} changes={changes}");
    Ok(())
}

/// The `i`-th bench destination: 127.50.x.y:80.
fn bench_dest(i: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(
        127,
        50 + (i / 62_500) as u8,
        (i / 250 % 250) as u8,
        (i % 250 + 1) as u8,
    );
    SocketAddr::new(IpAddr::V4(ip), 80)
}

fn timed(backend: &mut dyn IpvsBackend, commands: &[IpvsCommand]) -> DebugResult<f64> {
    let start = Instant::now();
    backend.apply(commands)?;
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

/// Adds, re-weights and deletes `n` destinations through `backend`; prints
/// one `BENCH` line.
fn bench_one(backend: &mut dyn IpvsBackend, name: &str, n: usize) -> DebugResult<()> {
    let key = ServiceKey {
        protocol: Protocol::Tcp,
        addr: BENCH_VIP,
    };
    if backend.read()?.contains_key(&key) {
        backend.apply(&[IpvsCommand::DeleteService(key)])?;
    }
    backend.apply(&[IpvsCommand::AddService(VirtualService {
        key,
        scheduler: "wrr".into(),
        ops: false,
    })])?;
    let dests: Vec<SocketAddr> = (0..n).map(bench_dest).collect();
    let with_weight = |weight: u32, add: bool| -> Vec<IpvsCommand> {
        dests
            .iter()
            .map(|dest| {
                let (service, dest, forwarding) = (key, *dest, ForwardingMethod::Dr);
                if add {
                    IpvsCommand::AddDest {
                        service,
                        dest,
                        weight,
                        forwarding,
                    }
                } else {
                    IpvsCommand::EditDest {
                        service,
                        dest,
                        weight,
                        forwarding,
                    }
                }
            })
            .collect()
    };
    let add_ms = timed(backend, &with_weight(1, true))?;
    let start = Instant::now();
    let table = backend.read()?;
    let read_ms = start.elapsed().as_secs_f64() * 1000.0;
    let found = table.get(&key).map_or(0, |st| st.dests.len());
    if found != n {
        return Err(format!("{name}: {found} of {n} destinations in the kernel").into());
    }
    let edit_ms = timed(backend, &with_weight(2, false))?;
    let deletes: Vec<IpvsCommand> = dests
        .iter()
        .map(|dest| IpvsCommand::DeleteDest {
            service: key,
            dest: *dest,
        })
        .collect();
    let delete_ms = timed(backend, &deletes)?;
    backend.apply(&[IpvsCommand::DeleteService(key)])?;
    println!(
        "BENCH backend={name} n={n} add_ms={add_ms:.1} edit_ms={edit_ms:.1} \
         delete_ms={delete_ms:.1} read_ms={read_ms:.1} total_ms={:.1}",
        add_ms + edit_ms + delete_ms
    );
    Ok(())
}

fn bench(args: &[String]) -> DebugResult<()> {
    let n: usize = args
        .first()
        .and_then(|s| s.parse().ok())
        .filter(|n| (1..=600_000).contains(n))
        .ok_or(USAGE)?;
    let mut netlink = Netlink::connect(TIMEOUT)?;
    let mut ipvsadm = ipvsadm(args.get(1));
    bench_one(&mut netlink, "netlink", n)?;
    bench_one(&mut ipvsadm, "ipvsadm", n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_dests_are_distinct_loopback_addresses() {
        let all: std::collections::BTreeSet<SocketAddr> = (0..20_000).map(bench_dest).collect();
        assert_eq!(all.len(), 20_000);
        assert!(all.iter().all(|a| a.ip().is_loopback()));
        assert_eq!(bench_dest(0), "127.50.0.1:80".parse().unwrap());
        assert_eq!(bench_dest(250), "127.50.1.1:80".parse().unwrap());
    }

    #[test]
    fn bad_arguments_are_usage_errors() {
        assert_eq!(main(&[]), 1);
        assert_eq!(main(&["watch".into(), "x".into()]), 1);
        assert_eq!(main(&["bench".into(), "0".into()]), 1);
        assert_eq!(main(&["dump".into(), "ioctl".into()]), 1);
    }
}
