//! The check schedule of one service: when each scheduled check (ProxyFetch,
//! RunCommand, DNSQuery of one server) is next due, as a timer heap. Pure:
//! no I/O, no clock of its own (every call is given `now`).
//!
//! A check is in one of two states: *waiting* for its due time (in the heap)
//! or *running* (handed to a worker, not in the heap), so the same check can
//! never run twice at once. When it finishes it is due again `interval`
//! after it was due, or at once if it overran (fixed rate, as PyBal's
//! `LoopingCall`). Removing a check cancels its future runs and makes the
//! result of a run in flight unwanted ([`Schedule::finished`] says so).
//! Removed and rescheduled entries leave stale heap items behind, skipped
//! when they reach the top.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The state of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the heap, due at the instant stored with sequence number `seq`.
    Waiting { seq: u64 },
    /// Handed out by [`Schedule::pop_due`], not yet [`Schedule::finished`].
    Running,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    interval: Duration,
    state: State,
}

/// The schedule of checks keyed by `K` (one per (server, monitor)).
#[derive(Debug)]
pub(crate) struct Schedule<K> {
    /// (due, seq, key), earliest first; an item is live only while its key's
    /// entry is `Waiting` with the same `seq`.
    heap: BinaryHeap<Reverse<(Instant, u64, K)>>,
    entries: HashMap<K, Entry>,
    next_seq: u64,
}

impl<K: Copy + Ord + Hash> Default for Schedule<K> {
    fn default() -> Self {
        Schedule {
            heap: BinaryHeap::new(),
            entries: HashMap::new(),
            next_seq: 0,
        }
    }
}

/// When a check that was due at `due` and ended at `now` is due next:
/// `interval` after `due`, or at once if it is already past that.
pub(crate) fn next_due(due: Instant, interval: Duration, now: Instant) -> Instant {
    (due + interval).max(now)
}

impl<K: Copy + Ord + Hash> Schedule<K> {
    /// Schedules `key` every `interval`, first at `first`. A key already
    /// scheduled is replaced (a run in flight of the old one is unwanted).
    pub(crate) fn add(&mut self, key: K, interval: Duration, first: Instant) {
        self.entries.remove(&key);
        self.push(key, interval, first);
    }

    fn push(&mut self, key: K, interval: Duration, due: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            key,
            Entry {
                interval,
                state: State::Waiting { seq },
            },
        );
        self.heap.push(Reverse((due, seq, key)));
    }

    /// Cancels `key`: no further runs; a run in flight is unwanted.
    pub(crate) fn remove(&mut self, key: &K) {
        self.entries.remove(key);
        if self.entries.is_empty() {
            self.heap.clear();
        }
    }

    /// Cancels every check.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.heap.clear();
    }

    /// Number of checks scheduled (waiting or running).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn is_live(&self, seq: u64, key: &K) -> bool {
        matches!(self.entries.get(key), Some(e) if e.state == State::Waiting { seq })
    }

    /// Drops stale items from the top of the heap.
    fn skip_stale(&mut self) {
        while let Some(Reverse((_, seq, key))) = self.heap.peek() {
            if self.is_live(*seq, key) {
                return;
            }
            self.heap.pop();
        }
    }

    /// When the earliest waiting check is due (`None`: nothing waits).
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        self.skip_stale();
        self.heap.peek().map(|Reverse((due, _, _))| *due)
    }

    /// The next check due at `until` or earlier, now marked running, with
    /// the instant it was due; `None` when none is due.
    pub(crate) fn pop_due(&mut self, until: Instant) -> Option<(K, Instant)> {
        self.skip_stale();
        let Reverse((due, _, key)) = *self.heap.peek()?;
        if due > until {
            return None;
        }
        self.heap.pop();
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.state = State::Running;
        }
        Some((key, due))
    }

    /// A run of `key` that was due at `due` ended at `now`: true when its
    /// result is wanted (the check is still scheduled and was running), and
    /// then it is due again at [`next_due`] (an `interval` after `due`, so a
    /// run handed out a little early or started a little late keeps the
    /// rate). False for a check removed (or replaced) meanwhile: drop its
    /// result.
    pub(crate) fn finished(&mut self, key: K, due: Instant, now: Instant) -> bool {
        match self.entries.get(&key) {
            Some(Entry {
                interval,
                state: State::Running,
            }) => {
                let due = next_due(due, *interval, now);
                let interval = *interval;
                self.push(key, interval, due);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// The key of the next check due at `until`.
    fn key<K: Copy + Ord + Hash>(s: &mut Schedule<K>, until: Instant) -> Option<K> {
        s.pop_due(until).map(|(k, _)| k)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn checks_come_due_in_order_of_their_deadlines() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.add('b', S, t0 + ms(20));
        s.add('a', S, t0 + ms(10));
        s.add('c', S, t0 + ms(30));
        assert_eq!(s.next_deadline(), Some(t0 + ms(10)));
        assert_eq!(key(&mut s, t0), None);
        assert_eq!(key(&mut s, t0 + ms(25)), Some('a'));
        assert_eq!(key(&mut s, t0 + ms(25)), Some('b'));
        assert_eq!(key(&mut s, t0 + ms(25)), None);
        assert_eq!(s.next_deadline(), Some(t0 + ms(30)));
    }

    #[test]
    fn a_running_check_is_not_due_again_until_it_finished() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.add(1, S, t0);
        assert_eq!(key(&mut s, t0), Some(1));
        // Hung: long past its next due time, still not handed out twice.
        assert_eq!(key(&mut s, t0 + 10 * S), None);
        assert_eq!(s.next_deadline(), None);
        assert!(s.finished(1, t0, t0 + 10 * S));
        // Overran: due at once.
        assert_eq!(s.next_deadline(), Some(t0 + 10 * S));
        assert_eq!(key(&mut s, t0 + 10 * S), Some(1));
    }

    #[test]
    fn fixed_rate_counts_from_when_the_previous_run_was_due() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.add(7, S, t0 + ms(40));
        // Handed out 40 ms early (a batch), still due at t0 + 40 ms.
        assert_eq!(s.pop_due(t0 + ms(50)), Some((7, t0 + ms(40))));
        assert!(s.finished(7, t0 + ms(40), t0 + ms(300)));
        assert_eq!(s.next_deadline(), Some(t0 + ms(1040)));
        assert_eq!(next_due(t0, S, t0 + ms(1500)), t0 + ms(1500));
    }

    #[test]
    fn one_hung_check_holds_up_no_other() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        for k in 0..50 {
            s.add(k, S, t0);
        }
        let mut runs = [0u32; 50];
        // Every second all due checks run; check 13 never finishes.
        for second in 0..5u32 {
            let now = t0 + S * second;
            while let Some((k, _)) = s.pop_due(now) {
                runs[k] += 1;
                if k != 13 {
                    assert!(s.finished(k, now, now + ms(2)));
                }
            }
        }
        assert_eq!(runs[13], 1);
        assert!(runs.iter().enumerate().all(|(k, &n)| k == 13 || n == 5));
    }

    #[test]
    fn removing_cancels_future_runs_and_the_result_in_flight() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.add('w', S, t0);
        s.add('r', S, t0);
        s.add('k', S, t0 + ms(5));
        // Due at the same time: in the order they were scheduled.
        assert_eq!(key(&mut s, t0), Some('w'));
        assert_eq!(key(&mut s, t0), Some('r'));
        assert!(s.finished('w', t0, t0 + ms(1)));
        // 'w' waits, 'r' runs: both removed.
        s.remove(&'w');
        s.remove(&'r');
        assert!(!s.finished('r', t0, t0 + ms(2)));
        assert_eq!(s.len(), 1);
        assert_eq!(key(&mut s, t0 + 3 * S), Some('k'));
        assert_eq!(key(&mut s, t0 + 3 * S), None);
        // Finishing something never scheduled is unwanted too.
        assert!(!s.finished('x', t0, t0));
    }

    #[test]
    fn re_adding_a_running_key_drops_the_old_run() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.add(1, S, t0);
        assert_eq!(key(&mut s, t0), Some(1));
        s.add(1, 2 * S, t0 + ms(10));
        // The old run's end is unwanted; the new entry keeps its own time.
        assert!(!s.finished(1, t0, t0 + ms(5)));
        assert_eq!(s.next_deadline(), Some(t0 + ms(10)));
        s.clear();
        assert_eq!((s.len(), s.next_deadline()), (0, None));
    }
}
