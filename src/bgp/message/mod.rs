//! BGP-4 messages on the wire (RFC 4271), as pure encode/decode code.
//!
//! This module owns the byte layout of OPEN (with the capabilities rsbal
//! speaks: multiprotocol IPv4/IPv6 unicast (RFC 4760), route refresh
//! (RFC 2918), graceful restart (RFC 4724, with RFC 8538's N bit) and 4-octet
//! AS numbers (RFC 6793)), UPDATE (ORIGIN, AS_PATH, NEXT_HOP, MED, LOCAL_PREF,
//! AS4_PATH, MP_REACH_NLRI / MP_UNREACH_NLRI, End-of-RIB), NOTIFICATION,
//! KEEPALIVE and ROUTE-REFRESH. Decoding never panics: every malformed input
//! becomes the [`Notification`] that RFC 4271 §6 says to send back.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Length of the message header (marker, length, type).
pub const HEADER_LEN: usize = 19;
/// Largest message BGP-4 allows.
pub const MAX_MESSAGE_LEN: usize = 4096;
/// The 2-octet stand-in for a 4-octet ASN (RFC 6793).
pub const AS_TRANS: u16 = 23456;
/// Largest restart time the graceful-restart capability can carry (12 bits).
pub const MAX_RESTART_TIME: u16 = 0x0fff;

const MSG_OPEN: u8 = 1;
const MSG_UPDATE: u8 = 2;
const MSG_NOTIFICATION: u8 = 3;
const MSG_KEEPALIVE: u8 = 4;
const MSG_ROUTE_REFRESH: u8 = 5;

const OPT_PARAM_CAPABILITIES: u8 = 2;
const CAP_MULTIPROTOCOL: u8 = 1;
const CAP_ROUTE_REFRESH: u8 = 2;
const CAP_GRACEFUL_RESTART: u8 = 64;
const CAP_FOUR_OCTET_AS: u8 = 65;

const FLAG_OPTIONAL: u8 = 0x80;
const FLAG_TRANSITIVE: u8 = 0x40;
const FLAG_PARTIAL: u8 = 0x20;
const FLAG_EXTENDED: u8 = 0x10;

const ATTR_ORIGIN: u8 = 1;
const ATTR_AS_PATH: u8 = 2;
const ATTR_NEXT_HOP: u8 = 3;
const ATTR_MED: u8 = 4;
const ATTR_LOCAL_PREF: u8 = 5;
const ATTR_ATOMIC_AGGREGATE: u8 = 6;
const ATTR_MP_REACH: u8 = 14;
const ATTR_MP_UNREACH: u8 = 15;
const ATTR_AS4_PATH: u8 = 17;

/// NOTIFICATION error codes and subcodes (RFC 4271 §4.5, RFC 4486, RFC 6608).
pub mod error {
    pub const HEADER: u8 = 1;
    pub const HEADER_NOT_SYNCHRONIZED: u8 = 1;
    pub const HEADER_BAD_LENGTH: u8 = 2;
    pub const HEADER_BAD_TYPE: u8 = 3;

    pub const OPEN: u8 = 2;
    pub const OPEN_UNSPECIFIC: u8 = 0;
    pub const OPEN_UNSUPPORTED_VERSION: u8 = 1;
    pub const OPEN_BAD_PEER_AS: u8 = 2;
    pub const OPEN_BAD_BGP_ID: u8 = 3;
    pub const OPEN_UNSUPPORTED_PARAMETER: u8 = 4;
    pub const OPEN_UNACCEPTABLE_HOLD_TIME: u8 = 6;

    pub const UPDATE: u8 = 3;
    pub const UPDATE_MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UPDATE_UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    pub const UPDATE_MISSING_WELL_KNOWN: u8 = 3;
    pub const UPDATE_ATTRIBUTE_FLAGS: u8 = 4;
    pub const UPDATE_ATTRIBUTE_LENGTH: u8 = 5;
    pub const UPDATE_INVALID_ORIGIN: u8 = 6;
    pub const UPDATE_INVALID_NEXT_HOP: u8 = 8;
    pub const UPDATE_OPTIONAL_ATTRIBUTE: u8 = 9;
    pub const UPDATE_INVALID_NETWORK: u8 = 10;
    pub const UPDATE_MALFORMED_AS_PATH: u8 = 11;

    pub const HOLD_TIMER_EXPIRED: u8 = 4;

    pub const FSM: u8 = 5;
    pub const FSM_IN_OPEN_SENT: u8 = 1;
    pub const FSM_IN_OPEN_CONFIRM: u8 = 2;
    pub const FSM_IN_ESTABLISHED: u8 = 3;

    pub const CEASE: u8 = 6;
    pub const CEASE_ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const CEASE_PEER_DECONFIGURED: u8 = 3;
    pub const CEASE_ADMINISTRATIVE_RESET: u8 = 4;
    pub const CEASE_COLLISION: u8 = 7;
}

/// An address family / subsequent address family pair (AFI, SAFI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Family {
    pub afi: u16,
    pub safi: u8,
}

impl Family {
    pub const IPV4_UNICAST: Family = Family { afi: 1, safi: 1 };
    pub const IPV6_UNICAST: Family = Family { afi: 2, safi: 1 };

    /// The unicast family of `ip`.
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::IPV4_UNICAST,
            IpAddr::V6(_) => Family::IPV6_UNICAST,
        }
    }

    /// Width of a prefix of this family in bits, for the plain IPv4/IPv6
    /// unicast and multicast families (other SAFIs encode NLRI differently).
    fn prefix_bits(self) -> Option<u8> {
        match (self.afi, self.safi) {
            (1, 1 | 2) => Some(32),
            (2, 1 | 2) => Some(128),
            _ => None,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Family::IPV4_UNICAST => f.write_str("ipv4 unicast"),
            Family::IPV6_UNICAST => f.write_str("ipv6 unicast"),
            Family { afi, safi } => write!(f, "afi {afi} safi {safi}"),
        }
    }
}

/// A NOTIFICATION: why a session is being closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: Vec<u8>) -> Notification {
        Notification {
            code,
            subcode,
            data,
        }
    }

    /// Cease with `subcode` and no data.
    pub fn cease(subcode: u8) -> Notification {
        Notification::new(error::CEASE, subcode, Vec::new())
    }

    /// Cease / Administrative Shutdown with a shutdown communication
    /// (RFC 9003: a length octet and UTF-8 text, at most 255 octets).
    pub fn shutdown(text: &str) -> Notification {
        let mut bytes = text.as_bytes().to_vec();
        bytes.truncate(255);
        while std::str::from_utf8(&bytes).is_err() {
            bytes.pop();
        }
        let mut data = vec![bytes.len() as u8];
        data.extend_from_slice(&bytes);
        Notification::new(error::CEASE, error::CEASE_ADMINISTRATIVE_SHUTDOWN, data)
    }

    /// The error code's name.
    pub fn code_name(&self) -> &'static str {
        match self.code {
            error::HEADER => "Message Header Error",
            error::OPEN => "OPEN Message Error",
            error::UPDATE => "UPDATE Message Error",
            error::HOLD_TIMER_EXPIRED => "Hold Timer Expired",
            error::FSM => "Finite State Machine Error",
            error::CEASE => "Cease",
            7 => "ROUTE-REFRESH Message Error",
            _ => "unknown error",
        }
    }

    /// The subcode's name, where the code defines subcodes.
    pub fn subcode_name(&self) -> &'static str {
        use error::*;
        match (self.code, self.subcode) {
            (HEADER, HEADER_NOT_SYNCHRONIZED) => "Connection Not Synchronized",
            (HEADER, HEADER_BAD_LENGTH) => "Bad Message Length",
            (HEADER, HEADER_BAD_TYPE) => "Bad Message Type",
            (OPEN, OPEN_UNSUPPORTED_VERSION) => "Unsupported Version Number",
            (OPEN, OPEN_BAD_PEER_AS) => "Bad Peer AS",
            (OPEN, OPEN_BAD_BGP_ID) => "Bad BGP Identifier",
            (OPEN, OPEN_UNSUPPORTED_PARAMETER) => "Unsupported Optional Parameter",
            (OPEN, OPEN_UNACCEPTABLE_HOLD_TIME) => "Unacceptable Hold Time",
            (OPEN, 7) => "Unsupported Capability",
            (UPDATE, UPDATE_MALFORMED_ATTRIBUTE_LIST) => "Malformed Attribute List",
            (UPDATE, UPDATE_UNRECOGNIZED_WELL_KNOWN) => "Unrecognized Well-known Attribute",
            (UPDATE, UPDATE_MISSING_WELL_KNOWN) => "Missing Well-known Attribute",
            (UPDATE, UPDATE_ATTRIBUTE_FLAGS) => "Attribute Flags Error",
            (UPDATE, UPDATE_ATTRIBUTE_LENGTH) => "Attribute Length Error",
            (UPDATE, UPDATE_INVALID_ORIGIN) => "Invalid ORIGIN Attribute",
            (UPDATE, UPDATE_INVALID_NEXT_HOP) => "Invalid NEXT_HOP Attribute",
            (UPDATE, UPDATE_OPTIONAL_ATTRIBUTE) => "Optional Attribute Error",
            (UPDATE, UPDATE_INVALID_NETWORK) => "Invalid Network Field",
            (UPDATE, UPDATE_MALFORMED_AS_PATH) => "Malformed AS_PATH",
            (FSM, FSM_IN_OPEN_SENT) => "Receive Unexpected Message in OpenSent State",
            (FSM, FSM_IN_OPEN_CONFIRM) => "Receive Unexpected Message in OpenConfirm State",
            (FSM, FSM_IN_ESTABLISHED) => "Receive Unexpected Message in Established State",
            (CEASE, 1) => "Maximum Number of Prefixes Reached",
            (CEASE, CEASE_ADMINISTRATIVE_SHUTDOWN) => "Administrative Shutdown",
            (CEASE, CEASE_PEER_DECONFIGURED) => "Peer De-configured",
            (CEASE, CEASE_ADMINISTRATIVE_RESET) => "Administrative Reset",
            (CEASE, 5) => "Connection Rejected",
            (CEASE, 6) => "Other Configuration Change",
            (CEASE, CEASE_COLLISION) => "Connection Collision Resolution",
            (CEASE, 8) => "Out of Resources",
            (CEASE, 9) => "Hard Reset",
            (_, 0) => "Unspecific",
            _ => "unknown subcode",
        }
    }

    /// The shutdown communication of an Administrative Shutdown or Reset
    /// (RFC 9003), when the data carries a valid one.
    pub fn shutdown_communication(&self) -> Option<String> {
        let shutdown = self.code == error::CEASE
            && (self.subcode == error::CEASE_ADMINISTRATIVE_SHUTDOWN
                || self.subcode == error::CEASE_ADMINISTRATIVE_RESET);
        let (&len, text) = self.data.split_first()?;
        if !shutdown || text.len() < usize::from(len) || len == 0 {
            return None;
        }
        std::str::from_utf8(&text[..usize::from(len)])
            .ok()
            .map(str::to_string)
    }
}

impl fmt::Display for Notification {
    /// `Cease / Administrative Shutdown (6/2): "text"` or `… data 0a0b`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} / {} ({}/{})",
            self.code_name(),
            self.subcode_name(),
            self.code,
            self.subcode
        )?;
        if let Some(text) = self.shutdown_communication() {
            write!(f, ": {text:?}")
        } else if !self.data.is_empty() {
            f.write_str(": data ")?;
            for b in self.data.iter().take(64) {
                write!(f, "{b:02x}")?;
            }
            if self.data.len() > 64 {
                f.write_str("…")?;
            }
            Ok(())
        } else {
            Ok(())
        }
    }
}

/// The graceful-restart capability (RFC 4724, N bit from RFC 8538).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// R: the sender has restarted.
    pub restarting: bool,
    /// N: the sender supports graceful restart across NOTIFICATIONs.
    pub notification: bool,
    /// Seconds the peer should keep the sender's routes after the session drops.
    pub restart_time: u16,
    /// Families, each with F: forwarding state was preserved.
    pub families: Vec<(Family, bool)>,
}

/// One capability of an OPEN (RFC 5492).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    Multiprotocol(Family),
    RouteRefresh,
    GracefulRestart(GracefulRestart),
    FourOctetAs(u32),
    /// Any capability rsbal does not interpret, kept as received.
    Other {
        code: u8,
        data: Vec<u8>,
    },
}

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The sender's ASN: the 4-octet capability's value when present, else
    /// the 2-octet "My Autonomous System" field.
    pub asn: u32,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// True when the OPEN carries the 4-octet AS capability.
    pub fn four_octet_as(&self) -> bool {
        self.capabilities
            .iter()
            .any(|c| matches!(c, Capability::FourOctetAs(_)))
    }

    /// The multiprotocol families advertised; IPv4 unicast alone when the
    /// OPEN has no multiprotocol capability (RFC 4760 §8).
    pub fn families(&self) -> BTreeSet<Family> {
        let families: BTreeSet<Family> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(f) => Some(*f),
                _ => None,
            })
            .collect();
        if families.is_empty() {
            BTreeSet::from([Family::IPV4_UNICAST])
        } else {
            families
        }
    }

    /// The graceful-restart capability, if advertised.
    pub fn graceful_restart(&self) -> Option<&GracefulRestart> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(gr) => Some(gr),
            _ => None,
        })
    }

    /// True when the OPEN advertises route refresh.
    pub fn route_refresh(&self) -> bool {
        self.capabilities.contains(&Capability::RouteRefresh)
    }
}

/// An IP prefix (address and length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// The host route of `ip`: /32 or /128.
    pub fn host(ip: IpAddr) -> Prefix {
        let len = if ip.is_ipv4() { 32 } else { 128 };
        Prefix { addr: ip, len }
    }

    /// Bytes of this prefix in NLRI encoding.
    pub fn encoded_len(&self) -> usize {
        1 + usize::from(self.len).div_ceil(8)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.len);
        let n = usize::from(self.len).div_ceil(8);
        match self.addr {
            IpAddr::V4(a) => out.extend_from_slice(&a.octets()[..n.min(4)]),
            IpAddr::V6(a) => out.extend_from_slice(&a.octets()[..n.min(16)]),
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// ORIGIN values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// AS_PATH segment types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentKind {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

/// One AS_PATH segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsSegment {
    pub kind: SegmentKind,
    pub asns: Vec<u32>,
}

impl AsSegment {
    /// An AS_SEQUENCE segment.
    pub fn sequence(asns: Vec<u32>) -> AsSegment {
        AsSegment {
            kind: SegmentKind::Sequence,
            asns,
        }
    }
}

/// A path attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribute {
    Origin(Origin),
    AsPath(Vec<AsSegment>),
    NextHop(Ipv4Addr),
    Med(u32),
    LocalPref(u32),
    AtomicAggregate,
    /// AS4_PATH: the real path next to an AS_PATH full of AS_TRANS.
    As4Path(Vec<AsSegment>),
    /// MP_REACH_NLRI for IPv4/IPv6: next hop(s) and prefixes.
    MpReach {
        family: Family,
        next_hops: Vec<IpAddr>,
        nlri: Vec<Prefix>,
    },
    /// MP_UNREACH_NLRI for IPv4/IPv6; empty for an End-of-RIB marker.
    MpUnreach {
        family: Family,
        withdrawn: Vec<Prefix>,
    },
    /// Anything else, kept as received.
    Other {
        flags: u8,
        code: u8,
        data: Vec<u8>,
    },
}

impl Attribute {
    fn type_code(&self) -> u8 {
        match self {
            Attribute::Origin(_) => ATTR_ORIGIN,
            Attribute::AsPath(_) => ATTR_AS_PATH,
            Attribute::NextHop(_) => ATTR_NEXT_HOP,
            Attribute::Med(_) => ATTR_MED,
            Attribute::LocalPref(_) => ATTR_LOCAL_PREF,
            Attribute::AtomicAggregate => ATTR_ATOMIC_AGGREGATE,
            Attribute::As4Path(_) => ATTR_AS4_PATH,
            Attribute::MpReach { .. } => ATTR_MP_REACH,
            Attribute::MpUnreach { .. } => ATTR_MP_UNREACH,
            Attribute::Other { code, .. } => *code,
        }
    }
}

/// An UPDATE message. `withdrawn` and `nlri` are IPv4 prefixes; other
/// families travel in [`Attribute::MpReach`] / [`Attribute::MpUnreach`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    pub withdrawn: Vec<Prefix>,
    pub attributes: Vec<Attribute>,
    pub nlri: Vec<Prefix>,
}

impl Update {
    /// The End-of-RIB marker of `family` (RFC 4724 §2).
    pub fn end_of_rib(family: Family) -> Update {
        if family == Family::IPV4_UNICAST {
            Update::default()
        } else {
            Update {
                attributes: vec![Attribute::MpUnreach {
                    family,
                    withdrawn: Vec::new(),
                }],
                ..Update::default()
            }
        }
    }

    /// The family this UPDATE is the End-of-RIB marker of, if it is one.
    pub fn end_of_rib_family(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        match self.attributes.as_slice() {
            [] => Some(Family::IPV4_UNICAST),
            [Attribute::MpUnreach { family, withdrawn }] if withdrawn.is_empty() => Some(*family),
            _ => None,
        }
    }
}

/// A BGP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(Family),
}

impl Message {
    /// The message type's name, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Open(_) => "OPEN",
            Message::Update(_) => "UPDATE",
            Message::Notification(_) => "NOTIFICATION",
            Message::Keepalive => "KEEPALIVE",
            Message::RouteRefresh(_) => "ROUTE-REFRESH",
        }
    }
}

/// What the session negotiated that changes the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Codec {
    /// Both sides sent the 4-octet AS capability: AS_PATH carries 4-octet ASNs.
    pub four_octet_as: bool,
}

// ---------------------------------------------------------------- encoding

impl Codec {
    /// The message on the wire, header included.
    pub fn encode(&self, msg: &Message) -> Vec<u8> {
        let mut out = vec![0xff; 16];
        out.extend_from_slice(&[0, 0, 0]);
        let kind = match msg {
            Message::Open(open) => {
                encode_open(open, &mut out);
                MSG_OPEN
            }
            Message::Update(update) => {
                self.encode_update(update, &mut out);
                MSG_UPDATE
            }
            Message::Notification(n) => {
                out.push(n.code);
                out.push(n.subcode);
                out.extend_from_slice(&n.data);
                MSG_NOTIFICATION
            }
            Message::Keepalive => MSG_KEEPALIVE,
            Message::RouteRefresh(family) => {
                out.extend_from_slice(&family.afi.to_be_bytes());
                out.push(0);
                out.push(family.safi);
                MSG_ROUTE_REFRESH
            }
        };
        let len = out.len() as u16;
        out[16..18].copy_from_slice(&len.to_be_bytes());
        out[18] = kind;
        out
    }

    fn encode_update(&self, update: &Update, out: &mut Vec<u8>) {
        let mut withdrawn = Vec::new();
        for p in &update.withdrawn {
            p.encode(&mut withdrawn);
        }
        out.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
        out.extend_from_slice(&withdrawn);
        let mut attrs = Vec::new();
        for a in &update.attributes {
            self.encode_attribute(a, &mut attrs);
        }
        out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        out.extend_from_slice(&attrs);
        for p in &update.nlri {
            p.encode(out);
        }
    }

    fn encode_attribute(&self, attr: &Attribute, out: &mut Vec<u8>) {
        let mut value = Vec::new();
        let flags = match attr {
            Attribute::Origin(o) => {
                value.push(*o as u8);
                FLAG_TRANSITIVE
            }
            Attribute::AsPath(segments) => {
                encode_segments(segments, self.four_octet_as, &mut value);
                FLAG_TRANSITIVE
            }
            Attribute::NextHop(ip) => {
                value.extend_from_slice(&ip.octets());
                FLAG_TRANSITIVE
            }
            Attribute::Med(v) => {
                value.extend_from_slice(&v.to_be_bytes());
                FLAG_OPTIONAL
            }
            Attribute::LocalPref(v) => {
                value.extend_from_slice(&v.to_be_bytes());
                FLAG_TRANSITIVE
            }
            Attribute::AtomicAggregate => FLAG_TRANSITIVE,
            Attribute::As4Path(segments) => {
                encode_segments(segments, true, &mut value);
                FLAG_OPTIONAL | FLAG_TRANSITIVE
            }
            Attribute::MpReach {
                family,
                next_hops,
                nlri,
            } => {
                value.extend_from_slice(&family.afi.to_be_bytes());
                value.push(family.safi);
                let mut hops = Vec::new();
                for hop in next_hops {
                    match hop {
                        IpAddr::V4(a) => hops.extend_from_slice(&a.octets()),
                        IpAddr::V6(a) => hops.extend_from_slice(&a.octets()),
                    }
                }
                value.push(hops.len() as u8);
                value.extend_from_slice(&hops);
                value.push(0); // reserved
                for p in nlri {
                    p.encode(&mut value);
                }
                FLAG_OPTIONAL
            }
            Attribute::MpUnreach { family, withdrawn } => {
                value.extend_from_slice(&family.afi.to_be_bytes());
                value.push(family.safi);
                for p in withdrawn {
                    p.encode(&mut value);
                }
                FLAG_OPTIONAL
            }
            Attribute::Other { flags, data, .. } => {
                value.extend_from_slice(data);
                flags & !FLAG_EXTENDED
            }
        };
        if value.len() > 255 {
            out.push(flags | FLAG_EXTENDED);
            out.push(attr.type_code());
            out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        } else {
            out.push(flags);
            out.push(attr.type_code());
            out.push(value.len() as u8);
        }
        out.extend_from_slice(&value);
    }
}

fn encode_open(open: &Open, out: &mut Vec<u8>) {
    out.push(4);
    let my_as = u16::try_from(open.asn).unwrap_or(AS_TRANS);
    out.extend_from_slice(&my_as.to_be_bytes());
    out.extend_from_slice(&open.hold_time.to_be_bytes());
    out.extend_from_slice(&open.bgp_id.octets());
    let mut caps = Vec::new();
    for cap in &open.capabilities {
        encode_capability(cap, &mut caps);
    }
    if caps.is_empty() {
        out.push(0);
    } else {
        out.push((caps.len() + 2) as u8);
        out.push(OPT_PARAM_CAPABILITIES);
        out.push(caps.len() as u8);
        out.extend_from_slice(&caps);
    }
}

fn encode_capability(cap: &Capability, out: &mut Vec<u8>) {
    let mut value = Vec::new();
    let code = match cap {
        Capability::Multiprotocol(f) => {
            value.extend_from_slice(&f.afi.to_be_bytes());
            value.push(0);
            value.push(f.safi);
            CAP_MULTIPROTOCOL
        }
        Capability::RouteRefresh => CAP_ROUTE_REFRESH,
        Capability::GracefulRestart(gr) => {
            let mut word = gr.restart_time.min(MAX_RESTART_TIME);
            if gr.restarting {
                word |= 0x8000;
            }
            if gr.notification {
                word |= 0x4000;
            }
            value.extend_from_slice(&word.to_be_bytes());
            for (f, forwarding) in &gr.families {
                value.extend_from_slice(&f.afi.to_be_bytes());
                value.push(f.safi);
                value.push(if *forwarding { 0x80 } else { 0 });
            }
            CAP_GRACEFUL_RESTART
        }
        Capability::FourOctetAs(asn) => {
            value.extend_from_slice(&asn.to_be_bytes());
            CAP_FOUR_OCTET_AS
        }
        Capability::Other { code, data } => {
            value.extend_from_slice(data);
            *code
        }
    };
    out.push(code);
    out.push(value.len() as u8);
    out.extend_from_slice(&value);
}

fn encode_segments(segments: &[AsSegment], four_octet: bool, out: &mut Vec<u8>) {
    for seg in segments {
        // A segment holds at most 255 ASNs; longer paths take several.
        let chunks: Vec<&[u32]> = if seg.asns.is_empty() {
            vec![&[]]
        } else {
            seg.asns.chunks(255).collect()
        };
        for chunk in chunks {
            out.push(seg.kind as u8);
            out.push(chunk.len() as u8);
            for &asn in chunk {
                if four_octet {
                    out.extend_from_slice(&asn.to_be_bytes());
                } else {
                    let two = u16::try_from(asn).unwrap_or(AS_TRANS);
                    out.extend_from_slice(&two.to_be_bytes());
                }
            }
        }
    }
}

// ---------------------------------------------------------------- decoding

/// A validated message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Length of the whole message, header included.
    pub len: usize,
    pub kind: u8,
}

fn header_error(subcode: u8, data: Vec<u8>) -> Notification {
    Notification::new(error::HEADER, subcode, data)
}

/// Checks the 19 header bytes: marker, length (in range and plausible for
/// the type) and type.
pub fn parse_header(bytes: &[u8]) -> Result<Header, Notification> {
    if bytes.len() < HEADER_LEN {
        return Err(header_error(error::HEADER_BAD_LENGTH, Vec::new()));
    }
    if bytes[..16].iter().any(|&b| b != 0xff) {
        return Err(header_error(error::HEADER_NOT_SYNCHRONIZED, Vec::new()));
    }
    let len_field = [bytes[16], bytes[17]];
    let len = usize::from(u16::from_be_bytes(len_field));
    let kind = bytes[18];
    let bad_len = || header_error(error::HEADER_BAD_LENGTH, len_field.to_vec());
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(bad_len());
    }
    let fits = match kind {
        MSG_OPEN => len >= HEADER_LEN + 10,
        MSG_UPDATE => len >= HEADER_LEN + 4,
        MSG_NOTIFICATION => len >= HEADER_LEN + 2,
        MSG_KEEPALIVE => len == HEADER_LEN,
        MSG_ROUTE_REFRESH => len == HEADER_LEN + 4,
        _ => return Err(header_error(error::HEADER_BAD_TYPE, vec![kind])),
    };
    if !fits {
        return Err(bad_len());
    }
    Ok(Header { len, kind })
}

impl Codec {
    /// Decodes one whole message (header included). Trailing bytes beyond
    /// the header's length are an error.
    pub fn decode(&self, bytes: &[u8]) -> Result<Message, Notification> {
        let header = parse_header(bytes)?;
        if bytes.len() != header.len {
            let field = (bytes.len().min(u16::MAX as usize) as u16).to_be_bytes();
            return Err(header_error(error::HEADER_BAD_LENGTH, field.to_vec()));
        }
        let body = &bytes[HEADER_LEN..];
        match header.kind {
            MSG_OPEN => decode_open(body).map(Message::Open),
            MSG_UPDATE => self.decode_update(body).map(Message::Update),
            MSG_NOTIFICATION => Ok(Message::Notification(Notification::new(
                body[0],
                body[1],
                body[2..].to_vec(),
            ))),
            MSG_KEEPALIVE => Ok(Message::Keepalive),
            // parse_header accepts no other type.
            _ => Ok(Message::RouteRefresh(Family {
                afi: u16::from_be_bytes([body[0], body[1]]),
                safi: body[3],
            })),
        }
    }
}

/// A cursor over a byte slice that reports overruns as `None`.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }
    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

fn open_error(subcode: u8, data: Vec<u8>) -> Notification {
    Notification::new(error::OPEN, subcode, data)
}

fn decode_open(body: &[u8]) -> Result<Open, Notification> {
    let malformed = || open_error(error::OPEN_UNSPECIFIC, Vec::new());
    let mut r = Reader::new(body);
    let version = r.u8().ok_or_else(malformed)?;
    if version != 4 {
        return Err(open_error(error::OPEN_UNSUPPORTED_VERSION, vec![0, 4]));
    }
    let my_as = r.u16().ok_or_else(malformed)?;
    let hold_time = r.u16().ok_or_else(malformed)?;
    if hold_time == 1 || hold_time == 2 {
        return Err(open_error(error::OPEN_UNACCEPTABLE_HOLD_TIME, Vec::new()));
    }
    let bgp_id = Ipv4Addr::from(r.u32().ok_or_else(malformed)?);
    if bgp_id.is_unspecified() {
        return Err(open_error(error::OPEN_BAD_BGP_ID, bgp_id.octets().to_vec()));
    }
    let params_len = usize::from(r.u8().ok_or_else(malformed)?);
    let params = r.rest();
    if params.len() != params_len {
        return Err(malformed());
    }
    let mut capabilities = Vec::new();
    let mut r = Reader::new(params);
    while !r.is_empty() {
        let kind = r.u8().ok_or_else(malformed)?;
        let len = usize::from(r.u8().ok_or_else(malformed)?);
        let value = r.take(len).ok_or_else(malformed)?;
        if kind != OPT_PARAM_CAPABILITIES {
            return Err(open_error(error::OPEN_UNSUPPORTED_PARAMETER, Vec::new()));
        }
        decode_capabilities(value, &mut capabilities).ok_or_else(malformed)?;
    }
    let asn = capabilities
        .iter()
        .find_map(|c| match c {
            Capability::FourOctetAs(asn) => Some(*asn),
            _ => None,
        })
        .unwrap_or(u32::from(my_as));
    if asn == 0 {
        return Err(open_error(
            error::OPEN_BAD_PEER_AS,
            my_as.to_be_bytes().to_vec(),
        ));
    }
    Ok(Open {
        asn,
        hold_time,
        bgp_id,
        capabilities,
    })
}

/// Decodes the capabilities of one optional parameter; `None` when malformed.
fn decode_capabilities(bytes: &[u8], out: &mut Vec<Capability>) -> Option<()> {
    let mut r = Reader::new(bytes);
    while !r.is_empty() {
        let code = r.u8()?;
        let len = usize::from(r.u8()?);
        let value = r.take(len)?;
        let mut v = Reader::new(value);
        let cap = match code {
            CAP_MULTIPROTOCOL if len == 4 => {
                let afi = v.u16()?;
                let _reserved = v.u8()?;
                let safi = v.u8()?;
                Capability::Multiprotocol(Family { afi, safi })
            }
            CAP_ROUTE_REFRESH if len == 0 => Capability::RouteRefresh,
            CAP_FOUR_OCTET_AS if len == 4 => Capability::FourOctetAs(v.u32()?),
            CAP_GRACEFUL_RESTART if len >= 2 && (len - 2) % 4 == 0 => {
                let word = v.u16()?;
                let mut families = Vec::new();
                while !v.is_empty() {
                    let afi = v.u16()?;
                    let safi = v.u8()?;
                    let flags = v.u8()?;
                    families.push((Family { afi, safi }, flags & 0x80 != 0));
                }
                Capability::GracefulRestart(GracefulRestart {
                    restarting: word & 0x8000 != 0,
                    notification: word & 0x4000 != 0,
                    restart_time: word & MAX_RESTART_TIME,
                    families,
                })
            }
            CAP_MULTIPROTOCOL | CAP_ROUTE_REFRESH | CAP_FOUR_OCTET_AS | CAP_GRACEFUL_RESTART => {
                return None
            }
            _ => Capability::Other {
                code,
                data: value.to_vec(),
            },
        };
        out.push(cap);
    }
    Some(())
}

fn update_error(subcode: u8, data: Vec<u8>) -> Notification {
    Notification::new(error::UPDATE, subcode, data)
}

/// Decodes NLRI-encoded prefixes of `family`; `None` when malformed.
fn decode_prefixes(bytes: &[u8], family: Family) -> Option<Vec<Prefix>> {
    let bits = family.prefix_bits()?;
    let mut r = Reader::new(bytes);
    let mut prefixes = Vec::new();
    while !r.is_empty() {
        let len = r.u8()?;
        if len > bits {
            return None;
        }
        let octets = r.take(usize::from(len).div_ceil(8))?;
        let addr = if bits == 32 {
            let mut a = [0u8; 4];
            a[..octets.len()].copy_from_slice(octets);
            IpAddr::V4(Ipv4Addr::from(a))
        } else {
            let mut a = [0u8; 16];
            a[..octets.len()].copy_from_slice(octets);
            IpAddr::V6(Ipv6Addr::from(a))
        };
        prefixes.push(Prefix { addr, len });
    }
    Some(prefixes)
}

/// Decodes AS_PATH segments with 2- or 4-octet ASNs; `None` when malformed.
fn decode_segments(bytes: &[u8], four_octet: bool) -> Option<Vec<AsSegment>> {
    let mut r = Reader::new(bytes);
    let mut segments = Vec::new();
    while !r.is_empty() {
        let kind = match r.u8()? {
            1 => SegmentKind::Set,
            2 => SegmentKind::Sequence,
            3 => SegmentKind::ConfedSequence,
            4 => SegmentKind::ConfedSet,
            _ => return None,
        };
        let count = r.u8()?;
        if count == 0 {
            return None;
        }
        let mut asns = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            asns.push(if four_octet {
                r.u32()?
            } else {
                u32::from(r.u16()?)
            });
        }
        segments.push(AsSegment { kind, asns });
    }
    Some(segments)
}

/// The flags (optional, transitive) an attribute rsbal knows must carry.
fn expected_flags(code: u8) -> Option<u8> {
    match code {
        ATTR_ORIGIN | ATTR_AS_PATH | ATTR_NEXT_HOP | ATTR_LOCAL_PREF | ATTR_ATOMIC_AGGREGATE => {
            Some(FLAG_TRANSITIVE)
        }
        ATTR_MED | ATTR_MP_REACH | ATTR_MP_UNREACH => Some(FLAG_OPTIONAL),
        ATTR_AS4_PATH => Some(FLAG_OPTIONAL | FLAG_TRANSITIVE),
        _ => None,
    }
}

impl Codec {
    fn decode_update(&self, body: &[u8]) -> Result<Update, Notification> {
        let malformed = || update_error(error::UPDATE_MALFORMED_ATTRIBUTE_LIST, Vec::new());
        let mut r = Reader::new(body);
        let withdrawn_len = usize::from(r.u16().ok_or_else(malformed)?);
        let withdrawn_bytes = r.take(withdrawn_len).ok_or_else(malformed)?;
        let attrs_len = usize::from(r.u16().ok_or_else(malformed)?);
        let attr_bytes = r.take(attrs_len).ok_or_else(malformed)?;
        let nlri_bytes = r.rest();
        let invalid_network = || update_error(error::UPDATE_INVALID_NETWORK, Vec::new());
        let withdrawn =
            decode_prefixes(withdrawn_bytes, Family::IPV4_UNICAST).ok_or_else(invalid_network)?;
        let attributes = self.decode_attributes(attr_bytes)?;
        let nlri = decode_prefixes(nlri_bytes, Family::IPV4_UNICAST).ok_or_else(invalid_network)?;
        let present = |code: u8| attributes.iter().any(|a| a.type_code() == code);
        let mp_reach = attributes
            .iter()
            .any(|a| matches!(a, Attribute::MpReach { nlri, .. } if !nlri.is_empty()));
        if !nlri.is_empty() || mp_reach {
            let mut mandatory = vec![ATTR_ORIGIN, ATTR_AS_PATH];
            if !nlri.is_empty() {
                mandatory.push(ATTR_NEXT_HOP);
            }
            if let Some(&missing) = mandatory.iter().find(|&&code| !present(code)) {
                return Err(update_error(
                    error::UPDATE_MISSING_WELL_KNOWN,
                    vec![missing],
                ));
            }
        }
        Ok(Update {
            withdrawn,
            attributes,
            nlri,
        })
    }

    fn decode_attributes(&self, bytes: &[u8]) -> Result<Vec<Attribute>, Notification> {
        let malformed = || update_error(error::UPDATE_MALFORMED_ATTRIBUTE_LIST, Vec::new());
        let mut r = Reader::new(bytes);
        let mut seen = [false; 256];
        let mut attributes = Vec::new();
        while !r.is_empty() {
            let start = r.bytes;
            let flags = r.u8().ok_or_else(malformed)?;
            let code = r.u8().ok_or_else(malformed)?;
            let len = if flags & FLAG_EXTENDED != 0 {
                usize::from(r.u16().ok_or_else(malformed)?)
            } else {
                usize::from(r.u8().ok_or_else(malformed)?)
            };
            let value = r.take(len).ok_or_else(malformed)?;
            let whole = &start[..start.len() - r.bytes.len()];
            if std::mem::replace(&mut seen[usize::from(code)], true) {
                return Err(malformed());
            }
            attributes.push(self.decode_attribute(flags, code, value, whole)?);
        }
        Ok(attributes)
    }

    /// One attribute; `whole` is its encoding, the data of most errors.
    fn decode_attribute(
        &self,
        flags: u8,
        code: u8,
        value: &[u8],
        whole: &[u8],
    ) -> Result<Attribute, Notification> {
        let err = |subcode: u8| update_error(subcode, whole.to_vec());
        let Some(expected) = expected_flags(code) else {
            if flags & FLAG_OPTIONAL == 0 {
                return Err(err(error::UPDATE_UNRECOGNIZED_WELL_KNOWN));
            }
            return Ok(Attribute::Other {
                flags,
                code,
                data: value.to_vec(),
            });
        };
        let partial_ok = expected == FLAG_OPTIONAL | FLAG_TRANSITIVE;
        if flags & (FLAG_OPTIONAL | FLAG_TRANSITIVE) != expected
            || (!partial_ok && flags & FLAG_PARTIAL != 0)
        {
            return Err(err(error::UPDATE_ATTRIBUTE_FLAGS));
        }
        let fixed_len = match code {
            ATTR_ORIGIN => Some(1),
            ATTR_NEXT_HOP | ATTR_MED | ATTR_LOCAL_PREF => Some(4),
            ATTR_ATOMIC_AGGREGATE => Some(0),
            _ => None,
        };
        if fixed_len.is_some_and(|n| n != value.len()) {
            return Err(err(error::UPDATE_ATTRIBUTE_LENGTH));
        }
        let u32_value = || u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
        Ok(match code {
            ATTR_ORIGIN => match value[0] {
                0 => Attribute::Origin(Origin::Igp),
                1 => Attribute::Origin(Origin::Egp),
                2 => Attribute::Origin(Origin::Incomplete),
                _ => return Err(err(error::UPDATE_INVALID_ORIGIN)),
            },
            ATTR_AS_PATH => Attribute::AsPath(
                decode_segments(value, self.four_octet_as)
                    .ok_or_else(|| update_error(error::UPDATE_MALFORMED_AS_PATH, Vec::new()))?,
            ),
            ATTR_NEXT_HOP => {
                let ip = Ipv4Addr::from(u32_value());
                if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
                    return Err(err(error::UPDATE_INVALID_NEXT_HOP));
                }
                Attribute::NextHop(ip)
            }
            ATTR_MED => Attribute::Med(u32_value()),
            ATTR_LOCAL_PREF => Attribute::LocalPref(u32_value()),
            ATTR_ATOMIC_AGGREGATE => Attribute::AtomicAggregate,
            // A malformed AS4_PATH is ignored rather than fatal (RFC 6793 §6).
            ATTR_AS4_PATH => match decode_segments(value, true) {
                Some(segments) => Attribute::As4Path(segments),
                None => Attribute::Other {
                    flags,
                    code,
                    data: value.to_vec(),
                },
            },
            ATTR_MP_REACH => decode_mp_reach(flags, value)
                .ok_or_else(|| err(error::UPDATE_OPTIONAL_ATTRIBUTE))?,
            _ => decode_mp_unreach(flags, value)
                .ok_or_else(|| err(error::UPDATE_OPTIONAL_ATTRIBUTE))?,
        })
    }
}

fn decode_mp_reach(flags: u8, value: &[u8]) -> Option<Attribute> {
    let mut r = Reader::new(value);
    let family = Family {
        afi: r.u16()?,
        safi: r.u8()?,
    };
    let hop_len = usize::from(r.u8()?);
    let hops = r.take(hop_len)?;
    let _reserved = r.u8()?;
    if family.prefix_bits().is_none() {
        return Some(Attribute::Other {
            flags,
            code: ATTR_MP_REACH,
            data: value.to_vec(),
        });
    }
    // IPv4, IPv6, or IPv6 global + link-local (RFC 2545); IPv4 NLRI may
    // carry IPv6 next hops (RFC 8950).
    let width = match hops.len() {
        4 => 4,
        16 | 32 => 16,
        _ => return None,
    };
    let next_hops = hops
        .chunks(width)
        .map(|c| match c.len() {
            4 => IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3])),
            _ => {
                let mut a = [0u8; 16];
                a.copy_from_slice(c);
                IpAddr::V6(Ipv6Addr::from(a))
            }
        })
        .collect();
    let nlri = decode_prefixes(r.rest(), family)?;
    Some(Attribute::MpReach {
        family,
        next_hops,
        nlri,
    })
}

fn decode_mp_unreach(flags: u8, value: &[u8]) -> Option<Attribute> {
    let mut r = Reader::new(value);
    let family = Family {
        afi: r.u16()?,
        safi: r.u8()?,
    };
    if family.prefix_bits().is_none() {
        return Some(Attribute::Other {
            flags,
            code: ATTR_MP_UNREACH,
            data: value.to_vec(),
        });
    }
    let withdrawn = decode_prefixes(r.rest(), family)?;
    Some(Attribute::MpUnreach { family, withdrawn })
}

#[cfg(test)]
mod tests;
