//! rsbal's own resources running out at run time (fds, threads, memory,
//! ports): an *episode* per resource, said once.
//!
//! A check that could not be carried out for rsbal's own shortage
//! (`CheckError::Local`) or a monitor thread that could not be spawned says
//! nothing about the server: the service thread changes no server for it and
//! calls [`local_failure`] instead. The first such failure of a resource
//! starts its episode: one ERROR line naming the resource and what to raise,
//! `rsbal_resource_exhausted_total{resource}` + 1, the gauge
//! `rsbal_resource_exhausted{resource}` 1, and `/alerts` CRITICAL (the
//! episode is in [`DaemonStatus::resources_exhausted`]). Later failures of
//! the same episode are only counted. The episode ends once a check acquired
//! what it needed again ([`acquired`]: any report that is not a local
//! failure) *and* no local failure came for [`QUIET`]; the service threads'
//! 1 s tick ([`tick`]) ends it with one INFO line and the gauge back to 0.
//!
//! [`Episodes`] is the pure part; the functions around it hold the one
//! process-wide instance and do the logging, metrics and publishing.
//!
//! [`DaemonStatus::resources_exhausted`]: crate::status::snapshot::DaemonStatus

use crate::monitor::check::Resource;
use crate::status::metrics;
use crate::status::snapshot::SnapshotStore;
use prometheus::{GaugeVec, IntCounterVec};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How long without a local failure (after a success) ends an episode.
pub(crate) const QUIET: Duration = Duration::from_secs(5);

/// A change the caller announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// The first local failure of `resource` since its last episode ended.
    Started { resource: Resource, reason: String },
    /// The episode of `resource` is over: `failures` checks could not run
    /// during `lasted`.
    Ended {
        resource: Resource,
        failures: u64,
        lasted: Duration,
    },
}

#[derive(Debug, Clone)]
struct Episode {
    started: Instant,
    last_failure: Instant,
    /// The last success (a check that acquired its resources) after
    /// `last_failure`, if any.
    recovered: Option<Instant>,
    failures: u64,
    reason: String,
}

/// The episodes in progress, by resource. Pure: time is passed in.
#[derive(Debug, Default)]
pub(crate) struct Episodes {
    active: BTreeMap<Resource, Episode>,
}

impl Episodes {
    /// A local failure of `resource` at `now`; `Started` when it opens an
    /// episode.
    pub(crate) fn failure(
        &mut self,
        resource: Resource,
        reason: &str,
        now: Instant,
    ) -> Option<Event> {
        if let Some(episode) = self.active.get_mut(&resource) {
            episode.failures += 1;
            episode.last_failure = now;
            episode.recovered = None;
            episode.reason = reason.to_string();
            return None;
        }
        self.active.insert(
            resource,
            Episode {
                started: now,
                last_failure: now,
                recovered: None,
                failures: 1,
                reason: reason.to_string(),
            },
        );
        Some(Event::Started {
            resource,
            reason: reason.to_string(),
        })
    }

    /// A check acquired what it needed at `now`.
    pub(crate) fn success(&mut self, now: Instant) {
        for episode in self.active.values_mut() {
            episode.recovered.get_or_insert(now);
        }
    }

    /// Ends the episodes that recovered and stayed quiet for [`QUIET`].
    pub(crate) fn tick(&mut self, now: Instant) -> Vec<Event> {
        let over: Vec<Resource> = self
            .active
            .iter()
            .filter(|(_, e)| {
                e.recovered.is_some() && now.saturating_duration_since(e.last_failure) >= QUIET
            })
            .map(|(r, _)| *r)
            .collect();
        over.into_iter()
            .filter_map(|resource| {
                let episode = self.active.remove(&resource)?;
                Some(Event::Ended {
                    resource,
                    failures: episode.failures,
                    lasted: now.saturating_duration_since(episode.started),
                })
            })
            .collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// What `/alerts` and the status show: resource label → the latest
    /// reason and what to raise.
    pub(crate) fn summary(&self) -> BTreeMap<String, String> {
        self.active
            .iter()
            .map(|(r, e)| {
                let text = format!(
                    "{} check(s) could not run, last: {}; raise {}",
                    e.failures,
                    e.reason,
                    r.remedy()
                );
                (r.label().to_string(), text)
            })
            .collect()
    }
}

struct Families {
    episodes: IntCounterVec,
    exhausted: GaugeVec,
    failures: IntCounterVec,
}

static FAMILIES: LazyLock<Families> = LazyLock::new(|| Families {
    episodes: metrics::int_counter_vec(
        "rsbal_resource_exhausted_total",
        "Episodes of rsbal running out of its own resource (fds, threads, memory, ports)",
        &["resource"],
    ),
    exhausted: metrics::gauge_vec(
        "rsbal_resource_exhausted",
        "Whether rsbal is out of the resource now (1) or not (0)",
        &["resource"],
    ),
    failures: metrics::int_counter_vec(
        "rsbal_resource_local_failures_total",
        "Checks or monitor starts that failed for rsbal's own lack of the resource",
        &["resource"],
    ),
});

static STATE: LazyLock<Mutex<Episodes>> = LazyLock::new(|| Mutex::new(Episodes::default()));
/// True while an episode is in progress: lets [`acquired`] skip the lock.
static ACTIVE: AtomicBool = AtomicBool::new(false);

fn state() -> MutexGuard<'static, Episodes> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Declares the metrics at start-up (so that they read 0 before anything
/// ran out).
pub(crate) fn declare() {
    for resource in [Resource::Fds, Resource::Tasks] {
        let f = &*FAMILIES;
        f.episodes.with_label_values(&[resource.label()]);
        f.exhausted.with_label_values(&[resource.label()]).set(0.0);
    }
}

/// A check or a monitor start failed for want of `resource`; `reason` as
/// the check reported it.
pub(crate) fn local_failure(store: &SnapshotStore, resource: Resource, reason: &str) {
    let f = &*FAMILIES;
    f.failures.with_label_values(&[resource.label()]).inc();
    let mut state = state();
    let event = state.failure(resource, reason, Instant::now());
    ACTIVE.store(true, Ordering::Release);
    if let Some(event) = event {
        announce(&event);
        publish(store, &state);
    }
}

/// A check acquired what it needed (a report that is not a local failure).
pub(crate) fn acquired() {
    if ACTIVE.load(Ordering::Acquire) {
        state().success(Instant::now());
    }
}

/// Ends the episodes that are over (called every second by service threads).
pub(crate) fn tick(store: &SnapshotStore) {
    if !ACTIVE.load(Ordering::Acquire) {
        return;
    }
    let mut state = state();
    let events = state.tick(Instant::now());
    if events.is_empty() {
        return;
    }
    for event in &events {
        announce(event);
    }
    ACTIVE.store(!state.is_empty(), Ordering::Release);
    publish(store, &state);
}

fn publish(store: &SnapshotStore, state: &Episodes) {
    let summary = state.summary();
    store.update_daemon(|d| d.resources_exhausted = summary);
}

fn announce(event: &Event) {
    let f = &*FAMILIES;
    match event {
        Event::Started { resource, reason } => {
            f.episodes.with_label_values(&[resource.label()]).inc();
            f.exhausted.with_label_values(&[resource.label()]).set(1.0);
            log::error!(target: "rsbal",
                "out of {}: {reason}; no server changes state for it, checks are retried (raise {})",
                resource.label(), resource.remedy());
        }
        Event::Ended {
            resource,
            failures,
            lasted,
        } => {
            f.exhausted.with_label_values(&[resource.label()]).set(0.0);
            log::info!(target: "rsbal",
                "no longer out of {} after {:.0}s ({failures} check(s) could not run meanwhile)",
                resource.label(), lasted.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_start_per_episode_and_an_end_only_after_recovery_and_quiet() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut e = Episodes::default();
        let started = e.failure(Resource::Fds, "a: Too many open files (os error 24)", at(0));
        assert!(matches!(
            started,
            Some(Event::Started {
                resource: Resource::Fds,
                ..
            })
        ));
        assert_eq!(e.failure(Resource::Fds, "b", at(1)), None);
        // No success yet: however long it is quiet, the episode goes on.
        assert!(e.tick(at(30)).is_empty());
        assert!(
            e.summary()["fds"].contains("2 check(s) could not run, last: b; raise LimitNOFILE=")
        );
        // A success, then another failure: not over.
        e.success(at(31));
        assert_eq!(e.failure(Resource::Fds, "c", at(32)), None);
        e.success(at(33));
        assert!(e.tick(at(36)).is_empty(), "quiet for only 4 s");
        let ended = e.tick(at(37));
        assert_eq!(
            ended,
            vec![Event::Ended {
                resource: Resource::Fds,
                failures: 3,
                lasted: Duration::from_secs(37)
            }]
        );
        assert!(e.is_empty() && e.summary().is_empty());
        // The next failure opens a new episode.
        assert!(e.failure(Resource::Fds, "d", at(40)).is_some());
        // Resources are independent.
        assert!(e.failure(Resource::Tasks, "e", at(40)).is_some());
        assert_eq!(e.summary().len(), 2);
    }
}
