//! Server-list sources: one thread per service that watches where the list
//! lives, parses it, resolves new host names and hands complete lists to the
//! service thread.
//!
//! The source owns the last good list. A source that fails (unreadable file, a
//! document that does not parse, a list that parses to zero servers while the
//! previous one had some) never empties a pool: the last good list stays in
//! force and the failure is logged once per change of state.

use crate::config::SourceUrl;
use crate::coordinator::ServerUpdate;
use crate::serverlist::{self, ServerEntry};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

/// How often a file source is re-read (PyBal: every second).
pub const FILE_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Owner's end of a source thread; dropping it stops the thread.
pub struct SourceHandle {
    _stop: Sender<()>,
}

/// A complete, resolved server list.
pub type ServerList = Vec<ServerUpdate>;

/// Starts watching `url` for service `service` whose VIP is `vip` (the
/// address family hosts are resolved in).
pub fn spawn(
    service: &str,
    url: &SourceUrl,
    vip: IpAddr,
    lists: Sender<ServerList>,
) -> std::io::Result<SourceHandle> {
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let mut watcher = Watcher {
        service: service.to_string(),
        resolver: Resolver::new(vip.is_ipv6()),
        lists,
        stop: stop_rx,
        failing: None,
        last_good: None,
    };
    let name = format!("source:{service}");
    match url.clone() {
        SourceUrl::File(path) => {
            let json = url.is_json();
            thread::Builder::new()
                .name(name)
                .spawn(move || watcher.watch_file(path, json))?;
        }
        other => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                format!("server list source {other} is not supported by this version"),
            ))
        }
    }
    Ok(SourceHandle { _stop: stop_tx })
}

struct Watcher {
    service: String,
    resolver: Resolver,
    lists: Sender<ServerList>,
    stop: Receiver<()>,
    /// The failure currently in force, so it is logged once, not every poll.
    failing: Option<String>,
    /// Entries of the last list that was handed over.
    last_good: Option<Vec<ServerEntry>>,
}

impl Watcher {
    fn watch_file(&mut self, path: PathBuf, json: bool) {
        let mut last_content: Option<Vec<u8>> = None;
        loop {
            match std::fs::read(&path) {
                Ok(content) => {
                    if last_content.as_ref() != Some(&content) {
                        let text = String::from_utf8_lossy(&content);
                        let shown = format!("file://{}", path.display());
                        if !self.apply_text(&shown, &text, json) {
                            return;
                        }
                        last_content = Some(content);
                    }
                }
                Err(e) => self.fail(format!("cannot read {}: {e}", path.display())),
            }
            match self.stop.recv_timeout(FILE_POLL_INTERVAL) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        }
    }

    /// Parses and, if usable, hands over a list. False when the service is gone.
    fn apply_text(&mut self, source: &str, text: &str, json: bool) -> bool {
        let parsed = match serverlist::parse(text, json) {
            Ok(parsed) => parsed,
            Err(e) => {
                self.fail(format!("{source}: {e}; keeping the last good list"));
                return true;
            }
        };
        for err in &parsed.errors {
            log::error!(target: &self.service, "{source}:{}: skipping bad server line: {}", err.line, err.reason);
        }
        let had_servers = self.last_good.as_ref().is_some_and(|l| !l.is_empty());
        if parsed.servers.is_empty() && had_servers {
            self.fail(format!(
                "{source}: list has no servers while the previous one had some; keeping the last good list"
            ));
            return true;
        }
        self.recovered(source);
        if self.last_good.as_ref() == Some(&parsed.servers) {
            return true;
        }
        let list = self.resolver.resolve_all(&self.service, &parsed.servers);
        self.last_good = Some(parsed.servers);
        self.lists.send(list).is_ok()
    }

    fn fail(&mut self, what: String) {
        if self.failing.as_ref() != Some(&what) {
            log::error!(target: &self.service, "server list source failing: {what}");
            self.failing = Some(what);
        }
    }

    fn recovered(&mut self, source: &str) {
        if self.failing.take().is_some() {
            log::info!(target: &self.service, "server list source {source} is good again");
        }
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
    fn localhost_name_resolves() {
        let mut r = Resolver::new(false);
        assert_eq!(r.resolve("s", "localhost"), "127.0.0.1".parse().ok());
    }
}
