//! Published, read-only snapshots of every service's state.
//!
//! Each service thread publishes a fresh `Arc<ServiceSnapshot>` after every
//! change; readers (the instrumentation HTTP server) clone the `Arc`s and never
//! hold a lock that a service or monitor thread waits on for longer than a
//! map insert.
//!
//! Beside the services, the store holds one [`DaemonStatus`]: what the main
//! thread (reloads), the BGP speaker (sessions) and the IpvsWriter (services
//! out of sync with the kernel) publish about the daemon.

use crate::config::Protocol;
use crate::service::coordinator::ServerState;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// One service at one instant.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ServiceSnapshot {
    pub(crate) name: String,
    pub(crate) protocol: Protocol,
    pub(crate) ip: IpAddr,
    pub(crate) port: u16,
    pub(crate) scheduler: String,
    pub(crate) depool_threshold: f64,
    pub(crate) can_depool: bool,
    /// Hosts that are down but stay pooled because of the threshold, sorted.
    pub(crate) pooled_down: Vec<String>,
    /// How many times a down server could not be depooled (threshold).
    pub(crate) could_not_depool_total: u64,
    /// Monitor names in configuration order (index = `ServerState::monitors` index).
    pub(crate) monitor_names: Vec<String>,
    /// Servers sorted by host.
    pub(crate) servers: Vec<ServerState>,
}

/// The outcome of the last SIGHUP reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReloadStatus {
    pub(crate) at: SystemTime,
    pub(crate) ok: bool,
    /// What changed, or why the new config was rejected.
    pub(crate) message: String,
}

/// One BGP session, as the BGP speaker publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BgpSessionStatus {
    pub(crate) peer: String,
    pub(crate) local_asn: u32,
    pub(crate) established: bool,
    /// The session's state in words (`Established`, `Connect`, `Idle`, …).
    pub(crate) state: String,
    /// When `established` last changed.
    pub(crate) since: SystemTime,
}

/// What the daemon publishes about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DaemonStatus {
    pub(crate) started_at: SystemTime,
    pub(crate) config_path: String,
    pub(crate) bgp_enabled: bool,
    /// Sessions by peer address; empty when BGP is off.
    pub(crate) bgp: BTreeMap<String, BgpSessionStatus>,
    /// `None` until the first reload.
    pub(crate) last_reload: Option<ReloadStatus>,
    /// rsbal's own resources out now (`status::resources`): label → what
    /// happened and what to raise.
    pub(crate) resources_exhausted: BTreeMap<String, String>,
    /// Services whose desired state the kernel's IPVS table does not have
    /// (a failed apply, or the table cannot be read), and why; published
    /// by the IpvsWriter.
    pub(crate) ipvs_out_of_sync: BTreeMap<String, String>,
}

impl Default for DaemonStatus {
    fn default() -> Self {
        DaemonStatus {
            started_at: SystemTime::now(),
            config_path: String::new(),
            bgp_enabled: false,
            bgp: BTreeMap::new(),
            last_reload: None,
            resources_exhausted: BTreeMap::new(),
            ipvs_out_of_sync: BTreeMap::new(),
        }
    }
}

/// Every service's latest snapshot, by service name, and the daemon's status.
#[derive(Debug, Default)]
pub(crate) struct SnapshotStore {
    inner: RwLock<BTreeMap<String, Arc<ServiceSnapshot>>>,
    daemon: RwLock<Arc<DaemonStatus>>,
}

impl SnapshotStore {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Replaces the snapshot of `snapshot.name`.
    pub(crate) fn publish(&self, snapshot: ServiceSnapshot) {
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        map.insert(snapshot.name.clone(), Arc::new(snapshot));
    }

    /// Forgets a service (removed by reload).
    pub(crate) fn remove(&self, name: &str) {
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        map.remove(name);
    }

    /// The latest snapshot of one service.
    pub(crate) fn get(&self, name: &str) -> Option<Arc<ServiceSnapshot>> {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        map.get(name).cloned()
    }

    /// All snapshots, sorted by service name.
    pub(crate) fn all(&self) -> Vec<Arc<ServiceSnapshot>> {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    /// The daemon's latest status.
    pub(crate) fn daemon(&self) -> Arc<DaemonStatus> {
        Arc::clone(&self.daemon.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Publishes a changed daemon status (copy, change, swap).
    pub(crate) fn update_daemon(&self, change: impl FnOnce(&mut DaemonStatus)) {
        let mut current = self.daemon.write().unwrap_or_else(|p| p.into_inner());
        let mut next = DaemonStatus::clone(&current);
        change(&mut next);
        *current = Arc::new(next);
    }
}
