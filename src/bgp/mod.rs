//! The BGP speaker: announces the service IPs to the routers (SPEC 10).
//!
//! `message` is the wire format, `fsm` the per-connection session state
//! machine, `routes` what is announced and how it becomes UPDATEs (all pure);
//! `session` runs one peer in its own thread and `speaker` owns the desired
//! announcements, the listening sockets and the sessions.

pub(crate) mod fsm;
pub mod message;
pub(crate) mod routes;
pub(crate) mod session;
pub(crate) mod speaker;

pub(crate) use speaker::{reconcile, Speaker};
