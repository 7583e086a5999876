//! The IpvsWriter thread: the only place that changes the kernel's IPVS table.
//!
//! Service threads send the complete desired state of their service; the
//! writer owns the *applied* table (what it believes the kernel has, read from
//! the kernel at start so existing services are adopted, never deleted and
//! re-created) and the *desired* table. Requests that queue up while a batch
//! is running are coalesced, the smallest diff is computed (`ipvs::diff`) and
//! handed to the backend (`ipvs::backend`: netlink or ipvsadm) in one batch.
//! Every `ipvs-reconcile-interval` it re-reads the kernel and repairs drift in
//! rsbal's services (`ipvs::reconcile`). Only services named in the config
//! are ever touched. While a service has servers whose names never
//! resolved, the destinations the writer adopted for it that no server of
//! the service accounts for are kept (`ipvs::hold`): a failed lookup never
//! removes a destination. A renamed section keeps its virtual service
//! (`RenameService`: no command).
//!
//! Metrics: `rsbal_ipvs_commands_applied_total` and
//! `rsbal_ipvs_commands_failed_total` count the commands of batches the
//! backend accepted or rejected (a dry run applies nothing);
//! `rsbal_ipvs_drift_repairs_total{kind}` counts drift found by
//! reconciliation.

pub(crate) use super::backend::IpvsBackend;
use super::backend::{self, BackendChoice};
use super::diff::{apply, diff_service};
use super::error::IpvsError;
use super::hold::{self, Unresolved};
use super::reconcile;
use super::{Dest, IpvsCommand, ServiceKey, ServiceTable, Table};
use crate::status::metrics;
use crossbeam_channel::{Receiver, Sender};
use prometheus::IntCounterVec;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::thread;
use std::time::{Duration, Instant};

struct CommandCounters {
    applied: prometheus::IntCounter,
    failed: prometheus::IntCounter,
}

static COMMANDS: LazyLock<CommandCounters> = LazyLock::new(|| {
    let counter = |name: &str, help: &str| {
        metrics::int_counter_vec(name, help, &[]).with_label_values(&[] as &[&str])
    };
    CommandCounters {
        applied: counter(
            "rsbal_ipvs_commands_applied_total",
            "IPVS commands applied by the IpvsWriter",
        ),
        failed: counter(
            "rsbal_ipvs_commands_failed_total",
            "IPVS commands in batches the IPVS backend rejected",
        ),
    }
});

/// Makes the IPVS counters visible (at 0) before the first batch.
pub(crate) fn declare_metrics() {
    LazyLock::force(&COMMANDS);
    LazyLock::force(&DRIFT_REPAIRS);
}

const LOG_TARGET: &str = "IpvsWriter";

/// Drift repaired by reconciliation, by kind.
static DRIFT_REPAIRS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    metrics::int_counter_vec(
        "rsbal_ipvs_drift_repairs_total",
        "Differences between rsbal's services and the kernel's IPVS table found by reconciliation.",
        &["kind"],
    )
});

/// A request to the writer.
#[derive(Debug)]
pub(crate) enum WriterRequest {
    /// The complete desired state of the rsbal service `name`, and the
    /// servers it cannot account for (their names do not resolve).
    SetService {
        name: String,
        table: ServiceTable,
        unresolved: Unresolved,
    },
    /// The service `name` was removed from the config: delete it from IPVS.
    RemoveService { name: String },
    /// Reload renamed the section `from` (same protocol, IP and port): the
    /// same virtual service, now under the name `to`.
    RenameService { from: String, to: String },
    /// Answered once every request sent before it has been applied.
    Flush(Sender<()>),
    /// Reload changed `[global] ipvs-backend` or `ipvsadm`.
    SetBackend(BackendChoice),
    /// Reload changed `[global] ipvs-reconcile-interval` (zero = off).
    SetReconcileInterval(Duration),
}

/// How the writer treats the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// Apply changes.
    Apply,
    /// `-n`: log every command, change nothing.
    DryRun,
}

/// The writer's state; runs on its own thread via [`spawn`].
pub(crate) struct IpvsWriter {
    backend: Box<dyn IpvsBackend>,
    mode: WriteMode,
    /// How often to reconcile; zero = never.
    reconcile_every: Duration,
    /// What the kernel has, as far as the writer knows.
    applied: Table,
    /// What each rsbal service wants, by service name (with the
    /// destinations kept for it, `held`).
    desired: BTreeMap<String, ServiceTable>,
    /// Per service, adopted destinations kept for its unresolved servers.
    held: BTreeMap<String, BTreeMap<SocketAddr, Dest>>,
    /// Keys of services that were removed or moved and must go from the kernel.
    retired: BTreeSet<ServiceKey>,
}

impl IpvsWriter {
    pub(crate) fn new(
        backend: Box<dyn IpvsBackend>,
        mode: WriteMode,
        reconcile_every: Duration,
    ) -> Self {
        IpvsWriter {
            backend,
            mode,
            reconcile_every,
            applied: Table::new(),
            desired: BTreeMap::new(),
            held: BTreeMap::new(),
            retired: BTreeSet::new(),
        }
    }

    /// Reads the kernel's table so that existing services are adopted.
    /// A table that could not be read is never taken for an empty one:
    /// `applied` then stays as it was (empty at start, which the log says),
    /// and the error is returned.
    pub(crate) fn load_kernel_table(&mut self) -> Result<(), IpvsError> {
        match self.backend.read() {
            Ok(table) => {
                log::info!(target: LOG_TARGET, "read {} existing IPVS service(s) via {}", table.len(), self.backend.describe());
                self.applied = table;
                Ok(())
            }
            Err(e) => {
                let level = if self.mode == WriteMode::DryRun {
                    log::Level::Warn
                } else {
                    log::Level::Error
                };
                log::log!(target: LOG_TARGET, level, "cannot read the IPVS table ({e}); assuming it is empty");
                Err(e)
            }
        }
    }

    /// Takes one request into the desired state; returns a flush reply to send
    /// after the next sync.
    fn take(&mut self, req: WriterRequest) -> Option<Sender<()>> {
        match req {
            WriterRequest::SetService {
                name,
                table,
                unresolved,
            } => {
                let previous = self.desired.get(&name).map(|t| t.service.key);
                if previous.is_none() {
                    if let Some(existing) = self.applied.get(&table.service.key) {
                        log::info!(target: LOG_TARGET, "[{name}] adopting IPVS service {} with {} destination(s) already in the kernel",
                            table.service.key, existing.dests.len());
                    }
                }
                let table = self.hold(&name, previous, table, &unresolved);
                if let Some(old) = previous {
                    if old != table.service.key {
                        self.retired.insert(old);
                    }
                }
                self.retired.remove(&table.service.key);
                self.desired.insert(name, table);
                None
            }
            WriterRequest::RemoveService { name } => {
                self.held.remove(&name);
                if let Some(old) = self.desired.remove(&name) {
                    self.retired.insert(old.service.key);
                }
                None
            }
            WriterRequest::RenameService { from, to } => {
                if let Some(table) = self.desired.remove(&from) {
                    log::info!(target: LOG_TARGET, "[{to}] IPVS service {} renamed from [{from}]; unchanged", table.service.key);
                    self.desired.insert(to.clone(), table);
                }
                if let Some(held) = self.held.remove(&from) {
                    self.held.insert(to, held);
                }
                None
            }
            WriterRequest::Flush(reply) => Some(reply),
            WriterRequest::SetBackend(choice) => {
                self.backend = backend::open(&choice);
                None
            }
            WriterRequest::SetReconcileInterval(every) => {
                self.reconcile_every = every;
                None
            }
        }
    }

    /// `table` with the destinations kept for `name`'s unresolved servers:
    /// at first (or at a new key) the candidates are what the kernel has
    /// for the key, later what was kept so far (`ipvs::hold`).
    fn hold(
        &mut self,
        name: &str,
        previous: Option<ServiceKey>,
        table: ServiceTable,
        unresolved: &Unresolved,
    ) -> ServiceTable {
        let key = table.service.key;
        let was = self.held.remove(name).unwrap_or_default();
        let candidates = if previous == Some(key) {
            was.clone()
        } else {
            self.applied
                .get(&key)
                .map(|t| t.dests.clone())
                .unwrap_or_default()
        };
        let held = hold::held(&candidates, &table, unresolved);
        if held != was {
            if held.is_empty() {
                log::info!(target: LOG_TARGET, "[{name}] no destination is kept for unresolved servers any more");
            } else {
                let addrs: Vec<String> = held.keys().map(ToString::to_string).collect();
                log::warn!(target: LOG_TARGET, "[{name}] keeping {} destination(s) already in the kernel while {} server name(s) do not resolve ({}): {}",
                    held.len(), unresolved.hosts.len(), unresolved.hosts.join(", "), addrs.join(", "));
            }
        }
        let table = hold::with_held(table, &held);
        if !held.is_empty() {
            self.held.insert(name.to_string(), held);
        }
        table
    }

    /// The commands that make the kernel match the desired state.
    pub(crate) fn pending_commands(&self) -> Vec<IpvsCommand> {
        let mut commands = Vec::new();
        for key in &self.retired {
            commands.extend(diff_service(self.applied.get(key), None));
        }
        for table in self.desired.values() {
            commands.extend(diff_service(
                self.applied.get(&table.service.key),
                Some(table),
            ));
        }
        commands
    }

    /// Applies the pending commands; on failure re-reads the kernel and tries
    /// once more.
    pub(crate) fn sync(&mut self) {
        for attempt in 0..2 {
            let commands = self.pending_commands();
            if commands.is_empty() {
                self.retired.clear();
                return;
            }
            // One INFO line per batch; the commands at DEBUG.
            let dry = self.mode == WriteMode::DryRun;
            log::info!(target: LOG_TARGET, "{}{}", if dry { "dry-run, not running: " } else { "" },
                batch_summary(&commands));
            for cmd in &commands {
                if dry {
                    log::debug!(target: LOG_TARGET, "dry-run, not running: {}", self.backend.show(cmd))
                } else {
                    log::debug!(target: LOG_TARGET, "{}", self.backend.show(cmd))
                }
            }
            let result = match self.mode {
                WriteMode::DryRun => Ok(()),
                WriteMode::Apply => self.backend.apply(&commands),
            };
            let count = commands.len() as u64;
            match (&result, self.mode) {
                (Ok(()), WriteMode::Apply) => COMMANDS.applied.inc_by(count),
                (Err(_), _) => COMMANDS.failed.inc_by(count),
                (Ok(()), WriteMode::DryRun) => {}
            }
            match result {
                Ok(()) => {
                    for cmd in &commands {
                        apply(&mut self.applied, cmd);
                    }
                    self.retired.clear();
                    return;
                }
                Err(e) => {
                    log::error!(target: LOG_TARGET, "applying {} IPVS command(s) failed: {e}", commands.len());
                    if attempt == 0 {
                        self.before_retry(&e);
                    }
                }
            }
        }
    }

    /// After a failed batch: re-reads the kernel's table, so that the retry
    /// diffs against what the kernel has. A stale table (EEXIST, ENOENT,
    /// ESRCH: something else changed the kernel) is what the re-read
    /// repairs; after any other failure (EPERM, no answer, ipvsadm missing)
    /// the re-read is harmless and the retry shows whether the failure
    /// lasts. A failed re-read leaves `applied` as it was.
    fn before_retry(&mut self, failure: &IpvsError) {
        if failure.table_was_stale() {
            log::debug!(target: LOG_TARGET, "the kernel's table differs from what the writer applied");
        }
        log::info!(target: LOG_TARGET, "re-reading the IPVS table and retrying");
        // A failure is logged; the retry then diffs against `applied` as
        // it was.
        let _ = self.load_kernel_table();
    }

    /// Re-reads the kernel's table, logs every difference in rsbal's
    /// services and repairs it.
    pub(crate) fn reconcile(&mut self) {
        let kernel = match self.backend.read() {
            Ok(kernel) => kernel,
            Err(e) => {
                log::error!(target: LOG_TARGET, "reconcile: cannot read the IPVS table: {e}");
                return;
            }
        };
        let drift = reconcile::drift(&kernel, self.desired.values());
        if drift.is_empty() {
            log::debug!(target: LOG_TARGET, "reconcile: the kernel matches all {} service(s)", self.desired.len());
        }
        for d in &drift {
            log::warn!(target: LOG_TARGET, "reconcile: {d}");
            DRIFT_REPAIRS.with_label_values(&[d.kind()]).inc();
        }
        self.applied = kernel;
        self.sync();
    }

    /// When the next reconciliation is due; never in dry-run mode (the
    /// kernel never gets the changes, so all would look like drift).
    fn next_reconcile(&self) -> Option<Instant> {
        if self.mode == WriteMode::DryRun || self.reconcile_every.is_zero() {
            None
        } else {
            Some(Instant::now() + self.reconcile_every)
        }
    }

    /// The thread body: coalesce queued requests, sync, answer flushes;
    /// reconcile when due.
    pub(crate) fn run(mut self, requests: Receiver<WriterRequest>) {
        let mut next = self.next_reconcile();
        loop {
            let due = next.map_or_else(crossbeam_channel::never, crossbeam_channel::at);
            crossbeam_channel::select! {
                recv(requests) -> first => {
                    let Ok(first) = first else { break };
                    let every = self.reconcile_every;
                    let mut replies: Vec<Sender<()>> = Vec::new();
                    replies.extend(self.take(first));
                    while let Ok(more) = requests.try_recv() {
                        replies.extend(self.take(more));
                    }
                    self.sync();
                    for reply in replies {
                        let _ = reply.send(());
                    }
                    if self.reconcile_every != every {
                        next = self.next_reconcile();
                    }
                }
                recv(due) -> _ => {
                    self.reconcile();
                    next = self.next_reconcile();
                }
            }
        }
    }
}

/// Starts the writer thread; it reads the kernel's table first.
pub(crate) fn spawn(
    backend: Box<dyn IpvsBackend>,
    mode: WriteMode,
    reconcile_every: Duration,
) -> std::io::Result<(Sender<WriterRequest>, thread::JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut writer = IpvsWriter::new(backend, mode, reconcile_every);
    let handle = thread::Builder::new()
        .name("ipvs-writer".to_string())
        .spawn(move || {
            // A failure is logged; the writer starts from an empty table
            // (PyBal's behaviour).
            let _ = writer.load_kernel_table();
            writer.run(rx)
        })?;
    Ok((tx, handle))
}

/// One line for a batch: how many commands of each kind, over how many
/// services (`IPVS batch: 12 command(s) on 3 service(s): 10 dest(s) added,
/// 2 removed`).
fn batch_summary(commands: &[IpvsCommand]) -> String {
    use IpvsCommand::*;
    let mut counts = [0usize; 6];
    let mut services = BTreeSet::new();
    for cmd in commands {
        let (slot, key) = match cmd {
            AddService(s) => (0, s.key),
            EditService(s) => (1, s.key),
            DeleteService(k) => (2, *k),
            AddDest { service, .. } => (3, *service),
            EditDest { service, .. } => (4, *service),
            DeleteDest { service, .. } => (5, *service),
        };
        counts[slot] += 1;
        services.insert(key);
    }
    let names = [
        "service(s) added",
        "service(s) edited",
        "service(s) deleted",
        "dest(s) added",
        "dest(s) edited",
        "dest(s) removed",
    ];
    let parts: Vec<String> = counts
        .iter()
        .zip(names)
        .filter(|(n, _)| **n > 0)
        .map(|(n, name)| format!("{n} {name}"))
        .collect();
    format!(
        "IPVS batch: {} command(s) on {} service(s): {}",
        commands.len(),
        services.len(),
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use crate::ipvs::{Dest, VirtualService};
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    /// An in-memory kernel table that refuses what the kernel refuses and
    /// records every command it is given.
    #[derive(Clone, Default)]
    struct ModelKernel {
        table: Arc<Mutex<Table>>,
        log: Arc<Mutex<Vec<IpvsCommand>>>,
    }

    impl IpvsBackend for ModelKernel {
        fn read(&mut self) -> Result<Table, IpvsError> {
            Ok(self.table.lock().unwrap().clone())
        }

        fn apply(&mut self, commands: &[IpvsCommand]) -> Result<(), IpvsError> {
            let mut table = self.table.lock().unwrap();
            for cmd in commands {
                self.log.lock().unwrap().push(cmd.clone());
                if !crate::ipvs::diff::accepts(&table, cmd) {
                    return Err(IpvsError::Rejected {
                        refusals: vec![crate::ipvs::error::Refusal {
                            command: cmd.clone(),
                            errno: nix::errno::Errno::EEXIST,
                        }],
                        batch: commands.len(),
                    });
                }
                apply(&mut table, cmd);
            }
            Ok(())
        }

        fn describe(&self) -> String {
            "model kernel".into()
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn st(vip: &str, dests: &[(&str, u32)]) -> ServiceTable {
        ServiceTable {
            service: VirtualService {
                key: ServiceKey {
                    protocol: Protocol::Tcp,
                    addr: sa(vip),
                },
                scheduler: "wrr".into(),
                ops: false,
            },
            dests: dests.iter().map(|(a, w)| (sa(a), Dest::dr(*w))).collect(),
        }
    }

    #[test]
    fn a_batch_is_summed_up_in_one_line() {
        let a = st("192.0.2.1:80", &[("10.0.0.1:80", 10), ("10.0.0.2:80", 10)]);
        let b = st("192.0.2.2:80", &[("10.0.0.3:80", 10)]);
        let mut commands = diff_service(None, Some(&a));
        commands.extend(diff_service(Some(&b), Some(&st("192.0.2.2:80", &[]))));
        assert_eq!(
            batch_summary(&commands),
            "IPVS batch: 4 command(s) on 2 service(s): 1 service(s) added, 2 dest(s) added, 1 dest(s) removed"
        );
    }

    fn set(name: &str, table: &ServiceTable) -> WriterRequest {
        WriterRequest::SetService {
            name: name.into(),
            table: table.clone(),
            unresolved: Unresolved::default(),
        }
    }

    fn kernel_with(services: &[&ServiceTable]) -> ModelKernel {
        let kernel = ModelKernel::default();
        for s in services {
            kernel
                .table
                .lock()
                .unwrap()
                .insert(s.service.key, (*s).clone());
        }
        kernel
    }

    fn writer(kernel: &ModelKernel) -> IpvsWriter {
        let mut w = IpvsWriter::new(
            Box::new(kernel.clone()),
            WriteMode::Apply,
            Duration::from_secs(60),
        );
        w.load_kernel_table().unwrap();
        w
    }

    #[test]
    fn restart_adopts_without_any_command() {
        let web = st("192.0.2.1:80", &[("10.0.0.2:80", 10), ("10.0.0.3:80", 20)]);
        let kernel = kernel_with(&[&web]);
        let mut w = writer(&kernel);
        w.take(set("web", &web));
        w.sync();
        assert!(kernel.log.lock().unwrap().is_empty());
        // A reconciliation of a matching kernel changes nothing either.
        w.reconcile();
        assert!(kernel.log.lock().unwrap().is_empty());
    }

    fn set_unresolved(
        name: &str,
        table: &ServiceTable,
        hosts: &[&str],
        known: &[&str],
    ) -> WriterRequest {
        WriterRequest::SetService {
            name: name.into(),
            table: table.clone(),
            unresolved: Unresolved {
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                known: known.iter().map(|a| a.parse().unwrap()).collect(),
            },
        }
    }

    #[test]
    fn restart_keeps_adopted_destinations_of_unresolved_servers() {
        let before = st(
            "192.0.2.1:80",
            &[
                ("10.0.0.2:80", 10),
                ("10.0.0.3:80", 10),
                ("10.0.0.4:80", 10),
            ],
        );
        let kernel = kernel_with(&[&before]);
        let mut w = writer(&kernel);
        // No name resolves: the service wants nothing it can name.
        w.take(set_unresolved(
            "web",
            &st("192.0.2.1:80", &[]),
            &["a", "b", "c"],
            &[],
        ));
        w.sync();
        assert!(
            kernel.log.lock().unwrap().is_empty(),
            "{:?}",
            kernel.log.lock().unwrap()
        );
        // a resolves (pooled), b resolves but is down (depooled by its
        // monitor): b's destination goes, c's stays.
        w.take(set_unresolved(
            "web",
            &st("192.0.2.1:80", &[("10.0.0.2:80", 10)]),
            &["c"],
            &["10.0.0.2", "10.0.0.3"],
        ));
        w.sync();
        let t = kernel.table.lock().unwrap().clone();
        let left: Vec<SocketAddr> = t[&before.service.key].dests.keys().copied().collect();
        assert_eq!(left, [sa("10.0.0.2:80"), sa("10.0.0.4:80")]);
        // c is removed from the list: nothing is kept any more.
        w.take(set("web", &st("192.0.2.1:80", &[("10.0.0.2:80", 10)])));
        w.sync();
        let t = kernel.table.lock().unwrap().clone();
        assert_eq!(t[&before.service.key].dests.len(), 1);
    }

    #[test]
    fn a_new_unresolved_server_of_a_running_service_keeps_nothing() {
        let web = st("192.0.2.1:80", &[("10.0.0.2:80", 10), ("10.0.0.3:80", 10)]);
        let kernel = kernel_with(&[&web]);
        let mut w = writer(&kernel);
        w.take(set("web", &web));
        w.sync();
        // 10.0.0.3 leaves the list while a new name that does not resolve
        // joins it: 10.0.0.3 was the service's own, it goes.
        w.take(set_unresolved(
            "web",
            &st("192.0.2.1:80", &[("10.0.0.2:80", 10)]),
            &["new"],
            &["10.0.0.2"],
        ));
        w.sync();
        assert_eq!(
            kernel.table.lock().unwrap()[&web.service.key].dests.len(),
            1
        );
    }

    #[test]
    fn a_renamed_service_keeps_its_virtual_service_without_a_command() {
        let web = st("192.0.2.1:80", &[("10.0.0.2:80", 10)]);
        let kernel = kernel_with(&[]);
        let mut w = writer(&kernel);
        w.take(set("web", &web));
        w.sync();
        kernel.log.lock().unwrap().clear();
        w.take(WriterRequest::RenameService {
            from: "web".into(),
            to: "www".into(),
        });
        w.take(set("www", &web));
        w.sync();
        assert!(kernel.log.lock().unwrap().is_empty());
        assert!(w.pending_commands().is_empty());
        assert!(w.desired.contains_key("www") && !w.desired.contains_key("web"));
        // The new name owns it: removing it deletes the service.
        w.take(WriterRequest::RemoveService { name: "www".into() });
        w.sync();
        assert!(kernel.table.lock().unwrap().is_empty());
    }

    #[test]
    fn reconcile_repairs_drift_in_managed_services_only() {
        let web = st(
            "192.0.2.1:80",
            &[
                ("10.0.0.2:80", 10),
                ("10.0.0.3:80", 20),
                ("10.0.0.4:80", 30),
            ],
        );
        let theirs = st("192.0.2.99:80", &[("10.0.0.7:80", 1)]);
        let kernel = kernel_with(&[&theirs]);
        let mut w = writer(&kernel);
        w.take(set("web", &web));
        w.sync();
        kernel.log.lock().unwrap().clear();
        {
            // By hand: one destination deleted, one added, one reweighted,
            // and the other service changed too.
            let mut t = kernel.table.lock().unwrap();
            let s = t.get_mut(&web.service.key).unwrap();
            s.dests.remove(&sa("10.0.0.3:80"));
            s.dests.insert(sa("10.0.0.9:80"), Dest::dr(5));
            s.dests.insert(sa("10.0.0.4:80"), Dest::dr(1));
            let other = t.get_mut(&theirs.service.key).unwrap();
            other.dests.insert(sa("10.0.0.8:80"), Dest::dr(1));
        }
        w.reconcile();
        let t = kernel.table.lock().unwrap().clone();
        assert_eq!(t[&web.service.key], web);
        assert_eq!(
            t[&theirs.service.key].dests.len(),
            2,
            "not rsbal's: untouched"
        );
        assert_eq!(kernel.log.lock().unwrap().len(), 3);
    }

    #[test]
    fn a_refused_batch_is_retried_against_the_re_read_table() {
        let web = st("192.0.2.1:80", &[("10.0.0.2:80", 10)]);
        let kernel = kernel_with(&[]);
        let mut w = writer(&kernel);
        // Someone else creates the service after the writer read the table:
        // the writer's AddService is refused (EEXIST), the re-read shows the
        // service, and the retry only adds what is missing.
        let mut theirs = web.clone();
        theirs.dests.clear();
        kernel.table.lock().unwrap().insert(web.service.key, theirs);
        w.take(set("web", &web));
        w.sync();
        assert_eq!(kernel.table.lock().unwrap()[&web.service.key], web);
        let log = kernel.log.lock().unwrap();
        assert!(matches!(log[0], IpvsCommand::AddService(_)), "{log:?}");
        assert!(matches!(log[1..], [IpvsCommand::AddDest { .. }]), "{log:?}");
    }

    #[test]
    fn reconcile_recreates_a_deleted_service() {
        let web = st("192.0.2.1:80", &[("10.0.0.2:80", 10)]);
        let kernel = kernel_with(&[]);
        let mut w = writer(&kernel);
        w.take(set("web", &web));
        w.sync();
        kernel.table.lock().unwrap().clear();
        w.reconcile();
        assert_eq!(kernel.table.lock().unwrap()[&web.service.key], web);
    }

    #[test]
    fn no_reconciliation_when_off_or_dry_run() {
        let kernel = ModelKernel::default();
        let off = IpvsWriter::new(Box::new(kernel.clone()), WriteMode::Apply, Duration::ZERO);
        assert!(off.next_reconcile().is_none());
        let dry = IpvsWriter::new(
            Box::new(kernel.clone()),
            WriteMode::DryRun,
            Duration::from_secs(1),
        );
        assert!(dry.next_reconcile().is_none());
        let on = IpvsWriter::new(Box::new(kernel), WriteMode::Apply, Duration::from_secs(1));
        assert!(on.next_reconcile().is_some());
    }

    #[test]
    fn writer_thread_reconciles_on_its_interval() {
        let web = st("192.0.2.1:80", &[("10.0.0.2:80", 10)]);
        let kernel = ModelKernel::default();
        let (tx, handle) = spawn(
            Box::new(kernel.clone()),
            WriteMode::Apply,
            Duration::from_millis(50),
        )
        .unwrap();
        tx.send(set("web", &web)).unwrap();
        let (done, flushed) = crossbeam_channel::bounded(1);
        tx.send(WriterRequest::Flush(done)).unwrap();
        flushed.recv_timeout(Duration::from_secs(5)).unwrap();
        kernel
            .table
            .lock()
            .unwrap()
            .get_mut(&web.service.key)
            .unwrap()
            .dests
            .clear();
        let deadline = Instant::now() + Duration::from_secs(5);
        while kernel.table.lock().unwrap()[&web.service.key] != web {
            assert!(Instant::now() < deadline, "not repaired");
            thread::sleep(Duration::from_millis(10));
        }
        drop(tx);
        handle.join().unwrap();
    }
}
