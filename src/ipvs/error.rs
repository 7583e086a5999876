//! Why reading or changing the kernel's IPVS table failed, as types the
//! IpvsWriter can decide on.
//!
//! [`IpvsError`] is what both backends return: the kernel's errno for every
//! command it refused ([`IpvsError::Rejected`], each a [`Refusal`]) or for a
//! request that failed as a whole ([`IpvsError::Kernel`]), a socket that
//! failed or went quiet, a malformed answer ([`DecodeError`]), and for
//! `ipvsadm` a child that could not be run or exited non-zero, or `-Sn`
//! output that does not parse ([`SaveError`]). `Display` gives the texts
//! the log has always shown.

use super::genl::{errno_text, ipvs_hint};
use super::IpvsCommand;
use nix::errno::Errno;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// `5 s`, `2.5 s`, `0.3 s`: a timeout as the config wrote it.
pub(crate) fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// A netlink message the kernel sent that rsbal cannot read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(pub(crate) String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A line of `ipvsadm -Sn` output rsbal cannot read (1-based line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SaveError {
    pub(crate) line: usize,
    pub(crate) reason: String,
}

impl fmt::Display for SaveError {
    /// `line 2: real server -r 10.0.0.2:80 of a service not defined before`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// One command of a netlink batch the kernel refused, with its errno.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) command: IpvsCommand,
    pub(crate) errno: Errno,
}

/// Why an IPVS backend could not read or change the kernel's table.
#[derive(Debug)]
pub(crate) enum IpvsError {
    /// The kernel refused some commands of a batch of `batch`; the others
    /// were applied.
    Rejected {
        refusals: Vec<Refusal>,
        batch: usize,
    },
    /// The kernel answered a request (family resolution, a dump) with an
    /// error; `what` is what was attempted.
    Kernel { what: String, errno: Errno },
    /// The kernel has no `IPVS` generic netlink family (module not loaded).
    NoFamily,
    /// A system call on the netlink socket failed.
    Socket { what: &'static str, errno: Errno },
    /// The kernel took only part of a datagram.
    ShortSend { sent: usize, len: usize },
    /// No answer within the socket's receive timeout
    /// (`[global] ipvs-command-timeout`).
    Timeout { after: Duration },
    /// The socket's receive buffer overflowed: answers were lost.
    Overrun,
    /// An answer larger than the receive buffer.
    Truncated { len: usize, buffer: usize },
    /// An answer that is not what the kernel sends.
    Decode(DecodeError),
    /// The socket failed while requests were unanswered: whether they were
    /// applied is unknown.
    Unanswered {
        source: Box<IpvsError>,
        pending: usize,
        first: String,
    },
    /// `context: source`, e.g. "dumping IPVS services: …".
    Context {
        context: String,
        source: Box<IpvsError>,
    },
    /// `ipvsadm` could not be started.
    Spawn {
        program: PathBuf,
        arg: &'static str,
        source: io::Error,
    },
    /// Waiting for `ipvsadm` failed.
    Wait { program: PathBuf, source: io::Error },
    /// `ipvsadm` did not take its whole input.
    Stdin { program: PathBuf, source: io::Error },
    /// `ipvsadm` did not finish within `[global] ipvs-command-timeout`;
    /// its process group was killed.
    CommandTimeout {
        program: PathBuf,
        arg: &'static str,
        timeout: Duration,
    },
    /// `ipvsadm` exited with a failure status.
    Exit {
        program: PathBuf,
        arg: &'static str,
        status: ExitStatus,
        stderr: String,
    },
    /// `ipvsadm -Sn` printed something that does not parse.
    Save(SaveError),
}

impl IpvsError {
    /// `context: self`.
    pub(crate) fn context(self, context: impl Into<String>) -> IpvsError {
        IpvsError::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// True when the kernel refused a command because its table is not
    /// what the writer believed: EEXIST (already there), ENOENT (no such
    /// destination), ESRCH (no such service). Re-reading the table repairs
    /// that; it does not repair EPERM, EINVAL or a failed socket.
    pub(crate) fn table_was_stale(&self) -> bool {
        match self {
            IpvsError::Rejected { refusals, .. } => refusals
                .iter()
                .any(|r| matches!(r.errno, Errno::EEXIST | Errno::ENOENT | Errno::ESRCH)),
            IpvsError::Context { source, .. } => source.table_was_stale(),
            _ => false,
        }
    }
}

impl From<DecodeError> for IpvsError {
    fn from(e: DecodeError) -> Self {
        IpvsError::Decode(e)
    }
}

impl From<SaveError> for IpvsError {
    fn from(e: SaveError) -> Self {
        IpvsError::Save(e)
    }
}

impl fmt::Display for IpvsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpvsError::Rejected { refusals, batch } => {
                write!(
                    f,
                    "{} of {batch} netlink request(s) failed: ",
                    refusals.len()
                )?;
                for (i, refusal) in refusals.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{refusal}")?;
                }
                Ok(())
            }
            IpvsError::Kernel { what, errno } => {
                write!(f, "{what}: {}", errno_text(*errno as i32))
            }
            IpvsError::NoFamily => f.write_str(
                "the kernel has no IPVS generic netlink family (ip_vs module not loaded?)",
            ),
            IpvsError::Socket { what, errno } => {
                write!(f, "{what}: {}", errno_text(*errno as i32))
            }
            IpvsError::ShortSend { sent, len } => {
                write!(f, "the kernel took {sent} of {len} bytes")
            }
            IpvsError::Timeout { after } => {
                write!(f, "no answer from the kernel within {}", seconds(*after))
            }
            IpvsError::Overrun => f.write_str("netlink receive buffer overrun: answers were lost"),
            IpvsError::Truncated { len, buffer } => {
                write!(
                    f,
                    "netlink answer of {len} bytes does not fit {buffer} bytes"
                )
            }
            IpvsError::Decode(e) => write!(f, "{e}"),
            IpvsError::Unanswered {
                source,
                pending,
                first,
            } => write!(
                f,
                "{source} ({pending} request(s) unanswered, the first {first})"
            ),
            IpvsError::Context { context, source } => write!(f, "{context}: {source}"),
            IpvsError::Spawn {
                program,
                arg,
                source,
            } => write!(f, "cannot run {} {arg}: {source}", program.display()),
            IpvsError::Wait { program, source } => {
                write!(f, "{} -R: {source}", program.display())
            }
            IpvsError::Stdin { program, source } => {
                write!(f, "cannot write to {} -R: {source}", program.display())
            }
            IpvsError::Exit {
                program,
                arg,
                status,
                stderr,
            } => write!(f, "{} {arg} failed ({status}): {stderr}", program.display()),
            IpvsError::CommandTimeout {
                program,
                arg,
                timeout,
            } => write!(
                f,
                "{} {arg} did not finish within {} (ipvs-command-timeout); its process group was killed",
                program.display(),
                seconds(*timeout)
            ),
            IpvsError::Save(e) => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for Refusal {
    /// `adding destination … to tcp 10.0.0.1:80: the kernel said EEXIST
    /// (File exists): it exists already`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: the kernel said {}",
            self.command,
            errno_text(self.errno as i32)
        )?;
        match ipvs_hint(&self.command, self.errno) {
            Some(hint) => write!(f, ": {hint}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for DecodeError {}

impl std::error::Error for SaveError {}

impl std::error::Error for IpvsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IpvsError::Decode(e) => Some(e),
            IpvsError::Save(e) => Some(e),
            IpvsError::Unanswered { source, .. } | IpvsError::Context { source, .. } => {
                Some(source.as_ref())
            }
            IpvsError::Spawn { source, .. }
            | IpvsError::Wait { source, .. }
            | IpvsError::Stdin { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use crate::ipvs::ServiceKey;

    fn del() -> IpvsCommand {
        IpvsCommand::DeleteDest {
            service: ServiceKey {
                protocol: Protocol::Tcp,
                addr: "10.0.0.1:80".parse().unwrap(),
            },
            dest: "10.0.0.2:80".parse().unwrap(),
        }
    }

    #[test]
    fn texts_are_the_ones_the_log_always_showed() {
        let rejected = IpvsError::Rejected {
            refusals: vec![
                Refusal {
                    command: del(),
                    errno: Errno::ENOENT,
                },
                Refusal {
                    command: del(),
                    errno: Errno::EINVAL,
                },
            ],
            batch: 3,
        };
        assert_eq!(
            rejected.to_string(),
            "2 of 3 netlink request(s) failed: \
             deleting destination 10.0.0.2:80 from tcp 10.0.0.1:80: the kernel said \
             ENOENT (No such file or directory): the destination does not exist; \
             deleting destination 10.0.0.2:80 from tcp 10.0.0.1:80: the kernel said \
             EINVAL (Invalid argument)"
        );
        assert!(rejected.table_was_stale());
        let unanswered = IpvsError::Unanswered {
            source: Box::new(IpvsError::Timeout {
                after: Duration::from_secs(5),
            }),
            pending: 2,
            first: del().to_string(),
        };
        assert_eq!(
            unanswered.to_string(),
            "no answer from the kernel within 5 s (2 request(s) unanswered, \
             the first deleting destination 10.0.0.2:80 from tcp 10.0.0.1:80)"
        );
        assert!(!unanswered.table_was_stale());
        let dump = IpvsError::Kernel {
            what: "dumping IPVS services".into(),
            errno: Errno::EPERM,
        }
        .context("ignored by nobody");
        assert_eq!(
            dump.to_string(),
            "ignored by nobody: dumping IPVS services: EPERM (Operation not permitted)"
        );
        assert!(!dump.table_was_stale());
        let eperm = IpvsError::Rejected {
            refusals: vec![Refusal {
                command: del(),
                errno: Errno::EPERM,
            }],
            batch: 1,
        };
        assert!(!eperm.table_was_stale());
        assert!(eperm
            .to_string()
            .ends_with(": changing IPVS needs CAP_NET_ADMIN"));
        let save = IpvsError::from(SaveError {
            line: 2,
            reason: "bad weight \"x\"".into(),
        });
        assert_eq!(save.to_string(), "line 2: bad weight \"x\"");
    }
}
