//! A stateful fake `ipvsadm` (tests/common/stateful_ipvsadm.py) and the Rust
//! side of it: read the table it keeps, every intermediate table, its
//! journal, and tell it to fail, hang or vanish.
//!
//! The script is copied into its own directory; its table, journal and
//! control files live next to it (see the script's docstring). Like the
//! kernel's `ipvsadm -R`, a batch is applied line by line and stops at the
//! first error: the lines before it stay applied, the failing line and the
//! rest do not, exit status 1.

use super::wait_until;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SCRIPT: &str = include_str!("stateful_ipvsadm.py");

/// One virtual service: scheduler and destinations (`RIP:port` → weight).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Svc {
    pub scheduler: String,
    pub dests: BTreeMap<String, u32>,
}

/// A table keyed by `-t VIP:port` / `-u VIP:port`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpvsTable(pub BTreeMap<String, Svc>);

impl IpvsTable {
    /// Parses `-Sn` lines as the script prints them.
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> IpvsTable {
        let mut t = BTreeMap::new();
        for line in lines {
            let tok: Vec<&str> = line.as_ref().split_whitespace().collect();
            match tok.as_slice() {
                ["-A", flag, addr, rest @ ..] => {
                    let sched = rest
                        .iter()
                        .position(|t| *t == "-s")
                        .and_then(|i| rest.get(i + 1))
                        .unwrap_or(&"wlc");
                    t.insert(
                        format!("{flag} {addr}"),
                        Svc {
                            scheduler: sched.to_string(),
                            dests: BTreeMap::new(),
                        },
                    );
                }
                ["-a", flag, addr, "-r", rip, _fwd, "-w", w] => {
                    t.entry(format!("{flag} {addr}"))
                        .or_insert_with(Svc::default)
                        .dests
                        .insert(rip.to_string(), w.parse().unwrap());
                }
                [] => {}
                other => panic!("unexpected table line {other:?}"),
            }
        }
        IpvsTable(t)
    }

    pub fn service(&self, svc: &str) -> Option<&Svc> {
        self.0.get(svc)
    }

    /// Weight of `rip` in `svc` (`"-t 192.0.2.1:8080"`, `"127.1.0.2:8080"`).
    pub fn weight(&self, svc: &str, rip: &str) -> Option<u32> {
        self.0.get(svc).and_then(|s| s.dests.get(rip)).copied()
    }

    pub fn has_dest(&self, svc: &str, rip: &str) -> bool {
        self.weight(svc, rip).is_some()
    }
}

/// One invocation of the fake, from its journal.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub time: f64,
    pub argv: Vec<String>,
    pub pid: u32,
    /// None while hanging.
    pub rc: Option<i32>,
    pub error: Option<String>,
    /// "run" or "hang".
    pub event: String,
    /// `-R` input lines.
    pub stdin: Vec<String>,
    /// `-R`: the table before the batch, then after each applied line.
    pub tables: Vec<IpvsTable>,
}

impl Invocation {
    pub fn is_restore(&self) -> bool {
        self.argv.first().map(String::as_str) == Some("-R")
    }
    pub fn is_save(&self) -> bool {
        !self.is_restore() && self.argv.iter().any(|a| a.starts_with("-S"))
    }
}

pub struct StatefulIpvsadm {
    pub dir: PathBuf,
    pub script: PathBuf,
}

impl StatefulIpvsadm {
    /// Writes the script to `parent/ipvs/ipvsadm`, with an empty table.
    pub fn new(parent: &Path) -> StatefulIpvsadm {
        let dir = parent.join("ipvs");
        fs::create_dir_all(&dir).unwrap();
        let script = dir.join("ipvsadm");
        fs::write(&script, SCRIPT).unwrap();
        let mut perm = fs::metadata(&script).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        fs::set_permissions(&script, perm).unwrap();
        fs::write(dir.join("table"), "").unwrap();
        StatefulIpvsadm { dir, script }
    }

    /// Replaces the table with these `-Sn` lines (as if set up by hand).
    pub fn seed(&self, lines: &[String]) {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        fs::write(self.dir.join("table"), text).unwrap();
    }

    /// The current table.
    pub fn table(&self) -> IpvsTable {
        let text = fs::read_to_string(self.dir.join("table")).unwrap_or_default();
        IpvsTable::parse(&text.lines().collect::<Vec<_>>())
    }

    pub fn table_text(&self) -> String {
        fs::read_to_string(self.dir.join("table")).unwrap_or_default()
    }

    /// Every invocation so far, oldest first.
    pub fn journal(&self) -> Vec<Invocation> {
        let text = fs::read_to_string(self.dir.join("journal")).unwrap_or_default();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let strings = |v: &serde_json::Value| -> Vec<String> {
                    v.as_array()
                        .map(|a| {
                            a.iter()
                                .map(|s| s.as_str().unwrap_or_default().to_string())
                                .collect()
                        })
                        .unwrap_or_default()
                };
                Invocation {
                    time: v["t"].as_f64().unwrap_or_default(),
                    argv: strings(&v["argv"]),
                    pid: v["pid"].as_u64().unwrap_or_default() as u32,
                    rc: v["rc"].as_i64().map(|r| r as i32),
                    error: v["error"].as_str().map(str::to_string),
                    event: v["event"].as_str().unwrap_or_default().to_string(),
                    stdin: strings(&v["stdin"]),
                    tables: v["tables"]
                        .as_array()
                        .map(|a| a.iter().map(|t| IpvsTable::parse(&strings(t))).collect())
                        .unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The `-R` invocations (batches), including failed ones.
    pub fn batches(&self) -> Vec<Invocation> {
        self.journal()
            .into_iter()
            .filter(Invocation::is_restore)
            .collect()
    }

    /// Every `-R` line received so far (applied or not).
    pub fn commands(&self) -> Vec<String> {
        self.batches().into_iter().flat_map(|b| b.stdin).collect()
    }

    /// Every `-R` line received that starts with `prefix` (`"-D"`, `"-d"`…).
    pub fn commands_starting(&self, prefix: &str) -> Vec<String> {
        self.commands()
            .into_iter()
            .filter(|c| c.starts_with(&format!("{prefix} ")))
            .collect()
    }

    /// Every table the fake has held since it was created, in order: the
    /// table before each batch and after each applied line of it.
    pub fn snapshots(&self) -> Vec<IpvsTable> {
        let mut all = Vec::new();
        for b in self.batches() {
            for t in b.tables {
                if all.last() != Some(&t) {
                    all.push(t);
                }
            }
        }
        if all.last() != Some(&self.table()) {
            all.push(self.table());
        }
        all
    }

    /// The first snapshot, after `rip` had been in `svc`, where it is
    /// missing, with the commands received so far; `None` if it never went.
    pub fn dest_gap(&self, svc: &str, rip: &str) -> Option<String> {
        let snaps = self.snapshots();
        let first = snaps.iter().position(|t| t.has_dest(svc, rip))?;
        let gap = snaps[first..].iter().position(|t| !t.has_dest(svc, rip))?;
        Some(format!(
            "{rip} vanished from {svc} in intermediate table #{}: {:#?}\ncommands: {:#?}",
            first + gap,
            snaps[first + gap],
            self.commands()
        ))
    }

    /// Panics if `rip` ever left `svc` after having been in it.
    pub fn assert_never_removed(&self, svc: &str, rips: &[&str]) {
        for rip in rips {
            if let Some(gap) = self.dest_gap(svc, rip) {
                panic!("healthy destination removed: {gap}");
            }
        }
    }

    /// Panics if `svc` ever left the table after having been in it.
    pub fn assert_service_never_removed(&self, svc: &str) {
        let snaps = self.snapshots();
        if let Some(first) = snaps.iter().position(|t| t.service(svc).is_some()) {
            if let Some(gap) = snaps[first..].iter().position(|t| t.service(svc).is_none()) {
                panic!(
                    "service {svc} vanished in intermediate table #{}; commands: {:#?}",
                    first + gap,
                    self.commands()
                );
            }
        }
    }

    /// Waits until the table satisfies `cond`.
    pub fn wait_table(&self, timeout: Duration, mut cond: impl FnMut(&IpvsTable) -> bool) -> bool {
        wait_until(timeout, || cond(&self.table()))
    }

    fn control(&self, name: &str, on: Option<&str>) {
        let path = self.dir.join(name);
        match on {
            Some(text) => fs::write(path, text).unwrap(),
            None => {
                let _ = fs::remove_file(path);
            }
        }
    }

    /// Every invocation exits 1 with `msg` on stderr (None: stop failing).
    pub fn fail(&self, msg: Option<&str>) {
        self.control("fail", msg);
    }
    /// Only `-Sn` fails.
    pub fn fail_save(&self, msg: Option<&str>) {
        self.control("fail-Sn", msg);
    }
    /// Only `-R` fails (nothing of the batch applied).
    pub fn fail_restore(&self, msg: Option<&str>) {
        self.control("fail-R", msg);
    }
    /// Every invocation hangs forever (false: later ones don't).
    pub fn hang(&self, on: bool) {
        self.control("hang", on.then_some("hang"));
    }
    /// Only `-R` hangs.
    pub fn hang_restore(&self, on: bool) {
        self.control("hang-R", on.then_some("hang"));
    }
    /// The script disappears (renamed away) / comes back.
    pub fn vanish(&self, gone: bool) {
        let away = self.dir.join("ipvsadm.gone");
        if gone {
            fs::rename(&self.script, away).unwrap();
        } else {
            fs::rename(away, &self.script).unwrap();
        }
    }

    /// Pids of invocations that hung.
    pub fn hung_pids(&self) -> Vec<i32> {
        fs::read_to_string(self.dir.join("hung"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

/// Whether process `pid` still exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // "pid (comm) S ..." — the state follows the last ')'.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// `-A -t VIP:port -s sched` as the fake prints it.
pub fn svc_key(vip: &str, port: u16) -> String {
    format!("-t {vip}:{port}")
}

/// `-Sn` lines for a service with destinations (all direct routing).
pub fn saved(vip: &str, port: u16, sched: &str, dests: &[(&str, u32)]) -> Vec<String> {
    let mut lines = vec![format!("-A -t {vip}:{port} -s {sched}")];
    for (rip, w) in dests {
        lines.push(format!("-a -t {vip}:{port} -r {rip}:{port} -g -w {w}"));
    }
    lines
}
