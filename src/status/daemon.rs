//! What the daemon publishes about itself, in the snapshot store (for the
//! status page) and as metrics: build info, reloads, BGP.
//!
//! Metrics: `rsbal_build_info{version}` (1), `rsbal_reloads_total{result}`
//! (`success` / `failure`), `rsbal_last_reload_successful`,
//! `rsbal_last_reload_timestamp_seconds`, and PyBal's `pybal_bgp_enabled`,
//! `pybal_bgp_session_established{local_asn,peer}` (the labels PyBal's code
//! has and the restart-pybal cookbook and the PyBalBGPUnstable alert read)
//! and `pybal_bgp_session_state_count{local_asn,local_ip,remote_ip,side,state}`
//! (TCP connections with a peer by FSM state, as PyBal counts them).
//!
//! The BGP speaker reports each session with [`bgp_session`] and its
//! connections with [`bgp_connections`] (and [`bgp_session_removed`] when a
//! peer leaves the config): that sets the metrics and the `bgp` part of
//! [`DaemonStatus`] the status page shows.

use crate::status::metrics;
use crate::status::snapshot::{BgpSessionStatus, ReloadStatus, SnapshotStore};
use prometheus::{GaugeVec, IntCounterVec};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

struct Families {
    build_info: GaugeVec,
    reloads: IntCounterVec,
    last_reload_successful: GaugeVec,
    last_reload_timestamp: GaugeVec,
    bgp_enabled: GaugeVec,
    bgp_session_established: GaugeVec,
    bgp_session_state_count: GaugeVec,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| Families {
    build_info: metrics::gauge_vec(
        "rsbal_build_info",
        "rsbal build information (always 1)",
        &["version"],
    ),
    reloads: metrics::int_counter_vec(
        "rsbal_reloads_total",
        "Configuration reloads (SIGHUP) by result",
        &["result"],
    ),
    last_reload_successful: metrics::gauge_vec(
        "rsbal_last_reload_successful",
        "Whether the last configuration reload was applied (1) or rejected (0)",
        &[],
    ),
    last_reload_timestamp: metrics::gauge_vec(
        "rsbal_last_reload_timestamp_seconds",
        "Unix time of the last configuration reload",
        &[],
    ),
    bgp_enabled: metrics::gauge_vec("pybal_bgp_enabled", "BGP Enabled", &[]),
    bgp_session_established: metrics::gauge_vec(
        "pybal_bgp_session_established",
        "BGP session established",
        &["local_asn", "peer"],
    ),
    bgp_session_state_count: metrics::gauge_vec(
        "pybal_bgp_session_state_count",
        "Number of sessions in the specified state",
        &STATE_COUNT_LABELS,
    ),
});

/// Labels of `pybal_bgp_session_state_count`, in [`BgpConnection::labels`]' order.
const STATE_COUNT_LABELS: [&str; 5] = ["local_asn", "local_ip", "remote_ip", "side", "state"];

/// One TCP connection with a BGP peer, as `pybal_bgp_session_state_count`
/// counts it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct BgpConnection {
    pub(crate) local_asn: u32,
    pub(crate) local_ip: String,
    pub(crate) remote_ip: String,
    /// `active` (rsbal connected) or `passive` (the peer did).
    pub(crate) side: &'static str,
    /// PyBal's state name: `IDLE`, `CONNECT`, `ACTIVE`, `OPENSENT`,
    /// `OPENCONFIRM`, `ESTABLISHED`.
    pub(crate) state: String,
}

impl BgpConnection {
    fn labels(&self) -> [String; 5] {
        [
            self.local_asn.to_string(),
            self.local_ip.clone(),
            self.remote_ip.clone(),
            self.side.to_string(),
            self.state.clone(),
        ]
    }
}

/// The label sets of `pybal_bgp_session_state_count` each peer has set, so
/// that a state a peer left drops to 0 (as PyBal's inc/dec leaves it) and a
/// removed peer's series go.
static STATE_SERIES: LazyLock<Mutex<BTreeMap<String, BTreeSet<[String; 5]>>>> =
    LazyLock::new(|| Mutex::new(BTreeMap::new()));

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// At start-up: declares the daemon's metrics and publishes the first status.
pub(crate) fn started(store: &SnapshotStore, config_path: &str, bgp_enabled: bool) {
    let f = &*FAMILIES;
    f.build_info
        .with_label_values(&[env!("CARGO_PKG_VERSION")])
        .set(1.0);
    for result in ["success", "failure"] {
        f.reloads.with_label_values(&[result]);
    }
    crate::ipvs::writer::declare_metrics();
    store.update_daemon(|d| {
        d.config_path = config_path.to_string();
    });
    set_bgp_enabled(store, bgp_enabled);
}

/// `bgp` in `[global]` (at start and after a reload that changed it).
pub(crate) fn set_bgp_enabled(store: &SnapshotStore, enabled: bool) {
    FAMILIES
        .bgp_enabled
        .with_label_values(&[] as &[&str])
        .set(if enabled { 1.0 } else { 0.0 });
    store.update_daemon(|d| d.bgp_enabled = enabled);
}

/// A SIGHUP reload ended: applied (`ok`) or rejected, with what changed or why.
pub(crate) fn reload_finished(store: &SnapshotStore, ok: bool, message: String) {
    let f = &*FAMILIES;
    let now = SystemTime::now();
    f.reloads
        .with_label_values(&[if ok { "success" } else { "failure" }])
        .inc();
    f.last_reload_successful
        .with_label_values(&[] as &[&str])
        .set(if ok { 1.0 } else { 0.0 });
    f.last_reload_timestamp
        .with_label_values(&[] as &[&str])
        .set(unix_secs(now));
    store.update_daemon(|d| {
        d.last_reload = Some(ReloadStatus {
            at: now,
            ok,
            message,
        })
    });
}

/// For the BGP speaker: the state of the session with `peer` (the address as
/// configured). `state` names the FSM state (`Established`, `Connect`, …).
pub(crate) fn bgp_session(
    store: &SnapshotStore,
    local_asn: u32,
    peer: &str,
    established: bool,
    state: &str,
) {
    FAMILIES
        .bgp_session_established
        .with_label_values(&[&local_asn.to_string(), peer])
        .set(if established { 1.0 } else { 0.0 });
    store.update_daemon(|d| {
        let since = match d.bgp.get(peer) {
            Some(old) if old.established == established => old.since,
            _ => SystemTime::now(),
        };
        d.bgp.insert(
            peer.to_string(),
            BgpSessionStatus {
                peer: peer.to_string(),
                local_asn,
                established,
                state: state.to_string(),
                since,
            },
        );
    });
}

/// For the BGP speaker: the TCP connections with `peer` now, each in its FSM
/// state. Sets each state's count; states the peer had before and has no
/// connection in now go to 0.
pub(crate) fn bgp_connections(peer: &str, connections: &[BgpConnection]) {
    let family = &FAMILIES.bgp_session_state_count;
    let mut counts: BTreeMap<[String; 5], u32> = BTreeMap::new();
    for c in connections {
        *counts.entry(c.labels()).or_default() += 1;
    }
    let mut series = STATE_SERIES.lock().unwrap_or_else(|p| p.into_inner());
    let seen = series.entry(peer.to_string()).or_default();
    for labels in seen.iter() {
        if !counts.contains_key(labels) {
            family
                .with_label_values(&labels.each_ref().map(String::as_str))
                .set(0.0);
        }
    }
    for (labels, n) in counts {
        family
            .with_label_values(&labels.each_ref().map(String::as_str))
            .set(f64::from(n));
        seen.insert(labels);
    }
}

/// For the BGP speaker: `peer` is gone (removed from the config, or BGP off).
pub(crate) fn bgp_session_removed(store: &SnapshotStore, peer: &str) {
    let gone = STATE_SERIES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(peer)
        .unwrap_or_default();
    for labels in gone {
        let _ = FAMILIES
            .bgp_session_state_count
            .remove_label_values(&labels.each_ref().map(String::as_str));
    }
    let removed = {
        let daemon = store.daemon();
        daemon.bgp.get(peer).map(|s| s.local_asn)
    };
    if let Some(asn) = removed {
        let _ = FAMILIES
            .bgp_session_established
            .remove_label_values(&[&asn.to_string(), peer]);
    }
    store.update_daemon(|d| {
        d.bgp.remove(peer);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bgp_sessions_reach_metrics_and_status() {
        let store = SnapshotStore::new();
        started(&store, "/etc/rsbal/rsbal.conf", true);
        bgp_session(&store, 64600, "192.0.2.254", false, "Connect");
        let first = store.daemon().bgp["192.0.2.254"].since;
        bgp_session(&store, 64600, "192.0.2.254", true, "Established");
        let d = store.daemon();
        assert!(d.bgp_enabled);
        assert!(d.bgp["192.0.2.254"].established);
        assert!(d.bgp["192.0.2.254"].since >= first);
        bgp_session(&store, 64600, "192.0.2.253", false, "Active");
        let text = metrics::render();
        // What the restart-pybal cookbook's regex reads, value text included.
        assert!(
            text.contains(
                "\npybal_bgp_session_established{local_asn=\"64600\",peer=\"192.0.2.254\"} 1.0\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "\npybal_bgp_session_established{local_asn=\"64600\",peer=\"192.0.2.253\"} 0.0\n"
            ),
            "{text}"
        );
        assert!(text.contains("\npybal_bgp_enabled 1.0\n"), "{text}");
        bgp_session_removed(&store, "192.0.2.254");
        bgp_session_removed(&store, "192.0.2.253");
        assert!(store.daemon().bgp.is_empty());
        let text = metrics::render();
        assert!(!text.contains("192.0.2.254"), "{text}");
        assert!(!text.contains("192.0.2.253"), "{text}");
    }

    #[test]
    fn reloads_are_recorded() {
        let store = SnapshotStore::new();
        reload_finished(&store, false, "bad".into());
        let d = store.daemon();
        let r = d.last_reload.as_ref().unwrap();
        assert!(!r.ok);
        assert_eq!(r.message, "bad");
        assert!(metrics::render().contains("rsbal_last_reload_successful 0.0"));
    }

    #[test]
    fn bgp_connections_are_counted_by_state() {
        let conn = |side, state: &str| BgpConnection {
            local_asn: 64601,
            local_ip: "192.0.2.1".into(),
            remote_ip: "192.0.2.250".into(),
            side,
            state: state.into(),
        };
        let line = |side: &str, state: &str, n: &str| {
            format!("\npybal_bgp_session_state_count{{local_asn=\"64601\",local_ip=\"192.0.2.1\",remote_ip=\"192.0.2.250\",side=\"{side}\",state=\"{state}\"}} {n}\n")
        };
        bgp_connections("192.0.2.250", &[conn("active", "OPENSENT")]);
        let text = metrics::render();
        assert!(text.contains(&line("active", "OPENSENT", "1.0")), "{text}");
        // A collision: both connections in OPENCONFIRM; the old state drops to 0.
        bgp_connections(
            "192.0.2.250",
            &[
                conn("active", "OPENCONFIRM"),
                conn("passive", "OPENCONFIRM"),
            ],
        );
        let text = metrics::render();
        assert!(text.contains(&line("active", "OPENSENT", "0.0")), "{text}");
        assert!(
            text.contains(&line("active", "OPENCONFIRM", "1.0")),
            "{text}"
        );
        assert!(
            text.contains(&line("passive", "OPENCONFIRM", "1.0")),
            "{text}"
        );
        let store = SnapshotStore::new();
        bgp_session_removed(&store, "192.0.2.250");
        assert!(!metrics::render().contains("192.0.2.250"));
    }
}
