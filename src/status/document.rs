//! The status document: everything the status page shows, as one
//! serialisable value built from the snapshot store (pure).
//!
//! The instrumentation server renders it as HTML on `/` and sends it as JSON
//! on `/` with `Accept: application/json`; `rsbal status` reads that JSON
//! back into the same type, so both ends share one definition.

use crate::status::alerts::{self, Level};
use crate::status::snapshot::{ServiceSnapshot, SnapshotStore};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct StatusDoc {
    pub(crate) version: String,
    /// Unix time the document was made.
    pub(crate) generated_at: f64,
    pub(crate) started_at: f64,
    pub(crate) config: String,
    /// What `/alerts` says.
    pub(crate) alert: AlertDoc,
    #[serde(default)]
    pub(crate) last_reload: Option<ReloadDoc>,
    pub(crate) bgp: BgpDoc,
    pub(crate) pools: Vec<PoolDoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AlertDoc {
    pub(crate) status: Level,
    pub(crate) msg: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ReloadDoc {
    pub(crate) at: f64,
    pub(crate) ok: bool,
    pub(crate) message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct BgpDoc {
    pub(crate) enabled: bool,
    #[serde(default)]
    pub(crate) sessions: Vec<BgpSessionDoc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct BgpSessionDoc {
    pub(crate) peer: String,
    pub(crate) local_asn: u32,
    pub(crate) established: bool,
    pub(crate) state: String,
    pub(crate) since: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct PoolDoc {
    pub(crate) name: String,
    pub(crate) protocol: String,
    /// `192.0.2.1:80`, `[2001:db8::1]:443`.
    pub(crate) vip: String,
    pub(crate) scheduler: String,
    pub(crate) depool_threshold: f64,
    /// Whether another server may be depooled now.
    pub(crate) can_depool: bool,
    pub(crate) pooled_down: Vec<String>,
    pub(crate) could_not_depool_total: u64,
    /// This pool's own alert level and message (empty when ok).
    pub(crate) status: Level,
    pub(crate) msg: String,
    /// Why the kernel's IPVS table does not have what this pool wants
    /// (then `status` is at least a warning); `None` when in sync.
    #[serde(default)]
    pub(crate) ipvs_out_of_sync: Option<String>,
    pub(crate) monitors: Vec<String>,
    pub(crate) servers: Vec<ServerDoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServerDoc {
    pub(crate) host: String,
    /// Resolved address; `None` when the name does not resolve.
    pub(crate) ip: Option<String>,
    pub(crate) weight: u32,
    pub(crate) enabled: bool,
    pub(crate) ready: bool,
    pub(crate) up: bool,
    pub(crate) pooled: bool,
    /// PyBal's `enabled/up/pooled` text.
    pub(crate) status: String,
    /// Why the name does not resolve (the last lookup failed).
    #[serde(default)]
    pub(crate) unresolved: Option<String>,
    pub(crate) monitors: Vec<MonitorDoc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MonitorDoc {
    pub(crate) name: String,
    /// `None` until the first result.
    pub(crate) up: Option<bool>,
    /// Why it last went down.
    pub(crate) reason: Option<String>,
}

/// How a server row should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServerHealth {
    /// Pooled and up, or disabled and out as it should be.
    Fine,
    /// Enabled but not pooled (depooled by a monitor, or unresolved).
    Depooled,
    /// Pooled although down: the depool threshold kept it in.
    DownButPooled,
}

impl ServerDoc {
    pub(crate) fn health(&self) -> ServerHealth {
        if self.pooled && !self.up {
            ServerHealth::DownButPooled
        } else if !self.pooled && self.enabled {
            ServerHealth::Depooled
        } else {
            ServerHealth::Fine
        }
    }
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn pool_doc(snap: &ServiceSnapshot, out_of_sync: Option<&String>) -> PoolDoc {
    let alert = alerts::pool_alert(snap);
    let status = match out_of_sync {
        Some(_) => alert.level.max(Level::Warning),
        None => alert.level,
    };
    PoolDoc {
        name: snap.name.clone(),
        protocol: snap.protocol.to_string(),
        vip: SocketAddr::new(snap.ip, snap.port).to_string(),
        scheduler: snap.scheduler.clone(),
        depool_threshold: snap.depool_threshold,
        can_depool: snap.can_depool,
        pooled_down: snap.pooled_down.clone(),
        could_not_depool_total: snap.could_not_depool_total,
        status,
        msg: alert.msg,
        ipvs_out_of_sync: out_of_sync.cloned(),
        monitors: snap.monitor_names.clone(),
        servers: snap
            .servers
            .iter()
            .map(|s| ServerDoc {
                host: s.host.clone(),
                ip: s.ip.map(|ip| ip.to_string()),
                weight: s.weight,
                enabled: s.enabled,
                ready: s.ready,
                up: s.up,
                pooled: s.pooled,
                status: s.text_status(),
                unresolved: s.unresolved.clone(),
                monitors: s
                    .monitors
                    .iter()
                    .enumerate()
                    .map(|(i, m)| MonitorDoc {
                        name: snap
                            .monitor_names
                            .get(i)
                            .cloned()
                            .unwrap_or_else(|| format!("#{i}")),
                        up: m.up,
                        reason: if m.up == Some(false) {
                            m.last_reason.clone()
                        } else {
                            None
                        },
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The document for the store's current state.
pub(crate) fn build(store: &SnapshotStore) -> StatusDoc {
    let pools = store.all();
    let daemon = store.daemon();
    let alert = alerts::of(pools.iter().map(|p| &**p), &daemon);
    StatusDoc {
        version: env!("CARGO_PKG_VERSION").to_string(),
        generated_at: unix_secs(SystemTime::now()),
        started_at: unix_secs(daemon.started_at),
        config: daemon.config_path.clone(),
        alert: AlertDoc {
            status: alert.level,
            msg: alert.msg,
        },
        last_reload: daemon.last_reload.as_ref().map(|r| ReloadDoc {
            at: unix_secs(r.at),
            ok: r.ok,
            message: r.message.clone(),
        }),
        bgp: BgpDoc {
            enabled: daemon.bgp_enabled,
            sessions: daemon
                .bgp
                .values()
                .map(|s| BgpSessionDoc {
                    peer: s.peer.clone(),
                    local_asn: s.local_asn,
                    established: s.established,
                    state: s.state.clone(),
                    since: unix_secs(s.since),
                })
                .collect(),
        },
        pools: pools
            .iter()
            .map(|p| pool_doc(p, daemon.ipvs_out_of_sync.get(&p.name)))
            .collect(),
    }
}

/// `2026-11-02T10:00:00Z` for a Unix time.
pub(crate) fn format_time(unix: f64) -> String {
    if !unix.is_finite() || unix < 0.0 {
        return "?".into();
    }
    let t = UNIX_EPOCH + std::time::Duration::from_secs(unix as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A status document with every kind of row, for tests of its renderers.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    fn server(host: &str, enabled: bool, up: bool, pooled: bool) -> ServerDoc {
        ServerDoc {
            host: host.into(),
            ip: Some("10.0.0.1".into()),
            weight: 10,
            enabled,
            ready: true,
            up,
            pooled,
            status: format!(
                "{}/{}/{}",
                if enabled { "enabled" } else { "disabled" },
                if up { "up" } else { "down" },
                if pooled { "pooled" } else { "not pooled" }
            ),
            unresolved: None,
            monitors: vec![MonitorDoc {
                name: "ProxyFetch".into(),
                up: Some(up),
                reason: (!up).then(|| "HTTP status 500 <oops>".to_string()),
            }],
        }
    }

    pub(crate) fn doc() -> StatusDoc {
        StatusDoc {
            version: "0.1.0".into(),
            generated_at: 1_800_000_000.0,
            started_at: 1_799_999_000.0,
            config: "/etc/rsbal/rsbal.conf".into(),
            alert: AlertDoc {
                status: Level::Critical,
                msg: "web: Servers b are marked down but pooled".into(),
            },
            last_reload: Some(ReloadDoc {
                at: 1_799_999_500.0,
                ok: false,
                message: "rejected: bad 'port'".into(),
            }),
            bgp: BgpDoc {
                enabled: true,
                sessions: vec![BgpSessionDoc {
                    peer: "192.0.2.254".into(),
                    local_asn: 64600,
                    established: true,
                    state: "Established".into(),
                    since: 1_799_999_100.0,
                }],
            },
            pools: vec![PoolDoc {
                name: "web".into(),
                protocol: "tcp".into(),
                vip: "192.0.2.1:80".into(),
                scheduler: "wrr".into(),
                depool_threshold: 0.5,
                can_depool: false,
                pooled_down: vec!["b".into()],
                could_not_depool_total: 1,
                status: Level::Critical,
                msg: "Servers b are marked down but pooled".into(),
                ipvs_out_of_sync: Some("applying 1 command(s) failed: <ENOMEM>".into()),
                monitors: vec!["ProxyFetch".into()],
                servers: vec![
                    server("a", true, true, true),
                    server("b", true, false, true),
                    server("c", true, false, false),
                    server("d&e", false, true, false),
                ],
            }],
        }
    }
}
