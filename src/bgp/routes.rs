//! What rsbal announces (SPEC 10) and the UPDATEs that get a peer there, pure.
//!
//! It owns the mapping from the configuration to routes (one host route per
//! announced service IP with its AS path, next hop and MED) and the diff
//! between what a peer was sent and what is desired, packed into UPDATE
//! messages that fit BGP's 4096-byte limit.

use super::message::{
    AsSegment, Attribute, Codec, Family, Message, Origin, Prefix, Update, MAX_MESSAGE_LEN,
};
use crate::config::Config;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// The attributes of one announced route.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RouteAttributes {
    pub(crate) as_path: Vec<u32>,
    /// Of the route's family.
    pub(crate) next_hop: IpAddr,
    pub(crate) med: u32,
}

/// Announced routes by service IP (each a /32 or /128).
pub(crate) type RouteSet = BTreeMap<IpAddr, RouteAttributes>;

/// Every service IP with `bgp = yes` and every `advertised_instrumentation_ips`
/// address when `[global] bgp = yes`; the MED is the service's or the global
/// default (the global one for instrumentation IPs; services sharing an IP
/// agree, the config checks that). An IP whose family has no next hop is
/// left out (the config check makes that impossible for a valid config).
pub(crate) fn from_config(config: &Config) -> RouteSet {
    let global = &config.global;
    let mut routes = RouteSet::new();
    if !global.bgp {
        return routes;
    }
    let services = config.services.values().filter(|s| s.bgp);
    let instrumentation = global.advertised_instrumentation_ips.iter();
    let announced = services
        .map(|s| (s.ip, s.bgp_med.unwrap_or(global.bgp_med)))
        .chain(instrumentation.map(|ip| (*ip, global.bgp_med)));
    for (ip, med) in announced {
        let next_hop = match ip {
            IpAddr::V4(_) => global.bgp_nexthop_ipv4.map(IpAddr::V4),
            IpAddr::V6(_) => global.bgp_nexthop_ipv6.map(IpAddr::V6),
        };
        let Some(next_hop) = next_hop else { continue };
        routes.entry(ip).or_insert(RouteAttributes {
            as_path: global.bgp_as_path.clone(),
            next_hop,
            med,
        });
    }
    routes
}

/// The UPDATEs that take a peer that has `from` to `to`, for the families
/// in `families` only: withdrawals first, then announcements grouped by
/// attributes. Each UPDATE fits in [`MAX_MESSAGE_LEN`].
pub(crate) fn updates(
    from: &RouteSet,
    to: &RouteSet,
    families: &BTreeSet<Family>,
    codec: Codec,
) -> Vec<Update> {
    let wanted = |ip: &IpAddr| families.contains(&Family::of(*ip));
    let mut out = Vec::new();
    let mut withdrawn: BTreeMap<Family, Vec<Prefix>> = BTreeMap::new();
    for ip in from.keys().filter(|ip| wanted(ip) && !to.contains_key(ip)) {
        withdrawn
            .entry(Family::of(*ip))
            .or_default()
            .push(Prefix::host(*ip));
    }
    for (family, prefixes) in withdrawn {
        let template = withdrawal(family, Vec::new());
        for chunk in prefixes.chunks(capacity(&template, family, codec)) {
            out.push(withdrawal(family, chunk.to_vec()));
        }
    }
    let mut groups: BTreeMap<(Family, &RouteAttributes), Vec<Prefix>> = BTreeMap::new();
    for (ip, attrs) in to
        .iter()
        .filter(|(ip, attrs)| wanted(ip) && from.get(ip) != Some(attrs))
    {
        groups
            .entry((Family::of(*ip), attrs))
            .or_default()
            .push(Prefix::host(*ip));
    }
    for ((family, attrs), prefixes) in groups {
        let template = announcement(family, attrs, Vec::new(), codec);
        for chunk in prefixes.chunks(capacity(&template, family, codec)) {
            out.push(announcement(family, attrs, chunk.to_vec(), codec));
        }
    }
    out
}

/// How many host prefixes fit into `template` (an UPDATE without prefixes).
fn capacity(template: &Update, family: Family, codec: Codec) -> usize {
    let per_prefix = Prefix::host(match family {
        Family::IPV6_UNICAST => IpAddr::from([0u16; 8]),
        _ => IpAddr::from([0u8; 4]),
    })
    .encoded_len();
    // +2: an MP attribute may need the extended (2-byte) length once filled.
    let overhead = codec.encode(&Message::Update(template.clone())).len() + 2;
    (MAX_MESSAGE_LEN.saturating_sub(overhead) / per_prefix).max(1)
}

fn withdrawal(family: Family, prefixes: Vec<Prefix>) -> Update {
    if family == Family::IPV4_UNICAST {
        Update {
            withdrawn: prefixes,
            ..Update::default()
        }
    } else {
        Update {
            attributes: vec![Attribute::MpUnreach {
                family,
                withdrawn: prefixes,
            }],
            ..Update::default()
        }
    }
}

fn announcement(
    family: Family,
    attrs: &RouteAttributes,
    prefixes: Vec<Prefix>,
    codec: Codec,
) -> Update {
    let mut attributes = vec![Attribute::Origin(Origin::Igp)];
    let path = vec![AsSegment::sequence(attrs.as_path.clone())];
    let path = if attrs.as_path.is_empty() {
        Vec::new()
    } else {
        path
    };
    attributes.push(Attribute::AsPath(path.clone()));
    let mut nlri = Vec::new();
    match attrs.next_hop {
        IpAddr::V4(hop) if family == Family::IPV4_UNICAST => {
            attributes.push(Attribute::NextHop(hop));
            nlri = prefixes;
        }
        hop => attributes.push(Attribute::MpReach {
            family,
            next_hops: vec![hop],
            nlri: prefixes,
        }),
    }
    attributes.push(Attribute::Med(attrs.med));
    // A 2-octet peer sees AS_TRANS in AS_PATH and the real path in AS4_PATH.
    if !codec.four_octet_as && attrs.as_path.iter().any(|&asn| asn > u32::from(u16::MAX)) {
        attributes.push(Attribute::As4Path(path));
    }
    Update {
        withdrawn: Vec::new(),
        attributes,
        nlri,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate;
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::path::Path;

    const FOUR: Codec = Codec {
        four_octet_as: true,
    };
    const TWO: Codec = Codec {
        four_octet_as: false,
    };

    fn both() -> BTreeSet<Family> {
        BTreeSet::from([Family::IPV4_UNICAST, Family::IPV6_UNICAST])
    }

    fn attrs(hop: &str, med: u32) -> RouteAttributes {
        RouteAttributes {
            as_path: vec![64600, 64601],
            next_hop: hop.parse().unwrap(),
            med,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn routes_from_config() {
        let text = "[global]\nbgp = yes\nbgp-local-asn = 64600\nbgp-peer-address = 127.40.0.2\n\
                    bgp-as-path = 64600 64601\nbgp-med = 10\nbgp-nexthop-ipv4 = 192.0.2.254\n\
                    bgp-nexthop-ipv6 = 2001:db8::254\n\
                    [web]\nprotocol = tcp\nip = 198.51.100.1\nport = 80\nscheduler = wrr\n\
                    config = file:///dev/null\nmonitors = []\n\
                    [web6]\nprotocol = tcp\nip = 2001:db8:1::1\nport = 80\nscheduler = wrr\n\
                    config = file:///dev/null\nmonitors = []\nbgp-med = 20\n\
                    [quiet]\nprotocol = tcp\nip = 198.51.100.2\nport = 80\nscheduler = wrr\n\
                    config = file:///dev/null\nmonitors = []\nbgp = no\n";
        let config = validate::from_str(Path::new("/t.conf"), text)
            .unwrap()
            .config;
        let routes = from_config(&config);
        assert_eq!(
            routes,
            RouteSet::from([
                (ip("198.51.100.1"), attrs("192.0.2.254", 10)),
                (ip("2001:db8:1::1"), attrs("2001:db8::254", 20)),
            ])
        );
        let mut off = config.clone();
        off.global.bgp = false;
        assert!(from_config(&off).is_empty());
    }

    #[test]
    fn advertised_instrumentation_ips_are_announced_with_the_global_med() {
        let text = "[global]\nbgp = yes\nbgp-local-asn = 64600\nbgp-peer-address = 127.40.0.2\n\
                    bgp-as-path = 64600 64601\nbgp-med = 100\nbgp-nexthop-ipv4 = 192.0.2.254\n\
                    bgp-nexthop-ipv6 = 2001:db8::254\n\
                    advertised_instrumentation_ips = [\"198.51.100.21\", \"2001:db8:9::21\"]\n\
                    [quiet]\nprotocol = tcp\nip = 198.51.100.2\nport = 80\nscheduler = wrr\n\
                    config = file:///dev/null\nmonitors = []\nbgp = no\n";
        let config = validate::from_str(Path::new("/t.conf"), text)
            .unwrap()
            .config;
        assert_eq!(
            from_config(&config),
            RouteSet::from([
                (ip("198.51.100.21"), attrs("192.0.2.254", 100)),
                (ip("2001:db8:9::21"), attrs("2001:db8::254", 100)),
            ])
        );
        let mut off = config.clone();
        off.global.bgp = false;
        assert!(from_config(&off).is_empty(), "not announced with bgp = no");
    }

    #[test]
    fn diff_withdraws_then_announces_changed_routes_only() {
        let from = RouteSet::from([
            (ip("198.51.100.1"), attrs("192.0.2.254", 0)),
            (ip("198.51.100.2"), attrs("192.0.2.254", 0)),
            (ip("2001:db8:1::1"), attrs("2001:db8::254", 0)),
        ]);
        let to = RouteSet::from([
            (ip("198.51.100.1"), attrs("192.0.2.254", 0)),
            (ip("198.51.100.3"), attrs("192.0.2.254", 5)),
        ]);
        let ups = updates(&from, &to, &both(), FOUR);
        assert_eq!(ups.len(), 3, "{ups:#?}");
        assert_eq!(ups[0].withdrawn, vec![Prefix::host(ip("198.51.100.2"))]);
        assert_eq!(
            ups[1].attributes,
            vec![Attribute::MpUnreach {
                family: Family::IPV6_UNICAST,
                withdrawn: vec![Prefix::host(ip("2001:db8:1::1"))]
            }]
        );
        assert_eq!(ups[2].nlri, vec![Prefix::host(ip("198.51.100.3"))]);
        assert_eq!(
            ups[2].attributes,
            vec![
                Attribute::Origin(Origin::Igp),
                Attribute::AsPath(vec![AsSegment::sequence(vec![64600, 64601])]),
                Attribute::NextHop(Ipv4Addr::new(192, 0, 2, 254)),
                Attribute::Med(5),
            ]
        );
        assert!(updates(&to, &to, &both(), FOUR).is_empty());
    }

    #[test]
    fn ipv6_routes_use_mp_reach_and_skip_families_not_negotiated() {
        let to = RouteSet::from([
            (ip("198.51.100.1"), attrs("192.0.2.254", 0)),
            (ip("2001:db8:1::1"), attrs("2001:db8::254", 7)),
        ]);
        let ups = updates(
            &RouteSet::new(),
            &to,
            &BTreeSet::from([Family::IPV6_UNICAST]),
            FOUR,
        );
        assert_eq!(ups.len(), 1);
        assert_eq!(
            ups[0].attributes[2],
            Attribute::MpReach {
                family: Family::IPV6_UNICAST,
                next_hops: vec![IpAddr::V6(Ipv6Addr::new(
                    0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x254
                ))],
                nlri: vec![Prefix::host(ip("2001:db8:1::1"))],
            }
        );
        assert!(ups[0].nlri.is_empty());
    }

    #[test]
    fn routes_sharing_attributes_share_an_update() {
        let to: RouteSet = (1..=3)
            .map(|i| {
                (
                    IpAddr::V4(Ipv4Addr::new(198, 51, 100, i)),
                    attrs("192.0.2.254", 0),
                )
            })
            .collect();
        let ups = updates(&RouteSet::new(), &to, &both(), FOUR);
        assert_eq!(ups.len(), 1);
        assert_eq!(ups[0].nlri.len(), 3);
    }

    #[test]
    fn four_octet_path_to_a_two_octet_peer_adds_as4_path() {
        let mut a = attrs("192.0.2.254", 0);
        a.as_path = vec![4_200_000_000];
        let to = RouteSet::from([(ip("198.51.100.1"), a)]);
        let ups = updates(&RouteSet::new(), &to, &both(), TWO);
        assert!(ups[0]
            .attributes
            .contains(&Attribute::As4Path(vec![AsSegment::sequence(vec![
                4_200_000_000
            ])])));
        let ups = updates(&RouteSet::new(), &to, &both(), FOUR);
        assert!(!ups[0]
            .attributes
            .iter()
            .any(|a| matches!(a, Attribute::As4Path(_))));
    }

    #[test]
    fn thousands_of_routes_split_into_updates_that_fit() {
        let mut to = RouteSet::new();
        for i in 0..2000u32 {
            to.insert(
                IpAddr::V4(Ipv4Addr::from(0xc633_0000 + i)),
                attrs("192.0.2.254", 0),
            );
            to.insert(
                IpAddr::V6(Ipv6Addr::from(0x2001_0db8_0001_u128 << 80 | u128::from(i))),
                attrs("2001:db8::254", 0),
            );
        }
        for codec in [FOUR, TWO] {
            let announce = updates(&RouteSet::new(), &to, &both(), codec);
            let withdraw = updates(&to, &RouteSet::new(), &both(), codec);
            let mut seen_v4 = 0;
            let mut seen_v6 = 0;
            for u in announce.iter().chain(&withdraw) {
                let bytes = codec.encode(&Message::Update(u.clone()));
                assert!(bytes.len() <= MAX_MESSAGE_LEN, "{} bytes", bytes.len());
                let Ok(Message::Update(back)) = codec.decode(&bytes) else {
                    panic!("does not decode")
                };
                seen_v4 += back.nlri.len() + back.withdrawn.len();
                for a in &back.attributes {
                    match a {
                        Attribute::MpReach { nlri, .. } => seen_v6 += nlri.len(),
                        Attribute::MpUnreach { withdrawn, .. } => seen_v6 += withdrawn.len(),
                        _ => {}
                    }
                }
            }
            assert_eq!((seen_v4, seen_v6), (4000, 4000));
            // Packed, not one route per message.
            assert!(announce.len() < 20, "{} updates", announce.len());
        }
    }
}
