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

    /// Which of rsbal's resources a local failure ran out of, read from the
    /// last `(os error N)` of its reason (every local reason carries the
    /// `io::Error` it came from); `None` for a remote failure.
    pub(crate) fn resource(&self) -> Option<Resource> {
        let CheckError::Local(reason) = self else {
            return None;
        };
        let code = reason
            .rsplit_once("(os error ")
            .and_then(|(_, rest)| rest.split_once(')'))
            .and_then(|(digits, _)| digits.parse::<i32>().ok());
        Some(match code.map(Errno::from_raw) {
            Some(Errno::EMFILE | Errno::ENFILE) => Resource::Fds,
            Some(Errno::EAGAIN) => Resource::Tasks,
            Some(Errno::ENOMEM | Errno::ENOBUFS) => Resource::Memory,
            Some(Errno::EADDRNOTAVAIL) => Resource::Ports,
            _ => Resource::Other,
        })
    }
}

/// A resource of rsbal's own that a check can run out of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Resource {
    /// File descriptors (`EMFILE`, `ENFILE`).
    Fds,
    /// Threads or processes (`EAGAIN` from `clone`/`fork`).
    Tasks,
    /// Memory or socket buffers (`ENOMEM`, `ENOBUFS`).
    Memory,
    /// Ephemeral ports (`EADDRNOTAVAIL`).
    Ports,
    /// A local failure whose cause the reason does not name.
    Other,
}

impl Resource {
    /// The `resource` label and the word in log lines and alerts.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Resource::Fds => "fds",
            Resource::Tasks => "threads",
            Resource::Memory => "memory",
            Resource::Ports => "ports",
            Resource::Other => "other",
        }
    }

    /// What an operator raises when it runs out.
    pub(crate) fn remedy(self) -> &'static str {
        match self {
            Resource::Fds => "LimitNOFILE= (RLIMIT_NOFILE) or fs.file-max",
            Resource::Tasks => {
                "TasksMax=, LimitNPROC=, kernel.threads-max, kernel.pid_max or vm.max_map_count"
            }
            Resource::Memory => "MemoryMax= or the machine's memory",
            Resource::Ports => "net.ipv4.ip_local_port_range",
            Resource::Other => "the limits of the rsbal unit",
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
    fn the_resource_comes_from_the_os_error_of_the_reason() {
        let local = |errno| CheckError::io(Step::Acquire, &os(errno), format!("x: {}", os(errno)));
        assert_eq!(local(Errno::EMFILE).resource(), Some(Resource::Fds));
        assert_eq!(local(Errno::ENFILE).resource(), Some(Resource::Fds));
        assert_eq!(local(Errno::EAGAIN).resource(), Some(Resource::Tasks));
        assert_eq!(local(Errno::ENOMEM).resource(), Some(Resource::Memory));
        assert_eq!(
            local(Errno::EADDRNOTAVAIL).resource(),
            Some(Resource::Ports)
        );
        let joined = CheckError::Local(format!(
            "2 of 2 URLs failed: a: {0}; b: {0}",
            os(Errno::EMFILE)
        ));
        assert_eq!(joined.resource(), Some(Resource::Fds));
        assert_eq!(
            CheckError::Local("cannot run x".into()).resource(),
            Some(Resource::Other)
        );
        let remote = CheckError::io(
            Step::Acquire,
            &os(Errno::ECONNREFUSED),
            os(Errno::ECONNREFUSED).to_string(),
        );
        assert_eq!(remote.resource(), None);
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
