//! RunCommand, DNSQuery and UDP monitors end to end: the real rsbal binary,
//! real child processes, a real DNS server and UDP sockets on loopback
//! (127.10.0.0/16 – 127.19.0.0/16), a fake ipvsadm that records each batch.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a failed set-up panics; helpers are shared by several crates

mod common;

use common::pool::legacy_list;
use common::stateful_ipvsadm::alive;
use common::*;
use simple_dns::rdata::{RData, A, AAAA};
use simple_dns::{Packet, ResourceRecord, CLASS, QTYPE, RCODE, TYPE};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn global(ipvsadm: &FakeIpvsadm) -> String {
    format!(
        "[global]\nipvsadm = {}\nipvs-backend = ipvsadm\nipvs-reconcile-interval = 0\n\n",
        ipvsadm.script.display()
    )
}

/// A `[global]` section that also serves the HTTP API on `api`.
fn global_with_api(ipvsadm: &FakeIpvsadm, api: SocketAddr) -> String {
    format!(
        "[global]\nipvsadm = {}\nipvs-backend = ipvsadm\nipvs-reconcile-interval = 0\ninstrumentation = yes\ninstrumentation_port = {}\n\
         instrumentation_ips = ['{}']\n\n",
        ipvsadm.script.display(),
        api.port(),
        api.ip()
    )
}

/// Waits until `/metrics` on `api` has a line starting with `prefix`.
fn assert_metric(api: SocketAddr, prefix: &str) {
    let mut last = String::new();
    let seen = wait_until(T, || {
        last = http_get(api, "/metrics", false)
            .map(|(_, body)| body)
            .unwrap_or_default();
        last.lines().any(|l| l.starts_with(prefix))
    });
    assert!(seen, "no metric {prefix} in:\n{last}");
}

/// A service section; `monitor` holds `monitors = …` and the options.
/// Threshold 0, so a lone server can be depooled.
fn service(name: &str, protocol: &str, vip: &str, port: u16, list: &Path, monitor: &str) -> String {
    format!(
        "[{name}]\nprotocol = {protocol}\nip = {vip}\nport = {port}\nscheduler = wrr\n\
         config = file://{}\ndepool-threshold = 0\n{monitor}\n",
        list.display()
    )
}

fn flag(protocol: &str) -> &'static str {
    if protocol == "udp" {
        "-u"
    } else {
        "-t"
    }
}

fn add(protocol: &str, vip: &str, rip: &str, port: u16, w: u32) -> String {
    format!("-a {} {vip}:{port} -r {rip}:{port} -w {w}", flag(protocol))
}

fn del(protocol: &str, vip: &str, rip: &str, port: u16) -> String {
    format!("-d {} {vip}:{port} -r {rip}:{port}", flag(protocol))
}

/// The PID written to `path`, once it is there.
fn read_pid(path: &Path) -> i32 {
    let mut pid = None;
    assert!(
        wait_until(T, || {
            pid = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse().ok());
            pid.is_some()
        }),
        "no PID in {}",
        path.display()
    );
    pid.unwrap()
}

fn assert_log(rsbal: &Rsbal, text: &str) {
    assert!(
        wait_until(T, || rsbal.log_text().contains(text)),
        "log never said {text:?}"
    );
}

// ---------------------------------------------------------------------------
// RunCommand
// ---------------------------------------------------------------------------

/// rsbal running one TCP service whose servers are checked by RunCommand.
struct CommandRig {
    dir: tempfile::TempDir,
    ipvsadm: FakeIpvsadm,
    rsbal: Rsbal,
    vip: &'static str,
}

const COMMAND_PORT: u16 = 8080;

impl CommandRig {
    /// Service `name` on `vip` with `hosts` (weight 10 unless given), checked
    /// by the shell script `body`, in which `$DIR` is the test directory;
    /// `options` adds `runcommand.*` lines; `api` turns on the HTTP API.
    fn start(
        name: &str,
        vip: &'static str,
        hosts: &[(&str, u32)],
        body: &str,
        options: &str,
        api: Option<SocketAddr>,
    ) -> CommandRig {
        let dir = tempfile::tempdir().unwrap();
        let ipvsadm = FakeIpvsadm::new(dir.path());
        let body = format!("DIR={}\n{body}", dir.path().display());
        let check = script(dir.path(), "check", &body);
        let hosts: Vec<_> = hosts.iter().map(|(h, w)| (*h, *w, true)).collect();
        let list = write_atomic(dir.path(), "servers", &legacy_list(&hosts));
        let monitor = format!(
            "monitors = [ 'RunCommand' ]\nruncommand.command = {}\n{options}",
            check.display()
        );
        let global = match api {
            Some(api) => global_with_api(&ipvsadm, api),
            None => global(&ipvsadm),
        };
        let conf = dir.path().join("rsbal.conf");
        let service = service(name, "tcp", vip, COMMAND_PORT, &list, &monitor);
        std::fs::write(&conf, global + &service).unwrap();
        let rsbal = Rsbal::start(&conf, &[]);
        CommandRig {
            dir,
            ipvsadm,
            rsbal,
            vip,
        }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }

    fn add(&self, rip: &str, w: u32) -> String {
        add("tcp", self.vip, rip, COMMAND_PORT, w)
    }

    fn del(&self, rip: &str) -> String {
        del("tcp", self.vip, rip, COMMAND_PORT)
    }
}

/// Shell lines that write the PID `$var` to `$DIR/<file>` atomically.
fn save_pid(var: &str, file: &str) -> String {
    format!("echo {var} > \"$DIR/{file}.tmp\"\nmv \"$DIR/{file}.tmp\" \"$DIR/{file}\"\n")
}

#[test]
fn run_command_exit_status_flips_the_server() {
    let api = SocketAddr::new(lo(10, 1), free_port());
    let rig = CommandRig::start(
        "cmd",
        "192.0.2.10",
        &[("127.10.0.2", 7)],
        "echo \"$@\" > \"$DIR/args\"\necho \"checked $1\"\ntest -e \"$DIR/healthy\"\n",
        "runcommand.arguments = [ server.host, '--ip=server.ip', 'server.port', server.weight ]\n\
         runcommand.interval = 1\nruncommand.timeout = 5\n",
        Some(api),
    );
    std::fs::write(rig.path("healthy"), "").unwrap();
    let (ipvsadm, rsbal) = (&rig.ipvsadm, &rig.rsbal);

    ipvsadm.assert_seen(&rig.add("127.10.0.2", 7), 1);
    assert!(wait_until(T, || std::fs::read_to_string(rig.path("args"))
        .is_ok_and(|a| a == "127.10.0.2 --ip=127.10.0.2 8080 7\n")));
    assert_log(rsbal, "Cmd stdout: checked 127.10.0.2");

    std::fs::remove_file(rig.path("healthy")).unwrap();
    ipvsadm.assert_seen(&rig.del("127.10.0.2"), 1);
    assert_log(rsbal, "command failed with exit status 1");

    std::fs::write(rig.path("healthy"), "").unwrap();
    ipvsadm.assert_seen(&rig.add("127.10.0.2", 7), 2);

    let labels = "host=\"127.10.0.2\",monitor=\"RunCommand\"";
    for (code, result) in [("0", "successful"), ("1", "failed")] {
        assert_metric(
            api,
            &format!(
                "pybal_monitor_runcommand_run_duration_seconds{{exitcode=\"{code}\",{labels},result=\"{result}\",service=\"cmd\"}}"
            ),
        );
    }
}

#[test]
fn run_command_timeout_kills_the_command_and_its_child() {
    let body = format!(
        "sleep 1000 &\n{}{}sleep 1000\n",
        save_pid("$!", "child.pid"),
        save_pid("$$", "self.pid")
    );
    let rig = CommandRig::start(
        "slow",
        "192.0.2.11",
        &[("127.10.1.2", 10)],
        &body,
        "runcommand.interval = 30\nruncommand.timeout = 1\n",
        None,
    );

    let child = read_pid(&rig.path("child.pid"));
    let script_pid = read_pid(&rig.path("self.pid"));
    rig.ipvsadm.assert_seen(&rig.del("127.10.1.2"), 1);
    assert_log(&rig.rsbal, "command timed out after 1s");
    assert!(
        wait_until(T, || !alive(child) && !alive(script_pid)),
        "child {child} or script {script_pid} survived the timeout"
    );
}

#[test]
fn run_command_kills_children_left_behind() {
    let body = format!("sleep 1000 &\n{}exit 0\n", save_pid("$!", "child.pid"));
    let rig = CommandRig::start(
        "leaves",
        "192.0.2.12",
        &[("127.10.2.2", 10)],
        &body,
        "runcommand.interval = 30\nruncommand.timeout = 10\n",
        None,
    );

    let child = read_pid(&rig.path("child.pid"));
    assert!(
        wait_until(T, || !alive(child)),
        "child {child} left behind is still running"
    );
    assert_log(
        &rig.rsbal,
        &format!("left child processes behind (PIDs {child}), which have been killed"),
    );
    assert_log(&rig.rsbal, "command exited with status 0");
    assert_eq!(rig.ipvsadm.count(&rig.del("127.10.2.2")), 0);
}

#[test]
fn removing_the_server_kills_its_running_command() {
    let body = format!("sleep 1000 &\n{}wait\n", save_pid("$!", "$1.pid"));
    let rig = CommandRig::start(
        "long",
        "192.0.2.13",
        &[("127.10.3.2", 10), ("127.10.3.3", 10)],
        &body,
        "runcommand.arguments = [ server.host ]\n\
         runcommand.interval = 60\nruncommand.timeout = 60\n",
        None,
    );

    let removed = read_pid(&rig.path("127.10.3.3.pid"));
    let kept = read_pid(&rig.path("127.10.3.2.pid"));
    write_atomic(
        rig.dir.path(),
        "servers",
        &legacy_list(&[("127.10.3.2", 10, true)]),
    );
    rig.ipvsadm.assert_seen(&rig.del("127.10.3.3"), 1);
    assert!(
        wait_until(T, || !alive(removed)),
        "command of the removed server still runs"
    );
    assert!(alive(kept), "command of the kept server was killed");
}

// ---------------------------------------------------------------------------
// DNSQuery
// ---------------------------------------------------------------------------

/// How the test DNS server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DnsMode {
    /// A/AAAA for known names, NXDOMAIN for others.
    Authoritative,
    ServFail,
    Refused,
    /// Reads queries and never answers.
    Silent,
}

/// A small authoritative DNS server on a loopback UDP socket.
struct DnsServer {
    mode: Arc<Mutex<DnsMode>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

const KNOWN_NAME: &str = "www.example.org";

impl DnsServer {
    fn start(addr: SocketAddr) -> DnsServer {
        let socket = UdpSocket::bind(addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let mode = Arc::new(Mutex::new(DnsMode::Authoritative));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (Arc::clone(&mode), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                let mode = *m.lock().unwrap();
                if let Some(reply) = answer(&buf[..n], mode) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        DnsServer {
            mode,
            stop,
            thread: Some(thread),
        }
    }

    fn set_mode(&self, mode: DnsMode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// Stops answering and closes the socket (the port then refuses).
    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(query: &[u8], mode: DnsMode) -> Option<Vec<u8>> {
    let query = Packet::parse(query).ok()?;
    let question = query.questions.first()?.clone();
    let name = question.qname.to_string();
    let mut reply = query.clone().into_reply();
    match mode {
        DnsMode::Silent => return None,
        DnsMode::ServFail => *reply.rcode_mut() = RCODE::ServerFailure,
        DnsMode::Refused => *reply.rcode_mut() = RCODE::Refused,
        DnsMode::Authoritative if name != KNOWN_NAME => *reply.rcode_mut() = RCODE::NameError,
        DnsMode::Authoritative => {
            let rdata = if question.qtype == QTYPE::TYPE(TYPE::AAAA) {
                RData::AAAA(AAAA {
                    address: u128::from(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x53)),
                })
            } else {
                RData::A(A {
                    address: u32::from(Ipv4Addr::new(192, 0, 2, 53)),
                })
            };
            reply.answers.push(ResourceRecord::new(
                question.qname.clone(),
                CLASS::IN,
                60,
                rdata,
            ));
        }
    }
    reply.questions = vec![question];
    reply.build_bytes_vec().ok()
}

fn dns_monitor(hostname: &str, fail_on_nxdomain: bool) -> String {
    format!(
        "monitors = [ 'DNSQuery' ]\ndnsquery.hostnames = [ '{hostname}' ]\n\
         dnsquery.interval = 1\ndnsquery.timeout = 1\ndnsquery.fail-on-nxdomain = {}\n",
        if fail_on_nxdomain { "yes" } else { "no" }
    )
}

#[test]
fn dns_query_against_a_real_dns_server() {
    let dir = tempfile::tempdir().unwrap();
    let ipvsadm = FakeIpvsadm::new(dir.path());
    let port = 8053;
    let host = "127.11.0.2";
    let mut dns = DnsServer::start(SocketAddr::new(host.parse().unwrap(), port));
    let list = write_atomic(dir.path(), "servers", &legacy_list(&[(host, 10, true)]));
    let (known, nx_ok, nx_fail) = ("192.0.2.20", "192.0.2.21", "192.0.2.22");
    let conf = dir.path().join("rsbal.conf");
    let api = SocketAddr::new(lo(11, 1), free_port());
    std::fs::write(
        &conf,
        global_with_api(&ipvsadm, api)
            + &service(
                "known",
                "udp",
                known,
                port,
                &list,
                &dns_monitor(KNOWN_NAME, false),
            )
            + &service(
                "nx-ok",
                "udp",
                nx_ok,
                port,
                &list,
                &dns_monitor("nx.example.org", false),
            )
            + &service(
                "nx-fail",
                "udp",
                nx_fail,
                port,
                &list,
                &dns_monitor("nx.example.org", true),
            ),
    )
    .unwrap();
    let rsbal = Rsbal::start(&conf, &[]);
    for vip in [known, nx_ok] {
        ipvsadm.assert_seen(&add("udp", vip, host, port, 10), 1);
    }

    // Answers: up. NXDOMAIN: up, unless fail-on-nxdomain.
    assert_log(&rsbal, "DNS query successful: www.example.org");
    assert_log(&rsbal, "NXDOMAIN (accepted), query: nx.example.org");
    assert_log(&rsbal, "NXDOMAIN, query: nx.example.org");
    // Down before its first IPVS batch went out, or depooled right after.
    assert!(wait_until(T, || {
        ipvsadm
            .lines()
            .iter()
            .any(|l| l.starts_with(&format!("-A -u {nx_fail}:")))
            && ipvsadm.count(&add("udp", nx_fail, host, port, 10))
                == ipvsadm.count(&del("udp", nx_fail, host, port))
    }));
    assert_eq!(ipvsadm.count(&del("udp", known, host, port)), 0);
    assert_eq!(ipvsadm.count(&del("udp", nx_ok, host, port)), 0);

    // Each failure depools, with its own reason; each recovery repools.
    let mut removals = 0;
    for (mode, reason) in [
        (DnsMode::ServFail, "SERVFAIL"),
        (DnsMode::Refused, "REFUSED"),
        (DnsMode::Silent, "DNS query timeout after 1s"),
    ] {
        dns.set_mode(mode);
        removals += 1;
        ipvsadm.assert_seen(&del("udp", known, host, port), removals);
        assert_log(&rsbal, reason);
        dns.set_mode(DnsMode::Authoritative);
        ipvsadm.assert_seen(&add("udp", known, host, port, 10), removals + 1);
    }

    // Server gone: the port refuses (ICMP port unreachable).
    dns.stop();
    ipvsadm.assert_seen(&del("udp", known, host, port), removals + 1);
    assert_log(&rsbal, "DNS query failed: ICMP port unreachable received");

    for result in ["successful", "failed"] {
        assert_metric(
            api,
            &format!(
                "pybal_monitor_dnsquery_request_duration_seconds{{host=\"{host}\",monitor=\"DNSQuery\",result=\"{result}\",service=\"known\"}}"
            ),
        );
    }
}

// ---------------------------------------------------------------------------
// UDP
// ---------------------------------------------------------------------------

#[test]
fn udp_monitor_follows_a_listening_socket() {
    let dir = tempfile::tempdir().unwrap();
    let ipvsadm = FakeIpvsadm::new(dir.path());
    let port = 9053;
    let host = "127.12.0.2";
    let addr = SocketAddr::new(host.parse().unwrap(), port);
    let listener = UdpSocket::bind(addr).unwrap();
    let list = write_atomic(dir.path(), "servers", &legacy_list(&[(host, 10, true)]));
    let vip = "192.0.2.30";
    // Each check waits up to a second (here: the interval) for an ICMP error
    // before it counts as up; with icmp-timeout 3 the first quiet check after
    // an error is still too early.
    let monitor = "monitors = [ 'UDP' ]\nudp.interval = 1\nudp.icmp-timeout = 3\n";
    let conf = dir.path().join("rsbal.conf");
    std::fs::write(
        &conf,
        global(&ipvsadm) + &service("udp", "udp", vip, port, &list, monitor),
    )
    .unwrap();
    let rsbal = Rsbal::start(&conf, &[]);
    ipvsadm.assert_seen(&add("udp", vip, host, port, 10), 1);

    // Datagrams arrive and nothing refuses them: stays up.
    listener
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    for _ in 0..3 {
        assert_eq!(
            listener.recv(&mut buf).unwrap(),
            0,
            "expected empty datagrams"
        );
    }
    assert_log(&rsbal, "no ICMP error received");
    assert_eq!(ipvsadm.count(&del("udp", vip, host, port)), 0);

    // Closed: the next datagram gets an ICMP port unreachable.
    drop(listener);
    ipvsadm.assert_seen(&del("udp", vip, host, port), 1);
    assert_log(&rsbal, "ICMP port unreachable received");

    // Open again: up once no error has been seen for icmp-timeout.
    let _listener = UdpSocket::bind(addr).unwrap();
    ipvsadm.assert_seen(&add("udp", vip, host, port, 10), 2);
    assert_log(
        &rsbal,
        "no new ICMP error, but the last one is less than icmp-timeout ago",
    );
}
