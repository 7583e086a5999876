//! The HTML status page served on `/` (pure): one table per pool, colour for
//! servers that are down but pooled and for depooled ones, the depool
//! threshold, BGP sessions and the last reload.
//!
//! Server-rendered and self-contained: no script, no external resource
//! (works offline and behind any proxy), a meta refresh every
//! [`REFRESH_SECS`] seconds, a viewport meta and tables that scroll sideways
//! on a phone. Every string from the config, the server lists or the
//! monitors is HTML-escaped.

use crate::status::alerts::Level;
use crate::status::document::{format_time, PoolDoc, ServerDoc, ServerHealth, StatusDoc};
use std::fmt::Write;

/// Seconds between automatic reloads of the page.
pub(crate) const REFRESH_SECS: u32 = 10;

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
:root{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;color:#1d2125;background:#f6f7f9}
body{margin:0 auto;max-width:72rem;padding:.75rem}
h1{font-size:1.4rem;margin:.2rem 0 .6rem}
h2{font-size:1.15rem;margin:0 0 .3rem;display:flex;gap:.5rem;align-items:center;flex-wrap:wrap}
section{background:#fff;border:1px solid #d8dde3;border-radius:6px;padding:.75rem;margin:.75rem 0}
.banner{padding:.6rem .8rem;border-radius:6px;font-weight:600;margin:.5rem 0}
.banner.ok{background:#dff3e4;color:#14532d}
.banner.warning{background:#fff1c2;color:#713f12}
.banner.critical{background:#fcdcdc;color:#7f1d1d}
.badge{font-size:.75rem;padding:.1rem .45rem;border-radius:999px;font-weight:600}
.badge.ok{background:#dff3e4;color:#14532d}
.badge.warning{background:#fff1c2;color:#713f12}
.badge.critical{background:#fcdcdc;color:#7f1d1d}
.meta{color:#4b5563;font-size:.9rem;margin:.2rem 0 .5rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.15rem .8rem;margin:.3rem 0;font-size:.9rem}
dl.facts dt{color:#4b5563}
dl.facts dd{margin:0;overflow-wrap:anywhere}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid #e5e7eb;white-space:nowrap}
th{background:#eef1f4;font-weight:600}
td.num{text-align:right}
tr.down-pooled td{background:#fcdcdc}
tr.depooled td{background:#fff1c2}
tr.disabled td{color:#6b7280}
.yes{color:#166534;font-weight:600}
.no{color:#991b1b;font-weight:600}
.reason{color:#6b7280;white-space:normal;font-size:.8rem}
.legend{font-size:.85rem;color:#4b5563}
.swatch{display:inline-block;width:.8rem;height:.8rem;border:1px solid #9ca3af;vertical-align:middle;margin:0 .25rem 0 .6rem}
@media (max-width:40rem){body{padding:.4rem}th,td{padding:.25rem .35rem;font-size:.8rem}h1{font-size:1.2rem}}
";

fn level_class(level: Level) -> &'static str {
    level.lower()
}

fn yes_no(value: bool, yes: &str, no: &str) -> String {
    if value {
        format!("<span class=\"yes\">{yes}</span>")
    } else {
        format!("<span class=\"no\">{no}</span>")
    }
}

/// The whole page.
pub(crate) fn render(doc: &StatusDoc) -> String {
    let mut h = String::with_capacity(4096 + doc.pools.len() * 2048);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\n\
         <title>rsbal: {}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        doc.alert.status.upper()
    );
    let _ = writeln!(h, "<h1>rsbal {}</h1>", escape(&doc.version));
    let _ = writeln!(
        h,
        "<div class=\"banner {}\" id=\"alert\">{} - {}</div>",
        level_class(doc.alert.status),
        doc.alert.status.upper(),
        escape(&doc.alert.msg)
    );
    daemon_facts(&mut h, doc);
    for pool in &doc.pools {
        pool_section(&mut h, pool);
    }
    if doc.pools.is_empty() {
        h.push_str("<section><p>No pools are configured.</p></section>\n");
    }
    bgp_section(&mut h, doc);
    h.push_str(
        "<p class=\"legend\">Rows:<span class=\"swatch\" style=\"background:#fcdcdc\"></span>down but pooled \
         (the depool threshold keeps it in)<span class=\"swatch\" style=\"background:#fff1c2\"></span>enabled but \
         not pooled<span class=\"swatch\" style=\"background:#fff\"></span>as intended.</p>\n",
    );
    let _ = write!(
        h,
        "<p class=\"legend\">Generated {}; this page reloads every {REFRESH_SECS} s. \
         The same data as JSON: <code>curl -H 'Accept: application/json' …/</code>; \
         also <a href=\"/alerts\">/alerts</a>, <a href=\"/metrics\">/metrics</a>, \
         <a href=\"/pools\">/pools</a>.</p>\n</body>\n</html>\n",
        format_time(doc.generated_at)
    );
    h
}

fn daemon_facts(h: &mut String, doc: &StatusDoc) {
    h.push_str("<dl class=\"facts\">\n");
    let _ = writeln!(
        h,
        "<dt>Started</dt><dd>{}</dd>",
        format_time(doc.started_at)
    );
    let _ = writeln!(h, "<dt>Config</dt><dd>{}</dd>", escape(&doc.config));
    let reload = match &doc.last_reload {
        None => "none since start".to_string(),
        Some(r) => format!(
            "{} — {}: {}",
            format_time(r.at),
            yes_no(r.ok, "applied", "rejected"),
            escape(&r.message)
        ),
    };
    let _ = writeln!(
        h,
        "<dt>Last reload</dt><dd id=\"last-reload\">{reload}</dd>"
    );
    h.push_str("</dl>\n");
}

fn pool_section(h: &mut String, pool: &PoolDoc) {
    let _ = writeln!(
        h,
        "<section class=\"pool\" id=\"pool-{}\">",
        escape(&pool.name)
    );
    let _ = writeln!(
        h,
        "<h2>{} <span class=\"badge {}\">{}</span></h2>",
        escape(&pool.name),
        level_class(pool.status),
        pool.status.upper()
    );
    let up = pool.servers.iter().filter(|s| s.up).count();
    let pooled = pool.servers.iter().filter(|s| s.pooled).count();
    let _ = writeln!(
        h,
        "<p class=\"meta\">{} {} · {} · {} server(s), {up} up, {pooled} pooled · \
         depool threshold {} · another depool allowed: {} · monitors: {}</p>",
        escape(&pool.protocol),
        escape(&pool.vip),
        escape(&pool.scheduler),
        pool.servers.len(),
        pool.depool_threshold,
        yes_no(pool.can_depool, "yes", "no"),
        if pool.monitors.is_empty() {
            "none".to_string()
        } else {
            escape(&pool.monitors.join(", "))
        }
    );
    if !pool.msg.is_empty() {
        let _ = writeln!(h, "<p class=\"meta\">{}</p>", escape(pool.msg.trim_end()));
    }
    if let Some(why) = &pool.ipvs_out_of_sync {
        let _ = writeln!(
            h,
            "<p class=\"banner warning\" id=\"ipvs-out-of-sync-{}\">IPVS out of sync: the kernel's table \
             does not have what this pool wants ({}); retrying.</p>",
            escape(&pool.name),
            escape(why)
        );
    }
    h.push_str(
        "<div class=\"scroll\"><table>\n<thead><tr><th>Server</th><th>Enabled</th><th>Up</th>\
         <th>Pooled</th><th>Weight</th><th>Address</th><th>Monitors</th></tr></thead>\n<tbody>\n",
    );
    for server in &pool.servers {
        server_row(h, server);
    }
    if pool.servers.is_empty() {
        h.push_str("<tr><td colspan=\"7\">no servers</td></tr>\n");
    }
    h.push_str("</tbody></table></div>\n</section>\n");
}

fn server_row(h: &mut String, s: &ServerDoc) {
    let mut classes = vec![match s.health() {
        ServerHealth::DownButPooled => "down-pooled",
        ServerHealth::Depooled => "depooled",
        ServerHealth::Fine => "fine",
    }];
    if !s.enabled {
        classes.push("disabled");
    }
    let monitors: Vec<String> = s
        .monitors
        .iter()
        .map(|m| {
            let state = match m.up {
                Some(true) => "<span class=\"yes\">up</span>".to_string(),
                Some(false) => "<span class=\"no\">down</span>".to_string(),
                None => "unknown".to_string(),
            };
            let reason = m
                .reason
                .as_deref()
                .map(|r| format!(" <span class=\"reason\">{}</span>", escape(r)))
                .unwrap_or_default();
            format!("{} {state}{reason}", escape(&m.name))
        })
        .collect();
    // A disabled server out of the pool is as intended: no alarm colour.
    let pooled = if s.enabled || s.pooled {
        yes_no(s.pooled, "pooled", "not pooled")
    } else {
        "not pooled".to_string()
    };
    let _ = writeln!(
        h,
        "<tr class=\"{}\" data-host=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{pooled}</td>\
         <td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
        classes.join(" "),
        escape(&s.host),
        escape(&s.host),
        yes_no(s.enabled, "enabled", "disabled"),
        yes_no(s.up, "up", "down"),
        s.weight,
        address(s),
        if monitors.is_empty() {
            "—".to_string()
        } else {
            monitors.join("<br>")
        }
    );
}

/// The address cell: the address, and why the name does not resolve.
fn address(s: &ServerDoc) -> String {
    let why = s
        .unresolved
        .as_deref()
        .map(|why| format!("<span class=\"reason\">unresolved: {}</span>", escape(why)));
    match (s.ip.as_deref(), why) {
        (Some(ip), Some(why)) => format!("{} {why}", escape(ip)),
        (Some(ip), None) => escape(ip),
        (None, Some(why)) => why,
        (None, None) => "unresolved".to_string(),
    }
}

fn bgp_section(h: &mut String, doc: &StatusDoc) {
    h.push_str("<section id=\"bgp\"><h2>BGP</h2>\n");
    if !doc.bgp.enabled {
        h.push_str("<p class=\"meta\">BGP is disabled (<code>bgp = no</code>).</p>\n");
    } else if doc.bgp.sessions.is_empty() {
        h.push_str("<p class=\"meta\">BGP is enabled; no session has been reported yet.</p>\n");
    } else {
        h.push_str(
            "<div class=\"scroll\"><table>\n<thead><tr><th>Peer</th><th>Local ASN</th>\
             <th>State</th><th>Since</th></tr></thead>\n<tbody>\n",
        );
        for s in &doc.bgp.sessions {
            let _ = writeln!(
                h,
                "<tr class=\"{}\"><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>",
                if s.established { "fine" } else { "down-pooled" },
                escape(&s.peer),
                s.local_asn,
                yes_no(s.established, &escape(&s.state), &escape(&s.state)),
                format_time(s.since)
            );
        }
        h.push_str("</tbody></table></div>\n");
    }
    h.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::document::fixtures::doc;
    use crate::status::document::BgpDoc;

    /// The shared fixture, with markup in every string that is shown.
    fn hostile_doc() -> StatusDoc {
        let mut d = doc();
        d.config = "/etc/rsbal/<x>.conf".into();
        d.pools[0].name = "web<script>".into();
        d
    }

    #[test]
    fn page_has_every_part_and_escapes() {
        let page = render(&hostile_doc());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
        assert!(page.contains("name=\"viewport\""));
        assert!(!page.contains("<script"), "unescaped input or script");
        assert!(page.contains("web&lt;script&gt;"));
        assert!(page.contains("/etc/rsbal/&lt;x&gt;.conf"));
        assert!(page.contains("HTTP status 500 &lt;oops&gt;"));
        assert!(page.contains("rejected: bad &#39;port&#39;"));
        assert!(page.contains("data-host=\"d&amp;e\""));
        assert!(page.contains("class=\"down-pooled\" data-host=\"b\""));
        assert!(page.contains("class=\"depooled\" data-host=\"c\""));
        assert!(page.contains("class=\"fine disabled\" data-host=\"d&amp;e\""));
        assert!(page.contains("depool threshold 0.5"));
        assert!(
            page.contains(
                "id=\"ipvs-out-of-sync-web&lt;script&gt;\">IPVS out of sync: the kernel's table \
                 does not have what this pool wants (applying 1 command(s) failed: &lt;ENOMEM&gt;)"
            ),
            "{page}"
        );
        assert!(page.contains("another depool allowed: <span class=\"no\">no</span>"));
        assert!(page.contains("192.0.2.254"));
        assert!(page.contains("2027-01-15T08:00:00Z"), "{page}");
        assert!(!page.contains("http://") && !page.contains("https://"));
    }

    #[test]
    fn unresolved_servers_show_why() {
        let mut d = doc();
        let servers = &mut d.pools[0].servers;
        servers[2].ip = None;
        servers[2].unresolved = Some("no answer <yet>".into());
        servers[0].unresolved = Some("timed out".into());
        let page = render(&d);
        assert!(
            page.contains(
                "<td><span class=\"reason\">unresolved: no answer &lt;yet&gt;</span></td>"
            ),
            "{page}"
        );
        assert!(
            page.contains("<td>10.0.0.1 <span class=\"reason\">unresolved: timed out</span></td>"),
            "{page}"
        );
    }

    #[test]
    fn bgp_off_and_no_pools() {
        let mut d = doc();
        d.pools.clear();
        d.bgp = BgpDoc {
            enabled: false,
            sessions: vec![],
        };
        d.last_reload = None;
        let page = render(&d);
        assert!(!page.contains("out of sync"));
        assert!(page.contains("No pools are configured."));
        assert!(page.contains("BGP is disabled"));
        assert!(page.contains("none since start"));
    }
}
