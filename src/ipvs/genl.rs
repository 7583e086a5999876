//! IPVS over generic netlink: message encoding and decoding (pure, no I/O).
//!
//! This module owns the wire format the kernel's `IPVS` generic netlink
//! family speaks (constants from `linux/netlink.h`, `linux/genetlink.h` and
//! `linux/ip_vs.h`): it builds the requests rsbal sends (family resolution,
//! the six table changes, service and destination dumps) and reads the
//! kernel's answers (ACKs and errors by sequence number, dump entries, the
//! family id). `ipvs::netlink` moves these bytes over a socket.
//!
//! Netlink headers and attributes are in host byte order, except ports
//! (network order), as the kernel expects.

use super::error::DecodeError;
use super::{Dest, ForwardingMethod, IpvsCommand, ServiceKey, VirtualService};
use crate::config::Protocol;
use nix::errno::Errno;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

// linux/netlink.h
pub(crate) const NLMSG_HDRLEN: usize = 16;
pub(crate) const NLMSG_ERROR: u16 = 2;
pub(crate) const NLMSG_DONE: u16 = 3;
pub(crate) const NLM_F_REQUEST: u16 = 0x01;
pub(crate) const NLM_F_ACK: u16 = 0x04;
pub(crate) const NLM_F_DUMP: u16 = 0x100 | 0x200;
const NLA_HDRLEN: usize = 4;
const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

// linux/genetlink.h
pub(crate) const GENL_HDRLEN: usize = 4;
pub(crate) const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;

// linux/ip_vs.h
pub(crate) const IPVS_GENL_NAME: &str = "IPVS";
const IPVS_GENL_VERSION: u8 = 1;
pub(crate) const IPVS_CMD_NEW_SERVICE: u8 = 1;
pub(crate) const IPVS_CMD_SET_SERVICE: u8 = 2;
pub(crate) const IPVS_CMD_DEL_SERVICE: u8 = 3;
pub(crate) const IPVS_CMD_GET_SERVICE: u8 = 4;
pub(crate) const IPVS_CMD_NEW_DEST: u8 = 5;
pub(crate) const IPVS_CMD_SET_DEST: u8 = 6;
pub(crate) const IPVS_CMD_DEL_DEST: u8 = 7;
pub(crate) const IPVS_CMD_GET_DEST: u8 = 8;
const IPVS_CMD_ATTR_SERVICE: u16 = 1;
const IPVS_CMD_ATTR_DEST: u16 = 2;
const IPVS_SVC_ATTR_AF: u16 = 1;
const IPVS_SVC_ATTR_PROTOCOL: u16 = 2;
const IPVS_SVC_ATTR_ADDR: u16 = 3;
const IPVS_SVC_ATTR_PORT: u16 = 4;
const IPVS_SVC_ATTR_FWMARK: u16 = 5;
const IPVS_SVC_ATTR_SCHED_NAME: u16 = 6;
const IPVS_SVC_ATTR_FLAGS: u16 = 7;
const IPVS_SVC_ATTR_TIMEOUT: u16 = 8;
const IPVS_SVC_ATTR_NETMASK: u16 = 9;
const IPVS_DEST_ATTR_ADDR: u16 = 1;
const IPVS_DEST_ATTR_PORT: u16 = 2;
const IPVS_DEST_ATTR_FWD_METHOD: u16 = 3;
const IPVS_DEST_ATTR_WEIGHT: u16 = 4;
const IPVS_DEST_ATTR_U_THRESH: u16 = 5;
const IPVS_DEST_ATTR_L_THRESH: u16 = 6;
const IPVS_DEST_ATTR_ADDR_FAMILY: u16 = 11;
pub(crate) const IP_VS_SVC_F_ONEPACKET: u32 = 0x0004;
const IP_VS_CONN_F_FWD_MASK: u32 = 0x0007;
pub(crate) const IP_VS_CONN_F_MASQ: u32 = 0x0000;
const IP_VS_CONN_F_LOCALNODE: u32 = 0x0001;
pub(crate) const IP_VS_CONN_F_TUNNEL: u32 = 0x0002;
pub(crate) const IP_VS_CONN_F_DROUTE: u32 = 0x0003;

// linux/socket.h, linux/in.h
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const IPPROTO_UDP: u16 = 17;

/// Builds one netlink message: header, generic netlink header, attributes
/// (nests are closed by [`MessageBuilder::end_nest`]).
struct MessageBuilder {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl MessageBuilder {
    fn new(kind: u16, flags: u16, seq: u32, cmd: u8, version: u8) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set in finish()
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        buf.extend_from_slice(&[cmd, version, 0, 0]);
        MessageBuilder {
            buf,
            nests: Vec::new(),
        }
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = (NLA_HDRLEN + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn u16(&mut self, kind: u16, value: u16) -> &mut Self {
        self.attr(kind, &value.to_ne_bytes())
    }

    fn u32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_ne_bytes())
    }

    /// A NUL-terminated string.
    fn string(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut data = value.as_bytes().to_vec();
        data.push(0);
        self.attr(kind, &data)
    }

    fn begin_nest(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end_nest(&mut self) -> &mut Self {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn pad(&mut self) {
        while self.buf.len() % 4 != 0 {
            self.buf.push(0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf
    }
}

/// `CTRL_CMD_GETFAMILY` for the family `name` (`"IPVS"`).
pub(crate) fn get_family(seq: u32, name: &str) -> Vec<u8> {
    let mut m = MessageBuilder::new(
        GENL_ID_CTRL,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        CTRL_CMD_GETFAMILY,
        1,
    );
    m.string(CTRL_ATTR_FAMILY_NAME, name);
    m.finish()
}

/// A `GET_SERVICE` dump of every virtual service.
pub(crate) fn dump_services(family: u16, seq: u32) -> Vec<u8> {
    MessageBuilder::new(
        family,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        IPVS_CMD_GET_SERVICE,
        IPVS_GENL_VERSION,
    )
    .finish()
}

/// A `GET_DEST` dump of the destinations of `service`.
pub(crate) fn dump_dests(family: u16, seq: u32, service: &ServiceKey) -> Vec<u8> {
    let mut m = MessageBuilder::new(
        family,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        IPVS_CMD_GET_DEST,
        IPVS_GENL_VERSION,
    );
    service_attr(&mut m, service, None);
    m.finish()
}

/// The request that carries out `cmd`, asking for an ACK.
pub(crate) fn command(family: u16, seq: u32, cmd: &IpvsCommand) -> Vec<u8> {
    let (genl_cmd, key, full_service, dest) = match cmd {
        IpvsCommand::AddService(vs) => (IPVS_CMD_NEW_SERVICE, &vs.key, Some(vs), None),
        IpvsCommand::EditService(vs) => (IPVS_CMD_SET_SERVICE, &vs.key, Some(vs), None),
        IpvsCommand::DeleteService(key) => (IPVS_CMD_DEL_SERVICE, key, None, None),
        IpvsCommand::AddDest {
            service,
            dest,
            weight,
            forwarding,
        } => (
            IPVS_CMD_NEW_DEST,
            service,
            None,
            Some((dest, Some(Dest::new(*weight, *forwarding)))),
        ),
        IpvsCommand::EditDest {
            service,
            dest,
            weight,
            forwarding,
        } => (
            IPVS_CMD_SET_DEST,
            service,
            None,
            Some((dest, Some(Dest::new(*weight, *forwarding)))),
        ),
        IpvsCommand::DeleteDest { service, dest } => {
            (IPVS_CMD_DEL_DEST, service, None, Some((dest, None)))
        }
    };
    let mut m = MessageBuilder::new(
        family,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        genl_cmd,
        IPVS_GENL_VERSION,
    );
    service_attr(&mut m, key, full_service);
    if let Some((addr, spec)) = dest {
        dest_attr(&mut m, addr, spec);
    }
    m.finish()
}

impl Dest {
    fn new(weight: u32, forwarding: ForwardingMethod) -> Dest {
        Dest { weight, forwarding }
    }
}

fn family_of(addr: &SocketAddr) -> u16 {
    if addr.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    }
}

/// The address as the kernel's `union nf_inet_addr` (16 bytes, IPv4 first).
fn inet_addr(ip: IpAddr) -> [u8; 16] {
    let mut out = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => out[..4].copy_from_slice(&v4.octets()),
        IpAddr::V6(v6) => out = v6.octets(),
    }
    out
}

/// `IPVS_CMD_ATTR_SERVICE`: the identifying fields, plus scheduler, flags,
/// timeout and netmask when `full` (new and changed services).
fn service_attr(m: &mut MessageBuilder, key: &ServiceKey, full: Option<&VirtualService>) {
    m.begin_nest(IPVS_CMD_ATTR_SERVICE)
        .u16(IPVS_SVC_ATTR_AF, family_of(&key.addr))
        .u16(
            IPVS_SVC_ATTR_PROTOCOL,
            match key.protocol {
                Protocol::Tcp => IPPROTO_TCP,
                Protocol::Udp => IPPROTO_UDP,
            },
        )
        .attr(IPVS_SVC_ATTR_ADDR, &inet_addr(key.addr.ip()))
        .attr(IPVS_SVC_ATTR_PORT, &key.addr.port().to_be_bytes());
    if let Some(vs) = full {
        let flags = if vs.ops { IP_VS_SVC_F_ONEPACKET } else { 0 };
        let mut flags_mask = flags.to_ne_bytes().to_vec();
        flags_mask.extend_from_slice(&u32::MAX.to_ne_bytes());
        // An IPv6 service needs a prefix length (1-128), IPv4 a mask.
        let netmask = if key.addr.is_ipv4() { u32::MAX } else { 128 };
        m.string(IPVS_SVC_ATTR_SCHED_NAME, &vs.scheduler)
            .attr(IPVS_SVC_ATTR_FLAGS, &flags_mask)
            .u32(IPVS_SVC_ATTR_TIMEOUT, 0)
            .u32(IPVS_SVC_ATTR_NETMASK, netmask);
    }
    m.end_nest();
}

/// The kernel's value for a forwarding method (`IP_VS_CONN_F_*`).
pub(crate) fn forwarding_code(method: ForwardingMethod) -> u32 {
    match method {
        ForwardingMethod::Dr => IP_VS_CONN_F_DROUTE,
        ForwardingMethod::Nat => IP_VS_CONN_F_MASQ,
        ForwardingMethod::Tunnel => IP_VS_CONN_F_TUNNEL,
    }
}

/// `IPVS_CMD_ATTR_DEST`: address and port, plus the settings when `spec`
/// is given (new and changed destinations).
fn dest_attr(m: &mut MessageBuilder, addr: &SocketAddr, spec: Option<Dest>) {
    m.begin_nest(IPVS_CMD_ATTR_DEST)
        .attr(IPVS_DEST_ATTR_ADDR, &inet_addr(addr.ip()))
        .attr(IPVS_DEST_ATTR_PORT, &addr.port().to_be_bytes());
    if let Some(spec) = spec {
        m.u32(IPVS_DEST_ATTR_FWD_METHOD, forwarding_code(spec.forwarding))
            .u32(IPVS_DEST_ATTR_WEIGHT, spec.weight)
            .u32(IPVS_DEST_ATTR_U_THRESH, 0)
            .u32(IPVS_DEST_ATTR_L_THRESH, 0)
            .u16(IPVS_DEST_ATTR_ADDR_FAMILY, family_of(addr));
    }
    m.end_nest();
}

// ---------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------

/// One netlink message of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    pub(crate) kind: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
    /// Everything after the netlink header.
    pub(crate) payload: &'a [u8],
}

/// What a message from the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reply<'a> {
    /// `NLMSG_ERROR` with error 0.
    Ack,
    /// `NLMSG_ERROR` with an error: the positive errno.
    Error(i32),
    /// `NLMSG_DONE`: the end of a dump, with the dump's error (0 = none).
    Done(i32),
    /// A generic netlink message: command and attributes.
    Data { cmd: u8, attrs: &'a [u8] },
}

fn read_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Splits a datagram into its messages.
pub(crate) fn split(datagram: &[u8]) -> Result<Vec<Message<'_>>, DecodeError> {
    let mut out = Vec::new();
    let mut at = 0;
    // `at` may pass the end: the last message's padding need not be there
    // (found by the `netlink` fuzz target: the subtraction overflowed).
    while datagram.len().saturating_sub(at) >= NLMSG_HDRLEN {
        let len = read_u32(datagram, at).unwrap_or(0) as usize;
        if len < NLMSG_HDRLEN || at + len > datagram.len() {
            return Err(DecodeError(format!(
                "bad netlink message length {len} at offset {at} of {}",
                datagram.len()
            )));
        }
        out.push(Message {
            kind: read_u16(datagram, at + 4).unwrap_or(0),
            flags: read_u16(datagram, at + 6).unwrap_or(0),
            seq: read_u32(datagram, at + 8).unwrap_or(0),
            payload: &datagram[at + NLMSG_HDRLEN..at + len],
        });
        at += align4(len);
    }
    Ok(out)
}

/// What `msg` says; generic netlink data must carry a full genl header.
pub(crate) fn reply<'a>(msg: &Message<'a>) -> Result<Reply<'a>, DecodeError> {
    let code = || {
        read_u32(msg.payload, 0)
            .map(|v| v as i32)
            .ok_or_else(|| DecodeError(format!("netlink message type {} too short", msg.kind)))
    };
    // The kernel sends `-errno`; i32::MIN has no positive counterpart
    // (found by the `netlink` fuzz target: it overflowed).
    let errno = |code: i32| {
        code.checked_neg().ok_or_else(|| {
            DecodeError(format!(
                "netlink message type {} with error code {code}",
                msg.kind
            ))
        })
    };
    match msg.kind {
        NLMSG_ERROR => match code()? {
            0 => Ok(Reply::Ack),
            e => Ok(Reply::Error(errno(e)?)),
        },
        NLMSG_DONE => Ok(Reply::Done(if msg.payload.len() >= 4 {
            errno(code()?)?
        } else {
            0
        })),
        _ => {
            if msg.payload.len() < GENL_HDRLEN {
                return Err(DecodeError(format!(
                    "generic netlink message without its header (type {})",
                    msg.kind
                )));
            }
            Ok(Reply::Data {
                cmd: msg.payload[0],
                attrs: &msg.payload[GENL_HDRLEN..],
            })
        }
    }
}

/// The attributes in `buf` as (type without flags, payload), in order.
pub(crate) fn attributes(buf: &[u8]) -> Result<Vec<(u16, &[u8])>, DecodeError> {
    let mut out = Vec::new();
    let mut at = 0;
    // As in `split`: the last attribute's padding need not be there.
    while buf.len().saturating_sub(at) >= NLA_HDRLEN {
        let len = read_u16(buf, at).unwrap_or(0) as usize;
        let kind = read_u16(buf, at + 2).unwrap_or(0) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || at + len > buf.len() {
            return Err(DecodeError(format!(
                "bad attribute length {len} at offset {at}"
            )));
        }
        out.push((kind, &buf[at + NLA_HDRLEN..at + len]));
        at += align4(len);
    }
    Ok(out)
}

fn find<'a>(attrs: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    attrs.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

fn need<'a>(attrs: &[(u16, &'a [u8])], kind: u16, what: &str) -> Result<&'a [u8], DecodeError> {
    find(attrs, kind).ok_or_else(|| DecodeError(format!("kernel reply without {what}")))
}

fn get_u16(attrs: &[(u16, &[u8])], kind: u16, what: &str) -> Result<u16, DecodeError> {
    read_u16(need(attrs, kind, what)?, 0)
        .ok_or_else(|| DecodeError(format!("{what}: short attribute")))
}

fn get_u32(attrs: &[(u16, &[u8])], kind: u16, what: &str) -> Result<u32, DecodeError> {
    read_u32(need(attrs, kind, what)?, 0)
        .ok_or_else(|| DecodeError(format!("{what}: short attribute")))
}

fn get_port(attrs: &[(u16, &[u8])], kind: u16) -> Result<u16, DecodeError> {
    let b = need(attrs, kind, "port")?;
    match b {
        [hi, lo, ..] => Ok(u16::from_be_bytes([*hi, *lo])),
        _ => Err(DecodeError("port: short attribute".to_string())),
    }
}

fn get_ip(attrs: &[(u16, &[u8])], kind: u16, af: u16) -> Result<IpAddr, DecodeError> {
    let b = need(attrs, kind, "address")?;
    match af {
        AF_INET if b.len() >= 4 => Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        AF_INET6 if b.len() >= 16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[..16]);
            Ok(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => Err(DecodeError(format!(
            "address of family {af} with {} byte(s)",
            b.len()
        ))),
    }
}

/// The family id in a `CTRL_CMD_NEWFAMILY` answer's attributes.
pub(crate) fn family_id(attrs: &[u8]) -> Result<u16, DecodeError> {
    get_u16(&attributes(attrs)?, CTRL_ATTR_FAMILY_ID, "family id")
}

/// One entry of a `GET_SERVICE` dump. `None` for services rsbal never
/// manages (firewall marks, protocols other than TCP and UDP).
pub(crate) fn service(attrs: &[u8]) -> Result<Option<VirtualService>, DecodeError> {
    let top = attributes(attrs)?;
    let svc = attributes(need(&top, IPVS_CMD_ATTR_SERVICE, "service")?)?;
    let af = get_u16(&svc, IPVS_SVC_ATTR_AF, "address family")?;
    if find(&svc, IPVS_SVC_ATTR_FWMARK)
        .and_then(|b| read_u32(b, 0))
        .is_some_and(|mark| mark != 0)
    {
        return Ok(None);
    }
    let protocol = match get_u16(&svc, IPVS_SVC_ATTR_PROTOCOL, "protocol")? {
        IPPROTO_TCP => Protocol::Tcp,
        IPPROTO_UDP => Protocol::Udp,
        _ => return Ok(None),
    };
    let ip = get_ip(&svc, IPVS_SVC_ATTR_ADDR, af)?;
    let port = get_port(&svc, IPVS_SVC_ATTR_PORT)?;
    let sched = need(&svc, IPVS_SVC_ATTR_SCHED_NAME, "scheduler")?;
    let sched = sched.split(|b| *b == 0).next().unwrap_or_default();
    let flags = get_u32(&svc, IPVS_SVC_ATTR_FLAGS, "flags")?;
    Ok(Some(VirtualService {
        key: ServiceKey {
            protocol,
            addr: SocketAddr::new(ip, port),
        },
        scheduler: String::from_utf8_lossy(sched).into_owned(),
        ops: flags & IP_VS_SVC_F_ONEPACKET != 0,
    }))
}

/// One entry of a `GET_DEST` dump of a service of address family `af`
/// (IPv4 service: `true`).
pub(crate) fn dest(attrs: &[u8], service_is_ipv4: bool) -> Result<(SocketAddr, Dest), DecodeError> {
    let top = attributes(attrs)?;
    let d = attributes(need(&top, IPVS_CMD_ATTR_DEST, "destination")?)?;
    let af = match find(&d, IPVS_DEST_ATTR_ADDR_FAMILY).and_then(|b| read_u16(b, 0)) {
        Some(af) => af,
        None if service_is_ipv4 => AF_INET,
        None => AF_INET6,
    };
    let ip = get_ip(&d, IPVS_DEST_ATTR_ADDR, af)?;
    let port = get_port(&d, IPVS_DEST_ATTR_PORT)?;
    let weight = get_u32(&d, IPVS_DEST_ATTR_WEIGHT, "weight")?;
    let forwarding = match get_u32(&d, IPVS_DEST_ATTR_FWD_METHOD, "forwarding method")?
        & IP_VS_CONN_F_FWD_MASK
    {
        IP_VS_CONN_F_MASQ => ForwardingMethod::Nat,
        IP_VS_CONN_F_TUNNEL => ForwardingMethod::Tunnel,
        // Old kernels report a local real server as "local node"; it was
        // added as direct routing.
        IP_VS_CONN_F_DROUTE | IP_VS_CONN_F_LOCALNODE => ForwardingMethod::Dr,
        other => return Err(DecodeError(format!("unknown forwarding method {other}"))),
    };
    Ok((SocketAddr::new(ip, port), Dest { weight, forwarding }))
}

/// Requests waiting for their ACK, by sequence number.
#[derive(Debug)]
pub(crate) struct Pending<T> {
    waiting: BTreeMap<u32, T>,
}

impl<T> Default for Pending<T> {
    fn default() -> Self {
        Pending {
            waiting: BTreeMap::new(),
        }
    }
}

impl<T> Pending<T> {
    pub(crate) fn insert(&mut self, seq: u32, request: T) {
        self.waiting.insert(seq, request);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// The request with the lowest sequence number still waiting.
    pub(crate) fn first(&self) -> Option<&T> {
        self.waiting.values().next()
    }

    /// Takes the ACKs and errors in `datagram`: each answered request with
    /// its errno (0 = done). Answers to requests not waited for (late
    /// answers to earlier ones, whose "Success" must not be taken for a new
    /// request's) and non-ACK messages are ignored.
    pub(crate) fn settle(&mut self, datagram: &[u8]) -> Result<Vec<(T, i32)>, DecodeError> {
        let mut answered = Vec::new();
        for msg in split(datagram)? {
            let errno = match reply(&msg)? {
                Reply::Ack => 0,
                Reply::Error(e) => e,
                Reply::Done(_) | Reply::Data { .. } => continue,
            };
            if let Some(request) = self.waiting.remove(&msg.seq) {
                answered.push((request, errno));
            }
        }
        Ok(answered)
    }
}

/// `EEXIST (File exists)`: an errno's name and text.
pub(crate) fn errno_text(errno: i32) -> String {
    let e = Errno::from_raw(errno);
    if e == Errno::UnknownErrno {
        format!("error {errno}")
    } else {
        format!("{e:?} ({})", e.desc())
    }
}

/// What an errno means for an IPVS command, where the kernel's choice of
/// code is not self-explanatory.
pub(crate) fn ipvs_hint(cmd: &IpvsCommand, errno: Errno) -> Option<&'static str> {
    match (cmd, errno) {
        (_, Errno::ESRCH) => Some("the service does not exist"),
        (IpvsCommand::AddService(_) | IpvsCommand::AddDest { .. }, Errno::EEXIST) => {
            Some("it exists already")
        }
        (IpvsCommand::AddService(_) | IpvsCommand::EditService(_), Errno::ENOENT) => {
            Some("the scheduler is not available (module not loaded?)")
        }
        (IpvsCommand::EditDest { .. } | IpvsCommand::DeleteDest { .. }, Errno::ENOENT) => {
            Some("the destination does not exist")
        }
        (_, Errno::EPERM) => Some("changing IPVS needs CAP_NET_ADMIN"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn tcp(addr: &str) -> ServiceKey {
        ServiceKey {
            protocol: Protocol::Tcp,
            addr: sa(addr),
        }
    }

    fn udp(addr: &str) -> ServiceKey {
        ServiceKey {
            protocol: Protocol::Udp,
            addr: sa(addr),
        }
    }

    /// Byte helpers for writing expected messages: native-endian fields.
    fn u16b(v: u16) -> Vec<u8> {
        v.to_ne_bytes().to_vec()
    }
    fn u32b(v: u32) -> Vec<u8> {
        v.to_ne_bytes().to_vec()
    }
    fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }
    /// An attribute header: length (unpadded) and type.
    fn nla(len: u16, kind: u16) -> Vec<u8> {
        cat(&[u16b(len), u16b(kind)])
    }
    fn nlhdr(len: u32, kind: u16, flags: u16, seq: u32) -> Vec<u8> {
        cat(&[u32b(len), u16b(kind), u16b(flags), u32b(seq), u32b(0)])
    }

    #[test]
    fn get_family_bytes() {
        let expected = cat(&[
            nlhdr(32, 0x10, 0x05, 7),
            vec![3, 1, 0, 0],         // CTRL_CMD_GETFAMILY, version 1
            nla(9, 2),                // CTRL_ATTR_FAMILY_NAME, "IPVS\0"
            b"IPVS\0\0\0\0".to_vec(), // padded to 8
        ]);
        assert_eq!(get_family(7, "IPVS"), expected);
    }

    #[test]
    fn dump_services_bytes() {
        let expected = cat(&[nlhdr(20, 0x24, 0x301, 9), vec![4, 1, 0, 0]]);
        assert_eq!(dump_services(0x24, 9), expected);
    }

    /// The identifying service attributes (44 bytes; 48 with the nest
    /// header).
    fn svc_id_v4(proto: u16, ip: [u8; 4], port: u16) -> Vec<u8> {
        let mut addr = ip.to_vec();
        addr.extend_from_slice(&[0; 12]);
        cat(&[
            nla(6, 1),
            u16b(2),
            vec![0, 0], // AF_INET + pad
            nla(6, 2),
            u16b(proto),
            vec![0, 0],
            nla(20, 3),
            addr,
            nla(6, 4),
            port.to_be_bytes().to_vec(),
            vec![0, 0],
        ])
    }

    #[test]
    fn delete_dest_v4_bytes() {
        let cmd = IpvsCommand::DeleteDest {
            service: tcp("192.0.2.1:80"),
            dest: sa("127.50.0.2:80"),
        };
        let svc = svc_id_v4(6, [192, 0, 2, 1], 80);
        let mut rip = vec![127, 50, 0, 2];
        rip.extend_from_slice(&[0; 12]);
        let dst = cat(&[nla(20, 1), rip, nla(6, 2), vec![0, 80, 0, 0]]);
        let expected = cat(&[
            nlhdr(100, 0x24, 0x05, 42),
            vec![7, 1, 0, 0], // IPVS_CMD_DEL_DEST, version 1
            nla(48, 0x8001),
            svc,
            nla(32, 0x8002),
            dst,
        ]);
        assert_eq!(command(0x24, 42, &cmd), expected);
    }

    #[test]
    fn new_dest_nat_bytes() {
        let cmd = IpvsCommand::AddDest {
            service: udp("192.0.2.1:53"),
            dest: sa("127.50.0.3:5353"),
            weight: 10,
            forwarding: ForwardingMethod::Nat,
        };
        let msg = command(0x24, 1, &cmd);
        let svc = svc_id_v4(17, [192, 0, 2, 1], 53);
        let mut rip = vec![127, 50, 0, 3];
        rip.extend_from_slice(&[0; 12]);
        let dst = cat(&[
            nla(20, 1),
            rip,
            nla(6, 2),
            5353u16.to_be_bytes().to_vec(),
            vec![0, 0],
            nla(8, 3),
            u32b(0), // IP_VS_CONN_F_MASQ
            nla(8, 4),
            u32b(10),
            nla(8, 5),
            u32b(0),
            nla(8, 6),
            u32b(0),
            nla(6, 11),
            u16b(2),
            vec![0, 0],
        ]);
        let expected = cat(&[
            nlhdr(140, 0x24, 0x05, 1),
            vec![5, 1, 0, 0],
            nla(48, 0x8001),
            svc,
            nla(72, 0x8002),
            dst,
        ]);
        assert_eq!(msg, expected);
    }

    #[test]
    fn new_service_v6_ops_bytes() {
        let cmd = IpvsCommand::AddService(VirtualService {
            key: udp("[2001:db8::1]:53"),
            scheduler: "wrr".into(),
            ops: true,
        });
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let svc = cat(&[
            nla(6, 1),
            u16b(10),
            vec![0, 0],
            nla(6, 2),
            u16b(17),
            vec![0, 0],
            nla(20, 3),
            v6.octets().to_vec(),
            nla(6, 4),
            vec![0, 53, 0, 0],
            nla(8, 6),
            b"wrr\0".to_vec(),
            nla(12, 7),
            u32b(4),        // IP_VS_SVC_F_ONEPACKET
            u32b(u32::MAX), // mask
            nla(8, 8),
            u32b(0), // no persistence
            nla(8, 9),
            u32b(128), // IPv6 netmask: prefix length 128
        ]);
        let expected = cat(&[
            nlhdr(104, 0x24, 0x05, 3),
            vec![1, 1, 0, 0],
            nla(84, 0x8001),
            svc,
        ]);
        assert_eq!(command(0x24, 3, &cmd), expected);
    }

    #[test]
    fn service_commands_and_ipv4_netmask() {
        let vs = VirtualService {
            key: tcp("192.0.2.1:443"),
            scheduler: "sh".into(),
            ops: false,
        };
        let set = command(0x24, 5, &IpvsCommand::EditService(vs.clone()));
        assert_eq!(set[16], IPVS_CMD_SET_SERVICE);
        // Netmask is the last attribute: 255.255.255.255.
        assert_eq!(set[set.len() - 4..], u32b(u32::MAX)[..]);
        // Flags: none set, every bit masked.
        let flags_at = set.len() - 12 - 8 - 8;
        assert_eq!(set[flags_at..flags_at + 4], nla(12, 7)[..]);
        assert_eq!(
            set[flags_at + 4..flags_at + 12],
            cat(&[u32b(0), u32b(!0)])[..]
        );
        let del = command(0x24, 6, &IpvsCommand::DeleteService(vs.key));
        assert_eq!(del.len(), 16 + 4 + 48);
        assert_eq!(del[16], IPVS_CMD_DEL_SERVICE);
        let edit = command(
            0x24,
            7,
            &IpvsCommand::EditDest {
                service: vs.key,
                dest: sa("127.50.0.2:443"),
                weight: 0,
                forwarding: ForwardingMethod::Tunnel,
            },
        );
        assert_eq!(edit[16], IPVS_CMD_SET_DEST);
        let fwd = edit
            .windows(8)
            .position(|w| w == cat(&[nla(8, 3), u32b(2)]).as_slice());
        assert!(fwd.is_some(), "tunnel forwarding attribute missing");
    }

    #[test]
    fn dump_dests_names_the_service() {
        let msg = dump_dests(0x24, 11, &tcp("192.0.2.1:80"));
        let expected = cat(&[
            nlhdr(68, 0x24, 0x301, 11),
            vec![8, 1, 0, 0],
            nla(48, 0x8001),
            svc_id_v4(6, [192, 0, 2, 1], 80),
        ]);
        assert_eq!(msg, expected);
    }

    /// A kernel answer: an ACK (error 0) or error for `seq`, with the
    /// original header as the kernel appends it.
    fn ack(seq: u32, error: i32) -> Vec<u8> {
        cat(&[
            nlhdr(36, NLMSG_ERROR, 0x100, seq),
            (error as u32).to_ne_bytes().to_vec(),
            nlhdr(76, 0x24, 0x05, seq),
        ])
    }

    #[test]
    fn acks_and_errors_by_sequence() {
        let datagram = cat(&[ack(5, 0), ack(6, -17), ack(7, -3)]);
        let msgs = split(&datagram).unwrap();
        let got: Vec<(u32, Reply)> = msgs.iter().map(|m| (m.seq, reply(m).unwrap())).collect();
        assert_eq!(
            got,
            vec![(5, Reply::Ack), (6, Reply::Error(17)), (7, Reply::Error(3))]
        );
        assert_eq!(errno_text(17), "EEXIST (File exists)");
        assert_eq!(errno_text(3), "ESRCH (No such process)");
        assert_eq!(errno_text(99999), "error 99999");
    }

    #[test]
    fn pending_matches_answers_by_sequence_and_ignores_stale_ones() {
        let mut pending = Pending::default();
        pending.insert(10, "add a");
        pending.insert(11, "add b");
        pending.insert(12, "add c");
        assert_eq!(pending.first(), Some(&"add a"));
        // A late "Success" for request 9 (sent before) and an error for 11.
        let datagram = cat(&[ack(9, 0), ack(11, -17)]);
        assert_eq!(pending.settle(&datagram).unwrap(), vec![("add b", 17)]);
        assert_eq!(pending.len(), 2);
        // The same answer again (duplicate) changes nothing.
        assert!(pending.settle(&ack(11, 0)).unwrap().is_empty());
        let datagram = cat(&[ack(12, 0), ack(10, 0)]);
        assert_eq!(
            pending.settle(&datagram).unwrap(),
            vec![("add c", 0), ("add a", 0)]
        );
        assert!(pending.is_empty());
        assert!(pending
            .settle(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17])
            .is_err());
    }

    #[test]
    fn done_and_truncated() {
        let done = cat(&[nlhdr(20, NLMSG_DONE, 2, 4), u32b(0)]);
        let msgs = split(&done).unwrap();
        assert_eq!(reply(&msgs[0]).unwrap(), Reply::Done(0));
        let failed = cat(&[nlhdr(20, NLMSG_DONE, 2, 4), (-22i32).to_ne_bytes().to_vec()]);
        assert_eq!(reply(&split(&failed).unwrap()[0]).unwrap(), Reply::Done(22));
        assert!(split(&nlhdr(40, NLMSG_DONE, 2, 4)).is_err());
        assert!(split(&nlhdr(8, NLMSG_DONE, 2, 4)).is_err());
        assert!(split(&[]).unwrap().is_empty());
        let short = cat(&[nlhdr(18, 0x24, 2, 1), vec![1, 1, 0, 0]]);
        assert!(reply(&split(&short).unwrap()[0]).is_err());
    }

    #[test]
    fn family_id_from_newfamily() {
        // CTRL_CMD_NEWFAMILY: name, then id, then more attributes.
        let attrs = cat(&[
            nla(9, 2),
            b"IPVS\0\0\0\0".to_vec(),
            nla(6, 1),
            u16b(0x24),
            vec![0, 0],
            nla(8, 3),
            u32b(1),
        ]);
        let msg = cat(&[
            nlhdr(16 + 4 + attrs.len() as u32, GENL_ID_CTRL, 0, 1),
            vec![1, 2, 0, 0],
            attrs,
        ]);
        let msgs = split(&msg).unwrap();
        let Reply::Data { cmd, attrs } = reply(&msgs[0]).unwrap() else {
            panic!("not data");
        };
        assert_eq!(cmd, 1);
        assert_eq!(family_id(attrs).unwrap(), 0x24);
        assert!(family_id(&[]).is_err());
    }

    /// A service entry as `ip_vs_genl_fill_service` writes it (nest without
    /// NLA_F_NESTED, stats omitted).
    fn kernel_service(
        af: u16,
        proto: u16,
        addr: [u8; 16],
        port: u16,
        sched: &str,
        flags: u32,
    ) -> Vec<u8> {
        let mut name = sched.as_bytes().to_vec();
        name.push(0);
        let name_len = name.len();
        while name.len() % 4 != 0 {
            name.push(0);
        }
        let inner = cat(&[
            nla(6, 1),
            u16b(af),
            vec![0, 0],
            nla(6, 2),
            u16b(proto),
            vec![0, 0],
            nla(20, 3),
            addr.to_vec(),
            nla(6, 4),
            port.to_be_bytes().to_vec(),
            vec![0, 0],
            nla(4 + name_len as u16, 6),
            name,
            nla(12, 7),
            u32b(flags | 0x2), // the kernel adds IP_VS_SVC_F_HASHED
            u32b(!0),
            nla(8, 8),
            u32b(0),
            nla(8, 9),
            u32b(!0),
        ]);
        cat(&[nla(4 + inner.len() as u16, 1), inner])
    }

    #[test]
    fn decode_services() {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[192, 0, 2, 1]);
        let vs = service(&kernel_service(2, 6, v4, 80, "wrr", 0))
            .unwrap()
            .unwrap();
        assert_eq!(
            vs,
            VirtualService {
                key: tcp("192.0.2.1:80"),
                scheduler: "wrr".into(),
                ops: false
            }
        );
        let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let vs = service(&kernel_service(10, 17, v6.octets(), 53, "sh", 4))
            .unwrap()
            .unwrap();
        assert_eq!(vs.key, udp("[2001:db8::1]:53"));
        assert!(vs.ops);
        // SCTP (132) is not rsbal's.
        assert_eq!(
            service(&kernel_service(2, 132, v4, 80, "rr", 0)).unwrap(),
            None
        );
        // A firewall-mark service.
        let fw = cat(&[
            nla(20, 1),
            nla(6, 1),
            u16b(2),
            vec![0, 0],
            nla(8, 5),
            u32b(7),
        ]);
        assert_eq!(service(&fw).unwrap(), None);
        // Missing pieces are errors, not panics.
        assert!(service(&[]).is_err());
        assert!(service(&cat(&[nla(12, 1), nla(8, 2), u32b(6)])).is_err());
    }

    fn kernel_dest(addr: [u8; 16], af: Option<u16>, port: u16, fwd: u32, weight: u32) -> Vec<u8> {
        let mut inner = cat(&[
            nla(20, 1),
            addr.to_vec(),
            nla(6, 2),
            port.to_be_bytes().to_vec(),
            vec![0, 0],
            nla(8, 3),
            u32b(fwd),
            nla(8, 4),
            u32b(weight),
            nla(8, 5),
            u32b(0),
            nla(8, 6),
            u32b(0),
            nla(8, 7),
            u32b(3), // active connections
        ]);
        if let Some(af) = af {
            inner.extend(cat(&[nla(6, 11), u16b(af), vec![0, 0]]));
        }
        cat(&[nla(4 + inner.len() as u16, 2), inner])
    }

    #[test]
    fn decode_dests() {
        let mut v4 = [0u8; 16];
        v4[..4].copy_from_slice(&[127, 50, 0, 2]);
        assert_eq!(
            dest(&kernel_dest(v4, Some(2), 80, 3, 10), true).unwrap(),
            (sa("127.50.0.2:80"), Dest::dr(10))
        );
        assert_eq!(
            dest(&kernel_dest(v4, None, 80, 0, 1), true).unwrap(),
            (
                sa("127.50.0.2:80"),
                Dest {
                    weight: 1,
                    forwarding: ForwardingMethod::Nat
                }
            )
        );
        let v6: Ipv6Addr = "fd00::2".parse().unwrap();
        assert_eq!(
            dest(&kernel_dest(v6.octets(), None, 443, 2 | 0x100, 7), false).unwrap(),
            (
                sa("[fd00::2]:443"),
                Dest {
                    weight: 7,
                    forwarding: ForwardingMethod::Tunnel
                }
            )
        );
        assert_eq!(
            dest(&kernel_dest(v4, Some(2), 80, 1, 5), true).unwrap().1,
            Dest::dr(5)
        );
        assert!(dest(&kernel_dest(v4, Some(2), 80, 4, 5), true).is_err());
        assert!(dest(&kernel_dest(v4, Some(99), 80, 3, 5), true).is_err());
        assert!(dest(&[], true).is_err());
    }

    #[test]
    fn attributes_reject_bad_lengths() {
        assert!(attributes(&nla(3, 1)).is_err());
        assert!(attributes(&cat(&[nla(12, 1), u32b(0)])).is_err());
        assert_eq!(attributes(&[0, 0]).unwrap(), vec![]);
        let nested = cat(&[nla(8, 0x8001), u32b(5)]);
        assert_eq!(attributes(&nested).unwrap(), vec![(1, &u32b(5)[..])]);
    }

    #[test]
    fn round_trip_command_through_decoders() {
        // What rsbal sends to add a destination decodes as that destination.
        let cmd = IpvsCommand::AddDest {
            service: tcp("[2001:db8::1]:80"),
            dest: sa("[fd00::5]:80"),
            weight: 3,
            forwarding: ForwardingMethod::Dr,
        };
        let msg = command(0x24, 1, &cmd);
        let msgs = split(&msg).unwrap();
        let Reply::Data { cmd: c, attrs } = reply(&msgs[0]).unwrap() else {
            panic!("not data");
        };
        assert_eq!(c, IPVS_CMD_NEW_DEST);
        assert_eq!(
            dest(attrs, false).unwrap(),
            (sa("[fd00::5]:80"), Dest::dr(3))
        );
        let add = IpvsCommand::AddService(VirtualService {
            key: tcp("192.0.2.9:8080"),
            scheduler: "mh".into(),
            ops: false,
        });
        let msg = command(0x24, 2, &add);
        let msgs = split(&msg).unwrap();
        let Reply::Data { attrs, .. } = reply(&msgs[0]).unwrap() else {
            panic!("not data");
        };
        let IpvsCommand::AddService(vs) = add else {
            unreachable!()
        };
        assert_eq!(service(attrs).unwrap(), Some(vs));
    }

    #[test]
    fn hints() {
        let del = IpvsCommand::DeleteDest {
            service: tcp("192.0.2.1:80"),
            dest: sa("127.0.0.1:80"),
        };
        assert_eq!(
            ipvs_hint(&del, Errno::ENOENT),
            Some("the destination does not exist")
        );
        assert_eq!(
            ipvs_hint(&del, Errno::ESRCH),
            Some("the service does not exist")
        );
        assert_eq!(ipvs_hint(&del, Errno::EINVAL), None);
    }

    /// Found by the `netlink` fuzz target (fuzz/regressions/netlink/):
    /// an NLMSG_ERROR whose code is i32::MIN panicked ("attempt to negate
    /// with overflow") in `reply`. Now it is a decode error.
    #[test]
    fn fuzz_regression_error_code_i32_min_is_a_decode_error() {
        let crash: &[u8] = &[
            0x24, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x02, 0x00, 0x02,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x10,
            0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
        ];
        let messages = split(crash).unwrap();
        let err = reply(&messages[0]).unwrap_err();
        assert!(err.0.contains("error code -2147483648"), "{err}");
        let mut pending = Pending::default();
        pending.insert(0x0200_001c_u32, "request");
        assert!(pending.settle(crash).is_err());
        // The same code in NLMSG_DONE.
        let mut done = crash.to_vec();
        done[4] = 3;
        let messages = split(&done).unwrap();
        assert!(reply(&messages[0]).is_err());
        // Ordinary codes still decode.
        let mut ack = crash.to_vec();
        ack[16..20].copy_from_slice(&(-17i32).to_ne_bytes());
        assert_eq!(reply(&split(&ack).unwrap()[0]).unwrap(), Reply::Error(17));
    }

    /// Found by the `netlink` fuzz target (fuzz/regressions/netlink/): a
    /// last message of 37 bytes without its 3 bytes of padding made
    /// `split` subtract past zero ("attempt to subtract with overflow").
    #[test]
    fn fuzz_regression_unpadded_last_message_is_split() {
        let crash: &[u8] = &[
            0x25, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x24, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let messages = split(crash).unwrap();
        assert_eq!(messages.len(), 1);
        assert_eq!(messages[0].payload.len(), 37 - NLMSG_HDRLEN);
        assert_eq!(reply(&messages[0]).unwrap(), Reply::Ack);
        let mut pending = Pending::default();
        pending.insert(1, "request");
        assert_eq!(pending.settle(crash).unwrap(), [("request", 0)]);
    }

    /// Found by the `netlink` fuzz target (fuzz/regressions/netlink/): the
    /// same missing padding, on the last attribute of a message, made
    /// `attributes` subtract past zero.
    #[test]
    fn fuzz_regression_unpadded_last_attribute_is_read() {
        let crash: &[u8] = &[
            0x27, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x14, 0x3f, 0x00, 0x02, 0x00, 0x02, 0x00,
            0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x13, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x14, 0x00, 0x00, 0x00,
        ];
        let messages = split(crash).unwrap();
        let Reply::Data { attrs, .. } = reply(&messages[0]).unwrap() else {
            panic!("not data");
        };
        // 19 bytes: one attribute of 19 (3 bytes unpadded), nothing after.
        let parsed = attributes(attrs).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].1.len(), 19 - NLA_HDRLEN);
        crate::fuzzing::netlink(crash);
    }
}
