//! UDP: every `interval`, an empty datagram to server:port on a connected UDP
//! socket. When nothing listens there, the server's kernel answers with an
//! ICMP port unreachable, which the local kernel turns into an error
//! (`ECONNREFUSED`) on the socket: down at once. Up again once no such error
//! has been seen for `icmp-timeout`.
//!
//! Between checks the thread blocks in `recv` on the socket, so an ICMP error
//! is seen the moment it arrives. After each send it waits up to one second
//! (or the interval, if shorter) for an error before it counts the check as
//! up, so a server whose port is closed is never reported up first and down
//! a moment later (which PyBal did).

use super::wake::SocketStop;
use super::{Body, CheckError, CheckOutcome, Monitor, MonitorContext, MonitorTarget, Step, Waker};
use crate::config::UdpOptions;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How long after a send an ICMP error is awaited before the check is up.
const ERROR_GRACE: Duration = Duration::from_secs(1);

pub(crate) struct Udp {
    opts: UdpOptions,
    stop: SocketStop,
}

/// What a wait on the socket ended with.
enum Wait {
    /// The deadline passed without an error.
    Quiet,
    /// An ICMP error arrived (as a socket error).
    Unreachable(io::Error),
    /// Another socket error: the socket is dropped and reopened.
    Failed(io::Error),
    Stopped,
}

impl Monitor for Udp {
    const NAME: &'static str = "UDP";
    type Options = UdpOptions;

    /// The monitor and the waker that interrupts its blocking `recv`.
    fn new(opts: &UdpOptions, _target: &MonitorTarget) -> (Self, Option<Waker>) {
        let (stop, waker) = SocketStop::new();
        let opts = opts.clone();
        (Udp { opts, stop }, Some(waker))
    }

    /// A dedicated thread (small stack) blocked on its socket.
    fn body(self) -> Body {
        Body::Dedicated {
            run: Box::new(move |ctx| self.run(ctx)),
            stack: super::DEDICATED_STACK_SIZE,
        }
    }
}

impl Udp {
    /// The monitor thread's body.
    fn run(self, ctx: MonitorContext) {
        let log_target = ctx.log_target();
        let host = ctx.target.host.clone();
        let mut last_error: Option<Instant> = None;
        let mut socket: Option<UdpSocket> = None;
        let mut next = Instant::now();
        loop {
            if !ctx.sleep_until(next) || self.stop.is_stopped() {
                return;
            }
            let started = Instant::now();
            next = started + self.opts.interval;
            let sock = match socket.take() {
                Some(sock) => sock,
                None => match self.open(ctx.target.addr()) {
                    Ok(sock) => sock,
                    Err(e) => {
                        let reason = format!("cannot open a UDP socket: {e}");
                        let error = CheckError::io(Step::Acquire, &e, reason);
                        if !ctx.report(CheckOutcome::Down(error), None) {
                            return;
                        }
                        continue;
                    }
                },
            };
            let sent = match sock.send(&[]) {
                Ok(_) => Wait::Quiet,
                Err(e) if is_unreachable(&e) => Wait::Unreachable(e),
                Err(e) => Wait::Failed(e),
            };
            let grace = started + ERROR_GRACE.min(self.opts.interval);
            let first = match sent {
                Wait::Quiet => self.wait_for_error(&sock, grace),
                other => other,
            };
            let mut flow = match first {
                Wait::Quiet => {
                    if quiet_long_enough(last_error, Instant::now(), self.opts.icmp_timeout) {
                        let reason = "no ICMP error received".to_string();
                        log::debug!(target: &log_target, "{host}: {reason}");
                        if !ctx.report(CheckOutcome::Up(reason), None) {
                            return;
                        }
                    } else {
                        log::debug!(target: &log_target,
                            "{host}: no new ICMP error, but the last one is less than icmp-timeout ago");
                    }
                    Flow::Keep
                }
                failure => on_failure(&ctx, failure, &mut last_error),
            };
            // Until the next check, report every ICMP error the moment it comes.
            while flow == Flow::Keep {
                match self.wait_for_error(&sock, next) {
                    Wait::Quiet => break,
                    failure => flow = on_failure(&ctx, failure, &mut last_error),
                }
            }
            match flow {
                Flow::Stop => return,
                Flow::Keep => socket = Some(sock),
                Flow::Reopen => self.stop.unwatch(),
            }
        }
    }
    /// A UDP socket connected to `addr` and registered with the waker.
    fn open(&self, addr: SocketAddr) -> io::Result<UdpSocket> {
        let sock = connected_socket(addr)?;
        self.stop.watch(&sock);
        Ok(sock)
    }

    /// Blocks in `recv` until `deadline`, an ICMP error or a stop. Datagrams
    /// the server sends back are ignored.
    fn wait_for_error(&self, sock: &UdpSocket, deadline: Instant) -> Wait {
        let mut buf = [0u8; 512];
        loop {
            if self.stop.is_stopped() {
                return Wait::Stopped;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Wait::Quiet;
            }
            if let Err(e) = sock.set_read_timeout(Some(left)) {
                return Wait::Failed(e);
            }
            match sock.recv(&mut buf) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) if is_unreachable(&e) => return Wait::Unreachable(e),
                Err(e) => return Wait::Failed(e),
            }
        }
    }
}

/// What to do with the socket after a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Keep,
    /// A socket error other than an ICMP one: open a new socket next time.
    Reopen,
    Stop,
}

/// Reports a failed wait (an ICMP error is remembered in `last_error`).
fn on_failure(ctx: &MonitorContext, failure: Wait, last_error: &mut Option<Instant>) -> Flow {
    let (error, flow) = match failure {
        Wait::Quiet => return Flow::Keep,
        Wait::Stopped => return Flow::Stop,
        Wait::Unreachable(e) => {
            *last_error = Some(Instant::now());
            (CheckError::Remote(unreachable_reason(&e)), Flow::Keep)
        }
        Wait::Failed(e) => {
            let reason = format!("UDP socket error: {e}");
            (CheckError::io(Step::Use, &e, reason), Flow::Reopen)
        }
    };
    if ctx.report(CheckOutcome::Down(error), None) {
        flow
    } else {
        Flow::Stop
    }
}

/// A UDP socket bound to an ephemeral port and connected to `addr`.
pub(super) fn connected_socket(addr: SocketAddr) -> io::Result<UdpSocket> {
    let local: IpAddr = match addr {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let sock = UdpSocket::bind(SocketAddr::new(local, 0))?;
    sock.connect(addr)?;
    Ok(sock)
}

/// Whether a socket error stands for an ICMP destination unreachable.
pub(super) fn is_unreachable(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable
    )
}

pub(super) fn unreachable_reason(e: &io::Error) -> String {
    let what = match e.kind() {
        ErrorKind::ConnectionRefused => "port",
        ErrorKind::HostUnreachable => "host",
        _ => "network",
    };
    format!("ICMP {what} unreachable received ({e})")
}

/// Whether the check may count as up: no ICMP error yet, or the last one is
/// at least `icmp_timeout` old.
fn quiet_long_enough(last_error: Option<Instant>, now: Instant, icmp_timeout: Duration) -> bool {
    last_error.is_none_or(|at| now.saturating_duration_since(at) >= icmp_timeout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_only_once_the_last_error_is_old_enough() {
        let now = Instant::now();
        let t = Duration::from_secs(20);
        assert!(quiet_long_enough(None, now, t));
        assert!(!quiet_long_enough(Some(now), now, t));
        assert!(!quiet_long_enough(
            Some(now),
            now + Duration::from_secs(19),
            t
        ));
        assert!(quiet_long_enough(Some(now), now + t, t));
    }

    #[test]
    fn closed_port_is_seen_as_unreachable() {
        let closed = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let (stop, _waker) = SocketStop::new();
        let opts = UdpOptions {
            interval: Duration::from_secs(1),
            icmp_timeout: Duration::from_secs(1),
        };
        let udp = Udp { opts, stop };
        let sock = udp.open(addr).unwrap();
        sock.send(&[]).unwrap();
        let waited = udp.wait_for_error(&sock, Instant::now() + Duration::from_secs(5));
        assert!(matches!(waited, Wait::Unreachable(_)));
    }
}
