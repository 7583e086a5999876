//! IdleConnection: keeps one idle TCP connection to the server open and
//! reports down the instant it is lost.
//!
//! The thread sits in a blocking `read` on the connection, so a reset or close
//! by the server is seen at once. Up on connect. Unclean loss (reset, error)
//! or a failed connect: down at once, then reconnect with exponential backoff
//! (factor e, jitter, capped at `max-delay`). A clean close by the server gets
//! one quick reconnect within `timeout-clean-reconnect`; down if that fails.
//! A stopped monitor (server removed, reload, shutdown) never reconnects: its
//! handle disconnects the stop channel before it shuts the socket down.
//!
//! Counters, as PyBal has them:
//! `pybal_monitor_idleconnection_connections_failed_total`
//! {service, host, monitor, reason} counts failed connection attempts (quick
//! reconnects included), and `…_connections_lost_total` {…, reason} counts
//! established connections lost uncleanly; a clean close by the server is
//! not counted (it only triggers the quick reconnect). `reason` is the name
//! of the Twisted failure PyBal would have seen ([`connect_failure`],
//! [`LOST`]).
//!
//! One fd per connection: the stream is shared with the waker (an `Arc`),
//! not cloned; stopping shuts it down under the blocked read.

use super::{Body, CheckError, CheckOutcome, Monitor, MonitorContext, MonitorTarget, Step, Waker};
use crate::config::IdleConnectionOptions;
use prometheus::IntCounterVec;
use socket2::{SockRef, TcpKeepalive};
use std::io::{ErrorKind, Read};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

static CONNECTIONS_FAILED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    crate::status::metrics::int_counter_vec(
        "pybal_monitor_idleconnection_connections_failed_total",
        "Connections failed to establish",
        &["service", "host", "monitor", "reason"],
    )
});

static CONNECTIONS_LOST: LazyLock<IntCounterVec> = LazyLock::new(|| {
    crate::status::metrics::int_counter_vec(
        "pybal_monitor_idleconnection_connections_lost_total",
        "Connections lost",
        &["service", "host", "monitor", "reason"],
    )
});

fn count_failed(ctx: &MonitorContext, error: &std::io::Error) {
    let reason = connect_failure(error);
    ctx.observe(|[service, host, monitor]| {
        CONNECTIONS_FAILED
            .with_label_values(&[service, host, monitor, reason])
            .inc()
    });
}

fn count_lost(ctx: &MonitorContext) {
    ctx.observe(|[service, host, monitor]| {
        CONNECTIONS_LOST
            .with_label_values(&[service, host, monitor, LOST])
            .inc()
    });
}

/// The `reason` of a failed connect: the Twisted error PyBal got for it
/// (`twisted.internet.error.getConnectError`, and `TimeoutError` for its own
/// connect timer, which is what a `connect_timeout` that runs out is).
fn connect_failure(error: &std::io::Error) -> &'static str {
    const ETIMEDOUT: i32 = nix::libc::ETIMEDOUT;
    const ENETUNREACH: i32 = nix::libc::ENETUNREACH;
    const EHOSTUNREACH: i32 = nix::libc::EHOSTUNREACH;
    match (error.kind(), error.raw_os_error()) {
        (ErrorKind::ConnectionRefused, _) => "ConnectionRefusedError",
        (_, Some(ETIMEDOUT)) => "TCPTimedOutError",
        (_, Some(ENETUNREACH | EHOSTUNREACH)) => "NoRouteError",
        (ErrorKind::TimedOut, None) => "TimeoutError",
        _ => "ConnectError",
    }
}

/// The `reason` of an established connection lost uncleanly: Twisted reports
/// a reset, a keepalive timeout or any other read error as `ConnectionLost`.
const LOST: &str = "ConnectionLost";
/// First reconnect delay after a failure (Twisted's ReconnectingClientFactory).
const INITIAL_DELAY: Duration = Duration::from_secs(1);
/// Backoff factor (Twisted's: e).
const BACKOFF_FACTOR: f64 = std::f64::consts::E;
/// Relative jitter of each delay (Twisted's).
const JITTER: f64 = 0.119_626_565_582;
/// Timeout of a normal connect attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection currently open, shared with the waker so that stopping the
/// monitor can shut it down under a blocked read. The stream itself is
/// shared (not a `try_clone`), so a connection costs one fd.
type Current = Arc<Mutex<Option<Arc<TcpStream>>>>;

pub(crate) struct IdleConnection {
    opts: IdleConnectionOptions,
    current: Current,
}

/// How a connection ended.
enum Loss {
    /// The server closed it (EOF).
    Clean,
    /// Reset or another error: what to report.
    Unclean(CheckError),
    /// We are stopping.
    Stopped,
}

impl Monitor for IdleConnection {
    const NAME: &'static str = "IdleConnection";
    type Options = IdleConnectionOptions;

    /// The monitor and the waker that interrupts its blocking read.
    fn new(opts: &IdleConnectionOptions, _target: &MonitorTarget) -> (Self, Option<Waker>) {
        let current: Current = Arc::new(Mutex::new(None));
        let for_waker = Arc::clone(&current);
        let waker: Waker = Box::new(move || {
            let guard = for_waker.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(stream) = guard.as_ref() {
                let _ = stream.shutdown(Shutdown::Both);
            }
        });
        let opts = opts.clone();
        (IdleConnection { opts, current }, Some(waker))
    }

    /// A dedicated thread (small stack) blocked on its socket.
    fn body(self) -> Body {
        Body::Dedicated {
            run: Box::new(move |ctx| self.run(ctx)),
            stack: super::DEDICATED_STACK_SIZE,
        }
    }
}

impl IdleConnection {
    /// The monitor thread's body.
    fn run(self, ctx: MonitorContext) {
        let target = ctx.log_target();
        let mut delay = INITIAL_DELAY;
        let mut pending: Option<TcpStream> = None;
        while !ctx.stopped() {
            let stream = match pending.take() {
                Some(stream) => stream,
                None => match self.connect(&ctx, CONNECT_TIMEOUT) {
                    Ok(stream) => {
                        log::debug!(target: &target, "{}: connection established", ctx.target.host);
                        let up = CheckOutcome::Up("connection established".to_string());
                        if !ctx.report(up, None) {
                            return;
                        }
                        stream
                    }
                    Err(e) => {
                        count_failed(&ctx, &e);
                        let error =
                            CheckError::io(Step::Acquire, &e, format!("connect failed: {e}"));
                        // rsbal's own shortage says nothing of the server:
                        // retried soon, without growing the backoff.
                        let local = error.is_local();
                        if !ctx.report(CheckOutcome::Down(error), None) {
                            return;
                        }
                        if !ctx.sleep(jittered(delay)) {
                            return;
                        }
                        if !local {
                            delay = next_delay(delay, self.opts.max_delay);
                        }
                        continue;
                    }
                },
            };
            delay = INITIAL_DELAY;
            match self.hold(&ctx, stream) {
                Loss::Stopped => return,
                Loss::Unclean(error) => {
                    count_lost(&ctx);
                    if !ctx.report(CheckOutcome::Down(error), None) {
                        return;
                    }
                    if !ctx.sleep(jittered(delay)) {
                        return;
                    }
                    delay = next_delay(delay, self.opts.max_delay);
                }
                Loss::Clean => {
                    log::debug!(target: &target, "{}: connection closed cleanly, reconnecting", ctx.target.host);
                    match self.connect(&ctx, self.opts.timeout_clean_reconnect) {
                        Ok(stream) => pending = Some(stream),
                        Err(e) => {
                            count_failed(&ctx, &e);
                            let reason = format!("connection closed and reconnect failed: {e}");
                            let error = CheckError::io(Step::Acquire, &e, reason);
                            if !ctx.report(CheckOutcome::Down(error), None) {
                                return;
                            }
                            if !ctx.sleep(jittered(delay)) {
                                return;
                            }
                            delay = next_delay(delay, self.opts.max_delay);
                        }
                    }
                }
            }
        }
    }
    fn connect(&self, ctx: &MonitorContext, timeout: Duration) -> std::io::Result<TcpStream> {
        let stream = TcpStream::connect_timeout(&ctx.target.addr(), timeout)?;
        if self.opts.keepalive {
            let keepalive = TcpKeepalive::new()
                .with_time(self.opts.keepalive_idle)
                .with_interval(self.opts.keepalive_interval)
                .with_retries(self.opts.keepalive_retries);
            SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
        }
        Ok(stream)
    }

    /// Blocks on the open connection until it ends.
    fn hold(&self, ctx: &MonitorContext, stream: TcpStream) -> Loss {
        let stream = Arc::new(stream);
        {
            let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            *current = Some(Arc::clone(&stream));
        }
        // The waker may have run before the stream was published.
        if ctx.stopped() {
            return Loss::Stopped;
        }
        // Small: whatever the server says is discarded, and a page-sized
        // buffer would be one more touched stack page per server (40 MiB at
        // 10,000 servers).
        let mut buf = [0u8; 128];
        let loss = loop {
            match (&*stream).read(&mut buf) {
                Ok(0) => break Loss::Clean,
                Ok(_) => continue, // An idle connection; whatever the server says is ignored.
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    let error = CheckError::io(Step::Use, &e, format!("connection lost: {e}"));
                    break Loss::Unclean(error);
                }
            }
        };
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if ctx.stopped() {
            Loss::Stopped
        } else {
            loss
        }
    }
}

fn next_delay(delay: Duration, max: Duration) -> Duration {
    delay.mul_f64(BACKOFF_FACTOR).min(max)
}

fn jittered(delay: Duration) -> Duration {
    let spread = (fastrand::f64() * 2.0 - 1.0) * JITTER;
    delay.mul_f64(1.0 + spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_failures_are_named_as_twisted_named_them() {
        use std::io::Error;
        let os = Error::from_raw_os_error;
        assert_eq!(
            connect_failure(&os(nix::libc::ECONNREFUSED)),
            "ConnectionRefusedError"
        );
        assert_eq!(
            connect_failure(&os(nix::libc::ETIMEDOUT)),
            "TCPTimedOutError"
        );
        assert_eq!(
            connect_failure(&os(nix::libc::EHOSTUNREACH)),
            "NoRouteError"
        );
        assert_eq!(connect_failure(&os(nix::libc::ENETUNREACH)), "NoRouteError");
        // std's connect_timeout running out: no errno, like Twisted's own timer.
        assert_eq!(
            connect_failure(&Error::new(ErrorKind::TimedOut, "connection timed out")),
            "TimeoutError"
        );
        assert_eq!(
            connect_failure(&os(nix::libc::EADDRNOTAVAIL)),
            "ConnectError"
        );
    }

    #[test]
    fn backoff_grows_by_e_and_is_capped() {
        let max = Duration::from_secs(300);
        let mut d = INITIAL_DELAY;
        let mut seen = vec![];
        for _ in 0..8 {
            seen.push(d.as_secs_f64());
            d = next_delay(d, max);
        }
        assert!((seen[1] - std::f64::consts::E).abs() < 1e-9);
        assert_eq!(d, max);
    }

    #[test]
    fn jitter_stays_within_twelve_percent() {
        for _ in 0..1000 {
            let j = jittered(Duration::from_secs(10)).as_secs_f64();
            assert!((8.8..=11.2).contains(&j), "{j}");
        }
    }
}
