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
//! Failures are retried until the kernel matches, whatever the reconcile
//! interval: a batch that failed is retried after [`Backoff`] (0.5 s
//! doubling to 30 s; any new request also tries at once), each retry first
//! re-reading the kernel. A table that could not be read is never taken
//! for an empty one: at start nothing is applied until a read succeeds
//! (retried with the same backoff; dry-run alone starts from an empty
//! table), and a failed re-read keeps `applied` as it was.
//!
//! While a service's desired state is not in the kernel (a failed batch,
//! or the table not read yet) it is *out of sync*: the writer publishes
//! why in the snapshot store (`DaemonStatus::ipvs_out_of_sync`, read by
//! `/alerts` and the status page) and sets `rsbal_ipvs_out_of_sync{service}`
//! to 1 (0 once in sync; the series goes with the service).
//!
//! Metrics: `rsbal_ipvs_commands_applied_total` and
//! `rsbal_ipvs_commands_failed_total` count the commands of batches the
//! backend accepted or rejected (a dry run applies nothing; a batch that
//! timed out counts as rejected); `rsbal_ipvs_drift_repairs_total{kind}`
//! counts drift found by reconciliation.

pub(crate) use super::backend::IpvsBackend;
use super::backend::{self, BackendChoice};
use super::diff::{apply, diff_service};
use super::error::IpvsError;
use super::hold::{self, Unresolved};
use super::reconcile;
use super::{Dest, IpvsCommand, ServiceKey, ServiceTable, Table};
use crate::status::metrics;
use crate::status::snapshot::SnapshotStore;
use crossbeam_channel::{Receiver, Sender};
use prometheus::{GaugeVec, IntCounterVec};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
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
            "IPVS commands in batches the IPVS backend rejected or that timed out",
        ),
    }
});

/// 1 while a service's desired state is not what the kernel has.
static OUT_OF_SYNC: LazyLock<GaugeVec> = LazyLock::new(|| {
    metrics::gauge_vec(
        "rsbal_ipvs_out_of_sync",
        "1 while the kernel's IPVS table differs from what the service wants (a failed or pending apply, or the table cannot be read)",
        &["service"],
    )
});

/// Makes the IPVS counters visible (at 0) before the first batch.
pub(crate) fn declare_metrics() {
    LazyLock::force(&COMMANDS);
    LazyLock::force(&DRIFT_REPAIRS);
    LazyLock::force(&OUT_OF_SYNC);
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
    /// Answered once every request sent before it has been tried.
    Flush(Sender<()>),
    /// Reload changed `[global] ipvs-backend`, `ipvsadm` or
    /// `ipvs-command-timeout`.
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

/// When to try again after a failure: [`Backoff::FIRST`], doubling up to
/// [`Backoff::MAX`]; back to the start after a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The pause before the next retry.
    delay: Duration,
    /// When it is due; `None` while nothing failed.
    due: Option<Instant>,
}

impl Backoff {
    pub(crate) const FIRST: Duration = Duration::from_millis(500);
    pub(crate) const MAX: Duration = Duration::from_secs(30);

    fn new() -> Backoff {
        Backoff {
            delay: Backoff::FIRST,
            due: None,
        }
    }

    /// After a failure at `now`: the next retry is due one delay later,
    /// and the delay doubles. Returns the pause.
    fn failed(&mut self, now: Instant) -> Duration {
        let pause = self.delay;
        // A deadline beyond what the clock can hold: never (cannot happen
        // with MAX, but no panic either way).
        self.due = now.checked_add(pause);
        self.delay = (self.delay * 2).min(Backoff::MAX);
        pause
    }

    fn succeeded(&mut self) {
        *self = Backoff::new();
    }
}

/// The writer's state; runs on its own thread via [`spawn`].
pub(crate) struct IpvsWriter {
    backend: Box<dyn IpvsBackend>,
    mode: WriteMode,
    /// How often to reconcile; zero = never.
    reconcile_every: Duration,
    /// What the kernel has, as far as the writer knows.
    applied: Table,
    /// Whether `applied` comes from a successful read of the kernel (false
    /// until the first one: then nothing is applied).
    kernel_read: bool,
    /// What each rsbal service wants, by service name (with the
    /// destinations kept for it, `held`).
    desired: BTreeMap<String, ServiceTable>,
    /// Per service, adopted destinations kept for its unresolved servers.
    held: BTreeMap<String, BTreeMap<SocketAddr, Dest>>,
    /// Keys of services that were removed or moved and must go from the kernel.
    retired: BTreeSet<ServiceKey>,
    /// Retries of a failed read or batch.
    backoff: Backoff,
    /// Why the last batch or read failed, while it lasts.
    failure: Option<String>,
    /// Where the out-of-sync services are published (`None` in tests that
    /// do not look).
    store: Option<Arc<SnapshotStore>>,
    /// What was last published: out-of-sync services and why.
    published: BTreeMap<String, String>,
    /// Services with a `rsbal_ipvs_out_of_sync` series.
    gauged: BTreeSet<String>,
}

impl IpvsWriter {
    pub(crate) fn new(
        backend: Box<dyn IpvsBackend>,
        mode: WriteMode,
        reconcile_every: Duration,
        store: Option<Arc<SnapshotStore>>,
    ) -> Self {
        IpvsWriter {
            backend,
            mode,
            reconcile_every,
            applied: Table::new(),
            kernel_read: false,
            desired: BTreeMap::new(),
            held: BTreeMap::new(),
            retired: BTreeSet::new(),
            backoff: Backoff::new(),
            failure: None,
            store,
            published: BTreeMap::new(),
            gauged: BTreeSet::new(),
        }
    }

    /// Reads the kernel's table so that existing services are adopted.
    /// A table that could not be read is never taken for an empty one:
    /// `applied` then stays as it was and the error is returned.
    pub(crate) fn load_kernel_table(&mut self) -> Result<(), IpvsError> {
        match self.backend.read() {
            Ok(table) => {
                if !self.kernel_read {
                    log::info!(target: LOG_TARGET, "read {} existing IPVS service(s) via {}", table.len(), self.backend.describe());
                }
                self.applied = table;
                self.kernel_read = true;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// At start: reads the kernel's table. When that fails, nothing is
    /// applied until a retry succeeds (in dry-run mode, where nothing is
    /// applied anyway, the commands are shown against an empty table).
    pub(crate) fn start(&mut self) {
        let Err(e) = self.load_kernel_table() else {
            return;
        };
        if self.mode == WriteMode::DryRun {
            log::warn!(target: LOG_TARGET, "cannot read the IPVS table ({e}); dry run: showing the commands against an empty table");
            self.kernel_read = true;
            return;
        }
        let pause = self.backoff.failed(Instant::now());
        log::error!(target: LOG_TARGET, "cannot read the IPVS table ({e}); IPVS is not changed until it can be read; retrying in {:?}", pause);
        self.failure = Some(format!("cannot read the IPVS table: {e}"));
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

    /// Applies the pending commands. A batch the kernel refused because its
    /// table was stale is retried at once against a re-read table; any
    /// other failure schedules a retry ([`Backoff`]). Then publishes which
    /// services are out of sync.
    pub(crate) fn sync(&mut self) {
        if self.kernel_read {
            match self.apply_pending() {
                Ok(()) => {
                    if self.failure.take().is_some() {
                        log::info!(target: LOG_TARGET, "the kernel's IPVS table matches again");
                    }
                    self.backoff.succeeded();
                }
                Err(e) => {
                    let pause = self.backoff.failed(Instant::now());
                    log::warn!(target: LOG_TARGET, "retrying in {pause:?}");
                    self.failure = Some(e);
                }
            }
        }
        self.publish();
    }

    /// One attempt, and one more against a re-read table if the kernel's
    /// table was stale; `Err` is why the kernel still differs.
    fn apply_pending(&mut self) -> Result<(), String> {
        for attempt in 0..2 {
            let commands = self.pending_commands();
            if commands.is_empty() {
                self.retired.clear();
                return Ok(());
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
                    return Ok(());
                }
                Err(e) => {
                    log::error!(target: LOG_TARGET, "applying {} IPVS command(s) failed: {e}", commands.len());
                    if attempt == 0 && e.table_was_stale() {
                        log::info!(target: LOG_TARGET, "the kernel's table differs from what the writer applied: re-reading it and retrying");
                        self.reread();
                    } else {
                        return Err(format!(
                            "applying {} command(s) failed: {e}",
                            commands.len()
                        ));
                    }
                }
            }
        }
        Err("the kernel's table changed under the writer".into())
    }

    /// Re-reads the kernel's table; a failed read is logged and leaves
    /// `applied` as it was (never an empty table).
    fn reread(&mut self) {
        if let Err(e) = self.load_kernel_table() {
            log::error!(target: LOG_TARGET, "cannot read the IPVS table ({e}); keeping what the writer applied");
        }
    }

    /// The backoff is due: read the table (at start: for the first time),
    /// then apply what is pending.
    fn retry(&mut self) {
        self.backoff.due = None;
        if !self.kernel_read {
            match self.load_kernel_table() {
                Ok(()) => {
                    log::info!(target: LOG_TARGET, "the IPVS table could be read: applying the desired state")
                }
                Err(e) => {
                    let pause = self.backoff.failed(Instant::now());
                    log::error!(target: LOG_TARGET, "cannot read the IPVS table ({e}); retrying in {pause:?}");
                    self.failure = Some(format!("cannot read the IPVS table: {e}"));
                    self.publish();
                    return;
                }
            }
        } else {
            log::info!(target: LOG_TARGET, "retrying: re-reading the IPVS table");
            self.reread();
        }
        self.sync();
    }

    /// Services whose desired state is not in the kernel, and why.
    pub(crate) fn out_of_sync(&self) -> BTreeMap<String, String> {
        let why = self.failure.as_deref().unwrap_or("changes not applied yet");
        self.desired
            .iter()
            .filter(|(_, table)| {
                !self.kernel_read
                    || !diff_service(self.applied.get(&table.service.key), Some(table)).is_empty()
            })
            .map(|(name, _)| (name.clone(), why.to_string()))
            .collect()
    }

    /// Sets the gauge of every desired service (removing the series of
    /// services that are gone) and publishes the out-of-sync ones when
    /// that changed.
    fn publish(&mut self) {
        let now = self.out_of_sync();
        for name in self.desired.keys() {
            let value = if now.contains_key(name) { 1.0 } else { 0.0 };
            OUT_OF_SYNC.with_label_values(&[name.as_str()]).set(value);
        }
        for gone in self
            .gauged
            .iter()
            .filter(|n| !self.desired.contains_key(*n))
        {
            let _ = OUT_OF_SYNC.remove_label_values(&[gone.as_str()]);
        }
        self.gauged = self.desired.keys().cloned().collect();
        if now != self.published {
            for (name, why) in now.iter().filter(|(n, _)| !self.published.contains_key(*n)) {
                log::warn!(target: LOG_TARGET, "[{name}] the kernel's IPVS table is out of sync with the service: {why}");
            }
            if let Some(store) = &self.store {
                store.update_daemon(|d| d.ipvs_out_of_sync = now.clone());
            }
            self.published = now;
        }
    }

    /// Re-reads the kernel's table, logs every difference in rsbal's
    /// services and repairs it.
    pub(crate) fn reconcile(&mut self) {
        let kernel = match self.backend.read() {
            Ok(kernel) => kernel,
            Err(e) => {
                log::error!(target: LOG_TARGET, "reconcile: cannot read the IPVS table ({e}); keeping what the writer applied");
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
        self.kernel_read = true;
        self.sync();
    }

    /// When the next reconciliation is due; never in dry-run mode (the
    /// kernel never gets the changes, so all would look like drift), nor
    /// when off or beyond what the clock can hold.
    fn next_reconcile(&self) -> Option<Instant> {
        if self.mode == WriteMode::DryRun || self.reconcile_every.is_zero() {
            None
        } else {
            Instant::now().checked_add(self.reconcile_every)
        }
    }

    /// The thread body: coalesce queued requests, sync, answer flushes;
    /// retry and reconcile when due.
    pub(crate) fn run(mut self, requests: Receiver<WriterRequest>) {
        let mut next = self.next_reconcile();
        loop {
            let wake = match (next, self.backoff.due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let due = wake.map_or_else(crossbeam_channel::never, crossbeam_channel::at);
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
                    let now = Instant::now();
                    if next.is_some_and(|n| n <= now) {
                        self.reconcile();
                        next = self.next_reconcile();
                    } else if self.backoff.due.is_some_and(|d| d <= now) {
                        self.retry();
                    }
                }
            }
        }
    }
}

/// Starts the writer thread; it reads the kernel's table first. Which
/// services are out of sync goes to `store`.
pub(crate) fn spawn(
    backend: Box<dyn IpvsBackend>,
    mode: WriteMode,
    reconcile_every: Duration,
    store: Option<Arc<SnapshotStore>>,
) -> std::io::Result<(Sender<WriterRequest>, thread::JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut writer = IpvsWriter::new(backend, mode, reconcile_every, store);
    let handle = thread::Builder::new()
        .name("ipvs-writer".to_string())
        .spawn(move || {
            writer.start();
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
    /// It can be told to fail reads (`fail_read`) and the next
    /// `fail_applies` batches, as a kernel out of memory or an ipvsadm
    /// that cannot run.
    #[derive(Clone, Default)]
    struct ModelKernel {
        table: Arc<Mutex<Table>>,
        log: Arc<Mutex<Vec<IpvsCommand>>>,
        fail_read: Arc<Mutex<bool>>,
        fail_applies: Arc<Mutex<u32>>,
        reads: Arc<Mutex<u32>>,
    }

    impl ModelKernel {
        fn fail_reads(&self, on: bool) {
            *self.fail_read.lock().unwrap() = on;
        }

        fn fail_applies(&self, n: u32) {
            *self.fail_applies.lock().unwrap() = n;
        }
    }

    impl IpvsBackend for ModelKernel {
        fn read(&mut self) -> Result<Table, IpvsError> {
            *self.reads.lock().unwrap() += 1;
            if *self.fail_read.lock().unwrap() {
                return Err(IpvsError::Kernel {
                    what: "dumping IPVS services".into(),
                    errno: nix::errno::Errno::EMFILE,
                });
            }
            Ok(self.table.lock().unwrap().clone())
        }

        fn apply(&mut self, commands: &[IpvsCommand]) -> Result<(), IpvsError> {
            {
                let mut failing = self.fail_applies.lock().unwrap();
                if *failing > 0 {
                    *failing -= 1;
                    return Err(IpvsError::Socket {
                        what: "cannot send to the kernel",
                        errno: nix::errno::Errno::ENOMEM,
                    });
                }
            }
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
            None,
        );
        w.start();
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
        let off = IpvsWriter::new(
            Box::new(kernel.clone()),
            WriteMode::Apply,
            Duration::ZERO,
            None,
        );
        assert!(off.next_reconcile().is_none());
        let dry = IpvsWriter::new(
            Box::new(kernel.clone()),
            WriteMode::DryRun,
            Duration::from_secs(1),
            None,
        );
        assert!(dry.next_reconcile().is_none());
        let on = IpvsWriter::new(
            Box::new(kernel.clone()),
            WriteMode::Apply,
            Duration::from_secs(1),
            None,
        );
        assert!(on.next_reconcile().is_some());
        // Beyond what the clock can hold (once a panic, issue 11 item 11):
        // never, no panic.
        let huge = IpvsWriter::new(
            Box::new(kernel),
            WriteMode::Apply,
            Duration::from_secs(10_000_000_000_000_000_000),
            None,
        );
        assert!(huge.next_reconcile().is_none());
    }

    #[test]
    fn writer_thread_reconciles_on_its_interval() {
        let web = st("192.0.2.1:80", &[("10.0.0.2:80", 10)]);
        let kernel = ModelKernel::default();
        let (tx, handle) = spawn(
            Box::new(kernel.clone()),
            WriteMode::Apply,
            Duration::from_millis(50),
            None,
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

    fn dest_adds(kernel: &ModelKernel) -> Vec<SocketAddr> {
        kernel
            .log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|c| match c {
                IpvsCommand::AddDest { dest, .. } => Some(*dest),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn backoff_doubles_from_half_a_second_to_thirty_and_starts_over() {
        let mut b = Backoff::new();
        let now = Instant::now();
        let pauses: Vec<f64> = (0..9).map(|_| b.failed(now).as_secs_f64()).collect();
        assert_eq!(pauses, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        assert_eq!(b.due, Some(now + Duration::from_secs(30)));
        b.succeeded();
        assert_eq!(b.due, None);
        assert_eq!(b.failed(now), Duration::from_millis(500));
    }

    /// Issue 11 item 6: "cannot read the IPVS table; assuming it is empty"
    /// once re-added every destination. Now nothing is applied until a
    /// read succeeds, and then only the difference.
    #[test]
    fn an_unreadable_table_at_start_is_not_taken_for_an_empty_one() {
        let before = st("192.0.2.1:80", &[("10.0.0.2:80", 10), ("10.0.0.3:80", 10)]);
        let after = st(
            "192.0.2.1:80",
            &[
                ("10.0.0.2:80", 10),
                ("10.0.0.3:80", 10),
                ("10.0.0.4:80", 10),
            ],
        );
        let kernel = kernel_with(&[&before]);
        kernel.fail_reads(true);
        let mut w = writer(&kernel);
        assert!(!w.kernel_read);
        assert!(w.backoff.due.is_some(), "a retry of the read is scheduled");
        w.take(set("web", &after));
        w.sync();
        assert!(
            kernel.log.lock().unwrap().is_empty(),
            "nothing applied blind"
        );
        let oos = w.out_of_sync();
        assert!(oos["web"].contains("cannot read the IPVS table"), "{oos:?}");
        // Still unreadable: the retry fails, the backoff grows.
        w.retry();
        assert!(kernel.log.lock().unwrap().is_empty());
        assert_eq!(w.backoff.delay, Duration::from_secs(2));
        // Readable: adopted, and only the new destination is added.
        kernel.fail_reads(false);
        w.retry();
        assert_eq!(dest_adds(&kernel), [sa("10.0.0.4:80")]);
        assert_eq!(kernel.log.lock().unwrap().len(), 1);
        assert!(w.out_of_sync().is_empty());
        assert_eq!(w.backoff, Backoff::new());
    }

    #[test]
    fn a_failed_apply_is_retried_with_backoff_until_the_kernel_matches() {
        let web = st("192.0.2.1:80", &[("10.0.0.2:80", 10)]);
        let kernel = kernel_with(&[]);
        let mut w = writer(&kernel);
        kernel.fail_applies(3);
        w.take(set("web", &web));
        let t0 = Instant::now();
        w.sync();
        let due = w.backoff.due.expect("a retry is scheduled");
        assert!(due >= t0 + Backoff::FIRST && due <= Instant::now() + Backoff::FIRST);
        assert!(
            w.out_of_sync()["web"].contains("ENOMEM"),
            "{:?}",
            w.out_of_sync()
        );
        w.retry();
        w.retry();
        assert!(kernel.table.lock().unwrap().is_empty());
        assert_eq!(w.backoff.delay, Duration::from_secs(4));
        w.retry();
        assert_eq!(kernel.table.lock().unwrap()[&web.service.key], web);
        assert!(w.out_of_sync().is_empty());
        assert_eq!(w.backoff.due, None, "nothing left to retry");
    }

    #[test]
    fn a_failed_re_read_keeps_the_applied_table() {
        let web = st("192.0.2.1:80", &[("10.0.0.2:80", 10), ("10.0.0.3:80", 10)]);
        let kernel = kernel_with(&[&web]);
        let mut w = writer(&kernel);
        w.take(set("web", &web));
        w.sync();
        assert!(kernel.log.lock().unwrap().is_empty());
        // Reads and applies fail: neither the retry's re-read nor a
        // reconciliation empties what the writer knows.
        kernel.fail_reads(true);
        kernel.fail_applies(u32::MAX);
        let more = st(
            "192.0.2.1:80",
            &[
                ("10.0.0.2:80", 10),
                ("10.0.0.3:80", 10),
                ("10.0.0.4:80", 10),
            ],
        );
        w.take(set("web", &more));
        w.sync();
        w.retry();
        w.reconcile();
        assert_eq!(w.applied[&web.service.key], web);
        assert_eq!(w.pending_commands().len(), 1, "{:?}", w.pending_commands());
        kernel.fail_reads(false);
        kernel.fail_applies(0);
        w.retry();
        assert_eq!(dest_adds(&kernel), [sa("10.0.0.4:80")]);
        assert_eq!(kernel.table.lock().unwrap()[&web.service.key], more);
    }

    /// With reconciliation off, the thread retries on its own, and the
    /// store and the gauge say which service is out of sync meanwhile.
    #[test]
    fn writer_thread_retries_with_reconciliation_off_and_reports_out_of_sync() {
        let name = "writer-thread-retry-test";
        let web = st("192.0.2.7:80", &[("10.0.0.2:80", 10)]);
        let kernel = ModelKernel::default();
        kernel.fail_applies(2);
        let store = Arc::new(SnapshotStore::new());
        let (tx, handle) = spawn(
            Box::new(kernel.clone()),
            WriteMode::Apply,
            Duration::ZERO,
            Some(Arc::clone(&store)),
        )
        .unwrap();
        tx.send(set(name, &web)).unwrap();
        let (done, flushed) = crossbeam_channel::bounded(1);
        tx.send(WriterRequest::Flush(done)).unwrap();
        flushed.recv_timeout(Duration::from_secs(5)).unwrap();
        let series = format!("rsbal_ipvs_out_of_sync{{service=\"{name}\"}}");
        assert!(store.daemon().ipvs_out_of_sync.contains_key(name));
        assert!(metrics::render().contains(&format!("{series} 1")));
        // Retried after 0.5 s, then 1 s: applied without any new request.
        let deadline = Instant::now() + Duration::from_secs(10);
        while kernel.table.lock().unwrap().get(&web.service.key) != Some(&web) {
            assert!(Instant::now() < deadline, "never retried");
            thread::sleep(Duration::from_millis(20));
        }
        while store.daemon().ipvs_out_of_sync.contains_key(name) {
            assert!(Instant::now() < deadline, "still reported out of sync");
            thread::sleep(Duration::from_millis(20));
        }
        assert!(metrics::render().contains(&format!("{series} 0")));
        // Removed with the service.
        tx.send(WriterRequest::RemoveService { name: name.into() })
            .unwrap();
        let (done, flushed) = crossbeam_channel::bounded(1);
        tx.send(WriterRequest::Flush(done)).unwrap();
        flushed.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(!metrics::render().contains(&series));
        assert!(kernel.table.lock().unwrap().is_empty());
        drop(tx);
        handle.join().unwrap();
    }
}
