//! Published, read-only snapshots of every service's state.
//!
//! Each service thread publishes a fresh `Arc<ServiceSnapshot>` after every
//! change; readers (the instrumentation HTTP server) clone the `Arc`s and never
//! hold a lock that a service or monitor thread waits on for longer than a
//! map insert.

use crate::config::Protocol;
use crate::coordinator::ServerState;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

/// One service at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSnapshot {
    pub name: String,
    pub protocol: Protocol,
    pub ip: IpAddr,
    pub port: u16,
    pub scheduler: String,
    pub depool_threshold: f64,
    pub can_depool: bool,
    /// Hosts that are down but stay pooled because of the threshold, sorted.
    pub pooled_down: Vec<String>,
    /// Monitor names in configuration order (index = `ServerState::monitors` index).
    pub monitor_names: Vec<String>,
    /// Servers sorted by host.
    pub servers: Vec<ServerState>,
}

/// Every service's latest snapshot, by service name.
#[derive(Debug, Default)]
pub struct SnapshotStore {
    inner: RwLock<BTreeMap<String, Arc<ServiceSnapshot>>>,
}

impl SnapshotStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the snapshot of `snapshot.name`.
    pub fn publish(&self, snapshot: ServiceSnapshot) {
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        map.insert(snapshot.name.clone(), Arc::new(snapshot));
    }

    /// Forgets a service (removed by reload).
    pub fn remove(&self, name: &str) {
        let mut map = self.inner.write().unwrap_or_else(|p| p.into_inner());
        map.remove(name);
    }

    /// The latest snapshot of one service.
    pub fn get(&self, name: &str) -> Option<Arc<ServiceSnapshot>> {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        map.get(name).cloned()
    }

    /// All snapshots, sorted by service name.
    pub fn all(&self) -> Vec<Arc<ServiceSnapshot>> {
        let map = self.inner.read().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }
}
