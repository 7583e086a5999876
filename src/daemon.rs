//! The daemon's main thread: start-up, signal handling, reload and shutdown.
//!
//! It owns the running config and the handles of every thread it started
//! (services, IpvsWriter, instrumentation server). Signals are received with
//! signal-hook's iterator on this thread only; no other thread handles them.

use crate::cli::{self, Command, RunOptions};
use crate::config::{self, diff, Config, ConfigError, GlobalConfig, SourceUrl};
use crate::instrumentation::InstrumentationServer;
use crate::ipvs::backend::{self, BackendChoice};
use crate::ipvs::writer::{self, WriteMode, WriterRequest};
use crate::logging;
use crate::serverlist;
use crate::service::{self, ServiceHandle};
use crate::snapshot::SnapshotStore;
use crate::systemd;
use crossbeam_channel::Sender;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const LOG_TARGET: &str = "rsbal";
/// How long shutdown waits for the IpvsWriter to apply what is queued.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(500);

/// Runs the command line `args` (without the program name); returns the exit code.
pub fn main_with_args(args: Vec<String>) -> i32 {
    match cli::parse(args) {
        Err(e) => {
            eprintln!("rsbal: {e}\n\n{}", cli::USAGE);
            2
        }
        Ok(Command::Help) => {
            println!("{}", cli::USAGE);
            0
        }
        Ok(Command::Version) => {
            println!("rsbal {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Ok(Command::Check { config }) => check(&config),
        Ok(Command::Status(opts)) => crate::status::run(&opts),
        Ok(Command::Run(opts)) => run(opts),
        Ok(Command::IpvsDebug(args)) => crate::ipvs::debug::main(&args),
    }
}

/// `--check`: validates the config and every local server list.
pub fn check(path: &Path) -> i32 {
    let loaded = match config::load(path) {
        Ok(loaded) => loaded,
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {e}");
            }
            eprintln!("{}: {} error(s)", path.display(), errors.len());
            return 1;
        }
    };
    for w in &loaded.warnings {
        eprintln!("warning: {w}");
    }
    let mut errors = 0;
    for service in loaded.config.services.values() {
        if let SourceUrl::File(list) = &service.source {
            errors += check_server_list(&service.name, list, service.source.is_json());
        }
    }
    if errors > 0 {
        eprintln!("{}: {errors} error(s) in server lists", path.display());
        return 1;
    }
    println!(
        "{}: configuration OK ({} service(s))",
        path.display(),
        loaded.config.services.len()
    );
    0
}

fn check_server_list(service: &str, list: &Path, json: bool) -> usize {
    let text = match std::fs::read_to_string(list) {
        Ok(text) => text,
        Err(e) => {
            eprintln!(
                "error: {}: [{service}] config: cannot read server list: {e}",
                list.display()
            );
            return 1;
        }
    };
    match serverlist::parse(&text, json) {
        Err(e) => {
            eprintln!("error: {}: {e}", list.display());
            1
        }
        Ok(parsed) => {
            for err in &parsed.errors {
                eprintln!("error: {}:{}: {}", list.display(), err.line, err.reason);
            }
            if parsed.servers.is_empty() {
                eprintln!("warning: {}: no servers", list.display());
            }
            parsed.errors.len()
        }
    }
}

fn log_config_errors(what: &str, errors: &[ConfigError]) {
    log::error!(target: LOG_TARGET, "{what}: {} error(s) in the configuration", errors.len());
    for e in errors {
        log::error!(target: LOG_TARGET, "{e}");
    }
}

/// Everything the running daemon owns.
struct Daemon {
    config: Config,
    opts: RunOptions,
    writer: Sender<WriterRequest>,
    store: Arc<SnapshotStore>,
    services: BTreeMap<String, ServiceHandle>,
    instrumentation: Option<InstrumentationServer>,
    /// The BGP speaker, while `bgp = yes`.
    bgp: Option<crate::bgp::Speaker>,
}

/// Runs the daemon until SIGTERM/SIGINT; returns the exit code.
pub fn run(opts: RunOptions) -> i32 {
    logging::init(opts.debug);
    let loaded = match config::load(&opts.config) {
        Ok(loaded) => loaded,
        Err(errors) => {
            log_config_errors("cannot start", &errors);
            return 1;
        }
    };
    for w in &loaded.warnings {
        log::warn!(target: LOG_TARGET, "{w}");
    }
    // Registered before any thread starts, so every thread inherits the mask
    // signal-hook needs and no signal is lost during start-up.
    let mut signals = match Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(signals) => signals,
        Err(e) => {
            log::error!(target: LOG_TARGET, "cannot install signal handlers: {e}");
            return 1;
        }
    };
    let mode = if opts.dry_run {
        WriteMode::DryRun
    } else {
        WriteMode::Apply
    };
    let global = &loaded.config.global;
    let backend = backend::open(&backend_choice(global));
    let (writer, _writer_thread) =
        match writer::spawn(backend, mode, global.ipvs_reconcile_interval) {
            Ok(w) => w,
            Err(e) => {
                log::error!(target: LOG_TARGET, "cannot start the IPVS writer: {e}");
                return 1;
            }
        };
    let mut daemon = Daemon {
        config: loaded.config,
        opts,
        writer,
        store: Arc::new(SnapshotStore::new()),
        services: BTreeMap::new(),
        instrumentation: None,
        bgp: None,
    };
    crate::daemon_status::started(
        &daemon.store,
        &daemon.opts.config.display().to_string(),
        daemon.config.global.bgp,
    );
    daemon.instrumentation = start_instrumentation(&daemon.config.global, &daemon.store);
    let names: Vec<String> = daemon.config.services.keys().cloned().collect();
    for name in names {
        daemon.start_service(&name);
    }
    crate::bgp::reconcile(&mut daemon.bgp, &daemon.config, &daemon.store);
    log::info!(target: LOG_TARGET, "rsbal {} started with {} service(s) from {}{}",
        env!("CARGO_PKG_VERSION"), daemon.services.len(), daemon.opts.config.display(),
        if daemon.opts.dry_run { " (dry run: IPVS is not changed)" } else { "" });
    systemd::ready(&daemon.status());
    for signal in signals.forever() {
        match signal {
            SIGHUP => {
                systemd::reloading();
                daemon.reload();
                systemd::ready(&daemon.status());
            }
            _ => break,
        }
    }
    systemd::stopping();
    daemon.shutdown();
    0
}

fn backend_choice(global: &GlobalConfig) -> BackendChoice {
    BackendChoice {
        kind: global.ipvs_backend,
        ipvsadm: global.ipvsadm.clone(),
    }
}

fn start_instrumentation(
    global: &GlobalConfig,
    store: &Arc<SnapshotStore>,
) -> Option<InstrumentationServer> {
    if !global.instrumentation {
        return None;
    }
    let addrs: Vec<SocketAddr> = global
        .instrumentation_ips
        .iter()
        .map(|ip| SocketAddr::new(*ip, global.instrumentation_port))
        .collect();
    match crate::instrumentation::start(&addrs, Arc::clone(store)) {
        Ok(server) => {
            log::info!(target: LOG_TARGET, "instrumentation listening on {:?}", server.local_addrs());
            Some(server)
        }
        Err(e) => {
            log::error!(target: LOG_TARGET, "cannot start instrumentation on {addrs:?}: {e}");
            None
        }
    }
}

impl Daemon {
    /// One line for `systemctl status`.
    fn status(&self) -> String {
        format!(
            "{} service(s) from {}",
            self.services.len(),
            self.opts.config.display()
        )
    }

    fn start_service(&mut self, name: &str) {
        let Some(config) = self.config.services.get(name) else {
            return;
        };
        match service::spawn(config.clone(), self.writer.clone(), Arc::clone(&self.store)) {
            Ok(handle) => {
                self.services.insert(name.to_string(), handle);
            }
            Err(e) => log::error!(target: name, "cannot start service: {e}"),
        }
    }

    /// SIGHUP: re-reads the config; a config with errors changes nothing.
    fn reload(&mut self) {
        log::info!(target: LOG_TARGET, "SIGHUP: reloading {}", self.opts.config.display());
        let loaded = match config::load(&self.opts.config) {
            Ok(loaded) => loaded,
            Err(errors) => {
                log_config_errors("reload rejected, the running configuration stays", &errors);
                let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
                let message = format!("rejected, {} error(s): {first}", errors.len());
                crate::daemon_status::reload_finished(&self.store, false, message);
                return;
            }
        };
        for w in &loaded.warnings {
            log::warn!(target: LOG_TARGET, "{w}");
        }
        let new = loaded.config;
        let d = diff::diff(&self.config, &new);
        if d.is_empty() {
            log::info!(target: LOG_TARGET, "reload: nothing changed");
            crate::daemon_status::reload_finished(&self.store, true, "nothing changed".into());
            return;
        }
        let summary = format!(
            "{} added, {} removed, {} changed, {} unchanged{}",
            d.added.len(),
            d.removed.len(),
            d.changed.len(),
            d.unchanged.len(),
            if d.global_changed {
                ", [global] changed"
            } else {
                ""
            }
        );
        log::info!(target: LOG_TARGET, "reload: {summary}");
        crate::daemon_status::reload_finished(&self.store, true, summary);
        let old_global = self.config.global.clone();
        self.config = new;
        for name in &d.removed {
            if let Some(handle) = self.services.remove(name) {
                handle.stop(true);
            }
        }
        for name in &d.changed {
            match (self.services.get(name), self.config.services.get(name)) {
                (Some(handle), Some(config)) => handle.reconfigure(config.clone()),
                (None, Some(_)) => self.start_service(name),
                _ => {}
            }
        }
        for name in &d.added {
            self.start_service(name);
        }
        if d.global_changed {
            self.apply_global(&old_global);
        }
        // The speaker announces the new set and withdraws what is gone.
        crate::bgp::reconcile(&mut self.bgp, &self.config, &self.store);
    }

    fn apply_global(&mut self, old: &GlobalConfig) {
        let new = self.config.global.clone();
        if backend_choice(old) != backend_choice(&new) {
            let _ = self
                .writer
                .send(WriterRequest::SetBackend(backend_choice(&new)));
        }
        if old.ipvs_reconcile_interval != new.ipvs_reconcile_interval {
            let _ = self.writer.send(WriterRequest::SetReconcileInterval(
                new.ipvs_reconcile_interval,
            ));
        }
        if old.bgp != new.bgp {
            crate::daemon_status::set_bgp_enabled(&self.store, new.bgp);
        }
        let instrumentation_changed = old.instrumentation != new.instrumentation
            || old.instrumentation_port != new.instrumentation_port
            || old.instrumentation_ips != new.instrumentation_ips;
        if instrumentation_changed {
            if let Some(server) = self.instrumentation.take() {
                server.stop();
            }
            self.instrumentation = start_instrumentation(&new, &self.store);
        }
    }

    /// SIGTERM/SIGINT: stop every thread; IPVS is left as it is.
    fn shutdown(mut self) {
        log::info!(target: LOG_TARGET, "shutting down; IPVS state is left in place");
        if let Some(speaker) = self.bgp.take() {
            speaker.stop();
        }
        for (_, handle) in std::mem::take(&mut self.services) {
            handle.stop(false);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.writer.send(WriterRequest::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(SHUTDOWN_FLUSH);
        }
        if let Some(server) = self.instrumentation.take() {
            server.stop();
        }
        log::info!(target: LOG_TARGET, "stopped");
    }
}
