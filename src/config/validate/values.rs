//! Value parsers: the text of one value to a typed value, or the reason why
//! not.

use crate::config::pyliteral::{self, PyValue};
use crate::config::{ForwardingMethod, IpvsBackendKind, Protocol, SourceUrl, SCHEDULERS};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

/// The identifiers `runcommand.arguments` may use, replaced per server when
/// the monitor starts (PyBal evaluated the list with `server` in scope).
pub(crate) const SERVER_IDENTIFIERS: &[&str] =
    &["server.host", "server.ip", "server.port", "server.weight"];

/// Default ETCD client port for `etcd://host/key`.
pub(super) const ETCD_DEFAULT_PORT: u16 = 2379;

/// The text of a scalar value: a quoted Python string is unquoted, anything
/// else is taken as written.
pub(super) fn scalar(text: &str) -> Result<String, String> {
    let text = text.trim();
    let quoted = text.starts_with(['\'', '"'])
        || (text.len() > 1
            && text.starts_with(['u', 'U', 'r', 'R', 'b', 'B'])
            && text
                .get(1..)
                .is_some_and(|rest| rest.starts_with(['\'', '"'])));
    if !quoted {
        return Ok(text.to_string());
    }
    match pyliteral::parse(text)? {
        PyValue::Str(s) => Ok(s.trim().to_string()),
        other => Err(format!("expected one value, found a {}", other.type_name())),
    }
}

pub(super) fn parse_boolean(text: &str) -> Result<bool, String> {
    let value = scalar(text)?;
    pyliteral::parse_bool(&value)
        .ok_or_else(|| format!("{value:?} is not a boolean (yes/no, true/false, on/off, 1/0)"))
}

/// A scalar parsed with `FromStr`; the error says it is not `what`.
pub(super) fn parse_as<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
    let value = scalar(text)?;
    value
        .parse()
        .map_err(|_| format!("{value:?} is not {what}"))
}

pub(super) fn parse_u32(text: &str) -> Result<u32, String> {
    parse_as(text, "a whole number (0-4294967295)")
}

pub(super) fn parse_port(text: &str) -> Result<u16, String> {
    parse_as(text, "a port number (0-65535)")
}

pub(super) fn parse_nonzero_port(text: &str) -> Result<u16, String> {
    match parse_port(text)? {
        0 => Err("port 0 cannot be connected to (1-65535)".to_string()),
        port => Ok(port),
    }
}

/// `bgp-graceful-restart`: restart time in seconds, 0 = off; the capability
/// carries 12 bits.
pub(super) fn parse_restart_time(text: &str) -> Result<Option<u16>, String> {
    let value = scalar(text)?;
    match value.parse::<u16>() {
        Ok(0) => Ok(None),
        Ok(secs) if secs <= 4095 => Ok(Some(secs)),
        _ => Err(format!(
            "{value:?} is not a restart time in seconds (1-4095, 0 = off)"
        )),
    }
}

pub(super) fn parse_http_status(text: &str) -> Result<u16, String> {
    let value = scalar(text)?;
    value
        .parse()
        .ok()
        .filter(|status| (100..=599).contains(status))
        .ok_or_else(|| format!("{value:?} is not an HTTP status (100-599)"))
}

/// Seconds, int or float, finite and accepted by `allowed`; the error says
/// it is not `what`.
pub(super) fn parse_seconds(
    text: &str,
    allowed: fn(f64) -> bool,
    what: &str,
) -> Result<Duration, String> {
    let value = scalar(text)?;
    value
        .parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && allowed(*secs))
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("{value:?} is not {what}"))
}

/// Seconds, int or float, greater than zero.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    parse_seconds(
        text,
        |secs| secs > 0.0,
        "a duration (seconds, a number greater than 0)",
    )
}

/// Seconds, int or float, zero or more (zero = off).
pub(super) fn parse_interval_or_off(text: &str) -> Result<Duration, String> {
    parse_seconds(text, |secs| secs >= 0.0, "a number of seconds (0 = off)")
}

/// One of `choices` (by keyword, any case); the error lists them as `what`.
pub(super) fn parse_keyword<T: Copy>(
    text: &str,
    choices: &[(&str, T)],
    what: &str,
) -> Result<T, String> {
    let value = scalar(text)?;
    let lower = value.to_ascii_lowercase();
    choices
        .iter()
        .find(|(keyword, _)| *keyword == lower)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("{value:?} is not {what}"))
}

pub(super) fn parse_ipvs_backend(text: &str) -> Result<IpvsBackendKind, String> {
    let choices = [
        ("netlink", IpvsBackendKind::Netlink),
        ("ipvsadm", IpvsBackendKind::Ipvsadm),
    ];
    parse_keyword(text, &choices, "an IPVS backend (netlink or ipvsadm)")
}

pub(super) fn parse_forwarding_method(text: &str) -> Result<ForwardingMethod, String> {
    let choices = [
        ("dr", ForwardingMethod::Dr),
        ("nat", ForwardingMethod::Nat),
        ("tunnel", ForwardingMethod::Tunnel),
    ];
    parse_keyword(text, &choices, "a forwarding method (dr, nat or tunnel)")
}

pub(super) fn parse_threshold(text: &str) -> Result<f64, String> {
    let value = scalar(text)?;
    value
        .parse::<f64>()
        .ok()
        .filter(|t| (0.0..=1.0).contains(t))
        .ok_or_else(|| format!("{value:?} is not a number between 0.0 and 1.0"))
}

pub(super) fn parse_protocol(text: &str) -> Result<Protocol, String> {
    let choices = [("tcp", Protocol::Tcp), ("udp", Protocol::Udp)];
    parse_keyword(text, &choices, "a protocol (tcp or udp)")
}

pub(super) fn parse_scheduler(text: &str) -> Result<String, String> {
    let value = scalar(text)?;
    let lower = value.to_ascii_lowercase();
    if SCHEDULERS.contains(&lower.as_str()) {
        Ok(lower)
    } else {
        Err(format!(
            "{value:?} is not an IPVS scheduler (one of: {})",
            SCHEDULERS.join(" ")
        ))
    }
}

pub(super) fn parse_ip(text: &str) -> Result<IpAddr, String> {
    parse_as(text, "an IPv4 or IPv6 address")
}

pub(super) fn parse_ipv4(text: &str) -> Result<Ipv4Addr, String> {
    parse_as(text, "an IPv4 address")
}

pub(super) fn parse_ipv6(text: &str) -> Result<Ipv6Addr, String> {
    parse_as(text, "an IPv6 address")
}

pub(super) fn parse_path(text: &str) -> Result<PathBuf, String> {
    let value = scalar(text)?;
    if value.is_empty() {
        return Err("empty path".to_string());
    }
    Ok(PathBuf::from(value))
}

/// Space-separated ASNs (`bgp-as-path = 64600 64601`).
pub(super) fn parse_as_path(text: &str) -> Result<Vec<u32>, String> {
    let value = scalar(text)?;
    let path: Vec<u32> = value
        .split_whitespace()
        .map(|asn| {
            asn.parse()
                .map_err(|_| format!("{asn:?} is not an AS number (0-4294967295)"))
        })
        .collect::<Result<_, _>>()?;
    if path.is_empty() {
        return Err("empty AS path".to_string());
    }
    Ok(path)
}

/// A Python list (or tuple) of strings, a quoted string, or one bare word
/// (`10.0.0.1`, `ProxyFetch`) as a one-element list. Empty = empty list.
pub(super) fn parse_str_list(text: &str) -> Result<Vec<String>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    match pyliteral::parse(text) {
        Ok(value) => value.as_str_list(),
        Err(_) if is_bare_word(text) => Ok(vec![text.to_string()]),
        Err(why) => Err(format!(
            "not a Python list of strings like ['a', 'b']: {why}"
        )),
    }
}

/// One token that cannot be mistaken for a list or a literal.
pub(super) fn is_bare_word(text: &str) -> bool {
    !text.is_empty()
        && !text.contains(|c: char| {
            c.is_whitespace() || matches!(c, ',' | '[' | ']' | '(' | ')' | '{' | '}' | '\'' | '"')
        })
}

pub(super) fn parse_ip_list(text: &str) -> Result<Vec<IpAddr>, String> {
    parse_str_list(text)?
        .iter()
        .map(|ip| {
            ip.trim()
                .parse()
                .map_err(|_| format!("{ip:?} is not an IPv4 or IPv6 address"))
        })
        .collect()
}

/// `proxyfetch.url`: one or more `http(s)://host/…` URLs.
pub(super) fn parse_urls(text: &str) -> Result<Vec<String>, String> {
    let urls = parse_str_list(text)?;
    if urls.is_empty() {
        return Err("at least one URL is needed".to_string());
    }
    for url in &urls {
        check_http_url(url)?;
    }
    Ok(urls)
}

/// An `http://` or `https://` URL with a host.
pub(super) fn check_http_url(url: &str) -> Result<(), String> {
    let rest = strip_scheme(url, "http://")
        .or_else(|| strip_scheme(url, "https://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("{url:?} has no host"));
    }
    if url.contains(char::is_whitespace) {
        return Err(format!("{url:?} contains whitespace"));
    }
    Ok(())
}

/// `url` without `scheme` (matched case-insensitively).
pub(super) fn strip_scheme<'u>(url: &'u str, scheme: &str) -> Option<&'u str> {
    let head = url.get(..scheme.len())?;
    head.eq_ignore_ascii_case(scheme)
        .then(|| url.get(scheme.len()..))
        .flatten()
}

/// `runcommand.command`: the program to run (a path or a name looked up in
/// the command's `PATH`).
pub(super) fn parse_command(text: &str) -> Result<String, String> {
    let command = scalar(text)?;
    if command.is_empty() {
        return Err("empty command".to_string());
    }
    if command.contains('\0') {
        return Err(format!("{command:?} contains a NUL character"));
    }
    Ok(command)
}

/// `runcommand.arguments`: a Python list of strings in which the bare
/// identifiers of [`SERVER_IDENTIFIERS`] may also stand unquoted, as in
/// PyBal's `[ '--host', server.host ]`. They are kept as text and replaced
/// per server when the monitor starts.
pub(super) fn parse_arguments(text: &str) -> Result<Vec<String>, String> {
    let trimmed = text.trim();
    if !trimmed.starts_with(['[', '(']) {
        return parse_str_list(trimmed);
    }
    let arguments = parse_str_list(&quote_server_identifiers(trimmed)?)?;
    if let Some(bad) = arguments.iter().find(|a| a.contains('\0')) {
        return Err(format!("argument {bad:?} contains a NUL character"));
    }
    Ok(arguments)
}

/// `text` with every bare [`SERVER_IDENTIFIERS`] outside string literals put
/// in quotes; an unknown `server.…` identifier is an error.
pub(super) fn quote_server_identifiers(text: &str) -> Result<String, String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    let mut out = String::with_capacity(text.len() + 8);
    let mut quote: Option<char> = None;
    let mut chars = text.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' {
                if let Some((_, escaped)) = chars.next() {
                    out.push(escaped);
                }
            } else if c == q {
                quote = None;
            }
        } else if c == '\'' || c == '"' {
            quote = Some(c);
            out.push(c);
        } else if c.is_ascii_alphabetic() || c == '_' {
            let mut end = start + c.len_utf8();
            while let Some(&(at, next)) = chars.peek() {
                if !is_ident(next) {
                    break;
                }
                end = at + next.len_utf8();
                chars.next();
            }
            let token = &text[start..end];
            if SERVER_IDENTIFIERS.contains(&token) {
                out.push('\'');
                out.push_str(token);
                out.push('\'');
            } else if token.starts_with("server.") {
                return Err(format!(
                    "unknown identifier {token} (known: {})",
                    SERVER_IDENTIFIERS.join(", ")
                ));
            } else {
                out.push_str(token);
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// `dnsquery.hostnames`: one or more DNS names.
pub(super) fn parse_hostnames(text: &str) -> Result<Vec<String>, String> {
    let names = parse_str_list(text)?;
    if names.is_empty() {
        return Err("at least one host name is needed".to_string());
    }
    names.iter().map(|name| check_dns_name(name)).collect()
}

/// A DNS name: labels of 1-63 bytes, at most 253 bytes, no white space; a
/// trailing dot is dropped.
pub(super) fn check_dns_name(name: &str) -> Result<String, String> {
    let bare = name.trim().strip_suffix('.').unwrap_or(name.trim());
    let bad = |why: &str| Err(format!("{name:?} is not a DNS name: {why}"));
    if bare.is_empty() {
        return bad("empty");
    }
    if bare.len() > 253 {
        return bad("longer than 253 characters");
    }
    if bare.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return bad("contains white space");
    }
    if bare
        .split('.')
        .any(|label| label.is_empty() || label.len() > 63)
    {
        return bad("each dot-separated label must have 1 to 63 characters");
    }
    Ok(bare.to_string())
}

/// `config = …`: where the server list comes from.
pub(super) fn parse_source(text: &str) -> Result<SourceUrl, String> {
    let url = scalar(text)?;
    if let Some(path) = strip_scheme(&url, "file://") {
        return parse_file_source(&url, path);
    }
    if let Some(rest) =
        strip_scheme(&url, "etcd://").or_else(|| strip_scheme(&url, "etcd+https://"))
    {
        return parse_etcd_source(&url, rest, true);
    }
    if let Some(rest) = strip_scheme(&url, "etcd+http://") {
        return parse_etcd_source(&url, rest, false);
    }
    if strip_scheme(&url, "http://").is_some() || strip_scheme(&url, "https://").is_some() {
        check_http_url(&url)?;
        return Ok(SourceUrl::Http(url));
    }
    Err(format!(
        "{url:?} is not a server list URL (file:///path, http://…, https://…, etcd://host[:port]/key or etcd+http://host[:port]/key)"
    ))
}

/// `file:///abs/path`, or (beyond PyBal) `file://relative/path`, which
/// [`resolve_relative_sources`] later anchors at the config file's directory.
pub(super) fn parse_file_source(url: &str, path: &str) -> Result<SourceUrl, String> {
    if path.is_empty() || path == "/" {
        return Err(format!(
            "{url:?} names no file; use file:///etc/pybal/pools/service"
        ));
    }
    Ok(SourceUrl::File(PathBuf::from(path)))
}

/// `etcd://host[:port]/key` (HTTPS) or `etcd+http://…` (plain, `tls`
/// false); the key keeps its leading `/`.
pub(super) fn parse_etcd_source(url: &str, rest: &str, tls: bool) -> Result<SourceUrl, String> {
    let (authority, key) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if key.len() < 2 {
        return Err(format!("{url:?} has no key: use etcd://host[:port]/key"));
    }
    let (host, port) = split_host_port(authority)
        .ok_or_else(|| format!("{url:?}: {authority:?} is not host or host:port"))?;
    Ok(SourceUrl::Etcd {
        host,
        port: port.unwrap_or(ETCD_DEFAULT_PORT),
        key: key.to_string(),
        tls,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
pub(super) fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':')?),
        };
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(port) => Some(port.parse().ok()?),
        None => None,
    };
    Some((host.to_string(), port))
}
