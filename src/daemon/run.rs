//! The running daemon: start-up, the signal loop and shutdown. It owns the
//! running config and the handles of every thread it started (services,
//! IpvsWriter, instrumentation server, BGP speaker).

use super::cli::RunOptions;
use super::limits::{self, Assessment, Needs};
use super::{logging, systemd};
use crate::config::{self, Config, ConfigError, GlobalConfig};
use crate::ipvs::backend::{self, BackendChoice};
use crate::ipvs::writer::{self, WriteMode, WriterRequest};
use crate::monitor::check::Resource;
use crate::monitor::{CheckError, Step};
use crate::service::{self, ServiceHandle};
use crate::status::server::{self, BindError, Bound, InstrumentationServer, ListenAddr};
use crate::status::snapshot::SnapshotStore;
use crossbeam_channel::Sender;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::collections::{BTreeMap, HashSet};
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

/// Logs the config warnings not logged before: each distinct warning
/// (section, key and reason; not the line, which an edit above it moves)
/// once per run, not again on every reload.
pub(super) fn log_config_warnings(seen: &mut HashSet<String>, warnings: &[ConfigError]) {
    for w in warnings {
        let identity = format!("{:?}\0{:?}\0{}", w.section, w.key, w.reason);
        if seen.insert(identity) {
            log::warn!(target: LOG_TARGET, "{w}");
        }
    }
}

/// Logs the resource figures of `assessment` (`what`: "start", "reload");
/// true when the config fits, else each shortfall is an ERROR line.
pub(super) fn log_assessment(what: &str, assessment: &Assessment) -> bool {
    for line in assessment.lines() {
        log::info!(target: LOG_TARGET, "{line}");
    }
    for shortfall in &assessment.shortfalls {
        log::error!(target: LOG_TARGET, "{what}: {shortfall}");
    }
    assessment.shortfalls.is_empty()
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
    /// What the process used before any thread started: the base of every
    /// resource estimate (`limits`).
    pub(super) base_usage: Needs,
    /// Config warnings already logged.
    pub(super) warned: HashSet<String>,
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
    let mut warned = HashSet::new();
    log_config_warnings(&mut warned, &loaded.warnings);
    // Before any thread starts and before IPVS is touched: a config that
    // cannot fit the process's limits is refused.
    let base_usage = limits::in_use();
    limits::set_base_maps(base_usage.maps);
    let assessment = Assessment::of(&loaded.config, base_usage);
    if !log_assessment("cannot start", &assessment) {
        return 1;
    }
    crate::status::resources::declare();
    crate::monitor::reaper::become_subreaper();
    // Registered before any thread starts, so every thread inherits the mask
    // signal-hook needs and no signal is lost during start-up.
    let mut signals = match Signals::new([SIGTERM, SIGINT, SIGHUP]) {
        Ok(signals) => signals,
        Err(e) => {
            log::error!(target: LOG_TARGET, "cannot install signal handlers: {e}");
            return 1;
        }
    };
    // Every instrumentation address is bound before IPVS or BGP is touched:
    // a taken port stops rsbal here, with nothing changed (PyBal died on it
    // too, but only after resetting every IPVS service).
    let listeners = match bind_instrumentation(&instrumentation_addrs(&loaded.config.global)) {
        Ok(listeners) => listeners,
        Err(e) => {
            log::error!(target: LOG_TARGET, "cannot start: instrumentation {e} (instrumentation_ips, advertised_instrumentation_ips, instrumentation_port); nothing was changed");
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
        base_usage,
        warned,
    };
    crate::status::daemon::started(
        &daemon.store,
        &daemon.opts.config.display().to_string(),
        daemon.config.global.bgp,
    );
    if listeners.is_empty() && daemon.config.global.instrumentation {
        log::warn!(target: LOG_TARGET, "instrumentation = yes, but instrumentation_ips and advertised_instrumentation_ips are empty: not serving it");
    }
    if !listeners.is_empty() {
        match serve_instrumentation(listeners, &daemon.store) {
            Some(server) => daemon.instrumentation = Some(server),
            None => return 1,
        }
    }
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

/// Where instrumentation listens: `instrumentation_ips`, then
/// `advertised_instrumentation_ips` (bound with `IP_FREEBIND`: the address
/// follows the active balancer and may be configured later), each address
/// once; nothing when `instrumentation = no`.
pub(super) fn instrumentation_addrs(global: &GlobalConfig) -> Vec<ListenAddr> {
    if !global.instrumentation {
        return Vec::new();
    }
    let plain = global.instrumentation_ips.iter().map(|ip| (ip, false));
    let advertised = global
        .advertised_instrumentation_ips
        .iter()
        .map(|ip| (ip, true));
    let mut addrs: Vec<ListenAddr> = Vec::new();
    for (ip, freebind) in plain.chain(advertised) {
        let addr = SocketAddr::new(*ip, global.instrumentation_port);
        if !addrs.iter().any(|a| a.addr == addr) {
            addrs.push(ListenAddr { addr, freebind });
        }
    }
    addrs
}

/// Binds every address of `wanted`, or none: the first that cannot be
/// bound is the error (the ones bound before it are closed again).
pub(super) fn bind_instrumentation(wanted: &[ListenAddr]) -> Result<Vec<Bound>, BindError> {
    wanted.iter().map(|want| server::bind(*want)).collect()
}

/// Serves instrumentation on `listeners`; `None` (logged) when its threads
/// cannot be started.
pub(super) fn serve_instrumentation(
    listeners: Vec<Bound>,
    store: &Arc<SnapshotStore>,
) -> Option<InstrumentationServer> {
    match server::serve(listeners, Arc::clone(store)) {
        Ok(server) => {
            log::info!(target: LOG_TARGET, "instrumentation listening on {:?}", server.local_addrs());
            Some(server)
        }
        Err(e) => {
            log::error!(target: LOG_TARGET, "cannot start instrumentation: {e}");
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
            Err(e) => {
                // rsbal's own shortage (no thread): its IPVS service stays
                // as the kernel has it; `/alerts` is CRITICAL meanwhile.
                let reason = format!("cannot start service {name}: {e}");
                log::error!(target: name, "{reason}");
                let resource = CheckError::io(Step::Acquire, &e, reason.clone())
                    .resource()
                    .unwrap_or(Resource::Tasks);
                crate::status::resources::local_failure(&self.store, resource, &reason);
            }
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
        crate::monitor::reaper::clean_up_at_exit();
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
