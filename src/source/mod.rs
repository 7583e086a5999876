//! Server-list sources: one thread per service that watches where the list
//! lives, parses it, resolves new host names and hands complete lists to the
//! service thread.
//!
//! This module owns what every kind of source shares: starting and stopping
//! the thread ([`spawn`], [`SourceHandle`]), the last good list and the
//! failure state ([`ListKeeper`]) and the `rsbal_config_source_errors_total`
//! metric. Host names are resolved by the source's resolver thread
//! ([`resolve`]: in parallel, bounded in time, failures retried on their
//! own), which hands the resolved lists to the service thread. How a list is
//! fetched is each kind's job:
//! [`file`] (re-read every `config-poll-interval`), [`http`] (polled, with
//! conditional requests) and [`etcd`] (v2 keys API, read then long-poll
//! watched). Every failure is a [`SourceError`] (`error`).
//!
//! A source that fails (unreadable file, HTTP error, etcd down, a document
//! that does not parse, a list that parses to zero servers while the previous
//! one had some) never empties a pool: the last good list stays in force, each
//! failure is counted in the metric and logged once per change of state.

mod error;
mod etcd;
mod file;
mod http;
mod resolve;
pub(crate) mod serverlist;

/// The etcd answer decoding, for the fuzz targets (`crate::fuzzing`).
pub(crate) use etcd::decode_for_fuzzing as etcd_decode_for_fuzzing;
pub(crate) use file::read_for_check;

use crate::config::{SourceOptions, SourceUrl};
use crate::status::metrics;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use error::SourceError;
use prometheus::IntCounterVec;
use serverlist::ServerEntry;
use std::net::IpAddr;
use std::sync::LazyLock;
use std::thread;
use std::time::{Duration, Instant};

/// A server as the server list (after name resolution) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerUpdate {
    pub(crate) host: String,
    /// Resolved address; `None` = could not be resolved (not ready).
    pub(crate) ip: Option<IpAddr>,
    /// Why `ip` is `None`: the lookup's error, or "no answer yet".
    pub(crate) unresolved: Option<String>,
    pub(crate) weight: u32,
    pub(crate) enabled: bool,
}

/// Failed fetches and unusable documents, per service.
static SOURCE_ERRORS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::int_counter_vec(
        "rsbal_config_source_errors_total",
        "Server list fetches or parses that failed (the last good list stayed in force).",
        &["service"],
    )
});

/// User-Agent of HTTP and etcd sources.
const USER_AGENT: &str = concat!("rsbal/", env!("CARGO_PKG_VERSION"), " server-list");

/// Owner's end of a source thread; dropping it stops the thread (an HTTP
/// request in flight, such as an etcd long-poll, is cut at once).
pub(crate) struct SourceHandle {
    stop: Option<Sender<()>>,
    agent: Option<ureq::Agent>,
}

impl Drop for SourceHandle {
    fn drop(&mut self) {
        // Disconnect first, so the thread sees the cut request as a stop.
        self.stop.take();
        if let Some(agent) = self.agent.take() {
            agent.shutdown();
        }
    }
}

/// A complete, resolved server list.
pub(crate) type ServerList = Vec<ServerUpdate>;

/// Starts watching `url` for service `service` whose VIP is `vip` (the
/// address family hosts are resolved in). `inherited` says the service
/// already has servers (from the source this one replaces): then a first
/// list without servers is a failure, and the service keeps them.
pub(crate) fn spawn(
    service: &str,
    url: &SourceUrl,
    options: SourceOptions,
    vip: IpAddr,
    inherited: bool,
    lists: Sender<ServerList>,
) -> std::io::Result<SourceHandle> {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let entries = resolve::spawn(service, vip.is_ipv6(), lists, stop_rx.clone())?;
    let mut keeper = ListKeeper::new(service, url.to_string(), entries, stop_rx);
    keeper.inherited = inherited;
    let json = url.is_json();
    let name = format!("source:{service}");
    let builder = thread::Builder::new().name(name);
    let agent = match url.clone() {
        SourceUrl::File(path) => {
            builder.spawn(move || file::watch(keeper, &path, json, options.poll_interval))?;
            None
        }
        SourceUrl::Http(url) => {
            let agent = http::agent(options.timeout);
            let client = agent.clone();
            builder
                .spawn(move || http::watch(keeper, &client, &url, json, options.poll_interval))?;
            Some(agent)
        }
        SourceUrl::Etcd {
            host,
            port,
            key,
            tls,
        } => {
            let agent = etcd::agent(options.timeout);
            let client = agent.clone();
            let server = etcd::Server::new(&host, port, &key, tls);
            builder.spawn(move || server.watch(keeper, &client))?;
            Some(agent)
        }
    };
    Ok(SourceHandle {
        stop: Some(stop_tx),
        agent,
    })
}

/// The shared half of every source thread: the last good list, the failure
/// state and the way to the resolver thread.
struct ListKeeper {
    service: String,
    /// The source as configured, for log lines.
    source: String,
    /// To the resolver thread, which sends resolved lists to the service.
    entries: Sender<Vec<ServerEntry>>,
    stop: Receiver<()>,
    failures: Failures,
    /// Entries of the last list that was handed over.
    last_good: Option<Vec<ServerEntry>>,
    /// The service has servers from a source this one replaced: until a
    /// list is handed over, one without servers is refused like
    /// [`SourceError::Empty`].
    inherited: bool,
    /// The last document seen (file or HTTP body) and, when it could not be
    /// used, why: an unchanged document is not parsed again.
    last_document: Option<(Vec<u8>, Option<SourceError>)>,
}

/// The failure state of one source: counted in the metric, logged once per
/// change of state.
struct Failures {
    errors: prometheus::IntCounter,
    /// The failure currently in force (as logged), so it is logged once,
    /// not every poll.
    failing: Option<String>,
}

impl Failures {
    /// One failed fetch or unusable document of `source`.
    fn fail(&mut self, service: &str, source: &str, e: &SourceError) {
        self.errors.inc();
        let what = match e {
            // A file that cannot be read says so alone, as it always did;
            // an empty first list says what is kept.
            SourceError::Read { .. } | SourceError::FirstListEmpty => e.to_string(),
            _ => format!("{e}; keeping the last good list"),
        };
        if self.failing.as_ref() != Some(&what) {
            log::error!(target: service, "server list source {source} failing: {what}");
            self.failing = Some(what);
        }
    }

    fn recovered(&mut self, service: &str, source: &str) {
        if self.failing.take().is_some() {
            log::info!(target: service, "server list source {source} is good again");
        }
    }
}

impl ListKeeper {
    fn new(
        service: &str,
        source: String,
        entries: Sender<Vec<ServerEntry>>,
        stop: Receiver<()>,
    ) -> Self {
        ListKeeper {
            service: service.to_string(),
            source,
            entries,
            stop,
            failures: Failures {
                errors: SOURCE_ERRORS.with_label_values(&[service]),
                failing: None,
            },
            last_good: None,
            inherited: false,
            last_document: None,
        }
    }

    /// Waits `how_long`; false when the source was stopped meanwhile.
    fn sleep(&self, how_long: Duration) -> bool {
        matches!(
            self.stop.recv_timeout(how_long),
            Err(RecvTimeoutError::Timeout)
        )
    }

    /// Waits until `when`; false when the source was stopped meanwhile.
    fn sleep_until(&self, when: Instant) -> bool {
        self.sleep(when.saturating_duration_since(Instant::now()))
    }

    /// True once the owner dropped its handle.
    fn stopped(&self) -> bool {
        matches!(self.stop.try_recv(), Err(TryRecvError::Disconnected))
    }

    /// A whole document in a list format (`json` or legacy): parsed and
    /// applied when it differs from the last one; an unchanged unusable one
    /// counts as a failure again (each poll of a failing source is counted).
    /// False when the service is gone.
    fn apply_document(&mut self, document: Vec<u8>, json: bool) -> bool {
        if let Some((last, problem)) = &self.last_document {
            if *last == document {
                match problem {
                    Some(problem) => self.failures.fail(&self.service, &self.source, problem),
                    None => self.failures.recovered(&self.service, &self.source),
                }
                return true;
            }
        }
        let text = String::from_utf8_lossy(&document).into_owned();
        let (alive, problem) = match serverlist::parse(&text, json) {
            Ok(parsed) => {
                for err in &parsed.errors {
                    log::error!(target: &self.service, "{}:{}: skipping bad server line: {}", self.source, err.line, err.reason);
                }
                self.apply_entries(parsed.servers)
            }
            Err(e) => {
                let problem = SourceError::BadDocument(e);
                self.fail(&problem);
                (true, Some(problem))
            }
        };
        self.last_document = Some((document, problem));
        alive
    }

    /// The source confirmed its last document is still current (HTTP 304).
    fn unchanged(&mut self) {
        match &self.last_document {
            Some((_, Some(problem))) => self.failures.fail(&self.service, &self.source, problem),
            _ => self.recovered(),
        }
    }

    /// A complete list of entries: handed over (to be resolved) when usable
    /// and different from the last one. Returns (service still there, why
    /// it was not used).
    fn apply_entries(&mut self, servers: Vec<ServerEntry>) -> (bool, Option<SourceError>) {
        if servers.is_empty() {
            let problem = match &self.last_good {
                Some(last) if !last.is_empty() => Some(SourceError::Empty),
                None if self.inherited => Some(SourceError::FirstListEmpty),
                _ => None,
            };
            if let Some(problem) = problem {
                self.fail(&problem);
                return (true, Some(problem));
            }
        }
        self.recovered();
        if self.last_good.as_ref() == Some(&servers) {
            return (true, None);
        }
        self.last_good = Some(servers.clone());
        (self.entries.send(servers).is_ok(), None)
    }

    /// One failed fetch or unusable document: counted, logged when it is a
    /// new state.
    fn fail(&mut self, e: &SourceError) {
        self.failures.fail(&self.service, &self.source, e);
    }

    fn recovered(&mut self) {
        self.failures.recovered(&self.service, &self.source);
    }
}

/// Doubling delays between `min` and `max` for retrying a source that is down.
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The delay to wait now; the following one is twice as long (capped).
    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<u64> = (0..5).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }
}
