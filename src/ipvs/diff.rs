//! Smallest command list that turns one IPVS table into another (pure).
//!
//! This module owns the table arithmetic of the IPVS layer: [`diff_service`]
//! and [`diff_tables`] compute the commands that make the kernel's table
//! (`current`) match what rsbal wants (`desired`), and [`apply`] updates a
//! model table as if a command had succeeded, so the writer can track what
//! the kernel holds without re-reading it.
//!
//! Every command list is valid against the kernel's rules when replayed in
//! order on `current`: a service is added before its destinations, a
//! destination is never added twice, edited or deleted while absent, and a
//! deleted service takes its destinations with it (no `DeleteDest` first).
//! Output order is deterministic (`BTreeMap` order).

use super::{Dest, IpvsCommand, ServiceKey, ServiceTable, Table};
use std::collections::BTreeSet;
use std::net::SocketAddr;

/// Commands that turn one service (`current`, as the kernel has it) into
/// `desired`. `None` means the service does not exist.
///
/// - none → some: `AddService`, then `AddDest` for every destination;
/// - some → none: `DeleteService` only (the kernel drops its destinations);
/// - some → some: `EditService` when the scheduler or one-packet flag differ,
///   then `DeleteDest` for unwanted destinations, `EditDest` for changed
///   weights or forwarding methods and `AddDest` for new ones (deletes
///   before adds).
///
/// Should the two sides name different services (callers pair them by key,
/// so this does not happen in rsbal), the current one is deleted and the
/// desired one created.
pub(crate) fn diff_service(
    current: Option<&ServiceTable>,
    desired: Option<&ServiceTable>,
) -> Vec<IpvsCommand> {
    match (current, desired) {
        (None, None) => Vec::new(),
        (None, Some(d)) => create(d),
        (Some(c), None) => vec![IpvsCommand::DeleteService(c.service.key)],
        (Some(c), Some(d)) if c.service.key != d.service.key => {
            let mut cmds = vec![IpvsCommand::DeleteService(c.service.key)];
            cmds.extend(create(d));
            cmds
        }
        (Some(c), Some(d)) => update(c, d),
    }
}

/// Commands that turn the table `current` into `desired`, service by service
/// over the union of their keys, in key order.
pub(crate) fn diff_tables(current: &Table, desired: &Table) -> Vec<IpvsCommand> {
    let keys: BTreeSet<&ServiceKey> = current.keys().chain(desired.keys()).collect();
    keys.into_iter()
        .flat_map(|key| diff_service(current.get(key), desired.get(key)))
        .collect()
}

/// Updates the model `table` as if `cmd` had succeeded in the kernel.
///
/// Commands the kernel would refuse change nothing here, except that
/// `AddService` for a known service only updates its settings (keeping its
/// destinations) and `AddDest` for a known destination sets its weight.
pub(crate) fn apply(table: &mut Table, cmd: &IpvsCommand) {
    match cmd {
        IpvsCommand::AddService(vs) => {
            table
                .entry(vs.key)
                .and_modify(|st| st.service = vs.clone())
                .or_insert_with(|| ServiceTable {
                    service: vs.clone(),
                    dests: Default::default(),
                });
        }
        IpvsCommand::EditService(vs) => {
            if let Some(st) = table.get_mut(&vs.key) {
                st.service = vs.clone();
            }
        }
        IpvsCommand::DeleteService(key) => {
            table.remove(key);
        }
        IpvsCommand::AddDest {
            service,
            dest,
            weight,
            forwarding,
        }
        | IpvsCommand::EditDest {
            service,
            dest,
            weight,
            forwarding,
        } => {
            if let Some(st) = table.get_mut(service) {
                st.dests.insert(
                    *dest,
                    Dest {
                        weight: *weight,
                        forwarding: *forwarding,
                    },
                );
            }
        }
        IpvsCommand::DeleteDest { service, dest } => {
            if let Some(st) = table.get_mut(service) {
                st.dests.remove(dest);
            }
        }
    }
}

#[cfg(test)]
/// Whether the kernel would accept `cmd` on `table`: no service or
/// destination added twice, none edited or deleted while absent. Every
/// command list of this module is accepted in order.
pub(crate) fn accepts(table: &Table, cmd: &IpvsCommand) -> bool {
    match cmd {
        IpvsCommand::AddService(vs) => !table.contains_key(&vs.key),
        IpvsCommand::EditService(vs) => table.contains_key(&vs.key),
        IpvsCommand::DeleteService(k) => table.contains_key(k),
        IpvsCommand::AddDest { service, dest, .. } => table
            .get(service)
            .is_some_and(|s| !s.dests.contains_key(dest)),
        IpvsCommand::EditDest { service, dest, .. } | IpvsCommand::DeleteDest { service, dest } => {
            table
                .get(service)
                .is_some_and(|s| s.dests.contains_key(dest))
        }
    }
}

/// A service that does not exist yet: the service, then its destinations.
fn create(d: &ServiceTable) -> Vec<IpvsCommand> {
    let key = d.service.key;
    std::iter::once(IpvsCommand::AddService(d.service.clone()))
        .chain(
            d.dests
                .iter()
                .map(|(dest, spec)| add_dest(key, *dest, spec)),
        )
        .collect()
}

fn add_dest(service: ServiceKey, dest: SocketAddr, spec: &Dest) -> IpvsCommand {
    IpvsCommand::AddDest {
        service,
        dest,
        weight: spec.weight,
        forwarding: spec.forwarding,
    }
}

/// The same service on both sides: settings, then deletes, edits, adds.
fn update(c: &ServiceTable, d: &ServiceTable) -> Vec<IpvsCommand> {
    let key = d.service.key;
    let mut cmds = Vec::new();
    if c.service.scheduler != d.service.scheduler || c.service.ops != d.service.ops {
        cmds.push(IpvsCommand::EditService(d.service.clone()));
    }
    cmds.extend(
        c.dests
            .keys()
            .filter(|dest| !d.dests.contains_key(dest))
            .map(|dest| IpvsCommand::DeleteDest {
                service: key,
                dest: *dest,
            }),
    );
    cmds.extend(
        d.dests
            .iter()
            .filter_map(|(dest, spec)| match c.dests.get(dest) {
                Some(old) if old != spec => Some(IpvsCommand::EditDest {
                    service: key,
                    dest: *dest,
                    weight: spec.weight,
                    forwarding: spec.forwarding,
                }),
                _ => None,
            }),
    );
    cmds.extend(
        d.dests
            .iter()
            .filter(|(dest, _)| !c.dests.contains_key(dest))
            .map(|(dest, spec)| add_dest(key, *dest, spec)),
    );
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use crate::ipvs::{ForwardingMethod, VirtualService};
    use std::collections::BTreeMap;
    use std::net::SocketAddr;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn key(proto: Protocol, addr: &str) -> ServiceKey {
        ServiceKey {
            protocol: proto,
            addr: sa(addr),
        }
    }

    fn vs(k: ServiceKey, sched: &str, ops: bool) -> VirtualService {
        VirtualService {
            key: k,
            scheduler: sched.to_string(),
            ops,
        }
    }

    fn st(k: ServiceKey, sched: &str, ops: bool, dests: &[(&str, u32)]) -> ServiceTable {
        ServiceTable {
            service: vs(k, sched, ops),
            dests: dests.iter().map(|(a, w)| (sa(a), Dest::dr(*w))).collect(),
        }
    }

    fn web() -> ServiceKey {
        key(Protocol::Tcp, "10.0.0.1:80")
    }

    /// Applies commands the way the kernel would, refusing invalid ones.
    fn apply_strict(table: &mut Table, cmd: &IpvsCommand) -> Result<(), String> {
        if !accepts(table, cmd) {
            return Err(format!("kernel would refuse {cmd:?}"));
        }
        apply(table, cmd);
        Ok(())
    }

    #[test]
    fn none_to_none_is_empty() {
        assert!(diff_service(None, None).is_empty());
    }

    #[test]
    fn create_service_then_dests_in_order() {
        let d = st(
            web(),
            "wrr",
            false,
            &[("10.0.0.3:80", 5), ("10.0.0.2:80", 10)],
        );
        assert_eq!(
            diff_service(None, Some(&d)),
            vec![
                IpvsCommand::AddService(vs(web(), "wrr", false)),
                IpvsCommand::AddDest {
                    service: web(),
                    dest: sa("10.0.0.2:80"),
                    weight: 10,
                    forwarding: ForwardingMethod::Dr
                },
                IpvsCommand::AddDest {
                    service: web(),
                    dest: sa("10.0.0.3:80"),
                    weight: 5,
                    forwarding: ForwardingMethod::Dr
                },
            ]
        );
    }

    #[test]
    fn create_empty_service() {
        let d = st(web(), "rr", false, &[]);
        assert_eq!(
            diff_service(None, Some(&d)),
            vec![IpvsCommand::AddService(vs(web(), "rr", false))]
        );
    }

    #[test]
    fn delete_service_only() {
        let c = st(
            web(),
            "wrr",
            false,
            &[("10.0.0.2:80", 10), ("10.0.0.3:80", 10)],
        );
        assert_eq!(
            diff_service(Some(&c), None),
            vec![IpvsCommand::DeleteService(web())]
        );
    }

    #[test]
    fn equal_services_give_nothing() {
        let c = st(web(), "wrr", true, &[("10.0.0.2:80", 10)]);
        assert!(diff_service(Some(&c), Some(&c.clone())).is_empty());
    }

    #[test]
    fn scheduler_change_is_edit_service() {
        let c = st(web(), "wrr", false, &[("10.0.0.2:80", 10)]);
        let d = st(web(), "wlc", false, &[("10.0.0.2:80", 10)]);
        assert_eq!(
            diff_service(Some(&c), Some(&d)),
            vec![IpvsCommand::EditService(vs(web(), "wlc", false))]
        );
    }

    #[test]
    fn ops_change_is_edit_service() {
        let k = key(Protocol::Udp, "[2001:db8::1]:53");
        let c = st(k, "rr", false, &[]);
        let d = st(k, "rr", true, &[]);
        assert_eq!(
            diff_service(Some(&c), Some(&d)),
            vec![IpvsCommand::EditService(vs(k, "rr", true))]
        );
    }

    #[test]
    fn dest_changes_delete_edit_add() {
        let c = st(
            web(),
            "wrr",
            false,
            &[("10.0.0.2:80", 10), ("10.0.0.3:80", 10), ("10.0.0.5:80", 1)],
        );
        let d = st(
            web(),
            "sh",
            false,
            &[("10.0.0.1:80", 7), ("10.0.0.3:80", 20), ("10.0.0.5:80", 1)],
        );
        assert_eq!(
            diff_service(Some(&c), Some(&d)),
            vec![
                IpvsCommand::EditService(vs(web(), "sh", false)),
                IpvsCommand::DeleteDest {
                    service: web(),
                    dest: sa("10.0.0.2:80")
                },
                IpvsCommand::EditDest {
                    service: web(),
                    dest: sa("10.0.0.3:80"),
                    weight: 20,
                    forwarding: ForwardingMethod::Dr
                },
                IpvsCommand::AddDest {
                    service: web(),
                    dest: sa("10.0.0.1:80"),
                    weight: 7,
                    forwarding: ForwardingMethod::Dr
                },
            ]
        );
    }

    #[test]
    fn forwarding_change_is_edit_dest() {
        let c = st(web(), "wrr", false, &[("10.0.0.2:80", 10)]);
        let mut d = c.clone();
        d.dests.insert(
            sa("10.0.0.2:80"),
            Dest {
                weight: 10,
                forwarding: ForwardingMethod::Nat,
            },
        );
        assert_eq!(
            diff_service(Some(&c), Some(&d)),
            vec![IpvsCommand::EditDest {
                service: web(),
                dest: sa("10.0.0.2:80"),
                weight: 10,
                forwarding: ForwardingMethod::Nat
            }]
        );
        let created = diff_service(None, Some(&d));
        assert_eq!(
            created[1],
            IpvsCommand::AddDest {
                service: web(),
                dest: sa("10.0.0.2:80"),
                weight: 10,
                forwarding: ForwardingMethod::Nat
            }
        );
    }

    #[test]
    fn mismatched_keys_recreate() {
        let other = key(Protocol::Udp, "10.0.0.1:80");
        let c = st(web(), "wrr", false, &[("10.0.0.2:80", 10)]);
        let d = st(other, "wrr", false, &[("10.0.0.2:80", 10)]);
        let cmds = diff_service(Some(&c), Some(&d));
        assert_eq!(cmds[0], IpvsCommand::DeleteService(web()));
        assert_eq!(cmds[1], IpvsCommand::AddService(vs(other, "wrr", false)));
        assert_eq!(cmds.len(), 3);
    }

    #[test]
    fn tables_union_of_keys_in_order() {
        let a = key(Protocol::Tcp, "10.0.0.1:80");
        let b = key(Protocol::Tcp, "10.0.0.1:443");
        let u = key(Protocol::Udp, "10.0.0.1:53");
        let mut current = Table::new();
        current.insert(a, st(a, "wrr", false, &[("10.0.0.2:80", 10)]));
        current.insert(b, st(b, "wrr", false, &[("10.0.0.2:443", 10)]));
        let mut desired = Table::new();
        desired.insert(b, st(b, "wrr", false, &[("10.0.0.2:443", 5)]));
        desired.insert(u, st(u, "rr", true, &[("10.0.0.3:53", 1)]));
        assert_eq!(
            diff_tables(&current, &desired),
            vec![
                IpvsCommand::DeleteService(a),
                IpvsCommand::EditDest {
                    service: b,
                    dest: sa("10.0.0.2:443"),
                    weight: 5,
                    forwarding: ForwardingMethod::Dr
                },
                IpvsCommand::AddService(vs(u, "rr", true)),
                IpvsCommand::AddDest {
                    service: u,
                    dest: sa("10.0.0.3:53"),
                    weight: 1,
                    forwarding: ForwardingMethod::Dr
                },
            ]
        );
        assert!(diff_tables(&desired, &desired).is_empty());
        assert!(diff_tables(&Table::new(), &Table::new()).is_empty());
    }

    #[test]
    fn apply_each_command() {
        let mut t = Table::new();
        apply(&mut t, &IpvsCommand::AddService(vs(web(), "wrr", false)));
        assert_eq!(t[&web()], st(web(), "wrr", false, &[]));
        let d = sa("10.0.0.2:80");
        apply(
            &mut t,
            &IpvsCommand::AddDest {
                service: web(),
                dest: d,
                weight: 10,
                forwarding: ForwardingMethod::Dr,
            },
        );
        apply(
            &mut t,
            &IpvsCommand::EditDest {
                service: web(),
                dest: d,
                weight: 3,
                forwarding: ForwardingMethod::Dr,
            },
        );
        assert_eq!(t[&web()].dests.get(&d), Some(&Dest::dr(3)));
        apply(&mut t, &IpvsCommand::EditService(vs(web(), "rr", true)));
        assert_eq!(t[&web()].service, vs(web(), "rr", true));
        // AddService on a known service keeps its destinations.
        apply(&mut t, &IpvsCommand::AddService(vs(web(), "wrr", false)));
        assert_eq!(t[&web()], st(web(), "wrr", false, &[("10.0.0.2:80", 3)]));
        apply(
            &mut t,
            &IpvsCommand::DeleteDest {
                service: web(),
                dest: d,
            },
        );
        assert!(t[&web()].dests.is_empty());
        apply(&mut t, &IpvsCommand::DeleteService(web()));
        assert!(t.is_empty());
        // Commands on unknown services change nothing.
        apply(
            &mut t,
            &IpvsCommand::AddDest {
                service: web(),
                dest: d,
                weight: 1,
                forwarding: ForwardingMethod::Dr,
            },
        );
        apply(&mut t, &IpvsCommand::EditService(vs(web(), "rr", false)));
        apply(
            &mut t,
            &IpvsCommand::DeleteDest {
                service: web(),
                dest: d,
            },
        );
        apply(&mut t, &IpvsCommand::DeleteService(web()));
        assert!(t.is_empty());
    }

    fn random_table(rng: &mut fastrand::Rng) -> Table {
        const VIPS: &[&str] = &["10.0.0.1", "10.0.0.2", "[2001:db8::1]"];
        const SCHEDS: &[&str] = &["rr", "wrr", "sh"];
        let mut table = Table::new();
        for _ in 0..rng.usize(0..5) {
            let proto = if rng.bool() {
                Protocol::Tcp
            } else {
                Protocol::Udp
            };
            let vip = VIPS[rng.usize(..VIPS.len())];
            let port = [53u16, 80, 443][rng.usize(..3)];
            let k = key(proto, &format!("{vip}:{port}"));
            let sched = SCHEDS[rng.usize(..SCHEDS.len())];
            let mut dests = BTreeMap::new();
            for _ in 0..rng.usize(0..6) {
                let dest = if k.addr.is_ipv4() {
                    sa(&format!("10.1.0.{}:{port}", rng.u8(1..8)))
                } else {
                    sa(&format!("[2001:db8::{:x}]:{port}", rng.u8(1..8)))
                };
                let forwarding = [
                    ForwardingMethod::Dr,
                    ForwardingMethod::Nat,
                    ForwardingMethod::Tunnel,
                ][rng.usize(..3)];
                dests.insert(
                    dest,
                    Dest {
                        weight: rng.u32(0..4),
                        forwarding,
                    },
                );
            }
            table.insert(
                k,
                ServiceTable {
                    service: vs(k, sched, rng.bool()),
                    dests,
                },
            );
        }
        table
    }

    #[test]
    fn property_diff_then_apply_reaches_desired() {
        let mut rng = fastrand::Rng::with_seed(0x05ee_d1b5);
        for round in 0..2000 {
            let current = random_table(&mut rng);
            let desired = random_table(&mut rng);
            let cmds = diff_tables(&current, &desired);
            let mut model = current.clone();
            for cmd in &cmds {
                if let Err(e) = apply_strict(&mut model, cmd) {
                    panic!("round {round}: {e}\ncurrent {current:?}\ndesired {desired:?}");
                }
            }
            assert_eq!(model, desired, "round {round}");
            assert!(diff_tables(&current, &current).is_empty());
            assert!(diff_tables(&desired, &desired).is_empty());
            // Smallest change: never more than one command per differing item.
            let bound: usize = current
                .keys()
                .chain(desired.keys())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .map(|k| {
                    1 + current.get(k).map_or(0, |s| s.dests.len())
                        + desired.get(k).map_or(0, |s| s.dests.len())
                })
                .sum();
            assert!(cmds.len() <= bound);
        }
    }
}
