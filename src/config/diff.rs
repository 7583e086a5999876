//! What changed between two configs (SIGHUP reload), as pure code.

use super::Config;

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
    /// `[global]` differs.
    pub(crate) global_changed: bool,
}

impl ConfigDiff {
    /// True when the reload changes nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && !self.global_changed
    }
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
        let new = config(&[service("a", 80), service("b", 81), service("d", 80)]);
        let d = diff(&old, &new);
        assert_eq!(d.added, vec!["d"]);
        assert_eq!(d.removed, vec!["c"]);
        assert_eq!(d.changed, vec!["b"]);
        assert_eq!(d.unchanged, vec!["a"]);
        assert!(!d.global_changed);
        assert!(!d.is_empty());
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
