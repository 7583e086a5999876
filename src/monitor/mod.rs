//! Monitors: one thread per (server, monitor), each reporting results to its
//! service thread over a crossbeam channel.
//!
//! A monitor thread owns only its own socket or timer. It never touches the
//! coordinator: it sends a [`MonitorReport`] and the service thread decides.
//! Stopping is by dropping the [`MonitorHandle`]: that disconnects the stop
//! channel every sleep waits on and runs the monitor's waker (IdleConnection,
//! DNSQuery and UDP shut their socket down so a blocked read returns at once;
//! RunCommand kills the running command's process group).

pub(crate) mod dns_query;
pub(crate) mod idle_connection;
pub(crate) mod proxy_fetch;
pub(crate) mod run_command;
pub(crate) mod udp;
pub(crate) mod wake;

use crate::config::MonitorConfig;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::net::{IpAddr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant};

/// Stack size of a monitor thread. Monitors keep little on the stack (TLS
/// handshakes being the deepest), and large sites run thousands of them.
const MONITOR_STACK_SIZE: usize = 256 * 1024;

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
    pub(crate) up: bool,
    /// Why (for down results); a short note for up results.
    pub(crate) reason: String,
    /// How long the check took, for checks that have a duration.
    pub(crate) duration: Option<Duration>,
}

/// What a monitor thread gets: where to send results and how to learn it
/// must stop.
pub(crate) struct MonitorContext {
    pub(crate) target: MonitorTarget,
    pub(crate) server_id: u64,
    pub(crate) monitor: usize,
    reports: Sender<MonitorReport>,
    stop: Receiver<()>,
}

impl MonitorContext {
    /// Sends a result; false when the service is gone (the monitor should end).
    pub(crate) fn report(
        &self,
        up: bool,
        reason: impl Into<String>,
        duration: Option<Duration>,
    ) -> bool {
        self.reports
            .send(MonitorReport {
                server_id: self.server_id,
                host: self.target.host.clone(),
                monitor: self.monitor,
                up,
                reason: reason.into(),
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
    pub(crate) fn observe(&self, monitor_name: &str, update: impl FnOnce([&str; 3])) {
        crate::status::metrics::while_current(
            || self.stopped(),
            || update([&self.target.service, &self.target.host, monitor_name]),
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

    /// Runs `check` at once and then on a fixed-rate schedule: the next
    /// check is due `interval` after the previous one started, or at once if
    /// that one overran. Ends when stopped or when `check` returns false.
    pub(crate) fn every(&self, interval: Duration, mut check: impl FnMut() -> bool) {
        let mut next = Instant::now();
        while self.sleep_until(next) {
            let started = Instant::now();
            if !check() {
                return;
            }
            next = (started + interval).max(Instant::now());
        }
    }

    /// The log target `<service> <Monitor>`.
    pub(crate) fn log_target(&self, monitor_name: &str) -> String {
        crate::daemon::logging::monitor_target(&self.target.service, monitor_name)
    }
}

/// Something that wakes a monitor blocked in a system call when it must stop.
pub(crate) type Waker = Box<dyn Fn() + Send + Sync>;

/// Owner's end of a running monitor. Dropping it stops the monitor; the thread
/// ends by itself shortly after (it is not joined, so a monitor stuck in a
/// connect cannot hold up a reload or shutdown).
pub(crate) struct MonitorHandle {
    _stop: Sender<()>,
    waker: Option<Waker>,
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        if let Some(wake) = &self.waker {
            wake();
        }
    }
}

/// Starts the monitor described by `config` for `target`.
pub(crate) fn spawn(
    config: &MonitorConfig,
    target: MonitorTarget,
    server_id: u64,
    monitor: usize,
    reports: Sender<MonitorReport>,
) -> std::io::Result<MonitorHandle> {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded(0);
    let name = format!("{}:{}:{}", config.name(), target.service, target.host);
    let ctx = MonitorContext {
        target,
        server_id,
        monitor,
        reports,
        stop: stop_rx,
    };
    let builder = thread::Builder::new()
        .name(name)
        .stack_size(MONITOR_STACK_SIZE);
    let waker = match config {
        MonitorConfig::IdleConnection(opts) => {
            let (monitor, waker) = idle_connection::IdleConnection::new(opts.clone());
            builder.spawn(move || monitor.run(ctx))?;
            Some(waker)
        }
        MonitorConfig::ProxyFetch(opts) => {
            let monitor = proxy_fetch::ProxyFetch::new(opts.clone(), &ctx.target);
            builder.spawn(move || monitor.run(ctx))?;
            None
        }
        MonitorConfig::RunCommand(opts) => {
            let (monitor, waker) = run_command::RunCommand::new(opts.clone(), &ctx.target);
            builder.spawn(move || monitor.run(ctx))?;
            Some(waker)
        }
        MonitorConfig::DnsQuery(opts) => {
            let (monitor, waker) = dns_query::DnsQuery::new(opts.clone());
            builder.spawn(move || monitor.run(ctx))?;
            Some(waker)
        }
        MonitorConfig::Udp(opts) => {
            let (monitor, waker) = udp::Udp::new(opts.clone());
            builder.spawn(move || monitor.run(ctx))?;
            Some(waker)
        }
    };
    Ok(MonitorHandle {
        _stop: stop_tx,
        waker,
    })
}
