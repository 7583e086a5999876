//! SIGHUP: load the new config, reject it whole if it has errors or would
//! remove every service, else apply the difference service by service (see
//! ARCHITECTURE.md, "Reload"). A renamed section keeps its service thread
//! and IPVS service.

use super::limits::Assessment;
use super::run::{
    backend_choice, bind_instrumentation, instrumentation_addrs, log_assessment, log_config_errors,
    log_config_warnings, serve_instrumentation, Daemon, LOG_TARGET,
};
use crate::config::{self, diff, GlobalConfig};
use crate::ipvs::writer::WriterRequest;
use crate::status::server::{BindError, Bound};

impl Daemon {
    /// SIGHUP: re-reads the config; a config with errors changes nothing.
    pub(super) fn reload(&mut self) {
        log::info!(target: LOG_TARGET, "SIGHUP: reloading {}", self.opts.config.display());
        let loaded = match config::load(&self.opts.config) {
            Ok(loaded) => loaded,
            Err(errors) => {
                log_config_errors("reload rejected, the running configuration stays", &errors);
                let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
                let message = format!("rejected, {} error(s): {first}", errors.len());
                crate::status::daemon::reload_finished(&self.store, false, message);
                return;
            }
        };
        log_config_warnings(&mut self.warned, &loaded.warnings);
        let new = loaded.config;
        if new.services.is_empty() && !self.config.services.is_empty() {
            let why = format!(
                "{} has no service; it would remove all {} running service(s) from IPVS (stop rsbal to remove them all)",
                self.opts.config.display(),
                self.config.services.len()
            );
            log::error!(target: LOG_TARGET, "reload rejected, the running configuration stays: {why}");
            crate::status::daemon::reload_finished(&self.store, false, format!("rejected: {why}"));
            return;
        }
        let assessment = Assessment::of(&new, self.base_usage);
        if !log_assessment(
            "reload rejected, the running configuration stays",
            &assessment,
        ) {
            let first = assessment
                .shortfalls
                .first()
                .map(|s| s.to_string())
                .unwrap_or_default();
            crate::status::daemon::reload_finished(
                &self.store,
                false,
                format!("rejected: {first}"),
            );
            return;
        }
        // New instrumentation addresses are bound before anything changes:
        // one that cannot be rejects the reload, the running listeners stay.
        let instrumentation = match self.bind_new_instrumentation(&new.global) {
            Ok(instrumentation) => instrumentation,
            Err(e) => {
                let message = format!("rejected: instrumentation {e}");
                log::error!(target: LOG_TARGET, "reload rejected, the running configuration stays: instrumentation {e}");
                crate::status::daemon::reload_finished(&self.store, false, message);
                return;
            }
        };
        let d = diff::diff(&self.config, &new);
        if d.is_empty() {
            log::info!(target: LOG_TARGET, "reload: nothing changed");
            crate::status::daemon::reload_finished(&self.store, true, "nothing changed".into());
            return;
        }
        let summary = format!(
            "{} added, {} removed, {} changed, {} renamed, {} unchanged{}",
            d.added.len(),
            d.removed.len(),
            d.changed.len(),
            d.renamed.len(),
            d.unchanged.len(),
            if d.global_changed {
                ", [global] changed"
            } else {
                ""
            }
        );
        log::info!(target: LOG_TARGET, "reload: {summary}");
        crate::status::daemon::reload_finished(&self.store, true, summary);
        let old_global = self.config.global.clone();
        self.config = new;
        for name in &d.removed {
            if let Some(handle) = self.services.remove(name) {
                handle.stop(true);
            }
        }
        for r in &d.renamed {
            log::info!(target: LOG_TARGET, "reload: [{}] renamed to [{}]{}", r.from, r.to,
                if r.changed { " and changed" } else { "" });
            match (
                self.services.remove(&r.from),
                self.config.services.get(&r.to),
            ) {
                (Some(handle), Some(config)) => {
                    handle.reconfigure(config.clone());
                    self.services.insert(r.to.clone(), handle);
                }
                (None, Some(_)) => self.start_service(&r.to),
                (Some(handle), None) => handle.stop(true),
                (None, None) => {}
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
        if let Some(fresh) = instrumentation {
            self.switch_instrumentation(fresh);
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
            crate::status::daemon::set_bgp_enabled(&self.store, new.bgp);
        }
    }

    /// Binds the instrumentation addresses of `new` that are not served
    /// yet. `None`: the set of addresses is unchanged.
    fn bind_new_instrumentation(
        &self,
        new: &GlobalConfig,
    ) -> Result<Option<Vec<Bound>>, BindError> {
        let wanted = instrumentation_addrs(new);
        let served = self
            .instrumentation
            .as_ref()
            .map_or(&[][..], |server| server.wanted_addrs());
        let same = wanted.len() == served.len() && wanted.iter().all(|w| served.contains(&w.addr));
        if same {
            return Ok(None);
        }
        let fresh: Vec<_> = wanted
            .into_iter()
            .filter(|w| !served.contains(&w.addr))
            .collect();
        bind_instrumentation(&fresh).map(Some)
    }

    /// Serves instrumentation on the running config's addresses: the
    /// sockets of addresses it keeps are handed over still bound, those of
    /// addresses it dropped are closed, `fresh` ones are added.
    fn switch_instrumentation(&mut self, fresh: Vec<Bound>) {
        let wanted = instrumentation_addrs(&self.config.global);
        let mut listeners = self
            .instrumentation
            .take()
            .map(|server| server.into_listeners())
            .unwrap_or_default();
        listeners.retain(|b| wanted.iter().any(|w| w.addr == b.addr));
        listeners.extend(fresh);
        if listeners.is_empty() {
            log::info!(target: LOG_TARGET, "instrumentation stopped");
            return;
        }
        self.instrumentation = serve_instrumentation(listeners, &self.store);
    }
}
