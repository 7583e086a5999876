//! Byte-exact known messages, every decoding error's NOTIFICATION, and
//! random-input runs that must never panic.

use super::*;

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().unwrap())
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse().unwrap())
}

/// Hex text (spaces and newlines ignored) to bytes.
fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
    digits
        .chunks(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect()
}

const MARKER: &str = "ffffffff ffffffff ffffffff ffffffff";

const FOUR: Codec = Codec {
    four_octet_as: true,
};
const TWO: Codec = Codec {
    four_octet_as: false,
};

fn decode_err(codec: Codec, bytes: &[u8]) -> (u8, u8, Vec<u8>) {
    match codec.decode(bytes) {
        Err(n) => (n.code, n.subcode, n.data),
        Ok(m) => panic!("decoded {m:?}"),
    }
}

/// Wraps `body` in a header of type `kind` with the right length.
fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![0xff; 16];
    out.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(body);
    out
}

fn update_body(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut body = (withdrawn.len() as u16).to_be_bytes().to_vec();
    body.extend_from_slice(withdrawn);
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(nlri);
    body
}

#[test]
fn keepalive_is_a_bare_header() {
    let bytes = FOUR.encode(&Message::Keepalive);
    assert_eq!(bytes, hex(&format!("{MARKER} 0013 04")));
    assert_eq!(FOUR.decode(&bytes), Ok(Message::Keepalive));
}

fn rsbal_open(asn: u32) -> Open {
    Open {
        asn,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::Multiprotocol(Family::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(asn),
            Capability::GracefulRestart(GracefulRestart {
                restarting: false,
                notification: true,
                restart_time: 120,
                families: vec![(Family::IPV4_UNICAST, true), (Family::IPV6_UNICAST, true)],
            }),
        ],
    }
}

#[test]
fn open_with_capabilities_byte_exact() {
    let expected = hex(&format!(
        "{MARKER} 003f 01
         04 fc58 005a c0000201
         22 02 20
            01 04 0001 00 01
            01 04 0002 00 01
            02 00
            41 04 0000fc58
            40 0a 4078 0001 01 80 0002 01 80"
    ));
    let open = rsbal_open(64600);
    let bytes = FOUR.encode(&Message::Open(open.clone()));
    assert_eq!(bytes, expected);
    assert_eq!(TWO.decode(&bytes), Ok(Message::Open(open.clone())));
    assert!(open.four_octet_as());
    assert!(open.route_refresh());
    assert_eq!(open.graceful_restart().map(|g| g.restart_time), Some(120));
    assert_eq!(
        open.families(),
        BTreeSet::from([Family::IPV4_UNICAST, Family::IPV6_UNICAST])
    );
}

#[test]
fn open_with_a_four_octet_asn_sends_as_trans() {
    let open = rsbal_open(4_200_000_000);
    let bytes = FOUR.encode(&Message::Open(open.clone()));
    assert_eq!(&bytes[20..22], &AS_TRANS.to_be_bytes());
    assert_eq!(&bytes[19..22], &hex("04 5ba0")[..]);
    assert_eq!(FOUR.decode(&bytes), Ok(Message::Open(open)));
}

#[test]
fn open_without_multiprotocol_means_ipv4_unicast() {
    // A minimal OPEN as an old speaker sends it: AS 65001, hold 180, no parameters.
    let bytes = hex(&format!("{MARKER} 001d 01 04 fde9 00b4 0a000001 00"));
    let Ok(Message::Open(open)) = FOUR.decode(&bytes) else {
        panic!("not an OPEN")
    };
    assert_eq!(open.asn, 65001);
    assert_eq!(open.hold_time, 180);
    assert!(!open.four_octet_as());
    assert_eq!(open.families(), BTreeSet::from([Family::IPV4_UNICAST]));
}

#[test]
fn open_keeps_unknown_capabilities() {
    // Capability 70 (enhanced route refresh) and 73 (FQDN) in separate parameters.
    let bytes = hex(&format!(
        "{MARKER} 0029 01 04 fde9 00b4 0a000001 0c 02 02 4600 02 06 4904 02616201"
    ));
    let Ok(Message::Open(open)) = FOUR.decode(&bytes) else {
        panic!("not an OPEN")
    };
    assert_eq!(
        open.capabilities,
        vec![
            Capability::Other {
                code: 70,
                data: vec![]
            },
            Capability::Other {
                code: 73,
                data: hex("02616201")
            }
        ]
    );
}

#[test]
fn open_errors() {
    let open = |body: &str| message(1, &hex(body));
    // Version 3: Unsupported Version Number, data = the version we speak.
    assert_eq!(
        decode_err(FOUR, &open("03 fde9 00b4 0a000001 00")),
        (2, 1, vec![0, 4])
    );
    // Hold time 1 and 2 are unacceptable; 0 is fine.
    assert_eq!(
        decode_err(FOUR, &open("04 fde9 0002 0a000001 00")),
        (2, error::OPEN_UNACCEPTABLE_HOLD_TIME, vec![])
    );
    assert_eq!(
        decode_err(FOUR, &open("04 fde9 0001 0a000001 00")).1,
        error::OPEN_UNACCEPTABLE_HOLD_TIME
    );
    assert!(FOUR.decode(&open("04 fde9 0000 0a000001 00")).is_ok());
    // BGP identifier 0.0.0.0.
    assert_eq!(
        decode_err(FOUR, &open("04 fde9 00b4 00000000 00")).1,
        error::OPEN_BAD_BGP_ID
    );
    // Optional parameter type 1 (authentication, deprecated).
    assert_eq!(
        decode_err(FOUR, &open("04 fde9 00b4 0a000001 04 01 02 0000")),
        (2, error::OPEN_UNSUPPORTED_PARAMETER, vec![])
    );
    // Parameter length longer than the message.
    assert_eq!(
        decode_err(FOUR, &open("04 fde9 00b4 0a000001 08 02 02 4600")).1,
        error::OPEN_UNSPECIFIC
    );
    // Capability overruns its parameter.
    assert_eq!(
        decode_err(FOUR, &open("04 fde9 00b4 0a000001 04 02 02 4104")).1,
        error::OPEN_UNSPECIFIC
    );
    // Multiprotocol capability of the wrong length.
    assert_eq!(
        decode_err(FOUR, &open("04 fde9 00b4 0a000001 05 02 03 010100")).1,
        error::OPEN_UNSPECIFIC
    );
    // AS 0 (and no 4-octet capability).
    assert_eq!(
        decode_err(FOUR, &open("04 0000 00b4 0a000001 00")),
        (2, error::OPEN_BAD_PEER_AS, vec![0, 0])
    );
}

#[test]
fn header_errors() {
    let mut bad_marker = FOUR.encode(&Message::Keepalive);
    bad_marker[3] = 0;
    assert_eq!(decode_err(FOUR, &bad_marker), (1, 1, vec![]));
    // Length below 19 and above 4096: Bad Message Length with the length field.
    assert_eq!(
        decode_err(FOUR, &hex(&format!("{MARKER} 0012 04"))),
        (1, 2, vec![0, 0x12])
    );
    assert_eq!(
        parse_header(&hex(&format!("{MARKER} 1001 02"))),
        Err(Notification::new(1, 2, vec![0x10, 0x01]))
    );
    // KEEPALIVE must be exactly 19 bytes.
    assert_eq!(
        decode_err(FOUR, &hex(&format!("{MARKER} 0014 04 00"))),
        (1, 2, vec![0, 0x14])
    );
    // OPEN shorter than 29, NOTIFICATION shorter than 21.
    assert_eq!(decode_err(FOUR, &message(1, &[4; 9])).1, 2);
    assert_eq!(decode_err(FOUR, &message(3, &[6])).1, 2);
    // Unknown type: Bad Message Type with the type.
    assert_eq!(decode_err(FOUR, &message(9, &[])), (1, 3, vec![9]));
    // Fewer bytes than the header says.
    let mut short = FOUR.encode(&Message::Open(rsbal_open(64600)));
    short.pop();
    assert_eq!(decode_err(FOUR, &short).1, 2);
    // A truncated header.
    assert!(parse_header(&[0xff; 10]).is_err());
}

/// ORIGIN IGP, AS_PATH 64600 64601, NEXT_HOP 192.0.2.254, MED 100.
fn ipv4_attributes() -> Vec<Attribute> {
    vec![
        Attribute::Origin(Origin::Igp),
        Attribute::AsPath(vec![AsSegment::sequence(vec![64600, 64601])]),
        Attribute::NextHop(Ipv4Addr::new(192, 0, 2, 254)),
        Attribute::Med(100),
    ]
}

#[test]
fn ipv4_update_byte_exact() {
    let update = Update {
        withdrawn: vec![Prefix::host(v4("198.51.100.9"))],
        attributes: ipv4_attributes(),
        nlri: vec![
            Prefix::host(v4("198.51.100.1")),
            Prefix::host(v4("198.51.100.2")),
        ],
    };
    let four = hex(&format!(
        "{MARKER} 0045 02
         0005 20 c6336409
         001f
            40 01 01 00
            40 02 0a 02 02 0000fc58 0000fc59
            40 03 04 c00002fe
            80 04 04 00000064
         20 c6336401 20 c6336402"
    ));
    let bytes = FOUR.encode(&Message::Update(update.clone()));
    assert_eq!(bytes, four);
    assert_eq!(FOUR.decode(&bytes), Ok(Message::Update(update.clone())));

    // The same UPDATE to a 2-octet speaker.
    let two = hex(&format!(
        "{MARKER} 0041 02
         0005 20 c6336409
         001b
            40 01 01 00
            40 02 06 02 02 fc58 fc59
            40 03 04 c00002fe
            80 04 04 00000064
         20 c6336401 20 c6336402"
    ));
    let bytes = TWO.encode(&Message::Update(update.clone()));
    assert_eq!(bytes, two);
    assert_eq!(TWO.decode(&bytes), Ok(Message::Update(update)));
}

#[test]
fn four_octet_asn_to_a_two_octet_speaker_is_as_trans() {
    let update = Update {
        attributes: vec![
            Attribute::Origin(Origin::Igp),
            Attribute::AsPath(vec![AsSegment::sequence(vec![4_200_000_000, 64601])]),
            Attribute::As4Path(vec![AsSegment::sequence(vec![4_200_000_000, 64601])]),
        ],
        ..Update::default()
    };
    let bytes = TWO.encode(&Message::Update(update));
    assert_eq!(
        &bytes[HEADER_LEN..],
        &hex("0000 001a
             40 01 01 00
             40 02 06 02 02 5ba0 fc59
             c0 11 0a 02 02 fa56ea00 0000fc59")[..]
    );
}

#[test]
fn ipv6_update_byte_exact() {
    let reach = Update {
        attributes: vec![
            Attribute::MpReach {
                family: Family::IPV6_UNICAST,
                next_hops: vec![v6("2001:db8::254")],
                nlri: vec![Prefix::host(v6("2001:db8:1::1"))],
            },
            Attribute::Origin(Origin::Igp),
            Attribute::AsPath(vec![AsSegment::sequence(vec![64600])]),
            Attribute::Med(0),
        ],
        ..Update::default()
    };
    let expected = hex(&format!(
        "{MARKER} 0054 02
         0000 003d
            80 0e 26 0002 01 10 20010db8000000000000000000000254 00
                     80 20010db8000100000000000000000001
            40 01 01 00
            40 02 06 02 01 0000fc58
            80 04 04 00000000"
    ));
    let bytes = FOUR.encode(&Message::Update(reach.clone()));
    assert_eq!(bytes, expected);
    assert_eq!(FOUR.decode(&bytes), Ok(Message::Update(reach)));

    let unreach = Update {
        attributes: vec![Attribute::MpUnreach {
            family: Family::IPV6_UNICAST,
            withdrawn: vec![Prefix::host(v6("2001:db8:1::1"))],
        }],
        ..Update::default()
    };
    let expected = hex(&format!(
        "{MARKER} 002e 02
         0000 0017 80 0f 14 0002 01 80 20010db8000100000000000000000001"
    ));
    let bytes = FOUR.encode(&Message::Update(unreach.clone()));
    assert_eq!(bytes, expected);
    assert_eq!(FOUR.decode(&bytes), Ok(Message::Update(unreach)));
}

#[test]
fn end_of_rib_markers() {
    let v4_eor = FOUR.encode(&Message::Update(Update::end_of_rib(Family::IPV4_UNICAST)));
    assert_eq!(v4_eor, hex(&format!("{MARKER} 0017 02 0000 0000")));
    let v6_eor = FOUR.encode(&Message::Update(Update::end_of_rib(Family::IPV6_UNICAST)));
    assert_eq!(
        v6_eor,
        hex(&format!("{MARKER} 001d 02 0000 0006 80 0f 03 0002 01"))
    );
    for (bytes, family) in [
        (v4_eor, Family::IPV4_UNICAST),
        (v6_eor, Family::IPV6_UNICAST),
    ] {
        let Ok(Message::Update(u)) = FOUR.decode(&bytes) else {
            panic!("not an UPDATE")
        };
        assert_eq!(u.end_of_rib_family(), Some(family));
    }
    let Update { attributes, .. } = Update {
        attributes: ipv4_attributes(),
        ..Update::default()
    };
    assert_eq!(
        Update {
            attributes,
            ..Update::default()
        }
        .end_of_rib_family(),
        None
    );
}

#[test]
fn long_attributes_use_the_extended_length() {
    let nlri: Vec<Prefix> = (0..20u16)
        .map(|i| Prefix::host(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i))))
        .collect();
    let update = Update {
        attributes: vec![
            Attribute::Origin(Origin::Igp),
            Attribute::AsPath(vec![AsSegment::sequence(vec![64600])]),
            Attribute::MpReach {
                family: Family::IPV6_UNICAST,
                next_hops: vec![v6("2001:db8::254"), v6("fe80::1")],
                nlri,
            },
        ],
        ..Update::default()
    };
    let bytes = FOUR.encode(&Message::Update(update.clone()));
    // 5 + 32 + 20 * 17 = 377 bytes of value: flags 0x90, 2-byte length 0x0179.
    let at = HEADER_LEN + 4 + 4 + 9;
    assert_eq!(&bytes[at..at + 4], &hex("90 0e 0179")[..]);
    assert_eq!(FOUR.decode(&bytes), Ok(Message::Update(update)));
}

#[test]
fn notification_and_route_refresh() {
    let n = Notification::shutdown("rsbal stopping");
    let bytes = FOUR.encode(&Message::Notification(n.clone()));
    assert_eq!(
        bytes,
        hex(&format!(
            "{MARKER} 0024 03 06 02 0e 727362616c2073746f7070696e67"
        ))
    );
    assert_eq!(FOUR.decode(&bytes), Ok(Message::Notification(n.clone())));
    assert_eq!(
        n.to_string(),
        "Cease / Administrative Shutdown (6/2): \"rsbal stopping\""
    );
    assert_eq!(
        Notification::new(4, 0, vec![]).to_string(),
        "Hold Timer Expired / Unspecific (4/0)"
    );
    assert_eq!(
        Notification::new(3, 4, vec![0x80, 1, 1, 0]).to_string(),
        "UPDATE Message Error / Attribute Flags Error (3/4): data 80010100"
    );
    assert_eq!(
        Notification::cease(error::CEASE_COLLISION).to_string(),
        "Cease / Connection Collision Resolution (6/7)"
    );
    // A shutdown communication longer than its data is shown as data.
    assert_eq!(
        Notification::new(6, 2, vec![9, b'a']).to_string(),
        "Cease / Administrative Shutdown (6/2): data 0961"
    );

    let rr = FOUR.encode(&Message::RouteRefresh(Family::IPV6_UNICAST));
    assert_eq!(rr, hex(&format!("{MARKER} 0017 05 0002 00 01")));
    assert_eq!(
        FOUR.decode(&rr),
        Ok(Message::RouteRefresh(Family::IPV6_UNICAST))
    );
}

#[test]
fn update_errors() {
    const ORIGIN: &str = "40 01 01 00";
    const PATH: &str = "40 02 06 02 01 0000fc58";
    const NH: &str = "40 03 04 c00002fe";
    const NLRI: &str = "20 c6336401";
    const V6_HOP: &str = "20010db8000000000000000000000254";
    let up = |attrs: &str, nlri: &str| message(2, &update_body(&[], &hex(attrs), &hex(nlri)));
    assert!(FOUR
        .decode(&up(&format!("{ORIGIN} {PATH} {NH}"), NLRI))
        .is_ok());
    // Without NLRI nothing is mandatory (a withdrawal).
    assert!(FOUR.decode(&up("", "")).is_ok());

    // (what, attributes, NLRI, subcode, data: None = not checked)
    type Case<'a> = (&'a str, String, &'a str, u8, Option<Vec<u8>>);
    let cases: Vec<Case> = vec![
        (
            "ORIGIN flagged optional",
            format!("c0 01 01 00 {PATH} {NH}"),
            NLRI,
            error::UPDATE_ATTRIBUTE_FLAGS,
            Some(hex("c0 01 01 00")),
        ),
        (
            "MED flagged transitive",
            format!("{ORIGIN} {PATH} {NH} c0 04 04 00000000"),
            NLRI,
            error::UPDATE_ATTRIBUTE_FLAGS,
            None,
        ),
        (
            "partial bit on a well-known attribute",
            format!("60 01 01 00 {PATH} {NH}"),
            NLRI,
            error::UPDATE_ATTRIBUTE_FLAGS,
            None,
        ),
        (
            "ORIGIN of 2 bytes",
            format!("40 01 02 0000 {PATH} {NH}"),
            NLRI,
            error::UPDATE_ATTRIBUTE_LENGTH,
            Some(hex("40 01 02 0000")),
        ),
        (
            "NEXT_HOP of 3 bytes",
            format!("{ORIGIN} {PATH} 40 03 03 c00002"),
            NLRI,
            error::UPDATE_ATTRIBUTE_LENGTH,
            None,
        ),
        (
            "ORIGIN 3",
            format!("40 01 01 03 {PATH} {NH}"),
            NLRI,
            error::UPDATE_INVALID_ORIGIN,
            Some(hex("40 01 01 03")),
        ),
        (
            "missing NEXT_HOP (data: type code)",
            format!("{ORIGIN} {PATH}"),
            NLRI,
            error::UPDATE_MISSING_WELL_KNOWN,
            Some(vec![3]),
        ),
        (
            "missing ORIGIN",
            format!("{PATH} {NH}"),
            NLRI,
            error::UPDATE_MISSING_WELL_KNOWN,
            Some(vec![1]),
        ),
        (
            "the same attribute twice",
            format!("{ORIGIN} {ORIGIN} {PATH} {NH}"),
            NLRI,
            error::UPDATE_MALFORMED_ATTRIBUTE_LIST,
            Some(vec![]),
        ),
        (
            "unknown well-known attribute",
            format!("{ORIGIN} {PATH} {NH} 40 63 01 00"),
            NLRI,
            error::UPDATE_UNRECOGNIZED_WELL_KNOWN,
            Some(hex("40 63 01 00")),
        ),
        (
            "NEXT_HOP 0.0.0.0",
            format!("{ORIGIN} {PATH} 40 03 04 00000000"),
            NLRI,
            error::UPDATE_INVALID_NEXT_HOP,
            None,
        ),
        (
            "AS_PATH segment type 9",
            format!("{ORIGIN} 40 02 06 09 01 0000fc58 {NH}"),
            NLRI,
            error::UPDATE_MALFORMED_AS_PATH,
            None,
        ),
        (
            "AS_PATH segment longer than the attribute",
            format!("{ORIGIN} 40 02 06 02 02 0000fc58 {NH}"),
            NLRI,
            error::UPDATE_MALFORMED_AS_PATH,
            None,
        ),
        (
            "2-octet AS_PATH read as 4-octet",
            format!("{ORIGIN} 40 02 04 02 01 fc58 {NH}"),
            NLRI,
            error::UPDATE_MALFORMED_AS_PATH,
            None,
        ),
        (
            "attribute longer than the list",
            format!("{ORIGIN} 40 02 40 02 01"),
            NLRI,
            error::UPDATE_MALFORMED_ATTRIBUTE_LIST,
            Some(vec![]),
        ),
        (
            "NLRI /33",
            format!("{ORIGIN} {PATH} {NH}"),
            "21 c6336401 00",
            error::UPDATE_INVALID_NETWORK,
            Some(vec![]),
        ),
        (
            "NLRI prefix cut short",
            format!("{ORIGIN} {PATH} {NH}"),
            "20 c63364",
            error::UPDATE_INVALID_NETWORK,
            None,
        ),
        (
            "MP_REACH_NLRI next hop of 5 bytes",
            format!("{ORIGIN} {PATH} 80 0e 0b 0002 01 05 0000000000 00 00"),
            "",
            error::UPDATE_OPTIONAL_ATTRIBUTE,
            None,
        ),
        (
            "MP_REACH_NLRI /129",
            format!("{ORIGIN} {PATH} 80 0e 16 0002 01 10 {V6_HOP} 00 81"),
            "",
            error::UPDATE_OPTIONAL_ATTRIBUTE,
            None,
        ),
        (
            "MP_REACH_NLRI prefixes without ORIGIN",
            format!("{PATH} 80 0e 17 0002 01 10 {V6_HOP} 00 08 20"),
            "",
            error::UPDATE_MISSING_WELL_KNOWN,
            Some(vec![1]),
        ),
    ];
    for (what, attrs, nlri, subcode, data) in cases {
        let (code, sub, got) = decode_err(FOUR, &up(&attrs, nlri));
        assert_eq!((code, sub), (error::UPDATE, subcode), "{what}");
        if let Some(data) = data {
            assert_eq!(got, data, "{what}");
        }
    }

    // Unknown optional attributes are kept.
    let Ok(Message::Update(u)) =
        FOUR.decode(&up(&format!("{ORIGIN} {PATH} {NH} c0 63 01 07"), NLRI))
    else {
        panic!("not an UPDATE")
    };
    assert!(u.attributes.contains(&Attribute::Other {
        flags: 0xc0,
        code: 0x63,
        data: vec![7]
    }));
    // Withdrawn-routes length beyond the message.
    let mut body = update_body(&[], &[], &[]);
    body[1] = 9;
    assert_eq!(decode_err(FOUR, &message(2, &body)), (3, 1, vec![]));
    // Total attribute length beyond the message.
    let body = hex("0000 0010 40 01 01 00");
    assert_eq!(decode_err(FOUR, &message(2, &body)), (3, 1, vec![]));
    // Unknown families are kept opaque (a VPN route in MP_REACH_NLRI).
    let Ok(Message::Update(u)) = FOUR.decode(&up(
        &format!("{ORIGIN} {PATH} 80 0e 0b 0001 80 04 0a000001 00 ff 00"),
        "",
    )) else {
        panic!("not an UPDATE")
    };
    assert!(matches!(u.attributes[2], Attribute::Other { code: 14, .. }));
}

/// Random host prefixes of one family.
fn hosts(rng: &mut fastrand::Rng, v6: bool, max: usize) -> Vec<Prefix> {
    let n = rng.usize(0..=max);
    (0..n)
        .map(|_| {
            Prefix::host(if v6 {
                IpAddr::V6(Ipv6Addr::from(rng.u128(..)))
            } else {
                IpAddr::V4(Ipv4Addr::from(rng.u32(..)))
            })
        })
        .collect()
}

/// A random valid UPDATE built from random parts.
fn random_update(rng: &mut fastrand::Rng) -> Update {
    let path_len = rng.usize(1..6);
    let path = (0..path_len).map(|_| rng.u32(1..)).collect();
    let mut attributes = vec![
        Attribute::Origin(Origin::Igp),
        Attribute::AsPath(vec![AsSegment::sequence(path)]),
        Attribute::Med(rng.u32(..)),
    ];
    let nlri = hosts(rng, false, 4);
    if !nlri.is_empty() {
        attributes.push(Attribute::NextHop(Ipv4Addr::new(192, 0, 2, rng.u8(1..255))));
    }
    if rng.bool() {
        let mut nlri = hosts(rng, true, 4);
        nlri.push(Prefix::host(v6("2001:db8::1")));
        attributes.push(Attribute::MpReach {
            family: Family::IPV6_UNICAST,
            next_hops: vec![IpAddr::V6(Ipv6Addr::from(rng.u128(..)))],
            nlri,
        });
    }
    if rng.bool() {
        let withdrawn = hosts(rng, true, 4);
        attributes.push(Attribute::MpUnreach {
            family: Family::IPV6_UNICAST,
            withdrawn,
        });
    }
    Update {
        withdrawn: hosts(rng, false, 4),
        attributes,
        nlri,
    }
}

#[test]
fn random_updates_round_trip() {
    let mut rng = fastrand::Rng::with_seed(4271);
    for _ in 0..2000 {
        let update = random_update(&mut rng);
        let msg = Message::Update(update);
        assert_eq!(FOUR.decode(&FOUR.encode(&msg)), Ok(msg.clone()));
    }
}

fn check_no_panic(bytes: &[u8]) {
    for codec in [FOUR, TWO] {
        // Whatever the outcome, it is a value, never a panic; errors carry a
        // code from RFC 4271 §4.5.
        if let Err(n) = codec.decode(bytes) {
            assert!((1..=6).contains(&n.code), "{n:?} for {bytes:02x?}");
        }
        let _ = parse_header(bytes);
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = fastrand::Rng::with_seed(6);
    for _ in 0..20_000 {
        let len = rng.usize(0..80);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        // Most runs get a valid header so the body decoders are reached.
        if rng.u8(..) < 230 && bytes.len() >= HEADER_LEN {
            bytes[..16].fill(0xff);
            let len = bytes.len() as u16;
            bytes[16..18].copy_from_slice(&len.to_be_bytes());
            bytes[18] = rng.u8(1..6);
        }
        check_no_panic(&bytes);
    }
}

#[test]
fn mutated_valid_messages_never_panic() {
    let mut rng = fastrand::Rng::with_seed(1771);
    let mut seeds: Vec<Vec<u8>> = vec![
        FOUR.encode(&Message::Open(rsbal_open(64600))),
        FOUR.encode(&Message::Notification(Notification::shutdown("bye"))),
        FOUR.encode(&Message::RouteRefresh(Family::IPV4_UNICAST)),
    ];
    for _ in 0..50 {
        seeds.push(FOUR.encode(&Message::Update(random_update(&mut rng))));
    }
    for _ in 0..30_000 {
        let mut bytes = seeds[rng.usize(..seeds.len())].clone();
        for _ in 0..rng.usize(1..4) {
            let at = rng
                .usize(HEADER_LEN.min(bytes.len())..bytes.len().max(HEADER_LEN + 1))
                .min(bytes.len().saturating_sub(1));
            match rng.u8(0..4) {
                0 => bytes[at] = rng.u8(..),
                1 => bytes[at] ^= 1 << rng.u8(0..8),
                2 => bytes.truncate(at.max(HEADER_LEN)),
                _ => bytes.insert(at, rng.u8(..)),
            }
        }
        // Keep the header consistent half of the time so that body errors show.
        if rng.bool() && bytes.len() >= HEADER_LEN {
            let len = bytes.len() as u16;
            bytes[16..18].copy_from_slice(&len.to_be_bytes());
        }
        check_no_panic(&bytes);
    }
}
