//! PyBal's pool metrics: `pybal_service_*{service}` and
//! `pybal_monitor_*{service,host,monitor}`, with PyBal's names, types and
//! HELP texts (`pybal/coordinator.py`, `pybal/monitor.py`).
//!
//! Only the service thread updates them: the service gauges when it
//! publishes a snapshot, the monitor counters on each monitor report it
//! hands to its Coordinator. As in PyBal, a monitor's first result counts as
//! a transition (its state goes from unknown to up or down), and `_status`
//! appears with that first result.

use crate::service::coordinator::MonitorState;
use crate::status::metrics;
use crate::status::snapshot::ServiceSnapshot;
use prometheus::{GaugeVec, IntCounterVec};
use std::sync::LazyLock;

struct ServiceFamilies {
    servers: GaugeVec,
    servers_enabled: GaugeVec,
    servers_up: GaugeVec,
    servers_pooled: GaugeVec,
    can_depool: GaugeVec,
    pooled_down_servers: GaugeVec,
    could_not_depool_total: IntCounterVec,
    depool_threshold: GaugeVec,
}

static SERVICE: LazyLock<ServiceFamilies> = LazyLock::new(|| {
    let gauge = |name: &str, help: &str| metrics::gauge_vec(name, help, &["service"]);
    ServiceFamilies {
        servers: gauge("pybal_service_servers", "Amount of servers"),
        servers_enabled: gauge("pybal_service_servers_enabled", "Amount of enabled servers"),
        servers_up: gauge("pybal_service_servers_up", "Amount of up servers"),
        servers_pooled: gauge("pybal_service_servers_pooled", "Amount of pooled servers"),
        can_depool: gauge("pybal_service_can_depool", "Can depool more servers"),
        pooled_down_servers: gauge(
            "pybal_service_pooled_down_servers",
            "Amount of down servers pooled because too many down",
        ),
        could_not_depool_total: metrics::int_counter_vec(
            "pybal_service_could_not_depool_total",
            "Pybal could not depool a server because too many down",
            &["service"],
        ),
        depool_threshold: gauge(
            "pybal_service_depool_threshold",
            "Threshold of up servers vs total servers below which pybal can't depool any more",
        ),
    }
});

struct MonitorFamilies {
    up_transitions: IntCounterVec,
    down_transitions: IntCounterVec,
    up_results: IntCounterVec,
    down_results: IntCounterVec,
    status: GaugeVec,
}

const MONITOR_LABELS: &[&str] = &["service", "host", "monitor"];

static MONITOR: LazyLock<MonitorFamilies> = LazyLock::new(|| {
    let counter = |name: &str, help: &str| metrics::int_counter_vec(name, help, MONITOR_LABELS);
    MonitorFamilies {
        up_transitions: counter(
            "pybal_monitor_up_transitions_total",
            "Monitor up transition count",
        ),
        down_transitions: counter(
            "pybal_monitor_down_transitions_total",
            "Monitor down transition count",
        ),
        up_results: counter("pybal_monitor_up_results_total", "Monitor up result count"),
        down_results: counter(
            "pybal_monitor_down_results_total",
            "Monitor down result count",
        ),
        status: metrics::gauge_vec("pybal_monitor_status", "Monitor up status", MONITOR_LABELS),
    }
});

/// Sets the service gauges from a snapshot about to be published.
pub(crate) fn publish(snap: &ServiceSnapshot) {
    let f = &*SERVICE;
    let labels = [snap.name.as_str()];
    let count = |pred: fn(&crate::service::coordinator::ServerState) -> bool| {
        snap.servers.iter().filter(|s| pred(s)).count() as f64
    };
    f.servers
        .with_label_values(&labels)
        .set(snap.servers.len() as f64);
    f.servers_enabled
        .with_label_values(&labels)
        .set(count(|s| s.enabled));
    f.servers_up.with_label_values(&labels).set(count(|s| s.up));
    f.servers_pooled
        .with_label_values(&labels)
        .set(count(|s| s.pooled));
    f.can_depool
        .with_label_values(&labels)
        .set(if snap.can_depool { 1.0 } else { 0.0 });
    f.pooled_down_servers
        .with_label_values(&labels)
        .set(snap.pooled_down.len() as f64);
    f.depool_threshold
        .with_label_values(&labels)
        .set(snap.depool_threshold);
    // The Coordinator keeps the running total; the counter catches up.
    let counter = f.could_not_depool_total.with_label_values(&labels);
    counter.inc_by(snap.could_not_depool_total.saturating_sub(counter.get()));
}

/// What one monitor report did to the monitor's state, judged from the
/// state before and after the Coordinator took it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ResultEffect {
    pub(crate) up: bool,
    /// First result or a change of state.
    pub(crate) transition: bool,
}

/// `None` when the Coordinator did not count the result (unknown host,
/// server not ready).
pub(crate) fn result_effect(before: &MonitorState, after: &MonitorState) -> Option<ResultEffect> {
    let up = if after.up_results > before.up_results {
        true
    } else if after.down_results > before.down_results {
        false
    } else {
        return None;
    };
    Some(ResultEffect {
        up,
        transition: after.up != before.up,
    })
}

/// Counts one monitor result.
pub(crate) fn record_result(service: &str, host: &str, monitor: &str, effect: ResultEffect) {
    let f = &*MONITOR;
    let labels = [service, host, monitor];
    if effect.up {
        f.up_results.with_label_values(&labels).inc();
    } else {
        f.down_results.with_label_values(&labels).inc();
    }
    if effect.transition {
        let (transitions, status) = if effect.up {
            (&f.up_transitions, 1.0)
        } else {
            (&f.down_transitions, 0.0)
        };
        transitions.with_label_values(&labels).inc();
        f.status.with_label_values(&labels).set(status);
    }
}

/// Removes every series of these servers (their monitors were stopped), in
/// one pass over the registry.
pub(crate) fn forget_servers(service: &str, hosts: &[&str]) {
    if hosts.is_empty() {
        return;
    }
    let hosts: std::collections::HashSet<&str> = hosts.iter().copied().collect();
    metrics::forget_where(&|labels| {
        labels.get("service") == Some(&service)
            && labels.get("host").is_some_and(|h| hosts.contains(h))
    });
}

/// Removes every series of one service (it was removed from the config).
pub(crate) fn forget_service(service: &str) {
    metrics::forget(&[("service", service)]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(up: Option<bool>, ups: u64, downs: u64) -> MonitorState {
        MonitorState {
            up,
            up_results: ups,
            down_results: downs,
            ..Default::default()
        }
    }

    #[test]
    fn effects() {
        let first_up = result_effect(&state(None, 0, 0), &state(Some(true), 1, 0));
        assert_eq!(
            first_up,
            Some(ResultEffect {
                up: true,
                transition: true
            })
        );
        let repeat = result_effect(&state(Some(true), 1, 0), &state(Some(true), 2, 0));
        assert_eq!(
            repeat,
            Some(ResultEffect {
                up: true,
                transition: false
            })
        );
        let down = result_effect(&state(Some(true), 2, 0), &state(Some(false), 2, 1));
        assert_eq!(
            down,
            Some(ResultEffect {
                up: false,
                transition: true
            })
        );
        assert_eq!(
            result_effect(&state(Some(true), 2, 0), &state(Some(true), 2, 0)),
            None
        );
    }

    #[test]
    fn results_and_transitions_are_counted_and_forgotten() {
        let up = ResultEffect {
            up: true,
            transition: true,
        };
        let again = ResultEffect {
            up: true,
            transition: false,
        };
        let down = ResultEffect {
            up: false,
            transition: true,
        };
        for e in [up, again, down] {
            record_result("pm_test", "h1", "ProxyFetch", e);
        }
        let labels = ["pm_test", "h1", "ProxyFetch"];
        let f = &*MONITOR;
        assert_eq!(f.up_results.with_label_values(&labels).get(), 2);
        assert_eq!(f.down_results.with_label_values(&labels).get(), 1);
        assert_eq!(f.up_transitions.with_label_values(&labels).get(), 1);
        assert_eq!(f.down_transitions.with_label_values(&labels).get(), 1);
        assert_eq!(f.status.with_label_values(&labels).get(), 0.0);
        forget_servers("pm_test", &["h1"]);
        assert!(!metrics::render().contains("pm_test"));
    }

    #[test]
    fn forgetting_a_thousand_servers_is_one_pass() {
        let up = ResultEffect {
            up: true,
            transition: true,
        };
        let hosts: Vec<String> = (0..1000).map(|i| format!("big{i}")).collect();
        for host in &hosts {
            for monitor in ["IdleConnection", "ProxyFetch"] {
                record_result("pm_big", host, monitor, up);
            }
        }
        let refs: Vec<&str> = hosts.iter().map(String::as_str).collect();
        let t0 = std::time::Instant::now();
        forget_servers("pm_big", &refs);
        eprintln!("forgot 1000 servers (8000 series) in {:?}", t0.elapsed());
        assert!(!metrics::render().contains("pm_big"));
    }
}
