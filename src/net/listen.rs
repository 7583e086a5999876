//! Listening TCP sockets for rsbal's servers (instrumentation HTTP, BGP):
//! address reuse on, IPv6 sockets IPv6-only (so `::` and `0.0.0.0` can both
//! be configured), optionally `IP_FREEBIND` (an address not yet on the
//! host), bound and listening. Callers choose blocking behaviour.

use socket2::{Domain, Socket, Type};
use std::io;
use std::net::SocketAddr;

/// A socket bound to `addr` and listening with `backlog`.
pub(crate) fn listening_socket(addr: SocketAddr, backlog: i32) -> io::Result<Socket> {
    listening_socket_with(addr, backlog, false)
}

/// [`listening_socket`]; with `freebind` the address need not be
/// configured on the host yet.
pub(crate) fn listening_socket_with(
    addr: SocketAddr,
    backlog: i32,
    freebind: bool,
) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
        if freebind {
            socket.set_freebind_v6(true)?;
        }
    } else if freebind {
        socket.set_freebind_v4(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_and_accepts() {
        let socket = listening_socket("127.0.0.1:0".parse().unwrap(), 4).unwrap();
        let listener: std::net::TcpListener = socket.into();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        assert!(listener.accept().is_ok());
    }
}
