//! What RunCommand's commands leave behind. rsbal is the child subreaper of
//! its own descendants ([`become_subreaper`], at daemon start), so a process
//! a command started that `setsid`s or `setpgid`s away from the command's
//! process group is re-parented to rsbal, not to init, when its parent ends.
//! After each run the monitor kills and reaps every such leftover
//! ([`Cleanup`]): members of the command's process group, the descendants
//! seen while it ran (by pid and start time, so that a reused pid is never
//! taken for one), and rsbal's children in another session (a `setsid`
//! escapee re-parented to rsbal).
//!
//! Only those pids are waited for (`waitpid(pid, WNOHANG)`), never `-1`:
//! the IPVS writer's `ipvsadm` children share rsbal's session and are never
//! touched, and there is no SIGCHLD handler. One lock serialises the
//! clean-ups of all RunCommand threads, so a pid found here cannot be reaped
//! and reused by another clean-up between the look and the kill.
//!
//! The pure part reads `/proc/<pid>/stat` texts ([`parse_stat`]) and decides
//! ([`descendants`], [`leftovers`]); the rest is a thin shell.

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, getsid, Pid};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcStat {
    pub(super) pid: i32,
    pub(super) state: char,
    pub(super) ppid: i32,
    pub(super) pgid: i32,
    pub(super) sid: i32,
    /// Start time in clock ticks since boot: with the pid, the identity of
    /// a process across pid reuse.
    pub(super) start: u64,
}

impl ProcStat {
    pub(super) fn id(&self) -> ProcId {
        ProcId {
            pid: self.pid,
            start: self.start,
        }
    }

    fn is_zombie(&self) -> bool {
        self.state == 'Z' || self.state == 'X'
    }
}

/// One process, told apart from a later one with the same pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct ProcId {
    pub(super) pid: i32,
    pub(super) start: u64,
}

/// The fields of `/proc/<pid>/stat` that matter here.
pub(super) fn parse_stat(pid: i32, stat: &str) -> Option<ProcStat> {
    // The command name (2nd field) is in parentheses and may hold anything.
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let number = |i: usize| fields.get(i)?.parse::<i64>().ok();
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: i32::try_from(number(1)?).ok()?,
        pgid: i32::try_from(number(2)?).ok()?,
        sid: i32::try_from(number(3)?).ok()?,
        start: u64::try_from(number(19)?).ok()?,
    })
}

/// Every process in `/proc` (those gone while reading are skipped).
pub(super) fn processes() -> std::io::Result<Vec<ProcStat>> {
    use std::io::Read;
    let mut procs = Vec::new();
    // One buffer with room for a whole line: one read per process.
    let mut stat = String::with_capacity(1024);
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        stat.clear();
        let read = std::fs::File::open(entry.path().join("stat"))
            .and_then(|mut file| file.read_to_string(&mut stat));
        if read.is_ok() {
            procs.extend(parse_stat(pid, &stat));
        }
    }
    Ok(procs)
}

/// The descendants of `root` (children, their children, …), not `root`.
pub(super) fn descendants(procs: &[ProcStat], root: i32) -> Vec<ProcId> {
    let mut children: HashMap<i32, Vec<&ProcStat>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut found = Vec::new();
    let mut todo = vec![root];
    while let Some(parent) = todo.pop() {
        for child in children.get(&parent).into_iter().flatten() {
            if child.pid != root && !found.contains(&child.id()) {
                found.push(child.id());
                todo.push(child.pid);
            }
        }
    }
    found
}

/// What is left of a command once it ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Leftovers {
    /// Still running: to be killed.
    pub(super) alive: Vec<i32>,
    /// rsbal's children among them (running or zombies): to be reaped.
    pub(super) ours: Vec<i32>,
    /// All of them.
    pub(super) seen: Vec<ProcId>,
}

/// Which processes of `procs` a command left behind: the members of its
/// process `group` but its leader (reaped as the command), the processes in
/// `tracked`, and rsbal's (`me`) children in another session than rsbal's
/// (`my_sid`).
pub(super) fn leftovers(
    procs: &[ProcStat],
    me: i32,
    my_sid: i32,
    group: Option<i32>,
    tracked: &BTreeSet<ProcId>,
) -> Leftovers {
    let mut left = Leftovers::default();
    for p in procs {
        if Some(p.pid) == group || p.pid == me {
            continue;
        }
        let escaped = p.ppid == me && p.sid != my_sid;
        if Some(p.pgid) == group || tracked.contains(&p.id()) || escaped {
            left.seen.push(p.id());
            if !p.is_zombie() {
                left.alive.push(p.pid);
            }
            if p.ppid == me {
                left.ours.push(p.pid);
            }
        }
    }
    left
}

/// Makes rsbal the reaper of its orphaned descendants (`PR_SET_CHILD_SUBREAPER`).
pub(crate) fn become_subreaper() {
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        log::warn!("cannot become the child subreaper ({e}): processes that RunCommand commands detach (setsid) will not be killed");
    }
}

/// Leftovers that could not be reaped yet (killed but not dead); tried again
/// by every later clean-up.
static UNREAPED: Mutex<BTreeSet<ProcId>> = Mutex::new(BTreeSet::new());

fn unreaped() -> MutexGuard<'static, BTreeSet<ProcId>> {
    UNREAPED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long a clean-up waits for killed processes to become reapable.
const REAP_WAIT: Duration = Duration::from_millis(300);

/// Kills what a command left behind (see [`leftovers`]) and reaps those
/// that are rsbal's children. Returns the PIDs killed and every leftover
/// seen (for a second clean-up once the command is reaped and its children
/// are rsbal's). `group` is the command's process group, still held by its
/// unreaped leader; `tracked` its descendants seen while it ran.
pub(super) fn clean_up(
    group: Option<i32>,
    tracked: &BTreeSet<ProcId>,
) -> (Vec<i32>, BTreeSet<ProcId>) {
    // The lock of UNREAPED serialises clean-ups (see the module doc).
    let mut pending = unreaped();
    let me = getpid().as_raw();
    let Ok(my_sid) = getsid(None).map(Pid::as_raw) else {
        return (Vec::new(), BTreeSet::new());
    };
    let mut wanted: BTreeSet<ProcId> = tracked.clone();
    wanted.extend(pending.iter().copied());
    let mut killed = Vec::new();
    let deadline = Instant::now() + REAP_WAIT;
    loop {
        let Ok(procs) = processes() else {
            return (killed, wanted);
        };
        let left = leftovers(&procs, me, my_sid, group, &wanted);
        wanted.extend(left.seen.iter().copied());
        for pid in &left.alive {
            if kill(Pid::from_raw(*pid), Signal::SIGKILL).is_ok() && !killed.contains(pid) {
                killed.push(*pid);
            }
        }
        let mut waiting = Vec::new();
        for pid in &left.ours {
            match waitpid(Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => waiting.push(*pid),
                Ok(_) | Err(_) => {}
            }
        }
        let still: Vec<ProcId> = procs
            .iter()
            .filter(|p| waiting.contains(&p.pid))
            .map(ProcStat::id)
            .collect();
        if still.is_empty() || Instant::now() >= deadline {
            *pending = still.into_iter().collect();
            break;
        }
        wanted.extend(still);
        std::thread::sleep(Duration::from_millis(10));
    }
    killed.sort_unstable();
    (killed, wanted)
}

/// At shutdown: kills and reaps what earlier commands left behind.
pub(crate) fn clean_up_at_exit() {
    let (killed, _) = clean_up(None, &BTreeSet::new());
    if !killed.is_empty() {
        let pids: Vec<String> = killed.iter().map(i32::to_string).collect();
        log::warn!(
            "killed processes left behind by RunCommand commands (PIDs {})",
            pids.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pid: i32, state: char, ppid: i32, pgid: i32, sid: i32) -> ProcStat {
        ProcStat {
            pid,
            state,
            ppid,
            pgid,
            sid,
            start: 1000 + pid as u64,
        }
    }

    #[test]
    fn stat_fields() {
        let stat = "1234 (sl) ee)p) S 1 1200 1100 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 98765 1 2";
        assert_eq!(
            parse_stat(1234, stat),
            Some(ProcStat {
                pid: 1234,
                state: 'S',
                ppid: 1,
                pgid: 1200,
                sid: 1100,
                start: 98765
            })
        );
        assert_eq!(parse_stat(1, "garbage"), None);
        assert_eq!(parse_stat(1, "1 (x) S 1 notanumber 1 0"), None);
        assert_eq!(parse_stat(1, "1 (x) S 1 2 3"), None, "too short");
    }

    #[test]
    fn descendants_follow_the_tree() {
        let procs = [
            p(10, 'S', 1, 10, 10),  // rsbal
            p(20, 'S', 10, 20, 10), // the command
            p(21, 'S', 20, 20, 10),
            p(22, 'S', 21, 22, 22), // setsid'd grandchild
            p(23, 'Z', 20, 20, 10),
            p(30, 'S', 10, 10, 10), // ipvsadm
        ];
        let mut found: Vec<i32> = descendants(&procs, 20).iter().map(|id| id.pid).collect();
        found.sort_unstable();
        assert_eq!(found, [21, 22, 23]);
        assert!(descendants(&procs, 30).is_empty());
    }

    #[test]
    fn leftovers_are_the_group_the_tracked_and_escaped_children() {
        let me = 10;
        let procs = [
            p(10, 'S', 1, 10, 10),
            p(20, 'Z', 10, 20, 10), // the command, exited: its own reaper
            p(21, 'S', 10, 20, 10), // group member re-parented to rsbal
            p(24, 'Z', 10, 20, 10), // group member, dead
            p(22, 'S', 10, 22, 22), // setsid'd, re-parented to rsbal
            p(25, 'S', 1, 25, 25),  // setsid'd, someone else's
            p(26, 'S', 40, 26, 10), // setpgid'd, seen while the command ran
            p(30, 'S', 10, 30, 10), // ipvsadm in its own group
            p(31, 'Z', 10, 10, 10), // ipvsadm, exited, not yet waited for
        ];
        let tracked: BTreeSet<ProcId> = [procs[6].id()].into_iter().collect();
        let left = leftovers(&procs, me, 10, Some(20), &tracked);
        assert_eq!(left.alive, [21, 22, 26]);
        assert_eq!(left.ours, [21, 24, 22]);
        assert_eq!(left.seen.len(), 4);
        // A reused pid is not the tracked process.
        let reused = [ProcStat {
            start: 5,
            ..procs[6]
        }];
        assert_eq!(
            leftovers(&reused, me, 10, Some(20), &tracked),
            Leftovers::default()
        );
        // At shutdown (no group): only escaped children.
        let left = leftovers(&procs, me, 10, None, &BTreeSet::new());
        assert_eq!((left.alive, left.ours), (vec![22], vec![22]));
        assert_eq!(left.seen, [procs[4].id()]);
    }
}
