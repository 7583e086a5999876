//! rsbal: an LVS monitor in the style of Wikimedia's PyBal.
//!
//! The library holds every part of the daemon so that tests can drive the
//! pure decision logic (coordinator, config parsing and diffing, IPVS diffing)
//! directly; `src/main.rs` is only the command-line entry point.
//! See `ARCHITECTURE.md` for threads, channels and state ownership.

pub mod bgp;
pub(crate) mod config;
pub mod daemon;
pub(crate) mod ipvs;
pub(crate) mod monitor;
pub(crate) mod net;
pub(crate) mod service;
pub(crate) mod source;
pub(crate) mod status;
