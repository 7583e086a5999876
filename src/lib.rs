//! rsbal: an LVS monitor in the style of Wikimedia's PyBal.
//!
//! The library holds every part of the daemon so that tests can drive the
//! pure decision logic (coordinator, config parsing and diffing, IPVS diffing)
//! directly; `src/main.rs` is only the command-line entry point.
//! See `ARCHITECTURE.md` for threads, channels and state ownership.

pub mod alerts;
pub mod bgp;
pub mod cli;
pub mod config;
pub mod coordinator;
pub mod daemon;
pub mod daemon_status;
pub mod instrumentation;
pub mod ipvs;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod monitor;
pub mod pool_metrics;
pub mod serverlist;
pub mod service;
pub mod snapshot;
pub mod source;
pub mod status;
pub mod status_doc;
pub mod status_page;
pub mod systemd;
pub mod tls;
