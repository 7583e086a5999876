//! One BGP peer, in its own thread: connections, timers and route sending.
//!
//! The session thread owns the peer's connections (at most two while a
//! collision is being resolved, RFC 4271 §6.8), each driven by an [`Fsm`],
//! and the routes the peer was sent (its Adj-RIB-Out). It blocks on its
//! inbox until the next timer deadline. Blocking work runs in small helper
//! threads that only report back to the inbox: one connect attempt at a
//! time (bound to the peer's local address, with the FSM's backoff between
//! attempts) and one reader per TCP connection (blocking reads of whole
//! messages). Writes are done by the session thread, with a timeout.
//!
//! Shutdown withdraws every route and sends Cease, or with graceful restart
//! on, leaves the routes and only closes (Cease when the peer announced
//! RFC 8538's N bit), so that the peer keeps them while rsbal restarts.

use super::fsm::{self, Action, Direction, Event, Fsm, FsmConfig, Negotiated, State};
use super::message::{
    self, Capability, Codec, Family, GracefulRestart, Message, Notification, Open, Update,
};
use super::routes::{self, RouteSet};
use crate::status::daemon as daemon_status;
use crate::status::snapshot::SnapshotStore;
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::collections::{BTreeSet, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const LOG_TARGET: &str = "bgp";
/// Hold time rsbal proposes (the peer may ask for less).
pub(crate) const HOLD_TIME: u16 = 90;
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Hold timer until the peer's OPEN arrives (RFC 4271 §8 suggests 4 minutes).
const OPEN_HOLD: Duration = Duration::from_secs(240);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After our last message, how long to wait for the peer to close first so
/// that it reads everything (a close with unread data would send a reset).
const CLOSE_LINGER: Duration = Duration::from_secs(1);
const HELPER_STACK: usize = 128 * 1024;

/// Everything a session needs to know about its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PeerSettings {
    pub(crate) peer: IpAddr,
    /// The peer's BGP port.
    pub(crate) port: u16,
    /// Source address of outgoing connections.
    pub(crate) local_ip: Option<IpAddr>,
    pub(crate) local_asn: u32,
    pub(crate) bgp_id: Ipv4Addr,
    /// Graceful restart time in seconds; `None` = off.
    pub(crate) graceful_restart: Option<u16>,
}

impl PeerSettings {
    /// The OPEN rsbal sends this peer; `restarting` sets graceful
    /// restart's R bit (until the first session after start-up is up).
    pub(crate) fn open(&self, restarting: bool) -> Open {
        let families = [Family::IPV4_UNICAST, Family::IPV6_UNICAST];
        let mut capabilities: Vec<Capability> = families
            .iter()
            .map(|f| Capability::Multiprotocol(*f))
            .collect();
        capabilities.push(Capability::RouteRefresh);
        capabilities.push(Capability::FourOctetAs(self.local_asn));
        if let Some(restart_time) = self.graceful_restart {
            capabilities.push(Capability::GracefulRestart(GracefulRestart {
                restarting,
                notification: true,
                restart_time,
                // IPVS is left in place across restarts: forwarding goes on.
                families: families.iter().map(|f| (*f, true)).collect(),
            }));
        }
        Open {
            asn: self.local_asn,
            hold_time: HOLD_TIME,
            bgp_id: self.bgp_id,
            capabilities,
        }
    }

    fn fsm_config(&self, restarting: bool) -> FsmConfig {
        FsmConfig {
            open: self.open(restarting),
            retry_min: RETRY_MIN,
            retry_max: RETRY_MAX,
            connect_timeout: CONNECT_TIMEOUT,
            open_hold: OPEN_HOLD,
        }
    }
}

/// How a connection's reader ended.
#[derive(Debug)]
pub(crate) enum ReadEnd {
    Eof,
    Io(io::Error),
    /// The header did not validate: send this NOTIFICATION.
    Malformed(Notification),
}

/// What the session thread receives.
pub(crate) enum Input {
    /// The routes to announce from now on.
    Routes(Arc<RouteSet>),
    /// A TCP connection the peer opened to rsbal.
    Incoming(TcpStream),
    /// Close, reply, end. Routes are withdrawn first unless `restarting`
    /// and graceful restart is on.
    Stop {
        reply: Sender<()>,
        restarting: bool,
    },
    /// From helper threads, tagged with the stream's id.
    Connected {
        stream: u64,
        result: io::Result<TcpStream>,
    },
    Frame {
        stream: u64,
        bytes: Vec<u8>,
    },
    Closed {
        stream: u64,
        end: ReadEnd,
    },
}

/// The handle of a running session thread.
pub(crate) struct SessionHandle {
    pub(crate) settings: PeerSettings,
    tx: Sender<Input>,
    thread: Option<JoinHandle<()>>,
}

impl SessionHandle {
    /// Starts the session thread; it connects out at once.
    pub(crate) fn spawn(
        settings: PeerSettings,
        routes: Arc<RouteSet>,
        store: Arc<SnapshotStore>,
    ) -> io::Result<SessionHandle> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let session = Session::new(settings.clone(), tx.clone(), routes, store);
        let thread = thread::Builder::new()
            .name(format!("bgp:{}", settings.peer))
            .spawn(move || session.run(rx))?;
        Ok(SessionHandle {
            settings,
            tx,
            thread: Some(thread),
        })
    }

    /// Where incoming connections for this peer go.
    pub(crate) fn sender(&self) -> Sender<Input> {
        self.tx.clone()
    }

    pub(crate) fn set_routes(&self, routes: Arc<RouteSet>) {
        let _ = self.tx.send(Input::Routes(routes));
    }

    /// Asks the session to stop; the returned receiver gets `()` once it
    /// has closed. `restarting`: rsbal (or this session) comes back soon,
    /// so with graceful restart on the routes are left with the peer;
    /// otherwise they are withdrawn. Pass the receiver to [`SessionHandle::join`].
    pub(crate) fn begin_stop(&self, restarting: bool) -> Receiver<()> {
        let (reply, done) = crossbeam_channel::bounded(1);
        let _ = self.tx.send(Input::Stop { reply, restarting });
        done
    }

    /// Waits until `deadline` for the stop begun with `done`.
    pub(crate) fn join(mut self, done: &Receiver<()>, deadline: Instant) {
        if done.recv_deadline(deadline).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        } else {
            log::warn!(target: LOG_TARGET, "peer {}: session did not stop in time", self.settings.peer);
        }
    }
}

/// One TCP connection (or attempt) and its state machine.
struct Conn {
    id: u64,
    direction: Direction,
    fsm: Fsm,
    /// The connection's stream and its id.
    stream: Option<(u64, TcpStream)>,
    /// The stream id of the connect attempt that counts.
    pending_connect: Option<u64>,
    codec: Codec,
}

/// A stream being closed: our side is shut for writing, waiting for the peer.
struct Closing {
    stream_id: u64,
    stream: TcpStream,
    until: Instant,
}

struct Session {
    settings: PeerSettings,
    /// Where the session's state is published (status page, metrics).
    store: Arc<SnapshotStore>,
    /// The state last published.
    published: Option<State>,
    /// The connections last published (`pybal_bgp_session_state_count`).
    published_conns: Vec<daemon_status::BgpConnection>,
    inbox: Sender<Input>,
    desired: Arc<RouteSet>,
    /// `conns[0]` is the main connection; a second one exists only while
    /// an incoming connection races it.
    conns: Vec<Conn>,
    next_id: u64,
    /// What the peer of the established connection was sent.
    advertised: RouteSet,
    closing: Vec<Closing>,
    stopping: bool,
    /// A session with this peer was up since rsbal started.
    ever_established: bool,
}

impl Session {
    fn new(
        settings: PeerSettings,
        inbox: Sender<Input>,
        desired: Arc<RouteSet>,
        store: Arc<SnapshotStore>,
    ) -> Session {
        Session {
            settings,
            store,
            published: None,
            published_conns: Vec::new(),
            inbox,
            desired,
            conns: Vec::new(),
            next_id: 1,
            advertised: RouteSet::new(),
            closing: Vec::new(),
            stopping: false,
            ever_established: false,
        }
    }

    fn peer(&self) -> IpAddr {
        self.settings.peer
    }

    /// The peer's state: that of its most advanced connection.
    fn state(&self) -> State {
        let rank = |s: State| match s {
            State::Idle => 0,
            State::Active => 1,
            State::Connect => 2,
            State::OpenSent => 3,
            State::OpenConfirm => 4,
            State::Established => 5,
        };
        self.conns
            .iter()
            .map(|c| c.fsm.state())
            .max_by_key(|s| rank(*s))
            .unwrap_or(State::Idle)
    }

    /// The connections that have a TCP socket, as
    /// `pybal_bgp_session_state_count` counts them.
    fn connections(&self) -> Vec<daemon_status::BgpConnection> {
        let mut conns: Vec<_> = self
            .conns
            .iter()
            .filter_map(|c| {
                let (_, tcp) = c.stream.as_ref()?;
                Some(daemon_status::BgpConnection {
                    local_asn: self.settings.local_asn,
                    local_ip: tcp.local_addr().ok()?.ip().to_string(),
                    remote_ip: tcp.peer_addr().map_or(self.peer(), |a| a.ip()).to_string(),
                    side: match c.direction {
                        Direction::Outgoing => "active",
                        Direction::Incoming => "passive",
                    },
                    state: c.fsm.state().to_string().to_uppercase(),
                })
            })
            .collect();
        conns.sort();
        conns
    }

    /// Publishes the state (status page, `pybal_bgp_session_established`)
    /// and the connections (`pybal_bgp_session_state_count`) when they
    /// changed.
    fn publish(&mut self) {
        let conns = self.connections();
        if conns != self.published_conns {
            daemon_status::bgp_connections(&self.peer().to_string(), &conns);
            self.published_conns = conns;
        }
        let state = self.state();
        if self.published == Some(state) {
            return;
        }
        self.published = Some(state);
        daemon_status::bgp_session(
            &self.store,
            self.settings.local_asn,
            &self.peer().to_string(),
            state == State::Established,
            &state.to_string(),
        );
    }

    /// The session ends: its status and series go away.
    fn unpublish(&self) {
        daemon_status::bgp_session_removed(&self.store, &self.peer().to_string());
    }

    fn run(mut self, rx: Receiver<Input>) {
        log::info!(target: LOG_TARGET, "peer {}: starting BGP session (port {}, local AS {}, id {})",
            self.peer(), self.settings.port, self.settings.local_asn, self.settings.bgp_id);
        self.maintain();
        self.publish();
        loop {
            let input = match self.next_deadline() {
                Some(deadline) => rx.recv_deadline(deadline),
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match input {
                Ok(Input::Stop { reply, restarting }) => {
                    self.shutdown(&rx, restarting);
                    self.unpublish();
                    let _ = reply.send(());
                    return;
                }
                Ok(input) => self.on_input(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    self.shutdown(&rx, false);
                    self.unpublish();
                    return;
                }
            }
            self.poll_timers();
            self.maintain();
            self.publish();
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.conns
            .iter()
            .filter_map(|c| c.fsm.next_deadline())
            .chain(self.closing.iter().map(|c| c.until))
            .min()
    }

    fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn new_conn(&mut self, direction: Direction) -> u64 {
        let id = self.new_id();
        self.conns.push(Conn {
            id,
            direction,
            fsm: Fsm::new(self.settings.fsm_config(!self.ever_established)),
            stream: None,
            pending_connect: None,
            codec: Codec::default(),
        });
        id
    }

    fn conn(&self, id: u64) -> Option<&Conn> {
        self.conns.iter().find(|c| c.id == id)
    }

    fn conn_mut(&mut self, id: u64) -> Option<&mut Conn> {
        self.conns.iter_mut().find(|c| c.id == id)
    }

    fn conn_of_stream(&self, stream_id: u64) -> Option<u64> {
        self.conns
            .iter()
            .find(|c| c.stream.as_ref().is_some_and(|(s, _)| *s == stream_id))
            .map(|c| c.id)
    }

    /// Keeps one main connection: a finished secondary goes away, a
    /// finished main gives way to a live secondary, and a stopped main with
    /// nothing else is replaced by a fresh outgoing one.
    fn maintain(&mut self) {
        if self.stopping {
            return;
        }
        if self.conns.len() > 1 {
            let main = self.conns[0].id;
            self.conns
                .retain(|c| c.id == main || c.fsm.state() != State::Idle);
            if self.conns.len() > 1 && self.conns[0].fsm.state() == State::Idle {
                self.conns.remove(0);
            }
        }
        let replace = self.conns.first().is_none_or(|c| c.fsm.is_stopped());
        if replace {
            self.conns.clear();
            let id = self.new_conn(Direction::Outgoing);
            self.feed(id, Event::Start);
        }
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Routes(routes) => self.set_routes(routes),
            Input::Incoming(stream) => self.on_incoming(stream),
            Input::Stop { .. } => {}
            Input::Connected { stream, result } => {
                let Some(id) = self
                    .conns
                    .iter()
                    .find(|c| c.pending_connect == Some(stream))
                    .map(|c| c.id)
                else {
                    return; // abandoned attempt: dropping it closes it
                };
                if let Some(conn) = self.conn_mut(id) {
                    conn.pending_connect = None;
                }
                match result {
                    Ok(tcp) => match self.install(id, stream, tcp) {
                        Ok(()) => self.feed(id, Event::Connected),
                        Err(e) => self.feed(id, Event::TcpFailed(e.to_string())),
                    },
                    Err(e) => self.feed(id, Event::TcpFailed(e.to_string())),
                }
            }
            Input::Frame { stream, bytes } => {
                let Some(id) = self.conn_of_stream(stream) else {
                    return;
                };
                let codec = self.conn(id).map(|c| c.codec).unwrap_or_default();
                match codec.decode(&bytes) {
                    Ok(msg) => {
                        log_received(self.peer(), &msg);
                        self.feed(id, Event::Received(msg));
                    }
                    Err(n) => {
                        log::warn!(target: LOG_TARGET, "peer {}: malformed {}-byte message: {n}",
                            self.peer(), bytes.len());
                        self.feed(id, Event::Malformed(n));
                    }
                }
            }
            Input::Closed { stream, end } => {
                if let Some(at) = self.closing.iter().position(|c| c.stream_id == stream) {
                    let closing = self.closing.swap_remove(at);
                    let _ = closing.stream.shutdown(Shutdown::Both);
                    return;
                }
                let Some(id) = self.conn_of_stream(stream) else {
                    return;
                };
                let event = match end {
                    ReadEnd::Eof => Event::TcpFailed("connection closed by the peer".to_string()),
                    ReadEnd::Io(e) => Event::TcpFailed(format!("connection lost: {e}")),
                    ReadEnd::Malformed(n) => {
                        log::warn!(target: LOG_TARGET, "peer {}: malformed message header: {n}", self.peer());
                        Event::Malformed(n)
                    }
                };
                self.feed(id, event);
            }
        }
    }

    fn on_incoming(&mut self, stream: TcpStream) {
        if self.stopping {
            return;
        }
        let waiting = self.conns.first().filter(|main| {
            matches!(
                main.fsm.state(),
                State::Idle | State::Connect | State::Active
            )
        });
        let id = if let Some(main) = waiting {
            main.id
        } else {
            if let Some(second) = self.conns.get(1) {
                if second.fsm.state() == State::Established {
                    log::info!(target: LOG_TARGET, "peer {}: refusing another connection, a session is established", self.peer());
                    return;
                }
                // The peer gave up on the earlier incoming connection.
                let second = second.id;
                self.feed(second, Event::Stop(None));
                self.conns.retain(|c| c.id != second);
            }
            self.new_conn(Direction::Incoming)
        };
        let stream_id = self.new_id();
        if let Some(conn) = self.conn_mut(id) {
            conn.direction = Direction::Incoming;
        }
        match self.install(id, stream_id, stream) {
            Ok(()) => self.feed(id, Event::Accepted),
            Err(e) => {
                log::warn!(target: LOG_TARGET, "peer {}: cannot use incoming connection: {e}", self.peer())
            }
        }
    }

    /// Makes `tcp` the connection of `id` and starts its reader.
    fn install(&mut self, id: u64, stream_id: u64, tcp: TcpStream) -> io::Result<()> {
        tcp.set_nodelay(true)?;
        tcp.set_read_timeout(None)?;
        tcp.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let reader = tcp.try_clone()?;
        let tx = self.inbox.clone();
        thread::Builder::new()
            .name(format!("bgp-read:{}", self.peer()))
            .stack_size(HELPER_STACK)
            .spawn(move || read_loop(stream_id, reader, tx))?;
        if let Some(conn) = self.conn_mut(id) {
            if let Some((old_id, old)) = conn.stream.replace((stream_id, tcp)) {
                let _ = old.shutdown(Shutdown::Both);
                log::debug!(target: LOG_TARGET, "replaced stream {old_id}");
            }
            conn.codec = Codec::default();
        }
        Ok(())
    }

    fn poll_timers(&mut self) {
        let now = Instant::now();
        for closing in self.closing.iter().filter(|c| c.until <= now) {
            let _ = closing.stream.shutdown(Shutdown::Both);
        }
        self.closing.retain(|c| c.until > now);
        let ids: Vec<u64> = self.conns.iter().map(|c| c.id).collect();
        for id in ids {
            let Some(conn) = self.conn_mut(id) else {
                continue;
            };
            let before = conn.fsm.state();
            let actions = conn.fsm.poll_timers(now);
            let mut queue = VecDeque::new();
            for action in actions {
                self.act(id, action, &mut queue);
            }
            self.log_transition(id, before);
            self.drain(queue);
        }
    }

    /// Feeds `event` to connection `id`, and whatever follows from it.
    fn feed(&mut self, id: u64, event: Event) {
        self.drain(VecDeque::from([(id, event)]));
    }

    fn drain(&mut self, mut queue: VecDeque<(u64, Event)>) {
        while let Some((id, event)) = queue.pop_front() {
            let Some(conn) = self.conn_mut(id) else {
                continue;
            };
            let before = conn.fsm.state();
            let actions = conn.fsm.handle(event, Instant::now());
            for action in actions {
                self.act(id, action, &mut queue);
            }
            self.log_transition(id, before);
        }
    }

    fn log_transition(&self, id: u64, before: State) {
        let Some(conn) = self.conn(id) else { return };
        let after = conn.fsm.state();
        if before == after {
            return;
        }
        let peer = self.peer();
        let reason = conn.fsm.last_error().unwrap_or("");
        match (before, after) {
            (_, State::Established) => {}
            (State::Active, State::Connect) | (State::Idle, State::Connect) => {
                log::debug!(target: LOG_TARGET, "peer {peer}: {before} -> {after}: connecting");
            }
            (_, State::Idle | State::Active) if !reason.is_empty() && !self.stopping => {
                let retry = conn
                    .fsm
                    .next_deadline()
                    .map(|t| {
                        t.saturating_duration_since(Instant::now())
                            .as_secs_f64()
                            .ceil()
                    })
                    .map(|s| format!("; retrying in {s} s"))
                    .unwrap_or_default();
                log::info!(target: LOG_TARGET, "peer {peer}: {before} -> {after}: {reason}{retry}");
            }
            _ => {
                log::info!(target: LOG_TARGET, "peer {peer}: {before} -> {after} ({:?} connection)",
                conn.direction)
            }
        }
    }

    fn act(&mut self, id: u64, action: Action, queue: &mut VecDeque<(u64, Event)>) {
        match action {
            Action::Connect => {
                let stream_id = self.new_id();
                if let Some(conn) = self.conn_mut(id) {
                    conn.direction = Direction::Outgoing;
                    conn.pending_connect = Some(stream_id);
                }
                self.spawn_connect(id, stream_id, queue);
            }
            Action::AbortConnect => {
                if let Some(conn) = self.conn_mut(id) {
                    conn.pending_connect = None;
                }
            }
            Action::Send(msg) => self.send(id, &msg, queue),
            Action::OpenReceived(peer_id) => {
                let codec = self
                    .conn(id)
                    .and_then(|c| c.fsm.negotiated())
                    .map(|n| n.codec)
                    .unwrap_or_default();
                if let Some(conn) = self.conn_mut(id) {
                    conn.codec = codec;
                }
                self.check_collision(id, peer_id, queue);
            }
            Action::Established(negotiated) => self.on_established(id, &negotiated, queue),
            Action::RouteRefresh(family) => {
                log::info!(target: LOG_TARGET, "peer {}: route refresh for {family}", self.peer());
                let desired = Arc::clone(&self.desired);
                self.send_routes(
                    id,
                    &RouteSet::new(),
                    &desired,
                    &BTreeSet::from([family]),
                    queue,
                );
            }
            Action::Close => self.close(id),
            Action::Down(reason) => {
                self.advertised.clear();
                log::info!(target: LOG_TARGET, "peer {}: BGP session down: {reason}", self.peer());
            }
        }
    }

    fn spawn_connect(&mut self, id: u64, stream_id: u64, queue: &mut VecDeque<(u64, Event)>) {
        let settings = self.settings.clone();
        let tx = self.inbox.clone();
        let spawned = thread::Builder::new()
            .name(format!("bgp-connect:{}", settings.peer))
            .stack_size(HELPER_STACK)
            .spawn(move || {
                let result = connect(&settings);
                let _ = tx.send(Input::Connected {
                    stream: stream_id,
                    result,
                });
            });
        if let Err(e) = spawned {
            queue.push_back((
                id,
                Event::TcpFailed(format!("cannot start a connect thread: {e}")),
            ));
        }
    }

    fn send(&mut self, id: u64, msg: &Message, queue: &mut VecDeque<(u64, Event)>) {
        let peer = self.peer();
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        let Some((_, stream)) = conn.stream.as_mut() else {
            return;
        };
        let bytes = conn.codec.encode(msg);
        match msg {
            Message::Notification(n) => {
                log::info!(target: LOG_TARGET, "peer {peer}: sending NOTIFICATION {n}")
            }
            Message::Keepalive => {}
            other => {
                log::debug!(target: LOG_TARGET, "peer {peer}: sending {} {other:?}", other.kind())
            }
        }
        if let Err(e) = stream.write_all(&bytes) {
            queue.push_back((id, Event::TcpFailed(format!("write failed: {e}"))));
        }
    }

    /// Shuts our side for writing and lets the peer close first.
    fn close(&mut self, id: u64) {
        let Some(conn) = self.conn_mut(id) else {
            return;
        };
        conn.codec = Codec::default();
        if let Some((stream_id, stream)) = conn.stream.take() {
            let _ = stream.shutdown(Shutdown::Write);
            self.closing.push(Closing {
                stream_id,
                stream,
                until: Instant::now() + CLOSE_LINGER,
            });
        }
    }

    /// Collision detection (RFC 4271 §6.8) once connection `id` has the
    /// peer's OPEN.
    fn check_collision(&mut self, id: u64, peer_id: Ipv4Addr, queue: &mut VecDeque<(u64, Event)>) {
        let (Some(this), Some(other)) = (self.conn(id), self.conns.iter().find(|c| c.id != id))
        else {
            return;
        };
        let loser = match other.fsm.state() {
            State::Established => this,
            State::OpenConfirm if this.direction == other.direction => {
                if this.id < other.id {
                    this
                } else {
                    other
                }
            }
            State::OpenConfirm => {
                let losing = fsm::collision_loser(self.settings.bgp_id, peer_id);
                if this.direction == losing {
                    this
                } else {
                    other
                }
            }
            _ => return,
        };
        log::info!(target: LOG_TARGET, "peer {}: connection collision, closing the {:?} connection (local id {}, peer id {peer_id})",
            self.peer(), loser.direction, self.settings.bgp_id);
        queue.push_back((loser.id, Event::CollisionDump));
    }

    fn on_established(
        &mut self,
        id: u64,
        negotiated: &Negotiated,
        queue: &mut VecDeque<(u64, Event)>,
    ) {
        self.ever_established = true;
        let families: Vec<String> = negotiated.families.iter().map(|f| f.to_string()).collect();
        log::info!(target: LOG_TARGET, "peer {}: BGP session established (peer AS {}, id {}, hold time {} s, {}, {}-octet AS numbers)",
            self.peer(), negotiated.peer.asn, negotiated.peer.bgp_id, negotiated.hold_time.as_secs(),
            families.join(" and "), if negotiated.codec.four_octet_as { 4 } else { 2 });
        // The established connection wins over any other.
        for other in self.conns.iter().filter(|c| c.id != id) {
            let event = match other.fsm.state() {
                State::OpenSent | State::OpenConfirm => Event::CollisionDump,
                _ => Event::Stop(None),
            };
            queue.push_back((other.id, event));
        }
        let desired = Arc::clone(&self.desired);
        let missing: Vec<String> = desired
            .keys()
            .filter(|ip| !negotiated.families.contains(&Family::of(**ip)))
            .map(|ip| ip.to_string())
            .collect();
        if !missing.is_empty() {
            log::warn!(target: LOG_TARGET, "peer {}: not announcing {} (address family not negotiated)",
                self.peer(), missing.join(", "));
        }
        self.advertised.clear();
        self.send_routes(id, &RouteSet::new(), &desired, &negotiated.families, queue);
        self.advertised = (*desired).clone();
        if self.settings.graceful_restart.is_some() {
            for family in &negotiated.families {
                self.send(id, &Message::Update(Update::end_of_rib(*family)), queue);
            }
            log::info!(target: LOG_TARGET, "peer {}: End-of-RIB sent for {}", self.peer(), families.join(" and "));
        }
    }

    /// The established connection, if any.
    fn established(&self) -> Option<(u64, BTreeSet<Family>)> {
        self.conns.iter().find_map(|c| {
            (c.fsm.state() == State::Established)
                .then(|| c.fsm.negotiated().map(|n| (c.id, n.families.clone())))
                .flatten()
        })
    }

    fn set_routes(&mut self, routes: Arc<RouteSet>) {
        self.desired = routes;
        if let Some((id, families)) = self.established() {
            let desired = Arc::clone(&self.desired);
            let advertised = std::mem::take(&mut self.advertised);
            let mut queue = VecDeque::new();
            self.send_routes(id, &advertised, &desired, &families, &mut queue);
            self.advertised = (*desired).clone();
            self.drain(queue);
        }
    }

    fn send_routes(
        &mut self,
        id: u64,
        from: &RouteSet,
        to: &RouteSet,
        families: &BTreeSet<Family>,
        queue: &mut VecDeque<(u64, Event)>,
    ) {
        let codec = self.conn(id).map(|c| c.codec).unwrap_or_default();
        let updates = routes::updates(from, to, families, codec);
        let announced = to
            .iter()
            .filter(|(ip, a)| families.contains(&Family::of(**ip)) && from.get(ip) != Some(a))
            .count();
        let withdrawn = from
            .keys()
            .filter(|ip| families.contains(&Family::of(**ip)) && !to.contains_key(ip))
            .count();
        if announced + withdrawn > 0 {
            log::info!(target: LOG_TARGET, "peer {}: announcing {announced} and withdrawing {withdrawn} route(s) in {} UPDATE(s)",
                self.peer(), updates.len());
        }
        for update in updates {
            self.send(id, &Message::Update(update), queue);
        }
    }

    /// Withdraws and sends Cease, or when `restarting` with graceful
    /// restart on, just closes; then waits (briefly) for the peer to close.
    fn shutdown(&mut self, rx: &Receiver<Input>, restarting: bool) {
        self.stopping = true;
        let mut queue = VecDeque::new();
        let established = self.established();
        for id in self.conns.iter().map(|c| c.id).collect::<Vec<_>>() {
            let mut notification = Some(Notification::shutdown("rsbal is shutting down"));
            if let Some((est, families)) = established.as_ref().filter(|(est, _)| *est == id) {
                match self.settings.graceful_restart.filter(|_| restarting) {
                    Some(restart_time) => {
                        let peer_n_bit = self
                            .conn(*est)
                            .and_then(|c| c.fsm.negotiated())
                            .and_then(|n| n.peer_graceful_restart())
                            .is_some_and(|gr| gr.notification);
                        log::info!(target: LOG_TARGET, "peer {}: graceful restart: leaving {} route(s) announced for up to {restart_time} s{}",
                            self.peer(), self.advertised.len(),
                            if peer_n_bit { " (Cease with the N bit)" } else { ", closing without NOTIFICATION" });
                        if !peer_n_bit {
                            notification = None;
                        }
                    }
                    None => {
                        let advertised = std::mem::take(&mut self.advertised);
                        self.send_routes(*est, &advertised, &RouteSet::new(), families, &mut queue);
                    }
                }
            }
            queue.push_back((id, Event::Stop(notification)));
        }
        self.drain(queue);
        let deadline = Instant::now() + CLOSE_LINGER;
        while !self.closing.is_empty() {
            match rx.recv_deadline(deadline) {
                Ok(Input::Closed { stream, .. }) => {
                    if let Some(at) = self.closing.iter().position(|c| c.stream_id == stream) {
                        let closing = self.closing.swap_remove(at);
                        let _ = closing.stream.shutdown(Shutdown::Both);
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        for closing in self.closing.drain(..) {
            let _ = closing.stream.shutdown(Shutdown::Both);
        }
        log::info!(target: LOG_TARGET, "peer {}: session stopped", self.peer());
    }
}

fn log_received(peer: IpAddr, msg: &Message) {
    match msg {
        Message::Keepalive => {}
        Message::Notification(n) => {
            log::warn!(target: LOG_TARGET, "peer {peer}: received NOTIFICATION {n}")
        }
        Message::Open(open) => {
            log::debug!(target: LOG_TARGET, "peer {peer}: received OPEN {open:?}")
        }
        other => log::debug!(target: LOG_TARGET, "peer {peer}: received {}", other.kind()),
    }
}

/// Connects to the peer from the configured local address.
fn connect(settings: &PeerSettings) -> io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let addr = SocketAddr::new(settings.peer, settings.port);
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if let Some(local) = settings.local_ip {
        socket
            .bind(&SocketAddr::new(local, 0).into())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind to {local}: {e}")))?;
    }
    socket.connect_timeout(&addr.into(), CONNECT_TIMEOUT)?;
    Ok(socket.into())
}

/// Reads whole messages until the connection ends; reports each to the session.
fn read_loop(stream_id: u64, mut stream: TcpStream, tx: Sender<Input>) {
    loop {
        let input = match read_message(&mut stream) {
            Ok(bytes) => Input::Frame {
                stream: stream_id,
                bytes,
            },
            Err(end) => {
                let _ = tx.send(Input::Closed {
                    stream: stream_id,
                    end,
                });
                return;
            }
        };
        if tx.send(input).is_err() {
            return;
        }
    }
}

/// One message: the header is checked before the body is read.
fn read_message(stream: &mut impl Read) -> Result<Vec<u8>, ReadEnd> {
    let mut bytes = vec![0u8; message::HEADER_LEN];
    read_exact(stream, &mut bytes)?;
    let header = message::parse_header(&bytes).map_err(ReadEnd::Malformed)?;
    bytes.resize(header.len, 0);
    read_exact(stream, &mut bytes[message::HEADER_LEN..])?;
    Ok(bytes)
}

fn read_exact(stream: &mut impl Read, buf: &mut [u8]) -> Result<(), ReadEnd> {
    stream.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => ReadEnd::Eof,
        _ => ReadEnd::Io(e),
    })
}
