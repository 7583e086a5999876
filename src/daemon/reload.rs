//! SIGHUP: load the new config, reject it whole if it has errors or would
//! remove every service, else apply the difference service by service (see
//! ARCHITECTURE.md, "Reload"). A renamed section keeps its service thread
//! and IPVS service.

use super::limits::Assessment;
use super::run::{
    backend_choice, log_assessment, log_config_errors, log_config_warnings, start_instrumentation,
    Daemon, LOG_TARGET,
};
use crate::config::{self, diff, GlobalConfig};
use crate::ipvs::writer::WriterRequest;

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
}
