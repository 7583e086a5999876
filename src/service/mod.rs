//! The service thread: one per LVS service, the thin shell around its
//! Coordinator.
//!
//! It owns the service's Coordinator, its monitor handles, its server-list
//! source, and the check scheduler of its scheduled monitors (ProxyFetch,
//! RunCommand, DNSQuery): a timer heap of due checks
//! ([`monitor::scheduler::Schedule`]) that it hands, when due, to the
//! service's elastic worker pool ([`monitor::pool::Workers`]). It waits on
//! four channels at once, with the next due check as its timeout: control
//! (reload, stop), server lists from the source thread, reports of the
//! dedicated monitors (IdleConnection, UDP) and checks finished by the
//! workers. Every decision comes
//! from the Coordinator; this thread carries it out: writes the log lines,
//! starts and stops monitors, sends the service's complete desired IPVS state
//! to the IpvsWriter (with the servers it cannot account for because their
//! names do not resolve, whose adopted destinations the writer keeps),
//! publishes a snapshot for the instrumentation server, and keeps the
//! service's `pybal_service_*` / `pybal_monitor_*` metrics (`pool_metrics`),
//! removing a server's series when its monitors stop.
//!
//! A reload that renames the section (same protocol, IP and port) hands this
//! thread the section under its new name: the IPVS service is renamed in the
//! writer (no command), server state carries over, and the source and
//! monitor threads are restarted under the new name (monitor results so far
//! are kept). A source that replaces another (changed `config`, or a
//! rename) must yield servers before it can take the service's away.

pub(crate) mod coordinator;
pub(crate) mod pool_metrics;

use crate::config::ServiceConfig;
use crate::ipvs::hold::Unresolved;
use crate::ipvs::writer::WriterRequest;
use crate::ipvs::{Dest, ServiceKey, ServiceTable, VirtualService};
use crate::monitor::check::Resource;
use crate::monitor::pool::{Finished, Workers};
use crate::monitor::scheduler::Schedule;
use crate::monitor::{
    self, CheckError, CheckKey, CheckOutcome, MonitorHandle, MonitorReport, MonitorTarget,
    ScheduledMonitor, Step,
};
use crate::service::coordinator::{Coordinator, Outcome};
use crate::source::{self, ServerList, SourceHandle};
use crate::status::resources;
use crate::status::snapshot::{ServiceSnapshot, SnapshotStore};
use crossbeam_channel::{select, Receiver, Sender};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Longest delay before monitor counters reach the published snapshot.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// The first checks of a server's scheduled monitors are spread over this
/// much (or their interval, if shorter), so that a service's servers, all
/// started at once, are not checked in one burst every interval (a burst
/// would make the worker pool grow to its size).
const FIRST_CHECK_SPREAD: Duration = Duration::from_secs(1);

/// Due checks are handed to the workers this much before they are due, so
/// that checks due close together go in one batch: one wake-up of this
/// thread and of a worker for several checks instead of two per check (a
/// wake-up costs about as much CPU as a loopback check on a VM). The rate
/// stays the configured one: a check is due again an interval after it was
/// due, not after it ran.
const DISPATCH_AHEAD: Duration = Duration::from_millis(50);

/// A message from the daemon to a service thread.
#[derive(Debug)]
pub(crate) enum ServiceControl {
    /// Reload changed this service's section (or renamed it: the new
    /// section's name differs).
    Reconfigure(Box<ServiceConfig>),
    /// Stop; `remove_from_ipvs` when the service was removed from the config
    /// (at shutdown IPVS is left as it is so traffic keeps flowing).
    Stop { remove_from_ipvs: bool },
}

/// The daemon's end of a service thread.
pub(crate) struct ServiceHandle {
    control: Sender<ServiceControl>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ServiceHandle {
    pub(crate) fn reconfigure(&self, config: ServiceConfig) {
        let _ = self
            .control
            .send(ServiceControl::Reconfigure(Box::new(config)));
    }

    /// Stops the thread and waits for it (it only drops handles and sends
    /// one message, so this is quick).
    pub(crate) fn stop(mut self, remove_from_ipvs: bool) {
        let _ = self.control.send(ServiceControl::Stop { remove_from_ipvs });
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Starts the thread of service `config`.
pub(crate) fn spawn(
    config: ServiceConfig,
    writer: Sender<WriterRequest>,
    store: Arc<SnapshotStore>,
) -> std::io::Result<ServiceHandle> {
    let name = config.name.clone();
    let (control_tx, control_rx) = crossbeam_channel::unbounded();
    let (report_tx, report_rx) = crossbeam_channel::unbounded();
    let (list_tx, list_rx) = crossbeam_channel::unbounded();
    let (doorbell_tx, doorbell_rx) = crossbeam_channel::bounded(1);
    let source = source::spawn(
        &config.name,
        &config.source,
        config.source_options,
        config.ip,
        false,
        list_tx,
    )?;
    let mut coordinator = Coordinator::new(config.depool_threshold, config.monitors.len());
    coordinator.set_monitor_names(monitor_names(&config));
    let workers = Workers::new(&config.name, doorbell_tx);
    let runner = ServiceRunner {
        schedule: Schedule::default(),
        waiting: HashMap::new(),
        workers,
        workers_failing: false,
        coordinator,
        config,
        writer,
        store,
        servers: HashMap::new(),
        next_server_id: 1,
        report_tx,
        source,
        have_list: false,
        sent_unresolved: None,
        dirty: false,
        missing_monitors: false,
    };
    let thread = thread::Builder::new()
        .name(format!("service:{name}"))
        .spawn(move || runner.run(control_rx, list_rx, report_rx, doorbell_rx))?;
    Ok(ServiceHandle {
        control: control_tx,
        thread: Some(thread),
    })
}

fn monitor_names(config: &ServiceConfig) -> Vec<String> {
    config
        .monitors
        .iter()
        .map(|m| m.name().to_string())
        .collect()
}

/// Monitors running for one server instance.
struct RunningServer {
    id: u64,
    /// By monitor index; `None` where the monitor's thread could not be
    /// spawned (retried every tick).
    monitors: Vec<Option<MonitorHandle>>,
    /// Its scheduled monitors' keys in the schedule.
    scheduled: Vec<CheckKey>,
}

struct ServiceRunner {
    config: ServiceConfig,
    coordinator: Coordinator,
    writer: Sender<WriterRequest>,
    store: Arc<SnapshotStore>,
    /// Servers with running monitors, by host.
    servers: HashMap<String, RunningServer>,
    next_server_id: u64,
    report_tx: Sender<MonitorReport>,
    source: SourceHandle,
    /// False until the first server list arrived: until then the service's
    /// IPVS state is not touched (a restart must not empty a live pool).
    have_list: bool,
    /// What the writer was last told about servers without an address.
    sent_unresolved: Option<Unresolved>,
    /// Monitor counters changed since the last snapshot (published on the
    /// next tick rather than on every result).
    dirty: bool,
    /// Some monitor thread could not be spawned: retried on the next tick.
    missing_monitors: bool,
    /// When each scheduled check is due next.
    schedule: Schedule<CheckKey>,
    /// The scheduled monitors waiting for their next check (the others are
    /// on a worker).
    waiting: HashMap<CheckKey, ScheduledMonitor>,
    workers: Workers,
    /// A worker could not be spawned and none has been since (logged once).
    workers_failing: bool,
}

impl ServiceRunner {
    fn run(
        mut self,
        control: Receiver<ServiceControl>,
        mut lists: Receiver<ServerList>,
        reports: Receiver<MonitorReport>,
        doorbell: Receiver<()>,
    ) {
        log::info!(target: &self.config.name, "starting: {} {}:{} ({}), servers from {}",
            self.config.protocol, self.config.ip, self.config.port, self.config.scheduler, self.config.source);
        self.publish();
        let ticker = crossbeam_channel::tick(SNAPSHOT_INTERVAL);
        loop {
            let now = Instant::now();
            let (grow_at, grown) = self.workers.grow(now);
            self.workers_spawned(grown);
            let wakes = [self.schedule.next_deadline(), grow_at]
                .into_iter()
                .flatten()
                .fold(now + SNAPSHOT_INTERVAL, Instant::min);
            // Checks that finished since the last look come first (the only
            // place they are taken): they may be due again before `wakes`.
            let finished = self.workers.park(wakes);
            if !finished.is_empty() {
                self.on_finished(finished);
                self.run_due_checks();
                continue;
            }
            let timeout = wakes.saturating_duration_since(now);
            select! {
                recv(ticker) -> _ => {
                    if self.missing_monitors {
                        self.retry_monitors();
                    }
                    resources::tick(&self.store);
                    if self.dirty {
                        self.publish();
                    }
                    monitor::pool::set_metric(&self.config.name, self.workers.live());
                },
                recv(control) -> msg => match msg {
                    Ok(ServiceControl::Reconfigure(config)) => {
                        if let Some(new_lists) = self.reconfigure(*config) {
                            lists = new_lists;
                        }
                    }
                    Ok(ServiceControl::Stop { remove_from_ipvs }) => {
                        self.stop(remove_from_ipvs);
                        return;
                    }
                    Err(_) => {
                        self.stop(false);
                        return;
                    }
                },
                recv(lists) -> list => match list {
                    Ok(list) => {
                        let outcome = self.coordinator.apply_server_list(list);
                        // Only a list changes which servers have addresses.
                        let force = !self.have_list || self.unresolved_changed();
                        self.have_list = true;
                        self.carry_out(outcome, force);
                    }
                    Err(_) => {
                        // The source thread ended (it logged why); keep the last list.
                        lists = crossbeam_channel::never();
                    }
                },
                recv(reports) -> report => {
                    if let Ok(report) = report {
                        self.on_report(report);
                    }
                },
                // A finished check that cannot wait: taken at the top.
                recv(doorbell) -> _ => {},
                default(timeout) => {},
            }
            self.run_due_checks();
        }
    }

    /// Hands every check due now, or within [`DISPATCH_AHEAD`], to the
    /// worker pool.
    fn run_due_checks(&mut self) {
        let now = Instant::now();
        while let Some((key, due)) = self.schedule.pop_due(now + DISPATCH_AHEAD) {
            match self.waiting.remove(&key) {
                Some(job) => {
                    let ran = self.workers.run(job, due, now);
                    self.workers_spawned(ran);
                }
                None => self.schedule.remove(&key),
            }
        }
    }

    /// Says once when check workers cannot be spawned, and when they can again.
    fn workers_spawned(&mut self, result: std::io::Result<()>) {
        match result {
            Err(e) if !self.workers_failing => {
                self.workers_failing = true;
                log::error!(target: &self.config.name,
                    "cannot start a check worker thread: {e}; due checks wait for a free worker, retried every second");
            }
            Ok(()) if self.workers_failing => {
                self.workers_failing = false;
                log::info!(target: &self.config.name, "check worker threads start again");
            }
            _ => {}
        }
    }

    /// Workers finished these checks: each result counts, and each check is
    /// due again, unless its server was removed or restarted meanwhile (then
    /// both are dropped).
    fn on_finished(&mut self, finished: Vec<Finished>) {
        let now = Instant::now();
        for Finished { job, result, due } in finished {
            let key = job.key();
            if !self.schedule.finished(key, due, now) {
                continue;
            }
            let report = result.map(|checked| job.report(checked));
            self.waiting.insert(key, job);
            if let Some(report) = report {
                self.on_report(report);
            }
        }
    }

    fn on_report(&mut self, report: MonitorReport) {
        let current = self.servers.get(&report.host).map(|s| s.id);
        if current != Some(report.server_id) {
            return; // From monitors of a server instance that is gone.
        }
        let debug = log::max_level() >= log::LevelFilter::Debug;
        if let Some(config) = self.config.monitors.get(report.monitor).filter(|_| debug) {
            let target = crate::daemon::logging::monitor_target(&self.config.name, config.name());
            let status = self
                .coordinator
                .server(&report.host)
                .map(|s| s.text_status())
                .unwrap_or_default();
            log::debug!(target: &target, "{} ({status}): {} {}", report.host,
                if report.up() { "up:" } else { "down:" }, report.reason());
        }
        match &report.outcome {
            // rsbal's own shortage: no server changes state for it.
            CheckOutcome::Down(error) if error.is_local() => {
                let resource = error.resource().unwrap_or(Resource::Other);
                resources::local_failure(&self.store, resource, error.reason());
                return;
            }
            _ => resources::acquired(),
        }
        let before = self.monitor_state(&report.host, report.monitor);
        let outcome =
            self.coordinator
                .monitor_outcome(&report.host, report.monitor, &report.outcome);
        let after = self.monitor_state(&report.host, report.monitor);
        if let (Some(config), Some(effect)) = (
            self.config.monitors.get(report.monitor),
            pool_metrics::result_effect(&before, &after),
        ) {
            pool_metrics::record_result(&self.config.name, &report.host, config.name(), effect);
        }
        self.carry_out(outcome, false);
    }

    fn monitor_state(&self, host: &str, monitor: usize) -> coordinator::MonitorState {
        self.coordinator
            .server(host)
            .and_then(|s| s.monitors.get(monitor))
            .cloned()
            .unwrap_or_default()
    }

    /// Does what the coordinator decided. `force_ipvs` sends the desired IPVS
    /// state even when the pool did not change (first list, or the servers
    /// without an address changed).
    fn carry_out(&mut self, outcome: Outcome, force_ipvs: bool) {
        for line in &outcome.logs {
            log::log!(target: &self.config.name, line.level, "{}", line.text);
        }
        for host in &outcome.stop_monitors {
            self.stop_server(host);
        }
        let stopped: Vec<&str> = outcome.stop_monitors.iter().map(String::as_str).collect();
        pool_metrics::forget_servers(&self.config.name, &stopped);
        for host in &outcome.start_monitors {
            self.start_monitors(host);
        }
        if force_ipvs || outcome.pool_changed {
            self.send_ipvs_state();
        }
        if outcome == Outcome::default() {
            // Only counters moved: the next tick publishes them.
            self.dirty = true;
        } else {
            self.publish();
        }
    }

    /// Stops a server's monitors: drops their handles (stop channel, waker)
    /// and cancels its scheduled checks (a result in flight is dropped).
    fn stop_server(&mut self, host: &str) {
        if let Some(server) = self.servers.remove(host) {
            for key in &server.scheduled {
                self.schedule.remove(key);
                self.waiting.remove(key);
            }
        }
    }

    /// Stops every server's monitors.
    fn stop_all_servers(&mut self) {
        self.servers.clear();
        self.schedule.clear();
        self.waiting.clear();
        self.workers.clear_queue();
    }

    fn start_monitors(&mut self, host: &str) {
        self.stop_server(host);
        let Some((ip, weight)) = self
            .coordinator
            .server(host)
            .and_then(|s| Some((s.ip?, s.weight)))
        else {
            return;
        };
        let id = self.next_server_id;
        self.next_server_id += 1;
        let now = Instant::now();
        let mut monitors = Vec::with_capacity(self.config.monitors.len());
        let mut scheduled = Vec::new();
        for index in 0..self.config.monitors.len() {
            let started = self.spawn_monitor(host, ip, weight, id, index, now);
            monitors.push(started.map(|(handle, key)| {
                scheduled.extend(key);
                handle
            }));
        }
        self.servers.insert(
            host.to_string(),
            RunningServer {
                id,
                monitors,
                scheduled,
            },
        );
    }

    /// Starts monitor `index` of server instance `id`: a dedicated monitor's
    /// thread, or a scheduled monitor's first check (spread over
    /// [`FIRST_CHECK_SPREAD`] from `now`), returning its key in the
    /// schedule. `None` when it cannot be started (rsbal's own shortage:
    /// said once per episode, retried on the next tick, and no server
    /// changes state).
    fn spawn_monitor(
        &mut self,
        host: &str,
        ip: IpAddr,
        weight: u32,
        id: u64,
        index: usize,
        now: Instant,
    ) -> Option<(MonitorHandle, Option<CheckKey>)> {
        let config = self.config.monitors.get(index)?;
        let target = MonitorTarget {
            service: self.config.name.clone(),
            host: host.to_string(),
            ip,
            port: self.config.port,
            weight,
        };
        let spawned = crate::daemon::limits::room_for_a_thread()
            .and_then(|()| monitor::spawn(config, target, id, index, self.report_tx.clone()));
        match spawned {
            Ok(started) => {
                let key = started.scheduled.map(|job| {
                    let key = job.key();
                    let spread = job.interval.min(FIRST_CHECK_SPREAD);
                    let first = now + spread.mul_f64(fastrand::f64());
                    self.schedule.add(key, job.interval, first);
                    self.waiting.insert(key, job);
                    key
                });
                Some((started.handle, key))
            }
            Err(e) => {
                let reason = format!("cannot start {} monitor for {host}: {e}", config.name());
                let resource = match CheckError::io(Step::Acquire, &e, reason.clone()).resource() {
                    Some(Resource::Other) | None => Resource::Tasks,
                    Some(resource) => resource,
                };
                resources::local_failure(&self.store, resource, &reason);
                self.missing_monitors = true;
                None
            }
        }
    }

    /// Starts the monitors that could not be started before.
    fn retry_monitors(&mut self) {
        self.missing_monitors = false;
        let missing: Vec<(String, u64, usize)> = self
            .servers
            .iter()
            .flat_map(|(host, running)| {
                running
                    .monitors
                    .iter()
                    .enumerate()
                    .filter(|(_, handle)| handle.is_none())
                    .map(move |(index, _)| (host.clone(), running.id, index))
            })
            .collect();
        for (host, id, index) in missing {
            let Some((ip, weight)) = self
                .coordinator
                .server(&host)
                .and_then(|s| Some((s.ip?, s.weight)))
            else {
                continue;
            };
            let Some((handle, key)) =
                self.spawn_monitor(&host, ip, weight, id, index, Instant::now())
            else {
                return; // Still out: the next tick tries again.
            };
            resources::acquired();
            if let Some(running) = self.servers.get_mut(&host) {
                if let Some(slot) = running.monitors.get_mut(index) {
                    *slot = Some(handle);
                }
                running.scheduled.extend(key);
            }
        }
    }

    fn restart_all_monitors(&mut self) {
        self.stop_all_servers();
        let hosts: Vec<&str> = self
            .coordinator
            .servers()
            .map(|s| s.host.as_str())
            .collect();
        pool_metrics::forget_servers(&self.config.name, &hosts);
        self.coordinator.reset_monitors(self.config.monitors.len());
        self.coordinator
            .set_monitor_names(monitor_names(&self.config));
        self.start_every_monitor();
    }

    /// Starts the monitors of every ready server (none may be running).
    fn start_every_monitor(&mut self) {
        let hosts: Vec<String> = self
            .coordinator
            .servers()
            .filter(|s| s.ready)
            .map(|s| s.host.clone())
            .collect();
        for host in hosts {
            self.start_monitors(&host);
        }
    }

    fn key(&self) -> ServiceKey {
        ServiceKey {
            protocol: self.config.protocol,
            addr: SocketAddr::new(self.config.ip, self.config.port),
        }
    }

    /// What the writer must know about servers without an address.
    fn unresolved(&self) -> Unresolved {
        Unresolved {
            hosts: self.coordinator.unresolved(),
            known: self.coordinator.addresses(),
        }
    }

    /// The writer was told something else than [`Self::unresolved`].
    fn unresolved_changed(&self) -> bool {
        self.sent_unresolved.as_ref() != Some(&self.unresolved())
    }

    fn send_ipvs_state(&mut self) {
        let port = self.config.port;
        let unresolved = self.unresolved();
        self.sent_unresolved = Some(unresolved.clone());
        let table = ServiceTable {
            service: VirtualService {
                key: self.key(),
                scheduler: self.config.scheduler.clone(),
                ops: self.config.ops,
            },
            dests: self
                .coordinator
                .pooled()
                .into_iter()
                .map(|(ip, weight)| {
                    let dest = Dest {
                        weight,
                        forwarding: self.config.forwarding,
                    };
                    (SocketAddr::new(ip, port), dest)
                })
                .collect(),
        };
        let _ = self.writer.send(WriterRequest::SetService {
            name: self.config.name.clone(),
            table,
            unresolved,
        });
    }

    /// Applies a changed (or renamed) section; returns the new list channel
    /// when the source was replaced.
    fn reconfigure(&mut self, new: ServiceConfig) -> Option<Receiver<ServerList>> {
        let old = std::mem::replace(&mut self.config, new);
        let renamed = old.name != self.config.name;
        if renamed {
            self.rename(&old.name);
        }
        let new = &self.config;
        log::info!(target: &new.name, "applying changed configuration");
        let mut new_lists = None;
        if old.source != new.source
            || old.source_options != new.source_options
            || old.ip.is_ipv6() != new.ip.is_ipv6()
            || renamed
        {
            // The service keeps its servers until the new source has some.
            let inherited = self.coordinator.servers().next().is_some();
            let (tx, rx) = crossbeam_channel::unbounded();
            match source::spawn(
                &new.name,
                &new.source,
                new.source_options,
                new.ip,
                inherited,
                tx,
            ) {
                Ok(source) => {
                    self.source = source;
                    new_lists = Some(rx);
                }
                Err(e) => {
                    log::error!(target: &new.name, "cannot start server list source {}: {e}", new.source)
                }
            }
        }
        if old.monitors != self.config.monitors
            || old.port != self.config.port
            || old.ip != self.config.ip
        {
            self.restart_all_monitors();
        } else if renamed {
            // Under the new name (log target, metric labels); the results
            // so far are kept.
            self.servers.clear();
            self.start_every_monitor();
        }
        if old.depool_threshold != self.config.depool_threshold {
            let outcome = self
                .coordinator
                .set_depool_threshold(self.config.depool_threshold);
            self.carry_out(outcome, false);
        }
        let ipvs_changed = old.protocol != self.config.protocol
            || old.ip != self.config.ip
            || old.port != self.config.port
            || old.scheduler != self.config.scheduler
            || old.ops != self.config.ops
            || old.forwarding != self.config.forwarding;
        if ipvs_changed && self.have_list {
            self.send_ipvs_state();
        }
        self.publish();
        new_lists
    }

    /// The section was renamed from `old` (the config already has the new
    /// name): the writer, the published snapshot and the metrics follow.
    fn rename(&mut self, old: &str) {
        let name = &self.config.name;
        log::info!(target: name, "section [{old}] renamed to [{name}]: its IPVS service and server state carry over");
        let _ = self.writer.send(WriterRequest::RenameService {
            from: old.to_string(),
            to: name.clone(),
        });
        // The old name's monitors stop before its series are forgotten.
        self.servers.clear();
        self.store.remove(old);
        pool_metrics::forget_service(old);
    }

    fn stop(&mut self, remove_from_ipvs: bool) {
        self.stop_all_servers();
        if remove_from_ipvs {
            log::info!(target: &self.config.name, "service removed from the configuration");
            let _ = self.writer.send(WriterRequest::RemoveService {
                name: self.config.name.clone(),
            });
            self.store.remove(&self.config.name);
            pool_metrics::forget_service(&self.config.name);
        }
    }

    fn publish(&mut self) {
        self.dirty = false;
        let c = &self.config;
        let snapshot = ServiceSnapshot {
            name: c.name.clone(),
            protocol: c.protocol,
            ip: c.ip,
            port: c.port,
            scheduler: c.scheduler.clone(),
            depool_threshold: self.coordinator.depool_threshold(),
            can_depool: self.coordinator.can_depool(),
            pooled_down: self.coordinator.pooled_down(),
            could_not_depool_total: self.coordinator.could_not_depool_total(),
            monitor_names: monitor_names(c),
            servers: self.coordinator.servers().cloned().collect(),
        };
        pool_metrics::publish(&snapshot);
        self.store.publish(snapshot);
    }
}
