//! The check scheduler end to end (issue 13): each service runs its
//! ProxyFetch / RunCommand / DNSQuery checks from a timer heap on an elastic
//! worker pool. These tests hold it to the isolation of one thread per
//! monitor: a hung server among many delays no other server's checks, never
//! gets two checks at once, and a stop during checks in flight ends at once
//! with no late result changing anything. Measured by what the backends
//! receive (hit counts) and what `ipvsadm` is given, not by timing.
//! Addresses: 127.71.0.0/16 – 127.73.0.0/16.

#![allow(clippy::unwrap_used, clippy::expect_used, unreachable_pub)] // test code: a failed set-up panics; helpers are shared by several crates

mod common;

use common::pool::legacy_list;
use common::stateful_ipvsadm::alive;
use common::*;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);
const PORT: u16 = 8093;

/// How a [`Web`] server answers a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 200 at once.
    Ok,
    /// Reads the request and never answers (holds the connection).
    Hang,
    /// Holds the request this long, answers 503, then answers `Ok`.
    SlowFailOnce(Duration),
}

struct WebShared {
    answer: Mutex<Answer>,
    hits: AtomicU64,
    /// When the slow 503 was sent.
    late_sent: Mutex<Option<Instant>>,
}

/// A tiny HTTP server on `ip:PORT` that counts the requests it receives:
/// one blocking accept thread, one thread per connection.
struct Web {
    shared: Arc<WebShared>,
}

impl Web {
    fn start(ip: IpAddr, answer: Answer) -> Web {
        let listener = TcpListener::bind(SocketAddr::new(ip, PORT)).unwrap();
        let shared = Arc::new(WebShared {
            answer: Mutex::new(answer),
            hits: AtomicU64::new(0),
            late_sent: Mutex::new(None),
        });
        let s = Arc::clone(&shared);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let s = Arc::clone(&s);
                thread::spawn(move || serve(stream, &s));
            }
        });
        Web { shared }
    }

    fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::SeqCst)
    }

    fn set(&self, answer: Answer) {
        *self.shared.answer.lock().unwrap() = answer;
    }

    fn late_sent(&self) -> Option<Instant> {
        *self.shared.late_sent.lock().unwrap()
    }
}

fn serve(mut stream: TcpStream, shared: &WebShared) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let answer = *shared.answer.lock().unwrap();
    shared.hits.fetch_add(1, Ordering::SeqCst);
    let status = match answer {
        Answer::Ok => "200 OK",
        Answer::Hang => {
            // Until the client gives up (rsbal's timeout or its exit).
            while matches!(stream.read(&mut chunk), Ok(n) if n > 0) {}
            return;
        }
        Answer::SlowFailOnce(hold) => {
            *shared.answer.lock().unwrap() = Answer::Ok;
            thread::sleep(hold);
            *shared.late_sent.lock().unwrap() = Some(Instant::now());
            "503 Service Unavailable"
        }
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    );
}

fn global(ipvsadm: &FakeIpvsadm) -> String {
    format!(
        "[global]\nipvsadm = {}\nipvs-backend = ipvsadm\nipvs-reconcile-interval = 0\n\n",
        ipvsadm.script.display()
    )
}

/// A ProxyFetch service on `vip` whose servers are listed in `list`.
fn service(name: &str, vip: &str, list: &Path, interval: &str, timeout: &str) -> String {
    format!(
        "[{name}]\nprotocol = tcp\nip = {vip}\nport = {PORT}\nscheduler = wrr\n\
         config = file://{}\ndepool-threshold = 0\nmonitors = [ 'ProxyFetch' ]\n\
         proxyfetch.url = [ 'http://www.example.org/health' ]\n\
         proxyfetch.interval = {interval}\nproxyfetch.timeout = {timeout}\n\n",
        list.display()
    )
}

fn add(vip: &str, rip: IpAddr) -> String {
    format!("-a -t {vip}:{PORT} -r {rip}:{PORT} -w 10")
}

fn del(vip: &str, rip: IpAddr) -> String {
    format!("-d -t {vip}:{PORT} -r {rip}:{PORT}")
}

fn list_of(ips: &[IpAddr]) -> String {
    let hosts: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
    let entries: Vec<(&str, u32, bool)> = hosts.iter().map(|h| (h.as_str(), 10, true)).collect();
    legacy_list(&entries)
}

#[test]
fn a_hung_server_among_fifty_delays_no_other_check() {
    let dir = tempfile::tempdir().unwrap();
    let ipvsadm = FakeIpvsadm::new(dir.path());
    let ips: Vec<IpAddr> = (1..=50).map(|h| lo(71, h)).collect();
    let hung_ip = ips[17];
    let webs: Vec<Web> = ips
        .iter()
        .map(|&ip| {
            Web::start(
                ip,
                if ip == hung_ip {
                    Answer::Hang
                } else {
                    Answer::Ok
                },
            )
        })
        .collect();
    let list = write_atomic(dir.path(), "servers", &list_of(&ips));
    let conf = dir.path().join("rsbal.conf");
    let vip = "192.0.2.71";
    let text = global(&ipvsadm) + &service("many", vip, &list, "0.2", "60");
    std::fs::write(&conf, text).unwrap();
    let rsbal = Rsbal::start(&conf, &[]);

    let hung = &webs[17];
    assert!(
        wait_until(T, || hung.hits() >= 1),
        "the hung server was never checked"
    );
    // Its check is in flight (60 s timeout). Every other server must keep
    // being checked: ten more checks each, while the hung one gets no second.
    let before: Vec<u64> = webs.iter().map(Web::hits).collect();
    let all_kept_going = wait_until(T, || {
        webs.iter()
            .zip(&before)
            .enumerate()
            .all(|(i, (w, b))| i == 17 || w.hits() >= b + 10)
    });
    let after: Vec<u64> = webs.iter().map(Web::hits).collect();
    assert!(
        all_kept_going,
        "checks stalled: before {before:?}, after {after:?}"
    );
    assert_eq!(
        hung.hits(),
        1,
        "the hung server got a second check while one was in flight"
    );
    drop(rsbal);
}

#[test]
fn a_result_in_flight_for_a_removed_server_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ipvsadm = FakeIpvsadm::new(dir.path());
    let ips: Vec<IpAddr> = (1..=5).map(|h| lo(72, h)).collect();
    let slow_ip = ips[2];
    let webs: Vec<Web> = ips.iter().map(|&ip| Web::start(ip, Answer::Ok)).collect();
    let slow = &webs[2];
    let list = write_atomic(dir.path(), "servers", &list_of(&ips));
    let conf = dir.path().join("rsbal.conf");
    let vip = "192.0.2.72";
    let text = global(&ipvsadm) + &service("late", vip, &list, "0.3", "20");
    std::fs::write(&conf, text).unwrap();
    let rsbal = Rsbal::start(&conf, &[]);
    ipvsadm.assert_seen(&add(vip, slow_ip), 1);

    // The next check of the slow server is held 8 s and then fails.
    let hits = slow.hits();
    slow.set(Answer::SlowFailOnce(Duration::from_secs(8)));
    assert!(
        wait_until(T, || slow.hits() > hits),
        "no check reached the slow server"
    );
    // While it is in flight, the server leaves the list and comes back (a
    // new instance, checked afresh and pooled again: it now answers 200).
    let others: Vec<IpAddr> = ips.iter().copied().filter(|&ip| ip != slow_ip).collect();
    write_atomic(dir.path(), "servers", &list_of(&others));
    ipvsadm.assert_seen(&del(vip, slow_ip), 1);
    write_atomic(dir.path(), "servers", &list_of(&ips));
    ipvsadm.assert_seen(&add(vip, slow_ip), 2);
    assert!(
        slow.late_sent().is_none(),
        "the slow answer came before the server was back; the test proves nothing"
    );
    // The old instance's 503 arrives; then the new instance is checked (and
    // answers 200) at least twice more: the late failure was dropped.
    assert!(wait_until(T, || slow.late_sent().is_some()));
    let after_late = slow.hits();
    assert!(wait_until(T, || slow.hits() >= after_late + 2));
    assert_eq!(
        ipvsadm.count(&del(vip, slow_ip)),
        1,
        "a late result of a removed server depooled its successor: {:#?}",
        ipvsadm.lines()
    );
    // The check itself saw the 503; the service never took it as a result.
    assert!(!rsbal
        .log_text()
        .contains("down: http://www.example.org/health: HTTP status 503"));
}

#[test]
fn removing_a_service_stops_its_checks_in_flight_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ipvsadm = FakeIpvsadm::new(dir.path());
    // Service "hung": ten servers whose ProxyFetch never gets an answer.
    let hung_ips: Vec<IpAddr> = (1..=10).map(|h| lo(73, h)).collect();
    let hung: Vec<Web> = hung_ips
        .iter()
        .map(|&ip| Web::start(ip, Answer::Hang))
        .collect();
    let hung_list = write_atomic(dir.path(), "hung-servers", &list_of(&hung_ips));
    // Service "cmd": RunCommand whose command sleeps, saving its PID.
    let cmd_ip = lo(73, 100);
    let check = script(
        dir.path(),
        "check",
        &format!(
            "sleep 1000 &\necho $! > '{d}/pid.tmp'\nmv '{d}/pid.tmp' '{d}/pid'\nwait\n",
            d = dir.path().display()
        ),
    );
    let cmd_list = write_atomic(dir.path(), "cmd-servers", &list_of(&[cmd_ip]));
    let cmd_service = format!(
        "[cmd]\nprotocol = tcp\nip = 192.0.2.74\nport = {PORT}\nscheduler = wrr\n\
         config = file://{}\ndepool-threshold = 0\nmonitors = [ 'RunCommand' ]\n\
         runcommand.command = {}\nruncommand.interval = 60\nruncommand.timeout = 60\n\n",
        cmd_list.display(),
        check.display()
    );
    // A third service that stays, on a healthy server.
    let kept_ip = lo(73, 200);
    let kept = Web::start(kept_ip, Answer::Ok);
    let kept_list = write_atomic(dir.path(), "kept-servers", &list_of(&[kept_ip]));
    let kept_service = service("kept", "192.0.2.75", &kept_list, "0.2", "5");
    let conf = dir.path().join("rsbal.conf");
    let hung_service = service("hung", "192.0.2.73", &hung_list, "0.2", "60");
    std::fs::write(
        &conf,
        global(&ipvsadm) + &hung_service + &cmd_service + &kept_service,
    )
    .unwrap();
    let rsbal = Rsbal::start(&conf, &[]);

    assert!(
        wait_until(T, || hung.iter().all(|w| w.hits() == 1)),
        "not every hung server got its check"
    );
    let pid_file = dir.path().join("pid");
    assert!(wait_until(T, || pid_file.exists()));
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(pid));

    // Reload without "hung" and "cmd", while all their checks are in flight.
    std::fs::write(&conf, global(&ipvsadm) + &kept_service).unwrap();
    rsbal.signal(nix::sys::signal::Signal::SIGHUP);
    ipvsadm.assert_seen("-D -t 192.0.2.73:8093", 1);
    ipvsadm.assert_seen("-D -t 192.0.2.74:8093", 1);
    // RunCommand's kill on stop still happens, with no timeout to wait for.
    assert!(
        wait_until(T, || !alive(pid)),
        "the removed service's command still runs"
    );
    // No hung server got a second request, and the service that stayed
    // keeps being checked.
    let kept_hits = kept.hits();
    assert!(wait_until(T, || kept.hits() >= kept_hits + 5));
    assert!(hung.iter().all(|w| w.hits() == 1));
    assert!(rsbal
        .log_text()
        .contains("service removed from the configuration"));
}

/// Check workers have a small stack (`monitor::pool::WORKER_STACK_SIZE`):
/// an HTTPS ProxyFetch (TLS handshake, certificate chain verified) is the
/// deepest thing they run. It runs there many times and the server is
/// pooled; a stack too small would abort the process.
#[test]
fn https_checks_run_on_the_small_worker_stacks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ipvsadm = FakeIpvsadm::new(d);
    let ip = lo(71, 200);
    let port = free_port();
    let make_certs = script(
        d,
        "certs",
        &format!(
            "set -e\n\
             openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj '/CN=rsbal test CA' -keyout ca.key -out ca.pem 2>/dev/null\n\
             openssl req -newkey rsa:2048 -nodes -subj /CN={ip} -keyout server.key -out server.csr 2>/dev/null\n\
             echo subjectAltName=IP:{ip} > san.ext\n\
             openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile san.ext -out server.pem 2>/dev/null\n\
             echo ok > health\n"
        ),
    );
    let made = std::process::Command::new(make_certs)
        .current_dir(d)
        .status()
        .expect("cannot run openssl (apt-get install openssl)");
    assert!(made.success());
    let server = https_file_server(d, "server.pem", "server.key", SocketAddr::new(ip, port));
    let list = write_atomic(d, "servers", &list_of(&[ip]));
    let vip = "192.0.2.76";
    let conf = d.join("rsbal.conf");
    let section = format!(
        "[tls]\nprotocol = tcp\nip = {vip}\nport = {port}\nscheduler = wrr\n\
         config = file://{}\ndepool-threshold = 0\nmonitors = [ 'ProxyFetch' ]\n\
         proxyfetch.url = [ 'https://{ip}/health' ]\n\
         proxyfetch.interval = 0.1\nproxyfetch.timeout = 5\n",
        list.display()
    );
    std::fs::write(&conf, global(&ipvsadm) + &section).unwrap();
    let log = conf.with_extension("log");
    let out = std::fs::File::create(&log).unwrap();
    let mut rsbal = Rsbal {
        child: std::process::Command::new(env!("CARGO_BIN_EXE_rsbal"))
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .env("SSL_CERT_FILE", d.join("ca.pem"))
            .stdin(std::process::Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
        log,
    };
    let ok = format!("up: https://{ip}/health: HTTP 200");
    assert!(
        wait_until(T, || rsbal.log_text().matches(&ok).count() >= 20),
        "fewer than 20 HTTPS checks succeeded"
    );
    assert!(rsbal.child.try_wait().unwrap().is_none(), "rsbal died");
    drop(server);
}
