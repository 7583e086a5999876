//! Prometheus metrics: one process-wide registry and the text exposition.
//!
//! Each module that measures something declares its metric families here or
//! beside itself with [`int_counter_vec`] / [`gauge_vec`] / [`histogram_vec`]
//! (registered in [`registry`]) and updates them from its own thread; the
//! metric types are atomic, so no lock is shared with the HTTP server, which
//! only calls [`render`].
//!
//! No stale series: every family declared with a `service` label is
//! remembered, and [`forget`] removes from all of them the series whose labels
//! match (e.g. `service` and `host` of a server that was removed). Threads
//! that update such series on their own (monitor threads) do it inside
//! [`while_current`], so an update can never re-create a series that was
//! just forgotten.

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, RwLock};

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

/// Content type of [`render`]'s output (Prometheus text format 0.0.4).
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every registered metric in the Prometheus text exposition format.
pub(crate) fn render() -> String {
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&REGISTRY.gather(), &mut out) {
        log::error!(target: "metrics", "cannot encode metrics: {e}");
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn register(collector: Box<dyn Collector>, name: &str) {
    if let Err(e) = REGISTRY.register(collector) {
        log::error!(target: "metrics", "cannot register metric {name}: {e}");
    }
}

/// Removes the series of one family whose labels include all of `matches`.
type Forgetter = Box<dyn Fn(&dyn Fn(&HashMap<&str, &str>) -> bool) + Send + Sync>;

/// Families with a `service` label, for [`forget`].
static PER_SERVICE: LazyLock<Mutex<Vec<Forgetter>>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// Orders [`forget`] (writer) against [`while_current`] (readers). Always
/// taken before `PER_SERVICE`, never while holding it: an update may declare
/// (register) its family on first use.
static ORDER: RwLock<()> = RwLock::new(());

/// Registers `family` and, when it has a `service` label, remembers it for
/// [`forget`].
fn register_vec<T>(family: MetricVec<T>, name: &str, labels: &[&str]) -> MetricVec<T>
where
    T: MetricVecBuilder + 'static,
{
    register(Box::new(family.clone()), name);
    if labels.contains(&"service") {
        let vec = family.clone();
        let forgetter: Forgetter = Box::new(move |doomed| remove_where(&vec, doomed));
        PER_SERVICE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(forgetter);
    }
    family
}

/// Removes every series of `vec` whose labels satisfy `doomed`.
fn remove_where<T: MetricVecBuilder>(
    vec: &MetricVec<T>,
    doomed: &dyn Fn(&HashMap<&str, &str>) -> bool,
) {
    for family in vec.collect() {
        for metric in family.get_metric() {
            let labels: HashMap<&str, &str> = metric
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            if doomed(&labels) {
                let _ = vec.remove(&labels);
            }
        }
    }
}

/// Removes, from every family with a `service` label, each series whose
/// labels include all of `matches`: `[("service", s)]` for a removed service,
/// `[("service", s), ("host", h)]` for a removed server. Call it after the
/// threads that update those series were told to stop.
pub(crate) fn forget(matches: &[(&str, &str)]) {
    forget_where(&|labels| {
        matches
            .iter()
            .all(|(name, value)| labels.get(name) == Some(value))
    });
}

/// Like [`forget`], for any condition on the labels: one pass over every
/// series however many servers go (a reload may drop thousands).
pub(crate) fn forget_where(doomed: &dyn Fn(&HashMap<&str, &str>) -> bool) {
    let _order = ORDER.write().unwrap_or_else(|p| p.into_inner());
    let families = PER_SERVICE.lock().unwrap_or_else(|p| p.into_inner());
    for forget_in in families.iter() {
        forget_in(doomed);
    }
}

/// Runs `update` unless `stopped()` holds, ordered against [`forget`]: a
/// thread that updates its own series (a monitor) wraps each update in this,
/// with its stop check, so that once its owner has stopped it and called
/// [`forget`], no update can re-create a forgotten series.
pub(crate) fn while_current(stopped: impl FnOnce() -> bool, update: impl FnOnce()) {
    let _order = ORDER.read().unwrap_or_else(|p| p.into_inner());
    if !stopped() {
        update();
    }
}

/// A registered counter family.
pub(crate) fn int_counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let family = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("invalid metric definition {name}: {e}"));
    register_vec(family, name, labels)
}

/// A registered gauge family.
pub(crate) fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let family = GaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("invalid metric definition {name}: {e}"));
    register_vec(family, name, labels)
}

/// A registered histogram family with the given bucket bounds.
pub(crate) fn histogram_vec(
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let family = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|e| panic!("invalid metric definition {name}: {e}"));
    register_vec(family, name, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_counters_are_rendered() {
        let c = int_counter_vec("rsbal_test_total", "A test counter.", &["service"]);
        c.with_label_values(&["web"]).inc_by(3);
        let text = render();
        assert!(
            text.contains("# HELP rsbal_test_total A test counter."),
            "{text}"
        );
        assert!(text.contains("# TYPE rsbal_test_total counter"), "{text}");
        assert!(
            text.contains("rsbal_test_total{service=\"web\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn forget_removes_matching_series_only() {
        let g = gauge_vec(
            "rsbal_test_forget",
            "A test gauge.",
            &["service", "host", "url"],
        );
        g.with_label_values(&["web", "a", "u1"]).set(1.0);
        g.with_label_values(&["web", "a", "u2"]).set(2.0);
        g.with_label_values(&["web", "b", "u1"]).set(3.0);
        g.with_label_values(&["db", "a", "u1"]).set(4.0);
        forget(&[("service", "web"), ("host", "a")]);
        let text = render();
        assert!(!text.contains(r#"host="a",service="web""#), "{text}");
        assert!(
            text.contains(r#"rsbal_test_forget{host="b",service="web",url="u1"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"rsbal_test_forget{host="a",service="db",url="u1"} 4"#),
            "{text}"
        );
        forget(&[("service", "db")]);
        assert!(!render().contains(r#"service="db""#));
        // An update after the owner stopped is dropped.
        while_current(|| true, || g.with_label_values(&["db", "x", "u"]).set(1.0));
        assert!(!render().contains(r#"service="db""#));
        while_current(|| false, || g.with_label_values(&["db", "x", "u"]).set(1.0));
        assert!(render().contains(r#"service="db""#));
        // A family declared inside an update (first use) does not deadlock.
        while_current(
            || false,
            || {
                gauge_vec("rsbal_test_inner", "Declared late.", &["service"])
                    .with_label_values(&["x"])
                    .set(1.0)
            },
        );
    }
}
