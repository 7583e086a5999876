//! Runs one `ipvsadm` child with a deadline, and owns the set of `ipvsadm`
//! children still running, so that none outlives rsbal.
//!
//! Each child gets its own process group (`process_group(0)`), its stdin is
//! written and its stdout and stderr drained by short helper threads (a
//! child that fills a pipe never blocks on rsbal), and the writer thread
//! polls for its exit until `[global] ipvs-command-timeout`; then the whole
//! group is SIGKILLed and reaped, and the run is an
//! [`IpvsError::CommandTimeout`]. Every running child's group id is in
//! [`RUNNING`] from spawn until reaping; [`kill_all_at_shutdown`] kills
//! them and refuses new ones, so that shutdown leaves no child behind
//! however long the writer is blocked.

use super::error::IpvsError;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// Process groups of the running children; `closed` once shutdown began.
struct Running {
    groups: BTreeSet<i32>,
    closed: bool,
}

static RUNNING: Mutex<Running> = Mutex::new(Running {
    groups: BTreeSet::new(),
    closed: false,
});

/// How long the output pipes may stay open after the child exited (a
/// descendant that escaped the group may hold them).
const PIPE_GRACE: Duration = Duration::from_secs(1);

/// What a finished child left.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: Vec<u8>,
    /// Writing stdin failed (the child exited before reading it all).
    pub(crate) stdin_error: Option<io::Error>,
}

/// Runs `program arg`, feeding it `input` on stdin, for at most `timeout`.
pub(crate) fn run(
    program: &Path,
    arg: &'static str,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Finished, IpvsError> {
    let spawn_error = |source| IpvsError::Spawn {
        program: program.to_path_buf(),
        arg,
        source,
    };
    let mut child = {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        if running.closed {
            return Err(spawn_error(io::Error::other("rsbal is shutting down")));
        }
        let child = Command::new(program)
            .arg(arg)
            .process_group(0)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        running.groups.insert(child.id() as i32);
        child
    };
    let result = supervise(&mut child, input, timeout);
    let group = child.id() as i32;
    if result.is_err() {
        // Timed out, or a helper thread could not be started: nothing of
        // the group may survive.
        let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
    }
    // Out of the set before reaping: afterwards the id may be reused.
    RUNNING
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .groups
        .remove(&group);
    let reaped = child.wait();
    let (stdout, stderr, stdin_error) = result.map_err(|e| match e {
        Failure::TimedOut => IpvsError::CommandTimeout {
            program: program.to_path_buf(),
            arg,
            timeout,
        },
        Failure::Io(source) => IpvsError::Wait {
            program: program.to_path_buf(),
            source,
        },
    })?;
    let status = reaped.map_err(|source| IpvsError::Wait {
        program: program.to_path_buf(),
        source,
    })?;
    Ok(Finished {
        status,
        stdout,
        stderr,
        stdin_error,
    })
}

enum Failure {
    TimedOut,
    Io(io::Error),
}

type Outputs = (Vec<u8>, Vec<u8>, Option<io::Error>);

/// Feeds and drains the child and waits for its exit (not reaped: the
/// caller does that once the group is out of [`RUNNING`]).
fn supervise(
    child: &mut Child,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<Outputs, Failure> {
    let deadline = Instant::now().checked_add(timeout);
    let stdin = match (child.stdin.take(), input) {
        (Some(mut pipe), Some(bytes)) => Some(helper(move || {
            let written = pipe.write_all(&bytes);
            drop(pipe);
            written.err()
        })?),
        _ => None,
    };
    let stdout = drain(child.stdout.take())?;
    let stderr = drain(child.stderr.take())?;
    let mut pause = Duration::from_millis(1);
    loop {
        // Not reaped (WNOWAIT): while the group id is in RUNNING it must
        // stay valid for `kill_all_at_shutdown`.
        match child_exited(child) {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => return Err(Failure::Io(e)),
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            return Err(Failure::TimedOut);
        }
        let left = deadline.map_or(pause, |d| d.saturating_duration_since(now));
        thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    let grace = Instant::now() + PIPE_GRACE;
    let take =
        |rx: crossbeam_channel::Receiver<Vec<u8>>| rx.recv_deadline(grace).unwrap_or_default();
    let stdin_error = stdin.and_then(|rx| rx.recv_deadline(grace).ok().flatten());
    Ok((take(stdout), take(stderr), stdin_error))
}

/// Whether the child has exited, without reaping it.
fn child_exited(child: &Child) -> io::Result<bool> {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    loop {
        match waitid(Id::Pid(Pid::from_raw(child.id() as i32)), flags) {
            Ok(WaitStatus::StillAlive) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// Reads `pipe` to its end on a helper thread.
fn drain<R: Read + Send + 'static>(
    pipe: Option<R>,
) -> Result<crossbeam_channel::Receiver<Vec<u8>>, Failure> {
    match pipe {
        Some(mut pipe) => helper(move || {
            let mut out = Vec::new();
            let _ = pipe.read_to_end(&mut out);
            out
        }),
        None => {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let _ = tx.send(Vec::new());
            Ok(rx)
        }
    }
}

/// Runs `work` on a short-lived thread; its result arrives on the channel.
fn helper<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<crossbeam_channel::Receiver<T>, Failure> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    thread::Builder::new()
        .name("ipvsadm-io".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(Failure::Io)?;
    Ok(rx)
}

/// At shutdown: SIGKILLs the group of every running child and refuses to
/// start new ones. Returns how many groups were killed.
pub(crate) fn kill_all_at_shutdown() -> usize {
    let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
    running.closed = true;
    for group in &running.groups {
        let _ = killpg(Pid::from_raw(*group), Signal::SIGKILL);
    }
    running.groups.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, body: &str) -> std::path::PathBuf {
        let path = dir.join("ipvsadm");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn output_status_and_stdin_of_a_quick_child() {
        let dir = tempfile::tempdir().unwrap();
        let cat = script(dir.path(), "cat; echo oops >&2; exit 3");
        let done = run(
            &cat,
            "-R",
            Some(b"-a x\n".to_vec()),
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(done.status.code(), Some(3));
        assert_eq!(done.stdout, b"-a x\n");
        assert_eq!(done.stderr, b"oops\n");
        assert!(done.stdin_error.is_none());
        // More than a pipe holds, both ways: nobody blocks.
        let big = vec![b'x'; 1 << 20];
        let done = run(&cat, "-R", Some(big.clone()), Duration::from_secs(10)).unwrap();
        assert_eq!(done.stdout.len(), big.len());
    }

    #[test]
    fn a_hanging_child_and_its_group_are_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        // The child and a grandchild of the same group both hang.
        let hang = script(
            dir.path(),
            &format!(
                "sleep 600 & echo $! >> {0}; echo $$ >> {0}; wait",
                pids.display()
            ),
        );
        let started = Instant::now();
        let err = run(&hang, "-Sn", None, Duration::from_millis(300)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(matches!(err, IpvsError::CommandTimeout { .. }), "{err}");
        assert!(
            err.to_string().contains("did not finish within 0.3 s"),
            "{err}"
        );
        let text = std::fs::read_to_string(&pids).unwrap();
        for pid in text.lines().map(|l| l.trim().parse::<i32>().unwrap()) {
            let gone = (0..100).any(|_| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let state = stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .to_string();
                if stat.is_empty() || state.starts_with('Z') {
                    return true;
                }
                thread::sleep(Duration::from_millis(20));
                false
            });
            assert!(gone, "pid {pid} survived the timeout");
        }
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let err = run(
            Path::new("/nonexistent/ipvsadm"),
            "-Sn",
            None,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, IpvsError::Spawn { .. }), "{err}");
    }
}
