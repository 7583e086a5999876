//! Expected `ipvsadm` lines and legacy server-list text, for tests whose
//! services listen on [`PORT`].

/// The service (and real server) port of these helpers.
pub const PORT: u16 = 8080;

/// A legacy server list: one `{ 'host': …, 'weight': …, 'enabled': … }` line
/// per `(host, weight, enabled)`.
pub fn legacy_list(list: &[(&str, u32, bool)]) -> String {
    list.iter()
        .map(|(host, weight, enabled)| {
            let enabled = if *enabled { "True" } else { "False" };
            format!("{{ 'host': '{host}', 'weight': {weight}, 'enabled': {enabled} }}\n")
        })
        .collect()
}

/// `-a`: real server `rip` pooled with weight `w`.
pub fn add(vip: &str, rip: &str, w: u32) -> String {
    format!("-a -t {vip}:{PORT} -r {rip}:{PORT} -w {w}")
}

/// `-d`: real server `rip` depooled.
pub fn del(vip: &str, rip: &str) -> String {
    format!("-d -t {vip}:{PORT} -r {rip}:{PORT}")
}

/// `-e`: weight of `rip` changed to `w`.
pub fn edit(vip: &str, rip: &str, w: u32) -> String {
    format!("-e -t {vip}:{PORT} -r {rip}:{PORT} -w {w}")
}
