//! RunCommand: every `interval`, runs `command` with `arguments` (no shell)
//! and reports up when it exits with status 0, down otherwise.
//!
//! The command runs in a process group of its own. The group is killed with
//! SIGKILL when the command overruns `timeout`, when the monitor stops (its
//! handle's waker kills it at once), and after the command exits, so that
//! children it left behind do not pile up; leftovers are logged with their
//! PIDs. The thread polls for the exit with `waitid(WNOWAIT)` and never
//! installs a SIGCHLD handler; the exited command is reaped only after its
//! group was killed, so the group id cannot have been reused meanwhile.
//!
//! The identifiers `server.host`, `server.ip`, `server.port` and
//! `server.weight` in the arguments are replaced when the monitor starts
//! ([`substitute`]). The command gets an empty environment but for a fixed
//! `PATH` (PyBal ran it with an empty environment). With `log-output`, what
//! it prints on stdout and stderr is logged line by line, control characters
//! escaped.

use super::{
    Body, Check, CheckError, CheckOutcome, Checked, Monitor, MonitorContext, MonitorTarget, Step,
    Waker,
};
use crate::config::RunCommandOptions;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use prometheus::HistogramVec;
use std::io::{ErrorKind, Read};
use std::os::fd::AsFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// `PATH` of the command's environment.
const COMMAND_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// First and longest pause between two looks at a running command.
const FIRST_POLL: Duration = Duration::from_millis(2);
const MAX_POLL: Duration = Duration::from_millis(100);
/// Most output logged per stream and run; the rest is counted, not kept.
const MAX_OUTPUT: usize = 64 * 1024;

static RUN_DURATION: LazyLock<HistogramVec> = LazyLock::new(|| {
    crate::status::metrics::histogram_vec(
        "pybal_monitor_runcommand_run_duration_seconds",
        "RunCommand monitor: duration of one run of the command",
        &["service", "host", "monitor", "result", "exitcode"],
        vec![
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
        ],
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
                .observe(took.as_secs_f64())
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
        let mut stdout = Capture::new(child.stdout.take());
        let mut stderr = Capture::new(child.stderr.take());
        let Some(pgid) = *lock(&self.running) else {
            // A pid beyond i32: cannot happen on Linux; do not leave it running.
            let _ = child.kill();
            let ended = reap(&mut child);
            return (ended, stdout, stderr);
        };
        let deadline = started + self.opts.timeout;
        let mut pause = FIRST_POLL;
        let ended = loop {
            stdout.drain();
            stderr.drain();
            match waitid(
                Id::Pid(pgid),
                WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
            ) {
                Ok(WaitStatus::StillAlive) => {}
                Ok(_) => {
                    self.kill_leftovers(pgid, log_target, &ctx.target.host);
                    break self.reap(&mut child);
                }
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    self.kill_group(pgid);
                    let _ = self.reap(&mut child);
                    let why = format!("cannot wait for {}: {e}", self.opts.command);
                    break Ended::Failed(CheckError::io(Step::Use, &e.into(), why));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                self.kill_group(pgid);
                let _ = self.reap(&mut child);
                break Ended::TimedOut(self.opts.timeout);
            }
            if !ctx.sleep(pause.min(deadline - now)) {
                self.kill_group(pgid);
                let _ = self.reap(&mut child);
                break Ended::Stopped;
            }
            pause = (pause * 2).min(MAX_POLL);
        };
        stdout.drain();
        stderr.drain();
        (ended, stdout, stderr)
    }

    fn kill_group(&self, pgid: Pid) {
        let _ = killpg(pgid, Signal::SIGKILL);
    }

    /// After the command exited (still unreaped): kills what is left in its
    /// group and says so.
    fn kill_leftovers(&self, pgid: Pid, log_target: &str, host: &str) {
        let left = group_members(pgid.as_raw());
        let killed = killpg(pgid, Signal::SIGKILL);
        let pids = match &left {
            Ok(pids) if pids.is_empty() => return,
            Ok(pids) => {
                let pids: Vec<String> = pids.iter().map(i32::to_string).collect();
                format!(" (PIDs {})", pids.join(", "))
            }
            // Without /proc we cannot tell; the group was killed anyway.
            Err(_) => return,
        };
        match killed {
            Ok(()) | Err(Errno::ESRCH) => log::warn!(target: log_target,
                "{host}: Command {} left child processes behind{pids}, which have been killed",
                self.command_line()),
            Err(e) => log::warn!(target: log_target,
                "{host}: Command {} left child processes behind{pids}, and not all could be killed: {e}",
                self.command_line()),
        }
    }

    /// Reaps the command (clearing the shared group id first).
    fn reap(&self, child: &mut Child) -> Ended {
        lock(&self.running).take();
        reap(child)
    }
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

/// PIDs of the live (not zombie) processes in process group `pgid` other
/// than its leader, from `/proc`.
fn group_members(pgid: i32) -> std::io::Result<Vec<i32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == pgid {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // gone meanwhile
        };
        if let Some((state, group)) = parse_stat(&stat) {
            if group == pgid && state != 'Z' && state != 'X' {
                pids.push(pid);
            }
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// (state, process group) from the text of `/proc/<pid>/stat`.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    // The command name (2nd field) is in parentheses and may hold anything.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some((state, pgrp))
}

/// What the command printed on one stream, read without blocking.
struct Capture {
    pipe: Option<Box<dyn Read + Send>>,
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

    fn new<P: Read + AsFd + Send + 'static>(pipe: Option<P>) -> Self {
        let pipe = pipe.filter(|p| fcntl(p.as_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_ok());
        Capture {
            pipe: pipe.map(|p| Box::new(p) as Box<dyn Read + Send>),
            ..Capture::none()
        }
    }

    /// Reads what is there now, keeping at most [`MAX_OUTPUT`] bytes.
    fn drain(&mut self) {
        let Some(pipe) = self.pipe.as_mut() else {
            return;
        };
        let mut chunk = [0u8; 4096];
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
                Err(_) => return, // WouldBlock: nothing more for now
            }
        }
    }

    /// Logs the output, one line per line, as `Cmd <stream>: …`.
    fn log(&self, log_target: &str, host: &str, stream: &str) {
        let text = String::from_utf8_lossy(&self.data);
        for line in text.lines() {
            log::debug!(target: log_target, "{host}: Cmd {stream}: {}", escape_control(line));
        }
        if self.dropped > 0 {
            log::debug!(target: log_target,
                "{host}: Cmd {stream}: ({} more bytes not logged)", self.dropped);
        }
    }
}

/// `text` with control characters escaped (`\t`, `\r`, `\x1b`, …).
fn escape_control(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
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

    #[test]
    fn proc_stat_fields() {
        assert_eq!(
            parse_stat("1234 (sleep) S 1 1200 1200 0 -1 4194560"),
            Some(('S', 1200))
        );
        assert_eq!(parse_stat("77 (a (b) c) Z 5 77 77 0"), Some(('Z', 77)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 notanumber"), None);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape_control("a\tb\rc\x1bd\u{85}é"),
            "a\\tb\\rc\\x1bd\\x85é"
        );
    }

    #[test]
    fn runs_and_kills_leftovers() {
        // A real run: the child exits 0 and leaves a sleeping grandchild,
        // which must be gone once the run is over.
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let opts = RunCommandOptions {
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            command: "/bin/sh".into(),
            arguments: vec![
                "-c".into(),
                format!(
                    "sleep 1000 & echo $! > {}; echo out server.port",
                    pidfile.display()
                ),
            ],
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
        let (ended, stdout, _) = monitor.execute(&ctx, "test");
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
                .and_then(|s| parse_stat(&s))
                .is_none_or(|(state, _)| state == 'Z' || state == 'X')
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(), "leftover sleep {pid} still running");
    }
}
