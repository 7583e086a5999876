//! The IpvsWriter thread.
