//! IPVS: the model of the kernel's virtual-server table and the writer thread
//! that makes the kernel match what the services want.
//!
//! `diff` computes the smallest command list between two tables (pure),
//! `reconcile` names the drift between the writer's model and the kernel
//! (pure), `ipvsadm` formats commands in `ipvsadm -R` syntax and parses
//! `ipvsadm -Sn` output (pure), `genl` encodes and decodes IPVS generic
//! netlink messages (pure), `backend` and `netlink` are the two ways of
//! reading and changing the kernel's table (`child` runs one `ipvsadm` with
//! a deadline in its own process group), and `writer` is the IpvsWriter
//! thread that owns the applied table and runs the commands. `error` holds
//! [`error::IpvsError`], what both backends return (the kernel's errno per
//! refused command, socket and `ipvsadm` failures), so that the writer
//! decides on types, not texts. `hold` decides which adopted destinations
//! the writer keeps for servers whose names do not resolve (pure). `debug` holds
//! the hidden `--ipvs-debug` commands the kernel tests and benchmarks use.

pub(crate) mod backend;
pub(crate) mod child;
pub(crate) mod debug;
pub(crate) mod diff;
pub(crate) mod error;
pub(crate) mod genl;
pub(crate) mod hold;
pub(crate) mod ipvsadm;
pub(crate) mod netlink;
pub(crate) mod reconcile;
pub(crate) mod writer;

pub(crate) use crate::config::ForwardingMethod;
use crate::config::Protocol;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

/// Identity of a virtual service in the kernel: protocol + VIP:port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ServiceKey {
    pub(crate) protocol: Protocol,
    pub(crate) addr: SocketAddr,
}

/// Service-level settings of a virtual service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VirtualService {
    pub(crate) key: ServiceKey,
    pub(crate) scheduler: String,
    /// One-packet scheduling (`-o`).
    pub(crate) ops: bool,
}

impl fmt::Display for ServiceKey {
    /// `tcp 10.0.0.1:80`, `udp [2001:db8::1]:53`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.protocol, self.addr)
    }
}

/// How one destination (real server) is set up in a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Dest {
    pub(crate) weight: u32,
    pub(crate) forwarding: ForwardingMethod,
}

impl Dest {
    #[cfg(test)]
    /// A direct-routing destination (rsbal's and ipvsadm's default).
    pub(crate) fn dr(weight: u32) -> Dest {
        Dest {
            weight,
            forwarding: ForwardingMethod::Dr,
        }
    }
}

/// A virtual service with its destinations (real server address → settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceTable {
    pub(crate) service: VirtualService,
    pub(crate) dests: BTreeMap<SocketAddr, Dest>,
}

/// The whole table, as the kernel has it or as rsbal wants it.
pub(crate) type Table = BTreeMap<ServiceKey, ServiceTable>;

/// One change to the kernel's table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IpvsCommand {
    AddService(VirtualService),
    EditService(VirtualService),
    DeleteService(ServiceKey),
    AddDest {
        service: ServiceKey,
        dest: SocketAddr,
        weight: u32,
        forwarding: ForwardingMethod,
    },
    EditDest {
        service: ServiceKey,
        dest: SocketAddr,
        weight: u32,
        forwarding: ForwardingMethod,
    },
    DeleteDest {
        service: ServiceKey,
        dest: SocketAddr,
    },
}

impl fmt::Display for IpvsCommand {
    /// What the command attempts, for logs and errors: "adding destination
    /// 10.0.0.2:80 (weight 10, dr) to tcp 10.0.0.1:80".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpvsCommand::AddService(vs) => write!(
                f,
                "adding service {} (scheduler {}{})",
                vs.key,
                vs.scheduler,
                if vs.ops { ", one-packet" } else { "" }
            ),
            IpvsCommand::EditService(vs) => write!(
                f,
                "changing service {} to scheduler {}{}",
                vs.key,
                vs.scheduler,
                if vs.ops { ", one-packet" } else { "" }
            ),
            IpvsCommand::DeleteService(key) => write!(f, "deleting service {key}"),
            IpvsCommand::AddDest {
                service,
                dest,
                weight,
                forwarding,
            } => write!(
                f,
                "adding destination {dest} (weight {weight}, {forwarding}) to {service}"
            ),
            IpvsCommand::EditDest {
                service,
                dest,
                weight,
                forwarding,
            } => write!(
                f,
                "setting destination {dest} of {service} to weight {weight}, {forwarding}"
            ),
            IpvsCommand::DeleteDest { service, dest } => {
                write!(f, "deleting destination {dest} from {service}")
            }
        }
    }
}
