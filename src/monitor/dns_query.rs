//! DNSQuery: every `interval`, one DNS query over UDP to the server's own
//! address and the service port, for a random name of `hostnames`, type A or
//! AAAA at random. NOERROR is up (with or without answers); NXDOMAIN is up
//! unless `fail-on-nxdomain`; any other response code, a truncated or
//! malformed reply, a timeout or an ICMP unreachable is down, each with its
//! own reason.
//!
//! Each query goes out on a fresh connected socket with a random id; replies
//! with another id are ignored until the deadline. The wire format is built
//! and read with `simple-dns`; [`classify_reply`] is the pure part.

use super::udp::{connected_socket, is_unreachable, unreachable_reason};
use super::wake::SocketStop;
use super::{
    Body, Check, CheckError, CheckOutcome, Checked, Monitor, MonitorContext, MonitorTarget, Step,
    Waker,
};
use crate::config::DnsQueryOptions;
use prometheus::GaugeVec;
use simple_dns::rdata::RData;
use simple_dns::{header_buffer, Name, Packet, PacketFlag, Question, CLASS, RCODE, TYPE};
use std::fmt;
use std::io::{self, ErrorKind};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::LazyLock;
use std::time::Instant;

/// Largest reply read (EDNS0 payloads stay below this).
const MAX_REPLY: usize = 4096;

/// A gauge of the last query's duration, as PyBal's.
static REQUEST_DURATION: LazyLock<GaugeVec> = LazyLock::new(|| {
    crate::status::metrics::gauge_vec(
        "pybal_monitor_dnsquery_request_duration_seconds",
        "DNS query duration",
        &["service", "host", "monitor", "result"],
    )
});

/// The record type asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueryType {
    A,
    Aaaa,
}

impl fmt::Display for QueryType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QueryType::A => "A",
            QueryType::Aaaa => "AAAA",
        })
    }
}

/// What a datagram received on the query's socket means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// An answer to another query (other id): keep waiting.
    OtherId,
    /// NOERROR, with the addresses of the answer section (possibly none).
    NoError(Vec<IpAddr>),
    NxDomain,
    ServFail,
    Refused,
    FormErr,
    NotImp,
    /// Another error response code (its name).
    OtherRcode(String),
    /// The TC bit: the answer did not fit in the datagram.
    Truncated,
    /// Not a DNS response, or one that does not parse.
    Malformed(String),
}

/// The wire form of a query for `name` (recursion desired, as PyBal's
/// resolver asked).
pub(crate) fn build_query(id: u16, name: &str, qtype: QueryType) -> Result<Vec<u8>, String> {
    let qname = Name::new(name).map_err(|e| format!("{name:?} is not a DNS name: {e}"))?;
    let rtype = match qtype {
        QueryType::A => TYPE::A,
        QueryType::Aaaa => TYPE::AAAA,
    };
    let mut packet = Packet::new_query(id);
    packet.set_flags(PacketFlag::RECURSION_DESIRED);
    packet
        .questions
        .push(Question::new(qname, rtype.into(), CLASS::IN.into(), false));
    packet
        .build_bytes_vec()
        .map_err(|e| format!("cannot encode a query for {name}: {e}"))
}

/// Classifies one datagram received in answer to the query with id
/// `expected_id`.
pub(crate) fn classify_reply(bytes: &[u8], expected_id: u16) -> Reply {
    let Ok(id) = header_buffer::id(bytes) else {
        return Reply::Malformed(format!("{}-byte datagram", bytes.len()));
    };
    if id != expected_id {
        return Reply::OtherId;
    }
    match header_buffer::has_flags(bytes, PacketFlag::RESPONSE) {
        Ok(true) => {}
        Ok(false) => return Reply::Malformed("not a response (QR bit clear)".to_string()),
        Err(_) => return Reply::Malformed(format!("{}-byte reply", bytes.len())),
    }
    if header_buffer::has_flags(bytes, PacketFlag::TRUNCATION).unwrap_or(false) {
        return Reply::Truncated;
    }
    let packet = match Packet::parse(bytes) {
        Ok(packet) => packet,
        Err(e) => return Reply::Malformed(e.to_string()),
    };
    match packet.rcode() {
        RCODE::NoError => Reply::NoError(
            packet
                .answers
                .iter()
                .filter_map(|rr| match &rr.rdata {
                    RData::A(a) => Some(IpAddr::V4(Ipv4Addr::from(a.address))),
                    RData::AAAA(a) => Some(IpAddr::V6(Ipv6Addr::from(a.address))),
                    _ => None,
                })
                .collect(),
        ),
        RCODE::NameError => Reply::NxDomain,
        RCODE::ServerFailure => Reply::ServFail,
        RCODE::Refused => Reply::Refused,
        RCODE::FormatError => Reply::FormErr,
        RCODE::NotImplemented => Reply::NotImp,
        other => Reply::OtherRcode(format!("{other:?}")),
    }
}

/// Up or down, and why, for the final outcome of a query.
fn verdict(reply: &Reply, query: &str, fail_on_nxdomain: bool) -> (bool, String) {
    match reply {
        Reply::NoError(addrs) if addrs.is_empty() => {
            (true, format!("DNS query successful: {query}, no address"))
        }
        Reply::NoError(addrs) => {
            let addrs: Vec<String> = addrs.iter().map(IpAddr::to_string).collect();
            (
                true,
                format!("DNS query successful: {query} {}", addrs.join(" ")),
            )
        }
        Reply::NxDomain if fail_on_nxdomain => (false, format!("NXDOMAIN, query: {query}")),
        Reply::NxDomain => (true, format!("NXDOMAIN (accepted), query: {query}")),
        Reply::ServFail => (
            false,
            format!("DNS server error (SERVFAIL), query: {query}"),
        ),
        Reply::Refused => (
            false,
            format!("DNS query refused (REFUSED), query: {query}"),
        ),
        Reply::FormErr => (false, format!("DNS format error (FORMERR), query: {query}")),
        Reply::NotImp => (
            false,
            format!("DNS not implemented (NOTIMP), query: {query}"),
        ),
        Reply::OtherRcode(code) => (false, format!("DNS error {code}, query: {query}")),
        Reply::Truncated => (false, format!("truncated DNS reply (TC), query: {query}")),
        Reply::Malformed(why) => (
            false,
            format!("malformed DNS reply ({why}), query: {query}"),
        ),
        Reply::OtherId => (false, format!("no answer, query: {query}")),
    }
}

pub(crate) struct DnsQuery {
    opts: DnsQueryOptions,
    stop: SocketStop,
}

/// How one check ended.
enum Outcome {
    Done(CheckOutcome),
    Stopped,
}

impl Monitor for DnsQuery {
    const NAME: &'static str = "DNSQuery";
    type Options = DnsQueryOptions;

    /// The monitor and the waker that interrupts a query in flight.
    fn new(opts: &DnsQueryOptions, _target: &MonitorTarget) -> (Self, Option<Waker>) {
        let (stop, waker) = SocketStop::new();
        let opts = opts.clone();
        (DnsQuery { opts, stop }, Some(waker))
    }

    /// Scheduled: one query per `interval`.
    fn body(self) -> Body {
        Body::Scheduled {
            interval: self.opts.interval,
            check: Box::new(self),
        }
    }
}

impl Check for DnsQuery {
    /// One query.
    fn check(&mut self, ctx: &MonitorContext) -> Option<Checked> {
        let started = Instant::now();
        let outcome = match self.query(ctx.target.addr()) {
            Outcome::Stopped => return None,
            Outcome::Done(outcome) => outcome,
        };
        let took = started.elapsed();
        let result = if outcome.is_up() {
            "successful"
        } else {
            "failed"
        };
        // Inside `observe`: no late update re-creates a forgotten series.
        ctx.observe(|[service, host, monitor]| {
            REQUEST_DURATION
                .with_label_values(&[service, host, monitor, result])
                .set(took.as_secs_f64())
        });
        log::debug!(target: &ctx.log_target(), "{}: {} ({:.3} s)", ctx.target.host, outcome.reason(), took.as_secs_f64());
        Some(Checked {
            outcome,
            duration: Some(took),
        })
    }
}

impl DnsQuery {
    /// One query for a random name and type.
    fn query(&self, server: SocketAddr) -> Outcome {
        let Some(name) = pick(&self.opts.hostnames) else {
            // Validation requires one; down, as it always was.
            return done(false, "no host names configured".to_string());
        };
        let qtype = if fastrand::bool() {
            QueryType::A
        } else {
            QueryType::Aaaa
        };
        let query = format!("{name} {qtype}");
        let id = fastrand::u16(..);
        let bytes = match build_query(id, name, qtype) {
            Ok(bytes) => bytes,
            Err(e) => return done(false, e),
        };
        let deadline = Instant::now() + self.opts.timeout;
        let outcome = match self.exchange(server, &bytes, id, deadline) {
            Ok(Some(reply)) => {
                let (up, reason) = verdict(&reply, &query, self.opts.fail_on_nxdomain);
                done(up, reason)
            }
            Ok(None) => Outcome::Stopped,
            Err((step, e)) => {
                let reason = if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) {
                    format!(
                        "DNS query timeout after {}s, query: {query}",
                        self.opts.timeout.as_secs_f64()
                    )
                } else if is_unreachable(&e) {
                    format!(
                        "DNS query failed: {}, query: {query}",
                        unreachable_reason(&e)
                    )
                } else {
                    format!("DNS query failed: {e}, query: {query}")
                };
                Outcome::Done(CheckOutcome::Down(CheckError::io(step, &e, reason)))
            }
        };
        self.stop.unwatch();
        outcome
    }

    /// Sends the query and waits for the reply with our id. `Ok(None)` when
    /// stopped; a timeout is an `Err` of kind `TimedOut`. An error comes
    /// with the step it happened in.
    fn exchange(
        &self,
        server: SocketAddr,
        query: &[u8],
        id: u16,
        deadline: Instant,
    ) -> Result<Option<Reply>, (Step, io::Error)> {
        let sock = connected_socket(server).map_err(|e| (Step::Acquire, e))?;
        if !self.stop.watch(&sock) {
            return Ok(None);
        }
        let using = |e: io::Error| (Step::Use, e);
        sock.send(query).map_err(using)?;
        let mut buf = vec![0u8; MAX_REPLY];
        loop {
            if self.stop.is_stopped() {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(using(io::Error::from(ErrorKind::TimedOut)));
            }
            sock.set_read_timeout(Some(left)).map_err(using)?;
            match sock.recv(&mut buf) {
                Ok(n) => {
                    if self.stop.is_stopped() {
                        return Ok(None);
                    }
                    match classify_reply(&buf[..n], id) {
                        Reply::OtherId => continue,
                        reply => return Ok(Some(reply)),
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(using(e)),
            }
        }
    }
}

/// A finished check that failed or passed on the server's side (a reply,
/// or none at all).
fn done(up: bool, reason: String) -> Outcome {
    Outcome::Done(if up {
        CheckOutcome::Up(reason)
    } else {
        CheckOutcome::down(reason)
    })
}

fn pick(names: &[String]) -> Option<&str> {
    match names.len() {
        0 => None,
        n => Some(names[fastrand::usize(..n)].as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, AAAA};
    use simple_dns::ResourceRecord;

    fn reply(id: u16, rcode: RCODE, answers: &[RData<'static>]) -> Vec<u8> {
        let query = build_query(id, "www.example.org", QueryType::A).unwrap();
        let mut packet = Packet::parse(&query).unwrap().into_reply();
        *packet.rcode_mut() = rcode;
        for rdata in answers {
            packet.answers.push(ResourceRecord::new(
                Name::new_unchecked("www.example.org"),
                CLASS::IN,
                60,
                rdata.clone(),
            ));
        }
        packet.build_bytes_vec().unwrap()
    }

    #[test]
    fn query_is_well_formed() {
        let bytes = build_query(0x1234, "www.example.org", QueryType::Aaaa).unwrap();
        let packet = Packet::parse(&bytes).unwrap();
        assert_eq!(packet.id(), 0x1234);
        assert!(!packet.has_flags(PacketFlag::RESPONSE));
        assert!(packet.has_flags(PacketFlag::RECURSION_DESIRED));
        assert_eq!(packet.questions.len(), 1);
        assert_eq!(packet.questions[0].qname.to_string(), "www.example.org");
        assert!(build_query(1, &"x".repeat(64), QueryType::A).is_err());
    }

    #[test]
    fn classifies_response_codes() {
        let a = RData::A(A {
            address: u32::from(Ipv4Addr::new(192, 0, 2, 7)),
        });
        let aaaa = RData::AAAA(AAAA {
            address: u128::from("2001:db8::7".parse::<Ipv6Addr>().unwrap()),
        });
        assert_eq!(
            classify_reply(&reply(7, RCODE::NoError, &[a, aaaa]), 7),
            Reply::NoError(vec![
                "192.0.2.7".parse().unwrap(),
                "2001:db8::7".parse().unwrap()
            ])
        );
        assert_eq!(
            classify_reply(&reply(7, RCODE::NoError, &[]), 7),
            Reply::NoError(vec![])
        );
        for (rcode, expected) in [
            (RCODE::NameError, Reply::NxDomain),
            (RCODE::ServerFailure, Reply::ServFail),
            (RCODE::Refused, Reply::Refused),
            (RCODE::FormatError, Reply::FormErr),
            (RCODE::NotImplemented, Reply::NotImp),
            (RCODE::NOTAUTH, Reply::OtherRcode("NOTAUTH".to_string())),
        ] {
            assert_eq!(classify_reply(&reply(9, rcode, &[]), 9), expected);
        }
    }

    #[test]
    fn other_ids_truncation_and_garbage() {
        assert_eq!(
            classify_reply(&reply(7, RCODE::NoError, &[]), 8),
            Reply::OtherId
        );
        let mut truncated = reply(7, RCODE::NoError, &[]);
        truncated[2] |= 0x02; // TC
        assert_eq!(classify_reply(&truncated, 7), Reply::Truncated);
        let query = build_query(7, "www.example.org", QueryType::A).unwrap();
        assert!(matches!(classify_reply(&query, 7), Reply::Malformed(_)));
        assert!(matches!(classify_reply(&[], 7), Reply::Malformed(_)));
        assert!(matches!(
            classify_reply(&[0, 7, 0x80], 7),
            Reply::Malformed(_)
        ));
        let full = reply(7, RCODE::NoError, &[RData::A(A { address: 1 })]);
        let cut = &full[..full.len() - 3];
        assert!(matches!(classify_reply(cut, 7), Reply::Malformed(_)));
    }

    #[test]
    fn nxdomain_is_up_unless_configured() {
        assert!(verdict(&Reply::NxDomain, "x A", false).0);
        assert!(!verdict(&Reply::NxDomain, "x A", true).0);
        assert!(verdict(&Reply::NoError(vec![]), "x A", true).0);
        for down in [
            Reply::ServFail,
            Reply::Refused,
            Reply::FormErr,
            Reply::NotImp,
            Reply::Truncated,
            Reply::Malformed("x".into()),
        ] {
            let (up, reason) = verdict(&down, "x A", false);
            assert!(!up, "{down:?}");
            assert!(reason.ends_with("query: x A"), "{reason}");
        }
    }

    #[test]
    fn never_panics_on_random_bytes() {
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..5000 {
            let len = rng.usize(0..80);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if len >= 2 {
                bytes[0] = 0;
                bytes[1] = 7;
            }
            let _ = classify_reply(&bytes, 7);
        }
    }
}
