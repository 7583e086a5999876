//! Real-kernel harness: boots the Debian kernel under qemu (TCG) with an
//! initramfs holding busybox, the kernel's IPVS modules, Debian's `ipvsadm`
//! and a statically linked rsbal, runs one guest scenario script and hands
//! back what it printed on the serial console.
//!
//! Guest scripts (`tests/kernel/guest/`) report with lines
//! `RESULT <name> ok|fail [detail]` and `TABLE <name> begin|end` around
//! `TABLE-LINE <ipvsadm -Sn line>`; [`GuestRun`] parses them. Used by
//! `tests/kernel.rs` and `benches/ipvs_apply.rs`.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// Modules the guest loads (their dependencies come from `modules.dep`).
/// `libcrc32c` needs a crc32c implementation, a soft dependency.
const MODULES: &[&str] = &[
    "crc32c_generic",
    "ip_vs",
    "ip_vs_rr",
    "ip_vs_wrr",
    "ip_vs_wlc",
    "ip_vs_sh",
];
/// Debian packages the harness needs on the host, by the file it uses.
const NEEDS: &[(&str, &str)] = &[
    ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
    ("/bin/busybox", "busybox-static"),
    ("/usr/sbin/ipvsadm", "ipvsadm"),
];

/// Fails with the Debian package to install when something is missing.
fn require_host_tools() {
    for (file, package) in NEEDS {
        assert!(
            Path::new(file).exists(),
            "{file} is missing: install the Debian package {package} (listed in .ci/packages)"
        );
    }
}

/// Builds rsbal statically (release, stripped) in its own target directory,
/// so that the normal build is not disturbed. Returns the binary.
pub fn static_rsbal() -> PathBuf {
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kernel-static");
    let triple = "x86_64-unknown-linux-gnu";
    let out = Command::new(env!("CARGO"))
        .args(["build", "--release", "--bin", "rsbal", "--target", triple])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(MANIFEST_DIR)
        // With --target, build scripts and proc macros stay dynamic.
        .env_remove("RUSTFLAGS")
        .env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+crt-static")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "0")
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .stdin(Stdio::null())
        .output()
        .expect("cannot run cargo");
    assert!(
        out.status.success(),
        "static build of rsbal failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target_dir.join(triple).join("release").join("rsbal")
}

/// The newest `/boot/vmlinuz-*` that has a modules directory.
fn debian_kernel() -> (PathBuf, PathBuf) {
    let mut found: Vec<(PathBuf, PathBuf)> = fs::read_dir("/boot")
        .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|p| {
            let version = p
                .file_name()?
                .to_str()?
                .strip_prefix("vmlinuz-")?
                .to_string();
            let modules = Path::new("/lib/modules").join(&version);
            modules.join("modules.dep").exists().then_some((p, modules))
        })
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("no /boot/vmlinuz-* with /lib/modules/<version>: install linux-image-amd64 (listed in .ci/packages)")
    })
}

/// Module file paths (relative to the modules dir) in load order.
fn module_load_order(modules_dir: &Path) -> Vec<String> {
    let dep_text = fs::read_to_string(modules_dir.join("modules.dep")).expect("modules.dep");
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut by_name: BTreeMap<String, String> = BTreeMap::new();
    for line in dep_text.lines() {
        let Some((module, rest)) = line.split_once(':') else {
            continue;
        };
        let name = Path::new(module)
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split(".ko").next())
            .unwrap_or_default()
            .replace('-', "_");
        by_name.insert(name, module.to_string());
        deps.insert(
            module.to_string(),
            rest.split_whitespace().map(str::to_string).collect(),
        );
    }
    fn visit(
        m: &str,
        deps: &BTreeMap<String, Vec<String>>,
        seen: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(m.to_string()) {
            return;
        }
        for d in deps.get(m).into_iter().flatten() {
            visit(d, deps, seen, out);
        }
        out.push(m.to_string());
    }
    let (mut seen, mut out) = (BTreeSet::new(), Vec::new());
    for name in MODULES {
        let path = by_name
            .get(*name)
            .unwrap_or_else(|| panic!("kernel module {name} not in modules.dep"));
        visit(path, &deps, &mut seen, &mut out);
    }
    for m in &out {
        assert!(
            m.ends_with(".ko"),
            "{m}: compressed modules are not supported by busybox insmod here"
        );
    }
    out
}

/// The shared libraries `ldd` lists for `binary`, with the loader.
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .expect("cannot run ldd");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// A newc cpio archive, as the kernel unpacks an initramfs.
#[derive(Default)]
pub struct Cpio {
    out: Vec<u8>,
    dirs: BTreeSet<String>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let name = name.trim_start_matches('/');
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    /// A directory and its parents, each once.
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        if path.is_empty() || self.dirs.contains(path) {
            return;
        }
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.dirs.insert(path.to_string());
        self.entry(path, 0o040755, (0, 0), &[]);
    }

    fn parent(&mut self, path: &str) {
        if let Some((parent, _)) = path.trim_matches('/').rsplit_once('/') {
            self.dir(parent);
        }
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.parent(path);
        self.entry(path, 0o100000 | mode, (0, 0), data);
    }

    pub fn char_device(&mut self, path: &str, major: u32, minor: u32) {
        self.parent(path);
        self.entry(path, 0o020600, (major, minor), &[]);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}

fn read(path: &Path) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn guest_script(name: &str) -> Vec<u8> {
    read(
        &Path::new(MANIFEST_DIR)
            .join("tests/kernel/guest")
            .join(name),
    )
}

/// What a guest printed.
pub struct GuestRun {
    pub console: String,
    /// `RESULT` lines: name → (ok, detail), in order.
    pub results: Vec<(String, bool, String)>,
    /// `TABLE` blocks by name.
    pub tables: BTreeMap<String, Vec<String>>,
    /// Whether the guest reached the end of its scenario.
    pub finished: bool,
}

impl GuestRun {
    fn parse(console: String, finished: bool) -> GuestRun {
        let mut results = Vec::new();
        let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut open: Option<String> = None;
        for line in console.lines() {
            let line = line.trim_end_matches('\r');
            let mut words = line.splitn(4, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("RESULT"), Some(name), Some(status)) => results.push((
                    name.to_string(),
                    status == "ok",
                    words.next().unwrap_or_default().to_string(),
                )),
                (Some("TABLE"), Some(name), Some("begin")) => {
                    open = Some(name.to_string());
                    tables.entry(name.to_string()).or_default();
                }
                (Some("TABLE"), Some(_), Some("end")) => open = None,
                _ => {
                    if let (Some(name), Some(rest)) = (&open, line.strip_prefix("TABLE-LINE ")) {
                        tables
                            .entry(name.clone())
                            .or_default()
                            .push(rest.to_string());
                    }
                }
            }
        }
        GuestRun {
            console,
            results,
            tables,
            finished,
        }
    }

    /// Whether `name` was reported ok.
    pub fn ok(&self, name: &str) -> bool {
        self.results.iter().any(|(n, ok, _)| n == name && *ok)
    }

    /// Asserts that each of `names` was reported, and ok; reports all
    /// failures at once with the console output.
    pub fn assert_ok(&self, names: &[&str]) {
        let mut problems = Vec::new();
        for name in names {
            match self.results.iter().find(|(n, _, _)| n == name) {
                None => problems.push(format!("{name}: not reported")),
                Some((_, false, detail)) => problems.push(format!("{name}: FAILED {detail}")),
                Some(_) => {}
            }
        }
        assert!(
            problems.is_empty(),
            "guest checks failed:\n  {}\n---- guest console ----\n{}",
            problems.join("\n  "),
            self.console
        );
    }
}

/// Boots the guest with `tests/kernel/guest/<scenario>` as its scenario and
/// returns what it printed; kills qemu after `limit`.
pub fn boot(scenario: &str, limit: Duration) -> GuestRun {
    require_host_tools();
    let (kernel, modules_dir) = debian_kernel();
    let started = Instant::now();
    let rsbal = static_rsbal();
    eprintln!(
        "kernel harness: static rsbal ready in {:.1?}",
        started.elapsed()
    );
    let work = tempfile::tempdir().expect("tempdir");

    let mut cpio = Cpio::default();
    for dir in [
        "proc", "sys", "dev", "tmp", "run", "sbin", "usr/bin", "usr/sbin", "www",
    ] {
        cpio.dir(dir);
    }
    cpio.char_device("dev/console", 5, 1);
    cpio.file("init", 0o755, &guest_script("init.sh"));
    cpio.file("test/lib.sh", 0o644, &guest_script("lib.sh"));
    cpio.file("test/scenario.sh", 0o755, &guest_script(scenario));
    cpio.file("bin/busybox", 0o755, &read(Path::new("/bin/busybox")));
    cpio.file("bin/rsbal", 0o755, &read(&rsbal));
    let ipvsadm = Path::new("/usr/sbin/ipvsadm");
    cpio.file("sbin/ipvsadm", 0o755, &read(ipvsadm));
    for lib in shared_libraries(ipvsadm) {
        cpio.file(&lib.to_string_lossy(), 0o755, &read(&lib));
    }
    let order = module_load_order(&modules_dir);
    let mut names = String::new();
    for m in &order {
        let file = Path::new(m)
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        cpio.file(
            &format!("lib/modules/{file}"),
            0o644,
            &read(&modules_dir.join(m)),
        );
        names.push_str(file);
        names.push('\n');
    }
    cpio.file("modules.order", 0o644, names.as_bytes());
    let initrd = work.path().join("initrd.cpio");
    fs::write(&initrd, cpio.finish()).expect("write initramfs");

    let log_path =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("kernel-{scenario}.console.log"));
    let mut log = fs::File::create(&log_path).expect("console log");
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-smp", "1", "-no-reboot"])
        .args([
            "-display", "none", "-monitor", "none", "-serial", "stdio", "-nic", "none",
        ])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&initrd)
        .args([
            "-append",
            "console=ttyS0 quiet loglevel=3 panic=-1 rdinit=/init",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("cannot start qemu-system-x86_64");
    let stdout = child.stdout.take().expect("qemu stdout");
    let (tx, rx) = mpsc::channel::<String>();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut console = String::new();
    let mut finished = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(line) => {
                let line = line.trim_end_matches('\r').to_string();
                let _ = writeln!(log, "{line}");
                if line.starts_with("GUEST-END") {
                    finished = true;
                }
                console.push_str(&line);
                console.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if Instant::now() >= deadline {
                    console.push_str("HARNESS: time limit reached, qemu killed\n");
                    break;
                }
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    eprintln!(
        "kernel harness: guest {scenario} ran {:.1?}, console in {}",
        limit.saturating_sub(deadline.saturating_duration_since(Instant::now())),
        log_path.display()
    );
    GuestRun::parse(console, finished)
}
