//! Sockets and TLS settings shared by several threads: listening sockets for
//! the HTTP and BGP servers ([`listen`]) and the trust roots of outgoing
//! HTTPS ([`tls`]).

pub(crate) mod listen;
pub(crate) mod tls;
