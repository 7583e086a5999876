//! Monitors: what checks each server, and how results reach its service.
//!
//! Every kind of monitor implements [`Monitor`], whose doc comment is the
//! contract (how it runs, reports and stops, what its waker does), and is
//! registered once, in [`registered`]. Two shapes: *scheduled* kinds
//! (ProxyFetch, RunCommand, DNSQuery) are one [`Check`] per call, which the
//! service thread's check [`scheduler`] runs on the service's elastic worker
//! [`pool`]; *dedicated* kinds (IdleConnection, UDP) keep a small thread of
//! their own per (server, monitor), blocked on their socket. A monitor never
//! touches the coordinator: it returns or sends its result and the service
//! thread decides. Stopping is by dropping the [`MonitorHandle`]: that
//! disconnects the stop channel every sleep waits on and runs the monitor's
//! waker (IdleConnection, DNSQuery and UDP shut their socket down so a
//! blocked read returns at once; RunCommand kills the running command's
//! process group).

pub(crate) mod check;
pub(crate) mod dns_query;
pub(crate) mod http_get;
pub(crate) mod idle_connection;
pub(crate) mod pool;
pub(crate) mod proxy_fetch;
pub(crate) mod reaper;
pub(crate) mod run_command;
pub(crate) mod scheduler;
pub(crate) mod udp;
pub(crate) mod wake;

use crate::config::MonitorConfig;
pub(crate) use check::{CheckError, CheckOutcome, Step};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

/// Stack of a dedicated monitor thread (IdleConnection, UDP): a blocking
/// connect or read, a report, a log line. Only touched pages count in RSS,
/// but each thread's stack is a mapping of its own.
pub(crate) const DEDICATED_STACK_SIZE: usize = 64 * 1024;

/// What a monitor checks: one server of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MonitorTarget {
    pub(crate) service: String,
    pub(crate) host: String,
    pub(crate) ip: IpAddr,
    /// The service port (PyBal checks the real server on the service's port).
    pub(crate) port: u16,
    /// The server's weight when the monitor was started (RunCommand's
    /// `server.weight`).
    pub(crate) weight: u32,
}

impl MonitorTarget {
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// One check result.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MonitorReport {
    /// Identity of the server instance the monitor was started for; results
    /// of a server that has since been removed or restarted are ignored.
    pub(crate) server_id: u64,
    pub(crate) host: String,
    /// Index of the monitor in the service's `monitors` list.
    pub(crate) monitor: usize,
    /// Up, or down for a remote or a local reason.
    pub(crate) outcome: CheckOutcome,
    /// How long the check took, for checks that have a duration.
    pub(crate) duration: Option<Duration>,
}

impl MonitorReport {
    pub(crate) fn up(&self) -> bool {
        self.outcome.is_up()
    }

    /// Why (for down results); a short note for up results.
    pub(crate) fn reason(&self) -> &str {
        self.outcome.reason()
    }
}

/// What a monitor thread gets: where to send results and how to learn it
/// must stop.
pub(crate) struct MonitorContext {
    /// The monitor's [`Monitor::NAME`].
    name: &'static str,
    pub(crate) target: MonitorTarget,
    pub(crate) server_id: u64,
    pub(crate) monitor: usize,
    reports: Sender<MonitorReport>,
    stop: Receiver<()>,
}

impl MonitorContext {
    /// Sends a result; false when the service is gone (the monitor should end).
    pub(crate) fn report(&self, outcome: CheckOutcome, duration: Option<Duration>) -> bool {
        self.reports
            .send(MonitorReport {
                server_id: self.server_id,
                host: self.target.host.clone(),
                monitor: self.monitor,
                outcome,
                duration,
            })
            .is_ok()
    }

    /// True once the handle was dropped.
    pub(crate) fn stopped(&self) -> bool {
        matches!(self.stop.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// Updates this monitor's own metric series (`update` gets the
    /// `service`, `host` and `monitor` label values), unless the monitor was
    /// stopped: once its service thread stopped it and removed the server's
    /// series, no late update can bring them back (see
    /// [`crate::status::metrics::while_current`]).
    pub(crate) fn observe(&self, update: impl FnOnce([&str; 3])) {
        crate::status::metrics::while_current(
            || self.stopped(),
            || update([&self.target.service, &self.target.host, self.name]),
        );
    }

    /// Sleeps for `d` unless stopped first; returns false when stopped.
    pub(crate) fn sleep(&self, d: Duration) -> bool {
        !matches!(
            self.stop.recv_timeout(d),
            Err(RecvTimeoutError::Disconnected) | Ok(())
        )
    }

    /// Sleeps until `deadline` unless stopped first; returns false when stopped.
    pub(crate) fn sleep_until(&self, deadline: Instant) -> bool {
        self.sleep(deadline.saturating_duration_since(Instant::now()))
    }

    /// The log target `<service> <Monitor>`.
    pub(crate) fn log_target(&self) -> String {
        crate::daemon::logging::monitor_target(&self.target.service, self.name)
    }
}

/// Something that wakes a monitor blocked in a system call when it must stop.
pub(crate) type Waker = Box<dyn Fn() + Send + Sync>;

/// Owner's end of a running monitor. Dropping it stops the monitor; the thread
/// ends by itself shortly after (it is not joined, so a monitor stuck in a
/// connect cannot hold up a reload or shutdown).
pub(crate) struct MonitorHandle {
    /// Always `Some` until dropped.
    stop: Option<Sender<()>>,
    waker: Option<Waker>,
}

impl Drop for MonitorHandle {
    /// Disconnects the stop channel first, then wakes the monitor: a monitor
    /// woken from a blocking call must find itself stopped, or it would take
    /// the wake-up (its socket shut down) for the server closing the
    /// connection and reconnect.
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(wake) = &self.waker {
            wake();
        }
    }
}

/// What one scheduled check found, and how long it took (for checks that
/// have a duration).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Checked {
    pub(crate) outcome: CheckOutcome,
    pub(crate) duration: Option<Duration>,
}

/// A scheduled kind's check: one call is one check.
pub(crate) trait Check: Send + 'static {
    /// Runs one check and returns its result, or `None` when the monitor was
    /// stopped during it (nothing is reported then).
    fn check(&mut self, ctx: &MonitorContext) -> Option<Checked>;
}

/// How a monitor runs.
pub(crate) enum Body {
    /// On a thread of its own that blocks on the monitor's socket and reports
    /// whenever it sees something (IdleConnection, UDP); `stack` bytes of
    /// stack.
    Dedicated {
        run: Box<dyn FnOnce(MonitorContext) + Send>,
        stack: usize,
    },
    /// As one check every `interval` (fixed rate), run by its service's
    /// check scheduler on the service's worker pool (ProxyFetch, RunCommand,
    /// DNSQuery).
    Scheduled {
        interval: Duration,
        check: Box<dyn Check>,
    },
}

/// The contract of a kind of monitor. Its module implements it and
/// [`registered`] maps the kind's [`MonitorConfig`] variant to it; besides
/// that variant and its options' parsing (`config`), nothing else changes
/// to add one.
///
/// **Life.** [`Monitor::new`] runs on the service thread when the server's
/// monitors start: it only builds state (no I/O, nothing that blocks) and
/// returns the waker, if the monitor needs one. [`Monitor::body`] says how
/// it runs ([`Body`]):
/// - **scheduled** kinds are a [`Check`]: one call is one check. The service
///   thread's check scheduler ([`scheduler::Schedule`]) calls it every
///   `interval` on the service's elastic worker pool ([`pool`]), never twice
///   at once for the same (server, monitor); a check that hangs holds one
///   worker and delays no other check. Its result is returned, not sent.
/// - **dedicated** kinds get a thread of their own (a small stack), whose
///   body owns everything it uses and sends its results with
///   [`MonitorContext::report`] as it sees them (IdleConnection: each connect
///   and each loss).
///
/// Either way a monitor shares nothing but the state its waker reaches, and
/// never touches the coordinator or another monitor.
///
/// **Reporting.** A result is [`CheckOutcome::Up`] with a short note, or
/// [`CheckOutcome::Down`] with a [`CheckError`] that says whether the server
/// failed (`Remote`) or rsbal could not check for want of its own resources
/// (`Local`, see [`CheckError::io`]); its `Display` is the reason operators
/// read. The first result is reported as soon as it is known; the service
/// thread counts every result and acts on transitions, so repeating a state
/// is cheap. Checks that take time pass their duration. Metric updates go
/// through [`MonitorContext::observe`] only (labels `service`, `host`,
/// `monitor`), so that no late update re-creates the series of a stopped
/// server (a handle obtained there may be kept and reused: once the series
/// is forgotten it updates nothing visible).
///
/// **Stopping.** The owner stops a monitor by dropping its [`MonitorHandle`]
/// (nothing is joined). A dedicated body must then return promptly and report
/// nothing more, a check in flight must end promptly (its result is dropped
/// by the service anyway): every wait is [`MonitorContext::sleep`] or
/// `sleep_until`, which return false at once when stopped, and
/// `report` returning false (the service is gone) ends a dedicated monitor
/// too. Whatever else a monitor blocks in must be cut short by the **waker**
/// (IdleConnection, DNSQuery and UDP shut their socket down,
/// [`wake::SocketStop`] for UDP sockets; RunCommand SIGKILLs the running
/// command's process group) or be bounded by the monitor's own timeout
/// (ProxyFetch's request). The waker runs on the thread that drops the
/// handle, so it must not block; it may run before the monitor has opened
/// what it blocks on, so the monitor checks for a stop after handing a new
/// socket or child to the waker. A stopped monitor leaves nothing behind
/// (RunCommand kills the command's whole process group).
pub(crate) trait Monitor: Send + Sized + 'static {
    /// The kind's name as configured (`IdleConnection`, `DNSQuery`, …): the
    /// `monitor` label of its metrics and its log target.
    const NAME: &'static str;
    /// Its options, as the configuration parsed them.
    type Options;
    /// The monitor of `target`, and the waker that unblocks it (`None` when
    /// it only ever waits on the context's sleeps or its own timeout).
    fn new(opts: &Self::Options, target: &MonitorTarget) -> (Self, Option<Waker>);
    /// How it runs: scheduled checks or a dedicated thread.
    fn body(self) -> Body;
}

/// Something done with the [`Monitor`] kind registered for a configured
/// monitor (start it; in tests, name it).
pub(crate) trait WithKind {
    type Output;
    fn with<M: Monitor>(self, opts: &M::Options) -> Self::Output;
}

/// The registration of every kind of monitor: which [`Monitor`] serves each
/// [`MonitorConfig`] variant.
pub(crate) fn registered<W: WithKind>(config: &MonitorConfig, w: W) -> W::Output {
    match config {
        MonitorConfig::IdleConnection(opts) => w.with::<idle_connection::IdleConnection>(opts),
        MonitorConfig::ProxyFetch(opts) => w.with::<proxy_fetch::ProxyFetch>(opts),
        MonitorConfig::RunCommand(opts) => w.with::<run_command::RunCommand>(opts),
        MonitorConfig::DnsQuery(opts) => w.with::<dns_query::DnsQuery>(opts),
        MonitorConfig::Udp(opts) => w.with::<udp::Udp>(opts),
    }
}

/// Which (server instance, monitor) a scheduled check belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct CheckKey {
    pub(crate) server_id: u64,
    pub(crate) monitor: usize,
}

/// A scheduled monitor: its check, its context and its interval. The service
/// thread keeps it while it waits and hands it to a worker when it is due.
pub(crate) struct ScheduledMonitor {
    pub(crate) ctx: MonitorContext,
    pub(crate) interval: Duration,
    pub(crate) check: Box<dyn Check>,
    /// The kind of its last result (`None` before the first).
    pub(crate) last: Option<pool::ResultClass>,
}

impl ScheduledMonitor {
    pub(crate) fn key(&self) -> CheckKey {
        CheckKey {
            server_id: self.ctx.server_id,
            monitor: self.ctx.monitor,
        }
    }

    /// The report of one of its results.
    pub(crate) fn report(&self, checked: Checked) -> MonitorReport {
        MonitorReport {
            server_id: self.ctx.server_id,
            host: self.ctx.target.host.clone(),
            monitor: self.ctx.monitor,
            outcome: checked.outcome,
            duration: checked.duration,
        }
    }
}

/// A started monitor: the handle that stops it and, for a scheduled kind,
/// the monitor to put on its service's schedule.
pub(crate) struct Started {
    pub(crate) handle: MonitorHandle,
    pub(crate) scheduled: Option<ScheduledMonitor>,
}

/// Starts the monitor described by `config` for `target`: spawns a dedicated
/// kind's thread, or returns a scheduled kind for the caller's schedule. An
/// error is always a local failure (no thread could be created, e.g.
/// `EAGAIN` at the process's thread limit); the caller logs it and the
/// monitor reports nothing.
pub(crate) fn spawn(
    config: &MonitorConfig,
    target: MonitorTarget,
    server_id: u64,
    monitor: usize,
    reports: Sender<MonitorReport>,
) -> std::io::Result<Started> {
    registered(
        config,
        Start {
            target,
            server_id,
            monitor,
            reports,
        },
    )
}

/// Starting a monitor.
struct Start {
    target: MonitorTarget,
    server_id: u64,
    monitor: usize,
    reports: Sender<MonitorReport>,
}

impl WithKind for Start {
    type Output = std::io::Result<Started>;

    fn with<M: Monitor>(self, opts: &M::Options) -> Self::Output {
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let (monitor, waker) = M::new(opts, &self.target);
        let ctx = MonitorContext {
            name: M::NAME,
            target: self.target,
            server_id: self.server_id,
            monitor: self.monitor,
            reports: self.reports,
            stop: stop_rx,
        };
        let handle = MonitorHandle {
            stop: Some(stop_tx),
            waker,
        };
        match monitor.body() {
            Body::Scheduled { interval, check } => Ok(Started {
                handle,
                scheduled: Some(ScheduledMonitor {
                    ctx,
                    interval,
                    check,
                    last: None,
                }),
            }),
            Body::Dedicated { run, stack } => {
                let name = format!("{}:{}:{}", M::NAME, ctx.target.service, ctx.target.host);
                thread::Builder::new()
                    .name(name)
                    .stack_size(stack)
                    .spawn(move || run(ctx))?;
                Ok(Started {
                    handle,
                    scheduled: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{
        DnsQueryOptions, IdleConnectionOptions, ProxyFetchOptions, RunCommandOptions, UdpOptions,
    };

    /// The registered kind's name.
    struct Name;

    impl WithKind for Name {
        type Output = &'static str;
        fn with<M: Monitor>(self, _opts: &M::Options) -> &'static str {
            M::NAME
        }
    }

    #[test]
    fn every_kind_is_registered_under_its_configured_name() {
        let second = Duration::from_secs(1);
        let configs = [
            MonitorConfig::IdleConnection(IdleConnectionOptions::default()),
            MonitorConfig::ProxyFetch(ProxyFetchOptions {
                interval: second,
                timeout: second,
                urls: vec!["http://localhost/".into()],
                check_all: false,
                max_failures: 0,
                http_status: 200,
                verify_tls: false,
            }),
            MonitorConfig::RunCommand(RunCommandOptions {
                interval: second,
                timeout: second,
                command: "/bin/true".into(),
                arguments: vec![],
                log_output: false,
            }),
            MonitorConfig::DnsQuery(DnsQueryOptions {
                interval: second,
                timeout: second,
                hostnames: vec!["localhost".into()],
                fail_on_nxdomain: false,
            }),
            MonitorConfig::Udp(UdpOptions {
                interval: second,
                icmp_timeout: second,
            }),
        ];
        for config in &configs {
            assert_eq!(registered(config, Name), config.name());
        }
    }
}
