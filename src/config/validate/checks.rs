//! Checks across sections: duplicate services, BGP next hops and MEDs, and
//! anchoring relative `file://` sources.

use super::keys::GLOBAL_SECTION;
use super::report::{Place, Report};
use crate::config::ini::{Ini, Section};
use crate::config::{GlobalConfig, ServiceConfig, SourceUrl};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// Two services with the same protocol, IP and port cannot both exist.
pub(super) fn check_duplicate_services(
    ini: &Ini,
    services: &BTreeMap<String, ServiceConfig>,
    report: &mut Report,
) {
    let mut seen: Vec<(&Section, &ServiceConfig)> = Vec::new();
    for section in &ini.sections {
        let Some(service) = services.get(&section.name) else {
            continue;
        };
        let twin = seen.iter().find(|(_, other)| {
            (other.protocol, other.ip, other.port) == (service.protocol, service.ip, service.port)
        });
        if let Some((other_section, _)) = twin {
            report.error(
                Place::section(section),
                format!(
                    "same protocol, ip and port ({} {}) as service [{}] at line {}",
                    service.protocol,
                    socket_text(service.ip, service.port),
                    other_section.name,
                    other_section.line
                ),
            );
        }
        seen.push((section, service));
    }
}

pub(super) fn socket_text(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(ip) => format!("{ip}:{port}"),
        IpAddr::V6(ip) => format!("[{ip}]:{port}"),
    }
}

/// Each address family that is announced needs its next hop: service IPs
/// with `bgp = yes` and `advertised_instrumentation_ips`.
pub(super) fn check_bgp_next_hops(
    ini: &Ini,
    global: &GlobalConfig,
    services: &BTreeMap<String, ServiceConfig>,
    report: &mut Report,
) {
    let announced = |v4: bool| {
        let service = services
            .values()
            .filter(|s| s.bgp)
            .find(|s| s.ip.is_ipv4() == v4);
        let advertised = global
            .advertised_instrumentation_ips
            .iter()
            .find(|ip| ip.is_ipv4() == v4);
        match (service, advertised) {
            (Some(service), _) => Some(format!("service [{}] is announced", service.name)),
            (None, Some(ip)) => Some(format!("advertised_instrumentation_ips announces {ip}")),
            (None, None) => None,
        }
    };
    let missing = [
        (
            "bgp-nexthop-ipv4",
            "IPv4",
            global.bgp_nexthop_ipv4.is_none(),
            announced(true),
        ),
        (
            "bgp-nexthop-ipv6",
            "IPv6",
            global.bgp_nexthop_ipv6.is_none(),
            announced(false),
        ),
    ];
    let Some(section) = ini.section(GLOBAL_SECTION) else {
        return;
    };
    for (key, family, absent, what) in missing {
        let (true, Some(what)) = (absent, what) else {
            continue;
        };
        if ini.get(section, key).is_some() {
            continue; // present but invalid: already reported
        }
        report.error(
            Place::key(section, key, section.line),
            format!("required: bgp is on and {family} {what}"),
        );
    }
}

/// Services sharing an IP announce one route, so they must agree on its MED.
pub(super) fn check_bgp_meds(
    ini: &Ini,
    global: &GlobalConfig,
    services: &BTreeMap<String, ServiceConfig>,
    report: &mut Report,
) {
    let mut first_med: BTreeMap<IpAddr, (&str, u32)> = BTreeMap::new();
    for section in &ini.sections {
        let Some(service) = services.get(&section.name).filter(|s| s.bgp) else {
            continue;
        };
        let med = service.bgp_med.unwrap_or(global.bgp_med);
        match first_med.get(&service.ip) {
            Some(&(other, other_med)) if other_med != med => {
                let line = ini.get(section, "bgp-med").map_or(section.line, |e| e.line);
                report.error(
                    Place::key(section, "bgp-med", line),
                    format!(
                        "MED {med} differs from {other_med} of service [{other}] on the same IP {}; services sharing an IP must agree",
                        service.ip
                    ),
                );
            }
            Some(_) => {}
            None => {
                first_med.insert(service.ip, (&section.name, med));
            }
        }
    }
    // An advertised instrumentation IP is announced with the global MED.
    let Some(global_section) = ini.section(GLOBAL_SECTION) else {
        return;
    };
    for ip in &global.advertised_instrumentation_ips {
        if let Some(&(other, other_med)) = first_med.get(ip).filter(|(_, m)| *m != global.bgp_med) {
            let line = ini
                .get(global_section, "advertised_instrumentation_ips")
                .map_or(global_section.line, |e| e.line);
            report.error(
                Place::key(global_section, "advertised_instrumentation_ips", line),
                format!(
                    "{ip} is announced with the global bgp-med {}, but service [{other}] announces it with MED {other_med}; they must agree",
                    global.bgp_med
                ),
            );
        }
    }
}

/// Relative `file://` paths are relative to the directory of the main config.
pub(super) fn resolve_relative_sources(
    config_path: &Path,
    services: &mut BTreeMap<String, ServiceConfig>,
) {
    let base = config_path.parent().unwrap_or(Path::new("."));
    for service in services.values_mut() {
        if let SourceUrl::File(file) = &mut service.source {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
    }
}
