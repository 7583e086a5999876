//! The elastic worker pool of one service: the threads that run its scheduled
//! checks (ProxyFetch, RunCommand, DNSQuery), one check per job.
//!
//! The pool grows only while checks are in flight: a job handed to the pool
//! claims an idle worker if there is one, else a new worker is spawned for
//! it, so a hung server holds one worker and never the others' checks. A
//! worker that has been idle for [`IDLE_EXIT`] ends. Workers keep a small
//! stack ([`WORKER_STACK_SIZE`]). The pool never runs more than
//! [`MAX_WORKERS`] workers, so what a service can cost is known before it
//! starts (`daemon::limits` counts on it); past that, due checks wait in
//! the queue for the next free worker (each check is bounded by its
//! monitor's timeout), so only more than [`MAX_WORKERS`] servers hung at
//! once delay the others' checks.
//!
//! Counting: `idle` is the number of waiting workers no job has claimed yet.
//! A sender claims one by decrementing it; a worker that times out may end
//! only by decrementing it too, so a claimed job always finds a worker. A
//! job queued at the cap with no worker to claim is counted in `backlog`; a
//! worker that finishes a check takes one from `backlog` (it will receive
//! that job) before it counts itself idle, so the counts stay true. A
//! spawn that fails (`EAGAIN` at the thread limit) leaves its job queued and
//! is owed: [`Workers::retry`] spawns the missing workers later.
//!
//! A worker runs a job only if its monitor was not stopped meanwhile, and
//! hands the finished job back on the service's `done` channel; the service
//! thread decides whether the result is still wanted.

use super::{Checked, ScheduledMonitor};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long an idle worker waits for a job before it ends.
pub(crate) const IDLE_EXIT: Duration = Duration::from_secs(10);

/// Stack of a worker thread: an HTTP(S) request (TLS handshake included), a
/// DNS exchange or a spawn and wait. `tests/scheduler.rs`
/// (`https_checks_run_on_the_small_worker_stacks`) runs the deepest, an
/// HTTPS check, on it: 128 KiB overflows there in a debug build. Workers
/// are few (they grow with the checks in flight, not with the servers), so
/// this costs little; only touched pages count in RSS.
pub(crate) const WORKER_STACK_SIZE: usize = 512 * 1024;

/// Most workers one service's pool runs at once. 32 keeps a production
/// balancer (≈ 100 services) within `vm.max_map_count` (4 maps a thread) at
/// 10,000 servers; a healthy service of 100 servers checked every second
/// keeps one or two busy.
pub(crate) const MAX_WORKERS: usize = 32;

/// A scheduled check that ran: the job back, what it found (`None`: it was
/// stopped during the check), and when it started.
pub(crate) struct Finished {
    pub(crate) job: ScheduledMonitor,
    pub(crate) result: Option<Checked>,
    pub(crate) started: Instant,
}

/// The service's end of its pool.
pub(crate) struct Workers {
    name: String,
    jobs: Sender<ScheduledMonitor>,
    queue: Receiver<ScheduledMonitor>,
    done: Sender<Finished>,
    idle: Arc<AtomicUsize>,
    live: Arc<AtomicUsize>,
    /// Jobs queued at the cap that no idle worker claimed.
    backlog: Arc<AtomicUsize>,
    /// Workers that could not be spawned for queued jobs.
    owed: usize,
}

/// Takes one from `counter` unless it is zero; true when taken.
fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

impl Workers {
    /// A pool with no worker yet; finished jobs go to `done`. Threads are
    /// named `check:<name>`.
    pub(crate) fn new(name: &str, done: Sender<Finished>) -> Workers {
        let (jobs, queue) = crossbeam_channel::unbounded();
        Workers {
            name: format!("check:{name}"),
            jobs,
            queue,
            done,
            idle: Arc::new(AtomicUsize::new(0)),
            live: Arc::new(AtomicUsize::new(0)),
            backlog: Arc::new(AtomicUsize::new(0)),
            owed: 0,
        }
    }

    /// Runs `job` on an idle worker or a new one. An error means no worker
    /// could be spawned: the job stays queued for the next free worker and
    /// [`Workers::retry`] tries again.
    pub(crate) fn run(&mut self, job: ScheduledMonitor) -> std::io::Result<()> {
        if self.jobs.send(job).is_err() {
            return Ok(()); // Cannot happen: we hold the receiver too.
        }
        if !take_one(&self.idle) {
            if self.live() + self.owed < MAX_WORKERS {
                self.owed += 1;
            } else {
                self.backlog.fetch_add(1, Ordering::AcqRel);
            }
        }
        self.retry()
    }

    /// Spawns the workers owed to queued jobs.
    pub(crate) fn retry(&mut self) -> std::io::Result<()> {
        while self.owed > 0 {
            self.spawn()?;
            self.owed -= 1;
        }
        Ok(())
    }

    /// Workers alive now.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    fn spawn(&self) -> std::io::Result<()> {
        let worker = Worker {
            queue: self.queue.clone(),
            done: self.done.clone(),
            idle: Arc::clone(&self.idle),
            live: Arc::clone(&self.live),
            backlog: Arc::clone(&self.backlog),
        };
        self.live.fetch_add(1, Ordering::AcqRel);
        let spawned = thread::Builder::new()
            .name(self.name.clone())
            .stack_size(WORKER_STACK_SIZE)
            .spawn(move || worker.run());
        if spawned.is_err() {
            self.live.fetch_sub(1, Ordering::AcqRel);
        }
        spawned.map(drop)
    }
}

struct Worker {
    queue: Receiver<ScheduledMonitor>,
    done: Sender<Finished>,
    idle: Arc<AtomicUsize>,
    live: Arc<AtomicUsize>,
    backlog: Arc<AtomicUsize>,
}

impl Worker {
    fn run(self) {
        // A new worker was spawned for a job that is already queued.
        loop {
            match self.queue.recv_timeout(IDLE_EXIT) {
                Ok(mut job) => {
                    if !job.ctx.stopped() {
                        let started = Instant::now();
                        let result = job.check.check(&job.ctx);
                        let finished = Finished {
                            job,
                            result,
                            started,
                        };
                        if self.done.send(finished).is_err() {
                            break; // The service is gone.
                        }
                    }
                    // A job queued at the cap is this worker's next one.
                    if !take_one(&self.backlog) {
                        self.idle.fetch_add(1, Ordering::AcqRel);
                    }
                }
                // Idle too long: end, unless a job claimed this worker's slot
                // meanwhile (then that job is queued or about to be).
                Err(RecvTimeoutError::Timeout) => {
                    if take_one(&self.idle) {
                        break;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

static WORKERS: std::sync::LazyLock<prometheus::GaugeVec> = std::sync::LazyLock::new(|| {
    crate::status::metrics::gauge_vec(
        "rsbal_check_workers",
        "Worker threads of the service's check pool (they grow while checks are in flight)",
        &["service"],
    )
});

/// Sets `rsbal_check_workers{service}` (the service thread, once a second).
pub(crate) fn set_metric(service: &str, live: usize) {
    WORKERS.with_label_values(&[service]).set(live as f64);
}
