//! Drift between rsbal's services and the kernel's IPVS table (pure).
//!
//! The IpvsWriter re-reads the kernel every `ipvs-reconcile-interval`; this
//! module decides what in the kernel differs from what rsbal's services
//! want, one [`Drift`] per thing to repair, each with the log line that
//! explains the repair. Only services rsbal manages are looked at; any
//! other service in the kernel is not rsbal's business. The repair commands
//! themselves come from `ipvs::diff`, which yields exactly one command per
//! drift item.

use super::{Dest, ServiceKey, ServiceTable, Table, VirtualService};
use std::fmt;
use std::net::SocketAddr;

/// One difference between what a service wants and what the kernel has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Drift {
    /// The whole virtual service is gone from the kernel.
    ServiceMissing(ServiceKey),
    /// Scheduler or one-packet flag differ.
    ServiceChanged {
        want: VirtualService,
        found: VirtualService,
    },
    /// A destination rsbal pooled is not in the kernel.
    DestMissing {
        service: ServiceKey,
        dest: SocketAddr,
        want: Dest,
    },
    /// The kernel has a destination rsbal did not pool.
    DestUnknown {
        service: ServiceKey,
        dest: SocketAddr,
        found: Dest,
    },
    /// Weight or forwarding method differ.
    DestChanged {
        service: ServiceKey,
        dest: SocketAddr,
        want: Dest,
        found: Dest,
    },
}

impl Drift {
    /// A short name for metrics labels.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Drift::ServiceMissing(_) => "service_missing",
            Drift::ServiceChanged { .. } => "service_changed",
            Drift::DestMissing { .. } => "destination_missing",
            Drift::DestUnknown { .. } => "destination_unknown",
            Drift::DestChanged { .. } => "destination_changed",
        }
    }
}

fn settings(d: &Dest) -> String {
    format!("weight {}, {}", d.weight, d.forwarding)
}

fn service_settings(vs: &VirtualService) -> String {
    format!(
        "scheduler {}{}",
        vs.scheduler,
        if vs.ops { ", one-packet" } else { "" }
    )
}

impl fmt::Display for Drift {
    /// The log line of the repair.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::ServiceMissing(key) => write!(
                f,
                "service {key} is missing from the kernel (deleted outside rsbal?): re-creating it"
            ),
            Drift::ServiceChanged { want, found } => write!(
                f,
                "service {} has {} in the kernel instead of {}: restoring",
                want.key,
                service_settings(found),
                service_settings(want)
            ),
            Drift::DestMissing {
                service,
                dest,
                want,
            } => write!(
                f,
                "destination {dest} of {service} is missing from the kernel (deleted outside rsbal?): adding it back ({})",
                settings(want)
            ),
            Drift::DestUnknown {
                service,
                dest,
                found,
            } => write!(
                f,
                "destination {dest} ({}) in {service} was not pooled by rsbal: removing it",
                settings(found)
            ),
            Drift::DestChanged {
                service,
                dest,
                want,
                found,
            } => write!(
                f,
                "destination {dest} of {service} has {} in the kernel instead of {}: fixing",
                settings(found),
                settings(want)
            ),
        }
    }
}

/// What differs between the services rsbal wants (`wanted`) and the
/// kernel's table, in service and address order.
pub(crate) fn drift<'a>(
    kernel: &Table,
    wanted: impl IntoIterator<Item = &'a ServiceTable>,
) -> Vec<Drift> {
    let mut wanted: Vec<&ServiceTable> = wanted.into_iter().collect();
    wanted.sort_by_key(|st| st.service.key);
    let mut out = Vec::new();
    for want in wanted {
        let key = want.service.key;
        let Some(found) = kernel.get(&key) else {
            out.push(Drift::ServiceMissing(key));
            continue;
        };
        if found.service.scheduler != want.service.scheduler
            || found.service.ops != want.service.ops
        {
            out.push(Drift::ServiceChanged {
                want: want.service.clone(),
                found: found.service.clone(),
            });
        }
        for (dest, f) in &found.dests {
            if !want.dests.contains_key(dest) {
                out.push(Drift::DestUnknown {
                    service: key,
                    dest: *dest,
                    found: *f,
                });
            }
        }
        for (dest, w) in &want.dests {
            match found.dests.get(dest) {
                None => out.push(Drift::DestMissing {
                    service: key,
                    dest: *dest,
                    want: *w,
                }),
                Some(f) if f != w => out.push(Drift::DestChanged {
                    service: key,
                    dest: *dest,
                    want: *w,
                    found: *f,
                }),
                Some(_) => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Protocol;
    use crate::ipvs::diff::diff_service;
    use crate::ipvs::ForwardingMethod;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn key(addr: &str) -> ServiceKey {
        ServiceKey {
            protocol: Protocol::Tcp,
            addr: sa(addr),
        }
    }

    fn st(k: ServiceKey, sched: &str, dests: &[(&str, u32)]) -> ServiceTable {
        ServiceTable {
            service: VirtualService {
                key: k,
                scheduler: sched.into(),
                ops: false,
            },
            dests: dests.iter().map(|(a, w)| (sa(a), Dest::dr(*w))).collect(),
        }
    }

    fn table(services: &[ServiceTable]) -> Table {
        services
            .iter()
            .map(|s| (s.service.key, s.clone()))
            .collect()
    }

    #[test]
    fn matching_kernel_has_no_drift() {
        let web = st(key("192.0.2.1:80"), "wrr", &[("10.0.0.2:80", 10)]);
        assert!(drift(&table(std::slice::from_ref(&web)), [&web]).is_empty());
        assert!(drift(&Table::new(), []).is_empty());
    }

    #[test]
    fn hand_deleted_unknown_and_reweighted_destinations() {
        let k = key("192.0.2.1:80");
        let want = st(
            k,
            "wrr",
            &[
                ("10.0.0.2:80", 10),
                ("10.0.0.3:80", 20),
                ("10.0.0.4:80", 30),
            ],
        );
        // 10.0.0.3 deleted by hand, 10.0.0.4's weight changed, 10.0.0.9 added.
        let kernel = st(
            k,
            "wrr",
            &[("10.0.0.2:80", 10), ("10.0.0.4:80", 1), ("10.0.0.9:80", 5)],
        );
        let d = drift(&table(std::slice::from_ref(&kernel)), [&want]);
        assert_eq!(
            d,
            vec![
                Drift::DestUnknown {
                    service: k,
                    dest: sa("10.0.0.9:80"),
                    found: Dest::dr(5)
                },
                Drift::DestMissing {
                    service: k,
                    dest: sa("10.0.0.3:80"),
                    want: Dest::dr(20)
                },
                Drift::DestChanged {
                    service: k,
                    dest: sa("10.0.0.4:80"),
                    want: Dest::dr(30),
                    found: Dest::dr(1)
                },
            ]
        );
        // One repair command per drift item.
        assert_eq!(diff_service(Some(&kernel), Some(&want)).len(), d.len());
        assert_eq!(
            d[1].to_string(),
            "destination 10.0.0.3:80 of tcp 192.0.2.1:80 is missing from the kernel \
             (deleted outside rsbal?): adding it back (weight 20, dr)"
        );
        assert_eq!(
            d[0].to_string(),
            "destination 10.0.0.9:80 (weight 5, dr) in tcp 192.0.2.1:80 was not pooled by rsbal: removing it"
        );
        assert_eq!(
            d[2].to_string(),
            "destination 10.0.0.4:80 of tcp 192.0.2.1:80 has weight 1, dr in the kernel \
             instead of weight 30, dr: fixing"
        );
    }

    #[test]
    fn missing_and_changed_services() {
        let a = st(key("192.0.2.1:80"), "wrr", &[("10.0.0.2:80", 10)]);
        let b = st(key("192.0.2.1:443"), "sh", &[]);
        let mut b_kernel = b.clone();
        b_kernel.service.scheduler = "rr".into();
        let d = drift(&table(&[b_kernel]), [&a, &b]);
        assert_eq!(
            d,
            vec![
                Drift::ServiceMissing(a.service.key),
                Drift::ServiceChanged {
                    want: b.service.clone(),
                    found: VirtualService {
                        scheduler: "rr".into(),
                        ..b.service.clone()
                    }
                },
            ]
        );
        assert!(d[0].to_string().contains("re-creating"));
        assert_eq!(d[1].kind(), "service_changed");
    }

    #[test]
    fn forwarding_method_drift() {
        let k = key("192.0.2.1:80");
        let want = st(k, "wrr", &[("10.0.0.2:80", 10)]);
        let mut kernel = want.clone();
        kernel.dests.insert(
            sa("10.0.0.2:80"),
            Dest {
                weight: 10,
                forwarding: ForwardingMethod::Nat,
            },
        );
        let d = drift(&table(&[kernel]), [&want]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kind(), "destination_changed");
        assert!(d[0].to_string().contains("weight 10, nat in the kernel"));
    }

    #[test]
    fn services_rsbal_does_not_manage_are_ignored() {
        let mine = st(key("192.0.2.1:80"), "wrr", &[("10.0.0.2:80", 10)]);
        let theirs = st(key("192.0.2.99:80"), "rr", &[("10.0.0.7:80", 1)]);
        assert!(drift(&table(&[mine.clone(), theirs]), [&mine]).is_empty());
    }
}
