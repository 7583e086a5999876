//! The BGP session state machine of one connection (RFC 4271 §8), pure.
//!
//! It owns the session state (Idle, Connect, Active, OpenSent, OpenConfirm,
//! Established), the connect-retry, hold, keepalive and idle-hold timers (as
//! deadlines), the reconnect backoff and the OPEN negotiation. It does no
//! I/O: the session thread feeds it [`Event`]s and the current time and
//! carries out the [`Action`]s it returns; [`Fsm::next_deadline`] tells the
//! thread how long it may block. Connection collisions (§6.8) are decided by
//! [`collision_loser`].

use super::message::{
    error, Capability, Codec, Family, GracefulRestart, Message, Notification, Open,
};
use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Session states (RFC 4271 §8.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Which side opened a TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// rsbal connected to the peer.
    Outgoing,
    /// The peer connected to rsbal.
    Incoming,
}

/// Fixed settings of a state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FsmConfig {
    /// The OPEN rsbal sends.
    pub(crate) open: Open,
    /// First reconnect delay after a failure; doubles per failure.
    pub(crate) retry_min: Duration,
    /// Largest reconnect delay.
    pub(crate) retry_max: Duration,
    /// How long an outgoing connection attempt may take.
    pub(crate) connect_timeout: Duration,
    /// Hold timer while waiting for the peer's OPEN (RFC 4271 suggests 4 min).
    pub(crate) open_hold: Duration,
}

/// What the two OPENs agreed on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Negotiated {
    /// The peer's OPEN.
    pub(crate) peer: Open,
    /// Zero: no hold timer and no keepalives.
    pub(crate) hold_time: Duration,
    pub(crate) codec: Codec,
    /// Families both sides advertised.
    pub(crate) families: BTreeSet<Family>,
}

impl Negotiated {
    /// The peer's graceful-restart capability, if it sent one.
    pub(crate) fn peer_graceful_restart(&self) -> Option<&GracefulRestart> {
        self.peer.graceful_restart()
    }
}

/// Checks the peer's OPEN against ours and agrees on hold time, AS number
/// width and families (the OPEN's syntax was checked by the decoder).
pub(crate) fn negotiate(ours: &Open, theirs: &Open) -> Result<Negotiated, Notification> {
    if theirs.bgp_id == ours.bgp_id {
        return Err(Notification::new(
            error::OPEN,
            error::OPEN_BAD_BGP_ID,
            theirs.bgp_id.octets().to_vec(),
        ));
    }
    let hold_time = Duration::from_secs(u64::from(ours.hold_time.min(theirs.hold_time)));
    let families = ours
        .families()
        .intersection(&theirs.families())
        .copied()
        .collect();
    Ok(Negotiated {
        peer: theirs.clone(),
        hold_time,
        codec: Codec {
            four_octet_as: ours.four_octet_as() && theirs.four_octet_as(),
        },
        families,
    })
}

/// Of two colliding connections that both got the peer's OPEN, the one to
/// close (RFC 4271 §6.8): the connection opened by the side with the lower
/// BGP identifier.
pub(crate) fn collision_loser(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> Direction {
    if u32::from(local_id) < u32::from(remote_id) {
        Direction::Outgoing
    } else {
        Direction::Incoming
    }
}

/// Inputs of the state machine (timer expiries come from [`Fsm::poll_timers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// Start (or restart) the session: connect out.
    Start,
    /// Stop for good: send `notification` (if any) and close; no restart.
    Stop(Option<Notification>),
    /// The outgoing TCP connection is up.
    Connected,
    /// An incoming TCP connection was given to this machine.
    Accepted,
    /// The connection attempt failed or the connection was lost.
    TcpFailed(String),
    /// A message arrived.
    Received(Message),
    /// Bytes arrived that do not decode: send this NOTIFICATION.
    Malformed(Notification),
    /// Collision resolution (§6.8) closes this connection.
    CollisionDump,
}

/// What the session thread must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Open an outgoing TCP connection.
    Connect,
    /// Forget the pending outgoing attempt (close it if it still succeeds).
    AbortConnect,
    Send(Message),
    /// The peer's OPEN was accepted (now OpenConfirm): check for collisions.
    OpenReceived(Ipv4Addr),
    /// The session is up: send the routes.
    Established(Box<Negotiated>),
    /// The peer asked for the routes of a family again.
    RouteRefresh(Family),
    /// Close the TCP connection.
    Close,
    /// The session left Established.
    Down(String),
}

/// The state machine of one connection.
#[derive(Debug, Clone)]
pub(crate) struct Fsm {
    config: FsmConfig,
    state: State,
    negotiated: Option<Negotiated>,
    /// Connect: the attempt's deadline. Active: when to try again.
    connect_retry: Option<Instant>,
    hold: Option<Instant>,
    keepalive: Option<Instant>,
    /// Idle after a failure: when to start again.
    idle_hold: Option<Instant>,
    /// Failures since the session was last up for a while (backoff exponent).
    failures: u32,
    established_at: Option<Instant>,
    /// Why the last connection ended, for logs.
    last_error: Option<String>,
}

impl Fsm {
    /// A machine in Idle, not started.
    pub(crate) fn new(config: FsmConfig) -> Fsm {
        Fsm {
            config,
            state: State::Idle,
            negotiated: None,
            connect_retry: None,
            hold: None,
            keepalive: None,
            idle_hold: None,
            failures: 0,
            established_at: None,
            last_error: None,
        }
    }

    pub(crate) fn state(&self) -> State {
        self.state
    }

    /// What the OPENs agreed on, from OpenConfirm on.
    pub(crate) fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Why the last connection ended.
    pub(crate) fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// True when the machine sits in Idle with no restart planned.
    pub(crate) fn is_stopped(&self) -> bool {
        self.state == State::Idle && self.idle_hold.is_none()
    }

    /// The earliest timer deadline, if any timer runs.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        [
            self.connect_retry,
            self.hold,
            self.keepalive,
            self.idle_hold,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Handles every timer that expired at `now`.
    pub(crate) fn poll_timers(&mut self, now: Instant) -> Vec<Action> {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        let mut actions = Vec::new();
        if due(self.hold) {
            self.hold = None;
            actions.extend(self.fail(
                Notification::new(error::HOLD_TIMER_EXPIRED, 0, Vec::new()),
                now,
            ));
        }
        if due(self.keepalive) {
            self.keepalive = None;
            if matches!(self.state, State::OpenConfirm | State::Established) {
                actions.push(Action::Send(Message::Keepalive));
                self.start_keepalive(now);
            }
        }
        if due(self.idle_hold) {
            self.idle_hold = None;
            actions.extend(self.handle(Event::Start, now));
        }
        if due(self.connect_retry) {
            self.connect_retry = None;
            match self.state {
                State::Connect => {
                    self.last_error = Some("connection attempt timed out".to_string());
                    actions.push(Action::AbortConnect);
                    self.enter_active(now);
                }
                State::Active => {
                    actions.push(Action::Connect);
                    self.state = State::Connect;
                    self.connect_retry = Some(now + self.config.connect_timeout);
                }
                _ => {}
            }
        }
        actions
    }

    /// Handles one event at `now`.
    pub(crate) fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        use State::*;
        match (self.state, event) {
            (_, Event::Stop(notification)) => self.stop(notification),
            (Idle, Event::Start) => {
                self.idle_hold = None;
                self.state = Connect;
                self.connect_retry = Some(now + self.config.connect_timeout);
                vec![Action::Connect]
            }
            (Connect, Event::Connected) => self.send_open(now, Vec::new()),
            (Idle | Active, Event::Accepted) => self.send_open(now, Vec::new()),
            (Connect, Event::Accepted) => self.send_open(now, vec![Action::AbortConnect]),
            (Connect, Event::TcpFailed(reason)) => {
                self.last_error = Some(reason);
                self.enter_active(now);
                Vec::new()
            }
            (OpenSent | OpenConfirm | Established, Event::TcpFailed(reason)) => {
                self.drop_connection(reason, now)
            }
            (OpenSent | OpenConfirm | Established, Event::Malformed(n)) => self.fail(n, now),
            (OpenSent | OpenConfirm | Established, Event::CollisionDump) => {
                let actions = self.stop(Some(Notification::cease(error::CEASE_COLLISION)));
                self.last_error = Some("connection collision resolution".to_string());
                actions
            }
            (OpenSent | OpenConfirm | Established, Event::Received(Message::Notification(n))) => {
                self.drop_connection(format!("received NOTIFICATION {n}"), now)
            }
            (OpenSent, Event::Received(Message::Open(open))) => self.open_received(open, now),
            (OpenConfirm, Event::Received(Message::Keepalive)) => {
                self.state = Established;
                self.established_at = Some(now);
                self.last_error = None;
                self.start_hold(now);
                self.restart_done();
                match &self.negotiated {
                    Some(n) => vec![Action::Established(Box::new(n.clone()))],
                    None => Vec::new(),
                }
            }
            (Established, Event::Received(Message::Keepalive | Message::Update(_))) => {
                self.start_hold(now);
                Vec::new()
            }
            (Established, Event::Received(Message::RouteRefresh(family))) => {
                self.start_hold(now);
                let negotiated = self
                    .negotiated
                    .as_ref()
                    .is_some_and(|n| n.families.contains(&family));
                if negotiated {
                    vec![Action::RouteRefresh(family)]
                } else {
                    Vec::new()
                }
            }
            (OpenSent, Event::Received(_)) => self.fsm_error(error::FSM_IN_OPEN_SENT, now),
            (OpenConfirm, Event::Received(_)) => self.fsm_error(error::FSM_IN_OPEN_CONFIRM, now),
            (Established, Event::Received(_)) => self.fsm_error(error::FSM_IN_ESTABLISHED, now),
            // Anything else (a late connect result, a start while running)
            // changes nothing.
            _ => Vec::new(),
        }
    }

    fn send_open(&mut self, now: Instant, mut actions: Vec<Action>) -> Vec<Action> {
        self.state = State::OpenSent;
        self.idle_hold = None;
        self.connect_retry = None;
        self.hold = Some(now + self.config.open_hold);
        actions.push(Action::Send(Message::Open(self.config.open.clone())));
        actions
    }

    fn open_received(&mut self, open: Open, now: Instant) -> Vec<Action> {
        match negotiate(&self.config.open, &open) {
            Err(n) => self.fail(n, now),
            Ok(negotiated) => {
                let peer_id = negotiated.peer.bgp_id;
                self.negotiated = Some(negotiated);
                self.state = State::OpenConfirm;
                self.start_hold(now);
                self.start_keepalive(now);
                vec![
                    Action::Send(Message::Keepalive),
                    Action::OpenReceived(peer_id),
                ]
            }
        }
    }

    /// Once a session is up the speaker has finished restarting: later
    /// OPENs no longer set graceful restart's R bit.
    fn restart_done(&mut self) {
        for cap in &mut self.config.open.capabilities {
            if let Capability::GracefulRestart(gr) = cap {
                gr.restarting = false;
            }
        }
    }

    fn fsm_error(&mut self, subcode: u8, now: Instant) -> Vec<Action> {
        self.fail(Notification::new(error::FSM, subcode, Vec::new()), now)
    }

    fn hold_time(&self) -> Duration {
        self.negotiated
            .as_ref()
            .map_or(self.config.open_hold, |n| n.hold_time)
    }

    fn start_hold(&mut self, now: Instant) {
        let hold = self.hold_time();
        self.hold = (!hold.is_zero()).then(|| now + hold);
    }

    fn start_keepalive(&mut self, now: Instant) {
        let hold = self.hold_time();
        self.keepalive = (!hold.is_zero()).then(|| now + hold / 3);
    }

    /// Connect failed: wait (backoff) in Active, where an incoming
    /// connection is still taken.
    fn enter_active(&mut self, now: Instant) {
        self.state = State::Active;
        let delay = self.next_backoff();
        self.connect_retry = Some(now + delay);
    }

    fn next_backoff(&mut self) -> Duration {
        let factor = 1u32 << self.failures.min(16);
        self.failures = self.failures.saturating_add(1);
        (self.config.retry_min * factor).min(self.config.retry_max)
    }

    /// Sends `notification`, closes, and restarts after the backoff.
    fn fail(&mut self, notification: Notification, now: Instant) -> Vec<Action> {
        let reason = format!("sent NOTIFICATION {notification}");
        let mut actions = vec![Action::Send(Message::Notification(notification))];
        actions.extend(self.drop_connection(reason, now));
        actions
    }

    /// The connection is gone: Idle, restart after the backoff.
    fn drop_connection(&mut self, reason: String, now: Instant) -> Vec<Action> {
        let was_established = self.state == State::Established;
        if let Some(since) = self.established_at.take() {
            if now.saturating_duration_since(since) >= self.config.retry_max {
                self.failures = 0;
            }
        }
        let mut actions = vec![Action::Close];
        if was_established {
            actions.push(Action::Down(reason.clone()));
        }
        self.reset_timers();
        self.state = State::Idle;
        self.negotiated = None;
        self.last_error = Some(reason);
        let delay = self.next_backoff();
        self.idle_hold = Some(now + delay);
        actions
    }

    fn stop(&mut self, notification: Option<Notification>) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.state {
            State::Idle => {}
            State::Connect => actions.push(Action::AbortConnect),
            State::Active => {}
            State::OpenSent | State::OpenConfirm | State::Established => {
                if let Some(n) = notification {
                    actions.push(Action::Send(Message::Notification(n)));
                }
                actions.push(Action::Close);
                if self.state == State::Established {
                    actions.push(Action::Down("stopped".to_string()));
                }
            }
        }
        self.reset_timers();
        self.idle_hold = None;
        self.state = State::Idle;
        self.negotiated = None;
        self.established_at = None;
        actions
    }

    fn reset_timers(&mut self) {
        self.connect_retry = None;
        self.hold = None;
        self.keepalive = None;
    }
}

#[cfg(test)]
mod tests;
