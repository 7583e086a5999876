//! Packaging (issue 7): the Debian package builds and passes lintian; it
//! installs into a fresh Debian root with its conffiles, in the place of a
//! `pybal` package (issue 12: removes it, answers to `pybal.service`, reads
//! `/etc/pybal/pybal.conf`), runs there (`rsbal --check`, the init script,
//! `systemd-analyze verify`) and purges cleanly; the man page renders without warnings and documents every flag
//! and config key; the daemon speaks systemd's notify protocol.
//!
//! The slow steps are cached under `<target>/packaging-test/` and serialised
//! with flock(1), because nextest runs each test in its own process:
//! installing cargo-deb (into `~/.cargo/bin`), the release build behind
//! `cargo deb`, and a debootstrapped Debian 12 root that every install test
//! copies before using it.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a failed set-up panics; helpers are shared by several crates

mod common;

use common::{wait_until, write_atomic, FakeIpvsadm};
use nix::sys::signal::Signal;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The repository (where Cargo.toml and packaging/ are).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Cargo's target directory: the test binary's rsbal is `<target>/<profile>/rsbal`.
fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_rsbal"));
    bin.parent()
        .and_then(Path::parent)
        .expect("rsbal binary lives in <target>/<profile>/")
        .to_path_buf()
}

/// Where this file keeps its caches and scratch roots.
fn work_dir() -> PathBuf {
    let dir = target_dir().join("packaging-test");
    fs::create_dir_all(&dir).expect("create packaging-test dir");
    dir
}

/// Runs `cmd`, returns its output; panics with stdout and stderr on failure.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the shell `script` (with `$1`.. = `args`) holding the lock file
/// `work/<lock>.lock`, so that parallel test processes take turns.
fn locked_sh(lock: &str, script: &str, args: &[&str]) -> Output {
    let lock = work_dir().join(format!("{lock}.lock"));
    run(Command::new("flock")
        .arg(&lock)
        .args(["sh", "-euc", script, "sh"])
        .args(args)
        .current_dir(repo()))
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// Builds the package with the README's command (`cargo deb`), installing
/// cargo-deb first if it is missing; returns the `.deb`, written to a
/// directory of the caller's own (`user`) so no other test rewrites it.
fn build_deb(user: &str) -> PathBuf {
    let out_dir = work_dir().join(format!("deb-{user}"));
    let out = locked_sh(
        "cargo-deb",
        r#"
        cargo="$1"; out="$2"
        if ! "$cargo" deb --version >/dev/null 2>&1; then
            "$cargo" install cargo-deb --locked --version '~3.8'
        fi
        "$cargo" deb --output "$out"
        "#,
        &[&cargo(), out_dir.to_str().expect("utf-8 path")],
    );
    let text = stdout(&out);
    let deb = text
        .lines()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .unwrap_or_else(|| panic!("cargo deb printed no .deb path:\n{text}"));
    let deb = PathBuf::from(deb);
    assert!(deb.is_file(), "{} missing", deb.display());
    deb
}

/// The Debian mirror this machine's apt uses (deb822 `.sources` or
/// one-line `.list`), the first one serving the `bookworm` suite.
fn apt_mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    for file in files {
        let name = file.to_string_lossy().into_owned();
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        if name.ends_with(".sources") {
            for block in text.split("\n\n") {
                let field = |key: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(key))
                        .map(|v| v.trim().to_string())
                };
                let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:")) else {
                    continue;
                };
                if suites.split_whitespace().any(|s| s == "bookworm") {
                    if let Some(uri) = uris.split_whitespace().next() {
                        return uri.to_string();
                    }
                }
            }
        } else if name.ends_with("sources.list") || name.ends_with(".list") {
            for line in text.lines() {
                let words: Vec<&str> = line
                    .split_whitespace()
                    .filter(|w| !w.starts_with('['))
                    .collect();
                if words.len() >= 3 && words[0] == "deb" && words[2] == "bookworm" {
                    return words[1].to_string();
                }
            }
        }
    }
    panic!("no apt source for bookworm found in /etc/apt/sources.list*");
}

/// A cached Debian 12 minbase tree (debootstrap) with systemd and man-db
/// added, for `systemd-analyze verify` and `man` inside the root, and a
/// policy-rc.d that keeps package scripts from starting daemons there.
fn bookworm_template() -> PathBuf {
    let template = work_dir().join("bookworm-minbase");
    let mirror = apt_mirror();
    locked_sh(
        "debootstrap",
        r#"
        t="$1"; mirror="$2"
        [ -e "$t/.rsbal-template-complete" ] && exit 0
        rm -rf --one-file-system "$t.new" "$t"
        debootstrap --variant=minbase bookworm "$t.new" "$mirror" >"$t.log" 2>&1 \
            || { tail -20 "$t.log" >&2; exit 1; }
        printf '#!/bin/sh\n# no daemon starts in this chroot\nexit 101\n' >"$t.new/usr/sbin/policy-rc.d"
        chmod 755 "$t.new/usr/sbin/policy-rc.d"
        cp /etc/resolv.conf "$t.new/etc/resolv.conf"
        chroot "$t.new" apt-get update -q >>"$t.log" 2>&1
        DEBIAN_FRONTEND=noninteractive chroot "$t.new" apt-get install -y -q \
            --no-install-recommends systemd man-db >>"$t.log" 2>&1 \
            || { tail -20 "$t.log" >&2; exit 1; }
        touch "$t.new/.rsbal-template-complete"
        mv "$t.new" "$t"
        "#,
        &[template.to_str().expect("utf-8 path"), &mirror],
    );
    template
}

/// A fresh copy of the template, discarded when dropped.
struct Root {
    path: PathBuf,
    proc_mounted: bool,
}

impl Root {
    fn fresh(name: &str) -> Root {
        let template = bookworm_template();
        let path = work_dir().join(name);
        discard(&path);
        run(Command::new("cp").arg("-a").arg(&template).arg(&path));
        fs::copy("/etc/resolv.conf", path.join("etc/resolv.conf")).expect("copy resolv.conf");
        Root {
            path,
            proc_mounted: false,
        }
    }

    /// `chroot <root> args…`, which must succeed.
    fn chroot(&self, args: &[&str]) -> Output {
        run(Command::new("chroot")
            .arg(&self.path)
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"))
    }

    fn file(&self, path: &str) -> PathBuf {
        self.path.join(path.trim_start_matches('/'))
    }

    /// Whether `path` exists in the root (a symlink counts; its target is
    /// inside the root, not on this machine).
    fn has(&self, path: &str) -> bool {
        self.file(path).symlink_metadata().is_ok()
    }

    fn mount_proc(&mut self) {
        run(Command::new("mount")
            .args(["-t", "proc", "proc"])
            .arg(self.file("/proc")));
        self.proc_mounted = true;
    }

    fn umount_proc(&mut self) {
        if self.proc_mounted {
            run(Command::new("umount").arg(self.file("/proc")));
            self.proc_mounted = false;
        }
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        discard(&self.path);
    }
}

/// Removes a root left by this or an earlier run, /proc unmounted first
/// (lazily, in case something still uses it); never crosses into a mount.
fn discard(root: &Path) {
    let proc = root.join("proc");
    if Command::new("mountpoint")
        .arg("-q")
        .arg(&proc)
        .status()
        .is_ok_and(|s| s.success())
    {
        let _ = Command::new("umount").arg("-l").arg(&proc).status();
    }
    let _ = Command::new("rm")
        .args(["-rf", "--one-file-system"])
        .arg(root)
        .status();
}

/// The dpkg status word of `package` in `root` ("installed", "config-files", …).
fn dpkg_status(root: &Root, package: &str) -> String {
    let out = Command::new("chroot")
        .arg(&root.path)
        .args(["dpkg-query", "-W", "-f=${db:Status-Status}", package])
        .output()
        .expect("run dpkg-query");
    stdout(&out)
}

/// A minimal `pybal` package (its unit and program), standing for the
/// PyBal that a balancer runs before rsbal takes its place.
fn fake_pybal_deb(dir: &Path) -> PathBuf {
    let tree = dir.join("pybal");
    fs::create_dir_all(tree.join("DEBIAN")).unwrap();
    fs::create_dir_all(tree.join("lib/systemd/system")).unwrap();
    fs::create_dir_all(tree.join("usr/sbin")).unwrap();
    fs::write(
        tree.join("DEBIAN/control"),
        "Package: pybal\nVersion: 1.15.9\nArchitecture: all\n\
         Maintainer: test <test@example.org>\nDescription: stand-in for PyBal\n",
    )
    .unwrap();
    fs::write(
        tree.join("lib/systemd/system/pybal.service"),
        "[Service]\nExecStart=/usr/sbin/pybal\n",
    )
    .unwrap();
    fs::write(tree.join("usr/sbin/pybal"), "#!/bin/sh\n").unwrap();
    let deb = dir.join("pybal_1.15.9_all.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&tree)
        .arg(&deb));
    deb
}

/// The text of `path`, relative to the repository.
fn read_repo(path: &str) -> String {
    fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

// ---------------------------------------------------------------------------
// The package
// ---------------------------------------------------------------------------

#[test]
fn package_builds_and_lintian_finds_no_error_or_unexplained_warning() {
    let deb = build_deb("lintian");
    let out = Command::new("lintian")
        .args([
            "--allow-root",
            "--fail-on",
            "error,warning",
            "--display-info",
        ])
        .arg(&deb)
        .output()
        .expect("run lintian (apt-get install lintian)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("lintian {}:\n{report}", deb.display());
    assert!(
        out.status.success(),
        "lintian found errors or warnings:\n{report}"
    );
    assert!(
        !report
            .lines()
            .any(|l| l.starts_with("E: ") || l.starts_with("W: ")),
        "{report}"
    );
    // Every override carries its reason: a comment right above it.
    let overrides = read_repo("packaging/lintian-overrides");
    let mut previous = "";
    for line in overrides.lines() {
        if !line.trim().is_empty() && !line.starts_with('#') {
            assert!(
                previous.starts_with('#'),
                "override {line:?} has no comment giving its reason"
            );
        }
        previous = line;
    }
}

#[test]
fn package_installs_into_a_fresh_debian_root_runs_there_and_purges_cleanly() {
    // The root first: on a cold cache its debootstrap then overlaps the
    // release build that the lintian test starts meanwhile.
    let mut root = Root::fresh("root-install");
    let deb = build_deb("install");
    fs::copy(&deb, root.file("/tmp/rsbal.deb")).expect("copy .deb into the root");

    // A balancer running PyBal: its package, and the pybal.conf puppet wrote.
    let pybal = fake_pybal_deb(&work_dir().join("root-install-pybal"));
    fs::copy(&pybal, root.file("/tmp/pybal.deb")).expect("copy pybal .deb into the root");
    root.chroot(&["dpkg", "-i", "/tmp/pybal.deb"]);
    assert_eq!(dpkg_status(&root, "pybal"), "installed");
    fs::create_dir_all(root.file("/etc/pybal")).unwrap();
    fs::write(
        root.file("/etc/pybal/pybal.conf"),
        "[global]\ninstrumentation = no\nipvsadm = /bin/true\nipvs-backend = ipvsadm\nipvs-reconcile-interval = 0\n",
    )
    .expect("write pybal.conf");

    // The README's way: apt installs the file and its dependencies (ipvsadm).
    root.chroot(&["apt-get", "update", "-q"]);
    root.chroot(&[
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "/tmp/rsbal.deb",
    ]);
    assert_eq!(dpkg_status(&root, "rsbal"), "installed");
    assert_eq!(dpkg_status(&root, "ipvsadm"), "installed");
    // rsbal took PyBal's place: pybal removed (Conflicts/Replaces), its
    // config kept, rsbal standing for it (Provides).
    assert_ne!(dpkg_status(&root, "pybal"), "installed");
    assert!(!root.has("/lib/systemd/system/pybal.service"));
    assert!(root.has("/etc/pybal/pybal.conf"));
    let provides = stdout(&root.chroot(&["dpkg-query", "-W", "-f=${Provides}", "rsbal"]));
    assert_eq!(provides.trim(), "pybal");

    for file in [
        "/usr/sbin/rsbal",
        "/usr/lib/rsbal/rsbal-start",
        "/usr/share/doc/rsbal/examples/pybal-identity.conf",
        "/etc/rsbal/rsbal.conf",
        "/etc/default/rsbal",
        "/etc/init.d/rsbal",
        "/etc/logrotate.d/rsbal",
        "/usr/lib/systemd/system/rsbal.service",
        "/usr/lib/sysctl.d/60-rsbal.conf",
        "/usr/lib/modules-load.d/rsbal.conf",
        "/usr/share/man/man8/rsbal.8.gz",
        "/usr/share/doc/rsbal/README.md",
        "/usr/share/doc/rsbal/changelog.Debian.gz",
        "/usr/share/doc/rsbal/copyright",
        "/usr/share/doc/rsbal/examples/servers-example",
        "/usr/share/lintian/overrides/rsbal",
    ] {
        assert!(root.file(file).is_file(), "{file} not installed");
    }
    let conffiles = stdout(&root.chroot(&["dpkg-query", "-W", "-f=${Conffiles}", "rsbal"]));
    for conffile in [
        "/etc/rsbal/rsbal.conf",
        "/etc/default/rsbal",
        "/etc/init.d/rsbal",
        "/etc/logrotate.d/rsbal",
    ] {
        assert!(
            conffiles.contains(&format!(" {conffile} ")),
            "{conffile} is not a conffile:\n{conffiles}"
        );
    }
    // Enabled for systemd and registered for sysvinit; pybal.service is
    // rsbal.service (Alias=), for the restart cookbook and checks.
    assert!(root.has("/etc/systemd/system/multi-user.target.wants/rsbal.service"));
    let alias =
        fs::read_link(root.file("/etc/systemd/system/pybal.service")).expect("pybal.service alias");
    assert!(alias.ends_with("rsbal.service"), "{alias:?}");
    assert!(root.has("/etc/rc2.d/S01rsbal"));

    let version = stdout(&root.chroot(&["rsbal", "--version"]));
    assert_eq!(
        version.trim(),
        format!("rsbal {}", env!("CARGO_PKG_VERSION"))
    );
    let check = stdout(&root.chroot(&["rsbal", "--check"]));
    assert!(
        check.contains("/etc/rsbal/rsbal.conf: configuration OK"),
        "{check}"
    );
    // What the unit and the init script start: PyBal's config while it
    // exists and DAEMON_ARGS names none, else the one named.
    let start = "/usr/lib/rsbal/rsbal-start";
    let check = stdout(&root.chroot(&[start, "--check"]));
    assert!(
        check.contains("/etc/pybal/pybal.conf: configuration OK"),
        "{check}"
    );
    let check = stdout(&root.chroot(&[start, "-c", "/etc/rsbal/rsbal.conf", "--check"]));
    assert!(
        check.contains("/etc/rsbal/rsbal.conf: configuration OK"),
        "{check}"
    );
    let man = stdout(&root.chroot(&["man", "-w", "rsbal"]));
    assert_eq!(man.trim(), "/usr/share/man/man8/rsbal.8.gz");

    // systemd-analyze prints problems (unknown keys, missing binaries, bad
    // man reference) on stderr; none is accepted.
    let unit = fs::read_to_string(root.file("/usr/lib/systemd/system/rsbal.service")).unwrap();
    assert!(unit.contains("\nSyslogIdentifier=rsbal\n"), "{unit}");
    let verify = root.chroot(&["systemd-analyze", "verify", "rsbal.service"]);
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        complaints.trim().is_empty(),
        "systemd-analyze verify:\n{complaints}"
    );

    // The init script: start, status, reload (SIGHUP), stop, as on a system
    // without systemd, with PyBal's config (no -c) and PyBal's log file.
    // start-stop-daemon needs /proc.
    fs::write(
        root.file("/etc/default/rsbal"),
        "DAEMON_ARGS=\"-n\"\nLOGFILE=/var/log/pybal.log\n",
    )
    .expect("write /etc/default/rsbal");
    root.mount_proc();
    root.chroot(&["/etc/init.d/rsbal", "start"]);
    let log = root.file("/var/log/pybal.log");
    let log_has = |text: &str| fs::read_to_string(&log).unwrap_or_default().contains(text);
    assert!(
        wait_until(Duration::from_secs(10), || log_has(
            "started with 0 service(s) from /etc/pybal/pybal.conf"
        )),
        "{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    root.chroot(&["/etc/init.d/rsbal", "status"]);
    root.chroot(&["/etc/init.d/rsbal", "reload"]);
    assert!(wait_until(Duration::from_secs(10), || log_has(
        "SIGHUP: reloading"
    )));
    root.chroot(&["/etc/init.d/rsbal", "stop"]);
    assert!(log_has("stopped"));
    assert!(!root.has("/run/rsbal.pid"));
    root.umount_proc();

    // remove keeps the conffiles, purge takes them.
    root.chroot(&["apt-get", "remove", "-y", "-q", "rsbal"]);
    assert_eq!(dpkg_status(&root, "rsbal"), "config-files");
    assert!(!root.has("/usr/sbin/rsbal"));
    assert!(root.has("/etc/rsbal/rsbal.conf"));
    fs::remove_file(root.file("/var/log/pybal.log")).expect("remove the test's log");
    root.chroot(&["dpkg", "--purge", "rsbal"]);
    // dpkg forgets a purged package (older dpkg says "not-installed").
    let status = dpkg_status(&root, "rsbal");
    assert!(matches!(status.as_str(), "" | "not-installed"), "{status}");
    for gone in [
        "/etc/rsbal",
        "/etc/default/rsbal",
        "/etc/init.d/rsbal",
        "/etc/logrotate.d/rsbal",
        "/etc/rc2.d/S01rsbal",
        "/etc/systemd/system/multi-user.target.wants/rsbal.service",
        "/etc/systemd/system/pybal.service",
        "/var/log/rsbal.log",
        "/usr/share/doc/rsbal",
    ] {
        assert!(!root.has(gone), "{gone} left after purge");
    }
}

// ---------------------------------------------------------------------------
// The man page and the shipped configuration
// ---------------------------------------------------------------------------

#[test]
fn man_page_renders_without_warnings() {
    let page = repo().join("packaging/rsbal.8");
    let groff = run(Command::new("groff").args(["-ww", "-z", "-man"]).arg(&page));
    let warnings = String::from_utf8_lossy(&groff.stderr);
    assert!(warnings.is_empty(), "groff -ww:\n{warnings}");
    // As lintian checks a man page: man-db with its warnings on.
    let man = run(Command::new("man")
        .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z"])
        .arg(&page)
        .env("LC_ALL", "C.UTF-8")
        .env("MANWIDTH", "80"));
    let warnings = String::from_utf8_lossy(&man.stderr);
    assert!(warnings.is_empty(), "man --warnings:\n{warnings}");
}

/// The words of the man page source, roff escapes that hide them undone
/// (`\-` is `-`); a word ending a sentence is also there without its dot.
fn man_words() -> std::collections::HashSet<String> {
    let text = read_repo("packaging/rsbal.8")
        .replace("\\-", "-")
        .replace("\\%", "")
        .replace("\\fB", " ")
        .replace("\\fI", " ")
        .replace("\\fR", " ")
        .replace("\\fP", " ");
    let mut words = std::collections::HashSet::new();
    for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || "-_./=@".contains(c))) {
        words.insert(word.to_string());
        words.insert(word.trim_end_matches(['.', '=']).to_string());
    }
    words
}

#[test]
fn man_page_documents_every_flag_signal_and_file() {
    let man = man_words();
    let mut missing = Vec::new();
    let mut expect = |word: String| {
        if !man.contains(&word) {
            missing.push(word);
        }
    };

    // Every flag of `rsbal --help`.
    let help = stdout(&run(Command::new(env!("CARGO_BIN_EXE_rsbal")).arg("--help")));
    for word in help.split_whitespace() {
        let flag = word.trim_matches(|c| matches!(c, '[' | ']' | ',' | '|'));
        let is_flag = flag.len() > 1
            && flag.starts_with('-')
            && flag.chars().all(|c| c == '-' || c.is_ascii_alphanumeric());
        if is_flag {
            expect(flag.to_string());
        }
    }
    for item in [
        "status",
        "SIGTERM",
        "SIGINT",
        "SIGHUP",
        "/etc/rsbal/rsbal.conf",
        "/etc/default/rsbal",
        "/etc/init.d/rsbal",
        "DAEMON_ARGS",
        "NOTIFY_SOCKET",
    ] {
        expect(item.to_string());
    }
    // Every config key and scheduler: the library's test
    // `man_page_documents_every_key_of_the_tables_and_every_scheduler` reads
    // them from the key tables in src/config/validate/keys.rs.
    assert!(
        missing.is_empty(),
        "packaging/rsbal.8 does not document: {missing:?}"
    );
}

#[test]
fn shipped_config_and_its_commented_example_service_pass_check() {
    let rsbal = env!("CARGO_BIN_EXE_rsbal");
    let shipped = repo().join("packaging/rsbal.conf");
    let out = run(Command::new(rsbal).arg("--check").arg("-c").arg(&shipped));
    assert!(stdout(&out).contains("configuration OK (0 service(s))"));

    // Uncommented, the example service is valid with the shipped example list.
    let dir = tempfile::tempdir().expect("tempdir");
    let list = repo().join("packaging/servers-example");
    let mut in_example = false;
    let mut text = String::new();
    for line in read_repo("packaging/rsbal.conf").lines() {
        if line.starts_with("#[") {
            in_example = true;
        }
        let line = if in_example {
            line.trim_start_matches('#')
        } else {
            line
        };
        let line = line.replace(
            "file:///etc/rsbal/servers/web_80",
            &format!("file://{}", list.display()),
        );
        text.push_str(&line);
        text.push('\n');
    }
    let example = write_atomic(dir.path(), "example.conf", &text);
    let out = run(Command::new(rsbal).arg("--check").arg("-c").arg(&example));
    assert!(
        stdout(&out).contains("configuration OK (1 service(s))"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// sd_notify
// ---------------------------------------------------------------------------

/// Datagrams received on the test's NOTIFY_SOCKET.
struct NotifySocket {
    socket: UnixDatagram,
    seen: Vec<String>,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).expect("bind notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set timeout");
        NotifySocket {
            socket,
            seen: Vec::new(),
        }
    }

    /// Waits up to 20 s for a message satisfying `pred`; returns it.
    fn wait_for(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.seen.push(msg.clone());
                if pred(&msg) {
                    return msg;
                }
            }
        }
        panic!("no {what} notification; got {:?}", self.seen);
    }
}

fn has_line(msg: &str, line: &str) -> bool {
    msg.lines().any(|l| l == line)
}

const NOTIFY_SERVICE: &str = "\
[{name}]
protocol = tcp
ip = {vip}
port = 80
scheduler = wrr
config = file://servers
monitors = []
";

fn notify_config(services: &[(&str, &str)], ipvsadm: &Path) -> String {
    let mut text = format!(
        "[global]\ninstrumentation = no\nipvsadm = {}\nipvs-backend = ipvsadm\nipvs-reconcile-interval = 0\n",
        ipvsadm.display()
    );
    for (name, vip) in services {
        text.push_str(&NOTIFY_SERVICE.replace("{name}", name).replace("{vip}", vip));
    }
    text
}

#[test]
fn daemon_notifies_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ipvsadm = FakeIpvsadm::new(dir.path());
    // No monitors: the servers (documentation addresses) are never contacted.
    write_atomic(
        dir.path(),
        "servers",
        "{ 'host': '192.0.2.21', 'weight': 10 }\n",
    );
    let config = write_atomic(
        dir.path(),
        "rsbal.conf",
        &notify_config(&[("notify_a", "192.0.2.101")], &ipvsadm.script),
    );
    let socket_path = dir.path().join("notify.sock");
    let mut notify = NotifySocket::bind(&socket_path);
    let log = dir.path().join("rsbal.log");
    let log_file = fs::File::create(&log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_rsbal"))
        .args(["-d", "-c"])
        .arg(&config)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("clone log"))
        .stderr(log_file)
        .spawn()
        .expect("start rsbal");
    let mut rsbal = common::Rsbal { child, log };

    let ready = notify.wait_for("READY=1", |m| has_line(m, "READY=1"));
    assert!(ready.contains("STATUS=1 service(s)"), "{ready:?}");
    // READY comes once the service exists: its IPVS service was requested.
    ipvsadm.assert_seen("-A -t 192.0.2.101:80 -s wrr", 1);

    // A reload that adds a service: RELOADING=1, then READY=1 with 2 services.
    write_atomic(
        dir.path(),
        "rsbal.conf",
        &notify_config(
            &[("notify_a", "192.0.2.101"), ("notify_b", "192.0.2.102")],
            &ipvsadm.script,
        ),
    );
    rsbal.signal(Signal::SIGHUP);
    let reloading = notify.wait_for("RELOADING=1", |m| has_line(m, "RELOADING=1"));
    assert!(
        reloading.contains("MONOTONIC_USEC="),
        "RELOADING=1 without MONOTONIC_USEC: {reloading:?}"
    );
    let ready = notify.wait_for("READY=1 after the reload", |m| has_line(m, "READY=1"));
    assert!(ready.contains("STATUS=2 service(s)"), "{ready:?}");
    ipvsadm.assert_seen("-A -t 192.0.2.102:80 -s wrr", 1);

    rsbal.signal(Signal::SIGTERM);
    notify.wait_for("STOPPING=1", |m| has_line(m, "STOPPING=1"));
    let status = rsbal.wait_exit(Duration::from_secs(10));
    assert!(
        status.is_some_and(|s| s.success()),
        "rsbal did not exit cleanly: {status:?}"
    );
    // In order: READY, RELOADING, READY, STOPPING, and nothing else.
    let kinds: Vec<&str> = notify
        .seen
        .iter()
        .map(|m| m.lines().next().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["READY=1", "RELOADING=1", "READY=1", "STOPPING=1"]);
}
