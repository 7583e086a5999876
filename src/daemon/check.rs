//! `rsbal --check`: validates a config and every local server list it names,
//! printing what an operator must fix, and the fds, tasks and memory maps
//! the config needs against the limits in force (`limits`); changes nothing.

use super::limits::{self, Assessment};
use crate::config::{self, SourceUrl};
use crate::source::serverlist;
use std::path::Path;

/// `--check`: validates the config and every local server list.
pub(crate) fn check(path: &Path) -> i32 {
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
    if loaded.config.services.is_empty() {
        eprintln!(
            "warning: {}: no service is configured: rsbal would manage no IPVS service, and a running rsbal rejects a reload to this file",
            path.display()
        );
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
    // The same figures and refusal as at start.
    let assessment = Assessment::of(&loaded.config, limits::in_use());
    for line in assessment.lines() {
        println!("{line}");
    }
    if !assessment.shortfalls.is_empty() {
        for shortfall in &assessment.shortfalls {
            eprintln!("error: {shortfall}");
        }
        eprintln!("{}: does not fit the limits in force", path.display());
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
    let text = match crate::source::read_for_check(list).map(String::from_utf8) {
        Ok(Ok(text)) => text,
        Ok(Err(_)) => {
            eprintln!(
                "error: {}: [{service}] config: the server list is not UTF-8 text",
                list.display()
            );
            return 1;
        }
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
