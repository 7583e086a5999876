//! rsbal: an LVS monitor in the style of Wikimedia's PyBal.
//!
//! The library holds every part of the daemon so that tests can drive the
//! pure decision logic (coordinator, config parsing and diffing, IPVS diffing)
//! directly; `src/main.rs` is only the command-line entry point.
//! See `ARCHITECTURE.md` for threads, channels and state ownership.

pub mod bgp;
pub(crate) mod config;
pub mod daemon;
pub(crate) mod ipvs;
pub(crate) mod monitor;
pub(crate) mod net;
pub(crate) mod service;
pub(crate) mod source;
pub(crate) mod status;

/// Entry points for the cargo-fuzz targets in `fuzz/` (not an API).
///
/// The library's surface is kept minimal (`pub(crate)` everywhere, so the
/// compiler reports dead code); a fuzz target is a separate crate and can
/// only call what is `pub`. Rather than widen every parser's visibility,
/// this one hidden module holds a thin wrapper per parser of outside input,
/// each taking raw bytes and discarding the result: only a panic, a hang or
/// unbounded memory matters to the fuzzer.
#[doc(hidden)]
pub mod fuzzing {
    use std::path::Path;

    fn text(data: &[u8]) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(data)
    }

    /// The INI reader and every key's validation (`config::validate`).
    pub fn config(data: &[u8]) {
        let _ = crate::config::validate::from_str(Path::new("/fuzz/rsbal.conf"), &text(data));
    }

    /// Python literals (`config::pyliteral`), as PyBal's config values.
    pub fn pyliteral(data: &[u8]) {
        if let Ok(value) = crate::config::pyliteral::parse(&text(data)) {
            let _ = value.as_str_list();
        }
    }

    /// Server lists, legacy lines and JSON (`source::serverlist`).
    pub fn serverlist(data: &[u8]) {
        let text = text(data);
        let _ = crate::source::serverlist::parse(&text, false);
        let _ = crate::source::serverlist::parse(&text, true);
    }

    /// etcd answers: read, error and watched event (`source::etcd`).
    pub fn etcd(data: &[u8]) {
        crate::source::etcd_decode_for_fuzzing(
            "/conftool/v1/pools/eqiad/cache_text/ats-be/",
            &text(data),
        );
    }

    /// BGP messages, with and without 4-octet ASNs (`bgp::message`).
    pub fn bgp(data: &[u8]) {
        for four_octet_as in [false, true] {
            let _ = crate::bgp::message::Codec { four_octet_as }.decode(data);
        }
    }

    /// DNS replies to the DNSQuery monitor (`monitor::dns_query`).
    pub fn dns_reply(data: &[u8]) {
        let id = match data {
            [a, b, ..] => u16::from_be_bytes([*a, *b]),
            _ => 0,
        };
        let _ = crate::monitor::dns_query::classify_reply(data, id);
        let _ = crate::monitor::dns_query::classify_reply(data, id.wrapping_add(1));
    }

    /// Netlink answers of the kernel (`ipvs::genl`): every message as a
    /// reply, a family, a service and a destination, and as ACKs settling
    /// pending requests.
    pub fn netlink(data: &[u8]) {
        use crate::ipvs::genl;
        if let Ok(messages) = genl::split(data) {
            for msg in &messages {
                if let Ok(genl::Reply::Data { attrs, .. }) = genl::reply(msg) {
                    let _ = genl::attributes(attrs);
                    let _ = genl::family_id(attrs);
                    let _ = genl::service(attrs);
                    let _ = genl::dest(attrs, true);
                    let _ = genl::dest(attrs, false);
                }
            }
        }
        let mut pending = genl::Pending::default();
        for seq in 0..4 {
            pending.insert(seq, seq);
        }
        let _ = pending.settle(data);
    }

    /// `ipvsadm -Sn` output (`ipvs::ipvsadm`).
    pub fn ipvsadm_save(data: &[u8]) {
        let _ = crate::ipvs::ipvsadm::parse_save(&text(data));
    }

    /// The request head of the instrumentation server (`status::routes`),
    /// routed against an empty store.
    pub fn http_request(data: &[u8]) {
        let store = crate::status::snapshot::SnapshotStore::new();
        let _ = crate::status::routes::handle_request(data, &store);
    }

    /// Every seed of every fuzz target (`fuzz/seeds/<target>/`) and every
    /// input a fuzzer once crashed on (`fuzz/regressions/<target>/`, none
    /// so far) goes through its wrapper in the normal suite.
    #[cfg(test)]
    mod tests {
        /// A fuzz target's name and wrapper.
        type Target = (&'static str, fn(&[u8]));

        #[test]
        fn every_seed_and_regression_input_passes_its_target() {
            let targets: [Target; 9] = [
                ("config", super::config),
                ("pyliteral", super::pyliteral),
                ("serverlist", super::serverlist),
                ("etcd", super::etcd),
                ("bgp", super::bgp),
                ("dns_reply", super::dns_reply),
                ("netlink", super::netlink),
                ("ipvsadm_save", super::ipvsadm_save),
                ("http_request", super::http_request),
            ];
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
            let mut seen = 0;
            for (name, target) in targets {
                assert!(
                    root.join("fuzz_targets")
                        .join(format!("{name}.rs"))
                        .exists(),
                    "no fuzz target {name}"
                );
                for dir in ["seeds", "regressions"] {
                    let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                        continue;
                    };
                    for entry in entries {
                        let input = std::fs::read(entry.unwrap().path()).unwrap();
                        target(&input);
                        seen += 1;
                    }
                }
            }
            assert!(seen >= 9, "{seen} inputs");
        }
    }
}
