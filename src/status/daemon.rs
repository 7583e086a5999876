//! What the daemon publishes about itself, in the snapshot store (for the
//! status page) and as metrics: build info, reloads, BGP.
//!
//! Metrics: `rsbal_build_info{version}` (1), `rsbal_reloads_total{result}`
//! (`success` / `failure`), `rsbal_last_reload_successful`,
//! `rsbal_last_reload_timestamp_seconds`, and PyBal's `pybal_bgp_enabled` and
//! `pybal_bgp_session_established{asn,peer}` (the label names SPEC 9 and
//! the BGP issue fix; `asn` is rsbal's local ASN).
//!
//! The BGP speaker reports each session with [`bgp_session`] (and
//! [`bgp_session_removed`] when a peer leaves the config): that sets the
//! metric and the `bgp` part of [`DaemonStatus`] the status page shows.

use crate::status::metrics;
use crate::status::snapshot::{BgpSessionStatus, ReloadStatus, SnapshotStore};
use prometheus::{GaugeVec, IntCounterVec};
use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

struct Families {
    build_info: GaugeVec,
    reloads: IntCounterVec,
    last_reload_successful: GaugeVec,
    last_reload_timestamp: GaugeVec,
    bgp_enabled: GaugeVec,
    bgp_session_established: GaugeVec,
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
        &["asn", "peer"],
    ),
});

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

/// For the BGP speaker: `peer` is gone (removed from the config, or BGP off).
pub(crate) fn bgp_session_removed(store: &SnapshotStore, peer: &str) {
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
        let text = metrics::render();
        assert!(
            text.contains(r#"pybal_bgp_session_established{asn="64600",peer="192.0.2.254"} 1"#),
            "{text}"
        );
        assert!(text.contains("pybal_bgp_enabled 1"), "{text}");
        bgp_session_removed(&store, "192.0.2.254");
        assert!(store.daemon().bgp.is_empty());
        assert!(!metrics::render().contains("192.0.2.254"));
    }

    #[test]
    fn reloads_are_recorded() {
        let store = SnapshotStore::new();
        reload_finished(&store, false, "bad".into());
        let d = store.daemon();
        let r = d.last_reload.as_ref().unwrap();
        assert!(!r.ok);
        assert_eq!(r.message, "bad");
        assert!(metrics::render().contains("rsbal_last_reload_successful 0"));
    }
}
