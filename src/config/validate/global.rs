//! The `[global]` section: daemon-wide settings, and what `bgp = yes` needs.

use super::keys::{has, read_keys, warn_unknown_keys, GLOBAL_KEYS};
use super::report::Reader;
use super::values::*;
use crate::config::GlobalConfig;

pub(super) fn read_global(r: &mut Reader) -> GlobalConfig {
    let mut global = GlobalConfig::default();
    read_keys(r, GLOBAL_KEYS, "", "required key is missing", &mut global);
    if global.bgp_as_path.is_empty() {
        global.bgp_as_path = global.bgp_local_asn.into_iter().collect();
    }
    if global.bgp {
        require_bgp_basics(r, &global);
    }
    warn_dry_run_key(r);
    warn_unknown_keys(r, |key| has(GLOBAL_KEYS, key));
    global
}

/// `dry-run = yes` does nothing (PyBal never read the key either: its
/// template writes it, PyBal reads `dryrun` and its command line overrides
/// that); say so rather than let an operator believe IPVS is left alone.
fn warn_dry_run_key(r: &mut Reader) {
    let on = r
        .entry("dry-run")
        .is_some_and(|e| matches!(parse_boolean(&e.value), Ok(true)));
    if on {
        r.warning(
            "dry-run",
            "has no effect (nor had it in PyBal): IPVS IS changed; start rsbal with -n for a dry run"
                .to_string(),
        );
    }
}

/// With `bgp = yes`, a local ASN and at least one peer are needed.
pub(super) fn require_bgp_basics(r: &mut Reader, global: &GlobalConfig) {
    if global.bgp_local_asn.is_none() && r.entry("bgp-local-asn").is_none() {
        r.error("bgp-local-asn", "required when bgp is on".to_string());
    }
    let peers = r.entry("bgp-peer-address");
    if peers.is_none() {
        r.error(
            "bgp-peer-address",
            "required when bgp is on: at least one peer address".to_string(),
        );
    } else if peers.is_some_and(|e| parse_ip_list(&e.value).is_ok_and(|ips| ips.is_empty())) {
        r.error(
            "bgp-peer-address",
            "bgp is on but no peer address is given".to_string(),
        );
    }
}
