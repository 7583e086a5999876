//! Host-name resolution of one source's server list: parallel, bounded in
//! time, retried on its own.
//!
//! The source thread hands every new list of entries to its resolver thread
//! ([`spawn`]), which alone sends complete, resolved lists to the service
//! thread. Each name is looked up by a short-lived lookup thread
//! (`getaddrinfo`), at most [`MAX_ACTIVE`] at a time per source. A list
//! waits at most [`LIST_WAIT`] for the first answer of its new names, then
//! goes out with the names that did not answer marked unresolved ("no answer
//! yet"), so dead names never hold up an edit of the list. A lookup that has
//! not answered within [`LOOKUP_TIMEOUT`] frees its slot; its thread ends on
//! its own when `getaddrinfo` gives up (at most [`MAX_THREADS`] threads per
//! source, counting those). Names of the newest list are looked up first.
//!
//! A name that does not resolve is tried again on its own after 1 s, 2 s,
//! 4 s … up to [`RETRY_MAX`]; when it resolves, the list is sent again. A
//! name that resolved keeps its address while it stays in the list (PyBal
//! resolves once). IP literals need no lookup.
//!
//! [`Lookups`] is the pure state (every decision, no I/O, time passed in);
//! the thread is a thin shell around it.

use super::serverlist::ServerEntry;
use super::{Backoff, ServerList, ServerUpdate};
use crossbeam_channel::{select, Receiver, Sender};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, ToSocketAddrs};
use std::thread;
use std::time::{Duration, Instant};

/// Longest wait of a list for the first answer of its new names.
pub(super) const LIST_WAIT: Duration = Duration::from_secs(2);
/// A lookup without an answer by then no longer holds a slot.
pub(super) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Lookups that hold a slot, per source.
pub(super) const MAX_ACTIVE: usize = 16;
/// Lookup threads alive per source, timed-out ones included.
pub(super) const MAX_THREADS: usize = 64;
/// First delay before a failed name is looked up again.
pub(super) const RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest delay between two lookups of a failing name.
pub(super) const RETRY_MAX: Duration = Duration::from_secs(30);

/// Why a name has no address while its first lookup has not answered.
const NO_ANSWER_YET: &str = "no answer yet";

/// One name of the list.
struct Host {
    addr: Option<IpAddr>,
    /// Why it has no address, once a lookup failed (or it is an address of
    /// the other family, which no retry changes).
    error: Option<String>,
    /// The next lookup is due then (after a failure).
    retry_at: Option<Instant>,
    retries: Backoff,
    /// The list waits for this name's first answer.
    awaited: bool,
    /// Waiting for a lookup slot.
    queued: bool,
}

impl Host {
    fn new() -> Self {
        Host {
            addr: None,
            error: None,
            retry_at: None,
            retries: Backoff::new(RETRY_MIN, RETRY_MAX),
            awaited: false,
            queued: false,
        }
    }
}

/// What a finished lookup changed, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Answer {
    /// Resolved; `was_failing` when earlier lookups had failed.
    Resolved { ip: IpAddr, was_failing: bool },
    /// Failed for a reason not logged before.
    NewFailure(String),
    /// Failed again for the same reason, or the name left the list.
    Nothing,
}

/// The resolution state of one source's list (pure).
pub(super) struct Lookups {
    ipv6: bool,
    entries: Vec<ServerEntry>,
    hosts: HashMap<String, Host>,
    /// Names waiting for a slot; the next lookup starts from the front.
    queue: VecDeque<String>,
    /// Names with a lookup thread alive, and when it started.
    running: HashMap<String, Instant>,
    /// When the list waiting for answers goes out anyway.
    send_by: Option<Instant>,
    /// The list changed since it was last sent.
    dirty: bool,
}

impl Lookups {
    pub(super) fn new(ipv6: bool) -> Self {
        Lookups {
            ipv6,
            entries: Vec::new(),
            hosts: HashMap::new(),
            queue: VecDeque::new(),
            running: HashMap::new(),
            send_by: None,
            dirty: false,
        }
    }

    /// A new list from the source. Names that left it are forgotten (a
    /// lookup still running for one is ignored when it ends); new names are
    /// looked up before any other.
    pub(super) fn set_entries(&mut self, entries: Vec<ServerEntry>, now: Instant) {
        self.hosts
            .retain(|host, _| entries.iter().any(|e| &e.host == host));
        let hosts = &self.hosts;
        self.queue.retain(|host| hosts.contains_key(host));
        let mut new_names = Vec::new();
        for entry in &entries {
            if self.hosts.contains_key(&entry.host) {
                continue;
            }
            let mut host = Host::new();
            match entry.host.parse::<IpAddr>() {
                Ok(ip) if ip.is_ipv6() == self.ipv6 => host.addr = Some(ip),
                Ok(_) => {
                    host.error = Some(format!(
                        "{} address in an {} service",
                        family(!self.ipv6),
                        family(self.ipv6)
                    ))
                }
                Err(_) => {
                    host.awaited = true;
                    host.queued = true;
                    new_names.push(entry.host.clone());
                }
            }
            self.hosts.insert(entry.host.clone(), host);
        }
        for name in new_names.into_iter().rev() {
            self.queue.push_front(name);
        }
        if self.hosts.values().any(|h| h.awaited) && self.send_by.is_none() {
            self.send_by = Some(now + LIST_WAIT);
        }
        self.entries = entries;
        self.dirty = true;
    }

    /// The names to look up now (their threads must be started): due
    /// retries join the queue, which is served while slots are free.
    pub(super) fn start(&mut self, now: Instant) -> Vec<String> {
        let mut due: Vec<&String> = self
            .hosts
            .iter()
            .filter(|(name, h)| {
                h.retry_at.is_some_and(|t| t <= now)
                    && !h.queued
                    && !self.running.contains_key(*name)
            })
            .map(|(name, _)| name)
            .collect();
        due.sort();
        let due: Vec<String> = due.into_iter().cloned().collect();
        for name in due {
            if let Some(h) = self.hosts.get_mut(&name) {
                h.retry_at = None;
                h.queued = true;
            }
            self.queue.push_back(name);
        }
        let mut started = Vec::new();
        while self.active(now) < MAX_ACTIVE && self.running.len() < MAX_THREADS {
            let Some(name) = self.queue.pop_front() else {
                break;
            };
            let Some(h) = self.hosts.get_mut(&name) else {
                continue;
            };
            h.queued = false;
            if self.running.contains_key(&name) {
                // A lookup of this name is still on its way (it left the
                // list and came back): its answer will do.
                continue;
            }
            self.running.insert(name.clone(), now);
            started.push(name);
        }
        started
    }

    /// Lookups that still hold a slot (started less than LOOKUP_TIMEOUT ago).
    fn active(&self, now: Instant) -> usize {
        self.running
            .values()
            .filter(|started| now < **started + LOOKUP_TIMEOUT)
            .count()
    }

    /// A lookup thread ended with the addresses of `name`, or why not.
    pub(super) fn finished(
        &mut self,
        name: &str,
        result: Result<Vec<IpAddr>, String>,
        now: Instant,
    ) -> Answer {
        self.running.remove(name);
        let ipv6 = self.ipv6;
        let Some(h) = self.hosts.get_mut(name) else {
            return Answer::Nothing;
        };
        h.awaited = false;
        let result = result.and_then(|addrs| {
            addrs
                .into_iter()
                .find(|ip| ip.is_ipv6() == ipv6)
                .ok_or_else(|| format!("no {} address", family(ipv6)))
        });
        match result {
            Ok(ip) => {
                let was_failing = h.error.is_some();
                h.addr = Some(ip);
                h.error = None;
                h.retry_at = None;
                h.retries.reset();
                self.dirty = true;
                Answer::Resolved { ip, was_failing }
            }
            Err(e) => {
                h.retry_at = Some(now + h.retries.next_delay());
                if h.error.as_ref() == Some(&e) {
                    return Answer::Nothing;
                }
                h.error = Some(e.clone());
                self.dirty = true;
                Answer::NewFailure(e)
            }
        }
    }

    /// The complete list to hand to the service now, if one is due: the
    /// list changed, and every new name answered or the wait is over.
    pub(super) fn list_to_send(&mut self, now: Instant) -> Option<ServerList> {
        if !self.dirty {
            return None;
        }
        let waiting = self.hosts.values().any(|h| h.awaited);
        if waiting && self.send_by.is_some_and(|t| now < t) {
            return None;
        }
        self.dirty = false;
        self.send_by = None;
        for h in self.hosts.values_mut() {
            h.awaited = false;
        }
        Some(
            self.entries
                .iter()
                .map(|e| {
                    let h = self.hosts.get(&e.host);
                    let ip = h.and_then(|h| h.addr);
                    ServerUpdate {
                        host: e.host.clone(),
                        ip,
                        unresolved: ip.is_none().then(|| {
                            h.and_then(|h| h.error.clone())
                                .unwrap_or_else(|| NO_ANSWER_YET.to_string())
                        }),
                        weight: e.weight,
                        enabled: e.enabled,
                    }
                })
                .collect(),
        )
    }

    /// When something is due without any answer or list arriving: the list
    /// that waits goes out, a retry, or a slot frees up.
    pub(super) fn next_wake(&self) -> Option<Instant> {
        let send = self.send_by.filter(|_| self.dirty);
        let retries = self
            .hosts
            .iter()
            .filter(|(name, _)| !self.running.contains_key(*name))
            .filter_map(|(_, h)| h.retry_at);
        let slot = (!self.queue.is_empty())
            .then(|| self.running.values().map(|t| *t + LOOKUP_TIMEOUT).min())
            .flatten();
        send.into_iter().chain(retries).chain(slot).min()
    }
}

fn family(ipv6: bool) -> &'static str {
    if ipv6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// Starts the resolver thread of service `service`'s source: it takes lists
/// of entries on the returned channel and sends resolved lists on `lists`.
/// It ends when the source thread drops its end, the service drops `lists`,
/// or `stop` is disconnected.
pub(super) fn spawn(
    service: &str,
    ipv6: bool,
    lists: Sender<ServerList>,
    stop: Receiver<()>,
) -> std::io::Result<Sender<Vec<ServerEntry>>> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let service = service.to_string();
    thread::Builder::new()
        .name(format!("resolve:{service}"))
        .spawn(move || run(&service, Lookups::new(ipv6), &rx, &lists, &stop))?;
    Ok(tx)
}

type Done = (String, Result<Vec<IpAddr>, String>);

fn run(
    service: &str,
    mut lookups: Lookups,
    entries: &Receiver<Vec<ServerEntry>>,
    lists: &Sender<ServerList>,
    stop: &Receiver<()>,
) {
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<Done>();
    loop {
        let now = Instant::now();
        for name in lookups.start(now) {
            if let Err(e) = start_lookup(&name, done_tx.clone()) {
                let why = format!("cannot start a lookup thread: {e}");
                report(service, &name, lookups.finished(&name, Err(why), now));
            }
        }
        if let Some(list) = lookups.list_to_send(Instant::now()) {
            if lists.send(list).is_err() {
                return; // The service is gone.
            }
        }
        let wake = lookups
            .next_wake()
            .map_or_else(crossbeam_channel::never, crossbeam_channel::at);
        select! {
            recv(entries) -> list => match list {
                Ok(list) => lookups.set_entries(list, Instant::now()),
                Err(_) => return,
            },
            recv(done_rx) -> done => {
                // Answers that came together make one list.
                for (name, result) in done.into_iter().chain(done_rx.try_iter()) {
                    report(service, &name, lookups.finished(&name, result, Instant::now()));
                }
            },
            recv(stop) -> _ => return,
            recv(wake) -> _ => {},
        }
    }
}

fn report(service: &str, name: &str, answer: Answer) {
    match answer {
        Answer::Resolved {
            ip,
            was_failing: true,
        } => log::info!(target: service, "{name} resolves again, to {ip}"),
        Answer::Resolved { ip, .. } => log::debug!(target: service, "resolved {name} to {ip}"),
        Answer::NewFailure(e) => log::error!(target: service, "could not resolve {name}: {e}"),
        Answer::Nothing => {}
    }
}

/// One `getaddrinfo` of `name` on its own thread; the answer goes to `done`
/// (ignored when the resolver has ended meanwhile).
fn start_lookup(name: &str, done: Sender<Done>) -> std::io::Result<()> {
    let name = name.to_string();
    thread::Builder::new()
        .name("lookup".to_string())
        .spawn(move || {
            let result = (name.as_str(), 0u16)
                .to_socket_addrs()
                .map(|addrs| addrs.map(|a| a.ip()).collect())
                .map_err(|e| e.to_string());
            let _ = done.send((name, result));
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(hosts: &[&str]) -> Vec<ServerEntry> {
        hosts
            .iter()
            .map(|h| ServerEntry::new(h, 10, true))
            .collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// (host, address, reason) of a sent list.
    fn summary(list: &ServerList) -> Vec<(String, Option<IpAddr>, Option<String>)> {
        list.iter()
            .map(|u| (u.host.clone(), u.ip, u.unresolved.clone()))
            .collect()
    }

    #[test]
    fn literals_need_no_lookup_and_go_out_at_once() {
        let now = Instant::now();
        let mut l = Lookups::new(false);
        l.set_entries(entries(&["10.0.0.1", "::1"]), now);
        assert!(l.start(now).is_empty());
        let list = l.list_to_send(now).unwrap();
        assert_eq!(
            summary(&list),
            [
                ("10.0.0.1".into(), Some(ip("10.0.0.1")), None),
                (
                    "::1".into(),
                    None,
                    Some("IPv6 address in an IPv4 service".into())
                )
            ]
        );
        assert!(l.list_to_send(now).is_none(), "sent once");
        assert_eq!(
            l.next_wake(),
            None,
            "a literal of the wrong family is not retried"
        );
    }

    #[test]
    fn a_list_waits_for_its_new_names_but_not_longer_than_list_wait() {
        let t0 = Instant::now();
        let mut l = Lookups::new(false);
        l.set_entries(entries(&["a.test", "b.test", "10.0.0.9"]), t0);
        assert_eq!(l.start(t0), ["a.test", "b.test"]);
        assert!(l.list_to_send(t0).is_none());
        l.finished("a.test", Ok(vec![ip("::2"), ip("10.0.0.2")]), t0);
        assert!(l.list_to_send(t0).is_none(), "b.test has not answered");
        assert_eq!(l.next_wake(), Some(t0 + LIST_WAIT));
        let list = l.list_to_send(t0 + LIST_WAIT).unwrap();
        assert_eq!(
            summary(&list),
            [
                ("a.test".into(), Some(ip("10.0.0.2")), None),
                ("b.test".into(), None, Some(NO_ANSWER_YET.into())),
                ("10.0.0.9".into(), Some(ip("10.0.0.9")), None),
            ]
        );
        // b.test's late answer sends the list again.
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(
            l.finished("b.test", Ok(vec![ip("10.0.0.3")]), t1),
            Answer::Resolved {
                ip: ip("10.0.0.3"),
                was_failing: false
            }
        );
        let list = l.list_to_send(t1).unwrap();
        assert_eq!(list[1].ip, Some(ip("10.0.0.3")));
    }

    #[test]
    fn every_answer_in_sends_at_once() {
        let t0 = Instant::now();
        let mut l = Lookups::new(true);
        l.set_entries(entries(&["a.test"]), t0);
        l.start(t0);
        l.finished("a.test", Ok(vec![ip("10.0.0.2"), ip("2001:db8::2")]), t0);
        let list = l.list_to_send(t0).unwrap();
        assert_eq!(list[0].ip, Some(ip("2001:db8::2")), "the service's family");
    }

    #[test]
    fn failures_are_retried_with_doubling_delays_capped_at_retry_max() {
        let mut t = Instant::now();
        let mut l = Lookups::new(false);
        l.set_entries(entries(&["gone.test"]), t);
        assert_eq!(l.start(t), ["gone.test"]);
        let failure = || Err("Name or service not known".to_string());
        assert_eq!(
            l.finished("gone.test", failure(), t),
            Answer::NewFailure("Name or service not known".into())
        );
        let list = l.list_to_send(t).unwrap();
        assert_eq!(
            list[0].unresolved.as_deref(),
            Some("Name or service not known")
        );
        let mut delays = Vec::new();
        for _ in 0..8 {
            let wake = l.next_wake().unwrap();
            delays.push((wake - t).as_secs());
            assert!(
                l.start(wake - Duration::from_millis(1)).is_empty(),
                "not before it is due"
            );
            t = wake;
            assert_eq!(l.start(t), ["gone.test"]);
            assert_eq!(l.finished("gone.test", failure(), t), Answer::Nothing);
            assert!(
                l.list_to_send(t).is_none(),
                "the same failure sends nothing"
            );
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
        // It resolves at last: the list goes out again, with its address.
        t = l.next_wake().unwrap();
        l.start(t);
        assert_eq!(
            l.finished("gone.test", Ok(vec![ip("10.0.0.4")]), t),
            Answer::Resolved {
                ip: ip("10.0.0.4"),
                was_failing: true
            }
        );
        let list = l.list_to_send(t).unwrap();
        assert_eq!(
            (list[0].ip, list[0].unresolved.clone()),
            (Some(ip("10.0.0.4")), None)
        );
        assert_eq!(l.next_wake(), None, "nothing more to do");
    }

    #[test]
    fn resolved_names_are_not_looked_up_again_while_in_the_list() {
        let t0 = Instant::now();
        let mut l = Lookups::new(false);
        l.set_entries(entries(&["a.test"]), t0);
        l.start(t0);
        l.finished("a.test", Ok(vec![ip("10.0.0.2")]), t0);
        l.list_to_send(t0);
        let mut changed = entries(&["a.test", "10.0.0.3"]);
        changed[0].weight = 20;
        l.set_entries(changed, t0);
        assert!(l.start(t0).is_empty());
        let list = l.list_to_send(t0).unwrap();
        assert_eq!((list[0].ip, list[0].weight), (Some(ip("10.0.0.2")), 20));
        // Removed and added again: looked up again.
        l.set_entries(entries(&["10.0.0.3"]), t0);
        l.set_entries(entries(&["10.0.0.3", "a.test"]), t0);
        assert_eq!(l.start(t0), ["a.test"]);
    }

    #[test]
    fn dead_names_do_not_delay_an_edit_beyond_list_wait() {
        let t0 = Instant::now();
        let mut l = Lookups::new(false);
        let dead: Vec<String> = (0..40).map(|i| format!("dead{i}.test")).collect();
        let mut hosts: Vec<&str> = dead.iter().map(String::as_str).collect();
        hosts.push("10.0.0.12");
        l.set_entries(entries(&hosts), t0);
        assert_eq!(l.start(t0).len(), MAX_ACTIVE);
        assert!(l.list_to_send(t0).is_none());
        let list = l.list_to_send(t0 + LIST_WAIT).unwrap();
        assert_eq!(list.iter().filter(|u| u.ip.is_some()).count(), 1);
        // An edit one second later: a literal and a new name.
        let t1 = t0 + Duration::from_secs(3);
        hosts.push("10.0.0.13");
        hosts.push("new.test");
        l.set_entries(entries(&hosts), t1);
        // The new name is looked up first, in the slots the dead names'
        // timed-out lookups freed.
        let started = l.start(t1);
        assert_eq!(started.first().map(String::as_str), Some("new.test"));
        l.finished("new.test", Ok(vec![ip("10.0.0.14")]), t1);
        let list = l.list_to_send(t1).unwrap();
        let resolved: Vec<&str> = list
            .iter()
            .filter(|u| u.ip.is_some())
            .map(|u| u.host.as_str())
            .collect();
        assert_eq!(resolved, ["10.0.0.12", "10.0.0.13", "new.test"]);
    }

    #[test]
    fn lookup_threads_are_bounded_even_when_none_answers() {
        let t0 = Instant::now();
        let mut l = Lookups::new(false);
        let dead: Vec<String> = (0..200).map(|i| format!("dead{i}.test")).collect();
        l.set_entries(
            entries(&dead.iter().map(String::as_str).collect::<Vec<_>>()),
            t0,
        );
        let mut started = 0;
        let mut t = t0;
        for _ in 0..20 {
            started += l.start(t).len();
            t += LOOKUP_TIMEOUT;
        }
        assert_eq!(started, MAX_THREADS);
        // One answer frees one thread.
        l.finished("dead0.test", Err("timed out".into()), t);
        assert_eq!(l.start(t).len(), 1);
    }

    #[test]
    fn an_answer_for_a_name_no_longer_listed_is_ignored() {
        let t0 = Instant::now();
        let mut l = Lookups::new(false);
        l.set_entries(entries(&["a.test"]), t0);
        l.start(t0);
        l.set_entries(entries(&["10.0.0.1"]), t0);
        l.list_to_send(t0);
        assert_eq!(
            l.finished("a.test", Ok(vec![ip("10.0.0.2")]), t0),
            Answer::Nothing
        );
        assert!(l.list_to_send(t0).is_none());
    }

    #[test]
    fn localhost_resolves_through_a_lookup_thread() {
        let (tx, rx) = crossbeam_channel::unbounded();
        start_lookup("localhost", tx).unwrap();
        let (name, result) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(name, "localhost");
        assert!(result.unwrap().contains(&ip("127.0.0.1")));
    }
}
