//! From INI text to a typed [`Config`](super::Config), collecting every error.
//!
//! This module owns the meaning of every key of `pybal.conf`. It never stops
//! at the first problem: every error is collected with file, line, section
//! and key, and harmless oddities (unknown keys, unused monitor options, a
//! service without monitors) become warnings. By concern:
//!
//! - `keys`: the key tables, one per section kind (`[global]`, a service,
//!   each monitor's options): name, parser, default, doc line. Reading,
//!   unknown-key warnings and the man page test all use them.
//! - `global`, `service`, `monitors`: read one section through its table,
//!   plus what a table cannot say (`bgp = yes` needs peers, `ops` only on
//!   udp, the `monitors` list).
//! - `values`: the value parsers, text to typed value or a [`ValueError`](values::ValueError).
//! - `checks`: checks across sections (duplicate services, BGP next hops
//!   and MEDs).
//! - `programs`: programs the config names that cannot be run (warnings;
//!   the file system is asked through a probe, so the rest stays pure).
//! - `report`: where a problem is, and the errors and warnings so far.

mod checks;
mod global;
mod keys;
mod monitors;
pub(crate) mod programs;
mod report;
mod service;
mod values;

#[cfg(test)]
mod tests;

use super::ini;
use super::{Config, ConfigError, GlobalConfig, Loaded};
use checks::{
    check_bgp_meds, check_bgp_next_hops, check_duplicate_services, resolve_relative_sources,
};
use global::read_global;
use keys::{warn_repeated_sections, warn_unknown_default_keys, GLOBAL_SECTION};
use report::{Place, Reader, Report};
use service::read_service;
use std::collections::BTreeMap;
use std::path::Path;

/// Parses and validates the main config text read from `path`, without
/// looking at the programs it names (tests, and the fuzz target).
pub(crate) fn from_str(path: &Path, text: &str) -> Result<Loaded, Vec<ConfigError>> {
    from_str_probing(path, text, &|_| None)
}

/// Parses and validates the main config text read from `path`; `probe`
/// says why a program it names cannot be run (a warning).
pub(crate) fn from_str_probing(
    path: &Path,
    text: &str,
    probe: programs::Probe<'_>,
) -> Result<Loaded, Vec<ConfigError>> {
    let (ini, line_problems) = ini::parse(text);
    let mut report = Report::new(path);
    for (line, reason) in line_problems {
        report.error(Place::line(line), reason);
    }
    warn_repeated_sections(&ini, &mut report);
    warn_unknown_default_keys(&ini, &mut report);

    let global = match ini.section(GLOBAL_SECTION) {
        Some(section) => read_global(&mut Reader::new(&ini, section, &mut report)),
        None => GlobalConfig::default(),
    };
    let mut services = BTreeMap::new();
    for section in ini.sections.iter().filter(|s| s.name != GLOBAL_SECTION) {
        let service = read_service(&mut Reader::new(&ini, section, &mut report));
        if let Some(service) = service {
            services.insert(service.name.clone(), service);
        }
    }
    check_duplicate_services(&ini, &services, &mut report);
    programs::warn_missing_programs(&ini, &global, &services, probe, &mut report);
    resolve_relative_sources(path, &mut services);
    if global.bgp {
        check_bgp_next_hops(&ini, &global, &services, &mut report);
        check_bgp_meds(&ini, &global, &services, &mut report);
    }
    report.finish(Config {
        path: path.to_path_buf(),
        global,
        services,
    })
}
