//! Prometheus metrics: one process-wide registry and the text exposition.
//!
//! Each module that measures something declares its metric families here or
//! beside itself with [`int_counter_vec`] / [`gauge_vec`] / [`histogram_vec`]
//! (registered in [`registry`]) and updates them from its own thread; the
//! metric types are atomic, so no lock is shared with the HTTP server, which
//! only calls [`render`].

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};
use std::sync::LazyLock;

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

/// The registry every rsbal metric lives in.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

/// Content type of [`render`]'s output (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every registered metric in the Prometheus text exposition format.
pub fn render() -> String {
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&REGISTRY.gather(), &mut out) {
        log::error!(target: "metrics", "cannot encode metrics: {e}");
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn register(collector: Box<dyn prometheus::core::Collector>, name: &str) {
    if let Err(e) = REGISTRY.register(collector) {
        log::error!(target: "metrics", "cannot register metric {name}: {e}");
    }
}

/// A registered counter family.
pub fn int_counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let family = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("invalid metric definition {name}: {e}"));
    register(Box::new(family.clone()), name);
    family
}

/// A registered gauge family.
pub fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let family = GaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| panic!("invalid metric definition {name}: {e}"));
    register(Box::new(family.clone()), name);
    family
}

/// A registered histogram family with the given bucket bounds.
pub fn histogram_vec(name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
    let family = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|e| panic!("invalid metric definition {name}: {e}"));
    register(Box::new(family.clone()), name);
    family
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
}
