//! IdleConnection: keeps one idle TCP connection to the server open and
//! reports down the instant it is lost.
//!
//! The thread sits in a blocking `read` on the connection, so a reset or close
//! by the server is seen at once. Up on connect. Unclean loss (reset, error)
//! or a failed connect: down at once, then reconnect with exponential backoff
//! (factor e, jitter, capped at `max-delay`). A clean close by the server gets
//! one quick reconnect within `timeout-clean-reconnect`; down if that fails.
//!
//! Counters: `pybal_monitor_idleconnection_connections_failed_total`
//! {service, host, monitor} counts failed connection attempts (quick
//! reconnects included); `…_connections_lost_total` {…, reason} counts
//! established connections that ended, `reason` being `reset`, `timeout`
//! (keepalive gave up), `error` (anything else) or `closed` (clean close by
//! the server).

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
        "Failed connection attempts",
        &["service", "host", "monitor"],
    )
});

static CONNECTIONS_LOST: LazyLock<IntCounterVec> = LazyLock::new(|| {
    crate::status::metrics::int_counter_vec(
        "pybal_monitor_idleconnection_connections_lost_total",
        "Established connections lost",
        &["service", "host", "monitor", "reason"],
    )
});

fn count_failed(ctx: &MonitorContext) {
    ctx.observe(|labels| CONNECTIONS_FAILED.with_label_values(&labels).inc());
}

fn count_lost(ctx: &MonitorContext, reason: &str) {
    ctx.observe(|[service, host, monitor]| {
        CONNECTIONS_LOST
            .with_label_values(&[service, host, monitor, reason])
            .inc()
    });
}

/// The `reason` label of a connection lost with `kind`.
fn loss_label(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            "reset"
        }
        ErrorKind::TimedOut => "timeout",
        _ => "error",
    }
}
/// First reconnect delay after a failure (Twisted's ReconnectingClientFactory).
const INITIAL_DELAY: Duration = Duration::from_secs(1);
/// Backoff factor (Twisted's: e).
const BACKOFF_FACTOR: f64 = std::f64::consts::E;
/// Relative jitter of each delay (Twisted's).
const JITTER: f64 = 0.119_626_565_582;
/// Timeout of a normal connect attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection currently open, shared with the waker so that stopping the
/// monitor can shut it down under a blocked read.
type Current = Arc<Mutex<Option<TcpStream>>>;

pub(crate) struct IdleConnection {
    opts: IdleConnectionOptions,
    current: Current,
}

/// How a connection ended.
enum Loss {
    /// The server closed it (EOF).
    Clean,
    /// Reset or another error: what to report, and its `reason` label.
    Unclean(CheckError, &'static str),
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
                        count_failed(&ctx);
                        let error =
                            CheckError::io(Step::Acquire, &e, format!("connect failed: {e}"));
                        if !ctx.report(CheckOutcome::Down(error), None) {
                            return;
                        }
                        if !ctx.sleep(jittered(delay)) {
                            return;
                        }
                        delay = next_delay(delay, self.opts.max_delay);
                        continue;
                    }
                },
            };
            delay = INITIAL_DELAY;
            match self.hold(&ctx, stream) {
                Loss::Stopped => return,
                Loss::Unclean(error, label) => {
                    count_lost(&ctx, label);
                    if !ctx.report(CheckOutcome::Down(error), None) {
                        return;
                    }
                    if !ctx.sleep(jittered(delay)) {
                        return;
                    }
                    delay = next_delay(delay, self.opts.max_delay);
                }
                Loss::Clean => {
                    count_lost(&ctx, "closed");
                    log::debug!(target: &target, "{}: connection closed cleanly, reconnecting", ctx.target.host);
                    match self.connect(&ctx, self.opts.timeout_clean_reconnect) {
                        Ok(stream) => pending = Some(stream),
                        Err(e) => {
                            count_failed(&ctx);
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
        let mut reader = match stream.try_clone() {
            Ok(reader) => reader,
            Err(e) => {
                let reason = format!("connection lost: cannot use socket: {e}");
                return Loss::Unclean(CheckError::io(Step::Acquire, &e, reason), "error");
            }
        };
        {
            let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
            *current = Some(stream);
        }
        // The waker may have run before the stream was published.
        if ctx.stopped() {
            return Loss::Stopped;
        }
        let mut buf = [0u8; 4096];
        let loss = loop {
            match reader.read(&mut buf) {
                Ok(0) => break Loss::Clean,
                Ok(_) => continue, // An idle connection; whatever the server says is ignored.
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    let error = CheckError::io(Step::Use, &e, format!("connection lost: {e}"));
                    break Loss::Unclean(error, loss_label(e.kind()));
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
