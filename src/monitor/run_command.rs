//! RunCommand: every `interval`, runs `command` with `arguments` (no shell)
//! and reports up when it exits with status 0, down otherwise.
//!
//! The command runs in a process group of its own. The group is killed with
//! SIGKILL when the command overruns `timeout`, when the monitor stops (its
//! handle's waker kills it at once), and after the command exits, so that
//! children it left behind do not pile up. What left the group (`setsid`,
//! `setpgid`) is killed too: the descendants seen while the command ran, and
//! what was re-parented to rsbal, the child subreaper ([`super::reaper`]);
//! leftovers are logged with their PIDs. While the command runs, the thread
//! reads its stdout and stderr as output arrives (`poll(2)` on both pipes,
//! so a command printing megabytes never blocks on a full pipe) and looks
//! for the exit with `waitid(WNOWAIT)` between reads; it never installs a
//! SIGCHLD handler. The exited command is reaped only after its group was
//! killed, so the group id cannot have been reused meanwhile.
//!
//! The identifiers `server.host`, `server.ip`, `server.port` and
//! `server.weight` in the arguments are replaced when the monitor starts
//! ([`substitute`]). The command gets an empty environment but for a fixed
//! `PATH` (PyBal ran it with an empty environment). With `log-output`, what
//! it prints on stdout and stderr is logged line by line (the logger escapes
//! control characters).

use super::{
    reaper, Body, Check, CheckError, CheckOutcome, Checked, Monitor, MonitorContext, MonitorTarget,
    Step, Waker,
};
use crate::config::RunCommandOptions;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use prometheus::GaugeVec;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// `PATH` of the command's environment.
pub(crate) const COMMAND_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// First and longest pause between two looks at a running command.
const FIRST_POLL: Duration = Duration::from_millis(2);
const MAX_POLL: Duration = Duration::from_millis(100);
/// Pause between two looks (in `/proc`) for the descendants of a running
/// command, which are killed when it ends even if they left its group.
const WALK_EVERY: Duration = Duration::from_millis(250);
/// Most output logged per stream and run; the rest is counted, not kept.
const MAX_OUTPUT: usize = 64 * 1024;

/// A gauge of the last run's duration, as PyBal's.
static RUN_DURATION: LazyLock<GaugeVec> = LazyLock::new(|| {
    crate::status::metrics::gauge_vec(
        "pybal_monitor_runcommand_run_duration_seconds",
        "Command duration",
        &["service", "host", "monitor", "result", "exitcode"],
    )
});

/// What the `server.*` identifiers stand for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerVars {
    pub(crate) host: String,
    pub(crate) ip: String,
    pub(crate) port: String,
    pub(crate) weight: String,
}

impl ServerVars {
    pub(crate) fn of(target: &MonitorTarget) -> Self {
        ServerVars {
            host: target.host.clone(),
            ip: target.ip.to_string(),
            port: target.port.to_string(),
            weight: target.weight.to_string(),
        }
    }

    fn value(&self, field: &str) -> Option<&str> {
        match field {
            "host" => Some(&self.host),
            "ip" => Some(&self.ip),
            "port" => Some(&self.port),
            "weight" => Some(&self.weight),
            _ => None,
        }
    }
}

/// `arg` with each `server.host`, `server.ip`, `server.port` and
/// `server.weight` replaced, where it stands as an identifier (not part of a
/// longer name such as `myserver.hostname`).
pub(crate) fn substitute(arg: &str, vars: &ServerVars) -> String {
    const PREFIX: &str = "server.";
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(arg.len());
    let mut copied = 0; // arg[..copied] is already in `out`
    let mut from = 0;
    while let Some(found) = arg[from..].find(PREFIX) {
        let at = from + found;
        let field_start = at + PREFIX.len();
        let field_end = arg[field_start..]
            .find(|c: char| !is_word(c))
            .map_or(arg.len(), |n| field_start + n);
        let own_word = arg[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !is_word(c) && c != '.');
        match vars.value(&arg[field_start..field_end]) {
            Some(value) if own_word => {
                out.push_str(&arg[copied..at]);
                out.push_str(value);
                copied = field_end;
                from = field_end;
            }
            _ => from = field_start,
        }
    }
    out.push_str(&arg[copied..]);
    out
}

/// Up or down (and why), and the metric's `result` and `exitcode`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    outcome: CheckOutcome,
    result: &'static str,
    exitcode: String,
}

/// How one run ended.
#[derive(Debug)]
enum Ended {
    Exited(ExitStatus),
    TimedOut(Duration),
    /// The command could not be started or waited for.
    Failed(CheckError),
    Stopped,
}

fn verdict(ended: &Ended) -> Verdict {
    match ended {
        Ended::Exited(status) => match (status.code(), status.signal()) {
            (Some(0), _) => Verdict {
                outcome: CheckOutcome::Up("command exited with status 0".to_string()),
                result: "successful",
                exitcode: "0".to_string(),
            },
            (Some(code), _) => Verdict {
                outcome: CheckOutcome::down(format!("command failed with exit status {code}")),
                result: "failed",
                exitcode: code.to_string(),
            },
            (None, Some(signal)) => {
                let name = Signal::try_from(signal)
                    .map(Signal::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|_| format!("signal {signal}"));
                Verdict {
                    outcome: CheckOutcome::down(format!("command killed by {name}")),
                    result: "failed",
                    exitcode: name,
                }
            }
            (None, None) => Verdict {
                outcome: CheckOutcome::down(format!("command ended abnormally ({status})")),
                result: "failed",
                exitcode: String::new(),
            },
        },
        Ended::TimedOut(timeout) => Verdict {
            outcome: CheckOutcome::down(format!(
                "command timed out after {}s; its process group was killed",
                timeout.as_secs_f64()
            )),
            result: "timeout",
            exitcode: "SIGKILL".to_string(),
        },
        Ended::Failed(error) => Verdict {
            outcome: CheckOutcome::Down(error.clone()),
            result: "error",
            exitcode: String::new(),
        },
        Ended::Stopped => Verdict {
            outcome: CheckOutcome::down("monitor stopped".to_string()),
            result: "stopped",
            exitcode: String::new(),
        },
    }
}

/// The process group of the command running now, shared with the waker so
/// that stopping the monitor kills it at once. Cleared (under the lock)
/// before the command is reaped, so the waker never signals a stale group.
type RunningGroup = Arc<Mutex<Option<Pid>>>;

fn lock(group: &Mutex<Option<Pid>>) -> MutexGuard<'_, Option<Pid>> {
    group
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) struct RunCommand {
    opts: RunCommandOptions,
    /// `arguments` with the `server.*` identifiers replaced.
    arguments: Vec<String>,
    running: RunningGroup,
}

impl Monitor for RunCommand {
    const NAME: &'static str = "RunCommand";
    type Options = RunCommandOptions;

    /// The monitor for `target` and the waker that kills a running command.
    fn new(opts: &RunCommandOptions, target: &MonitorTarget) -> (Self, Option<Waker>) {
        let vars = ServerVars::of(target);
        let arguments = opts
            .arguments
            .iter()
            .map(|a| substitute(a, &vars))
            .collect();
        let running: RunningGroup = Arc::new(Mutex::new(None));
        let for_waker = Arc::clone(&running);
        let waker: Waker = Box::new(move || {
            if let Some(pgid) = *lock(&for_waker) {
                let _ = killpg(pgid, Signal::SIGKILL);
            }
        });
        let monitor = RunCommand {
            opts: opts.clone(),
            arguments,
            running,
        };
        (monitor, Some(waker))
    }

    /// Scheduled: one run of the command per `interval`.
    fn body(self) -> Body {
        Body::Scheduled {
            interval: self.opts.interval,
            check: Box::new(self),
        }
    }
}

impl Check for RunCommand {
    /// One run of the command.
    fn check(&mut self, ctx: &MonitorContext) -> Option<Checked> {
        let log_target = ctx.log_target();
        let host = &ctx.target.host;
        let started = Instant::now();
        let (ended, stdout, stderr) = self.execute(ctx, &log_target);
        let took = started.elapsed();
        if matches!(ended, Ended::Stopped) {
            return None;
        }
        if self.opts.log_output {
            stdout.log(&log_target, host, "stdout");
            stderr.log(&log_target, host, "stderr");
        }
        let verdict = verdict(&ended);
        // Inside `observe`: no late update re-creates a forgotten series.
        ctx.observe(|[service, host, monitor]| {
            RUN_DURATION
                .with_label_values(&[
                    service,
                    host,
                    monitor,
                    verdict.result,
                    verdict.exitcode.as_str(),
                ])
                .set(took.as_secs_f64())
        });
        log::debug!(target: &log_target, "{host}: {} ({:.3} s)", verdict.outcome.reason(), took.as_secs_f64());
        Some(Checked {
            outcome: verdict.outcome,
            duration: Some(took),
        })
    }
}

impl RunCommand {
    /// The command line, for log lines.
    fn command_line(&self) -> String {
        format!("{} {:?}", self.opts.command, self.arguments)
    }

    /// Runs the command once, until it exits, times out or the monitor stops.
    fn execute(&self, ctx: &MonitorContext, log_target: &str) -> (Ended, Capture, Capture) {
        let mut command = Command::new(&self.opts.command);
        command
            .args(&self.arguments)
            .env_clear()
            .env("PATH", COMMAND_PATH)
            .stdin(Stdio::null())
            .process_group(0);
        if self.opts.log_output {
            command.stdout(Stdio::piped()).stderr(Stdio::piped());
        } else {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        let started = Instant::now();
        let mut child = {
            // Held across the spawn so the waker cannot miss this command.
            let mut running = lock(&self.running);
            match command.spawn() {
                Ok(child) => {
                    *running = i32::try_from(child.id()).ok().map(Pid::from_raw);
                    child
                }
                Err(e) => {
                    let why = format!("cannot run {}: {e}", self.opts.command);
                    let error = CheckError::io(Step::Acquire, &e, why);
                    return (Ended::Failed(error), Capture::none(), Capture::none());
                }
            }
        };
        let mut stdout = Capture::new(child.stdout.take().map(OwnedFd::from));
        let mut stderr = Capture::new(child.stderr.take().map(OwnedFd::from));
        let Some(pgid) = *lock(&self.running) else {
            // A pid beyond i32: cannot happen on Linux; do not leave it running.
            let _ = child.kill();
            let ended = reap(&mut child);
            return (ended, stdout, stderr);
        };
        let deadline = started + self.opts.timeout;
        let mut pause = FIRST_POLL;
        // Descendants seen while the command runs, killed once it ended.
        let mut tracked = BTreeSet::new();
        let mut next_walk = started + 2 * FIRST_POLL;
        let ended = loop {
            let now = Instant::now();
            if now >= next_walk {
                if let Ok(procs) = reaper::processes() {
                    tracked.extend(reaper::descendants(&procs, pgid.as_raw()));
                }
                // From the walk's end: a slow walk never takes over.
                next_walk = Instant::now() + WALK_EVERY;
            }
            match waitid(
                Id::Pid(pgid),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
            ) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(_) => {
                    break self.finish(pgid, &tracked, &mut child, log_target, &ctx.target.host)
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    kill_group(pgid);
                    let _ = self.finish(pgid, &tracked, &mut child, log_target, &ctx.target.host);
                    let why = format!("cannot wait for {}: {e}", self.opts.command);
                    break Ended::Failed(CheckError::io(Step::Use, &e.into(), why));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                kill_group(pgid);
                let _ = self.finish(pgid, &tracked, &mut child, log_target, &ctx.target.host);
                break Ended::TimedOut(self.opts.timeout);
            }
            // Output is read as it comes (a command may print megabytes in
            // a fraction of a second); the pause bounds how late an exit
            // without output is seen.
            let wait = pause.min(deadline - now);
            let open = stdout.is_open() || stderr.is_open();
            let running = if open && read_for(&mut [&mut stdout, &mut stderr], wait) {
                !ctx.stopped()
            } else {
                ctx.sleep(wait)
            };
            if !running {
                kill_group(pgid);
                let _ = self.finish(pgid, &tracked, &mut child, log_target, &ctx.target.host);
                break Ended::Stopped;
            }
            pause = (pause * 2).min(MAX_POLL);
        };
        stdout.drain();
        stderr.drain();
        (ended, stdout, stderr)
    }

    /// Once the command exited or was killed (still unreaped, so its group
    /// id cannot be reused): kills what it left behind, reaps it and what
    /// its end re-parented to rsbal, and says what was killed.
    fn finish(
        &self,
        pgid: Pid,
        tracked: &BTreeSet<reaper::ProcId>,
        child: &mut Child,
        log_target: &str,
        host: &str,
    ) -> Ended {
        // Member by member first, to say which were left; then the group,
        // for whatever /proc did not show.
        let (mut killed, seen) = reaper::clean_up(Some(pgid.as_raw()), tracked);
        kill_group(pgid);
        let ended = self.reap(child);
        if !seen.is_empty() {
            // Its children are rsbal's now: reap them.
            let (more, _) = reaper::clean_up(None, &seen);
            killed.extend(more);
        }
        killed.sort_unstable();
        killed.dedup();
        if !killed.is_empty() {
            let pids: Vec<String> = killed.iter().map(i32::to_string).collect();
            log::warn!(target: log_target,
                "{host}: Command {} left child processes behind (PIDs {}), which have been killed",
                self.command_line(), pids.join(", "));
        }
        ended
    }

    /// Reaps the command (clearing the shared group id first).
    fn reap(&self, child: &mut Child) -> Ended {
        lock(&self.running).take();
        reap(child)
    }
}

/// SIGKILLs process group `pgid`.
fn kill_group(pgid: Pid) {
    let _ = killpg(pgid, Signal::SIGKILL);
}

fn reap(child: &mut Child) -> Ended {
    match child.wait() {
        Ok(status) => Ended::Exited(status),
        Err(e) => {
            let why = format!("cannot wait for the command: {e}");
            Ended::Failed(CheckError::io(Step::Use, &e, why))
        }
    }
}

/// Waits up to `wait` for output on any open stream of `captures` and reads
/// what is there; false when `poll` failed (and nothing was waited for).
fn read_for(captures: &mut [&mut Capture], wait: Duration) -> bool {
    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    let ready: Vec<bool> = {
        let mut fds: Vec<PollFd> = captures
            .iter()
            .filter_map(|c| c.pipe.as_ref())
            .map(|p| PollFd::new(p.as_fd(), PollFlags::POLLIN))
            .collect();
        match poll(&mut fds, ms) {
            Ok(_) => fds.iter().map(|f| f.any().unwrap_or(true)).collect(),
            Err(Errno::EINTR) => return true,
            Err(_) => return false,
        }
    };
    let open = captures.iter_mut().filter(|c| c.pipe.is_some());
    for (capture, ready) in open.zip(ready) {
        if ready {
            capture.drain();
        }
    }
    true
}

/// What the command printed on one stream, read without blocking.
struct Capture {
    pipe: Option<File>,
    data: Vec<u8>,
    /// Bytes read beyond [`MAX_OUTPUT`] (not kept).
    dropped: usize,
}

impl Capture {
    fn none() -> Self {
        Capture {
            pipe: None,
            data: Vec::new(),
            dropped: 0,
        }
    }

    fn new(pipe: Option<OwnedFd>) -> Self {
        let pipe = pipe.filter(|p| fcntl(p.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_ok());
        Capture {
            pipe: pipe.map(File::from),
            ..Capture::none()
        }
    }

    fn is_open(&self) -> bool {
        self.pipe.is_some()
    }

    /// Reads what is there now, keeping at most [`MAX_OUTPUT`] bytes.
    fn drain(&mut self) {
        let Some(pipe) = self.pipe.as_mut() else {
            return;
        };
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match pipe.read(&mut chunk) {
                Ok(0) => {
                    self.pipe = None;
                    return;
                }
                Ok(n) => {
                    let keep = n.min(MAX_OUTPUT.saturating_sub(self.data.len()));
                    self.data.extend_from_slice(&chunk[..keep]);
                    self.dropped += n - keep;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return, // nothing more for now
                Err(_) => {
                    // A broken pipe is not waited on again.
                    self.pipe = None;
                    return;
                }
            }
        }
    }

    /// Logs the output, one line per line, as `Cmd <stream>: …`.
    fn log(&self, log_target: &str, host: &str, stream: &str) {
        let text = String::from_utf8_lossy(&self.data);
        for line in text.lines() {
            // The logger escapes control characters.
            log::debug!(target: log_target, "{host}: Cmd {stream}: {line}");
        }
        if self.dropped > 0 {
            log::debug!(target: log_target,
                "{host}: Cmd {stream}: ({} more bytes not logged)", self.dropped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> ServerVars {
        ServerVars {
            host: "cp1001.eqiad.wmnet".into(),
            ip: "10.0.0.1".into(),
            port: "80".into(),
            weight: "10".into(),
        }
    }

    #[test]
    fn substitutes_server_identifiers() {
        let v = vars();
        assert_eq!(substitute("server.host", &v), "cp1001.eqiad.wmnet");
        assert_eq!(
            substitute("--url=http://server.ip:server.port/", &v),
            "--url=http://10.0.0.1:80/"
        );
        assert_eq!(substitute("-w server.weight", &v), "-w 10");
        assert_eq!(
            substitute("server.hostserver.ip", &v),
            "server.hostserver.ip"
        );
        assert_eq!(substitute("server.host.x", &v), "cp1001.eqiad.wmnet.x");
        // Not identifiers: part of longer names, or unknown fields.
        for kept in [
            "myserver.host",
            "server.hostname",
            "server.name",
            "a.server.ip",
            "server.",
            "server",
            "",
            "plain",
        ] {
            assert_eq!(substitute(kept, &v), kept);
        }
        assert_eq!(substitute("server.ip,server.port", &v), "10.0.0.1,80");
        assert_eq!(substitute("é server.port é", &v), "é 80 é");
    }

    #[test]
    fn substitution_uses_the_target() {
        let target = MonitorTarget {
            service: "svc".into(),
            host: "h".into(),
            ip: "2001:db8::1".parse().unwrap(),
            port: 53,
            weight: 7,
        };
        let v = ServerVars::of(&target);
        assert_eq!(
            substitute("server.host server.ip server.port server.weight", &v),
            "h 2001:db8::1 53 7"
        );
    }

    #[test]
    fn exit_statuses() {
        let exited = |code: i32| verdict(&Ended::Exited(ExitStatus::from_raw(code << 8)));
        let up = exited(0);
        assert!(up.outcome.is_up());
        assert_eq!((up.result, up.exitcode.as_str()), ("successful", "0"));
        let failed = exited(3);
        assert!(!failed.outcome.is_up());
        assert_eq!((failed.result, failed.exitcode.as_str()), ("failed", "3"));
        assert!(failed.outcome.reason().contains("exit status 3"));
        let killed = verdict(&Ended::Exited(ExitStatus::from_raw(15)));
        let reason = killed.outcome.reason();
        assert!(!killed.outcome.is_up());
        assert!(reason.contains("SIGTERM"), "{reason}");
        let timeout = verdict(&Ended::TimedOut(Duration::from_secs(20)));
        assert!(!timeout.outcome.is_up());
        assert!(timeout.outcome.reason().contains("timed out after 20s"));
        let enoent = std::io::Error::from_raw_os_error(Errno::ENOENT as i32);
        let missing = CheckError::io(Step::Acquire, &enoent, "cannot run x");
        assert_eq!(
            verdict(&Ended::Failed(missing)).outcome,
            CheckOutcome::Down(CheckError::Remote("cannot run x".into()))
        );
        let eagain = std::io::Error::from_raw_os_error(Errno::EAGAIN as i32);
        let no_fork = CheckError::io(Step::Acquire, &eagain, "cannot run x");
        let failed = verdict(&Ended::Failed(no_fork));
        assert_eq!(
            failed.outcome,
            CheckOutcome::Down(CheckError::Local("cannot run x".into()))
        );
        assert_eq!(failed.result, "error");
    }

    /// Runs `sh -c script` once, as the monitor does (`server.port` is
    /// 8080): what it ended with, its output and how long it took.
    fn run_once(script: String, timeout: Duration) -> (Ended, Capture, Capture, Duration) {
        let opts = RunCommandOptions {
            interval: Duration::from_secs(60),
            timeout,
            command: "/bin/sh".into(),
            arguments: vec!["-c".into(), script],
            log_output: true,
        };
        let target = MonitorTarget {
            service: "svc".into(),
            host: "h".into(),
            ip: "127.0.0.1".parse().unwrap(),
            port: 8080,
            weight: 1,
        };
        let (monitor, _waker) = RunCommand::new(&opts, &target);
        let (tx, _rx) = crossbeam_channel::unbounded();
        let (_stop_tx, stop_rx) = crossbeam_channel::bounded(0);
        let ctx = MonitorContext {
            name: RunCommand::NAME,
            target,
            server_id: 1,
            monitor: 0,
            reports: tx,
            stop: stop_rx,
        };
        let t0 = Instant::now();
        let (ended, stdout, stderr) = monitor.execute(&ctx, "test");
        (ended, stdout, stderr, t0.elapsed())
    }

    #[test]
    fn megabytes_of_output_are_read_as_they_come_and_only_64k_kept() {
        // 4 MiB on stdout and 1 MiB on stderr: slow reading would block the
        // command on a full pipe until the timeout.
        let script =
            "head -c 4194304 /dev/zero | tr '\\000' x; head -c 1048576 /dev/zero >&2".to_string();
        let (ended, stdout, stderr, took) = run_once(script, Duration::from_secs(20));
        assert!(verdict(&ended).outcome.is_up(), "{ended:?} after {took:?}");
        assert_eq!(stdout.data.len(), MAX_OUTPUT);
        assert_eq!(stdout.dropped, 4 * 1024 * 1024 - MAX_OUTPUT);
        assert_eq!(stderr.data.len(), MAX_OUTPUT);
        assert_eq!(stderr.dropped, 1024 * 1024 - MAX_OUTPUT);
    }

    #[test]
    fn a_command_over_its_timeout_is_killed() {
        let (ended, _, _, took) = run_once("sleep 30".into(), Duration::from_millis(300));
        assert!(matches!(ended, Ended::TimedOut(_)), "{ended:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
    }

    #[test]
    fn runs_and_kills_leftovers() {
        // A real run: the child exits 0 and leaves a sleeping grandchild,
        // which must be gone once the run is over.
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!(
            "sleep 1000 & echo $! > {}; echo out server.port",
            pidfile.display()
        );
        let (ended, stdout, _, _) = run_once(script, Duration::from_secs(10));
        assert!(verdict(&ended).outcome.is_up(), "{ended:?}");
        assert_eq!(String::from_utf8_lossy(&stdout.data), "out 8080\n");
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let gone = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| reaper::parse_stat(pid, &s))
                .is_none_or(|p| p.state == 'Z' || p.state == 'X')
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(), "leftover sleep {pid} still running");
    }
}
