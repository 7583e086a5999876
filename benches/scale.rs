//! Benchmark: rsbal at production scale (issue 13), nginx as the real servers.
//!
//! Needs Debian's nginx (`apt-get install nginx-light`, or `nginx`); it is not
//! part of CI and installs nothing. One nginx master (one worker) serves every
//! real server: a wildcard `listen 0.0.0.0:PORT reuseport` accepts a
//! connection to any 127.x.y.z (all of 127/8 is local on Linux), idle
//! connections stay open (`client_header_timeout` and `keepalive_timeout`
//! 1 day) and `location /` returns 200, logging one byte line per request
//! (`$msec`, 15 bytes) so that the access log's size counts ProxyFetch
//! checks and its times show how bunched they are.
//! (`NGINX_LISTEN=each` gives nginx one `listen 127.a.b.c:PORT` per server
//! instead: one more fd per server in each nginx process.)
//!
//! Ten more servers of the first service are the benchmark's own, the test
//! harness's `common::Backend` (127.250.0.1..10, SO_REUSEPORT so that they
//! can share the port with
//! nginx's wildcard; the kernel prefers the exact address). They answer
//! ProxyFetch and keep idle connections like nginx, and the benchmark resets
//! their connections (SO_LINGER 0) to time reset → `-d` at `ipvsadm` under
//! the load of the whole run.
//!
//! For each run: writes the config (file:// server lists, `ipvs-backend =
//! ipvsadm` with a stand-in, a small C program compiled with `cc`, that
//! stamps every `-R` batch line with the time it started, before it reads
//! the batch; reconciliation off), starts the release rsbal with its
//! soft `RLIMIT_NOFILE` raised to the hard limit (what systemd's
//! `LimitNOFILE=` would give it), waits until every server is pooled, lets it
//! settle, samples `/proc/PID` every second for `seconds` (threads, fds,
//! VmRSS, CPU from utime+stime), then resets the benchmark's servers
//! `resets` times (each only once it is pooled again) and prints a table.
//! Any `-d` for an nginx server is a false depool. Asserts nothing.
//!
//! ```text
//! cargo bench --bench scale -- [RUN...] [KEY=VALUE...]
//!   RUN: floor                  first the floor of one check: a minimal
//!                               client's CPU per loopback GET against the
//!                               same nginx, flat out and paced
//!        1000, 5000, 10000 ...  N servers, 100 per service,
//!                               IdleConnection + ProxyFetch
//!        prod[:N]               116 services, N servers in all (default 11000),
//!                               IdleConnection on most, ProxyFetch on some,
//!                               schedulers mh and wrr
//!        prep12[:PATH]          the services of a rendered pybal.conf
//!                               (default /work/prep12/prod/pybal.conf, 118
//!                               sections, 11,069 servers): their monitors
//!                               (IdleConnection, ProxyFetch; others dropped),
//!                               schedulers, thresholds and monitor options,
//!                               as many servers as their file:// lists (all
//!                               enabled), nginx's address, port and URL;
//!                               `intervals` only where the file sets none
//!   KEY: intervals=1,10  ProxyFetch interval(s) in s, one run each (default 1,10)
//!        seconds=40      sampling window    settle=10  wait after all pooled
//!        resets=50       resets timed       port=28080 the servers' port
//!        timeout=1       proxyfetch.timeout (the example config's)
//! ```
//! Default: `1000`. Environment is passed to rsbal (e.g. `MALLOC_ARENA_MAX=2`).

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a failed set-up panics; helpers are shared by several crates

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TEST_BACKENDS: u8 = 10;
const PROXYFETCH_URL: &str = "http://rsbal.example.org/pools";

// ---------------------------------------------------------------- options

struct Opts {
    /// Measure the floor of one check first (see [`floor`]).
    floor: bool,
    intervals: Vec<f64>,
    seconds: u64,
    settle: u64,
    resets: usize,
    port: u16,
    timeout: f64,
}

#[derive(Clone, Debug)]
enum Shape {
    /// N servers, 100 per service, IdleConnection + ProxyFetch.
    Uniform(usize),
    /// 116 services of uneven size, N servers in all.
    Prod(usize),
    /// The services of a rendered pybal.conf.
    Prep12(PathBuf),
}

fn parse_args() -> (Vec<Shape>, Opts) {
    let mut opts = Opts {
        intervals: vec![1.0, 10.0],
        seconds: 40,
        settle: 10,
        resets: 50,
        port: 28080,
        timeout: 1.0,
        floor: false,
    };
    let mut shapes = Vec::new();
    for arg in std::env::args().skip(1) {
        if arg == "--bench" || arg.starts_with("--") {
            continue; // what cargo passes to a harness = false bench
        }
        if let Some((k, v)) = arg.split_once('=') {
            match k {
                "intervals" => {
                    opts.intervals = v.split(',').filter_map(|x| x.parse().ok()).collect()
                }
                "seconds" => opts.seconds = v.parse().expect("seconds=N"),
                "settle" => opts.settle = v.parse().expect("settle=N"),
                "resets" => opts.resets = v.parse().expect("resets=N"),
                "port" => opts.port = v.parse().expect("port=N"),
                "timeout" => opts.timeout = v.parse().expect("timeout=SECONDS"),
                _ => panic!("unknown option {k}"),
            }
        } else if arg == "floor" {
            opts.floor = true;
        } else if let Some(rest) = arg.strip_prefix("prod") {
            let n = rest
                .strip_prefix(':')
                .map_or(11_000, |n| n.parse().expect("prod:N"));
            shapes.push(Shape::Prod(n));
        } else if let Some(rest) = arg.strip_prefix("prep12") {
            let path = rest
                .strip_prefix(':')
                .unwrap_or("/work/prep12/prod/pybal.conf");
            shapes.push(Shape::Prep12(PathBuf::from(path)));
        } else {
            shapes.push(Shape::Uniform(arg.parse().expect("a server count")));
        }
    }
    if shapes.is_empty() && !opts.floor {
        shapes.push(Shape::Uniform(1000));
    }
    (shapes, opts)
}

// ---------------------------------------------------------------- services

/// One LVS service of the generated config.
struct Service {
    name: String,
    scheduler: &'static str,
    idle: bool,
    fetch: bool,
    /// Extra `key = value` lines (a prep12 service's own options).
    extra: String,
    /// From a rendered pybal.conf: its options stand, rsbal's defaults fill in.
    from_file: bool,
    hosts: Vec<String>,
}

/// The i-th nginx server address: 127.20.0.1, 127.20.0.2, … (never .0/.255).
fn nginx_host(i: usize) -> String {
    format!("127.{}.{}.{}", 20 + i / 62_500, i / 250 % 250, i % 250 + 1)
}

fn test_host(k: u8) -> String {
    format!("127.250.0.{}", k + 1)
}

/// `sizes[i]` servers in service i; the first service's last ten are the
/// benchmark's own.
fn fill_hosts(services: &mut [Service], sizes: &[usize]) {
    let mut next = 0;
    for (i, (svc, &n)) in services.iter_mut().zip(sizes).enumerate() {
        let own = if i == 0 { TEST_BACKENDS as usize } else { 0 };
        svc.hosts = (0..n - own).map(|j| nginx_host(next + j)).collect();
        next += n - own;
        svc.hosts.extend((0..own as u8).map(test_host));
    }
}

fn uniform(n: usize) -> Vec<Service> {
    let count = n.div_ceil(100);
    let mut services: Vec<Service> = (0..count)
        .map(|i| Service {
            name: format!("svc{i:03}"),
            scheduler: "wrr",
            idle: true,
            fetch: true,
            extra: String::new(),
            from_file: false,
            hosts: Vec::new(),
        })
        .collect();
    let sizes: Vec<usize> = (0..count).map(|i| (n - i * 100).min(100)).collect();
    fill_hosts(&mut services, &sizes);
    services
}

/// 116 services, sizes falling off as 1/rank^0.9 (a few large pools, many
/// small ones, at least 2 servers each): IdleConnection + ProxyFetch on every
/// third, ProxyFetch only on every tenth, IdleConnection only on the rest;
/// `mh` on every fourth, `wrr` elsewhere.
fn prod(n: usize) -> Vec<Service> {
    let weights: Vec<f64> = (0..116).map(|i| 1.0 / ((i + 1) as f64).powf(0.9)).collect();
    let sum: f64 = weights.iter().sum();
    let sizes: Vec<usize> = weights
        .iter()
        .map(|w| ((n as f64 * w / sum).round() as usize).max(2))
        .collect();
    let mut services: Vec<Service> = (0..116)
        .map(|i| {
            let fetch_only = i % 10 == 9;
            Service {
                name: format!("prod{i:03}"),
                scheduler: if i % 4 == 0 { "mh" } else { "wrr" },
                idle: !fetch_only,
                fetch: fetch_only || i % 3 == 0,
                extra: String::new(),
                from_file: false,
                hosts: Vec::new(),
            }
        })
        .collect();
    fill_hosts(&mut services, &sizes);
    services
}

/// The services of a rendered pybal.conf: their scheduler, monitors
/// (IdleConnection and ProxyFetch kept, others dropped: their commands and
/// names do not exist here) and monitor options; ip, port, URLs and server
/// lists replaced. A service's server count is the number of `host` entries
/// in its `file://` list when that file is readable, else PREP12_SERVERS
/// (default 20).
fn prep12(path: &Path) -> Vec<Service> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let default: usize = std::env::var("PREP12_SERVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let mut raw: Vec<(String, HashMap<String, String>)> = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with('#') || l.starts_with(';') || l.is_empty() {
            continue;
        }
        if let Some(name) = l.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            raw.push((name.to_string(), HashMap::new()));
        } else if let (Some((k, v)), Some(last)) = (l.split_once(['=', ':']), raw.last_mut()) {
            last.1.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    let mut services = Vec::new();
    let mut sizes = Vec::new();
    for (name, keys) in raw.into_iter().filter(|(n, _)| n != "global") {
        let monitors = keys.get("monitors").cloned().unwrap_or_default();
        let idle = monitors.contains("IdleConnection");
        let fetch = monitors.contains("ProxyFetch");
        let scheduler = match keys.get("scheduler").map(String::as_str) {
            Some("mh") => "mh",
            Some("sh") => "sh",
            Some("rr") => "rr",
            Some("wlc") => "wlc",
            _ => "wrr",
        };
        let mut extra = String::new();
        for (k, v) in &keys {
            // url (one http:// URL of nginx instead) and http_status
            // (nginx answers 200) are replaced; interval only when absent.
            let keep = k.starts_with("idleconnection.")
                || (k.starts_with("proxyfetch.")
                    && k != "proxyfetch.url"
                    && k != "proxyfetch.http_status")
                || k == "depool-threshold";
            if keep {
                let _ = writeln!(extra, "{k} = {v}");
            }
        }
        let size = keys
            .get("config")
            .and_then(|c| c.strip_prefix("file://"))
            .map(|f| path.parent().unwrap_or(Path::new(".")).join(f))
            .and_then(|f| fs::read_to_string(f).ok())
            .map(|l| l.lines().filter(|l| l.contains("host")).count())
            .filter(|&n| n > 0)
            .unwrap_or(default);
        services.push(Service {
            name,
            scheduler,
            idle,
            fetch,
            extra,
            from_file: true,
            hosts: Vec::new(),
        });
        sizes.push(size);
    }
    // The benchmark's own servers go into a service with IdleConnection.
    if let Some(i) = services.iter().position(|s| s.idle) {
        services.swap(0, i);
        sizes.swap(0, i);
    }
    sizes[0] = sizes[0].max(2 * TEST_BACKENDS as usize);
    fill_hosts(&mut services, &sizes);
    services
}

fn vip(i: usize) -> String {
    if i < 250 {
        format!("192.0.2.{}", i + 1)
    } else {
        format!("198.51.{}.{}", 100 + i / 250, i % 250 + 1)
    }
}

/// Writes the server lists and the rsbal config; returns its path.
fn write_rsbal_config(
    dir: &Path,
    services: &[Service],
    ipvsadm: &Path,
    port: u16,
    http_port: u16,
    interval: f64,
    timeout: f64,
) -> PathBuf {
    let mut conf = format!(
        "[global]\nbgp = no\nipvsadm = {}\nipvs-backend = ipvsadm\nipvs-reconcile-interval = 0\n\
         instrumentation = yes\ninstrumentation_port = {http_port}\ninstrumentation_ips = [ '127.0.0.1' ]\n",
        ipvsadm.display()
    );
    for (i, svc) in services.iter().enumerate() {
        let list: String = svc
            .hosts
            .iter()
            .map(|h| format!("{{ 'host': '{h}', 'weight': 10, 'enabled': True }}\n"))
            .collect();
        let list = common::write_atomic(dir, &format!("servers-{}", svc.name), &list);
        let mut monitors = Vec::new();
        if svc.idle {
            monitors.push("\"IdleConnection\"");
        }
        if svc.fetch {
            monitors.push("\"ProxyFetch\"");
        }
        let _ = write!(
            conf,
            "\n[{}]\nprotocol = tcp\nip = {}\nport = {port}\nscheduler = {}\nconfig = file://{}\n\
             monitors = [ {} ]\n",
            svc.name,
            vip(i),
            svc.scheduler,
            list.display(),
            monitors.join(", ")
        );
        if !svc.from_file {
            conf.push_str(
                "depool-threshold = 0.5\nidleconnection.max-delay = 10\n\
                 idleconnection.timeout-clean-reconnect = 1\n",
            );
        } else {
            conf.push_str(&svc.extra);
        }
        if svc.fetch {
            let _ = writeln!(conf, "proxyfetch.url = [ '{PROXYFETCH_URL}' ]");
            if !svc.extra.contains("proxyfetch.interval") {
                let _ = writeln!(conf, "proxyfetch.interval = {interval}");
            }
            if !svc.from_file {
                let _ = writeln!(conf, "proxyfetch.timeout = {timeout}");
            }
        }
    }
    let path = dir.join("rsbal.conf");
    fs::write(&path, conf).expect("write rsbal.conf");
    path
}

// ---------------------------------------------------------------- nginx

fn hard_nofile() -> u64 {
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -Hn")
        .output()
        .expect("sh");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(1_048_576)
}

struct Nginx {
    child: Child,
    access_log: PathBuf,
}

impl Nginx {
    fn start(dir: &Path, port: u16, hosts: &[String]) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx not found: apt-get install nginx-light (or nginx)");
        let dir = dir.join("nginx");
        fs::create_dir_all(&dir).expect("mkdir nginx");
        let access_log = dir.join("access.log");
        let nofile = hard_nofile().min(1_048_576);
        let listen = if std::env::var("NGINX_LISTEN").as_deref() == Ok("each") {
            hosts
                .iter()
                .map(|h| format!("    listen {h}:{port} backlog=4096;\n"))
                .collect::<String>()
        } else {
            format!("    listen 0.0.0.0:{port} reuseport backlog=4096;\n")
        };
        let root = fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"));
        let user = if root { "user root;\n" } else { "" };
        let workers = std::env::var("NGINX_WORKERS").unwrap_or_else(|_| "1".into());
        let d = dir.display();
        let conf = format!(
            "daemon off;\nmaster_process on;\n{user}worker_processes {workers};\n\
             worker_rlimit_nofile {nofile};\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections {}; multi_accept on; }}\n\
             http {{\n  access_log off;\n  log_format one '$msec';\n\
             client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             client_header_timeout 1d;\n  keepalive_timeout 1d;\n  keepalive_requests 1000000;\n\
             server {{\n{listen}    server_name _;\n\
             location / {{ access_log {d}/access.log one; return 200 \"ok\\n\"; }}\n  }}\n}}\n",
            nofile.saturating_sub(64).max(1024)
        );
        fs::write(dir.join("nginx.conf"), conf).expect("write nginx.conf");
        let child = Command::new(nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx");
        let probe: SocketAddr = format!("{}:{port}", hosts[0]).parse().expect("addr");
        let up = common::wait_until(Duration::from_secs(30), || {
            TcpStream::connect_timeout(&probe, Duration::from_millis(200)).is_ok()
        });
        assert!(
            up,
            "nginx did not start: {}",
            fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        Nginx { child, access_log }
    }

    /// Requests logged so far (a line is `$msec`: 15 bytes).
    fn requests(&self) -> u64 {
        fs::metadata(&self.access_log).map_or(0, |m| m.len() / 15)
    }

    /// The most requests nginx logged in one 100 ms slot between `from`
    /// and `to` (Unix seconds): how bunched the checks are.
    fn busiest_100ms(&self, from: f64, to: f64) -> u64 {
        let text = fs::read_to_string(&self.access_log).unwrap_or_default();
        let mut slots: HashMap<u64, u64> = HashMap::new();
        for t in text.lines().filter_map(|l| l.parse::<f64>().ok()) {
            if t >= from && t < to {
                *slots.entry((t * 10.0) as u64).or_default() += 1;
            }
        }
        slots.into_values().max().unwrap_or(0)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: fast shutdown of master and workers.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- the ipvsadm journal

/// The stand-in's journal, read incrementally: `EPOCH -a/-d … -r HOST:PORT`.
struct Journal {
    path: PathBuf,
    offset: u64,
    partial: String,
    adds: HashMap<String, Vec<f64>>,
    dels: HashMap<String, Vec<f64>>,
    batches: usize,
    last_stamp: f64,
}

impl Journal {
    fn new(path: PathBuf) -> Journal {
        Journal {
            path,
            offset: 0,
            partial: String::new(),
            adds: HashMap::new(),
            dels: HashMap::new(),
            batches: 0,
            last_stamp: 0.0,
        }
    }

    fn update(&mut self) {
        let Ok(mut f) = fs::File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut text = String::new();
        let Ok(n) = f.read_to_string(&mut text) else {
            return;
        };
        self.offset += n as u64;
        let text = std::mem::take(&mut self.partial) + &text;
        let complete = text.rfind('\n').map_or(0, |i| i + 1);
        self.partial = text[complete..].to_string();
        for line in text[..complete].lines() {
            let Some((stamp, cmd)) = line.split_once(' ') else {
                continue;
            };
            let Ok(stamp) = stamp.parse::<f64>() else {
                continue;
            };
            if stamp != self.last_stamp {
                self.batches += 1;
                self.last_stamp = stamp;
            }
            let host = cmd
                .split_whitespace()
                .skip_while(|w| *w != "-r")
                .nth(1)
                .and_then(|hp| hp.rsplit_once(':'))
                .map(|(h, _)| h.to_string());
            let Some(host) = host else { continue };
            if cmd.starts_with("-a ") {
                self.adds.entry(host).or_default().push(stamp);
            } else if cmd.starts_with("-d ") {
                self.dels.entry(host).or_default().push(stamp);
            }
        }
    }

    fn count(map: &HashMap<String, Vec<f64>>, host: &str) -> usize {
        map.get(host).map_or(0, Vec::len)
    }

    fn pooled(&self, host: &str) -> bool {
        Self::count(&self.adds, host) > Self::count(&self.dels, host)
    }
}

/// The stand-in `ipvsadm`: stamps every line of a `-R` batch with the time
/// it started (its first instruction, before it reads the batch) and
/// appends them to the journal; anything else (`-Sn`: an empty table)
/// succeeds with no output. A small C program, compiled here with `cc`, as
/// the real `ipvsadm` is one: a shell script's own start-up (bash, `cat`,
/// `sed`: 10–50 ms on a loaded box) would be most of what reset → `-d`
/// measures. Without `cc`, a bash script does the same, slower.
fn write_ipvsadm(dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("ipvsadm.log");
    let program = dir.join("ipvsadm");
    let source = format!(
        "#include <stdio.h>\n#include <string.h>\n#include <time.h>\n\
         int main(int argc, char **argv) {{\n\
           struct timespec ts;\n  clock_gettime(CLOCK_REALTIME, &ts);\n\
           if (argc < 2 || strcmp(argv[1], \"-R\") != 0) return 0;\n\
           FILE *log = fopen(\"{}\", \"a\");\n  if (!log) return 1;\n\
           char line[8192];\n\
           while (fgets(line, sizeof line, stdin))\n\
             fprintf(log, \"%ld.%06ld %s\", (long)ts.tv_sec, ts.tv_nsec / 1000, line);\n\
           return fclose(log) != 0;\n}}\n",
        log.display()
    );
    let c = dir.join("ipvsadm.c");
    fs::write(&c, source).expect("write ipvsadm.c");
    let compiled = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&program)
        .arg(&c)
        .status()
        .is_ok_and(|s| s.success());
    if !compiled {
        eprintln!("no cc: the ipvsadm stand-in is a bash script (slower to start)");
        let script = common::write_atomic(
            dir,
            "ipvsadm",
            &format!(
                "#!/bin/bash\nnow=$EPOCHREALTIME\n[ \"$1\" = \"-R\" ] || exit 0\nbatch=$(cat)\n\
                 printf '%s\\n' \"$batch\" | sed \"s/^/$now /\" >> '{}'\n",
                log.display()
            ),
        );
        fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    (program, log)
}

// ---------------------------------------------------------------- /proc

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?[field.len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn fds(pid: u32) -> Option<u64> {
    Some(fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

/// (busy, total) jiffies of the whole machine, all CPUs.
fn machine_jiffies() -> (f64, f64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: f64 = v.iter().take(8).sum();
    let idle = v.get(3).unwrap_or(&0.0) + v.get(4).unwrap_or(&0.0);
    (total - idle, total)
}

/// CPU seconds of `pid` and its children (nginx's master and workers).
fn tree_cpu_seconds(pid: u32) -> f64 {
    let mut sum = support::cpu_seconds(pid);
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            sum += support::cpu_seconds(child);
        }
    }
    sum
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

// ---------------------------------------------------------------- one run

#[derive(Default)]
struct Row {
    label: String,
    servers: usize,
    services: usize,
    interval: f64,
    pooled_after: Option<f64>,
    threads: (u64, u64),
    fds: (u64, u64),
    rss_mib: (f64, f64),
    hwm_mib: f64,
    cpu_pct: Option<f64>,
    nginx_pct: Option<f64>,
    machine_cores: Option<f64>,
    checks_per_s: Option<f64>,
    expected_checks_per_s: f64,
    us_per_check: Option<f64>,
    busiest: Option<u64>,
    false_depools: usize,
    reset_p50_p99: Option<(f64, f64, usize)>,
    log_lines: usize,
    notes: Vec<String>,
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn run(shape: &Shape, interval: f64, opts: &Opts) -> Row {
    let services = match shape {
        Shape::Uniform(n) => uniform(*n),
        Shape::Prod(n) => prod(*n),
        Shape::Prep12(p) => prep12(p),
    };
    let servers: usize = services.iter().map(|s| s.hosts.len()).sum();
    let fetching: usize = services
        .iter()
        .filter(|s| s.fetch)
        .map(|s| s.hosts.len())
        .sum();
    let mut row = Row {
        label: match shape {
            Shape::Uniform(_) => "uniform".into(),
            Shape::Prod(_) => "prod-shaped".into(),
            Shape::Prep12(p) => format!("prep12 {}", p.display()),
        },
        servers,
        services: services.len(),
        interval,
        expected_checks_per_s: fetching as f64 / interval,
        ..Row::default()
    };
    eprintln!(
        "== {} servers in {} services ({}), ProxyFetch every {interval} s on {fetching}",
        servers, row.services, row.label
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let nginx_hosts: Vec<String> = services
        .iter()
        .flat_map(|s| s.hosts.iter())
        .filter(|h| !h.starts_with("127.250."))
        .cloned()
        .collect();
    let nginx = Nginx::start(dir.path(), opts.port, &nginx_hosts);
    let own: Vec<common::Backend> = (0..TEST_BACKENDS)
        .map(|k| {
            let ip = test_host(k).parse().expect("ip");
            common::Backend::start_sharing_port(SocketAddr::new(ip, opts.port))
        })
        .collect();
    let own_hosts: Vec<String> = (0..TEST_BACKENDS).map(test_host).collect();
    let (script, journal_path) = write_ipvsadm(dir.path());
    let conf = write_rsbal_config(
        dir.path(),
        &services,
        &script,
        opts.port,
        free_port(),
        interval,
        opts.timeout,
    );
    let log_path = dir.path().join("rsbal.log");
    let log = fs::File::create(&log_path).expect("rsbal.log");
    // As systemd's LimitNOFILE= would: the soft fd limit at the hard one.
    let mut rsbal = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n \"$(ulimit -Hn)\" && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_rsbal"))
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .spawn()
        .expect("start rsbal");
    let pid = rsbal.id();
    let started = Instant::now();
    let mut journal = Journal::new(journal_path);
    let all_hosts: Vec<&String> = services.iter().flat_map(|s| s.hosts.iter()).collect();
    let alive = |c: &mut Child| matches!(c.try_wait(), Ok(None));
    // Give up waiting once no server was pooled for 30 s (or after
    // 60 s + 1 s per 100 servers), then sample whatever runs.
    let limit = Duration::from_secs(60 + servers as u64 / 100);
    let mut peak = (0u64, 0u64);
    let mut progress = (0usize, Instant::now());
    loop {
        journal.update();
        peak.0 = peak.0.max(status_kib(pid, "Threads:").unwrap_or(0));
        peak.1 = peak.1.max(fds(pid).unwrap_or(0));
        row.hwm_mib = row.hwm_mib.max(status_kib(pid, "VmHWM:").map_or(0.0, mib));
        let pooled = all_hosts.iter().filter(|h| journal.pooled(h)).count();
        if pooled == servers {
            row.pooled_after = Some(started.elapsed().as_secs_f64());
            break;
        }
        if pooled != progress.0 {
            progress = (pooled, Instant::now());
        }
        let stalled = progress.1.elapsed() > Duration::from_secs(30);
        if !alive(&mut rsbal) || started.elapsed() > limit || stalled {
            row.notes.push(format!(
                "only {pooled} of {servers} pooled after {:.0} s (peak {} threads, {} fds){}",
                started.elapsed().as_secs_f64(),
                peak.0,
                peak.1,
                match rsbal.try_wait() {
                    Ok(Some(st)) => format!(", rsbal exited: {st}"),
                    _ => String::new(),
                }
            ));
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    eprintln!("   pooled after {:?}", row.pooled_after);
    if alive(&mut rsbal) {
        thread::sleep(Duration::from_secs(
            opts.settle.max((2.0 * interval) as u64),
        ));
        let (mut tmin, mut tmax, mut fmin, mut fmax, mut rmin, mut rmax) =
            (u64::MAX, 0, u64::MAX, 0, u64::MAX, 0);
        let own_requests = || own.iter().map(common::Backend::requests).sum::<u64>();
        let (cpu0, req0, own0, t0) = (
            support::cpu_seconds(pid),
            nginx.requests(),
            own_requests(),
            Instant::now(),
        );
        let (ngx0, m0, w0) = (tree_cpu_seconds(nginx.child.id()), machine_jiffies(), now());
        for _ in 0..opts.seconds {
            thread::sleep(Duration::from_secs(1));
            if let (Some(t), Some(f), Some(r)) = (
                status_kib(pid, "Threads:"),
                fds(pid),
                status_kib(pid, "VmRSS:"),
            ) {
                (tmin, tmax, fmin, fmax) = (tmin.min(t), tmax.max(t), fmin.min(f), fmax.max(f));
                (rmin, rmax) = (rmin.min(r), rmax.max(r));
            }
        }
        let cpu = support::cpu_seconds(pid) - cpu0;
        let req = nginx.requests() - req0 + own_requests() - own0;
        let secs = t0.elapsed().as_secs_f64();
        let ngx = tree_cpu_seconds(nginx.child.id()) - ngx0;
        let m1 = machine_jiffies();
        let cores = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        row.nginx_pct = Some(ngx / secs * 100.0);
        row.busiest = Some(nginx.busiest_100ms(w0, now()));
        row.machine_cores = Some((m1.0 - m0.0) / (m1.1 - m0.1).max(1.0) * cores);
        row.threads = (tmin, tmax);
        row.fds = (fmin, fmax);
        row.rss_mib = (mib(rmin), mib(rmax));
        row.cpu_pct = Some(cpu / secs * 100.0);
        row.checks_per_s = Some(req as f64 / secs);
        row.us_per_check = (req > 0).then(|| cpu / req as f64 * 1e6);
        eprintln!("   sampled {secs:.0} s: cpu {cpu:.2} s, {req} checks");

        // Reset → -d under load.
        let mut lat = Vec::new();
        let mut failures = 0;
        for i in 0..opts.resets {
            let k = i % own.len();
            let h = &own_hosts[k];
            let back = common::wait_until(Duration::from_secs(30), || {
                journal.update();
                journal.pooled(h)
            });
            if !back || !alive(&mut rsbal) {
                failures += 1;
                if failures >= 3 {
                    break;
                }
                continue;
            }
            let removed = Journal::count(&journal.dels, h);
            let t0 = now();
            own[k].reset_connections();
            let seen = common::wait_until(Duration::from_secs(10), || {
                journal.update();
                Journal::count(&journal.dels, h) > removed
            });
            if seen {
                lat.push((journal.dels[h][removed] - t0) * 1000.0);
            } else {
                failures += 1;
                if failures >= 3 {
                    break;
                }
            }
            thread::sleep(Duration::from_millis(200));
        }
        if failures > 0 {
            row.notes.push(format!(
                "{failures} resets not timed (server not pooled, or no -d)"
            ));
        }
        if !lat.is_empty() {
            lat.sort_by(f64::total_cmp);
            let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize];
            row.reset_p50_p99 = Some((pct(0.5), pct(0.99), lat.len()));
        }
    }
    journal.update();
    row.false_depools = journal
        .dels
        .iter()
        .filter(|(h, _)| !h.starts_with("127.250."))
        .map(|(_, d)| d.len())
        .sum();
    row.hwm_mib = row.hwm_mib.max(status_kib(pid, "VmHWM:").map_or(0.0, mib));
    row.notes
        .push(format!("{} ipvsadm -R batches", journal.batches));
    if !alive(&mut rsbal) {
        row.notes
            .push(format!("rsbal exited: {:?}", rsbal.try_wait()));
    }
    let _ = rsbal.kill();
    let _ = rsbal.wait();
    let text = fs::read_to_string(&log_path).unwrap_or_default();
    row.log_lines = text.lines().count();
    for needle in [
        "Too many open files",
        "panicked",
        "Could not depool",
        "Resource temporarily unavailable",
    ] {
        let n = text.matches(needle).count();
        if n > 0 {
            let first = text.lines().find(|l| l.contains(needle)).unwrap_or("");
            let first: String = first.chars().take(220).collect();
            row.notes
                .push(format!("log: {n} x {needle:?}, first: `{first}`"));
        }
    }
    let mut reasons: HashMap<String, usize> = HashMap::new();
    for line in text.lines() {
        let (Some(m), Some(r)) = (
            line.split_once("Monitoring instance "),
            line.split_once(" down: "),
        ) else {
            continue;
        };
        let monitor = m.1.split_whitespace().next().unwrap_or("");
        let reason: String =
            r.1.chars()
                .map(|c| if c.is_ascii_digit() { '#' } else { c })
                .take(70)
                .collect();
        *reasons.entry(format!("{monitor}: {reason}")).or_default() += 1;
    }
    let mut reasons: Vec<_> = reasons.into_iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    for (reason, n) in reasons.iter().take(4) {
        row.notes.push(format!("down reports: {n} x {reason}"));
    }
    if std::env::var("KEEP").is_ok() {
        let keep = dir.keep();
        row.notes.push(format!("kept {}", keep.display()));
    }
    drop(own);
    drop(nginx);
    row
}

fn range(lo: f64, hi: f64, unit: &str) -> String {
    if (hi - lo).abs() < 0.5 {
        format!("{hi:.0}{unit}")
    } else {
        format!("{lo:.0}–{hi:.0}{unit}")
    }
}

/// The floor of a ProxyFetch check on this machine: the CPU a minimal
/// blocking client spends on one loopback connect + GET + response head +
/// close against the same nginx, with nothing else (no scheduling, no
/// threads, no metrics), flat out and paced (a sleep between requests, as
/// checks spread over an interval are: each then costs a wake-up too).
fn floor(opts: &Opts) {
    const REQUESTS: usize = 20_000;
    let hosts: Vec<String> = (0..1000).map(nginx_host).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let nginx = Nginx::start(dir.path(), opts.port, &hosts);
    let addrs: Vec<SocketAddr> = hosts
        .iter()
        .map(|h| format!("{h}:{}", opts.port).parse().expect("addr"))
        .collect();
    let request = "GET /pools HTTP/1.1\r\nHost: rsbal.example.org\r\nUser-Agent: floor\r\n\
                   Accept: */*\r\nConnection: close\r\n\r\n";
    let me = std::process::id();
    let mut line = String::from("floor (one loopback connect + GET + head + close, one thread):");
    for (what, pause) in [
        ("flat out", None),
        ("paced 200 µs", Some(Duration::from_micros(200))),
    ] {
        let n = if pause.is_some() {
            REQUESTS / 4
        } else {
            REQUESTS
        };
        let (cpu0, ngx0, t0) = (
            support::cpu_seconds(me),
            tree_cpu_seconds(nginx.child.id()),
            Instant::now(),
        );
        let mut buf = [0u8; 4096];
        for i in 0..n {
            let mut s = TcpStream::connect(addrs[i % addrs.len()]).expect("connect");
            s.write_all(request.as_bytes()).expect("write");
            let mut len = 0;
            while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf[len..]) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => len += k,
                }
            }
            drop(s);
            if let Some(p) = pause {
                thread::sleep(p);
            }
        }
        let cpu = support::cpu_seconds(me) - cpu0;
        let ngx = tree_cpu_seconds(nginx.child.id()) - ngx0;
        let _ = write!(
            line,
            " {what}: {:.0} µs CPU per request (nginx {:.0} µs), {:.0} µs wall;",
            cpu / n as f64 * 1e6,
            ngx / n as f64 * 1e6,
            t0.elapsed().as_secs_f64() / n as f64 * 1e6
        );
    }
    println!("{}", line.trim_end_matches(';'));
}

fn main() {
    let (shapes, opts) = parse_args();
    if opts.floor {
        floor(&opts);
    }
    let mut rows = Vec::new();
    for shape in &shapes {
        for &interval in &opts.intervals {
            rows.push(run(shape, interval, &opts));
        }
    }
    println!(
        "\nrsbal scale benchmark: nofile hard {}, {} s window, proxyfetch.timeout {} s, MALLOC_ARENA_MAX={}\n",
        hard_nofile(),
        opts.seconds,
        opts.timeout,
        std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "unset".into())
    );
    println!(
        "| config | servers | services | PF every | all pooled after | threads | fds | VmRSS | VmHWM | CPU (one core) | nginx CPU | machine busy (cores) | checks/s (expected) | busiest 100 ms | CPU µs/check | false `-d` | reset → `-d` p50 / p99 (n) | log lines |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let na = || "—".to_string();
        println!(
            "| {} | {} | {} | {} s | {} | {} | {} | {} | {:.0} MiB | {} | {} | {} | {} ({:.0}) | {} | {} | {} | {} | {} |",
            r.label,
            r.servers,
            r.services,
            r.interval,
            r.pooled_after.map_or_else(na, |s| format!("{s:.1} s")),
            if r.threads.1 > 0 { range(r.threads.0 as f64, r.threads.1 as f64, "") } else { na() },
            if r.fds.1 > 0 { range(r.fds.0 as f64, r.fds.1 as f64, "") } else { na() },
            if r.rss_mib.1 > 0.0 { range(r.rss_mib.0, r.rss_mib.1, " MiB") } else { na() },
            r.hwm_mib,
            r.cpu_pct.map_or_else(na, |c| format!("{c:.1} %")),
            r.nginx_pct.map_or_else(na, |c| format!("{c:.1} %")),
            r.machine_cores.map_or_else(na, |c| format!("{c:.2}")),
            r.checks_per_s.map_or_else(na, |c| format!("{c:.0}")),
            r.expected_checks_per_s,
            r.busiest.map_or_else(na, |b| b.to_string()),
            r.us_per_check.map_or_else(na, |c| format!("{c:.0}")),
            r.false_depools,
            r.reset_p50_p99
                .map_or_else(na, |(a, b, n)| format!("{a:.1} / {b:.1} ms ({n})")),
            r.log_lines,
        );
    }
    for r in &rows {
        for n in &r.notes {
            println!(
                "- {} {} servers, every {} s: {n}",
                r.label, r.servers, r.interval
            );
        }
    }
}
