//! ProxyFetch: every `interval`, an HTTP(S) GET of a configured URL sent to
//! the real server's own address and the service port, with the URL's host in
//! the `Host` header (and in TLS SNI). Up when the status equals `http_status`;
//! redirects are never followed, so an expected 3xx is a plain match.
//!
//! Each server's ProxyFetch runs on its own thread with its own schedule, so a
//! server that accepts and never answers delays only its own next check.
//!
//! Every fetch sets `pybal_monitor_proxyfetch_request_duration_seconds`
//! {service, host, monitor, result, url}, a gauge of the last fetch's
//! duration as PyBal has it (`result` is `successful` or `failed`).

use super::{Monitor, MonitorContext, MonitorTarget, Waker};
use crate::config::ProxyFetchOptions;
use prometheus::GaugeVec;
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::{Duration, Instant};
use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};
use ureq::Agent;

static REQUEST_DURATION: LazyLock<GaugeVec> = LazyLock::new(|| {
    crate::status::metrics::gauge_vec(
        "pybal_monitor_proxyfetch_request_duration_seconds",
        "HTTP(S) request duration",
        &["service", "host", "monitor", "result", "url"],
    )
});

/// Sends every request to one fixed address, whatever host the URL names.
#[derive(Debug)]
struct FixedResolver(SocketAddr);

impl Resolver for FixedResolver {
    fn resolve(
        &self,
        _uri: &ureq::http::Uri,
        _config: &ureq::config::Config,
        _timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let mut addrs = self.empty();
        addrs.push(self.0);
        Ok(addrs)
    }
}

pub(crate) struct ProxyFetch {
    opts: ProxyFetchOptions,
    agent: Agent,
}

/// Result of one fetch.
struct Fetch {
    ok: bool,
    reason: String,
}

/// Sets the duration gauge of one fetch.
fn observe_fetch(ctx: &MonitorContext, url: &str, fetch: &Fetch, took: Duration) {
    let result = if fetch.ok { "successful" } else { "failed" };
    ctx.observe(|[service, host, monitor]| {
        REQUEST_DURATION
            .with_label_values(&[service, host, monitor, result, url])
            .set(took.as_secs_f64());
    });
}

impl Monitor for ProxyFetch {
    const NAME: &'static str = "ProxyFetch";
    type Options = ProxyFetchOptions;

    fn new(opts: &ProxyFetchOptions, target: &MonitorTarget) -> (Self, Option<Waker>) {
        let config = Agent::config_builder()
            .timeout_global(Some(opts.timeout))
            .max_redirects(0)
            .http_status_as_error(false)
            // Every check opens a fresh connection, as a client would.
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .tls_config(crate::net::tls::tls_config())
            .user_agent(concat!("rsbal/", env!("CARGO_PKG_VERSION"), " ProxyFetch"))
            .build();
        let agent = Agent::with_parts(
            config,
            DefaultConnector::new(),
            FixedResolver(target.addr()),
        );
        let opts = opts.clone();
        (ProxyFetch { opts, agent }, None)
    }

    /// The monitor thread's body: one check per `interval` on the shared
    /// fixed-rate schedule ([`MonitorContext::every`]).
    fn run(self, ctx: MonitorContext) {
        let log_target = ctx.log_target();
        ctx.every(self.opts.interval, || {
            let started = Instant::now();
            let (up, reason) = self.check(&ctx);
            let took = started.elapsed();
            log::debug!(target: &log_target, "{}: {} ({} ms)", ctx.target.host, reason, took.as_millis());
            ctx.report(up, reason, Some(took))
        });
    }
}

impl ProxyFetch {
    /// One check: one URL at random, or all of them with `check_all`.
    fn check(&self, ctx: &MonitorContext) -> (bool, String) {
        if self.opts.check_all {
            let results: Vec<Fetch> = self
                .opts
                .urls
                .iter()
                .map(|u| self.timed_fetch(ctx, u))
                .collect();
            let failures: Vec<&Fetch> = results.iter().filter(|f| !f.ok).collect();
            let up = failures.len() as u64 <= u64::from(self.opts.max_failures);
            let reason = if failures.is_empty() {
                format!("all {} URLs fetched", results.len())
            } else {
                let what: Vec<&str> = failures.iter().map(|f| f.reason.as_str()).collect();
                format!(
                    "{} of {} URLs failed (max_failures {}): {}",
                    failures.len(),
                    results.len(),
                    self.opts.max_failures,
                    what.join("; ")
                )
            };
            (up, reason)
        } else {
            let url = match self.opts.urls.len() {
                0 => return (false, "no URL configured".to_string()),
                n => &self.opts.urls[fastrand::usize(..n)],
            };
            let fetch = self.timed_fetch(ctx, url);
            (fetch.ok, fetch.reason)
        }
    }

    fn timed_fetch(&self, ctx: &MonitorContext, url: &str) -> Fetch {
        let started = Instant::now();
        let fetch = self.fetch(url);
        observe_fetch(ctx, url, &fetch, started.elapsed());
        fetch
    }

    fn fetch(&self, url: &str) -> Fetch {
        match self.agent.get(url).call() {
            Ok(response) => {
                let status = response.status().as_u16();
                if status == self.opts.http_status {
                    Fetch {
                        ok: true,
                        reason: format!("{url}: HTTP {status}"),
                    }
                } else {
                    Fetch {
                        ok: false,
                        reason: format!(
                            "{url}: HTTP status {status} (expected {})",
                            self.opts.http_status
                        ),
                    }
                }
            }
            Err(ureq::Error::Timeout(_)) => Fetch {
                ok: false,
                reason: format!("{url}: timeout after {}", fmt_secs(self.opts.timeout)),
            },
            Err(e) => Fetch {
                ok: false,
                reason: format!("{url}: {e}"),
            },
        }
    }
}

fn fmt_secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}
