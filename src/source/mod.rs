//! Server-list sources: one thread per service that watches where the list
//! lives, parses it, resolves new host names and hands complete lists to the
//! service thread.
//!
//! This module owns what every kind of source shares: starting and stopping
//! the thread ([`spawn`], [`SourceHandle`]), the last good list and the
//! failure state ([`ListKeeper`]), the `rsbal_config_source_errors_total`
//! metric and host-name resolution. How a list is fetched is each kind's job:
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
pub(crate) mod serverlist;

/// The etcd answer decoding, for the fuzz targets (`crate::fuzzing`).
pub(crate) use etcd::decode_for_fuzzing as etcd_decode_for_fuzzing;

use crate::config::{SourceOptions, SourceUrl};
use crate::status::metrics;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use error::SourceError;
use prometheus::IntCounterVec;
use serverlist::ServerEntry;
use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::LazyLock;
use std::thread;
use std::time::{Duration, Instant};

/// A server as the server list (after name resolution) describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerUpdate {
    pub(crate) host: String,
    /// Resolved address; `None` = could not be resolved (not ready).
    pub(crate) ip: Option<IpAddr>,
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
/// address family hosts are resolved in).
pub(crate) fn spawn(
    service: &str,
    url: &SourceUrl,
    options: SourceOptions,
    vip: IpAddr,
    lists: Sender<ServerList>,
) -> std::io::Result<SourceHandle> {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let keeper = ListKeeper::new(service, url.to_string(), vip.is_ipv6(), lists, stop_rx);
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
/// state, the resolver and the way to the service thread.
struct ListKeeper {
    service: String,
    /// The source as configured, for log lines.
    source: String,
    resolver: Resolver,
    lists: Sender<ServerList>,
    stop: Receiver<()>,
    failures: Failures,
    /// Entries of the last list that was handed over.
    last_good: Option<Vec<ServerEntry>>,
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
            // A file that cannot be read says so alone, as it always did.
            SourceError::Read { .. } => e.to_string(),
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
        ipv6: bool,
        lists: Sender<ServerList>,
        stop: Receiver<()>,
    ) -> Self {
        ListKeeper {
            service: service.to_string(),
            source,
            resolver: Resolver::new(ipv6),
            lists,
            stop,
            failures: Failures {
                errors: SOURCE_ERRORS.with_label_values(&[service]),
                failing: None,
            },
            last_good: None,
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

    /// A complete list of entries: handed over when usable and different
    /// from the last one. Returns (service still there, why it was not used).
    fn apply_entries(&mut self, servers: Vec<ServerEntry>) -> (bool, Option<SourceError>) {
        let had_servers = self.last_good.as_ref().is_some_and(|l| !l.is_empty());
        if servers.is_empty() && had_servers {
            self.fail(&SourceError::Empty);
            return (true, Some(SourceError::Empty));
        }
        self.recovered();
        if self.last_good.as_ref() == Some(&servers) {
            return (true, None);
        }
        let list = self.resolver.resolve_all(&self.service, &servers);
        self.last_good = Some(servers);
        (self.lists.send(list).is_ok(), None)
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

/// Resolves host names once (PyBal resolves at server creation) and keeps
/// the answer; IP literals need no lookup. Unresolved names are tried again
/// when a new list arrives.
struct Resolver {
    ipv6: bool,
    cache: HashMap<String, IpAddr>,
}

impl Resolver {
    fn new(ipv6: bool) -> Self {
        Resolver {
            ipv6,
            cache: HashMap::new(),
        }
    }

    fn resolve_all(&mut self, service: &str, entries: &[ServerEntry]) -> ServerList {
        self.cache
            .retain(|host, _| entries.iter().any(|e| &e.host == host));
        entries
            .iter()
            .map(|e| ServerUpdate {
                host: e.host.clone(),
                ip: self.resolve(service, &e.host),
                weight: e.weight,
                enabled: e.enabled,
            })
            .collect()
    }

    fn resolve(&mut self, service: &str, host: &str) -> Option<IpAddr> {
        if let Some(ip) = self.cache.get(host) {
            return Some(*ip);
        }
        let found = match host.parse::<IpAddr>() {
            Ok(ip) => Some(ip).filter(|ip| ip.is_ipv6() == self.ipv6),
            Err(_) => match (host, 0u16).to_socket_addrs() {
                Ok(addrs) => addrs.map(|a| a.ip()).find(|ip| ip.is_ipv6() == self.ipv6),
                Err(e) => {
                    log::error!(target: service, "could not resolve {host}: {e}");
                    return None;
                }
            },
        };
        match found {
            Some(ip) => {
                log::debug!(target: service, "resolved {host} to {ip}");
                self.cache.insert(host.to_string(), ip);
            }
            None => {
                let family = if self.ipv6 { "IPv6" } else { "IPv4" };
                log::error!(target: service, "could not resolve {host} to an {family} address");
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literals_resolve_in_their_family_only() {
        let mut r = Resolver::new(false);
        assert_eq!(r.resolve("s", "127.0.0.2"), "127.0.0.2".parse().ok());
        assert_eq!(r.resolve("s", "::1"), None);
        let mut r6 = Resolver::new(true);
        assert_eq!(r6.resolve("s", "::1"), "::1".parse().ok());
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(5));
        let delays: Vec<u64> = (0..5).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 5, 5]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn localhost_name_resolves() {
        let mut r = Resolver::new(false);
        assert_eq!(r.resolve("s", "localhost"), "127.0.0.1".parse().ok());
    }
}
