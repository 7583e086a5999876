//! The Coordinator: PyBal's pooling rules for one service, as pure code.
//!
//! It owns every server's state (enabled, ready, up, pooled, per-monitor
//! results) and the pooled-down set, and decides pool changes from server-list
//! updates and monitor results under the depool threshold (SPEC 4 and 5).
//! It does no I/O: callers get an [`Outcome`] that says whether the pool
//! changed, with log lines to write and monitors to start or stop. When the
//! pool changed, the caller sends the complete desired pool
//! ([`Coordinator::pooled`]) to the IpvsWriter, which alone computes the
//! operations that bring the kernel there (`ipvs::diff`).
//!
//! Beyond PyBal, names that do not resolve are retried, so a server's
//! address can change: a server that becomes resolvable is handled like a
//! new one, and one whose address changed keeps its pool state and gets its
//! monitors restarted with unknown state. A failed lookup never depools: a
//! server whose name no longer resolves keeps its last address, pool state
//! and monitors (marked unresolved, with the reason). A server that never
//! resolved is neither pooled nor monitored; the service thread tells the
//! IpvsWriter about it ([`Coordinator::unresolved`]), so that a destination
//! of it already in the kernel (adopted at a restart) is kept.

use crate::monitor::CheckOutcome;
use crate::source::ServerUpdate;
use log::Level;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// A log line the caller should write, in the service's log context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogLine {
    pub(crate) level: Level,
    /// The server the line is about, if any.
    pub(crate) host: Option<String>,
    pub(crate) text: String,
}

/// What a coordinator call decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The pooled destinations (host → address, weight) differ from those
    /// before the call: [`Coordinator::pooled`] must be sent to IPVS.
    pub(crate) pool_changed: bool,
    pub(crate) logs: Vec<LogLine>,
    /// Hosts whose monitors must be started: new and ready, newly resolved,
    /// or with a changed address.
    pub(crate) start_monitors: Vec<String>,
    /// Hosts whose monitors must be stopped: removed, no longer resolvable,
    /// or with a changed address (stop these before starting any).
    pub(crate) stop_monitors: Vec<String>,
}

/// One monitor's view of one server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MonitorState {
    /// `None` until the first result.
    pub(crate) up: Option<bool>,
    pub(crate) up_results: u64,
    pub(crate) down_results: u64,
    pub(crate) up_transitions: u64,
    pub(crate) down_transitions: u64,
    /// Reason given with the result that last turned this monitor down.
    pub(crate) last_reason: Option<String>,
}

/// One server's full state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerState {
    pub(crate) host: String,
    pub(crate) ip: Option<IpAddr>,
    pub(crate) weight: u32,
    pub(crate) enabled: bool,
    pub(crate) ready: bool,
    pub(crate) up: bool,
    pub(crate) pooled: bool,
    /// Per monitor, in configuration order.
    pub(crate) monitors: Vec<MonitorState>,
    /// Why the name does not resolve (the last lookup failed); `ip` is then
    /// `None`, or the address of an earlier lookup, which is kept.
    pub(crate) unresolved: Option<String>,
}

/// PyBal's pooling state machine for one service.
///
/// Servers are kept sorted by host, so every decision that has to pick among
/// servers (force-pooling, draining the pooled-down set) is deterministic.
#[derive(Debug, Clone)]
pub(crate) struct Coordinator {
    depool_threshold: f64,
    monitor_count: usize,
    /// Monitor names for log lines, by index (`#i` where not given).
    monitor_names: Vec<String>,
    servers: BTreeMap<String, ServerState>,
    /// Pooled servers that are down but could not be depooled (threshold).
    pooled_down: BTreeSet<String>,
    could_not_depool_total: u64,
}

impl Coordinator {
    /// A coordinator without servers; `monitor_count` monitors per server.
    pub(crate) fn new(depool_threshold: f64, monitor_count: usize) -> Self {
        Coordinator {
            depool_threshold,
            monitor_count,
            monitor_names: Vec::new(),
            servers: BTreeMap::new(),
            pooled_down: BTreeSet::new(),
            could_not_depool_total: 0,
        }
    }

    /// Names the monitors (configuration order) for log lines, as PyBal's
    /// "Monitoring instance ProxyFetch reports …".
    pub(crate) fn set_monitor_names(&mut self, names: Vec<String>) {
        self.monitor_names = names;
    }

    fn monitor_name(&self, index: usize) -> String {
        self.monitor_names
            .get(index)
            .cloned()
            .unwrap_or_else(|| format!("#{index}"))
    }

    /// Takes the complete new server list (after name resolution): adds new
    /// servers, drops removed ones and merges changed ones, then enforces the
    /// depool threshold.
    ///
    /// If a host appears more than once, its last entry wins. A host can be
    /// both in `stop_monitors` and in `start_monitors` (its address changed):
    /// stop first, then start.
    pub(crate) fn apply_server_list(&mut self, list: Vec<ServerUpdate>) -> Outcome {
        let before = self.pool();
        let mut out = Outcome::default();
        let first_config = self.servers.is_empty();
        let mut wanted: BTreeMap<String, ServerUpdate> = BTreeMap::new();
        for update in list {
            wanted.insert(update.host.clone(), update);
        }

        let removed: Vec<String> = self
            .servers
            .keys()
            .filter(|host| !wanted.contains_key(*host))
            .cloned()
            .collect();
        for host in removed {
            self.remove_server(&host, &mut out);
        }

        for (host, update) in wanted {
            if self.servers.contains_key(&host) {
                self.merge_server(update, &mut out);
            } else {
                self.add_server(update, first_config, &mut out);
            }
        }

        if first_config && !self.servers.is_empty() {
            let enabled = self.servers.values().filter(|s| s.enabled).count();
            out.logs.push(LogLine {
                level: Level::Info,
                host: None,
                text: format!(
                    "Added {} server(s): {} enabled server(s) and {} disabled server(s)",
                    self.servers.len(),
                    enabled,
                    self.servers.len() - enabled
                ),
            });
        }

        self.enforce_threshold(&mut out);
        out.pool_changed = before != self.pool();
        out
    }

    /// One report of monitor number `monitor` for `host`, as
    /// [`Coordinator::monitor_result`], except that a local failure
    /// (rsbal's own lack of fds, threads, memory or ports:
    /// `CheckError::Local`) says nothing about the server: it changes
    /// nothing, and the monitor keeps its previous state.
    pub(crate) fn monitor_outcome(
        &mut self,
        host: &str,
        monitor: usize,
        outcome: &CheckOutcome,
    ) -> Outcome {
        match outcome {
            CheckOutcome::Down(error) if error.is_local() => Outcome::default(),
            _ => self.monitor_result(host, monitor, outcome.is_up(), outcome.reason()),
        }
    }

    /// One result of monitor number `monitor` (configuration order) for
    /// `host`. Results for unknown hosts, out-of-range monitor indexes and
    /// servers that are not ready (not resolved, so not monitored) are
    /// ignored and give an empty [`Outcome`].
    pub(crate) fn monitor_result(
        &mut self,
        host: &str,
        monitor: usize,
        up: bool,
        reason: &str,
    ) -> Outcome {
        let mut out = Outcome::default();
        if !self.record_result(host, monitor, up, reason) {
            return out;
        }
        let before = self.pool();
        if up {
            self.result_up(host, &mut out);
        } else {
            self.result_down(host, monitor, reason, &mut out);
        }
        out.pool_changed = before != self.pool();
        out
    }

    /// Changes the depool threshold and re-evaluates: force-pools servers if
    /// fewer than `total × threshold` are pooled, and depools the waiting
    /// pooled-down servers if depooling is now allowed.
    pub(crate) fn set_depool_threshold(&mut self, threshold: f64) -> Outcome {
        let before = self.pool();
        let mut out = Outcome::default();
        self.depool_threshold = threshold;
        self.enforce_threshold(&mut out);
        out.pool_changed = before != self.pool();
        out
    }

    /// The monitors were replaced: every server's monitor states become
    /// unknown (`monitor_count` of them). `up` and `pooled` are unchanged;
    /// the new monitors' first results correct them.
    pub(crate) fn reset_monitors(&mut self, monitor_count: usize) {
        self.monitor_count = monitor_count;
        for server in self.servers.values_mut() {
            server.monitors = vec![MonitorState::default(); monitor_count];
        }
    }

    /// All servers, sorted by host.
    pub(crate) fn servers(&self) -> impl Iterator<Item = &ServerState> {
        self.servers.values()
    }

    /// One server's state.
    pub(crate) fn server(&self, host: &str) -> Option<&ServerState> {
        self.servers.get(host)
    }

    /// Whether one more server may be depooled: the servers that are up and
    /// enabled are at least `total × threshold` (total counts every server of
    /// the list, disabled and unresolved ones too).
    pub(crate) fn can_depool(&self) -> bool {
        let up_and_enabled = self.servers.values().filter(|s| s.up && s.enabled).count();
        up_and_enabled as f64 >= self.needed()
    }

    /// Hosts that are down but stay pooled because of the threshold, sorted.
    pub(crate) fn pooled_down(&self) -> Vec<String> {
        self.pooled_down.iter().cloned().collect()
    }

    /// The current depool threshold (0.0 ..= 1.0).
    pub(crate) fn depool_threshold(&self) -> f64 {
        self.depool_threshold
    }

    /// How many times a down server could not be depooled (for metrics).
    pub(crate) fn could_not_depool_total(&self) -> u64 {
        self.could_not_depool_total
    }

    /// The destinations that should be in IPVS now: `(ip, weight)` of every
    /// pooled server, in host order.
    pub(crate) fn pooled(&self) -> Vec<(IpAddr, u32)> {
        self.servers
            .values()
            .filter(|s| s.pooled)
            .filter_map(|s| s.ip.map(|ip| (ip, s.weight)))
            .collect()
    }

    /// Hosts whose name never resolved (no address, so neither pooled nor
    /// monitored), sorted.
    pub(crate) fn unresolved(&self) -> Vec<String> {
        self.servers
            .values()
            .filter(|s| s.ip.is_none())
            .map(|s| s.host.clone())
            .collect()
    }

    /// The addresses of every server with one, pooled or not: what the
    /// service decides about.
    pub(crate) fn addresses(&self) -> BTreeSet<IpAddr> {
        self.servers.values().filter_map(|s| s.ip).collect()
    }

    /// The pooled servers' destinations.
    fn pool(&self) -> Pool {
        self.servers
            .values()
            .filter(|s| s.pooled)
            .filter_map(|s| s.ip.map(|ip| (s.host.clone(), (ip, s.weight))))
            .collect()
    }

    /// `total × threshold`, as a float to compare counts against.
    fn needed(&self) -> f64 {
        self.servers.len() as f64 * self.depool_threshold
    }

    fn pooled_count(&self) -> usize {
        self.servers.values().filter(|s| s.pooled).count()
    }

    fn add_server(&mut self, update: ServerUpdate, first_config: bool, out: &mut Outcome) {
        let ServerUpdate {
            host,
            ip,
            unresolved,
            weight,
            enabled,
        } = update;
        let mut server = ServerState {
            host: host.clone(),
            ip,
            weight,
            enabled,
            ready: false,
            up: false,
            pooled: false,
            monitors: vec![MonitorState::default(); self.monitor_count],
            unresolved: None,
        };
        match ip {
            Some(_) => {
                server.ready = true;
                server.up = true;
                server.pooled = enabled;
                out.start_monitors.push(host.clone());
                out.logs.push(LogLine {
                    level: if first_config {
                        Level::Debug
                    } else {
                        Level::Info
                    },
                    host: Some(host.clone()),
                    text: format!(
                        "New {} server {}, weight {}",
                        enabled_text(enabled),
                        host,
                        weight
                    ),
                });
            }
            None => {
                let why = unresolved.unwrap_or_default();
                log_unresolved(&host, &why, out);
                server.unresolved = Some(why);
            }
        }
        self.servers.insert(host, server);
    }

    fn remove_server(&mut self, host: &str, out: &mut Outcome) {
        let Some(server) = self.servers.remove(host) else {
            return;
        };
        self.pooled_down.remove(host);
        if server.ready {
            out.stop_monitors.push(host.to_string());
        }
        out.logs.push(LogLine {
            level: Level::Info,
            host: Some(host.to_string()),
            text: format!("Removing server {host} (no longer found in new configuration)"),
        });
    }

    fn merge_server(&mut self, update: ServerUpdate, out: &mut Outcome) {
        let monitor_count = self.monitor_count;
        let Some(server) = self.servers.get_mut(&update.host) else {
            return;
        };
        let host = update.host;
        let mut changed = server.weight != update.weight || server.enabled != update.enabled;
        server.weight = update.weight;
        server.enabled = update.enabled;

        match (server.ip, update.ip) {
            (None, None) => {
                let why = update.unresolved.unwrap_or_default();
                if server.unresolved.as_ref() != Some(&why) {
                    log_unresolved(&host, &why, out);
                    server.unresolved = Some(why);
                }
            }
            (None, Some(ip)) => {
                // Resolved at last: from now on it is handled like a new server.
                changed = true;
                server.ip = Some(ip);
                server.unresolved = None;
                server.ready = true;
                server.up = true;
                server.pooled = server.enabled;
                server.monitors = vec![MonitorState::default(); monitor_count];
                out.start_monitors.push(host.clone());
            }
            (Some(old_ip), new_ip) => {
                match new_ip {
                    None => {
                        // A failed lookup never depools: the server keeps
                        // its address, pool state and monitors.
                        let why = update.unresolved.unwrap_or_default();
                        if server.unresolved.as_ref() != Some(&why) {
                            out.logs.push(LogLine {
                                level: Level::Warn,
                                host: Some(host.clone()),
                                text: format!("Could not resolve server {host} again ({why}); it keeps its address {old_ip}"),
                            });
                            server.unresolved = Some(why);
                        }
                    }
                    Some(ip) => {
                        server.unresolved = None;
                        if old_ip != ip {
                            // The monitors check the old address: restart
                            // them. A pooled server stays pooled (at its new
                            // address).
                            changed = true;
                            server.ip = Some(ip);
                            server.monitors = vec![MonitorState::default(); monitor_count];
                            out.stop_monitors.push(host.clone());
                            out.start_monitors.push(host.clone());
                        }
                    }
                }
                if !server.enabled {
                    // An admin decision: not subject to the threshold.
                    server.pooled = false;
                } else if !server.pooled {
                    server.up = server.monitors.iter().all(|m| m.up == Some(true));
                    server.pooled = server.up;
                }
            }
        }
        if !server.pooled {
            self.pooled_down.remove(&host);
        }
        if changed {
            if let Some(server) = self.servers.get(&host) {
                let address = server
                    .ip
                    .map_or_else(|| "unresolved".to_string(), |ip| ip.to_string());
                out.logs.push(LogLine {
                    level: Level::Info,
                    host: Some(host.clone()),
                    text: format!(
                        "Merged {} server {} ({}), weight {}",
                        enabled_text(server.enabled),
                        host,
                        address,
                        server.weight
                    ),
                });
            }
        }
    }

    /// Counts one result in the monitor's state; true if the state changed
    /// (first result, or a transition).
    fn record_result(&mut self, host: &str, monitor: usize, up: bool, reason: &str) -> bool {
        let Some(server) = self.servers.get_mut(host) else {
            return false;
        };
        if !server.ready {
            return false;
        }
        let Some(state) = server.monitors.get_mut(monitor) else {
            return false;
        };
        if up {
            state.up_results += 1;
        } else {
            state.down_results += 1;
        }
        match state.up {
            Some(previous) if previous == up => return false,
            Some(_) if up => state.up_transitions += 1,
            Some(_) => state.down_transitions += 1,
            None => {}
        }
        state.up = Some(up);
        if !up {
            state.last_reason = Some(reason.to_string());
        }
        true
    }

    /// A monitor of `host` changed to down.
    fn result_down(&mut self, host: &str, monitor: usize, reason: &str, out: &mut Outcome) {
        let monitor_name = self.monitor_name(monitor);
        let Some(server) = self.servers.get_mut(host) else {
            return;
        };
        let reason = if reason.is_empty() {
            "(reason unknown)"
        } else {
            reason
        };
        out.logs.push(LogLine {
            level: Level::Error,
            host: Some(host.to_string()),
            text: format!(
                "Monitoring instance {} reports server {} ({}) down: {}",
                monitor_name,
                host,
                server.text_status(),
                reason
            ),
        });
        if server.up {
            server.up = false;
            if server.pooled {
                self.depool(host, out);
            }
        }
    }

    /// A monitor of `host` changed to up.
    fn result_up(&mut self, host: &str, out: &mut Outcome) {
        let Some(server) = self.servers.get_mut(host) else {
            return;
        };
        let all_up =
            !server.monitors.is_empty() && server.monitors.iter().all(|m| m.up == Some(true));
        if server.up || !all_up {
            return;
        }
        server.up = true;
        out.logs.push(LogLine {
            level: Level::Info,
            host: Some(host.to_string()),
            text: format!("Server {} ({}) is up", host, server.text_status()),
        });
        if server.enabled && server.ready {
            self.repool(host, out);
        }
    }

    /// Depools a pooled server if the threshold allows it; otherwise it stays
    /// pooled and joins the pooled-down set.
    fn depool(&mut self, host: &str, out: &mut Outcome) {
        if self.can_depool() {
            self.pooled_down.remove(host);
            self.unpool(host);
        } else {
            self.pooled_down.insert(host.to_string());
            self.could_not_depool_total += 1;
            out.logs.push(LogLine {
                level: Level::Error,
                host: Some(host.to_string()),
                text: format!("Could not depool server {host} because of too many down!"),
            });
        }
    }

    /// Pools a server that came up (or leaves it pooled), then depools the
    /// pooled-down servers the threshold now allows.
    fn repool(&mut self, host: &str, out: &mut Outcome) {
        let Some(server) = self.servers.get_mut(host) else {
            return;
        };
        if server.pooled {
            out.logs.push(LogLine {
                level: Level::Info,
                host: Some(host.to_string()),
                text: format!("Leaving previously pooled but down server {host} pooled"),
            });
        } else {
            server.pooled = true;
        }
        self.pooled_down.remove(host);
        self.drain_pooled_down();
    }

    /// Depools pooled-down servers, in host order, while `can_depool` holds.
    fn drain_pooled_down(&mut self) {
        while self.can_depool() {
            let Some(host) = self.pooled_down.pop_first() else {
                break;
            };
            self.unpool(&host);
        }
    }

    /// Takes a pooled server out of the pool (no threshold check).
    fn unpool(&mut self, host: &str) {
        let Some(server) = self.servers.get_mut(host) else {
            return;
        };
        if !server.pooled {
            return;
        }
        server.pooled = false;
    }

    /// After a server-list or threshold change: force-pools enabled and ready
    /// servers (in host order) while fewer than `total × threshold` are
    /// pooled, then depools pooled-down servers while `can_depool` holds.
    fn enforce_threshold(&mut self, out: &mut Outcome) {
        let needed = self.needed();
        let mut pooled = self.pooled_count();
        if (pooled as f64) < needed {
            for server in self.servers.values_mut() {
                if pooled as f64 >= needed {
                    break;
                }
                if server.pooled || !server.enabled || !server.ready {
                    continue;
                }
                server.pooled = true;
                pooled += 1;
                if !server.up {
                    self.pooled_down.insert(server.host.clone());
                }
                out.logs.push(LogLine {
                    level: Level::Warn,
                    host: Some(server.host.clone()),
                    text: format!(
                        "Pooling server {} ({}) to meet the depool threshold",
                        server.host,
                        server.text_status()
                    ),
                });
            }
            if (pooled as f64) < needed {
                out.logs.push(LogLine {
                    level: Level::Error,
                    host: None,
                    text: format!(
                        "CRITICAL: cannot meet depool threshold {}: only {} of {} servers can be pooled",
                        self.depool_threshold,
                        pooled,
                        self.servers.len()
                    ),
                });
            }
        }
        self.drain_pooled_down();
    }
}

impl ServerState {
    /// PyBal's status text: `enabled|disabled/up|partially up|down/pooled|not pooled`.
    /// "partially up" = not up, but at least one monitor reports up.
    pub(crate) fn text_status(&self) -> String {
        let up = if self.up {
            "up"
        } else if self.monitors.iter().any(|m| m.up == Some(true)) {
            "partially up"
        } else {
            "down"
        };
        let pooled = if self.pooled { "pooled" } else { "not pooled" };
        format!("{}/{}/{}", enabled_text(self.enabled), up, pooled)
    }
}

fn enabled_text(enabled: bool) -> &'static str {
    if enabled {
        "enabled"
    } else {
        "disabled"
    }
}

fn log_unresolved(host: &str, why: &str, out: &mut Outcome) {
    out.logs.push(LogLine {
        level: Level::Error,
        host: Some(host.to_string()),
        text: format!("Could not resolve server {host} ({why}); it is not pooled or monitored"),
    });
}

/// The IPVS destinations of a service: host → (address, weight).
type Pool = BTreeMap<String, (IpAddr, u32)>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ip(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
    }

    fn host(n: u8) -> String {
        format!("s{n}")
    }

    fn upd(n: u8, weight: u32, enabled: bool) -> ServerUpdate {
        ServerUpdate {
            host: host(n),
            ip: Some(ip(n)),
            unresolved: None,
            weight,
            enabled,
        }
    }

    /// Server `i` of `l` does not resolve: "no such name".
    fn unresolvable(l: &mut [ServerUpdate], i: usize) {
        l[i].ip = None;
        l[i].unresolved = Some("no such name".into());
    }

    /// Servers s1..=sN, enabled, weight 10.
    fn list(n: u8) -> Vec<ServerUpdate> {
        (1..=n).map(|i| upd(i, 10, true)).collect()
    }

    fn coordinator(servers: u8, threshold: f64, monitors: usize) -> Coordinator {
        let mut c = Coordinator::new(threshold, monitors);
        c.apply_server_list(list(servers));
        c
    }

    /// `pooled()` of servers `(n, weight)` at their first address.
    fn pool(servers: &[(u8, u32)]) -> Vec<(IpAddr, u32)> {
        servers.iter().map(|&(n, w)| (ip(n), w)).collect()
    }

    /// `out` changed the pool, which is now exactly `servers`.
    #[track_caller]
    fn assert_pooled(out: &Outcome, c: &Coordinator, servers: &[(u8, u32)]) {
        assert!(out.pool_changed, "pool_changed");
        assert_eq!(c.pooled(), pool(servers));
    }

    fn down(c: &mut Coordinator, n: u8) -> Outcome {
        c.monitor_result(&host(n), 0, false, "timeout")
    }

    fn up(c: &mut Coordinator, n: u8) -> Outcome {
        c.monitor_result(&host(n), 0, true, "")
    }

    fn has_log(out: &Outcome, level: Level, text: &str) -> bool {
        out.logs
            .iter()
            .any(|l| l.level == level && l.text.contains(text))
    }

    #[test]
    fn a_local_failure_changes_no_server_and_no_monitor_state() {
        use crate::monitor::CheckError;
        let mut c = coordinator(4, 0.5, 1);
        let local = CheckOutcome::Down(CheckError::Local(
            "connect failed: Too many open files (os error 24)".into(),
        ));
        // Up first, then rsbal runs out of fds: the server stays up and pooled.
        c.monitor_outcome(&host(1), 0, &CheckOutcome::Up("ok".into()));
        let before = c.server(&host(1)).cloned();
        for _ in 0..3 {
            assert_eq!(c.monitor_outcome(&host(1), 0, &local), Outcome::default());
        }
        assert_eq!(c.server(&host(1)).cloned(), before);
        assert_eq!(c.pooled(), pool(&[(1, 10), (2, 10), (3, 10), (4, 10)]));
        // A server never checked yet stays as it was too (pooled, unknown).
        let unknown = c.server(&host(2)).cloned();
        c.monitor_outcome(&host(2), 0, &local);
        assert_eq!(c.server(&host(2)).cloned(), unknown);
        // A remote failure still depools.
        let out = c.monitor_outcome(&host(1), 0, &CheckOutcome::down("connection refused"));
        assert_pooled(&out, &c, &[(2, 10), (3, 10), (4, 10)]);
        // And a local failure of a down server does not bring it back either.
        c.monitor_outcome(&host(1), 0, &local);
        assert!(!c.server(&host(1)).is_some_and(|s| s.up || s.pooled));
    }

    #[test]
    fn down_log_names_the_monitor() {
        let mut c = coordinator(4, 0.5, 2);
        c.set_monitor_names(vec!["IdleConnection".into(), "ProxyFetch".into()]);
        let out = c.monitor_result(&host(1), 1, false, "HTTP status 503");
        assert!(has_log(
            &out,
            Level::Error,
            &format!(
                "Monitoring instance ProxyFetch reports server {} (enabled/up/pooled) down: HTTP status 503",
                host(1)
            )
        ));
    }

    fn pooled_hosts(c: &Coordinator) -> Vec<String> {
        c.servers()
            .filter(|s| s.pooled)
            .map(|s| s.host.clone())
            .collect()
    }

    #[test]
    fn new_ready_servers_start_up_pooled_and_monitored() {
        let mut c = Coordinator::new(0.5, 1);
        let out = c.apply_server_list(vec![upd(1, 10, true), upd(2, 20, false)]);
        assert_pooled(&out, &c, &[(1, 10)]);
        assert_eq!(out.start_monitors, vec![host(1), host(2)]);
        let s1 = c.server("s1").expect("s1");
        assert!(s1.up && s1.pooled && s1.ready && s1.enabled);
        assert_eq!(s1.monitors, vec![MonitorState::default()]);
        let s2 = c.server("s2").expect("s2");
        assert!(
            s2.up && !s2.pooled,
            "a disabled server is up but not pooled"
        );
        assert_eq!(c.pooled(), vec![(ip(1), 10)]);
    }

    #[test]
    fn depool_is_refused_once_the_threshold_is_reached() {
        let mut c = coordinator(4, 0.5, 1);
        let out = down(&mut c, 1);
        assert_pooled(&out, &c, &[(2, 10), (3, 10), (4, 10)]);
        let out = down(&mut c, 2);
        assert_pooled(&out, &c, &[(3, 10), (4, 10)]);
        let out = down(&mut c, 3);
        assert!(!out.pool_changed);
        assert!(has_log(
            &out,
            Level::Error,
            "Could not depool server s3 because of too many down!"
        ));
        assert_eq!(pooled_hosts(&c), vec![host(3), host(4)]);
        assert_eq!(c.pooled_down(), vec![host(3)]);
        assert_eq!(c.could_not_depool_total(), 1);
        assert!(!c.can_depool());
    }

    #[test]
    fn repool_depools_waiting_pooled_down_servers() {
        let mut c = coordinator(4, 0.5, 1);
        for n in 1..=3 {
            down(&mut c, n);
        }
        assert_eq!(c.pooled_down(), vec![host(3)]);
        let out = up(&mut c, 1);
        assert_pooled(&out, &c, &[(1, 10), (4, 10)]);
        assert!(has_log(
            &out,
            Level::Info,
            "Server s1 (enabled/up/not pooled) is up"
        ));
        assert!(c.pooled_down().is_empty());
        assert_eq!(pooled_hosts(&c), vec![host(1), host(4)]);
    }

    #[test]
    fn pooled_down_server_coming_back_is_left_pooled() {
        let mut c = coordinator(2, 1.0, 1);
        let out = down(&mut c, 1);
        assert!(!out.pool_changed);
        assert_eq!(c.pooled_down(), vec![host(1)]);
        let out = up(&mut c, 1);
        assert!(!out.pool_changed);
        assert_eq!(c.pooled(), pool(&[(1, 10), (2, 10)]));
        assert!(has_log(
            &out,
            Level::Info,
            "Leaving previously pooled but down server s1 pooled"
        ));
        assert!(c.pooled_down().is_empty());
        assert!(c.server("s1").is_some_and(|s| s.up && s.pooled));
    }

    #[test]
    fn new_config_force_pools_to_meet_the_threshold() {
        let mut c = coordinator(4, 0.5, 1);
        down(&mut c, 1);
        down(&mut c, 2);
        // Two up servers are removed: 2 servers left, both down and not pooled.
        let out = c.apply_server_list(vec![upd(1, 10, true), upd(2, 10, true)]);
        assert_pooled(&out, &c, &[(1, 10)]);
        assert_eq!(out.stop_monitors, vec![host(3), host(4)]);
        assert!(has_log(
            &out,
            Level::Info,
            "Removing server s3 (no longer found"
        ));
        assert_eq!(pooled_hosts(&c), vec![host(1)]);
        assert_eq!(c.pooled_down(), vec![host(1)]);
        // When s2 comes up, s1 can finally go.
        let out = up(&mut c, 2);
        assert_pooled(&out, &c, &[(2, 10)]);
        assert!(c.pooled_down().is_empty());
    }

    #[test]
    fn unmeetable_threshold_is_logged_as_critical() {
        let mut c = Coordinator::new(1.0, 1);
        let out = c.apply_server_list(vec![upd(1, 10, true), upd(2, 10, false)]);
        assert_pooled(&out, &c, &[(1, 10)]);
        let critical = out
            .logs
            .iter()
            .find(|l| l.level == Level::Error && l.text.starts_with("CRITICAL:"))
            .expect("critical line");
        assert!(critical.text.contains("only 1 of 2 servers can be pooled"));
    }

    #[test]
    fn disabled_server_is_depooled_even_when_the_threshold_forbids_depools() {
        let mut c = coordinator(2, 1.0, 1);
        assert!(!c.can_depool() || c.servers().all(|s| s.up));
        let mut l = list(2);
        l[0].enabled = false;
        let out = c.apply_server_list(l);
        assert_pooled(&out, &c, &[(2, 10)]);
        assert!(c
            .server("s1")
            .is_some_and(|s| !s.pooled && s.up && !s.enabled));
        // Only s2 can be pooled: not enough for 1.0, which is critical.
        assert!(out.logs.iter().any(|l| l.text.starts_with("CRITICAL:")));
    }

    #[test]
    fn disabling_a_pooled_down_server_takes_it_out_of_pooled_down() {
        let mut c = coordinator(2, 1.0, 1);
        down(&mut c, 1);
        assert_eq!(c.pooled_down(), vec![host(1)]);
        let mut l = list(2);
        l[0].enabled = false;
        let out = c.apply_server_list(l);
        assert_pooled(&out, &c, &[(2, 10)]);
        assert!(c.pooled_down().is_empty());
    }

    #[test]
    fn reenabled_server_is_pooled_again_when_its_monitors_are_up() {
        let mut c = coordinator(3, 0.5, 1);
        let mut l = list(3);
        l[0].enabled = false;
        l[1].enabled = false;
        c.apply_server_list(l);
        up(&mut c, 1); // s1 up while disabled: stays out of the pool
        down(&mut c, 2);
        assert_eq!(pooled_hosts(&c), vec![host(3)]);
        let out = c.apply_server_list(list(3));
        assert_pooled(&out, &c, &[(1, 10), (3, 10)]);
        assert!(c
            .server("s2")
            .is_some_and(|s| !s.up && !s.pooled && s.enabled));
        // s2 comes up: pooled.
        let out = up(&mut c, 2);
        assert_pooled(&out, &c, &[(1, 10), (2, 10), (3, 10)]);
    }

    #[test]
    fn reenabled_server_without_monitor_results_is_not_pooled() {
        let mut c = coordinator(3, 0.0, 1);
        let mut l = list(3);
        l[0].enabled = false;
        c.apply_server_list(l);
        let out = c.apply_server_list(list(3));
        assert!(!out.pool_changed);
        assert_eq!(c.pooled(), pool(&[(2, 10), (3, 10)]));
        assert!(c.server("s1").is_some_and(|s| !s.up && !s.pooled));
    }

    #[test]
    fn reenabled_server_without_monitors_is_pooled() {
        let mut c = coordinator(2, 0.5, 0);
        let mut l = list(2);
        l[0].enabled = false;
        let out = c.apply_server_list(l);
        assert_pooled(&out, &c, &[(2, 10)]);
        let out = c.apply_server_list(list(2));
        assert_pooled(&out, &c, &[(1, 10), (2, 10)]);
    }

    #[test]
    fn removed_server_is_depooled_and_its_monitors_stopped() {
        let mut c = coordinator(3, 0.5, 1);
        let out = c.apply_server_list(list(2));
        assert_pooled(&out, &c, &[(1, 10), (2, 10)]);
        assert_eq!(out.stop_monitors, vec![host(3)]);
        assert!(has_log(
            &out,
            Level::Info,
            "Removing server s3 (no longer found in new configuration)"
        ));
        assert!(c.server("s3").is_none());
        assert_eq!(c.monitor_result("s3", 0, false, "x"), Outcome::default());
    }

    #[test]
    fn removed_pooled_down_server_leaves_pooled_down() {
        let mut c = coordinator(2, 1.0, 1);
        down(&mut c, 2);
        assert_eq!(c.pooled_down(), vec![host(2)]);
        let out = c.apply_server_list(list(1));
        assert_pooled(&out, &c, &[(1, 10)]);
        assert!(c.pooled_down().is_empty());
    }

    #[test]
    fn weight_change_edits_only_pooled_servers() {
        let mut c = coordinator(3, 0.0, 1);
        down(&mut c, 2);
        let mut l = list(3);
        l[2].enabled = false;
        c.apply_server_list(l.clone());
        for u in &mut l {
            u.weight = 20;
        }
        let out = c.apply_server_list(l);
        assert_pooled(&out, &c, &[(1, 20)]);
        assert!(c.servers().all(|s| s.weight == 20));
        // The new weight is used when s2 comes back.
        let out = up(&mut c, 2);
        assert_pooled(&out, &c, &[(1, 20), (2, 20)]);
    }

    #[test]
    fn unchanged_list_changes_nothing() {
        let mut c = coordinator(3, 0.5, 1);
        down(&mut c, 1);
        let before = c.pooled();
        let out = c.apply_server_list(list(3));
        assert!(!out.pool_changed);
        assert_eq!(c.pooled(), before);
        assert!(out.logs.is_empty());
        assert!(out.start_monitors.is_empty() && out.stop_monitors.is_empty());
    }

    #[test]
    fn server_is_up_only_when_all_its_monitors_are() {
        let mut c = coordinator(2, 0.0, 2);
        let out = c.monitor_result("s1", 0, false, "a");
        assert_pooled(&out, &c, &[(2, 10)]);
        assert!(!c.monitor_result("s1", 1, false, "b").pool_changed);
        let out = c.monitor_result("s1", 0, true, "");
        assert!(!out.pool_changed);
        let s1 = c.server("s1").expect("s1");
        assert!(!s1.up);
        assert_eq!(s1.text_status(), "enabled/partially up/not pooled");
        let out = c.monitor_result("s1", 1, true, "");
        assert_pooled(&out, &c, &[(1, 10), (2, 10)]);
        assert!(c.server("s1").is_some_and(|s| s.up && s.pooled));
        // One of two going down is enough.
        let out = c.monitor_result("s1", 1, false, "c");
        assert_pooled(&out, &c, &[(2, 10)]);
    }

    #[test]
    fn repeated_equal_results_change_nothing_but_counters() {
        let mut c = coordinator(2, 0.0, 1);
        down(&mut c, 1);
        let before = c.server("s1").cloned().expect("s1");
        let out = c.monitor_result("s1", 0, false, "another reason");
        assert_eq!(out, Outcome::default());
        let after = c.server("s1").expect("s1");
        assert_eq!(after.monitors[0].down_results, 2);
        assert_eq!(after.monitors[0].last_reason.as_deref(), Some("timeout"));
        assert_eq!(after.monitors[0].down_transitions, 0);
        let mut expected = before;
        expected.monitors[0].down_results = 2;
        assert_eq!(after, &expected);
    }

    #[test]
    fn transitions_are_counted_but_first_results_are_not() {
        let mut c = coordinator(1, 0.0, 1);
        up(&mut c, 1);
        up(&mut c, 1);
        down(&mut c, 1);
        up(&mut c, 1);
        down(&mut c, 1);
        let m = &c.server("s1").expect("s1").monitors[0];
        assert_eq!((m.up_results, m.down_results), (3, 2));
        assert_eq!((m.up_transitions, m.down_transitions), (1, 2));
        assert_eq!(m.up, Some(false));
    }

    #[test]
    fn first_result_up_on_a_new_server_changes_nothing() {
        let mut c = coordinator(1, 0.0, 1);
        let out = up(&mut c, 1);
        assert!(!out.pool_changed && out.logs.is_empty());
        assert!(c.server("s1").is_some_and(|s| s.up && s.pooled));
    }

    #[test]
    fn first_result_down_on_a_new_server_depools_it() {
        let mut c = coordinator(2, 0.5, 1);
        let out = c.monitor_result("s1", 0, false, "connection refused");
        assert_pooled(&out, &c, &[(2, 10)]);
        assert!(has_log(
            &out,
            Level::Error,
            "reports server s1 (enabled/up/pooled) down: connection refused"
        ));
        assert_eq!(out.logs[0].host.as_deref(), Some("s1"));
        let m = &c.server("s1").expect("s1").monitors[0];
        assert_eq!(m.down_transitions, 0);
        assert_eq!(m.last_reason.as_deref(), Some("connection refused"));
    }

    #[test]
    fn unresolved_server_is_never_pooled() {
        let mut c = Coordinator::new(1.0, 1);
        let mut l = list(2);
        unresolvable(&mut l, 1);
        let out = c.apply_server_list(l.clone());
        assert_pooled(&out, &c, &[(1, 10)]);
        assert_eq!(out.start_monitors, vec![host(1)]);
        assert!(has_log(
            &out,
            Level::Error,
            "Could not resolve server s2 (no such name)"
        ));
        let s2 = c.server("s2").expect("s2");
        assert!(!s2.ready && !s2.up && !s2.pooled);
        assert_eq!(s2.unresolved.as_deref(), Some("no such name"));
        assert_eq!(s2.monitors.len(), 1);
        assert_eq!(c.unresolved(), vec![host(2)]);
        assert_eq!(c.addresses(), [ip(1)].into_iter().collect());
        // Results for it (a stale monitor) are ignored.
        assert_eq!(c.monitor_result("s2", 0, true, ""), Outcome::default());
        assert!(c.pooled().iter().all(|(a, _)| *a == ip(1)));
        // Another update, still unresolved for the same reason: not pooled,
        // and not logged again.
        let out = c.apply_server_list(l.clone());
        assert!(!out.pool_changed);
        assert!(
            !has_log(&out, Level::Error, "Could not resolve"),
            "{:?}",
            out.logs
        );
        assert_eq!(c.pooled(), pool(&[(1, 10)]));
        // A new reason is logged and kept.
        l[1].unresolved = Some("no answer".into());
        let out = c.apply_server_list(l);
        assert!(has_log(
            &out,
            Level::Error,
            "Could not resolve server s2 (no answer)"
        ));
        assert_eq!(
            c.server("s2").and_then(|s| s.unresolved.clone()).as_deref(),
            Some("no answer")
        );
    }

    #[test]
    fn server_resolved_later_is_handled_like_a_new_one() {
        let mut c = Coordinator::new(0.5, 1);
        let mut l = list(2);
        unresolvable(&mut l, 1);
        c.apply_server_list(l);
        let out = c.apply_server_list(list(2));
        assert_pooled(&out, &c, &[(1, 10), (2, 10)]);
        assert_eq!(out.start_monitors, vec![host(2)]);
        assert!(c
            .server("s2")
            .is_some_and(|s| s.ready && s.up && s.pooled && s.unresolved.is_none()));
        assert!(c.unresolved().is_empty());
        assert_eq!(c.addresses(), [ip(1), ip(2)].into_iter().collect());
    }

    #[test]
    fn a_failed_lookup_of_a_resolved_server_changes_nothing_but_its_reason() {
        let mut c = coordinator(2, 1.0, 1);
        up(&mut c, 1);
        up(&mut c, 2);
        let mut l = list(2);
        unresolvable(&mut l, 1);
        let out = c.apply_server_list(l);
        assert!(!out.pool_changed);
        assert!(out.stop_monitors.is_empty() && out.start_monitors.is_empty());
        assert!(has_log(
            &out,
            Level::Warn,
            "Could not resolve server s2 again (no such name); it keeps its address 10.0.0.2"
        ));
        let s2 = c.server("s2").expect("s2");
        assert!(s2.ready && s2.up && s2.pooled && s2.ip == Some(ip(2)));
        assert_eq!(s2.monitors[0].up, Some(true));
        assert_eq!(s2.unresolved.as_deref(), Some("no such name"));
        assert!(c.unresolved().is_empty(), "it has an address");
        // Resolving again (same address) clears the reason, quietly.
        let out = c.apply_server_list(list(2));
        assert!(!out.pool_changed && out.logs.is_empty(), "{out:?}");
        assert!(c.server("s2").is_some_and(|s| s.unresolved.is_none()));
    }

    #[test]
    fn changed_address_replaces_the_destination_and_restarts_monitors() {
        let mut c = coordinator(2, 0.5, 1);
        up(&mut c, 1);
        let mut l = list(2);
        l[0].ip = Some(ip(101));
        let out = c.apply_server_list(l);
        assert!(out.pool_changed);
        assert_eq!(c.pooled(), vec![(ip(101), 10), (ip(2), 10)]);
        assert_eq!(out.stop_monitors, vec![host(1)]);
        assert_eq!(out.start_monitors, vec![host(1)]);
        let s1 = c.server("s1").expect("s1");
        assert_eq!(s1.ip, Some(ip(101)));
        assert_eq!(s1.monitors, vec![MonitorState::default()]);
        assert!(s1.up && s1.pooled);
    }

    #[test]
    fn moved_pooled_down_server_that_can_now_be_depooled_gets_one_remove() {
        let mut c = coordinator(4, 0.5, 1);
        for n in 1..=3 {
            down(&mut c, n);
        }
        assert_eq!(c.pooled_down(), vec![host(3)]);
        let mut moved = upd(3, 10, true);
        moved.ip = Some(ip(103));
        let out = c.apply_server_list(vec![moved, upd(4, 10, true)]);
        assert_pooled(&out, &c, &[(4, 10)]);
        assert!(c.pooled_down().is_empty());
        assert_eq!(c.pooled(), vec![(ip(4), 10)]);
    }

    #[test]
    fn raising_the_threshold_force_pools_down_servers() {
        let mut c = coordinator(4, 0.0, 1);
        for n in 1..=3 {
            down(&mut c, n);
        }
        assert_eq!(pooled_hosts(&c), vec![host(4)]);
        let out = c.set_depool_threshold(0.75);
        assert_pooled(&out, &c, &[(1, 10), (2, 10), (4, 10)]);
        assert_eq!(c.pooled_down(), vec![host(1), host(2)]);
        assert_eq!(c.depool_threshold(), 0.75);
    }

    #[test]
    fn lowering_the_threshold_depools_waiting_servers() {
        let mut c = coordinator(4, 0.75, 1);
        for n in 1..=3 {
            down(&mut c, n);
        }
        assert_eq!(c.pooled_down(), vec![host(2), host(3)]);
        let out = c.set_depool_threshold(0.25);
        assert_pooled(&out, &c, &[(4, 10)]);
        assert!(c.pooled_down().is_empty());
        assert_eq!(pooled_hosts(&c), vec![host(4)]);
    }

    #[test]
    fn reset_monitors_forgets_results_but_keeps_pool_state() {
        let mut c = coordinator(2, 0.0, 1);
        down(&mut c, 1);
        c.reset_monitors(2);
        for s in c.servers() {
            assert_eq!(s.monitors, vec![MonitorState::default(); 2]);
        }
        assert!(c.server("s1").is_some_and(|s| !s.up && !s.pooled));
        assert!(c.server("s2").is_some_and(|s| s.up && s.pooled));
        c.monitor_result("s1", 0, true, "");
        assert!(c.server("s1").is_some_and(|s| !s.up));
        let out = c.monitor_result("s1", 1, true, "");
        assert_pooled(&out, &c, &[(1, 10), (2, 10)]);
    }

    #[test]
    fn unknown_host_or_monitor_index_is_ignored() {
        let mut c = coordinator(1, 0.0, 1);
        assert_eq!(c.monitor_result("nope", 0, false, ""), Outcome::default());
        assert_eq!(c.monitor_result("s1", 1, false, ""), Outcome::default());
        assert!(c.server("s1").is_some_and(|s| s.up && s.pooled));
    }

    #[test]
    fn server_without_monitors_stays_up_and_pooled() {
        let mut c = coordinator(1, 0.5, 0);
        assert_eq!(c.monitor_result("s1", 0, false, ""), Outcome::default());
        let s1 = c.server("s1").expect("s1");
        assert!(s1.up && s1.pooled);
        assert_eq!(s1.text_status(), "enabled/up/pooled");
    }

    #[test]
    fn duplicate_host_in_a_list_uses_the_last_entry() {
        let mut c = Coordinator::new(0.0, 1);
        let out = c.apply_server_list(vec![upd(1, 10, true), upd(1, 30, true)]);
        assert_pooled(&out, &c, &[(1, 30)]);
        assert_eq!(c.servers().count(), 1);
    }

    #[test]
    fn text_status_strings() {
        let mut c = coordinator(2, 0.0, 2);
        let status = |c: &Coordinator, h: &str| c.server(h).map(|s| s.text_status());
        assert_eq!(status(&c, "s1").as_deref(), Some("enabled/up/pooled"));
        c.monitor_result("s1", 0, false, "");
        assert_eq!(status(&c, "s1").as_deref(), Some("enabled/down/not pooled"));
        c.monitor_result("s1", 1, true, "");
        assert_eq!(
            status(&c, "s1").as_deref(),
            Some("enabled/partially up/not pooled")
        );
        let mut l = list(2);
        l[1].enabled = false;
        c.apply_server_list(l);
        assert_eq!(status(&c, "s2").as_deref(), Some("disabled/up/not pooled"));
        let mut c = coordinator(2, 1.0, 1);
        down(&mut c, 1);
        assert_eq!(status(&c, "s1").as_deref(), Some("enabled/down/pooled"));
    }

    #[test]
    fn can_depool_counts_disabled_and_unresolved_servers_in_the_total() {
        let mut c = Coordinator::new(0.5, 1);
        let mut l = list(4);
        l[2].enabled = false;
        unresolvable(&mut l, 3);
        c.apply_server_list(l);
        // 2 of 4 up and enabled: exactly at 0.5.
        assert!(c.can_depool());
        let out = down(&mut c, 1);
        assert!(!out.pool_changed);
        assert_eq!(c.pooled_down(), vec![host(1)]);
    }

    /// Checks the invariants and that `out.pool_changed` says whether the
    /// pooled destinations moved from `pool`, then sets `pool` to the new
    /// ones and replays `out`'s monitor changes on `monitored`. Returns how
    /// many pooled servers changed weight only (at the same address).
    fn check(
        c: &Coordinator,
        out: &Outcome,
        pool: &mut Pool,
        monitored: &mut BTreeSet<String>,
        ctx: &str,
    ) -> usize {
        let now = c.pool();
        assert_eq!(out.pool_changed, now != *pool, "{ctx}: pool_changed");
        let reweighted = now
            .iter()
            .filter(|(host, &(ip, weight))| {
                pool.get(*host)
                    .is_some_and(|&(i, w)| i == ip && w != weight)
            })
            .count();
        let mut expected: Vec<(String, (IpAddr, u32))> =
            now.iter().map(|(h, v)| (h.clone(), *v)).collect();
        expected.sort();
        assert_eq!(
            c.pooled(),
            expected.iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            "{ctx}: pooled() is the pooled servers in host order"
        );
        *pool = now;
        for host in &out.stop_monitors {
            assert!(monitored.remove(host), "{ctx}: stop unmonitored {host}");
        }
        for host in &out.start_monitors {
            assert!(monitored.insert(host.clone()), "{ctx}: start twice {host}");
        }

        let ready: BTreeSet<String> = c
            .servers()
            .filter(|s| s.ready)
            .map(|s| s.host.clone())
            .collect();
        assert_eq!(&ready, monitored, "{ctx}: monitored set");

        let pooled_down: BTreeSet<String> = c.pooled_down().into_iter().collect();
        for s in c.servers() {
            assert!(!s.pooled || (s.enabled && s.ready), "{ctx}: P0 {s:?}");
            assert!(s.pooled || !s.enabled || !s.up, "{ctx}: P1 {s:?}");
            assert!(!s.up || s.ready, "{ctx}: up but not ready {s:?}");
            assert_eq!(s.ready, s.ip.is_some(), "{ctx}: ready/ip {s:?}");
            assert_eq!(
                pooled_down.contains(&s.host),
                s.pooled && !s.up,
                "{ctx}: pooled-down membership {s:?}"
            );
        }
        assert!(
            c.pooled_down().windows(2).all(|w| w[0] < w[1]),
            "{ctx}: pooled_down sorted"
        );
        if c.can_depool() {
            assert!(pooled_down.is_empty(), "{ctx}: can depool but did not");
        }
        reweighted
    }

    #[test]
    fn randomized_operations_keep_the_invariants() {
        let mut rng = fastrand::Rng::with_seed(0x05ee_dba1);
        let thresholds = [0.0, 0.25, 0.5, 0.7, 1.0];
        let mut monitor_count = 2;
        let mut c = Coordinator::new(0.5, monitor_count);
        let mut pool = Pool::new();
        let mut monitored = BTreeSet::new();
        // How often interesting situations came up, to show the test reaches them.
        let (mut edits, mut moves, mut pooled_down_seen) = (0, 0, 0);
        for step in 0..20_000 {
            let ctx = format!("step {step}");
            let roll = rng.u8(0..100);
            let out = if roll < 8 {
                let generation = rng.u8(0..3);
                let mut l = Vec::new();
                for n in 0..8u8 {
                    if rng.u8(0..10) < 8 {
                        let ip = (rng.u8(0..10) > 0)
                            .then(|| IpAddr::V4(Ipv4Addr::new(10, generation, 0, n)));
                        l.push(ServerUpdate {
                            host: host(n),
                            unresolved: ip.is_none().then(|| "no answer".to_string()),
                            ip,
                            weight: rng.u32(1..4),
                            enabled: rng.u8(0..10) < 8,
                        });
                    }
                }
                c.apply_server_list(l)
            } else if roll < 11 {
                c.set_depool_threshold(thresholds[rng.usize(..thresholds.len())])
            } else if roll < 13 {
                monitor_count = rng.usize(0..4);
                c.reset_monitors(monitor_count);
                Outcome::default()
            } else {
                let h = host(rng.u8(0..9));
                c.monitor_result(&h, rng.usize(0..monitor_count + 1), rng.bool(), "random")
            };
            edits += check(&c, &out, &mut pool, &mut monitored, &ctx);
            moves += out
                .stop_monitors
                .iter()
                .filter(|h| out.start_monitors.contains(h))
                .count();
            if !c.pooled_down().is_empty() {
                pooled_down_seen += 1;
            }
            if roll < 11 {
                // After a list or threshold change the threshold is met, or
                // every server that can be pooled is.
                let pooled = c.servers().filter(|s| s.pooled).count();
                let total = c.servers().count();
                let poolable = c.servers().all(|s| s.pooled || !s.enabled || !s.ready);
                assert!(
                    pooled as f64 >= total as f64 * c.depool_threshold() || poolable,
                    "{ctx}: threshold not enforced"
                );
            }
            for s in c.servers() {
                assert_eq!(s.monitors.len(), monitor_count, "{ctx}: monitor count");
            }
        }
        assert!(edits > 0 && moves > 0 && pooled_down_seen > 100);
        assert!(c.could_not_depool_total() > 10);
    }
}
