//! The two ways of reading and changing the kernel's IPVS table, and the
//! choice between them.
//!
//! This module owns the [`IpvsBackend`] trait the IpvsWriter drives, its
//! `ipvsadm` implementation ([`Ipvsadm`]: `-Sn` to read, one `-R` batch per
//! change on stdin) and [`open`], which picks the backend `[global]
//! ipvs-backend` asks for: netlink (`ipvs::netlink`) when the kernel's IPVS
//! generic netlink family resolves, else `ipvsadm`, saying why in the log.

use super::error::IpvsError;
use super::ipvsadm::{parse_save, restore_line};
use super::netlink::Netlink;
use super::{IpvsCommand, Table};
use crate::config::IpvsBackendKind;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

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

/// Runs the `ipvsadm` binary: `-Sn` to read, `-R` with a batch on stdin to write.
pub(crate) struct Ipvsadm {
    pub(crate) path: PathBuf,
}

impl Ipvsadm {
    /// "PATH ARG failed (exit status): stderr"
    fn failure(&self, arg: &'static str, out: &std::process::Output) -> IpvsError {
        IpvsError::Exit {
            program: self.path.clone(),
            arg,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }
    }

    fn spawn_failed(&self, arg: &'static str) -> impl FnOnce(std::io::Error) -> IpvsError + '_ {
        move |source| IpvsError::Spawn {
            program: self.path.clone(),
            arg,
            source,
        }
    }
}

impl IpvsBackend for Ipvsadm {
    fn read(&mut self) -> Result<Table, IpvsError> {
        let out = Command::new(&self.path)
            .arg("-Sn")
            .stdin(Stdio::null())
            .output()
            .map_err(self.spawn_failed("-Sn"))?;
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
        let mut child = Command::new(&self.path)
            .arg("-R")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(self.spawn_failed("-R"))?;
        let written = match child.stdin.take() {
            Some(mut stdin) => stdin.write_all(input.as_bytes()),
            None => Ok(()),
        };
        let out = child.wait_with_output().map_err(|source| IpvsError::Wait {
            program: self.path.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(self.failure("-R", &out));
        }
        written.map_err(|source| IpvsError::Stdin {
            program: self.path.clone(),
            source,
        })
    }

    fn describe(&self) -> String {
        format!("ipvsadm ({})", self.path.display())
    }
}

/// Which backend to use: `[global] ipvs-backend` (`None` = choose) and
/// `[global] ipvsadm`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackendChoice {
    pub(crate) kind: Option<IpvsBackendKind>,
    pub(crate) ipvsadm: PathBuf,
}

/// Opens the backend `choice` names. Without a choice: netlink when the
/// kernel's `IPVS` generic netlink family resolves, else `ipvsadm`, with a
/// log line saying why. An explicit `netlink` whose family does not resolve
/// yet keeps trying on every use (the module may be loaded later).
pub(crate) fn open(choice: &BackendChoice) -> Box<dyn IpvsBackend> {
    let ipvsadm = || {
        Box::new(Ipvsadm {
            path: choice.ipvsadm.clone(),
        })
    };
    match choice.kind {
        Some(IpvsBackendKind::Ipvsadm) => {
            log::info!(target: LOG_TARGET, "IPVS backend: ipvsadm ({}), as configured", choice.ipvsadm.display());
            ipvsadm()
        }
        Some(IpvsBackendKind::Netlink) => match Netlink::connect() {
            Ok(netlink) => {
                log::info!(target: LOG_TARGET, "IPVS backend: {}, as configured", netlink.describe());
                Box::new(netlink)
            }
            Err(e) => {
                log::error!(target: LOG_TARGET, "IPVS backend: netlink, as configured, but {e}; retrying on every change");
                Box::new(Netlink::lazy())
            }
        },
        None => match Netlink::connect() {
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
