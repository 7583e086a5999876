//! The netlink IPVS backend: talks to the kernel's `IPVS` generic netlink
//! family over a blocking socket, without spawning `ipvsadm`.
//!
//! This module owns the socket: it resolves the family id
//! (`CTRL_CMD_GETFAMILY`), reads the table with `GET_SERVICE` and
//! `GET_DEST` dumps, and applies command batches. A batch is sent in
//! windows of up to [`WINDOW`] requests packed into one datagram; every
//! request asks for an ACK, and ACKs are matched to requests by sequence
//! number, so a late ACK of an earlier request is never taken for the
//! answer to a new one. Every kernel error is decoded (errno name and what
//! was attempted). Receives time out after `[global] ipvs-command-timeout`;
//! after a timeout or a socket error the socket is dropped and the next call opens a new
//! one. Message bytes are built and read by `ipvs::genl`.

use super::backend::IpvsBackend;
use super::error::{DecodeError, IpvsError, Refusal};
use super::genl::{self, Reply};
use super::ipvsadm::restore_line;
use super::{IpvsCommand, ServiceTable, Table};
use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;
use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const LOG_TARGET: &str = "IpvsWriter";
/// The shortest receive timeout set on the socket: zero would mean none.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// Requests sent in one datagram before their ACKs are collected; small
/// enough that the ACKs always fit the socket's receive buffer.
pub(crate) const WINDOW: usize = 64;
/// Receive buffer: the kernel never sends a dump datagram larger than 32 KiB.
const RECV_BUFFER: usize = 64 * 1024;

/// One open socket with the resolved family id.
struct Connection {
    fd: OwnedFd,
    family: u16,
    seq: u32,
    buf: Vec<u8>,
    timeout: Duration,
}

fn sys(what: &'static str) -> impl FnOnce(Errno) -> IpvsError {
    move |errno| IpvsError::Socket { what, errno }
}

impl Connection {
    fn open(timeout: Duration) -> Result<Connection, IpvsError> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkGeneric,
        )
        .map_err(sys("cannot open a generic netlink socket"))?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))
            .map_err(sys("cannot bind the netlink socket"))?;
        let timeout = timeout.max(MIN_TIMEOUT);
        let timeval = TimeVal::new(timeout.as_secs() as _, timeout.subsec_micros() as _);
        setsockopt(&fd, sockopt::ReceiveTimeout, &timeval)
            .map_err(sys("cannot set the netlink receive timeout"))?;
        // Start somewhere unpredictable, so that answers meant for an
        // earlier socket of this process are never mistaken for ours.
        let seq = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        let mut conn = Connection {
            fd,
            family: 0,
            seq,
            buf: vec![0; RECV_BUFFER],
            timeout,
        };
        conn.family = conn.resolve_family()?;
        Ok(conn)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, bytes: &[u8]) -> Result<(), IpvsError> {
        let sent = send(self.fd.as_raw_fd(), bytes, MsgFlags::empty())
            .map_err(sys("cannot send to the kernel"))?;
        if sent != bytes.len() {
            return Err(IpvsError::ShortSend {
                sent,
                len: bytes.len(),
            });
        }
        Ok(())
    }

    /// One datagram from the kernel.
    fn receive(&mut self) -> Result<Vec<u8>, IpvsError> {
        loop {
            match recv(self.fd.as_raw_fd(), &mut self.buf, MsgFlags::MSG_TRUNC) {
                Ok(n) if n > self.buf.len() => {
                    return Err(IpvsError::Truncated {
                        len: n,
                        buffer: self.buf.len(),
                    })
                }
                Ok(n) => return Ok(self.buf[..n].to_vec()),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => {
                    return Err(IpvsError::Timeout {
                        after: self.timeout,
                    })
                }
                Err(Errno::ENOBUFS) => return Err(IpvsError::Overrun),
                Err(e) => return Err(sys("cannot receive from the kernel")(e)),
            }
        }
    }

    fn resolve_family(&mut self) -> Result<u16, IpvsError> {
        let seq = self.next_seq();
        self.send(&genl::get_family(seq, genl::IPVS_GENL_NAME))?;
        let mut family = None;
        loop {
            let datagram = self.receive()?;
            for msg in genl::split(&datagram)? {
                if msg.seq != seq {
                    continue;
                }
                match genl::reply(&msg)? {
                    Reply::Data { attrs, .. } => family = Some(genl::family_id(attrs)?),
                    Reply::Ack | Reply::Done(_) => {
                        return family.ok_or_else(|| {
                            DecodeError("the kernel answered without a family id".to_string())
                                .into()
                        })
                    }
                    Reply::Error(e) => {
                        return Err(match Errno::from_raw(e) {
                            Errno::ENOENT => IpvsError::NoFamily,
                            errno => IpvsError::Kernel {
                                what: "resolving the IPVS generic netlink family".to_string(),
                                errno,
                            },
                        })
                    }
                }
            }
        }
    }

    /// Sends the dump request built for `seq` and returns the attributes of
    /// every entry.
    fn dump(
        &mut self,
        what: &str,
        request: impl Fn(u16, u32) -> Vec<u8>,
    ) -> Result<Vec<Vec<u8>>, IpvsError> {
        let seq = self.next_seq();
        self.send(&request(self.family, seq))?;
        let mut entries = Vec::new();
        loop {
            let datagram = self
                .receive()
                .map_err(|e| e.context(format!("dumping {what}")))?;
            for msg in genl::split(&datagram)? {
                if msg.seq != seq {
                    log::debug!(target: LOG_TARGET, "netlink: ignoring a stale answer (sequence {})", msg.seq);
                    continue;
                }
                match genl::reply(&msg)? {
                    Reply::Data { attrs, .. } => entries.push(attrs.to_vec()),
                    Reply::Done(0) | Reply::Ack => return Ok(entries),
                    Reply::Done(e) | Reply::Error(e) => {
                        return Err(IpvsError::Kernel {
                            what: format!("dumping {what}"),
                            errno: Errno::from_raw(e),
                        })
                    }
                }
            }
        }
    }

    fn read(&mut self) -> Result<Table, IpvsError> {
        let mut table = Table::new();
        for attrs in self.dump("IPVS services", genl::dump_services)? {
            if let Some(service) = genl::service(&attrs)? {
                table.insert(
                    service.key,
                    ServiceTable {
                        service,
                        dests: BTreeMap::new(),
                    },
                );
            }
        }
        for (key, st) in table.iter_mut() {
            let what = format!("the destinations of {key}");
            let entries = self.dump(&what, |family, seq| genl::dump_dests(family, seq, key))?;
            for attrs in entries {
                let (addr, dest) = genl::dest(&attrs, key.addr.is_ipv4())
                    .map_err(|e| IpvsError::from(e).context(what.as_str()))?;
                st.dests.insert(addr, dest);
            }
        }
        Ok(table)
    }

    /// Sends `commands` in windows and collects every ACK. Returns the
    /// commands the kernel refused, each with its errno; `Err` when the
    /// socket itself failed (some answers are then unknown).
    fn apply(&mut self, commands: &[IpvsCommand]) -> Result<Vec<Refusal>, IpvsError> {
        let mut failures = Vec::new();
        for window in commands.chunks(WINDOW) {
            let mut datagram = Vec::with_capacity(window.len() * 128);
            let mut pending = genl::Pending::default();
            for cmd in window {
                let seq = self.next_seq();
                datagram.extend(genl::command(self.family, seq, cmd));
                pending.insert(seq, cmd);
            }
            self.send(&datagram)?;
            while !pending.is_empty() {
                let answer = self.receive().map_err(|e| IpvsError::Unanswered {
                    source: Box::new(e),
                    pending: pending.len(),
                    first: pending.first().map(|c| c.to_string()).unwrap_or_default(),
                })?;
                for (cmd, errno) in pending.settle(&answer)? {
                    if errno != 0 {
                        failures.push(Refusal {
                            command: cmd.clone(),
                            errno: Errno::from_raw(errno),
                        });
                    }
                }
            }
        }
        Ok(failures)
    }
}

/// The netlink backend. Holds at most one open socket; one that failed is
/// dropped and the next call opens a fresh one.
pub(crate) struct Netlink {
    conn: Option<Connection>,
    /// The receive timeout of every socket it opens.
    timeout: Duration,
}

impl Netlink {
    /// Opens a socket and resolves the family now; `Err` says why netlink
    /// cannot be used.
    /// Waits at most `timeout` for each answer of the kernel.
    pub(crate) fn connect(timeout: Duration) -> Result<Netlink, IpvsError> {
        Ok(Netlink {
            conn: Some(Connection::open(timeout)?),
            timeout,
        })
    }

    /// A backend that opens its socket on first use.
    pub(crate) fn lazy(timeout: Duration) -> Netlink {
        Netlink {
            conn: None,
            timeout,
        }
    }

    fn with_conn<T>(
        &mut self,
        f: impl FnOnce(&mut Connection) -> Result<T, IpvsError>,
    ) -> Result<T, IpvsError> {
        let conn = match self.conn.as_mut() {
            Some(conn) => conn,
            None => self.conn.insert(Connection::open(self.timeout)?),
        };
        let result = f(conn);
        if result.is_err() {
            // Unanswered requests may still be answered later: start over
            // on a clean socket rather than sort old answers from new.
            self.conn = None;
        }
        result
    }
}

impl IpvsBackend for Netlink {
    fn read(&mut self) -> Result<Table, IpvsError> {
        self.with_conn(Connection::read)
    }

    fn apply(&mut self, commands: &[IpvsCommand]) -> Result<(), IpvsError> {
        let refusals = self.with_conn(|conn| conn.apply(commands))?;
        if refusals.is_empty() {
            Ok(())
        } else {
            Err(IpvsError::Rejected {
                refusals,
                batch: commands.len(),
            })
        }
    }

    fn describe(&self) -> String {
        match &self.conn {
            Some(conn) => format!("netlink (IPVS family {})", conn.family),
            None => "netlink".to_string(),
        }
    }

    fn show(&self, cmd: &IpvsCommand) -> String {
        format!("netlink: {}", restore_line(cmd))
    }
}
