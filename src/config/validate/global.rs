//! The `[global]` section: daemon-wide settings, and what `bgp = yes` needs.

use super::keys::{warn_unknown_keys, GLOBAL_KEYS};
use super::report::Reader;
use super::values::*;
use crate::config::GlobalConfig;

pub(super) fn read_global(r: &mut Reader) -> GlobalConfig {
    let defaults = GlobalConfig::default();
    let bgp_local_asn = r.optional("bgp-local-asn", parse_u32);
    let bgp_as_path = r
        .optional("bgp-as-path", parse_as_path)
        .unwrap_or_else(|| bgp_local_asn.into_iter().collect());
    let global = GlobalConfig {
        bgp: r.optional("bgp", parse_boolean).unwrap_or(defaults.bgp),
        bgp_local_asn,
        bgp_peer_addresses: r
            .optional("bgp-peer-address", parse_ip_list)
            .unwrap_or_default(),
        bgp_as_path,
        bgp_med: r.optional("bgp-med", parse_u32).unwrap_or(defaults.bgp_med),
        bgp_nexthop_ipv4: r.optional("bgp-nexthop-ipv4", parse_ipv4),
        bgp_nexthop_ipv6: r.optional("bgp-nexthop-ipv6", parse_ipv6),
        bgp_local_ips: r
            .optional("bgp-local-ips", parse_ip_list)
            .unwrap_or(defaults.bgp_local_ips),
        bgp_local_port: r
            .optional("bgp-local-port", parse_port)
            .unwrap_or(defaults.bgp_local_port),
        bgp_peer_port: r
            .optional("bgp-peer-port", parse_nonzero_port)
            .unwrap_or(defaults.bgp_peer_port),
        bgp_graceful_restart: r
            .optional("bgp-graceful-restart", parse_restart_time)
            .unwrap_or(defaults.bgp_graceful_restart),
        instrumentation: r
            .optional("instrumentation", parse_boolean)
            .unwrap_or(defaults.instrumentation),
        instrumentation_port: r
            .optional("instrumentation_port", parse_port)
            .unwrap_or(defaults.instrumentation_port),
        instrumentation_ips: r
            .optional("instrumentation_ips", parse_ip_list)
            .unwrap_or(defaults.instrumentation_ips),
        ipvsadm: r
            .optional("ipvsadm", parse_path)
            .unwrap_or(defaults.ipvsadm),
        ipvs_backend: r.optional("ipvs-backend", parse_ipvs_backend),
        ipvs_reconcile_interval: r
            .optional("ipvs-reconcile-interval", parse_interval_or_off)
            .unwrap_or(defaults.ipvs_reconcile_interval),
    };
    if global.bgp {
        require_bgp_basics(r, &global);
    }
    warn_unknown_keys(r, |key| GLOBAL_KEYS.contains(&key));
    global
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
