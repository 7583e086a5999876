//! What operators see: everything rsbal publishes about itself and its pools.
//!
//! Service threads and the main thread publish immutable snapshots
//! ([`snapshot`]); from those, this folder derives PyBal's `/alerts`
//! ([`alerts`]), the status document ([`document`]) and its HTML page
//! ([`page`]), and serves them with `/pools` and `/metrics` ([`routes`]) over
//! the instrumentation HTTP server ([`server`]). [`metrics`] owns the
//! Prometheus registry, [`daemon`] the daemon's own state (reloads, BGP
//! sessions, build info), and [`client`] is the `rsbal status` command that
//! reads it all back over HTTP.

pub(crate) mod alerts;
pub(crate) mod client;
pub(crate) mod daemon;
pub(crate) mod document;
pub(crate) mod metrics;
pub(crate) mod page;
pub(crate) mod resources;
pub(crate) mod routes;
pub(crate) mod server;
pub(crate) mod snapshot;
