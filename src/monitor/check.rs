//! What one check found: up, or down because the server failed (remote) or
//! because rsbal could not carry the check out for want of its own resources
//! (local).
//!
//! Both kinds of failure are reported down today, with the same reason text
//! as before the distinction was made; the service thread can tell them
//! apart ([`CheckError::is_local`]).

use nix::errno::Errno;
use std::fmt;
use std::io;

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckOutcome {
    /// The server passed; a short note for the log.
    Up(String),
    /// The check failed.
    Down(CheckError),
}

impl CheckOutcome {
    /// Down: the server failed the check ([`CheckError::Remote`]).
    pub(crate) fn down(reason: impl Into<String>) -> Self {
        CheckOutcome::Down(CheckError::Remote(reason.into()))
    }

    pub(crate) fn is_up(&self) -> bool {
        matches!(self, CheckOutcome::Up(_))
    }

    /// The note of an up result, the reason of a down one.
    pub(crate) fn reason(&self) -> &str {
        match self {
            CheckOutcome::Up(note) => note,
            CheckOutcome::Down(error) => error.reason(),
        }
    }
}

/// Why a check failed; `Display` is the reason operators read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckError {
    /// The server failed the check: it refused, reset or closed the
    /// connection, was unreachable, did not answer in time or answered
    /// wrong. The server is down. (Also whatever is neither, such as a
    /// command that cannot be found: down, as it always was.)
    Remote(String),
    /// rsbal could not carry the check out for want of its own resources
    /// (file descriptors, memory, processes, ephemeral ports): this says
    /// nothing about the server. Reported down like a remote failure for now.
    Local(String),
}

/// Which step of a check an I/O error came from: it decides what `EAGAIN`
/// means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Taking resources: creating, binding or connecting a socket, spawning
    /// a process. `EAGAIN` here means rsbal is out of them (processes,
    /// routing entries).
    Acquire,
    /// Using what was taken: sending, receiving, waiting. `EAGAIN` here is a
    /// receive timeout.
    Use,
}

impl CheckError {
    /// The failure of `step` with error `e`, reported with `reason`: local
    /// when `e` is rsbal's own shortage (`EMFILE`, `ENFILE`, `ENOMEM`,
    /// `ENOBUFS`, `EADDRNOTAVAIL` — no ephemeral port left —, and `EAGAIN`
    /// while acquiring), remote otherwise.
    pub(crate) fn io(step: Step, e: &io::Error, reason: impl Into<String>) -> Self {
        if is_shortage(step, e) {
            CheckError::Local(reason.into())
        } else {
            CheckError::Remote(reason.into())
        }
    }

    pub(crate) fn is_local(&self) -> bool {
        matches!(self, CheckError::Local(_))
    }

    pub(crate) fn reason(&self) -> &str {
        match self {
            CheckError::Remote(reason) | CheckError::Local(reason) => reason,
        }
    }
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for CheckError {}

/// Whether `e`, met at `step`, is rsbal running out of its own resources.
fn is_shortage(step: Step, e: &io::Error) -> bool {
    let Some(code) = e.raw_os_error() else {
        return false;
    };
    match Errno::from_raw(code) {
        Errno::EMFILE | Errno::ENFILE | Errno::ENOMEM | Errno::ENOBUFS | Errno::EADDRNOTAVAIL => {
            true
        }
        Errno::EAGAIN => step == Step::Acquire,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(errno: Errno) -> io::Error {
        io::Error::from_raw_os_error(errno as i32)
    }

    #[test]
    fn own_shortages_are_local_and_the_servers_failures_remote() {
        for errno in [Errno::EMFILE, Errno::ENFILE, Errno::ENOMEM, Errno::ENOBUFS] {
            for step in [Step::Acquire, Step::Use] {
                assert!(CheckError::io(step, &os(errno), "x").is_local(), "{errno}");
            }
        }
        assert!(CheckError::io(Step::Acquire, &os(Errno::EAGAIN), "x").is_local());
        assert!(!CheckError::io(Step::Use, &os(Errno::EAGAIN), "x").is_local());
        for errno in [
            Errno::ECONNREFUSED,
            Errno::ECONNRESET,
            Errno::ETIMEDOUT,
            Errno::EHOSTUNREACH,
            Errno::ENETUNREACH,
            Errno::ENOENT,
        ] {
            assert!(!CheckError::io(Step::Acquire, &os(errno), "x").is_local());
        }
        let timeout = io::Error::from(io::ErrorKind::TimedOut);
        assert!(!CheckError::io(Step::Acquire, &timeout, "x").is_local());
    }

    #[test]
    fn display_is_the_reason() {
        let local = CheckError::io(Step::Acquire, &os(Errno::EMFILE), "cannot run x: y");
        assert_eq!(local.to_string(), "cannot run x: y");
        let down = CheckOutcome::Down(CheckError::Remote("HTTP status 503".into()));
        assert_eq!((down.is_up(), down.reason()), (false, "HTTP status 503"));
        let up = CheckOutcome::Up("fine".into());
        assert_eq!((up.is_up(), up.reason()), (true, "fine"));
    }
}
