//! The state machine driven through whole sessions with a fake clock.

use super::*;
use crate::bgp::message::{Capability, Update};

const S: Duration = Duration::from_secs(1);

fn our_open() -> Open {
    Open {
        asn: 64600,
        hold_time: 90,
        bgp_id: Ipv4Addr::new(192, 0, 2, 1),
        capabilities: vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::Multiprotocol(Family::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(64600),
        ],
    }
}

fn peer_open(hold_time: u16) -> Open {
    Open {
        asn: 64512,
        hold_time,
        bgp_id: Ipv4Addr::new(192, 0, 2, 2),
        capabilities: vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::FourOctetAs(64512),
        ],
    }
}

fn config() -> FsmConfig {
    FsmConfig {
        open: our_open(),
        retry_min: S,
        retry_max: 30 * S,
        connect_timeout: 10 * S,
        open_hold: 240 * S,
    }
}

/// A machine taken to Established over an outgoing connection, peer hold 30 s.
fn established(t0: Instant) -> Fsm {
    let mut fsm = Fsm::new(config());
    assert_eq!(fsm.handle(Event::Start, t0), vec![Action::Connect]);
    assert_eq!(fsm.state(), State::Connect);
    assert_eq!(
        fsm.handle(Event::Connected, t0),
        vec![Action::Send(Message::Open(our_open()))]
    );
    assert_eq!(fsm.state(), State::OpenSent);
    assert_eq!(
        fsm.handle(Event::Received(Message::Open(peer_open(30))), t0),
        vec![
            Action::Send(Message::Keepalive),
            Action::OpenReceived(Ipv4Addr::new(192, 0, 2, 2))
        ]
    );
    assert_eq!(fsm.state(), State::OpenConfirm);
    let actions = fsm.handle(Event::Received(Message::Keepalive), t0);
    let [Action::Established(n)] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert_eq!(n.hold_time, 30 * S);
    assert_eq!(n.families, BTreeSet::from([Family::IPV4_UNICAST]));
    assert!(n.codec.four_octet_as);
    assert_eq!(fsm.state(), State::Established);
    fsm
}

#[test]
fn outgoing_session_reaches_established_and_keeps_alive() {
    let t0 = Instant::now();
    let mut fsm = established(t0);
    // Keepalives every hold/3 = 10 s; the peer's keepalives restart the hold timer.
    assert_eq!(fsm.next_deadline(), Some(t0 + 10 * S));
    assert_eq!(fsm.poll_timers(t0 + 5 * S), vec![]);
    assert_eq!(
        fsm.poll_timers(t0 + 10 * S),
        vec![Action::Send(Message::Keepalive)]
    );
    assert_eq!(
        fsm.handle(Event::Received(Message::Keepalive), t0 + 25 * S),
        vec![]
    );
    assert_eq!(
        fsm.poll_timers(t0 + 40 * S),
        vec![Action::Send(Message::Keepalive)]
    );
    // UPDATEs from the peer count as life too.
    assert_eq!(
        fsm.handle(
            Event::Received(Message::Update(Update::default())),
            t0 + 50 * S
        ),
        vec![]
    );
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn hold_timer_expiry_sends_notification_and_restarts_with_backoff() {
    let t0 = Instant::now();
    let mut fsm = established(t0);
    let _ = fsm.poll_timers(t0 + 10 * S);
    let _ = fsm.poll_timers(t0 + 20 * S);
    let actions = fsm.poll_timers(t0 + 30 * S);
    assert_eq!(
        actions[..2],
        [
            Action::Send(Message::Notification(Notification::new(4, 0, vec![]))),
            Action::Close
        ]
    );
    assert!(matches!(actions[2], Action::Down(ref r) if r.contains("Hold Timer Expired")));
    assert_eq!(fsm.state(), State::Idle);
    assert!(!fsm.is_stopped());
    // Restart one second later.
    assert_eq!(fsm.next_deadline(), Some(t0 + 31 * S));
    assert_eq!(fsm.poll_timers(t0 + 31 * S), vec![Action::Connect]);
    assert_eq!(fsm.state(), State::Connect);
}

#[test]
fn failed_connects_back_off_exponentially_up_to_the_cap() {
    let mut now = Instant::now();
    let mut fsm = Fsm::new(config());
    fsm.handle(Event::Start, now);
    let mut delays = Vec::new();
    for _ in 0..8 {
        assert_eq!(fsm.handle(Event::TcpFailed("refused".into()), now), vec![]);
        assert_eq!(fsm.state(), State::Active);
        assert_eq!(fsm.last_error(), Some("refused"));
        let at = fsm.next_deadline().unwrap();
        delays.push((at - now).as_secs());
        now = at;
        assert_eq!(fsm.poll_timers(now), vec![Action::Connect]);
        assert_eq!(fsm.state(), State::Connect);
    }
    assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30, 30]);
}

#[test]
fn a_connect_that_hangs_times_out() {
    let t0 = Instant::now();
    let mut fsm = Fsm::new(config());
    fsm.handle(Event::Start, t0);
    assert_eq!(fsm.next_deadline(), Some(t0 + 10 * S));
    assert_eq!(fsm.poll_timers(t0 + 10 * S), vec![Action::AbortConnect]);
    assert_eq!(fsm.state(), State::Active);
    // A late connect result changes nothing.
    assert_eq!(fsm.handle(Event::Connected, t0 + 10 * S), vec![]);
}

#[test]
fn incoming_connections_are_taken_while_waiting() {
    let t0 = Instant::now();
    // In Connect: the pending attempt is abandoned.
    let mut fsm = Fsm::new(config());
    fsm.handle(Event::Start, t0);
    assert_eq!(
        fsm.handle(Event::Accepted, t0),
        vec![
            Action::AbortConnect,
            Action::Send(Message::Open(our_open()))
        ]
    );
    assert_eq!(fsm.state(), State::OpenSent);
    // In Active and in Idle waiting to restart.
    let mut fsm = Fsm::new(config());
    fsm.handle(Event::Start, t0);
    fsm.handle(Event::TcpFailed("refused".into()), t0);
    assert_eq!(
        fsm.handle(Event::Accepted, t0),
        vec![Action::Send(Message::Open(our_open()))]
    );
    let mut fsm = Fsm::new(config());
    assert_eq!(
        fsm.handle(Event::Accepted, t0),
        vec![Action::Send(Message::Open(our_open()))]
    );
    // The OPEN hold timer (4 min) runs until the peer's OPEN.
    assert_eq!(fsm.next_deadline(), Some(t0 + 240 * S));
}

#[test]
fn unexpected_messages_are_fsm_errors() {
    let t0 = Instant::now();
    let fsm_error = |sub| Action::Send(Message::Notification(Notification::new(5, sub, vec![])));

    let mut fsm = Fsm::new(config());
    fsm.handle(Event::Accepted, t0);
    let actions = fsm.handle(Event::Received(Message::Keepalive), t0);
    assert_eq!(actions, vec![fsm_error(1), Action::Close]);
    assert_eq!(fsm.state(), State::Idle);

    let mut fsm = Fsm::new(config());
    fsm.handle(Event::Accepted, t0);
    fsm.handle(Event::Received(Message::Open(peer_open(90))), t0);
    let actions = fsm.handle(Event::Received(Message::Open(peer_open(90))), t0);
    assert_eq!(actions, vec![fsm_error(2), Action::Close]);

    let mut fsm = established(t0);
    let actions = fsm.handle(Event::Received(Message::Open(peer_open(90))), t0);
    assert_eq!(actions[..2], [fsm_error(3), Action::Close]);
    assert!(matches!(actions[2], Action::Down(_)));
}

#[test]
fn malformed_input_sends_the_decoder_notification() {
    let t0 = Instant::now();
    let mut fsm = established(t0);
    let n = Notification::new(3, 1, vec![]);
    let actions = fsm.handle(Event::Malformed(n.clone()), t0);
    assert_eq!(
        actions[..2],
        [Action::Send(Message::Notification(n)), Action::Close]
    );
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn an_open_with_our_own_identifier_is_refused() {
    let t0 = Instant::now();
    let mut fsm = Fsm::new(config());
    fsm.handle(Event::Accepted, t0);
    let mut open = peer_open(90);
    open.bgp_id = our_open().bgp_id;
    let actions = fsm.handle(Event::Received(Message::Open(open)), t0);
    assert_eq!(
        actions,
        vec![
            Action::Send(Message::Notification(Notification::new(
                2,
                3,
                vec![192, 0, 2, 1]
            ))),
            Action::Close
        ]
    );
}

#[test]
fn peer_notification_closes_and_restarts() {
    let t0 = Instant::now();
    let mut fsm = established(t0);
    let cease = Notification::cease(error::CEASE_ADMINISTRATIVE_SHUTDOWN);
    let actions = fsm.handle(Event::Received(Message::Notification(cease)), t0);
    assert_eq!(actions[0], Action::Close);
    assert!(
        matches!(&actions[1], Action::Down(r) if r.contains("Cease / Administrative Shutdown")),
        "{actions:?}"
    );
    assert!(fsm.last_error().unwrap().contains("received NOTIFICATION"));
    assert_eq!(fsm.next_deadline(), Some(t0 + S));
}

#[test]
fn stop_sends_the_given_notification_and_stays_idle() {
    let t0 = Instant::now();
    let mut fsm = established(t0);
    let cease = Notification::cease(error::CEASE_ADMINISTRATIVE_SHUTDOWN);
    let actions = fsm.handle(Event::Stop(Some(cease.clone())), t0);
    assert_eq!(
        actions,
        vec![
            Action::Send(Message::Notification(cease)),
            Action::Close,
            Action::Down("stopped".into())
        ]
    );
    assert!(fsm.is_stopped());
    assert_eq!(fsm.next_deadline(), None);
    // Stop without a NOTIFICATION just closes (graceful restart).
    let mut fsm = established(t0);
    assert_eq!(
        fsm.handle(Event::Stop(None), t0),
        vec![Action::Close, Action::Down("stopped".into())]
    );
    // Stopping a pending connect abandons it.
    let mut fsm = Fsm::new(config());
    fsm.handle(Event::Start, t0);
    assert_eq!(
        fsm.handle(Event::Stop(None), t0),
        vec![Action::AbortConnect]
    );
}

#[test]
fn collision_dump_sends_cease_collision() {
    let t0 = Instant::now();
    let mut fsm = Fsm::new(config());
    fsm.handle(Event::Accepted, t0);
    fsm.handle(Event::Received(Message::Open(peer_open(90))), t0);
    assert_eq!(
        fsm.handle(Event::CollisionDump, t0),
        vec![
            Action::Send(Message::Notification(Notification::cease(7))),
            Action::Close
        ]
    );
    assert!(fsm.is_stopped());
}

#[test]
fn route_refresh_only_for_negotiated_families() {
    let t0 = Instant::now();
    let mut fsm = established(t0);
    assert_eq!(
        fsm.handle(
            Event::Received(Message::RouteRefresh(Family::IPV4_UNICAST)),
            t0
        ),
        vec![Action::RouteRefresh(Family::IPV4_UNICAST)]
    );
    assert_eq!(
        fsm.handle(
            Event::Received(Message::RouteRefresh(Family::IPV6_UNICAST)),
            t0
        ),
        vec![]
    );
}

#[test]
fn hold_time_zero_runs_no_timers() {
    let t0 = Instant::now();
    let mut fsm = Fsm::new(config());
    fsm.handle(Event::Accepted, t0);
    fsm.handle(Event::Received(Message::Open(peer_open(0))), t0);
    fsm.handle(Event::Received(Message::Keepalive), t0);
    assert_eq!(fsm.state(), State::Established);
    assert_eq!(fsm.next_deadline(), None);
}

#[test]
fn backoff_resets_after_a_long_session_only() {
    let t0 = Instant::now();
    let mut fsm = established(t0);
    // Dropped at once: the next restarts back off.
    fsm.handle(Event::TcpFailed("reset".into()), t0);
    assert_eq!(fsm.next_deadline(), Some(t0 + S));
    fsm.poll_timers(t0 + S);
    fsm.handle(Event::Connected, t0 + S);
    fsm.handle(Event::Received(Message::Open(peer_open(30))), t0 + S);
    fsm.handle(Event::Received(Message::Keepalive), t0 + S);
    fsm.handle(Event::TcpFailed("reset".into()), t0 + 2 * S);
    assert_eq!(fsm.next_deadline(), Some(t0 + 4 * S));
    // Up for longer than the largest delay: back to the first delay.
    fsm.poll_timers(t0 + 4 * S);
    fsm.handle(Event::Connected, t0 + 4 * S);
    fsm.handle(Event::Received(Message::Open(peer_open(0))), t0 + 4 * S);
    fsm.handle(Event::Received(Message::Keepalive), t0 + 4 * S);
    fsm.handle(Event::TcpFailed("reset".into()), t0 + 100 * S);
    assert_eq!(fsm.next_deadline(), Some(t0 + 101 * S));
}

#[test]
fn negotiation() {
    let ours = our_open();
    // A peer with IPv6 and 2-octet ASNs only.
    let mut theirs = peer_open(180);
    theirs.capabilities = vec![Capability::Multiprotocol(Family::IPV6_UNICAST)];
    let n = negotiate(&ours, &theirs).unwrap();
    assert_eq!(n.hold_time, 90 * S);
    assert!(!n.codec.four_octet_as);
    assert_eq!(n.families, BTreeSet::from([Family::IPV6_UNICAST]));
    // No multiprotocol capability at all: IPv4 unicast.
    theirs.capabilities.clear();
    let n = negotiate(&ours, &theirs).unwrap();
    assert_eq!(n.families, BTreeSet::from([Family::IPV4_UNICAST]));
    assert_eq!(n.peer_graceful_restart(), None);
}

#[test]
fn collision_keeps_the_connection_of_the_higher_identifier() {
    let low = Ipv4Addr::new(10, 0, 0, 1);
    let high = Ipv4Addr::new(10, 0, 0, 2);
    assert_eq!(collision_loser(low, high), Direction::Outgoing);
    assert_eq!(collision_loser(high, low), Direction::Incoming);
    // Compared as numbers, not text.
    assert_eq!(
        collision_loser(Ipv4Addr::new(9, 0, 0, 0), Ipv4Addr::new(10, 0, 0, 0)),
        Direction::Outgoing
    );
}

#[test]
fn the_restart_bit_is_cleared_once_established() {
    let gr = |restarting| {
        Capability::GracefulRestart(GracefulRestart {
            restarting,
            notification: true,
            restart_time: 120,
            families: vec![(Family::IPV4_UNICAST, true)],
        })
    };
    let mut config = config();
    config.open.capabilities.push(gr(true));
    let t0 = Instant::now();
    let mut fsm = Fsm::new(config);
    fsm.handle(Event::Start, t0);
    let sent = fsm.handle(Event::Connected, t0);
    assert!(
        matches!(&sent[0], Action::Send(Message::Open(o)) if o.capabilities.contains(&gr(true)))
    );
    fsm.handle(Event::Received(Message::Open(peer_open(90))), t0);
    fsm.handle(Event::Received(Message::Keepalive), t0);
    fsm.handle(Event::TcpFailed("reset".into()), t0);
    fsm.poll_timers(t0 + S);
    let sent = fsm.handle(Event::Connected, t0 + S);
    assert!(
        matches!(&sent[0], Action::Send(Message::Open(o)) if o.capabilities.contains(&gr(false)))
    );
}
