//! Destinations kept for servers whose names do not resolve (pure).
//!
//! At a restart the IpvsWriter adopts the kernel's table. A server whose name
//! does not resolve has no address, so its service's desired table cannot
//! name its destination, and a plain diff would delete it: a failed lookup
//! would take a (probably healthy) server out of IPVS. So a service tells
//! the writer which of its servers never resolved and the addresses of all
//! the others ([`Unresolved`]); while there are such servers, the writer
//! keeps the destinations it adopted for that service that no server of the
//! service accounts for ([`held`]). They go once every name resolves (each
//! server then decides for its own address) or once the unresolved servers
//! leave the list.

use super::{Dest, ServiceTable};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

/// What a service cannot account for in its desired table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Unresolved {
    /// Servers whose names never resolved, sorted.
    pub(crate) hosts: Vec<String>,
    /// The address of every other server of the service, pooled or not: a
    /// destination at one of these is the service's own decision.
    pub(crate) known: BTreeSet<IpAddr>,
}

/// The destinations of `candidates` (adopted from the kernel, or kept so
/// far) to keep beside `wanted`: none when every name resolves, else those
/// that `wanted` does not have and no known server is at.
pub(crate) fn held(
    candidates: &BTreeMap<SocketAddr, Dest>,
    wanted: &ServiceTable,
    unresolved: &Unresolved,
) -> BTreeMap<SocketAddr, Dest> {
    if unresolved.hosts.is_empty() {
        return BTreeMap::new();
    }
    candidates
        .iter()
        .filter(|(addr, _)| {
            !wanted.dests.contains_key(*addr) && !unresolved.known.contains(&addr.ip())
        })
        .map(|(addr, dest)| (*addr, *dest))
        .collect()
}

/// `wanted` with the `held` destinations added.
pub(crate) fn with_held(
    mut wanted: ServiceTable,
    held: &BTreeMap<SocketAddr, Dest>,
) -> ServiceTable {
    for (addr, dest) in held {
        wanted.dests.entry(*addr).or_insert(*dest);
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use crate::ipvs::{ServiceKey, VirtualService};

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn dests(list: &[(&str, u32)]) -> BTreeMap<SocketAddr, Dest> {
        list.iter().map(|(a, w)| (sa(a), Dest::dr(*w))).collect()
    }

    fn table(list: &[(&str, u32)]) -> ServiceTable {
        ServiceTable {
            service: VirtualService {
                key: ServiceKey {
                    protocol: Protocol::Tcp,
                    addr: sa("192.0.2.1:80"),
                },
                scheduler: "wrr".into(),
                ops: false,
            },
            dests: dests(list),
        }
    }

    fn unresolved(hosts: &[&str], known: &[&str]) -> Unresolved {
        Unresolved {
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            known: known.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    #[test]
    fn nothing_is_held_when_every_name_resolves() {
        let adopted = dests(&[("10.0.0.2:80", 10), ("10.0.0.3:80", 10)]);
        let held = held(&adopted, &table(&[]), &unresolved(&[], &[]));
        assert!(held.is_empty());
    }

    #[test]
    fn a_restart_with_no_name_resolving_keeps_every_adopted_destination() {
        let adopted = dests(&[("10.0.0.2:80", 10), ("10.0.0.3:80", 20)]);
        let wanted = table(&[]);
        let held = held(&adopted, &wanted, &unresolved(&["a", "b"], &[]));
        assert_eq!(held, adopted);
        assert_eq!(with_held(wanted, &held).dests, adopted);
    }

    #[test]
    fn known_servers_decide_for_their_own_addresses() {
        // 10.0.0.2 resolved and is pooled at a new weight, 10.0.0.3 resolved
        // and is depooled (its monitor says down), 10.0.0.4 belongs to
        // nobody that resolved: it is kept for the unresolved server.
        let adopted = dests(&[
            ("10.0.0.2:80", 10),
            ("10.0.0.3:80", 10),
            ("10.0.0.4:80", 10),
        ]);
        let wanted = table(&[("10.0.0.2:80", 30)]);
        let u = unresolved(&["c"], &["10.0.0.2", "10.0.0.3"]);
        let held = held(&adopted, &wanted, &u);
        assert_eq!(held, dests(&[("10.0.0.4:80", 10)]));
        assert_eq!(
            with_held(wanted, &held).dests,
            dests(&[("10.0.0.2:80", 30), ("10.0.0.4:80", 10)])
        );
    }
}
