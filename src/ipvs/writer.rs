//! The IpvsWriter thread: the only place that changes the kernel's IPVS table.
//!
//! Service threads send the complete desired state of their service; the
//! writer owns the *applied* table (what it believes the kernel has, read from
//! the kernel at start so existing services are adopted, never deleted and
//! re-created) and the *desired* table. Requests that queue up while a batch
//! is running are coalesced, the smallest diff is computed (`ipvs::diff`) and
//! handed to the backend in one batch. Only services named in the config are
//! ever touched.
//!
//! Metrics: `rsbal_ipvs_commands_applied_total` and
//! `rsbal_ipvs_commands_failed_total` count the commands of batches the
//! backend accepted or rejected (a dry run applies nothing).

use super::diff::{apply, diff_service};
use super::ipvsadm::{parse_save, restore_line};
use super::{IpvsCommand, ServiceKey, ServiceTable, Table};
use crossbeam_channel::{Receiver, Sender};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::LazyLock;
use std::thread;

struct CommandCounters {
    applied: prometheus::IntCounter,
    failed: prometheus::IntCounter,
}

static COMMANDS: LazyLock<CommandCounters> = LazyLock::new(|| {
    let counter = |name: &str, help: &str| {
        crate::metrics::int_counter_vec(name, help, &[]).with_label_values(&[] as &[&str])
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
pub fn declare_metrics() {
    LazyLock::force(&COMMANDS);
}

const LOG_TARGET: &str = "IpvsWriter";

/// A request to the writer.
#[derive(Debug)]
pub enum WriterRequest {
    /// The complete desired state of the rsbal service `name`.
    SetService { name: String, table: ServiceTable },
    /// The service `name` was removed from the config: delete it from IPVS.
    RemoveService { name: String },
    /// Answered once every request sent before it has been applied.
    Flush(Sender<()>),
    /// Reload changed `[global] ipvsadm`.
    SetIpvsadm(PathBuf),
}

/// Something that can read and change the kernel's IPVS table.
pub trait IpvsBackend: Send {
    /// The kernel's current table.
    fn read(&mut self) -> Result<Table, String>;
    /// Applies commands in order; `Err` tells what failed.
    fn apply(&mut self, commands: &[IpvsCommand]) -> Result<(), String>;
    /// Short description for logs.
    fn describe(&self) -> String;
}

/// Runs the `ipvsadm` binary: `-Sn` to read, `-R` with a batch on stdin to write.
pub struct Ipvsadm {
    pub path: PathBuf,
}

impl Ipvsadm {
    /// "PATH ARG failed (exit status): stderr"
    fn failure(&self, arg: &str, out: &std::process::Output) -> String {
        format!(
            "{} {arg} failed ({}): {}",
            self.path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

impl IpvsBackend for Ipvsadm {
    fn read(&mut self) -> Result<Table, String> {
        let out = Command::new(&self.path)
            .arg("-Sn")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {} -Sn: {e}", self.path.display()))?;
        if !out.status.success() {
            return Err(self.failure("-Sn", &out));
        }
        parse_save(&String::from_utf8_lossy(&out.stdout))
    }

    fn apply(&mut self, commands: &[IpvsCommand]) -> Result<(), String> {
        let mut input = String::new();
        for cmd in commands {
            input.push_str(&restore_line(cmd));
            input.push('\n');
        }
        let mut child = Command::new(&self.path)
            .arg("-R")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {} -R: {e}", self.path.display()))?;
        let written = match child.stdin.take() {
            Some(mut stdin) => stdin.write_all(input.as_bytes()),
            None => Ok(()),
        };
        let out = child
            .wait_with_output()
            .map_err(|e| format!("{} -R: {e}", self.path.display()))?;
        if !out.status.success() {
            return Err(self.failure("-R", &out));
        }
        written.map_err(|e| format!("cannot write to {} -R: {e}", self.path.display()))
    }

    fn describe(&self) -> String {
        format!("ipvsadm ({})", self.path.display())
    }
}

/// How the writer treats the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// Apply changes.
    Apply,
    /// `-n`: log every command, change nothing.
    DryRun,
}

/// The writer's state; runs on its own thread via [`spawn`].
pub struct IpvsWriter {
    backend: Box<dyn IpvsBackend>,
    mode: WriteMode,
    /// What the kernel has, as far as the writer knows.
    applied: Table,
    /// What each rsbal service wants, by service name.
    desired: BTreeMap<String, ServiceTable>,
    /// Keys of services that were removed or moved and must go from the kernel.
    retired: BTreeSet<ServiceKey>,
}

impl IpvsWriter {
    pub fn new(backend: Box<dyn IpvsBackend>, mode: WriteMode) -> Self {
        IpvsWriter {
            backend,
            mode,
            applied: Table::new(),
            desired: BTreeMap::new(),
            retired: BTreeSet::new(),
        }
    }

    /// Reads the kernel's table so that existing services are adopted.
    pub fn load_kernel_table(&mut self) {
        match self.backend.read() {
            Ok(table) => {
                log::info!(target: LOG_TARGET, "read {} existing IPVS service(s) via {}", table.len(), self.backend.describe());
                self.applied = table;
            }
            Err(e) => {
                let level = if self.mode == WriteMode::DryRun {
                    log::Level::Warn
                } else {
                    log::Level::Error
                };
                log::log!(target: LOG_TARGET, level, "cannot read the IPVS table ({e}); assuming it is empty");
            }
        }
    }

    /// Takes one request into the desired state; returns a flush reply to send
    /// after the next sync.
    fn take(&mut self, req: WriterRequest) -> Option<Sender<()>> {
        match req {
            WriterRequest::SetService { name, table } => {
                if let Some(old) = self.desired.insert(name, table.clone()) {
                    if old.service.key != table.service.key {
                        self.retired.insert(old.service.key);
                    }
                }
                self.retired.remove(&table.service.key);
                None
            }
            WriterRequest::RemoveService { name } => {
                if let Some(old) = self.desired.remove(&name) {
                    self.retired.insert(old.service.key);
                }
                None
            }
            WriterRequest::Flush(reply) => Some(reply),
            WriterRequest::SetIpvsadm(path) => {
                self.backend = Box::new(Ipvsadm { path });
                None
            }
        }
    }

    /// The commands that make the kernel match the desired state.
    pub fn pending_commands(&self) -> Vec<IpvsCommand> {
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
    pub fn sync(&mut self) {
        for attempt in 0..2 {
            let commands = self.pending_commands();
            if commands.is_empty() {
                self.retired.clear();
                return;
            }
            for cmd in &commands {
                match self.mode {
                    WriteMode::DryRun => {
                        log::info!(target: LOG_TARGET, "dry-run, not running: ipvsadm {}", restore_line(cmd))
                    }
                    WriteMode::Apply => {
                        log::info!(target: LOG_TARGET, "ipvsadm {}", restore_line(cmd))
                    }
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
                        log::info!(target: LOG_TARGET, "re-reading the IPVS table and retrying");
                        self.load_kernel_table();
                    }
                }
            }
        }
    }

    /// The thread body: coalesce queued requests, sync, answer flushes.
    pub fn run(mut self, requests: Receiver<WriterRequest>) {
        while let Ok(first) = requests.recv() {
            let mut replies: Vec<Sender<()>> = Vec::new();
            replies.extend(self.take(first));
            while let Ok(more) = requests.try_recv() {
                replies.extend(self.take(more));
            }
            self.sync();
            for reply in replies {
                let _ = reply.send(());
            }
        }
    }
}

/// Starts the writer thread; it reads the kernel's table first.
pub fn spawn(
    backend: Box<dyn IpvsBackend>,
    mode: WriteMode,
) -> std::io::Result<(Sender<WriterRequest>, thread::JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut writer = IpvsWriter::new(backend, mode);
    let handle = thread::Builder::new()
        .name("ipvs-writer".to_string())
        .spawn(move || {
            writer.load_kernel_table();
            writer.run(rx)
        })?;
    Ok((tx, handle))
}
