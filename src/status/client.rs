//! `rsbal status`: asks a running rsbal for its status document (`GET /`
//! with `Accept: application/json`) and prints its pools and servers, in the
//! spirit of `ipvsadm -Ln`.
//!
//! The exit code follows the monitoring-plugin convention, so the command
//! doubles as a Nagios/Icinga check: 0 all pools healthy, 1 warning,
//! 2 critical (the levels of `/alerts`), 3 UNKNOWN when rsbal cannot be
//! reached or answers something that is not a status document.

use crate::config;
use crate::daemon::cli::StatusOptions;
use crate::status::document::{format_time, ServerHealth, StatusDoc};
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Exit code when rsbal cannot be asked (monitoring-plugin UNKNOWN).
pub(crate) const UNKNOWN: i32 = 3;

/// Where rsbal listens when neither `--url` nor `-c` says.
pub(crate) const DEFAULT_URL: &str = "http://127.0.0.1:9090";

const TIMEOUT: Duration = Duration::from_secs(5);

/// Runs `rsbal status`; returns the exit code.
pub(crate) fn run(opts: &StatusOptions) -> i32 {
    let base = match base_url(opts) {
        Ok(url) => url,
        Err(e) => {
            println!("UNKNOWN - {e}");
            return UNKNOWN;
        }
    };
    let body = match fetch(&base) {
        Ok(body) => body,
        Err(e) => {
            println!("UNKNOWN - cannot get the status from rsbal at {base}: {e}");
            return UNKNOWN;
        }
    };
    let doc: StatusDoc = match serde_json::from_str(&body) {
        Ok(doc) => doc,
        Err(e) => {
            println!("UNKNOWN - {base}/ did not answer with an rsbal status document: {e}");
            return UNKNOWN;
        }
    };
    if opts.json {
        match serde_json::to_string_pretty(&doc) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                println!("UNKNOWN - cannot encode the status: {e}");
                return UNKNOWN;
            }
        }
    } else {
        print!("{}", render(&doc, &base));
    }
    doc.alert.status.exit_code()
}

/// The instrumentation server's base URL, without a trailing slash.
fn base_url(opts: &StatusOptions) -> Result<String, String> {
    if let Some(url) = &opts.url {
        let url = url.trim_end_matches('/');
        if !url.starts_with("http://") && !url.starts_with("https://") {
            return Err(format!("--url {url:?} is not an http:// URL"));
        }
        return Ok(url.to_string());
    }
    let Some(path) = &opts.config else {
        return Ok(DEFAULT_URL.to_string());
    };
    let loaded = config::load(path).map_err(|errors| {
        let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
        format!("cannot read {}: {first}", path.display())
    })?;
    let global = &loaded.config.global;
    let ip = global
        .instrumentation_ips
        .first()
        .copied()
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    // A wildcard listen address is reached on loopback.
    let ip = match ip {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    Ok(format!(
        "http://{}",
        SocketAddr::new(ip, global.instrumentation_port)
    ))
}

fn fetch(base: &str) -> Result<String, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("rsbal/", env!("CARGO_PKG_VERSION"), " status"))
        .build()
        .into();
    let mut response = agent
        .get(&format!("{base}/"))
        .header("Accept", "application/json")
        .call()
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(format!("HTTP status {status}"));
    }
    response
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())
}

/// The human-readable report: the alert line first (as monitoring plugins
/// print it), then one block per pool.
pub(crate) fn render(doc: &StatusDoc, base: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} - {}", doc.alert.status.upper(), doc.alert.msg);
    let reload = match &doc.last_reload {
        None => "none".to_string(),
        Some(r) => format!(
            "{} {} ({})",
            format_time(r.at),
            if r.ok { "applied" } else { "REJECTED" },
            r.message
        ),
    };
    let _ = writeln!(
        out,
        "rsbal {} at {base}, started {}, last reload: {reload}",
        doc.version,
        format_time(doc.started_at)
    );
    if doc.bgp.enabled {
        let sessions: Vec<String> = doc
            .bgp
            .sessions
            .iter()
            .map(|s| format!("{} {}", s.peer, s.state))
            .collect();
        let _ = writeln!(
            out,
            "BGP: {}",
            if sessions.is_empty() {
                "enabled, no session yet".to_string()
            } else {
                sessions.join(", ")
            }
        );
    }
    let _ = writeln!(
        out,
        "\nProt LocalAddress:Port            Scheduler Pool (threshold, can depool) Status"
    );
    let _ = writeln!(
        out,
        "  -> Server                         Weight  Enabled   Up            Pooled"
    );
    for pool in &doc.pools {
        let _ = writeln!(
            out,
            "{:<4} {:<29} {:<9} {} ({}, {}) {}",
            pool.protocol.to_uppercase(),
            pool.vip,
            pool.scheduler,
            pool.name,
            pool.depool_threshold,
            if pool.can_depool { "yes" } else { "no" },
            pool.status.upper()
        );
        for s in &pool.servers {
            let note = match s.health() {
                ServerHealth::DownButPooled => "  DOWN BUT POOLED",
                ServerHealth::Depooled => "  depooled",
                ServerHealth::Fine => "",
            };
            let reasons: Vec<String> = s
                .monitors
                .iter()
                .filter_map(|m| m.reason.as_ref().map(|r| format!("{}: {r}", m.name)))
                .collect();
            let reasons = if reasons.is_empty() {
                String::new()
            } else {
                format!("  ({})", reasons.join("; "))
            };
            let fields: Vec<&str> = s.status.split('/').collect();
            let (enabled, up, pooled) = match fields[..] {
                [e, u, p] => (e, u, p),
                _ => ("?", "?", "?"),
            };
            let row = format!(
                "  -> {:<30} {:<7} {:<9} {:<13} {pooled:<10}{note}{reasons}",
                crate::daemon::logging::escape_control(&s.host),
                s.weight,
                enabled,
                up
            );
            let _ = writeln!(out, "{}", row.trim_end());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::document::fixtures::doc;

    #[test]
    fn urls() {
        let opts = |url: Option<&str>| StatusOptions {
            url: url.map(String::from),
            ..Default::default()
        };
        assert_eq!(base_url(&opts(None)).unwrap(), DEFAULT_URL);
        assert_eq!(
            base_url(&opts(Some("http://10.0.0.1:9090/"))).unwrap(),
            "http://10.0.0.1:9090"
        );
        assert!(base_url(&opts(Some("10.0.0.1:9090"))).is_err());

        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("rsbal.conf");
        std::fs::write(
            &conf,
            "[global]\ninstrumentation = yes\ninstrumentation_port = 9191\ninstrumentation_ips = ['::']\n",
        )
        .unwrap();
        let from_conf = StatusOptions {
            config: Some(conf),
            ..Default::default()
        };
        assert_eq!(base_url(&from_conf).unwrap(), "http://[::1]:9191");
        let missing = StatusOptions {
            config: Some(dir.path().join("nope.conf")),
            ..Default::default()
        };
        assert!(base_url(&missing).unwrap_err().contains("nope.conf"));
    }

    #[test]
    fn table() {
        let text = render(&doc(), "http://127.0.0.1:9090");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "CRITICAL - web: Servers b are marked down but pooled"
        );
        assert!(lines[1].contains("last reload: "), "{text}");
        assert!(
            lines[1].contains("REJECTED (rejected: bad 'port')"),
            "{text}"
        );
        assert!(text.contains("BGP: 192.0.2.254 Established"), "{text}");
        assert!(text.contains("TCP  192.0.2.1:80"), "{text}");
        assert!(text.contains("web (0.5, no) CRITICAL"), "{text}");
        let row = |host: &str| {
            *lines
                .iter()
                .find(|l| l.contains(&format!("-> {host} ")))
                .unwrap()
        };
        assert!(row("a").ends_with("pooled"), "{text}");
        assert!(row("b").contains("DOWN BUT POOLED"), "{text}");
        assert!(
            row("b").contains("(ProxyFetch: HTTP status 500 <oops>)"),
            "{text}"
        );
        assert!(row("c").contains("not pooled  depooled"), "{text}");
        assert!(row("d&e").contains("disabled"), "{text}");
    }
}
