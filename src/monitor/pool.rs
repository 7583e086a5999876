//! The elastic worker pool of one service: the threads that run its scheduled
//! checks (ProxyFetch, RunCommand, DNSQuery), and the queue between them and
//! the service thread.
//!
//! The service thread hands due checks to [`Workers::run`]; they wait in one
//! queue that every worker takes from, in order. Workers are few because a
//! hand-off is, after the kernel's TCP, what a check costs most (each wake
//! of a sleeping thread is ~15–20 µs of CPU on a VM), and each thread costs
//! memory:
//! - **One wake-up per batch.** A due check wakes the worker that went idle
//!   last, unless one is woken already (it takes the whole queue in turn);
//!   the service thread hands out the checks due within a short window at
//!   once, so one worker runs them back to back.
//! - **Growth only when the pool is stuck.** If checks wait and no worker
//!   has taken or finished one for [`GROWTH_GRACE`] (they are blocked on
//!   hung or slow servers), [`Workers::grow`] spawns one more worker: a hung
//!   server holds one worker and delays another check by about the grace.
//!   Workers that are merely slow to get the CPU still make progress, and a
//!   machine with more runnable tasks than CPUs gets at most
//!   [`BUSY_MACHINE_WORKERS`] per service (more threads would only queue
//!   for the CPU, and an overloaded box would otherwise add thousands). A
//!   worker idle for [`IDLE_EXIT`] ends; the pool never runs more than
//!   [`MAX_WORKERS`] (`daemon::limits` counts on it).
//! - **Results are filed, not sent.** A worker files each finished check in
//!   the pool and rings the service's doorbell only when the service must
//!   look before it would anyway: the result differs from that check's
//!   previous one (a state change, the first result, a local failure), or
//!   the check is due again before the service thread's next wake-up. The
//!   service thread takes the filed results in one place: [`Workers::park`],
//!   before it sleeps, hands over any filed meanwhile (then it does not
//!   sleep yet), so none is forgotten.
//!
//! A worker runs a job only if its monitor was not stopped meanwhile; the
//! service thread decides whether a result is still wanted. Dropping
//! [`Workers`] (the service ends) tells the workers to end once their
//! current check is done; queued checks are dropped.

use super::{Checked, ScheduledMonitor};
use crossbeam_channel::Sender;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

/// How long an idle worker waits for a job before it ends.
pub(crate) const IDLE_EXIT: Duration = Duration::from_secs(10);

/// How long due checks wait while no worker takes or finishes one before a
/// new worker is spawned for them. Far below any check interval, far above
/// what a healthy check takes (a loopback ProxyFetch is ~0.1 ms).
pub(crate) const GROWTH_GRACE: Duration = Duration::from_millis(20);

/// How long a due check waits for a worker, however busy the workers are
/// with other checks, before a new one is spawned: the pool keeps up with
/// slow (not hung) servers too.
pub(crate) const LAG_LIMIT: Duration = Duration::from_millis(100);

/// Stack of a worker thread: an HTTP(S) request (TLS handshake included), a
/// DNS exchange or a spawn and wait. `tests/scheduler.rs`
/// (`https_checks_run_on_the_small_worker_stacks`) runs the deepest, an
/// HTTPS check, on it: 128 KiB overflows there in a debug build. Workers
/// are few (they grow with the checks in flight, not with the servers), so
/// this costs little; only touched pages count in RSS.
pub(crate) const WORKER_STACK_SIZE: usize = 512 * 1024;

/// Most workers a pool grows to while the machine is short of CPU
/// ([`machine_busy`]): enough that a few hung servers hold up no other
/// check, few enough that an overloaded machine does not add thousands of
/// threads, each of which would only wait for the CPU and cost memory.
pub(crate) const BUSY_MACHINE_WORKERS: usize = 4;

/// Most workers one service's pool runs at once. 32 keeps a production
/// balancer (≈ 100 services) within `vm.max_map_count` (4 maps a thread) at
/// 10,000 servers; a healthy service of 100 servers checked every second
/// keeps one busy.
pub(crate) const MAX_WORKERS: usize = 32;

/// A scheduled check that ran: the job back, what it found (`None`: it was
/// stopped during the check), and when it was due.
pub(crate) struct Finished {
    pub(crate) job: ScheduledMonitor,
    pub(crate) result: Option<Checked>,
    pub(crate) due: Instant,
}

/// The kind of a result, to tell a change from a repeat: up, down, or not
/// checked for rsbal's own shortage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResultClass {
    Up,
    Down,
    Local,
}

impl ResultClass {
    fn of(checked: &Checked) -> ResultClass {
        match &checked.outcome {
            super::CheckOutcome::Up(_) => ResultClass::Up,
            super::CheckOutcome::Down(e) if e.is_local() => ResultClass::Local,
            super::CheckOutcome::Down(_) => ResultClass::Down,
        }
    }
}

/// A due check waiting for a worker.
struct Queued {
    job: ScheduledMonitor,
    due: Instant,
    queued: Instant,
}

/// What one worker is doing.
#[derive(Clone, Copy)]
enum Doing {
    /// Running checks.
    Busy,
    /// Parked for a job `since`; `woken` once a job was meant for it.
    Idle { since: Instant, woken: bool },
}

/// One worker, as the pool sees it.
struct Slot {
    id: u64,
    thread: thread::Thread,
    doing: Doing,
}

/// What the service thread and its workers share, under one lock.
#[derive(Default)]
struct State {
    queue: VecDeque<Queued>,
    /// Finished checks the service thread has not taken yet.
    finished: Vec<Finished>,
    /// The workers alive.
    slots: Vec<Slot>,
    next_id: u64,
    /// When the service thread said it would next wake by itself (`None`:
    /// it never parked yet).
    service_wakes: Option<Instant>,
    /// When a worker last took or finished a check.
    progress: Option<Instant>,
    /// The service is gone: workers end.
    closed: bool,
}

impl State {
    fn slot(&mut self, id: u64) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.id == id)
    }

    /// Makes sure a worker comes for the queue: one woken already and not
    /// yet back takes every queued check in turn; otherwise wakes the worker
    /// that went idle last (so that the others stay idle and end after
    /// [`IDLE_EXIT`]). False when none is idle.
    fn wake_one(&mut self) -> bool {
        if self
            .slots
            .iter()
            .any(|s| matches!(s.doing, Doing::Idle { woken: true, .. }))
        {
            return true;
        }
        let newest = self
            .slots
            .iter_mut()
            .filter(|s| matches!(s.doing, Doing::Idle { woken: false, .. }))
            .max_by_key(|s| match s.doing {
                Doing::Idle { since, .. } => Some(since),
                Doing::Busy => None,
            });
        match newest {
            Some(slot) => {
                if let Doing::Idle { woken, .. } = &mut slot.doing {
                    *woken = true;
                }
                slot.thread.unpark();
                true
            }
            None => false,
        }
    }

    fn any_idle(&self) -> bool {
        self.slots
            .iter()
            .any(|s| matches!(s.doing, Doing::Idle { .. }))
    }
}

struct Shared {
    state: Mutex<State>,
    /// Rung (one token at most) when a finished check cannot wait for the
    /// service thread's next wake-up.
    doorbell: Sender<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic aborts the process (`panic = "abort"`), so no lock is
        // ever poisoned; take the state either way.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The service's end of its pool.
pub(crate) struct Workers {
    name: String,
    shared: Arc<Shared>,
}

impl Workers {
    /// A pool with no worker yet; `doorbell` is rung when a finished check
    /// needs the service thread before its next wake-up. Threads are named
    /// `check:<name>`.
    pub(crate) fn new(name: &str, doorbell: Sender<()>) -> Workers {
        Workers {
            name: format!("check:{name}"),
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                doorbell,
            }),
        }
    }

    /// Queues `job` (due at `due`) for the next free worker and wakes the
    /// most recently idle one. With no worker alive one is spawned at once;
    /// with every worker busy the job waits (see [`Workers::grow`]). An
    /// error means no worker could be spawned: the job stays queued and
    /// `grow` tries again.
    pub(crate) fn run(
        &self,
        job: ScheduledMonitor,
        due: Instant,
        now: Instant,
    ) -> std::io::Result<()> {
        let mut state = self.shared.lock();
        state.queue.push_back(Queued {
            job,
            due,
            queued: now,
        });
        if state.wake_one() || !state.slots.is_empty() {
            Ok(())
        } else {
            crate::daemon::limits::room_for_a_thread()?;
            self.spawn(&mut state, now)
        }
    }

    /// Spawns a worker when checks wait and the pool is stuck or lagging:
    /// the oldest queued check has waited [`GROWTH_GRACE`] and no worker has
    /// taken or finished a check for as long (they are blocked on hung
    /// servers), or it has waited [`LAG_LIMIT`] (slow servers). While the
    /// machine is short of CPU ([`machine_busy`]) the pool grows to at most
    /// [`BUSY_MACHINE_WORKERS`]: more threads would only queue for the CPU.
    /// One per call, at most [`MAX_WORKERS`]. Returns when to call again
    /// (`None`: nothing waits), and whether a spawn failed.
    pub(crate) fn grow(&self, now: Instant) -> (Option<Instant>, std::io::Result<()>) {
        let state = self.shared.lock();
        let Some(oldest) = state.queue.front().map(|q| q.queued) else {
            return (None, Ok(()));
        };
        if state.any_idle() {
            // Woken for the queue: it takes the oldest check.
            return (Some(now + GROWTH_GRACE), Ok(()));
        }
        // Stuck (nothing taken or finished for the grace), or lagging (the
        // workers progress but slower than checks come due).
        let stuck_since = state.progress.map_or(oldest, |p| p.max(oldest));
        let overdue = (stuck_since + GROWTH_GRACE).min(oldest + LAG_LIMIT);
        if now < overdue {
            return (Some(overdue), Ok(()));
        }
        if state.slots.len() >= MAX_WORKERS {
            return (Some(now + LAG_LIMIT), Ok(()));
        }
        // The checks below read /proc: not while the workers wait for the lock.
        let workers = state.slots.len();
        drop(state);
        if workers >= BUSY_MACHINE_WORKERS && machine_busy(now) {
            // Slow for want of CPU: another thread would only queue for it.
            return (Some(now + LAG_LIMIT), Ok(()));
        }
        if let Err(e) = crate::daemon::limits::room_for_a_thread() {
            return (Some(now + LAG_LIMIT), Err(e));
        }
        let mut state = self.shared.lock();
        if state.queue.is_empty() || state.slots.len() >= MAX_WORKERS {
            return (None, Ok(()));
        }
        let spawned = self.spawn(&mut state, now);
        (Some(now + GROWTH_GRACE), spawned)
    }

    /// The service thread is about to sleep until `wakes` at the latest.
    /// Returns the finished checks filed meanwhile instead, if any (then it
    /// must not sleep yet); otherwise workers ring the doorbell for a check
    /// due before `wakes`.
    pub(crate) fn park(&self, wakes: Instant) -> Vec<Finished> {
        let mut state = self.shared.lock();
        if state.finished.is_empty() {
            state.service_wakes = Some(wakes);
        }
        std::mem::take(&mut state.finished)
    }

    /// Workers alive now.
    pub(crate) fn live(&self) -> usize {
        self.shared.lock().slots.len()
    }

    /// Drops every queued check (their servers were stopped).
    pub(crate) fn clear_queue(&self) {
        self.shared.lock().queue.clear();
    }

    /// Spawns a worker (the caller checked there is room for a thread).
    fn spawn(&self, state: &mut State, now: Instant) -> std::io::Result<()> {
        let shared = Arc::clone(&self.shared);
        let id = state.next_id;
        let spawned = thread::Builder::new()
            .name(self.name.clone())
            .stack_size(WORKER_STACK_SIZE)
            .spawn(move || work(&shared, id))?;
        state.next_id += 1;
        state.slots.push(Slot {
            id,
            thread: spawned.thread().clone(),
            doing: Doing::Busy,
        });
        state.progress = Some(now);
        Ok(())
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.closed = true;
        state.queue.clear();
        for slot in &state.slots {
            slot.thread.unpark();
        }
    }
}

/// A worker: takes queued checks in order until the pool closes or it has
/// been idle for [`IDLE_EXIT`].
fn work(shared: &Shared, id: u64) {
    let mut state = shared.lock();
    'work: while !state.closed {
        if let Some(Queued { mut job, due, .. }) = state.queue.pop_front() {
            state.progress = Some(Instant::now());
            if let Some(slot) = state.slot(id) {
                slot.doing = Doing::Busy;
            }
            drop(state);
            if job.ctx.stopped() {
                // Its server was removed: nothing to report.
                state = shared.lock();
                continue;
            }
            let result = job.check.check(&job.ctx);
            let class = result.as_ref().map(ResultClass::of);
            let changed = class.is_some() && class != job.last;
            job.last = class.or(job.last);
            let again = due + job.interval;
            state = shared.lock();
            state.progress = Some(Instant::now());
            let late = state.service_wakes.is_some_and(|wakes| again < wakes);
            state.finished.push(Finished { job, result, due });
            if changed || late {
                let _ = shared.doorbell.try_send(());
            }
            continue;
        }
        let since = Instant::now();
        let Some(slot) = state.slot(id) else { break };
        slot.doing = Doing::Idle {
            since,
            woken: false,
        };
        // Parked until a job is meant for this worker, the pool closes or
        // the idle time is up (unpark before park is not lost).
        loop {
            drop(state);
            thread::park_timeout((since + IDLE_EXIT).saturating_duration_since(Instant::now()));
            state = shared.lock();
            let woken = matches!(
                state.slot(id).map(|s| s.doing),
                Some(Doing::Idle { woken: true, .. })
            );
            if woken || state.closed || !state.queue.is_empty() {
                break;
            }
            if since.elapsed() >= IDLE_EXIT {
                break 'work;
            }
        }
    }
    state.slots.retain(|s| s.id != id);
}

/// Whether checks are slow because the CPU is, not because servers are:
/// more tasks runnable on the machine than it has CPUs now
/// (`/proc/loadavg`'s running count, this thread included), or tasks kept
/// waiting for a CPU [`BUSY_CPU_PRESSURE`] % of the last 10 s
/// (`/proc/pressure/cpu`, where the kernel has it).
/// Read at most every [`BUSY_REFRESH`] for the whole process.
fn machine_busy(now: Instant) -> bool {
    static LAST: Mutex<Option<(Instant, bool)>> = Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(PoisonError::into_inner);
    match *last {
        Some((at, busy)) if now.saturating_duration_since(at) < BUSY_REFRESH => busy,
        _ => {
            let busy = read_machine_busy();
            *last = Some((now, busy));
            busy
        }
    }
}

/// How long a reading of [`machine_busy`] serves.
const BUSY_REFRESH: Duration = Duration::from_millis(100);

fn read_machine_busy() -> bool {
    static CPUS: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
        thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let read = |path| std::fs::read_to_string(path).ok();
    read("/proc/loadavg")
        .and_then(|l| runnable_tasks(&l))
        .is_some_and(|running| running > *CPUS)
        || read("/proc/pressure/cpu")
            .and_then(|p| cpu_pressure(&p))
            .is_some_and(|some| some >= BUSY_CPU_PRESSURE)
}

/// Share of time (%) over which the machine counts as busy when some task
/// waited for a CPU.
const BUSY_CPU_PRESSURE: f64 = 20.0;

/// The `some avg10` figure of `/proc/pressure/cpu`.
fn cpu_pressure(psi: &str) -> Option<f64> {
    let some = psi.lines().find(|l| l.starts_with("some "))?;
    let avg10 = some
        .split_whitespace()
        .find_map(|f| f.strip_prefix("avg10="))?;
    avg10.parse().ok()
}

/// The count of runnable tasks in a `/proc/loadavg` line
/// (`0.52 0.58 0.59 3/467 12345`: 3).
fn runnable_tasks(loadavg: &str) -> Option<usize> {
    let field = loadavg.split_whitespace().nth(3)?;
    field.split_once('/')?.0.parse().ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::monitor::{Check, CheckOutcome, MonitorContext, MonitorTarget};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A check that counts its runs; the hung one blocks until released.
    struct Fake {
        ran: Arc<AtomicUsize>,
        hang: Option<crossbeam_channel::Receiver<()>>,
    }

    impl Check for Fake {
        fn check(&mut self, _ctx: &MonitorContext) -> Option<Checked> {
            if let Some(release) = &self.hang {
                let _ = release.recv_timeout(Duration::from_secs(10));
            }
            self.ran.fetch_add(1, Ordering::SeqCst);
            Some(Checked {
                outcome: CheckOutcome::Up("ok".into()),
                duration: None,
            })
        }
    }

    /// A scheduled monitor of server `id` and the sender whose drop stops it.
    fn job(id: u64, check: Fake) -> (ScheduledMonitor, Sender<()>) {
        let (stop_tx, stop) = crossbeam_channel::bounded(0);
        let (reports, _) = crossbeam_channel::unbounded();
        let ctx = MonitorContext {
            name: "Fake",
            target: MonitorTarget {
                service: "svc".into(),
                host: format!("h{id}"),
                ip: [127, 0, 0, 1].into(),
                port: 80,
                weight: 1,
            },
            server_id: id,
            monitor: 0,
            reports,
            stop,
        };
        let job = ScheduledMonitor {
            ctx,
            interval: Duration::from_secs(1),
            check: Box::new(check),
            last: None,
        };
        (job, stop_tx)
    }

    /// The checks filed so far, as the service thread takes them.
    fn filed(workers: &Workers) -> Vec<Finished> {
        workers.park(Instant::now() + Duration::from_secs(3600))
    }

    fn wait_for(what: impl Fn() -> bool, workers: &Workers) {
        let until = Instant::now() + Duration::from_secs(5);
        while !what() {
            assert!(Instant::now() < until, "timed out");
            let _ = workers.grow(Instant::now());
            thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn a_hung_check_holds_one_worker_and_the_others_still_run() {
        let (doorbell, rung) = crossbeam_channel::bounded(1);
        let workers = Workers::new("t", doorbell);
        let ran = Arc::new(AtomicUsize::new(0));
        let (release, hang) = crossbeam_channel::bounded(0);
        let now = Instant::now();
        let mut stops = Vec::new();
        let (hung, stop) = job(
            0,
            Fake {
                ran: Arc::clone(&ran),
                hang: Some(hang),
            },
        );
        stops.push(stop);
        workers.run(hung, now, now).unwrap();
        assert_eq!(workers.live(), 1);
        thread::sleep(Duration::from_millis(10));
        for id in 1..=5 {
            let (quick, stop) = job(
                id,
                Fake {
                    ran: Arc::clone(&ran),
                    hang: None,
                },
            );
            stops.push(stop);
            workers.run(quick, now, Instant::now()).unwrap();
        }
        // The busy worker takes nothing; after the grace a second one runs
        // all five while the first is still hung.
        wait_for(|| ran.load(Ordering::SeqCst) == 5, &workers);
        assert_eq!(workers.live(), 2);
        // First results ring the doorbell; all six come back once released.
        assert!(rung.try_recv().is_ok());
        drop(release);
        let finished = std::cell::RefCell::new(Vec::new());
        wait_for(
            || {
                finished.borrow_mut().extend(filed(&workers));
                finished.borrow().len() == 6
            },
            &workers,
        );
        assert!(finished.borrow().iter().all(|f| f.result.is_some()));
    }

    #[test]
    fn a_check_whose_monitor_stopped_is_not_run() {
        let (doorbell, _rung) = crossbeam_channel::bounded(1);
        let workers = Workers::new("t", doorbell);
        let ran = Arc::new(AtomicUsize::new(0));
        let (release, hang) = crossbeam_channel::bounded(0);
        let now = Instant::now();
        let (hung, _keep) = job(
            0,
            Fake {
                ran: Arc::clone(&ran),
                hang: Some(hang),
            },
        );
        workers.run(hung, now, now).unwrap();
        thread::sleep(Duration::from_millis(10));
        let (stopped, stop) = job(
            1,
            Fake {
                ran: Arc::clone(&ran),
                hang: None,
            },
        );
        workers.run(stopped, now, now).unwrap();
        drop(stop);
        drop(release);
        wait_for(|| ran.load(Ordering::SeqCst) == 1, &workers);
        thread::sleep(Duration::from_millis(50));
        assert_eq!(ran.load(Ordering::SeqCst), 1);
        assert_eq!(filed(&workers).len(), 1);
    }

    #[test]
    fn machine_load_figures() {
        assert_eq!(runnable_tasks("0.52 0.58 0.59 3/467 12345\n"), Some(3));
        assert_eq!(runnable_tasks("garbage"), None);
        let psi = "some avg10=30.45 avg60=32.58 avg300=18.68 total=5091838358\n\
                   full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(cpu_pressure(psi), Some(30.45));
        assert_eq!(cpu_pressure("full avg10=1.00"), None);
    }
}
