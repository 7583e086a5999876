//! Sockets and TLS settings shared by several threads: listening sockets for
//! the HTTP and BGP servers ([`listen`]) and the trust roots of outgoing
//! HTTPS ([`tls`]).

pub mod listen;
pub mod tls;
