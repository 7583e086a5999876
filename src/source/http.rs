//! `http://` and `https://` server lists: one GET every poll interval, each
//! bounded by `config-timeout`. Conditional requests (`If-None-Match`,
//! `If-Modified-Since`) let an unchanged list cost a 304; a changed body is
//! parsed in the format the URL's name selects. Any status but 200 and 304, a
//! connection error, a timeout or a truncated body is a failed fetch: the
//! last good list stays.

use super::{ListKeeper, SourceError, USER_AGENT};
use crate::net::tls::tls_config;
use std::time::{Duration, Instant};
use ureq::Agent;

/// The agent of one HTTP source: `timeout` for each whole request; every
/// status is an answer, not an error.
pub(super) fn agent(timeout: Duration) -> Agent {
    let config = Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .user_agent(USER_AGENT)
        .tls_config(tls_config())
        .build();
    Agent::new_with_config(config)
}

/// Validators of the last full answer, sent back to get a 304 when nothing
/// changed.
#[derive(Debug, Default)]
struct Validators {
    etag: Option<String>,
    last_modified: Option<String>,
}

/// What one poll got.
enum Fetched {
    /// 304: the last document is still current.
    NotModified,
    /// 200 with its whole body.
    Document(Vec<u8>, Validators),
}

/// The source thread's body for `url`.
pub(super) fn watch(
    mut keeper: ListKeeper,
    agent: &Agent,
    url: &str,
    json: bool,
    interval: Duration,
) {
    let mut validators = Validators::default();
    loop {
        let started = Instant::now();
        match fetch(agent, url, &validators) {
            Ok(Fetched::NotModified) => keeper.unchanged(),
            Ok(Fetched::Document(body, fresh)) => {
                validators = fresh;
                if !keeper.apply_document(body, json) {
                    return;
                }
            }
            Err(e) => {
                if keeper.stopped() {
                    return;
                }
                keeper.fail(&e);
            }
        }
        if !keeper.sleep_until(started + interval) {
            return;
        }
    }
}

/// One conditional GET.
fn fetch(agent: &Agent, url: &str, validators: &Validators) -> Result<Fetched, SourceError> {
    let mut request = agent.get(url);
    if let Some(etag) = &validators.etag {
        request = request.header("If-None-Match", etag);
    }
    if let Some(date) = &validators.last_modified {
        request = request.header("If-Modified-Since", date);
    }
    let mut response = request.call().map_err(SourceError::request)?;
    match response.status().as_u16() {
        200 => {}
        304 => return Ok(Fetched::NotModified),
        status => return Err(SourceError::Http { status, etcd: None }),
    }
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let fresh = Validators {
        etag: header("etag"),
        last_modified: header("last-modified"),
    };
    let body = response
        .body_mut()
        .read_to_vec()
        .map_err(|source| SourceError::Body {
            context: "reading the body",
            source,
        })?;
    Ok(Fetched::Document(body, fresh))
}
