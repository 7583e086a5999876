//! Why a source could not provide a usable server list, as a type the
//! source threads decide on: a timed-out etcd watch is a quiet one, etcd's
//! "index cleared" means read again, a file that cannot be read is not a
//! document that does not parse. `Display` gives the texts the log has
//! always shown.

use super::etcd::EtcdError;
use super::serverlist::DocumentError;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// One failed fetch, or a document that could not be used.
#[derive(Debug)]
pub(crate) enum SourceError {
    /// A `file://` list could not be read.
    Read { path: PathBuf, source: io::Error },
    /// A `file://` list that is not a regular file (a device, a FIFO…).
    NotAFile { path: PathBuf },
    /// A `file://` list larger than `limit` bytes.
    TooLarge { path: PathBuf, limit: u64 },
    /// No answer: connection refused or reset, name not found, TLS failure…
    Unreachable(ureq::Error),
    /// No answer within the source's timeout.
    Timeout(ureq::Error),
    /// The answer's body could not be read; `context` says which answer.
    Body {
        context: &'static str,
        source: ureq::Error,
    },
    /// An HTTP status other than 200 (and 304 for HTTP sources), with
    /// etcd's error when the body is one.
    Http {
        status: u16,
        etcd: Option<EtcdError>,
    },
    /// A server list that does not parse as a whole.
    BadDocument(DocumentError),
    /// An etcd answer that is not one of etcd's v2 keys API.
    NotEtcd(serde_json::Error),
    /// A list with no servers while the previous one had some.
    Empty,
    /// The first list of a source that replaced another (reload) has no
    /// servers, while the service has some.
    FirstListEmpty,
}

impl SourceError {
    /// A failed request: a timeout or no answer.
    pub(crate) fn request(e: ureq::Error) -> SourceError {
        match e {
            ureq::Error::Timeout(_) => SourceError::Timeout(e),
            e => SourceError::Unreachable(e),
        }
    }

    /// The request or the reading of its answer timed out.
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(
            self,
            SourceError::Timeout(_)
                | SourceError::Body {
                    source: ureq::Error::Timeout(_),
                    ..
                }
        )
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            SourceError::NotAFile { path } => {
                write!(f, "{} is not a regular file; not read", path.display())
            }
            SourceError::TooLarge { path, limit } => {
                write!(
                    f,
                    "{} is larger than {limit} bytes; not read",
                    path.display()
                )
            }
            SourceError::Unreachable(e) | SourceError::Timeout(e) => write!(f, "{e}"),
            SourceError::Body { context, source } => write!(f, "{context}: {source}"),
            SourceError::Http { status, etcd } => match etcd {
                Some(etcd) => write!(f, "HTTP status {status}, {etcd}"),
                None => write!(f, "HTTP status {status}"),
            },
            SourceError::BadDocument(e) => write!(f, "{e}"),
            SourceError::NotEtcd(e) => write!(f, "not an etcd v2 answer: {e}"),
            SourceError::Empty => {
                f.write_str("list has no servers while the previous one had some")
            }
            SourceError::FirstListEmpty => f.write_str(
                "the new source's first list has no servers; the service keeps the servers of the previous source until it has some",
            ),
        }
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SourceError::Read { source, .. } => Some(source),
            SourceError::Unreachable(e)
            | SourceError::Timeout(e)
            | SourceError::Body { source: e, .. } => Some(e),
            SourceError::BadDocument(e) => Some(e),
            SourceError::NotEtcd(e) => Some(e),
            SourceError::Http { .. }
            | SourceError::NotAFile { .. }
            | SourceError::TooLarge { .. }
            | SourceError::Empty
            | SourceError::FirstListEmpty => None,
        }
    }
}
