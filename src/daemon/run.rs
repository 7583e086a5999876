//! The running daemon: start-up, the signal loop and shutdown. It owns the
//! running config and the handles of every thread it started (services,
//! IpvsWriter, instrumentation server, BGP speaker).

use super::cli::RunOptions;
use super::{logging, systemd};
use crate::config::{self, Config, ConfigError, GlobalConfig};
use crate::ipvs::backend::{self, BackendChoice};
use crate::ipvs::writer::{self, WriteMode, WriterRequest};
use crate::service::{self, ServiceHandle};
use crate::status::server::InstrumentationServer;
use crate::status::snapshot::SnapshotStore;
use crossbeam_channel::Sender;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub(super) const LOG_TARGET: &str = "rsbal";
/// How long shutdown waits for the IpvsWriter to apply what is queued.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(500);

pub(super) fn log_config_errors(what: &str, errors: &[ConfigError]) {
    log::error!(target: LOG_TARGET, "{what}: {} error(s) in the configuration", errors.len());
    for e in errors {
        log::error!(target: LOG_TARGET, "{e}");
    }
}

/// Everything the running daemon owns.
pub(super) struct Daemon {
    pub(super) config: Config,
    pub(super) opts: RunOptions,
    pub(super) writer: Sender<WriterRequest>,
    pub(super) store: Arc<SnapshotStore>,
    pub(super) services: BTreeMap<String, ServiceHandle>,
    pub(super) instrumentation: Option<InstrumentationServer>,
    /// The BGP speaker, while `bgp = yes`.
    pub(super) bgp: Option<crate::bgp::Speaker>,
}

/// Runs the daemon until SIGTERM/SIGINT; returns the exit code.
pub(crate) fn run(opts: RunOptions) -> i32 {
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
    let store = Arc::new(SnapshotStore::new());
    let (writer, _writer_thread) = match writer::spawn(
        backend,
        mode,
        global.ipvs_reconcile_interval,
        Some(Arc::clone(&store)),
    ) {
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
        store,
        services: BTreeMap::new(),
        instrumentation: None,
        bgp: None,
    };
    crate::status::daemon::started(
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

pub(super) fn backend_choice(global: &GlobalConfig) -> BackendChoice {
    BackendChoice {
        kind: global.ipvs_backend,
        ipvsadm: global.ipvsadm.clone(),
        timeout: global.ipvs_command_timeout,
    }
}

pub(super) fn start_instrumentation(
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
    match crate::status::server::start(&addrs, Arc::clone(store)) {
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

    pub(super) fn start_service(&mut self, name: &str) {
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
        // An ipvsadm the writer still waits for must not outlive rsbal.
        let killed = crate::ipvs::child::kill_all_at_shutdown();
        if killed > 0 {
            log::warn!(target: LOG_TARGET, "killed {killed} ipvsadm process group(s) still running");
        }
        if let Some(server) = self.instrumentation.take() {
            server.stop();
        }
        log::info!(target: LOG_TARGET, "stopped");
    }
}
