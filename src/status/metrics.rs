//! Prometheus metrics: one process-wide registry and the text exposition.
//!
//! Each module that measures something declares its metric families here or
//! beside itself with [`int_counter_vec`] / [`gauge_vec`] (registered in
//! [`registry`]) and updates them from its own thread; the metric types are
//! atomic, so no lock is shared with the HTTP server, which only calls
//! [`render`].
//!
//! [`render`] writes the classic text format as PyBal's Python client
//! (`prometheus_client`) did, because its consumers compare the text: every
//! value is a Python float (`1.0`, `0.0`, `0.5`, `1e-05`; from 1e6 up, Go's
//! exponent form `1.79612793605646e+09`), labels sorted by name.
//!
//! No stale series: every family declared with a `service` label is
//! remembered, and [`forget`] removes from all of them the series whose labels
//! match (e.g. `service` and `host` of a server that was removed). Threads
//! that update such series on their own (monitor threads) do it inside
//! [`while_current`], so an update can never re-create a series that was
//! just forgotten.

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::proto::{MetricFamily, MetricType};
use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};
use std::collections::HashMap;
use std::fmt::Write;
use std::sync::{LazyLock, Mutex, RwLock};

static REGISTRY: LazyLock<Registry> = LazyLock::new(Registry::new);

/// Content type of [`render`]'s output (Prometheus text format 0.0.4).
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every registered metric in the Prometheus text exposition format.
pub(crate) fn render() -> String {
    encode(&REGISTRY.gather())
}

/// The text format of `families`, sample values as [`go_float`] prints them.
fn encode(families: &[MetricFamily]) -> String {
    let mut out = String::new();
    for family in families {
        let name = family.name();
        let kind = match family.get_field_type() {
            MetricType::COUNTER => "counter",
            MetricType::GAUGE => "gauge",
            // rsbal declares counters and gauges only (see the constructors).
            other => {
                log::error!(target: "metrics", "cannot encode {name}: {other:?}");
                continue;
            }
        };
        let help = family.help().replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for metric in family.get_metric() {
            let value = match kind {
                "counter" => metric.get_counter().get_value(),
                _ => metric.get_gauge().get_value(),
            };
            out.push_str(name);
            let labels: Vec<String> = metric
                .get_label()
                .iter()
                .map(|l| format!("{}=\"{}\"", l.name(), escape_label(l.value())))
                .collect();
            if !labels.is_empty() {
                let _ = write!(out, "{{{}}}", labels.join(","));
            }
            let _ = writeln!(out, " {}", go_float(value));
        }
    }
    out
}

/// A label value escaped for the text format: `\`, `"` and newline.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `x` as Python's `repr(float)` writes it: the shortest digits that read
/// back as `x`, in fixed notation with at least one decimal (`1.0`, `0.0001`)
/// unless the decimal exponent is below -4 or 16 and up (`1e-05`, `1e+16`).
fn py_repr(x: f64) -> String {
    if x.is_nan() {
        return "nan".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    // `{:e}` gives the shortest round-trip digits: "-1.2345e-7", "0e0".
    let sci = format!("{x:e}");
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if !(-4..16).contains(&exponent) {
        let (first, rest) = digits.split_at(1);
        let rest = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let esign = if exponent < 0 { '-' } else { '+' };
        return format!("{sign}{first}{rest}e{esign}{:02}", exponent.abs());
    }
    // Digits before the decimal point.
    let point = exponent + 1;
    let body = if point <= 0 {
        format!("0.{}{digits}", "0".repeat(point.unsigned_abs() as usize))
    } else if point as usize >= digits.len() {
        format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
    } else {
        let (int, frac) = digits.split_at(point as usize);
        format!("{int}.{frac}")
    };
    format!("{sign}{body}")
}

/// `x` as prometheus_client's `floatToGoString` writes a sample value:
/// `+Inf`, `-Inf`, `NaN`, else Python's `repr`, except that a positive value
/// with more than six digits before the decimal point takes Go's exponent
/// form (`1234567.0` → `1.234567e+06`; the exponent is `e+0` and its digits,
/// so 1e10 prints as `1e+010`, as the Python client did).
pub(crate) fn go_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    let s = py_repr(x);
    match s.find('.') {
        Some(dot) if x > 0.0 && dot > 6 => {
            let mantissa = format!("{}.{}{}", &s[..1], &s[1..dot], &s[dot + 1..]);
            let mantissa = mantissa.trim_end_matches(['0', '.']);
            format!("{mantissa}e+0{}", dot - 1)
        }
        _ => s,
    }
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
            text.contains("rsbal_test_total{service=\"web\"} 3.0\n"),
            "{text}"
        );
    }

    #[test]
    fn values_are_printed_as_the_python_client_printed_them() {
        // Expected texts: prometheus_client 0.6.0 (Python 2) and 0.16 (Python 3)
        // on the same values (floatToGoString).
        for (x, want) in [
            (1.0, "1.0"),
            (0.0, "0.0"),
            (3.0, "3.0"),
            (0.5, "0.5"),
            (1e-05, "1e-05"),
            (0.0001, "0.0001"),
            (0.0123456789, "0.0123456789"),
            (123456.0, "123456.0"),
            (1234567.0, "1.234567e+06"),
            (1e6, "1e+06"),
            (1796127936.05646, "1.79612793605646e+09"),
            (1.7961279405650618e9, "1.7961279405650618e+09"),
            (1e10, "1e+010"),
            (1e16, "1e+16"),
            (1.5e-7, "1.5e-07"),
            (-2.0, "-2.0"),
            (-1234567.0, "-1234567.0"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (f64::NAN, "NaN"),
        ] {
            assert_eq!(go_float(x), want, "{x}");
        }
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        let g = gauge_vec("rsbal_test_escape", "Back\\slash\nnewline", &["url"]);
        g.with_label_values(&["https://localhost/x?a=\"b\"\\\n"])
            .set(1e-5);
        let text = render();
        assert!(
            text.contains("# HELP rsbal_test_escape Back\\\\slash\\nnewline\n"),
            "{text}"
        );
        assert!(
            text.contains(r#"rsbal_test_escape{url="https://localhost/x?a=\"b\"\\\n"} 1e-05"#),
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
            text.contains(r#"rsbal_test_forget{host="b",service="web",url="u1"} 3.0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"rsbal_test_forget{host="a",service="db",url="u1"} 4.0"#),
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
