//! What changed between two configs (SIGHUP reload), as pure code.
//!
//! A section that is gone under its old name while a new one has the same
//! protocol, IP and port is a rename: the same IPVS virtual service, handed
//! to the new name, never deleted and re-created.

use super::{Config, Protocol, ServiceConfig};
use std::net::IpAddr;

/// Service names sorted into what a reload must do with them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ConfigDiff {
    /// In the new config only: start.
    pub(crate) added: Vec<String>,
    /// In the old config only: stop and delete from IPVS.
    pub(crate) removed: Vec<String>,
    /// In both, with a different section: update in place.
    pub(crate) changed: Vec<String>,
    /// In both, identical: leave alone.
    pub(crate) unchanged: Vec<String>,
    /// Renamed sections (same protocol, IP and port): hand the running
    /// service to the new name.
    pub(crate) renamed: Vec<Renamed>,
    /// `[global]` differs.
    pub(crate) global_changed: bool,
}

/// A section renamed from `from` to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Renamed {
    pub(crate) from: String,
    pub(crate) to: String,
    /// More than the name changed.
    pub(crate) changed: bool,
}

impl ConfigDiff {
    /// True when the reload changes nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.renamed.is_empty()
            && !self.global_changed
    }
}

/// What identifies a virtual service in the kernel.
fn identity(s: &ServiceConfig) -> (Protocol, IpAddr, u16) {
    (s.protocol, s.ip, s.port)
}

/// Compares `old` and `new` service by service (names sorted).
pub(crate) fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let mut d = ConfigDiff {
        global_changed: old.global != new.global,
        ..ConfigDiff::default()
    };
    for (name, service) in &new.services {
        match old.services.get(name) {
            None => d.added.push(name.clone()),
            Some(before) if before == service => d.unchanged.push(name.clone()),
            Some(_) => d.changed.push(name.clone()),
        }
    }
    d.removed = old
        .services
        .keys()
        .filter(|name| !new.services.contains_key(*name))
        .cloned()
        .collect();
    // A removed and an added section with the same identity: a rename.
    for from in std::mem::take(&mut d.removed) {
        let before = old.services.get(&from);
        let to = before.and_then(|before| {
            d.added.iter().position(|name| {
                new.services
                    .get(name)
                    .is_some_and(|s| identity(s) == identity(before))
            })
        });
        match (before, to) {
            (Some(before), Some(i)) => {
                let to = d.added.remove(i);
                let changed = new.services.get(&to).is_some_and(|after| {
                    let mut renamed = before.clone();
                    renamed.name.clone_from(&after.name);
                    renamed != *after
                });
                d.renamed.push(Renamed { from, to, changed });
            }
            _ => d.removed.push(from),
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GlobalConfig, Protocol, ServiceConfig, SourceUrl};
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn service(name: &str, port: u16) -> ServiceConfig {
        ServiceConfig {
            name: name.to_string(),
            protocol: Protocol::Tcp,
            ip: "10.0.0.1".parse().unwrap(),
            port,
            scheduler: "wrr".to_string(),
            source: SourceUrl::File(PathBuf::from("/etc/rsbal/servers")),
            source_options: Default::default(),
            ops: false,
            forwarding: Default::default(),
            depool_threshold: 0.5,
            monitors: vec![],
            bgp: true,
            bgp_med: None,
        }
    }

    fn config(services: &[ServiceConfig]) -> Config {
        Config {
            path: PathBuf::from("/etc/rsbal/rsbal.conf"),
            global: GlobalConfig::default(),
            services: services
                .iter()
                .map(|s| (s.name.clone(), s.clone()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn sorts_services_into_added_removed_changed_unchanged() {
        let old = config(&[service("a", 80), service("b", 80), service("c", 80)]);
        // d has an identity of its own (c's would make it a rename of c).
        let new = config(&[service("a", 80), service("b", 81), service("d", 82)]);
        let d = diff(&old, &new);
        assert_eq!(d.added, vec!["d"]);
        assert_eq!(d.removed, vec!["c"]);
        assert_eq!(d.changed, vec!["b"]);
        assert_eq!(d.unchanged, vec!["a"]);
        assert!(!d.global_changed);
        assert!(!d.is_empty());
    }

    #[test]
    fn a_section_renamed_with_the_same_identity_is_a_rename() {
        let old = config(&[service("web", 80), service("db", 5432)]);
        let mut www = service("www", 80);
        let mut new = config(&[www.clone(), service("db", 5432)]);
        let d = diff(&old, &new);
        assert_eq!(
            d.renamed,
            vec![Renamed {
                from: "web".into(),
                to: "www".into(),
                changed: false
            }]
        );
        assert!(d.added.is_empty() && d.removed.is_empty() && d.changed.is_empty());
        assert_eq!(d.unchanged, vec!["db"]);
        assert!(!d.is_empty());
        // Renamed and changed in the same reload.
        www.depool_threshold = 0.7;
        new = config(&[www, service("db", 5432)]);
        assert!(diff(&old, &new).renamed[0].changed);
    }

    #[test]
    fn a_new_name_with_another_identity_is_no_rename() {
        let old = config(&[service("web", 80)]);
        let mut udp = service("www", 80);
        udp.protocol = Protocol::Udp;
        for other in [service("www", 81), udp] {
            let d = diff(&old, &config(&[other]));
            assert!(d.renamed.is_empty());
            assert_eq!(
                (d.added, d.removed),
                (vec!["www".to_string()], vec!["web".to_string()])
            );
        }
    }

    #[test]
    fn identical_configs_make_an_empty_diff() {
        let c = config(&[service("a", 80)]);
        assert!(diff(&c, &c.clone()).is_empty());
    }

    #[test]
    fn global_change_is_seen() {
        let old = config(&[]);
        let mut new = config(&[]);
        new.global.instrumentation = true;
        assert!(diff(&old, &new).global_changed);
    }
}
