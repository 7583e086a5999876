//! Pool health as PyBal's `/alerts` judges it (SPEC 9), pure.
//!
//! - **critical**: a pool has servers that are down but stay pooled because
//!   of the depool threshold: `<pool>: Servers a, b are marked down but
//!   pooled`, pools joined with `; `;
//! - **warning**: a pool of more than one server is too small to depool any
//!   (`total < total × threshold + 1`): `Pool <pool> is too small to allow
//!   depooling. ` once per pool, concatenated (PyBal's words, trailing space
//!   included);
//! - **warning** (rsbal's own): servers whose names do not resolve: `Pool
//!   <pool>: servers whose names do not resolve: <host> (<why>), … ` (a
//!   server that never resolved is neither pooled nor monitored);
//! - **ok**: `All pools are healthy`.
//!
//! PyBal also warns about pools of zero or one server; SPEC 9 leaves those
//! out (a one-server pool can never depool, by design, and is not news).
//!
//! rsbal adds (issue 11): a pool whose desired state the kernel's IPVS
//! table does not have (a failed apply being retried, or a table that
//! cannot be read) is at least a **warning**: `Pool <pool> is out of sync
//! with the kernel's IPVS table: <why>. `, appended to the message of any
//! level ([`with_ipvs`]).

use crate::status::snapshot::{DaemonStatus, ServiceSnapshot};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Severity, ordered: `Ok < Warning < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Level {
    Ok,
    Warning,
    Critical,
}

impl Level {
    /// `OK`, `WARNING`, `CRITICAL`.
    pub(crate) fn upper(self) -> &'static str {
        match self {
            Level::Ok => "OK",
            Level::Warning => "WARNING",
            Level::Critical => "CRITICAL",
        }
    }

    /// `ok`, `warning`, `critical` (the JSON `status`).
    pub(crate) fn lower(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Critical => "critical",
        }
    }

    /// Monitoring-plugin exit code: 0, 1, 2.
    pub(crate) fn exit_code(self) -> i32 {
        match self {
            Level::Ok => 0,
            Level::Warning => 1,
            Level::Critical => 2,
        }
    }
}

/// The answer of `/alerts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Alert {
    pub(crate) level: Level,
    pub(crate) msg: String,
}

impl Alert {
    /// `OK - All pools are healthy`, `CRITICAL - …`.
    pub(crate) fn text(&self) -> String {
        format!("{} - {}", self.level.upper(), self.msg)
    }
}

/// One pool's own level and message (`Ok` with an empty message when healthy).
pub(crate) fn pool_alert(snap: &ServiceSnapshot) -> Alert {
    let total = snap.servers.len() as f64;
    if !snap.pooled_down.is_empty() {
        return Alert {
            level: Level::Critical,
            msg: format!(
                "Servers {} are marked down but pooled",
                snap.pooled_down.join(", ")
            ),
        };
    }
    let mut msg = String::new();
    if snap.servers.len() > 1 && total < total * snap.depool_threshold + 1.0 {
        msg = format!("Pool {} is too small to allow depooling. ", snap.name);
    }
    let unresolved: Vec<String> = snap
        .servers
        .iter()
        .filter_map(|s| Some(format!("{} ({})", s.host, s.unresolved.as_ref()?)))
        .collect();
    if !unresolved.is_empty() {
        msg.push_str(&format!(
            "Pool {}: servers whose names do not resolve: {}. ",
            snap.name,
            unresolved.join(", ")
        ));
    }
    Alert {
        level: if msg.is_empty() {
            Level::Ok
        } else {
            Level::Warning
        },
        msg,
    }
}

/// `alert`, made CRITICAL while rsbal is out of one of its own resources
/// (`exhausted`: resource → what happened; `status::resources`): `rsbal is
/// out of fds: …` first, then what the pools said.
pub(crate) fn with_resources(alert: Alert, exhausted: &BTreeMap<String, String>) -> Alert {
    if exhausted.is_empty() {
        return alert;
    }
    let mut parts: Vec<String> = exhausted
        .iter()
        .map(|(resource, what)| format!("rsbal is out of {resource}: {what}"))
        .collect();
    if alert.level == Level::Critical {
        parts.push(alert.msg);
    }
    Alert {
        level: Level::Critical,
        msg: parts.join("; "),
    }
}

/// The daemon-wide alert over every pool (PyBal's `Alerts.render_GET`).
/// PyBal's pool health with rsbal's own additions: services out of sync with
/// the kernel (at least WARNING, [`with_ipvs`]) and rsbal out of a resource
/// (CRITICAL, [`with_resources`]). What `/alerts` and the status page show.
pub(crate) fn of<'a>(
    pools: impl IntoIterator<Item = &'a ServiceSnapshot>,
    daemon: &DaemonStatus,
) -> Alert {
    with_resources(
        with_ipvs(evaluate(pools), &daemon.ipvs_out_of_sync),
        &daemon.resources_exhausted,
    )
}

pub(crate) fn evaluate<'a>(pools: impl IntoIterator<Item = &'a ServiceSnapshot>) -> Alert {
    let mut critical = Vec::new();
    let mut warning = String::new();
    for snap in pools {
        let alert = pool_alert(snap);
        match alert.level {
            Level::Critical => critical.push(format!("{}: {}", snap.name, alert.msg)),
            Level::Warning => warning.push_str(&alert.msg),
            Level::Ok => {}
        }
    }
    if !critical.is_empty() {
        Alert {
            level: Level::Critical,
            msg: critical.join("; "),
        }
    } else if !warning.is_empty() {
        Alert {
            level: Level::Warning,
            msg: warning,
        }
    } else {
        Alert {
            level: Level::Ok,
            msg: "All pools are healthy".into(),
        }
    }
}

/// The text `/alerts` gives a pool out of sync with the kernel.
pub(crate) fn out_of_sync_text(pool: &str, why: &str) -> String {
    format!("Pool {pool} is out of sync with the kernel's IPVS table: {why}. ")
}

/// `alert` raised to at least a warning for every pool out of sync with the
/// kernel's IPVS table (pool name → why), each named in the message.
pub(crate) fn with_ipvs(alert: Alert, out_of_sync: &BTreeMap<String, String>) -> Alert {
    if out_of_sync.is_empty() {
        return alert;
    }
    let texts: String = out_of_sync
        .iter()
        .map(|(pool, why)| out_of_sync_text(pool, why))
        .collect();
    match alert.level {
        Level::Ok => Alert {
            level: Level::Warning,
            msg: texts,
        },
        Level::Warning => Alert {
            level: Level::Warning,
            msg: alert.msg + &texts,
        },
        Level::Critical => Alert {
            level: Level::Critical,
            msg: format!("{}; {}", alert.msg, texts),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use crate::service::coordinator::ServerState;

    fn pool(name: &str, servers: usize, threshold: f64, pooled_down: &[&str]) -> ServiceSnapshot {
        ServiceSnapshot {
            name: name.into(),
            protocol: Protocol::Tcp,
            ip: "192.0.2.1".parse().unwrap(),
            port: 80,
            scheduler: "wrr".into(),
            depool_threshold: threshold,
            can_depool: true,
            pooled_down: pooled_down.iter().map(|s| s.to_string()).collect(),
            could_not_depool_total: 0,
            monitor_names: vec![],
            servers: (0..servers)
                .map(|i| ServerState {
                    host: format!("h{i}"),
                    ip: None,
                    weight: 10,
                    enabled: true,
                    ready: true,
                    up: true,
                    pooled: true,
                    monitors: vec![],
                    unresolved: None,
                })
                .collect(),
        }
    }

    #[test]
    fn healthy() {
        let a = evaluate([&pool("a", 4, 0.5, &[]), &pool("b", 0, 0.5, &[])]);
        assert_eq!(a.level, Level::Ok);
        assert_eq!(a.text(), "OK - All pools are healthy");
        // One server: never a warning (SPEC 9).
        assert_eq!(evaluate([&pool("one", 1, 0.5, &[])]).level, Level::Ok);
    }

    #[test]
    fn warning_when_too_small_to_depool() {
        // 2 servers, threshold 0.5: 2 < 2 × 0.5 + 1 is false → ok.
        assert_eq!(evaluate([&pool("a", 2, 0.5, &[])]).level, Level::Ok);
        // 3 servers, threshold 0.7: 3 < 3.1 → warning.
        let a = evaluate([&pool("a", 3, 0.7, &[]), &pool("b", 2, 1.0, &[])]);
        assert_eq!(a.level, Level::Warning);
        assert_eq!(
            a.text(),
            "WARNING - Pool a is too small to allow depooling. Pool b is too small to allow depooling. "
        );
    }

    #[test]
    fn unresolved_servers_are_a_warning_naming_them_and_why() {
        let mut p = pool("web", 4, 0.5, &[]);
        p.servers[1].unresolved = Some("no answer yet".into());
        p.servers[3].unresolved = Some("Name or service not known".into());
        let a = evaluate([&pool("a", 4, 0.5, &[]), &p]);
        assert_eq!(
            a.text(),
            "WARNING - Pool web: servers whose names do not resolve: h1 (no answer yet), \
             h3 (Name or service not known). "
        );
        // Beside a pool too small to depool, both are said.
        let mut small = pool("small", 3, 0.7, &[]);
        small.servers[0].unresolved = Some("no answer yet".into());
        assert_eq!(
            pool_alert(&small).msg,
            "Pool small is too small to allow depooling. \
             Pool small: servers whose names do not resolve: h0 (no answer yet). "
        );
    }

    #[test]
    fn critical_wins_and_lists_every_pool() {
        let a = evaluate([
            &pool("a", 3, 0.7, &[]),
            &pool("b", 4, 0.5, &["h1", "h2"]),
            &pool("c", 4, 0.5, &["h3"]),
        ]);
        assert_eq!(a.level, Level::Critical);
        assert_eq!(
            a.text(),
            "CRITICAL - b: Servers h1, h2 are marked down but pooled; c: Servers h3 are marked down but pooled"
        );
        assert!(Level::Critical > Level::Warning && Level::Warning > Level::Ok);
    }

    #[test]
    fn running_out_of_a_resource_is_critical() {
        let healthy = evaluate([&pool("a", 4, 0.5, &[])]);
        assert_eq!(with_resources(healthy.clone(), &BTreeMap::new()), healthy);
        let out = BTreeMap::from([("fds".to_string(), "3 check(s) could not run".to_string())]);
        assert_eq!(
            with_resources(healthy, &out).text(),
            "CRITICAL - rsbal is out of fds: 3 check(s) could not run"
        );
        let critical = evaluate([&pool("b", 4, 0.5, &["h1"])]);
        assert_eq!(
            with_resources(critical, &out).text(),
            "CRITICAL - rsbal is out of fds: 3 check(s) could not run; b: Servers h1 are marked down but pooled"
        );
    }

    #[test]
    fn out_of_sync_pools_are_at_least_a_warning_and_named() {
        let oos: BTreeMap<String, String> = [(
            "web".to_string(),
            "applying 1 command(s) failed: boom".to_string(),
        )]
        .into();
        let a = with_ipvs(evaluate([&pool("web", 4, 0.5, &[])]), &oos);
        assert_eq!(
            a.text(),
            "WARNING - Pool web is out of sync with the kernel's IPVS table: \
             applying 1 command(s) failed: boom. "
        );
        let a = with_ipvs(evaluate([&pool("a", 3, 0.7, &[])]), &oos);
        assert_eq!(a.level, Level::Warning);
        assert!(a.msg.starts_with("Pool a is too small") && a.msg.contains("Pool web is out"));
        let a = with_ipvs(evaluate([&pool("b", 4, 0.5, &["h1"])]), &oos);
        assert_eq!(a.level, Level::Critical);
        assert!(a.msg.starts_with("b: Servers h1") && a.msg.contains("; Pool web is out"));
        let healthy = evaluate([&pool("web", 4, 0.5, &[])]);
        assert_eq!(with_ipvs(healthy.clone(), &BTreeMap::new()), healthy);
    }
}
