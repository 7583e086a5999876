//! The two ways of reading and changing the kernel's IPVS table, and the
//! choice between them.
//!
//! This module owns the [`IpvsBackend`] trait the IpvsWriter drives, its
//! `ipvsadm` implementation ([`Ipvsadm`]: `-Sn` to read, one `-R` batch per
//! change on stdin, each run bounded by `ipvs::child`) and [`open`], which picks the backend `[global]
//! ipvs-backend` asks for: netlink (`ipvs::netlink`) when the kernel's IPVS
//! generic netlink family resolves, else `ipvsadm`, saying why in the log.

use super::child;
use super::error::IpvsError;
use super::ipvsadm::{parse_save, restore_line};
use super::netlink::Netlink;
use super::{IpvsCommand, Table};
use crate::config::IpvsBackendKind;
use std::path::PathBuf;
use std::time::Duration;

const LOG_TARGET: &str = "IpvsWriter";

/// Something that can read and change the kernel's IPVS table.
pub(crate) trait IpvsBackend: Send {
    /// The kernel's current table; `Err` when it could not be read (never
    /// an empty table in its place).
    fn read(&mut self) -> Result<Table, IpvsError>;
    /// Applies commands in order; `Err` tells what failed.
    fn apply(&mut self, commands: &[IpvsCommand]) -> Result<(), IpvsError>;
    /// Short description for logs.
    fn describe(&self) -> String;
    /// How one command is shown in the log (`ipvsadm -a -t …`).
    fn show(&self, cmd: &IpvsCommand) -> String {
        format!("ipvsadm {}", restore_line(cmd))
    }
}

/// Runs the `ipvsadm` binary: `-Sn` to read, `-R` with a batch on stdin to
/// write; each run at most `timeout` (`ipvs::child`).
pub(crate) struct Ipvsadm {
    pub(crate) path: PathBuf,
    /// `[global] ipvs-command-timeout`.
    pub(crate) timeout: Duration,
}

impl Ipvsadm {
    /// "PATH ARG failed (exit status): stderr"
    fn failure(&self, arg: &'static str, out: &child::Finished) -> IpvsError {
        IpvsError::Exit {
            program: self.path.clone(),
            arg,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }
    }
}

impl IpvsBackend for Ipvsadm {
    fn read(&mut self) -> Result<Table, IpvsError> {
        let out = child::run(&self.path, "-Sn", None, self.timeout)?;
        if !out.status.success() {
            return Err(self.failure("-Sn", &out));
        }
        Ok(parse_save(&String::from_utf8_lossy(&out.stdout))?)
    }

    fn apply(&mut self, commands: &[IpvsCommand]) -> Result<(), IpvsError> {
        let mut input = String::new();
        for cmd in commands {
            input.push_str(&restore_line(cmd));
            input.push('\n');
        }
        let out = child::run(&self.path, "-R", Some(input.into_bytes()), self.timeout)?;
        if !out.status.success() {
            return Err(self.failure("-R", &out));
        }
        match out.stdin_error {
            Some(source) => Err(IpvsError::Stdin {
                program: self.path.clone(),
                source,
            }),
            None => Ok(()),
        }
    }

    fn describe(&self) -> String {
        format!("ipvsadm ({})", self.path.display())
    }
}

/// Which backend to use: `[global] ipvs-backend` (`None` = choose),
/// `[global] ipvsadm` and `[global] ipvs-command-timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackendChoice {
    pub(crate) kind: Option<IpvsBackendKind>,
    pub(crate) ipvsadm: PathBuf,
    /// How long one `ipvsadm` run or one netlink answer may take.
    pub(crate) timeout: Duration,
}

/// Opens the backend `choice` names. Without a choice: netlink when the
/// kernel's `IPVS` generic netlink family resolves, else `ipvsadm`, with a
/// log line saying why. An explicit `netlink` whose family does not resolve
/// yet keeps trying on every use (the module may be loaded later).
pub(crate) fn open(choice: &BackendChoice) -> Box<dyn IpvsBackend> {
    let ipvsadm = || {
        Box::new(Ipvsadm {
            path: choice.ipvsadm.clone(),
            timeout: choice.timeout,
        })
    };
    match choice.kind {
        Some(IpvsBackendKind::Ipvsadm) => {
            log::info!(target: LOG_TARGET, "IPVS backend: ipvsadm ({}), as configured", choice.ipvsadm.display());
            ipvsadm()
        }
        Some(IpvsBackendKind::Netlink) => match Netlink::connect(choice.timeout) {
            Ok(netlink) => {
                log::info!(target: LOG_TARGET, "IPVS backend: {}, as configured", netlink.describe());
                Box::new(netlink)
            }
            Err(e) => {
                log::error!(target: LOG_TARGET, "IPVS backend: netlink, as configured, but {e}; retrying on every change");
                Box::new(Netlink::lazy(choice.timeout))
            }
        },
        None => match Netlink::connect(choice.timeout) {
            Ok(netlink) => {
                log::info!(target: LOG_TARGET, "IPVS backend: {} (the kernel's IPVS generic netlink family resolves)", netlink.describe());
                Box::new(netlink)
            }
            Err(e) => {
                log::info!(target: LOG_TARGET, "IPVS backend: ipvsadm ({}), because netlink is not available: {e}", choice.ipvsadm.display());
                ipvsadm()
            }
        },
    }
}
