//! ProxyFetch: every `interval`, an HTTP(S) GET of a configured URL sent to
//! the real server's own address and the service port, with the URL's host in
//! the `Host` header (and in TLS SNI). Up when the status equals `http_status`;
//! redirects are never followed, so an expected 3xx is a plain match.
//!
//! Over `https://` the server's certificate is not verified, as PyBal's
//! ProxyFetch (Twisted's `ClientContextFactory`) did not: a check of
//! `https://localhost/…` sent to a server's IP must not fail on a name. With
//! `proxyfetch.verify-tls = yes` it is verified against the URL's host and
//! the CAs of [`crate::net::tls::tls_config`].
//!
//! Each check is one call of [`Check::check`], run by the service's check
//! scheduler on its worker pool, so a server that accepts and never answers
//! holds one worker and delays only its own next check. Every check opens a
//! fresh connection, as a client would. `http://` URLs are fetched by
//! [`http_get`] (the request built once per monitor, a blocking connect,
//! one write, reads until the response head); `https://` URLs by one
//! `ureq::Agent` per server's monitor. The monitor keeps its gauges'
//! handles.
//!
//! Every fetch sets `pybal_monitor_proxyfetch_request_duration_seconds`
//! {service, host, monitor, result, url}, a gauge of the last fetch's
//! duration as PyBal has it (`result` is `successful` or `failed`).

use super::{
    http_get::{self, GetError},
    Body, Check, CheckError, CheckOutcome, Checked, Monitor, MonitorContext, MonitorTarget, Step,
    Waker,
};
use crate::config::ProxyFetchOptions;
use prometheus::{Gauge, GaugeVec};
use std::net::SocketAddr;
use std::sync::{LazyLock, OnceLock};
use std::time::Instant;
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

/// Input buffer of one check's connection, and the largest response head
/// accepted (its output buffer is a quarter of it).
const CHECK_BUFFER: usize = 32 * 1024;

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
    /// The server's address and the service port, where every request goes.
    addr: SocketAddr,
    /// Each URL's plain-HTTP request (`None`: not `http://`, ureq fetches it).
    plain: Vec<Option<http_get::Request>>,
    /// For the other URLs (`https://`), built on first use.
    agent: OnceLock<Agent>,
    /// The duration gauge of each (URL, result): looked up once (inside
    /// [`MonitorContext::observe`]), then set directly.
    gauges: Vec<[Option<Gauge>; 2]>,
}

/// Result of one fetch: a note, or why it failed.
type Fetch = Result<String, CheckError>;

/// The `result` label of a fetch, and its index in `ProxyFetch::gauges`.
const RESULTS: [&str; 2] = ["successful", "failed"];

impl Monitor for ProxyFetch {
    const NAME: &'static str = "ProxyFetch";
    type Options = ProxyFetchOptions;

    fn new(opts: &ProxyFetchOptions, target: &MonitorTarget) -> (Self, Option<Waker>) {
        let plain: Vec<_> = opts
            .urls
            .iter()
            .map(|url| http_get::Request::new(url, USER_AGENT))
            .collect();
        let opts = opts.clone();
        let gauges = vec![[None, None]; opts.urls.len()];
        let monitor = ProxyFetch {
            opts,
            addr: target.addr(),
            plain,
            agent: OnceLock::new(),
            gauges,
        };
        (monitor, None)
    }

    /// Scheduled: one check per `interval`.
    fn body(self) -> Body {
        Body::Scheduled {
            interval: self.opts.interval,
            check: Box::new(self),
        }
    }
}

/// What ProxyFetch says it is.
const USER_AGENT: &str = concat!("rsbal/", env!("CARGO_PKG_VERSION"), " ProxyFetch");

/// The ureq agent of a server's non-plain (`https://`) URLs, sending every
/// request to `addr`.
fn agent(opts: &ProxyFetchOptions, addr: SocketAddr) -> Agent {
    let config = Agent::config_builder()
        .timeout_global(Some(opts.timeout))
        .max_redirects(0)
        .http_status_as_error(false)
        // Every check opens a fresh connection, as a client would.
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        // ureq's default buffers are 128 KiB each, allocated (mmap'd by
        // glibc at that size) and zeroed for every connection: most of a
        // check's cost. A health check's request and response head fit
        // in far less.
        .input_buffer_size(CHECK_BUFFER)
        .output_buffer_size(CHECK_BUFFER / 4)
        .max_response_header_size(CHECK_BUFFER)
        .tls_config(if opts.verify_tls {
            crate::net::tls::tls_config()
        } else {
            crate::net::tls::unverified_tls_config()
        })
        .user_agent(USER_AGENT)
        .build();
    Agent::with_parts(config, DefaultConnector::new(), FixedResolver(addr))
}

impl Check for ProxyFetch {
    fn check(&mut self, ctx: &MonitorContext) -> Option<Checked> {
        let started = Instant::now();
        let outcome = self.check_urls(ctx);
        let took = started.elapsed();
        if log::max_level() >= log::LevelFilter::Debug {
            log::debug!(target: &ctx.log_target(), "{}: {} ({} ms)", ctx.target.host, outcome.reason(), took.as_millis());
        }
        Some(Checked {
            outcome,
            duration: Some(took),
        })
    }
}

impl ProxyFetch {
    /// One check: one URL at random, or all of them with `check_all`.
    fn check_urls(&mut self, ctx: &MonitorContext) -> CheckOutcome {
        if self.opts.check_all {
            let results: Vec<Fetch> = (0..self.opts.urls.len())
                .map(|u| self.timed_fetch(ctx, u))
                .collect();
            all_urls(&results, self.opts.max_failures)
        } else {
            let url = match self.opts.urls.len() {
                // Validation requires a URL; down, as it always was.
                0 => return CheckOutcome::down("no URL configured".to_string()),
                n => fastrand::usize(..n),
            };
            match self.timed_fetch(ctx, url) {
                Ok(note) => CheckOutcome::Up(note),
                Err(error) => CheckOutcome::Down(error),
            }
        }
    }

    /// Fetches URL number `index` and sets its duration gauge.
    fn timed_fetch(&mut self, ctx: &MonitorContext, index: usize) -> Fetch {
        let started = Instant::now();
        let fetch = self.fetch(index);
        let took = started.elapsed().as_secs_f64();
        let result = usize::from(fetch.is_err());
        match &self.gauges[index][result] {
            Some(gauge) => gauge.set(took),
            None => {
                let url = &self.opts.urls[index];
                let mut looked_up = None;
                ctx.observe(|[service, host, monitor]| {
                    let gauge = REQUEST_DURATION.with_label_values(&[
                        service,
                        host,
                        monitor,
                        RESULTS[result],
                        url,
                    ]);
                    gauge.set(took);
                    looked_up = Some(gauge);
                });
                self.gauges[index][result] = looked_up;
            }
        }
        fetch
    }

    fn fetch(&self, index: usize) -> Fetch {
        let url = &self.opts.urls[index];
        let status = match &self.plain[index] {
            Some(request) => request
                .get(self.addr, self.opts.timeout)
                .map_err(|e| self.plain_error(url, e))?,
            None => self.fetch_with_ureq(url)?,
        };
        if status == self.opts.http_status {
            Ok(format!("{url}: HTTP {status}"))
        } else {
            Err(CheckError::Remote(format!(
                "{url}: HTTP status {status} (expected {})",
                self.opts.http_status
            )))
        }
    }

    /// The check's error for a failed plain-HTTP GET of `url`.
    fn plain_error(&self, url: &str, error: GetError) -> CheckError {
        match error {
            GetError::Timeout => self.timed_out(url),
            GetError::Io(step, e) => CheckError::io(step, &e, format!("{url}: {e}")),
            GetError::BadResponse(why) => CheckError::Remote(format!("{url}: {why}")),
        }
    }

    /// `url` got no answer within the check's timeout.
    fn timed_out(&self, url: &str) -> CheckError {
        CheckError::Remote(format!(
            "{url}: timeout after {}s",
            self.opts.timeout.as_secs_f64()
        ))
    }

    /// The status of `url` fetched with ureq.
    fn fetch_with_ureq(&self, url: &str) -> Result<u16, CheckError> {
        let agent = self.agent.get_or_init(|| agent(&self.opts, self.addr));
        match agent.get(url).call() {
            Ok(response) => Ok(response.status().as_u16()),
            Err(ureq::Error::Timeout(_)) => Err(self.timed_out(url)),
            // The connection's socket or an exchange on it.
            Err(ureq::Error::Io(e)) => Err(CheckError::io(Step::Use, &e, format!("{url}: {e}"))),
            Err(e) => Err(CheckError::Remote(format!("{url}: {e}"))),
        }
    }
}

/// The outcome of a `check_all` check: up while at most `max_failures` URLs
/// failed. Down is local when the local failures tipped it (the remote ones
/// alone were within `max_failures`), remote otherwise.
fn all_urls(results: &[Fetch], max_failures: u32) -> CheckOutcome {
    let failures: Vec<&CheckError> = results.iter().filter_map(|f| f.as_ref().err()).collect();
    if failures.is_empty() {
        return CheckOutcome::Up(format!("all {} URLs fetched", results.len()));
    }
    let what: Vec<&str> = failures.iter().map(|e| e.reason()).collect();
    let reason = format!(
        "{} of {} URLs failed (max_failures {max_failures}): {}",
        failures.len(),
        results.len(),
        what.join("; ")
    );
    let tolerated = |n: usize| n as u64 <= u64::from(max_failures);
    if tolerated(failures.len()) {
        CheckOutcome::Up(reason)
    } else if tolerated(failures.iter().filter(|e| !e.is_local()).count()) {
        CheckOutcome::Down(CheckError::Local(reason))
    } else {
        CheckOutcome::down(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_all_is_down_locally_only_when_local_failures_tip_it() {
        let ok = || Ok("u: HTTP 200".to_string());
        let remote = || {
            Err(CheckError::Remote(
                "u: HTTP status 503 (expected 200)".into(),
            ))
        };
        let local = || Err(CheckError::Local("u: Too many open files".into()));
        assert_eq!(
            all_urls(&[ok(), ok()], 0),
            CheckOutcome::Up("all 2 URLs fetched".into())
        );
        let tolerated = all_urls(&[ok(), remote()], 1);
        assert!(tolerated.is_up());
        assert_eq!(
            tolerated.reason(),
            "1 of 2 URLs failed (max_failures 1): u: HTTP status 503 (expected 200)"
        );
        assert!(matches!(
            all_urls(&[remote(), local()], 1),
            CheckOutcome::Down(CheckError::Local(_))
        ));
        assert!(matches!(
            all_urls(&[remote(), remote(), local()], 1),
            CheckOutcome::Down(CheckError::Remote(_))
        ));
        assert!(matches!(
            all_urls(&[ok(), remote()], 0),
            CheckOutcome::Down(CheckError::Remote(_))
        ));
    }
}
