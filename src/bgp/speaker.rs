//! The BGP speaker: one session per configured peer, the listening sockets,
//! and the desired announcements.
//!
//! The speaker is owned by the daemon's main thread. It turns the config
//! into the route set and each peer's settings, starts a session thread per
//! peer, and runs one accept thread per address in `bgp-local-ips` (port
//! `bgp-local-port`) that hands each incoming connection to its peer's
//! session (unknown sources are closed). On reload it restarts only the
//! sessions whose settings changed and hands every other session the new
//! route set; the session sends the difference.

use super::routes::{self, RouteSet};
use super::session::{Input, PeerSettings, SessionHandle};
use crate::config::{Config, GlobalConfig};
use crate::status::snapshot::SnapshotStore;
use crossbeam_channel::Sender;
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const LOG_TARGET: &str = "bgp";
/// How long a blocked accept waits before looking at the stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(250);
/// How long stopping waits for every session to withdraw and close.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// Peer address → the inbox of its session, shared with the accept threads.
type Dispatch = Arc<Mutex<BTreeMap<IpAddr, Sender<Input>>>>;

/// Brings the speaker in line with `config`: starts it, reconfigures it,
/// or stops it (withdrawing every route) when BGP is turned off. Sessions
/// report their state into `store` (status page and metrics).
pub(crate) fn reconcile(
    speaker: &mut Option<Speaker>,
    config: &Config,
    store: &Arc<SnapshotStore>,
) {
    match (speaker.as_mut(), config.global.bgp) {
        (Some(running), true) => running.reconfigure(config),
        (Some(_), false) => {
            log::info!(target: LOG_TARGET, "BGP turned off: withdrawing and closing every session");
            if let Some(running) = speaker.take() {
                running.stop_withdrawing();
            }
        }
        (None, true) => *speaker = Some(Speaker::start(config, store)),
        (None, false) => {}
    }
}

/// The running speaker.
pub(crate) struct Speaker {
    store: Arc<SnapshotStore>,
    routes: Arc<RouteSet>,
    sessions: BTreeMap<IpAddr, SessionHandle>,
    dispatch: Dispatch,
    listeners: Listeners,
}

impl Speaker {
    /// Starts a session per peer and the listeners.
    pub(crate) fn start(config: &Config, store: &Arc<SnapshotStore>) -> Speaker {
        let routes = Arc::new(routes::from_config(config));
        log_routes(&routes);
        let mut speaker = Speaker {
            store: Arc::clone(store),
            routes,
            sessions: BTreeMap::new(),
            dispatch: Arc::new(Mutex::new(BTreeMap::new())),
            listeners: Listeners::default(),
        };
        for settings in peer_settings(&config.global) {
            speaker.start_session(settings);
        }
        speaker.listeners = Listeners::start(listen_addrs(&config.global), &speaker.dispatch);
        speaker
    }

    fn start_session(&mut self, settings: PeerSettings) {
        let peer = settings.peer;
        match SessionHandle::spawn(settings, Arc::clone(&self.routes), Arc::clone(&self.store)) {
            Ok(handle) => {
                lock(&self.dispatch).insert(peer, handle.sender());
                self.sessions.insert(peer, handle);
            }
            Err(e) => {
                log::error!(target: LOG_TARGET, "peer {peer}: cannot start a session thread: {e}")
            }
        }
    }

    /// Applies a reloaded config: sessions whose settings changed are
    /// restarted, the others get the new routes.
    pub(crate) fn reconfigure(&mut self, config: &Config) {
        let wanted: BTreeMap<IpAddr, PeerSettings> = peer_settings(&config.global)
            .into_iter()
            .map(|s| (s.peer, s))
            .collect();
        let (keep, gone): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut self.sessions)
            .into_iter()
            .partition(|(peer, handle)| wanted.get(peer) == Some(&handle.settings));
        self.sessions = keep;
        {
            let mut dispatch = lock(&self.dispatch);
            for peer in gone.keys() {
                dispatch.remove(peer);
            }
        }
        // A removed peer gets its routes withdrawn; a changed one restarts
        // (gracefully, when graceful restart is on).
        let (changed, removed): (Vec<_>, Vec<_>) = gone
            .into_values()
            .partition(|handle| wanted.contains_key(&handle.settings.peer));
        for (sessions, restarting, what) in [
            (removed, false, "removed"),
            (changed, true, "settings changed"),
        ] {
            if sessions.is_empty() {
                continue;
            }
            let peers: Vec<String> = sessions
                .iter()
                .map(|h| h.settings.peer.to_string())
                .collect();
            log::info!(target: LOG_TARGET, "reload: closing the session(s) with {} ({what})", peers.join(", "));
            stop_sessions(sessions, restarting);
        }
        let routes = Arc::new(routes::from_config(config));
        if routes != self.routes {
            log_routes(&routes);
            self.routes = routes;
            for handle in self.sessions.values() {
                handle.set_routes(Arc::clone(&self.routes));
            }
        }
        for (peer, settings) in wanted {
            if !self.sessions.contains_key(&peer) {
                self.start_session(settings);
            }
        }
        let addrs = listen_addrs(&config.global);
        if addrs != self.listeners.addrs {
            std::mem::take(&mut self.listeners).stop();
            self.listeners = Listeners::start(addrs, &self.dispatch);
        }
    }

    /// rsbal is stopping (and will be back): withdraws the routes, or with
    /// graceful restart on leaves them with the peers; closes every session
    /// and the listeners; waits a few seconds at most.
    pub(crate) fn stop(self) {
        self.close_all(true);
    }

    /// BGP is turned off: withdraws the routes whatever graceful restart says.
    pub(crate) fn stop_withdrawing(self) {
        self.close_all(false);
    }

    fn close_all(mut self, restarting: bool) {
        std::mem::take(&mut self.listeners).stop();
        stop_sessions(
            std::mem::take(&mut self.sessions).into_values().collect(),
            restarting,
        );
    }
}

/// Stops sessions in parallel.
fn stop_sessions(sessions: Vec<SessionHandle>, restarting: bool) {
    let deadline = Instant::now() + STOP_TIMEOUT;
    let stopping: Vec<_> = sessions
        .into_iter()
        .map(|s| {
            let done = s.begin_stop(restarting);
            (s, done)
        })
        .collect();
    for (session, done) in stopping {
        session.join(&done, deadline);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn log_routes(routes: &RouteSet) {
    let list: Vec<String> = routes
        .iter()
        .map(|(ip, a)| format!("{ip} (next hop {}, MED {})", a.next_hop, a.med))
        .collect();
    log::info!(target: LOG_TARGET, "announcing {} service IP(s): {}", routes.len(),
        if list.is_empty() { "none".to_string() } else { list.join(", ") });
}

/// Each peer's settings from `[global]`.
pub(crate) fn peer_settings(global: &GlobalConfig) -> Vec<PeerSettings> {
    let Some(local_asn) = global.bgp_local_asn else {
        return Vec::new();
    };
    let bgp_id = router_id(global);
    let mut peers = global.bgp_peer_addresses.clone();
    peers.sort();
    peers.dedup();
    peers
        .into_iter()
        .map(|peer| PeerSettings {
            peer,
            port: global.bgp_peer_port,
            local_ip: global
                .bgp_local_ips
                .iter()
                .find(|ip| ip.is_ipv4() == peer.is_ipv4() && !ip.is_unspecified())
                .copied(),
            local_asn,
            bgp_id,
            graceful_restart: global.bgp_graceful_restart,
        })
        .collect()
}

/// The BGP identifier: the first IPv4 address in `bgp-local-ips`, else the
/// local address the system would use towards the first IPv4 peer (what
/// PyBal used), else `bgp-nexthop-ipv4`.
pub(crate) fn router_id(global: &GlobalConfig) -> Ipv4Addr {
    let configured = global.bgp_local_ips.iter().find_map(|ip| match ip {
        IpAddr::V4(v4) if !v4.is_unspecified() => Some(*v4),
        _ => None,
    });
    let towards_peer = || {
        let peer = global.bgp_peer_addresses.iter().find(|p| p.is_ipv4())?;
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
        socket.connect((*peer, global.bgp_peer_port)).ok()?;
        match socket.local_addr().ok()?.ip() {
            IpAddr::V4(v4) if !v4.is_unspecified() => Some(v4),
            _ => None,
        }
    };
    configured
        .or_else(towards_peer)
        .or(global.bgp_nexthop_ipv4)
        .unwrap_or_else(|| {
            log::warn!(target: LOG_TARGET, "no IPv4 address for the BGP identifier: set an IPv4 address in bgp-local-ips; using 0.0.0.1");
            Ipv4Addr::new(0, 0, 0, 1)
        })
}

/// `bgp-local-ips` on `bgp-local-port`; every address when none is given.
fn listen_addrs(global: &GlobalConfig) -> Vec<SocketAddr> {
    let ips = if global.bgp_local_ips.is_empty() {
        vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        ]
    } else {
        global.bgp_local_ips.clone()
    };
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, global.bgp_local_port))
        .collect()
}

/// The accept threads.
#[derive(Default)]
struct Listeners {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Listeners {
    fn start(addrs: Vec<SocketAddr>, dispatch: &Dispatch) -> Listeners {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for addr in &addrs {
            let listener = match bind(*addr) {
                Ok(l) => l,
                Err(e) => {
                    log::error!(target: LOG_TARGET, "cannot listen for BGP connections on {addr}: {e}; only outgoing connections will be made there");
                    continue;
                }
            };
            log::info!(target: LOG_TARGET, "listening for BGP connections on {addr}");
            let (stop, dispatch) = (Arc::clone(&stop), Arc::clone(dispatch));
            let spawned = thread::Builder::new()
                .name(format!("bgp-accept:{addr}"))
                .spawn(move || accept_loop(listener, &dispatch, &stop));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    log::error!(target: LOG_TARGET, "cannot start the BGP accept thread for {addr}: {e}")
                }
            }
        }
        Listeners {
            addrs,
            stop,
            threads,
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A listening socket whose `accept` wakes up every [`ACCEPT_POLL`].
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = crate::net::listen::listening_socket(addr, 16)?;
    socket.set_read_timeout(Some(ACCEPT_POLL))?;
    Ok(socket.into())
}

fn accept_loop(listener: TcpListener, dispatch: &Dispatch, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, from)) => {
                let peer = from.ip().to_canonical();
                let session = lock(dispatch).get(&peer).cloned();
                match session {
                    Some(tx) => {
                        log::info!(target: LOG_TARGET, "peer {peer}: incoming connection from {from}");
                        let _ = tx.send(Input::Incoming(stream));
                    }
                    None => {
                        log::warn!(target: LOG_TARGET, "refusing BGP connection from {from}: not a configured peer")
                    }
                }
            }
            Err(e) => match e.kind() {
                io::ErrorKind::WouldBlock
                | io::ErrorKind::TimedOut
                | io::ErrorKind::Interrupted
                | io::ErrorKind::ConnectionAborted => {}
                _ => {
                    log::warn!(target: LOG_TARGET, "accept failed: {e}");
                    thread::sleep(ACCEPT_POLL);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global() -> GlobalConfig {
        GlobalConfig {
            bgp: true,
            bgp_local_asn: Some(64600),
            bgp_peer_addresses: vec!["127.40.0.3".parse().unwrap(), "::1".parse().unwrap()],
            bgp_local_ips: vec!["::".parse().unwrap(), "127.40.0.1".parse().unwrap()],
            bgp_local_port: 1790,
            bgp_peer_port: 1791,
            bgp_graceful_restart: Some(120),
            ..GlobalConfig::default()
        }
    }

    #[test]
    fn peer_settings_pick_a_local_address_of_the_peer_family() {
        let peers = peer_settings(&global());
        assert_eq!(peers.len(), 2);
        let v4 = peers.iter().find(|p| p.peer.is_ipv4()).unwrap();
        assert_eq!(v4.local_ip, Some("127.40.0.1".parse().unwrap()));
        assert_eq!(v4.port, 1791);
        assert_eq!(v4.graceful_restart, Some(120));
        assert_eq!(v4.bgp_id, Ipv4Addr::new(127, 40, 0, 1));
        let v6 = peers.iter().find(|p| p.peer.is_ipv6()).unwrap();
        assert_eq!(v6.local_ip, None, "the unspecified address is no source");
    }

    #[test]
    fn router_id_falls_back_to_the_route_towards_the_peer_then_the_next_hop() {
        let mut g = global();
        g.bgp_local_ips.clear();
        // Loopback peers are reached from 127.0.0.1.
        assert_eq!(router_id(&g), Ipv4Addr::LOCALHOST);
        g.bgp_peer_addresses = vec!["::1".parse().unwrap()];
        g.bgp_nexthop_ipv4 = Some(Ipv4Addr::new(192, 0, 2, 254));
        assert_eq!(router_id(&g), Ipv4Addr::new(192, 0, 2, 254));
    }

    #[test]
    fn listens_everywhere_without_local_ips() {
        let mut g = global();
        assert_eq!(listen_addrs(&g).len(), 2);
        g.bgp_local_ips.clear();
        assert_eq!(
            listen_addrs(&g),
            vec![
                "0.0.0.0:1790".parse::<SocketAddr>().unwrap(),
                "[::]:1790".parse().unwrap()
            ]
        );
    }
}
