//! Waking a monitor blocked in `recv` on a UDP socket when it must stop.
//!
//! The UDP and DNSQuery monitors block in `recv` (until the next check, or
//! until a query's timeout). A [`SocketStop`] holds the socket they are
//! blocked on; its [`Waker`] (run when the monitor's handle is dropped) marks
//! the monitor stopped and shuts that socket down, which makes a blocked
//! `recv` return at once. The flag is set under the same lock the monitor
//! registers sockets with, so a socket registered after the stop is refused
//! rather than blocked on.

use super::Waker;
use std::net::{Shutdown, UdpSocket};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Default)]
struct Shared {
    stopped: bool,
    /// A clone of the socket the monitor blocks on.
    socket: Option<UdpSocket>,
}

/// The monitor's end: registers sockets and tells whether it must stop.
pub(crate) struct SocketStop {
    shared: Arc<Mutex<Shared>>,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SocketStop {
    /// A stop flag and the waker that sets it and wakes the socket.
    pub(crate) fn new() -> (SocketStop, Waker) {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let for_waker = Arc::clone(&shared);
        let waker: Waker = Box::new(move || {
            let mut shared = lock(&for_waker);
            shared.stopped = true;
            if let Some(socket) = shared.socket.take() {
                let _ = socket2::SockRef::from(&socket).shutdown(Shutdown::Both);
            }
        });
        (SocketStop { shared }, waker)
    }

    /// Makes `socket` the one a stop wakes. False when already stopped (the
    /// caller must not block on it) or when the socket cannot be cloned.
    pub(crate) fn watch(&self, socket: &UdpSocket) -> bool {
        let mut shared = lock(&self.shared);
        if shared.stopped {
            return false;
        }
        match socket.try_clone() {
            Ok(clone) => {
                shared.socket = Some(clone);
                true
            }
            Err(_) => false,
        }
    }

    /// Forgets the watched socket (so that closing the monitor's copy closes it).
    pub(crate) fn unwatch(&self) {
        lock(&self.shared).socket = None;
    }

    /// True once the waker ran.
    pub(crate) fn is_stopped(&self) -> bool {
        lock(&self.shared).stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn waker_ends_a_blocked_recv_and_refuses_later_sockets() {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.connect(peer.local_addr().unwrap()).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (stop, waker) = SocketStop::new();
        assert!(stop.watch(&socket));
        let started = Instant::now();
        let blocked = std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            let result = socket.recv(&mut buf).map_err(|e| e.kind());
            (result, stop)
        });
        std::thread::sleep(Duration::from_millis(100));
        waker();
        let (_, stop) = blocked.join().unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(stop.is_stopped());
        let other = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(!stop.watch(&other));
    }
}
