//! IPVS: the model of the kernel's virtual-server table and the writer thread
//! that makes the kernel match what the services want.
//!
//! `diff` computes the smallest command list between two tables (pure),
//! `ipvsadm` formats commands in `ipvsadm -R` syntax and parses `ipvsadm -Sn`
//! output (pure), `writer` is the IpvsWriter thread that owns the applied table
//! and runs the commands.

pub mod diff;
pub mod ipvsadm;
pub mod writer;

use crate::config::Protocol;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Identity of a virtual service in the kernel: protocol + VIP:port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub protocol: Protocol,
    pub addr: SocketAddr,
}

/// Service-level settings of a virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualService {
    pub key: ServiceKey,
    pub scheduler: String,
    /// One-packet scheduling (`-o`).
    pub ops: bool,
}

/// A virtual service with its destinations (real server address → weight).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceTable {
    pub service: VirtualService,
    pub dests: BTreeMap<SocketAddr, u32>,
}

/// The whole table, as the kernel has it or as rsbal wants it.
pub type Table = BTreeMap<ServiceKey, ServiceTable>;

/// One change to the kernel's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IpvsCommand {
    AddService(VirtualService),
    EditService(VirtualService),
    DeleteService(ServiceKey),
    AddDest {
        service: ServiceKey,
        dest: SocketAddr,
        weight: u32,
    },
    EditDest {
        service: ServiceKey,
        dest: SocketAddr,
        weight: u32,
    },
    DeleteDest {
        service: ServiceKey,
        dest: SocketAddr,
    },
}
