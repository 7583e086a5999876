//! Whether a configuration fits the process's limits, known before they
//! bite: file descriptors, tasks (threads and processes) and memory maps.
//!
//! At start, on reload and with `--check`, rsbal raises its soft
//! `RLIMIT_NOFILE` to the hard limit ([`raise_nofile`]), estimates what the
//! config needs ([`estimate`], pure: per server and monitor, plus a fixed
//! allowance for the daemon's own threads and sockets, plus what the process
//! already uses), reads the limits ([`Limits::read`]: `RLIMIT_NOFILE`,
//! `RLIMIT_NPROC`, `kernel.threads-max`, `kernel.pid_max`, the cgroup's
//! `pids.max`, `vm.max_map_count`, minus what the rest of the system uses of
//! the shared ones) and compares them ([`fit`], pure) with a margin of
//! [`MARGIN_PERCENT`] % on top of the estimate. A config that does not fit
//! is refused at start (before IPVS is touched) and rejected on reload, with
//! the limit and the setting to raise.
//!
//! The estimate assumes the check scheduler's shape: IdleConnection and UDP
//! keep one thread and one socket per server; ProxyFetch, RunCommand and
//! DNSQuery run on a per-service worker pool of at most
//! `W = min(servers × scheduled monitors, MAX_WORKERS)` (32) workers, each check in flight
//! holding one socket (RunCommand: a process and its pipes). Servers are
//! counted in the local server lists (`file://`); services whose list comes
//! over HTTP or etcd count no servers, which [`Shape::unknown_lists`] says.

use crate::config::{Config, MonitorConfig, SourceUrl};
use crate::source::serverlist;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Safety margin on top of the estimate, in percent: the estimate leaves out
/// short-lived fds (a status request's socket beyond the counted ones, the
/// config file being read, an `ipvsadm` child's pipes) and allocator maps.
pub(crate) const MARGIN_PERCENT: u64 = 10;
/// Most workers a service's check pool runs at once (the pool's own cap).
pub(crate) const MAX_WORKERS: u64 = crate::monitor::pool::MAX_WORKERS as u64;
/// Memory maps per thread: its stack and the guard page below it, and the
/// signal stack the Rust runtime gives every thread and its guard page
/// (measured: 900 more IdleConnection threads, 3,600 more lines in
/// /proc/PID/maps). A thread whose signal stack cannot be mapped aborts
/// the process inside the Rust runtime, which no caller can catch: this
/// figure is what keeps rsbal clear of `vm.max_map_count`.
pub(crate) const MAPS_PER_THREAD: u64 = 4;
/// Fds a RunCommand check in flight holds (its output pipes, a pidfd).
const FDS_PER_COMMAND: u64 = 3;
/// The daemon's fixed threads: main, IPVS writer, instrumentation I/O + 4 workers.
const DAEMON_THREADS: u64 = 7;
/// The daemon's fixed fds: signal pipe, netlink socket or an `ipvsadm`
/// child's pipes, the config file, the status server's connections (256
/// whose head is arriving + 64 queued + 4 being answered).
const DAEMON_FDS: u64 = 2 + 3 + 1 + 256 + 64 + 4;
/// Maps of malloc arenas (glibc: up to 8 per core, 2 maps each) and of the
/// files the process maps beyond what it had mapped when measured.
const ALLOCATOR_MAPS: u64 = 2 * 8 * 4;

/// One service as the estimate sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceShape {
    /// Servers in its list (0 when the list is not local).
    pub(crate) servers: u64,
    /// Monitors with a thread and a socket per server (IdleConnection, UDP).
    pub(crate) dedicated: u64,
    /// Monitors run by the worker pool (ProxyFetch, DNSQuery).
    pub(crate) scheduled: u64,
    /// RunCommand monitors (worker pool, and a process per check).
    pub(crate) commands: u64,
}

/// What the estimate is made from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) services: Vec<ServiceShape>,
    /// Services whose server list is remote (HTTP, etcd): not counted.
    pub(crate) unknown_lists: usize,
    /// Most workers a service's check pool runs at once ([`MAX_WORKERS`]).
    pub(crate) max_workers: u64,
    pub(crate) bgp_peers: u64,
    /// Addresses BGP listens on (accept threads).
    pub(crate) bgp_listeners: u64,
    pub(crate) instrumentation_listeners: u64,
}

/// Fds, tasks and maps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Needs {
    pub(crate) fds: u64,
    /// Threads of rsbal.
    pub(crate) threads: u64,
    /// Child processes (RunCommand checks in flight).
    pub(crate) processes: u64,
    pub(crate) maps: u64,
}

impl Needs {
    /// Tasks in the kernel's sense: threads and processes.
    pub(crate) fn tasks(&self) -> u64 {
        self.threads + self.processes
    }

    fn plus(self, other: Needs) -> Needs {
        Needs {
            fds: self.fds + other.fds,
            threads: self.threads + other.threads,
            processes: self.processes + other.processes,
            maps: self.maps + other.maps,
        }
    }
}

/// `n` with [`MARGIN_PERCENT`] on top, rounded up.
pub(crate) fn with_margin(n: u64) -> u64 {
    n + (n * MARGIN_PERCENT).div_ceil(100)
}

/// Workers a service's check pool may run at once, at most `max`.
pub(crate) fn workers(service: &ServiceShape, max: u64) -> u64 {
    (service.servers * (service.scheduled + service.commands)).min(max)
}

/// What a config of `shape` needs on top of what the process had (`base`,
/// measured before any thread started). Pure.
pub(crate) fn estimate(shape: &Shape, base: Needs) -> Needs {
    let mut needs = Needs {
        fds: DAEMON_FDS + shape.instrumentation_listeners,
        threads: DAEMON_THREADS,
        processes: 0,
        maps: ALLOCATOR_MAPS,
    };
    // BGP: per peer a session, up to two readers (collision) and a connect
    // thread, two sockets; per listening address an accept thread and socket.
    needs.threads += shape.bgp_peers * 4 + shape.bgp_listeners;
    needs.fds += shape.bgp_peers * 2 + shape.bgp_listeners;
    for service in &shape.services {
        let pool = workers(service, shape.max_workers);
        // The service thread and its source thread (one file or connection).
        needs.threads += 2;
        needs.fds += 2;
        needs.threads += service.servers * service.dedicated + pool;
        needs.fds += service.servers * service.dedicated;
        // A check in flight: a socket, or a command's pipes and process.
        let commands = (pool * service.commands)
            .checked_div(service.scheduled + service.commands)
            .unwrap_or(0);
        needs.fds += (pool - commands) + commands * FDS_PER_COMMAND;
        needs.processes += commands;
    }
    needs.maps += needs.threads * MAPS_PER_THREAD;
    needs.plus(base)
}

/// The shape of `config`, counting the servers of its local lists.
pub(crate) fn shape(config: &Config) -> Shape {
    let mut shape = Shape {
        max_workers: MAX_WORKERS,
        bgp_peers: if config.global.bgp {
            config.global.bgp_peer_addresses.len() as u64
        } else {
            0
        },
        bgp_listeners: if config.global.bgp {
            config.global.bgp_local_ips.len().max(2) as u64
        } else {
            0
        },
        instrumentation_listeners: if config.global.instrumentation {
            config.global.instrumentation_ips.len().max(1) as u64
        } else {
            0
        },
        ..Shape::default()
    };
    for service in config.services.values() {
        let servers = match &service.source {
            // The sources' own bounded read: a FIFO, a device or a huge
            // file counts no server instead of hanging or filling memory.
            SourceUrl::File(path) => crate::source::read_for_check(path)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|text| serverlist::parse(&text, service.source.is_json()).ok())
                .map_or(0, |list| list.servers.len() as u64),
            _ => {
                shape.unknown_lists += 1;
                0
            }
        };
        let mut s = ServiceShape {
            servers,
            dedicated: 0,
            scheduled: 0,
            commands: 0,
        };
        for monitor in &service.monitors {
            match monitor {
                MonitorConfig::IdleConnection(_) | MonitorConfig::Udp(_) => s.dedicated += 1,
                MonitorConfig::ProxyFetch(_) | MonitorConfig::DnsQuery(_) => s.scheduled += 1,
                MonitorConfig::RunCommand(_) => s.commands += 1,
            }
        }
        shape.services.push(s);
    }
    shape
}

/// Which figure a limit bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bounds {
    Fds,
    /// rsbal's threads and child processes.
    Tasks,
    Maps,
}

/// One limit and how much of it is left for rsbal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Limit {
    /// `RLIMIT_NOFILE`, `kernel.pid_max`, …
    pub(crate) name: &'static str,
    /// What to raise: `LimitNOFILE=`, `TasksMax=`, …
    pub(crate) raise: &'static str,
    pub(crate) bounds: Bounds,
    pub(crate) value: u64,
    /// Used by the rest of the system (shared limits), 0 for the process's own.
    pub(crate) used_by_others: u64,
}

impl Limit {
    pub(crate) fn available(&self) -> u64 {
        self.value.saturating_sub(self.used_by_others)
    }
}

/// A limit the config does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shortfall {
    pub(crate) limit: Limit,
    /// The need, margin included.
    pub(crate) need: u64,
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.limit.bounds {
            Bounds::Fds => "file descriptors",
            Bounds::Tasks => "threads and processes",
            Bounds::Maps => "memory maps",
        };
        write!(
            f,
            "the configuration needs about {} {what} ({MARGIN_PERCENT} % margin included) but {} is {}",
            self.need, self.limit.name, self.limit.value
        )?;
        if self.limit.used_by_others > 0 {
            write!(f, " ({} in use elsewhere)", self.limit.used_by_others)?;
        }
        write!(f, ": raise {}", self.limit.raise)
    }
}

/// The limits that `needs` (margin included by this function) exceeds. Pure.
pub(crate) fn fit(needs: Needs, limits: &[Limit]) -> Vec<Shortfall> {
    limits
        .iter()
        .filter_map(|limit| {
            let need = with_margin(match limit.bounds {
                Bounds::Fds => needs.fds,
                Bounds::Tasks => needs.tasks(),
                Bounds::Maps => needs.maps,
            });
            (need > limit.available()).then(|| Shortfall {
                limit: limit.clone(),
                need,
            })
        })
        .collect()
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft limit
/// now in force.
pub(crate) fn raise_nofile() -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Entries of a /proc directory (fds of the process, its threads).
fn count_entries(path: &str) -> u64 {
    std::fs::read_dir(path).map_or(0, |d| d.count() as u64)
}

/// What the process uses now: fds, threads, maps.
pub(crate) fn in_use() -> Needs {
    Needs {
        fds: count_entries("/proc/self/fd"),
        threads: count_entries("/proc/self/task"),
        processes: 0,
        maps: std::fs::read_to_string("/proc/self/maps").map_or(0, |m| m.lines().count() as u64),
    }
}

/// Memory maps the process had before any thread started (set at start).
static BASE_MAPS: AtomicU64 = AtomicU64::new(0);
/// `vm.max_map_count`, read once.
static MAX_MAPS: OnceLock<Option<u64>> = OnceLock::new();

/// Remembers what the process mapped before its threads started, for
/// [`room_for_a_thread`].
pub(crate) fn set_base_maps(maps: u64) {
    BASE_MAPS.store(maps, Ordering::Relaxed);
}

/// Whether one more thread fits under `vm.max_map_count` (with the margin).
/// A thread whose maps cannot be had aborts the process inside the Rust
/// runtime, so monitor threads ask first; an `Err` is rsbal's own shortage.
pub(crate) fn room_for_a_thread() -> std::io::Result<()> {
    let Some(max) = *MAX_MAPS.get_or_init(|| read_number("/proc/sys/vm/max_map_count")) else {
        return Ok(());
    };
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .unwrap_or(0);
    thread_fits(BASE_MAPS.load(Ordering::Relaxed), threads, max).map_err(std::io::Error::other)
}

/// Whether a thread more than `threads` fits `max` memory maps, the process
/// having had `base` before its threads. Pure.
fn thread_fits(base: u64, threads: u64, max: u64) -> Result<(), String> {
    let need = with_margin(base + ALLOCATOR_MAPS + (threads + 1) * MAPS_PER_THREAD);
    if need > max {
        return Err(format!(
            "no room for another thread: {threads} threads need about {need} memory maps \
             ({MARGIN_PERCENT} % margin included), vm.max_map_count is {max}"
        ));
    }
    Ok(())
}

/// Tasks on the whole system (the total of `/proc/loadavg`).
fn system_tasks() -> Option<u64> {
    let loadavg = std::fs::read_to_string("/proc/loadavg").ok()?;
    let field = loadavg.split_whitespace().nth(3)?;
    field.split_once('/')?.1.parse().ok()
}

/// The cgroup (v2) directory of the process.
fn cgroup_dir() -> Option<String> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(format!("/sys/fs/cgroup{}", path.trim_end_matches('/')))
}

/// The limits in force for this process. `own_tasks` is what the process
/// itself already counts in the shared limits (its threads), so that only
/// the rest of the system's use is subtracted.
pub(crate) fn read_limits(own_tasks: u64) -> Vec<Limit> {
    use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};
    let mut limits = Vec::new();
    if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft != RLIM_INFINITY {
            limits.push(Limit {
                name: "RLIMIT_NOFILE",
                raise: "LimitNOFILE= in the rsbal unit (ulimit -n)",
                bounds: Bounds::Fds,
                value: soft,
                used_by_others: 0,
            });
        }
    }
    // Root is not held to RLIMIT_NPROC; others count every task of the user,
    // which is not counted here.
    if !nix::unistd::geteuid().is_root() {
        if let Ok((soft, _)) = getrlimit(Resource::RLIMIT_NPROC) {
            if soft != RLIM_INFINITY {
                limits.push(Limit {
                    name: "RLIMIT_NPROC",
                    raise: "LimitNPROC= in the rsbal unit (ulimit -u)",
                    bounds: Bounds::Tasks,
                    value: soft,
                    used_by_others: 0,
                });
            }
        }
    }
    let others = system_tasks().map_or(0, |t| t.saturating_sub(own_tasks));
    for (name, path) in [
        ("kernel.threads-max", "/proc/sys/kernel/threads-max"),
        ("kernel.pid_max", "/proc/sys/kernel/pid_max"),
    ] {
        if let Some(value) = read_number(path) {
            limits.push(Limit {
                name,
                raise: if name == "kernel.pid_max" {
                    "the sysctl kernel.pid_max"
                } else {
                    "the sysctl kernel.threads-max"
                },
                bounds: Bounds::Tasks,
                value,
                used_by_others: others,
            });
        }
    }
    if let Some(dir) = cgroup_dir() {
        // "max" does not parse: no limit.
        if let Some(value) = read_number(&format!("{dir}/pids.max")) {
            let current = read_number(&format!("{dir}/pids.current")).unwrap_or(own_tasks);
            limits.push(Limit {
                name: "the cgroup's pids.max",
                raise: "TasksMax= in the rsbal unit",
                bounds: Bounds::Tasks,
                value,
                used_by_others: current.saturating_sub(own_tasks),
            });
        }
    }
    if let Some(value) = read_number("/proc/sys/vm/max_map_count") {
        limits.push(Limit {
            name: "vm.max_map_count",
            raise: "the sysctl vm.max_map_count",
            bounds: Bounds::Maps,
            value,
            used_by_others: 0,
        });
    }
    limits
}

/// The estimate of `config` against the limits in force.
#[derive(Debug, Clone)]
pub(crate) struct Assessment {
    pub(crate) shape: Shape,
    pub(crate) needs: Needs,
    pub(crate) limits: Vec<Limit>,
    pub(crate) shortfalls: Vec<Shortfall>,
}

impl Assessment {
    /// Raises `RLIMIT_NOFILE`, estimates `config` on top of `base` and
    /// compares with the limits in force now.
    pub(crate) fn of(config: &Config, base: Needs) -> Assessment {
        raise_nofile();
        let shape = shape(config);
        let needs = estimate(&shape, base);
        let limits = read_limits(in_use().threads);
        let shortfalls = fit(needs, &limits);
        Assessment {
            shape,
            needs,
            limits,
            shortfalls,
        }
    }

    /// The figures, one line each (`--check` prints them, start and reload
    /// log them).
    pub(crate) fn lines(&self) -> Vec<String> {
        let servers: u64 = self.shape.services.iter().map(|s| s.servers).sum();
        let workers: u64 = self
            .shape
            .services
            .iter()
            .map(|s| workers(s, self.shape.max_workers))
            .sum();
        let mut lines = vec![format!(
            "resources: {} service(s), {servers} server(s) in local lists{}, up to {workers} check worker(s)",
            self.shape.services.len(),
            match self.shape.unknown_lists {
                0 => String::new(),
                n => format!(" ({n} service(s) with a remote list not counted)"),
            }
        )];
        let figure = |what: &str, need: u64, bounds: Bounds| {
            let limits: Vec<String> = self
                .limits
                .iter()
                .filter(|l| l.bounds == bounds)
                .map(|l| {
                    if l.used_by_others > 0 {
                        format!(
                            "{} {} ({} in use elsewhere)",
                            l.name, l.value, l.used_by_others
                        )
                    } else {
                        format!("{} {}", l.name, l.value)
                    }
                })
                .collect();
            format!(
                "resources: {what}: need {need} ({} with the {MARGIN_PERCENT} % margin); limits: {}",
                with_margin(need),
                if limits.is_empty() { "none".to_string() } else { limits.join(", ") }
            )
        };
        lines.push(figure("fds", self.needs.fds, Bounds::Fds));
        lines.push(figure("tasks", self.needs.tasks(), Bounds::Tasks));
        lines.push(figure("memory maps", self.needs.maps, Bounds::Maps));
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(servers: u64, dedicated: u64, scheduled: u64) -> ServiceShape {
        ServiceShape {
            servers,
            dedicated,
            scheduled,
            commands: 0,
        }
    }

    fn shape(services: Vec<ServiceShape>) -> Shape {
        Shape {
            services,
            max_workers: MAX_WORKERS,
            ..Shape::default()
        }
    }

    #[test]
    fn the_pool_is_capped_at_max_workers_per_service() {
        assert_eq!(MAX_WORKERS, 32);
        assert_eq!(workers(&service(100, 1, 1), MAX_WORKERS), 32);
        assert_eq!(workers(&service(10, 1, 2), MAX_WORKERS), 20);
        assert_eq!(workers(&service(10, 1, 0), MAX_WORKERS), 0);
    }

    #[test]
    fn idle_connection_costs_one_fd_and_one_thread_per_server() {
        let base = Needs::default();
        let none = estimate(&shape(vec![service(0, 1, 0)]), base);
        let thousand = estimate(&shape(vec![service(1000, 1, 0)]), base);
        assert_eq!(thousand.fds - none.fds, 1000);
        assert_eq!(thousand.threads - none.threads, 1000);
        assert_eq!(thousand.maps - none.maps, 4000);
        assert_eq!(thousand.processes, 0);
    }

    /// The test box of issue 13: `ulimit -n` 20,000, `kernel.pid_max`
    /// 32,768, `vm.max_map_count` 65,530.
    fn test_box() -> [Limit; 3] {
        let limit = |name, bounds, value, used_by_others| Limit {
            name,
            raise: name,
            bounds,
            value,
            used_by_others,
        };
        [
            limit("RLIMIT_NOFILE", Bounds::Fds, 20_000, 0),
            limit("kernel.pid_max", Bounds::Tasks, 32_768, 500),
            limit("vm.max_map_count", Bounds::Maps, 65_530, 0),
        ]
    }

    /// 100 services × `servers`, IdleConnection + ProxyFetch, pools of at
    /// most `max_workers`: the limits it runs short of.
    fn short_of(servers: u64, max_workers: u64) -> Vec<&'static str> {
        let base = Needs {
            fds: 10,
            threads: 1,
            processes: 0,
            maps: 300,
        };
        let shape = Shape {
            max_workers,
            ..shape((0..100).map(|_| service(servers, 1, 1)).collect())
        };
        let short = fit(estimate(&shape, base), &test_box());
        short.iter().map(|s| s.limit.name).collect()
    }

    #[test]
    fn the_issue_goal_on_the_test_box() {
        // 10,000 servers: 10,000 connections + 100 pools of 64 workers fit
        // the fds (16,600 + 10 %) and the tasks, but not the memory maps
        // (4 per thread); pools of 32 workers (the pool's cap) fit.
        assert_eq!(short_of(100, 64), ["vm.max_map_count"]);
        assert_eq!(short_of(100, MAX_WORKERS), Vec::<&str>::new());
        // 30,000 servers run out of everything, each named with what to raise.
        assert_eq!(
            short_of(300, 64),
            ["RLIMIT_NOFILE", "kernel.pid_max", "vm.max_map_count"]
        );
        let shape = shape((0..100).map(|_| service(300, 1, 1)).collect());
        let short = fit(estimate(&shape, Needs::default()), &test_box());
        let text = short[0].to_string();
        assert!(
            text.contains("but RLIMIT_NOFILE is 20000: raise RLIMIT_NOFILE"),
            "{text}"
        );
        assert_eq!(
            estimate(&shape, Needs::default()).fds
                - estimate(&Shape::default(), Needs::default()).fds,
            100 * (2 + 300 + MAX_WORKERS)
        );
    }

    #[test]
    fn the_margin_is_ten_percent_and_others_use_counts() {
        let needs = Needs {
            fds: 1000,
            threads: 95,
            processes: 5,
            maps: 0,
        };
        assert_eq!(with_margin(needs.fds), 1100);
        let limit = |value, used_by_others| Limit {
            name: "kernel.threads-max",
            raise: "kernel.threads-max",
            bounds: Bounds::Tasks,
            value,
            used_by_others,
        };
        assert!(fit(needs, &[limit(110, 0)]).is_empty());
        let short = fit(needs, &[limit(110, 1)]);
        assert_eq!(short.len(), 1);
        assert_eq!(short[0].need, 110);
        assert!(short[0].to_string().contains("(1 in use elsewhere)"));
    }

    #[test]
    fn a_thread_is_refused_before_the_maps_run_out() {
        // (300 + 64 + 4 × 14,000) × 1.1 = 62,000: fits 65,530.
        assert_eq!(thread_fits(300, 13_999, 65_530), Ok(()));
        let refused = thread_fits(300, 15_000, 65_530).unwrap_err();
        assert!(refused.contains("vm.max_map_count is 65530"), "{refused}");
    }

    #[test]
    fn run_command_checks_in_flight_are_processes_with_pipes() {
        let mut s = service(10, 0, 0);
        s.commands = 1;
        let needs = estimate(&shape(vec![s]), Needs::default());
        let daemon = estimate(&shape(vec![]), Needs::default());
        assert_eq!(needs.processes, 10);
        assert_eq!(needs.fds - daemon.fds, 2 + 10 * FDS_PER_COMMAND);
    }
}
