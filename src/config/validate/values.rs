//! Value parsers: the text of one value to a typed value, or the reason why
//! not.

use crate::config::pyliteral::{self, PyValue};
use crate::config::{ForwardingMethod, IpvsBackendKind, Protocol, SourceUrl, SCHEDULERS};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

/// Why the text of one value does not parse (the reason of a
/// [`ConfigError`](crate::config::ConfigError) on that key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ValueError {
    /// A quoted value or a list that is not a valid Python literal.
    Literal(pyliteral::Error),
    /// A quoted value that is a literal of this type, not one string.
    NotOneValue(&'static str),
    /// Not a list of strings; why the literal did not parse.
    NotAStrList(pyliteral::Error),
    /// `value` (as written) is not `what` (with the range or choices).
    Not {
        value: String,
        what: &'static str,
    },
    /// More seconds than any interval or timeout may have
    /// ([`MAX_SECONDS`]).
    TooLong(String),
    /// Not one of [`SCHEDULERS`].
    NotAScheduler(String),
    /// Port 0 where rsbal must connect.
    PortZero,
    /// Port 0 where rsbal listens (the kernel would pick any port).
    PortZeroListen,
    /// Port 0 as a service's port.
    PortZeroService,
    /// AS number 0 (reserved, RFC 7607).
    AsnZero,
    /// A duration below the key's floor.
    BelowFloor {
        value: String,
        floor: Duration,
    },
    EmptyPath,
    EmptyAsPath,
    /// `proxyfetch.url` names no URL.
    NoUrl,
    NotHttpUrl(String),
    NoHost(String),
    Whitespace(String),
    EmptyCommand,
    /// The command contains a NUL character.
    NulInCommand(String),
    /// This argument contains a NUL character.
    NulInArgument(String),
    /// A `server.…` identifier not in [`SERVER_IDENTIFIERS`].
    UnknownIdentifier(String),
    /// `dnsquery.hostnames` names no host.
    NoHostname,
    /// `name` is not a DNS name, for this reason.
    NotADnsName {
        name: String,
        why: &'static str,
    },
    /// A `config` URL of no known scheme.
    NotASourceUrl(String),
    /// A `file://` URL without a path.
    NoFile(String),
    /// An etcd URL without a key.
    NoEtcdKey(String),
    /// An etcd URL whose authority is not `host[:port]`.
    NotHostPort {
        url: String,
        authority: String,
    },
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ValueError::Literal(e) => write!(f, "{e}"),
            ValueError::NotOneValue(found) => write!(f, "expected one value, found a {found}"),
            ValueError::NotAStrList(why) => {
                write!(f, "not a Python list of strings like ['a', 'b']: {why}")
            }
            ValueError::Not { value, what } => write!(f, "{value:?} is not {what}"),
            ValueError::TooLong(value) => write!(
                f,
                "{value:?} seconds is too long (at most {MAX_SECONDS}, one day)"
            ),
            ValueError::NotAScheduler(value) => write!(
                f,
                "{value:?} is not an IPVS scheduler (one of: {})",
                SCHEDULERS.join(" ")
            ),
            ValueError::PortZero => f.write_str("port 0 cannot be connected to (1-65535)"),
            ValueError::PortZeroListen => {
                f.write_str("port 0 would listen on a random port (1-65535)")
            }
            ValueError::PortZeroService => f.write_str("port 0 is not a service port (1-65535)"),
            ValueError::AsnZero => f.write_str("AS number 0 is reserved (1-4294967295)"),
            ValueError::BelowFloor { value, floor } => write!(
                f,
                "{value:?} is too small: this key's floor is {} s",
                floor.as_secs_f64()
            ),
            ValueError::EmptyPath => f.write_str("empty path"),
            ValueError::EmptyAsPath => f.write_str("empty AS path"),
            ValueError::NoUrl => f.write_str("at least one URL is needed"),
            ValueError::NotHttpUrl(url) => write!(f, "{url:?} is not an http:// or https:// URL"),
            ValueError::NoHost(url) => write!(f, "{url:?} has no host"),
            ValueError::Whitespace(url) => write!(f, "{url:?} contains whitespace"),
            ValueError::EmptyCommand => f.write_str("empty command"),
            ValueError::NulInCommand(command) => {
                write!(f, "{command:?} contains a NUL character")
            }
            ValueError::NulInArgument(arg) => {
                write!(f, "argument {arg:?} contains a NUL character")
            }
            ValueError::UnknownIdentifier(token) => write!(
                f,
                "unknown identifier {token} (known: {})",
                SERVER_IDENTIFIERS.join(", ")
            ),
            ValueError::NoHostname => f.write_str("at least one host name is needed"),
            ValueError::NotADnsName { name, why } => {
                write!(f, "{name:?} is not a DNS name: {why}")
            }
            ValueError::NotASourceUrl(url) => write!(
                f,
                "{url:?} is not a server list URL (file:///path, http://…, https://…, etcd://host[:port]/key or etcd+http://host[:port]/key)"
            ),
            ValueError::NoFile(url) => write!(
                f,
                "{url:?} names no file; use file:///etc/pybal/pools/service"
            ),
            ValueError::NoEtcdKey(url) => {
                write!(f, "{url:?} has no key: use etcd://host[:port]/key")
            }
            ValueError::NotHostPort { url, authority } => {
                write!(f, "{url:?}: {authority:?} is not host or host:port")
            }
        }
    }
}

impl std::error::Error for ValueError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ValueError::Literal(e) | ValueError::NotAStrList(e) => Some(e),
            _ => None,
        }
    }
}

impl From<pyliteral::Error> for ValueError {
    fn from(e: pyliteral::Error) -> Self {
        ValueError::Literal(e)
    }
}

/// `value` is not `what`.
fn not(value: &str, what: &'static str) -> ValueError {
    ValueError::Not {
        value: value.to_string(),
        what,
    }
}

/// The identifiers `runcommand.arguments` may use, replaced per server when
/// the monitor starts (PyBal evaluated the list with `server` in scope).
pub(crate) const SERVER_IDENTIFIERS: &[&str] =
    &["server.host", "server.ip", "server.port", "server.weight"];

/// Default ETCD client port for `etcd://host/key`.
pub(super) const ETCD_DEFAULT_PORT: u16 = 2379;

/// The text of a scalar value: a quoted Python string is unquoted, anything
/// else is taken as written.
pub(super) fn scalar(text: &str) -> Result<String, ValueError> {
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
        other => Err(ValueError::NotOneValue(other.type_name())),
    }
}

pub(super) fn parse_boolean(text: &str) -> Result<bool, ValueError> {
    let value = scalar(text)?;
    pyliteral::parse_bool(&value)
        .ok_or_else(|| not(&value, "a boolean (yes/no, true/false, on/off, 1/0)"))
}

/// A scalar parsed with `FromStr`; the error says it is not `what`.
pub(super) fn parse_as<T: std::str::FromStr>(
    text: &str,
    what: &'static str,
) -> Result<T, ValueError> {
    let value = scalar(text)?;
    value.parse().map_err(|_| not(&value, what))
}

pub(super) fn parse_u32(text: &str) -> Result<u32, ValueError> {
    parse_as(text, "a whole number (0-4294967295)")
}

pub(super) fn parse_port(text: &str) -> Result<u16, ValueError> {
    parse_as(text, "a port number (0-65535)")
}

pub(super) fn parse_nonzero_port(text: &str) -> Result<u16, ValueError> {
    match parse_port(text)? {
        0 => Err(ValueError::PortZero),
        port => Ok(port),
    }
}

/// A port rsbal listens on; 0 (any port) is refused.
pub(super) fn parse_listen_port(text: &str) -> Result<u16, ValueError> {
    match parse_port(text)? {
        0 => Err(ValueError::PortZeroListen),
        port => Ok(port),
    }
}

/// A service's port, 1-65535.
pub(super) fn parse_service_port(text: &str) -> Result<u16, ValueError> {
    match parse_port(text)? {
        0 => Err(ValueError::PortZeroService),
        port => Ok(port),
    }
}

/// rsbal's own AS number, 1-4294967295.
pub(super) fn parse_asn(text: &str) -> Result<u32, ValueError> {
    match parse_u32(text)? {
        0 => Err(ValueError::AsnZero),
        asn => Ok(asn),
    }
}

/// `bgp-graceful-restart`: restart time in seconds, 0 = off; the capability
/// carries 12 bits.
pub(super) fn parse_restart_time(text: &str) -> Result<Option<u16>, ValueError> {
    let value = scalar(text)?;
    match value.parse::<u16>() {
        Ok(0) => Ok(None),
        Ok(secs) if secs <= 4095 => Ok(Some(secs)),
        _ => Err(not(&value, "a restart time in seconds (1-4095, 0 = off)")),
    }
}

pub(super) fn parse_http_status(text: &str) -> Result<u16, ValueError> {
    let value = scalar(text)?;
    value
        .parse()
        .ok()
        .filter(|status| (100..=599).contains(status))
        .ok_or_else(|| not(&value, "an HTTP status (100-599)"))
}

/// Seconds, int or float, finite, accepted by `allowed` (else the error
/// says it is not `what`) and at most [`MAX_SECONDS`].
pub(super) fn parse_seconds(
    text: &str,
    allowed: fn(f64) -> bool,
    what: &'static str,
) -> Result<Duration, ValueError> {
    let value = scalar(text)?;
    let secs = value
        .parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && allowed(*secs))
        .ok_or_else(|| not(&value, what))?;
    if secs > MAX_SECONDS {
        return Err(ValueError::TooLong(value));
    }
    Duration::try_from_secs_f64(secs).map_err(|_| not(&value, what))
}

/// The longest interval or timeout any key accepts, in seconds (one day):
/// longer ones are typing errors, and a deadline that far ahead could not
/// even be represented by the clock (`Instant + Duration` overflows).
pub(crate) const MAX_SECONDS: f64 = 86_400.0;

/// Seconds, int or float, greater than zero.
pub(super) fn parse_duration(text: &str) -> Result<Duration, ValueError> {
    parse_seconds(
        text,
        |secs| secs > 0.0,
        "a duration (seconds, a number greater than 0)",
    )
}

/// Seconds, int or float, zero or more (zero = off); when not zero, at
/// least [`MIN_RECONCILE_INTERVAL`].
pub(super) fn parse_interval_or_off(text: &str) -> Result<Duration, ValueError> {
    let secs = parse_seconds(text, |secs| secs >= 0.0, "a number of seconds (0 = off)")?;
    if secs.is_zero() {
        return Ok(secs);
    }
    at_least(text, secs, MIN_RECONCILE_INTERVAL)
}

/// Floor of every interval between checks, polls or reconnections: a
/// smaller one would keep a core busy and flood the log.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Floor of every timeout: no check or request answers faster.
pub(crate) const MIN_TIMEOUT: Duration = Duration::from_millis(100);
/// Floor of the TCP keepalive times, which the kernel counts in seconds.
pub(crate) const MIN_KEEPALIVE: Duration = Duration::from_secs(1);
/// Floor of `ipvs-reconcile-interval` when not 0: each round reads the
/// whole kernel table.
pub(crate) const MIN_RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

/// `secs` (parsed from `text`) unless it is below `floor`.
fn at_least(text: &str, secs: Duration, floor: Duration) -> Result<Duration, ValueError> {
    if secs < floor {
        Err(ValueError::BelowFloor {
            value: scalar(text)?,
            floor,
        })
    } else {
        Ok(secs)
    }
}

/// A duration (see [`parse_duration`]) of at least [`MIN_INTERVAL`].
pub(super) fn parse_interval(text: &str) -> Result<Duration, ValueError> {
    at_least(text, parse_duration(text)?, MIN_INTERVAL)
}

/// A duration (see [`parse_duration`]) of at least [`MIN_TIMEOUT`].
pub(super) fn parse_timeout(text: &str) -> Result<Duration, ValueError> {
    at_least(text, parse_duration(text)?, MIN_TIMEOUT)
}

/// A duration (see [`parse_duration`]) of at least [`MIN_KEEPALIVE`].
pub(super) fn parse_keepalive_time(text: &str) -> Result<Duration, ValueError> {
    at_least(text, parse_duration(text)?, MIN_KEEPALIVE)
}

/// One of `choices` (by keyword, any case); the error lists them as `what`.
pub(super) fn parse_keyword<T: Copy>(
    text: &str,
    choices: &[(&str, T)],
    what: &'static str,
) -> Result<T, ValueError> {
    let value = scalar(text)?;
    let lower = value.to_ascii_lowercase();
    choices
        .iter()
        .find(|(keyword, _)| *keyword == lower)
        .map(|(_, v)| *v)
        .ok_or_else(|| not(&value, what))
}

pub(super) fn parse_ipvs_backend(text: &str) -> Result<IpvsBackendKind, ValueError> {
    let choices = [
        ("netlink", IpvsBackendKind::Netlink),
        ("ipvsadm", IpvsBackendKind::Ipvsadm),
    ];
    parse_keyword(text, &choices, "an IPVS backend (netlink or ipvsadm)")
}

pub(super) fn parse_forwarding_method(text: &str) -> Result<ForwardingMethod, ValueError> {
    let choices = [
        ("dr", ForwardingMethod::Dr),
        ("nat", ForwardingMethod::Nat),
        ("tunnel", ForwardingMethod::Tunnel),
    ];
    parse_keyword(text, &choices, "a forwarding method (dr, nat or tunnel)")
}

pub(super) fn parse_threshold(text: &str) -> Result<f64, ValueError> {
    let value = scalar(text)?;
    value
        .parse::<f64>()
        .ok()
        .filter(|t| (0.0..=1.0).contains(t))
        .ok_or_else(|| not(&value, "a number between 0.0 and 1.0"))
}

pub(super) fn parse_protocol(text: &str) -> Result<Protocol, ValueError> {
    let choices = [("tcp", Protocol::Tcp), ("udp", Protocol::Udp)];
    parse_keyword(text, &choices, "a protocol (tcp or udp)")
}

pub(super) fn parse_scheduler(text: &str) -> Result<String, ValueError> {
    let value = scalar(text)?;
    let lower = value.to_ascii_lowercase();
    if SCHEDULERS.contains(&lower.as_str()) {
        Ok(lower)
    } else {
        Err(ValueError::NotAScheduler(value))
    }
}

pub(super) fn parse_ip(text: &str) -> Result<IpAddr, ValueError> {
    parse_as(text, "an IPv4 or IPv6 address")
}

pub(super) fn parse_ipv4(text: &str) -> Result<Ipv4Addr, ValueError> {
    parse_as(text, "an IPv4 address")
}

pub(super) fn parse_ipv6(text: &str) -> Result<Ipv6Addr, ValueError> {
    parse_as(text, "an IPv6 address")
}

pub(super) fn parse_path(text: &str) -> Result<PathBuf, ValueError> {
    let value = scalar(text)?;
    if value.is_empty() {
        return Err(ValueError::EmptyPath);
    }
    Ok(PathBuf::from(value))
}

/// Space-separated ASNs (`bgp-as-path = 64600 64601`).
pub(super) fn parse_as_path(text: &str) -> Result<Vec<u32>, ValueError> {
    let value = scalar(text)?;
    let path: Vec<u32> = value
        .split_whitespace()
        .map(|asn| {
            asn.parse()
                .map_err(|_| not(asn, "an AS number (0-4294967295)"))
        })
        .collect::<Result<_, _>>()?;
    if path.is_empty() {
        return Err(ValueError::EmptyAsPath);
    }
    Ok(path)
}

/// A Python list (or tuple) of strings, a quoted string, or one bare word
/// (`10.0.0.1`, `ProxyFetch`) as a one-element list. Empty = empty list.
pub(super) fn parse_str_list(text: &str) -> Result<Vec<String>, ValueError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(Vec::new());
    }
    match pyliteral::parse(text) {
        Ok(value) => Ok(value.as_str_list()?),
        Err(_) if is_bare_word(text) => Ok(vec![text.to_string()]),
        Err(why) => Err(ValueError::NotAStrList(why)),
    }
}

/// One token that cannot be mistaken for a list or a literal.
pub(super) fn is_bare_word(text: &str) -> bool {
    !text.is_empty()
        && !text.contains(|c: char| {
            c.is_whitespace() || matches!(c, ',' | '[' | ']' | '(' | ')' | '{' | '}' | '\'' | '"')
        })
}

pub(super) fn parse_ip_list(text: &str) -> Result<Vec<IpAddr>, ValueError> {
    parse_str_list(text)?
        .iter()
        .map(|ip| {
            ip.trim()
                .parse()
                .map_err(|_| not(ip, "an IPv4 or IPv6 address"))
        })
        .collect()
}

/// `proxyfetch.url`: one or more `http(s)://host/…` URLs.
pub(super) fn parse_urls(text: &str) -> Result<Vec<String>, ValueError> {
    let urls = parse_str_list(text)?;
    if urls.is_empty() {
        return Err(ValueError::NoUrl);
    }
    for url in &urls {
        check_http_url(url)?;
    }
    Ok(urls)
}

/// An `http://` or `https://` URL with a host.
pub(super) fn check_http_url(url: &str) -> Result<(), ValueError> {
    let rest = strip_scheme(url, "http://")
        .or_else(|| strip_scheme(url, "https://"))
        .ok_or_else(|| ValueError::NotHttpUrl(url.to_string()))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    if host.is_empty() || host.starts_with(':') {
        return Err(ValueError::NoHost(url.to_string()));
    }
    if url.contains(char::is_whitespace) {
        return Err(ValueError::Whitespace(url.to_string()));
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
pub(super) fn parse_command(text: &str) -> Result<String, ValueError> {
    let command = scalar(text)?;
    if command.is_empty() {
        return Err(ValueError::EmptyCommand);
    }
    if command.contains('\0') {
        return Err(ValueError::NulInCommand(command));
    }
    Ok(command)
}

/// `runcommand.arguments`: a Python list of strings in which the bare
/// identifiers of [`SERVER_IDENTIFIERS`] may also stand unquoted, as in
/// PyBal's `[ '--host', server.host ]`. They are kept as text and replaced
/// per server when the monitor starts.
pub(super) fn parse_arguments(text: &str) -> Result<Vec<String>, ValueError> {
    let trimmed = text.trim();
    if !trimmed.starts_with(['[', '(']) {
        return parse_str_list(trimmed);
    }
    let arguments = parse_str_list(&quote_server_identifiers(trimmed)?)?;
    if let Some(bad) = arguments.iter().find(|a| a.contains('\0')) {
        return Err(ValueError::NulInArgument(bad.clone()));
    }
    Ok(arguments)
}

/// `text` with every bare [`SERVER_IDENTIFIERS`] outside string literals put
/// in quotes; an unknown `server.…` identifier is an error.
pub(super) fn quote_server_identifiers(text: &str) -> Result<String, ValueError> {
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
                return Err(ValueError::UnknownIdentifier(token.to_string()));
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
pub(super) fn parse_hostnames(text: &str) -> Result<Vec<String>, ValueError> {
    let names = parse_str_list(text)?;
    if names.is_empty() {
        return Err(ValueError::NoHostname);
    }
    names.iter().map(|name| check_dns_name(name)).collect()
}

/// A DNS name: labels of 1-63 bytes, at most 253 bytes, no white space; a
/// trailing dot is dropped.
pub(super) fn check_dns_name(name: &str) -> Result<String, ValueError> {
    let bare = name.trim().strip_suffix('.').unwrap_or(name.trim());
    let bad = |why| {
        Err(ValueError::NotADnsName {
            name: name.to_string(),
            why,
        })
    };
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
pub(super) fn parse_source(text: &str) -> Result<SourceUrl, ValueError> {
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
    Err(ValueError::NotASourceUrl(url))
}

/// `file:///abs/path`, or (beyond PyBal) `file://relative/path`, which
/// [`resolve_relative_sources`](super::checks::resolve_relative_sources) later anchors at the config file's directory.
pub(super) fn parse_file_source(url: &str, path: &str) -> Result<SourceUrl, ValueError> {
    if path.is_empty() || path == "/" {
        return Err(ValueError::NoFile(url.to_string()));
    }
    Ok(SourceUrl::File(PathBuf::from(path)))
}

/// `etcd://host[:port]/key` (HTTPS) or `etcd+http://…` (plain, `tls`
/// false); the key keeps its leading `/`.
pub(super) fn parse_etcd_source(url: &str, rest: &str, tls: bool) -> Result<SourceUrl, ValueError> {
    let (authority, key) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if key.len() < 2 {
        return Err(ValueError::NoEtcdKey(url.to_string()));
    }
    let (host, port) = split_host_port(authority).ok_or_else(|| ValueError::NotHostPort {
        url: url.to_string(),
        authority: authority.to_string(),
    })?;
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
