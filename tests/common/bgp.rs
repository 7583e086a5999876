//! Real BGP peers for tests: BIRD 2 (`bird2` package) and GoBGP (`gobgpd`
//! package), each run as a child process on loopback, configured by the
//! test, queried with their own command-line clients.

use super::wait_until;
use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// One route as a peer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRoute {
    pub as_path: Vec<u32>,
    pub next_hop: String,
    pub med: Option<u32>,
}

impl SeenRoute {
    pub fn new(as_path: &[u32], next_hop: &str, med: u32) -> SeenRoute {
        SeenRoute {
            as_path: as_path.to_vec(),
            next_hop: next_hop.to_string(),
            med: Some(med),
        }
    }
}

/// Routes by prefix (`198.51.100.1/32`).
pub type Rib = BTreeMap<String, SeenRoute>;

/// Finds a program in PATH or the sbin directories (PATH of a CI job may lack them).
fn program(name: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!("{name} is not installed (Debian packages bird2 and gobgpd, see .ci/packages)")
    })
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Starts `cmd` with stdout and stderr appended to `log`.
fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let err = out.try_clone().unwrap();
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

fn stop_child(child: &mut Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    if !wait_until(Duration::from_secs(5), || {
        matches!(child.try_wait(), Ok(Some(_)))
    }) {
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// How a peer is set up.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    /// The peer's own address (also its router id) and BGP port.
    pub address: IpAddr,
    pub port: u16,
    pub asn: u32,
    /// rsbal's address, port and ASN.
    pub rsbal: IpAddr,
    pub rsbal_port: u16,
    pub rsbal_asn: u32,
    /// Act as graceful-restart helper (keep rsbal's routes while it restarts).
    pub graceful_restart: bool,
}

/// A BIRD 2 daemon with one BGP protocol named `rsbal`.
pub struct Bird {
    pub config: PeerConfig,
    dir: PathBuf,
    child: Option<Child>,
}

impl Bird {
    pub fn start(dir: &Path, config: PeerConfig) -> Bird {
        let mut bird = Bird {
            config,
            dir: dir.to_path_buf(),
            child: None,
        };
        fs::write(bird.conf(), bird.config_text()).unwrap();
        bird.launch();
        bird
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("bird.conf")
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("bird.ctl")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("bird.log")
    }

    /// `strict bind` makes BIRD listen on its own address only; the static
    /// blackhole routes let the recursive next hops (documentation ranges)
    /// resolve, so the routes are shown as usable.
    fn config_text(&self) -> String {
        let c = &self.config;
        let gr = if c.graceful_restart {
            "graceful restart on;"
        } else {
            "graceful restart off;"
        };
        format!(
            "router id {addr};\n\
             log stderr all;\n\
             protocol device {{ }}\n\
             protocol static nh4 {{ ipv4; route 192.0.2.0/24 blackhole; }}\n\
             protocol static nh6 {{ ipv6; route 2001:db8::/32 blackhole; }}\n\
             protocol bgp rsbal {{\n\
               local {addr} port {port} as {asn};\n\
               neighbor {peer} port {peer_port} as {peer_asn};\n\
               strict bind on;\n\
               multihop;\n\
               {gr}\n\
               connect delay time 1;\n\
               connect retry time 2;\n\
               error wait time 1, 2;\n\
               ipv4 {{ import all; export none; }};\n\
               ipv6 {{ import all; export none; }};\n\
             }}\n",
            addr = c.address,
            port = c.port,
            asn = c.asn,
            peer = c.rsbal,
            peer_port = c.rsbal_port,
            peer_asn = c.rsbal_asn,
        )
    }

    fn launch(&mut self) {
        let _ = fs::remove_file(self.socket());
        let mut cmd = Command::new(program("bird"));
        cmd.arg("-f")
            .arg("-c")
            .arg(self.conf())
            .arg("-s")
            .arg(self.socket());
        self.child = Some(spawn_logged(&mut cmd, &self.log_path()));
        assert!(
            wait_until(Duration::from_secs(10), || self
                .birdc("show status")
                .contains("Daemon is up")),
            "BIRD did not start: {}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Stops BIRD (SIGTERM: it closes its sessions with Cease first).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// `birdc -s socket ARGS…` output.
    pub fn birdc(&self, command: &str) -> String {
        let out = run(Command::new(program("birdc"))
            .arg("-s")
            .arg(self.socket())
            .args(command.split_whitespace()));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `show protocols all rsbal`.
    pub fn protocol(&self) -> String {
        self.birdc("show protocols all rsbal")
    }

    pub fn established(&self) -> bool {
        self.protocol().contains("BGP state:          Established")
    }

    /// BIRD helps rsbal restart: it keeps rsbal's routes as stale.
    pub fn graceful_restart_active(&self) -> bool {
        self.protocol().contains("Neighbor graceful restart active")
    }

    /// Routes learnt from rsbal, from `show route all protocol rsbal`.
    pub fn rib(&self) -> Rib {
        parse_bird_routes(&self.birdc("show route all protocol rsbal"))
    }
}

impl Drop for Bird {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("---- BIRD log ----\n{}", self.log());
        }
    }
}

/// Parses BIRD's `show route all` output.
pub fn parse_bird_routes(text: &str) -> Rib {
    let mut rib = Rib::new();
    let mut current: Option<(String, SeenRoute)> = None;
    let mut finish = |current: &mut Option<(String, SeenRoute)>| {
        if let Some((prefix, route)) = current.take() {
            rib.insert(prefix, route);
        }
    };
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            finish(&mut current);
            let first = line.split_whitespace().next().unwrap_or("");
            if first.contains('/') && line.contains("[rsbal ") {
                current = Some((
                    first.to_string(),
                    SeenRoute {
                        as_path: Vec::new(),
                        next_hop: String::new(),
                        med: None,
                    },
                ));
            }
            continue;
        }
        let Some((_, route)) = current.as_mut() else {
            continue;
        };
        let line = line.trim();
        if let Some(path) = line.strip_prefix("BGP.as_path:") {
            route.as_path = path
                .split_whitespace()
                .filter_map(|a| a.parse().ok())
                .collect();
        } else if let Some(hop) = line.strip_prefix("BGP.next_hop:") {
            route.next_hop = hop.split_whitespace().next().unwrap_or("").to_string();
        } else if let Some(med) = line.strip_prefix("BGP.med:") {
            route.med = med.trim().parse().ok();
        }
    }
    finish(&mut current);
    rib
}

/// A GoBGP daemon with rsbal as its one neighbor.
pub struct GoBgp {
    pub config: PeerConfig,
    pub api_port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl GoBgp {
    pub fn start(dir: &Path, config: PeerConfig, api_port: u16) -> GoBgp {
        let mut gobgp = GoBgp {
            config,
            api_port,
            dir: dir.to_path_buf(),
            child: None,
        };
        fs::write(gobgp.conf(), gobgp.config_text()).unwrap();
        gobgp.launch();
        gobgp
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("gobgp.toml")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("gobgp.log")
    }

    /// With `graceful_restart`: helper for rsbal's restarts, with RFC 8538's
    /// N bit (a Cease does not end the graceful restart).
    fn config_text(&self) -> String {
        let c = &self.config;
        let (gr, mp_gr) = if c.graceful_restart {
            (
                "  [neighbors.graceful-restart.config]\n    enabled = true\n    notification-enabled = true\n    restart-time = 120\n",
                "    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n",
            )
        } else {
            ("", "")
        };
        let mut text = format!(
            "[global.config]\n  as = {asn}\n  router-id = \"{addr}\"\n  port = {port}\n  local-address-list = [\"{addr}\"]\n\n\
             [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{peer}\"\n    peer-as = {peer_asn}\n\
             \x20 [neighbors.transport.config]\n    remote-port = {peer_port}\n    local-address = \"{addr}\"\n\
             \x20 [neighbors.timers.config]\n    connect-retry = 1\n    idle-hold-time-after-reset = 1\n\
             \x20 [neighbors.ebgp-multihop.config]\n    enabled = true\n    multihop-ttl = 5\n{gr}",
            asn = c.asn,
            addr = c.address,
            port = c.port,
            peer = c.rsbal,
            peer_asn = c.rsbal_asn,
            peer_port = c.rsbal_port,
        );
        for family in ["ipv4-unicast", "ipv6-unicast"] {
            text += &format!(
                "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{family}\"\n{mp_gr}"
            );
        }
        text
    }

    fn launch(&mut self) {
        let mut cmd = Command::new(program("gobgpd"));
        cmd.arg("-f")
            .arg(self.conf())
            .arg("--api-hosts")
            .arg(format!("{}:{}", self.config.address, self.api_port))
            .arg("--pprof-disable")
            .arg("--log-plain");
        self.child = Some(spawn_logged(&mut cmd, &self.log_path()));
        assert!(
            wait_until(Duration::from_secs(10), || self.neighbor().is_some()),
            "GoBGP did not start: {}",
            self.log()
        );
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// SIGKILL: the connection just drops.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart_after_kill(&mut self) {
        self.kill();
        self.launch();
    }

    fn gobgp(&self, args: &[&str]) -> Option<serde_json::Value> {
        let out = run(Command::new(program("gobgp"))
            .arg("-u")
            .arg(self.config.address.to_string())
            .arg("-p")
            .arg(self.api_port.to_string())
            .args(args));
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `gobgp neighbor RSBAL -j`.
    pub fn neighbor(&self) -> Option<serde_json::Value> {
        self.gobgp(&["neighbor", &self.config.rsbal.to_string(), "-j"])
    }

    /// Session state 6 is Established.
    pub fn established(&self) -> bool {
        self.neighbor()
            .and_then(|n| n["state"]["session_state"].as_u64())
            == Some(6)
    }

    fn rib_json(&self) -> Vec<serde_json::Value> {
        [
            &["global", "rib", "-j"][..],
            &["global", "rib", "-a", "ipv6", "-j"],
        ]
        .into_iter()
        .filter_map(|args| self.gobgp(args))
        .collect()
    }

    /// `gobgp global rib -j`, IPv4 and IPv6.
    pub fn rib(&self) -> Rib {
        self.rib_json().iter().flat_map(parse_gobgp_rib).collect()
    }

    /// Each prefix and whether GoBGP marks it stale (graceful restart).
    pub fn stale(&self) -> BTreeMap<String, bool> {
        let mut stale = BTreeMap::new();
        for value in self.rib_json() {
            for (prefix, paths) in value.as_object().into_iter().flatten() {
                stale.insert(prefix.clone(), paths[0]["stale"] == true);
            }
        }
        stale
    }
}

impl Drop for GoBgp {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- GoBGP log ----\n{}", self.log());
        }
    }
}

/// Parses `gobgp global rib -j`: `{prefix: [path, …]}`, first path only.
pub fn parse_gobgp_rib(value: &serde_json::Value) -> Rib {
    let mut rib = Rib::new();
    let Some(map) = value.as_object() else {
        return rib;
    };
    for (prefix, paths) in map {
        let Some(attrs) = paths[0]["attrs"].as_array() else {
            continue;
        };
        let mut route = SeenRoute {
            as_path: Vec::new(),
            next_hop: String::new(),
            med: None,
        };
        for a in attrs {
            match a["type"].as_u64() {
                Some(2) => {
                    route.as_path = a["as_paths"][0]["asns"]
                        .as_array()
                        .map(|v| {
                            v.iter()
                                .filter_map(|n| n.as_u64())
                                .map(|n| n as u32)
                                .collect()
                        })
                        .unwrap_or_default()
                }
                Some(3) | Some(14) => {
                    route.next_hop = a["nexthop"].as_str().unwrap_or("").to_string()
                }
                Some(4) => route.med = a["metric"].as_u64().map(|m| m as u32),
                _ => {}
            }
        }
        rib.insert(prefix.clone(), route);
    }
    rib
}

/// A hand-driven BGP connection for tests that script the peer's side
/// message by message (collisions, malformed input, timers).
pub struct Wire {
    pub stream: std::net::TcpStream,
    pub codec: rsbal::bgp::message::Codec,
}

impl Wire {
    pub fn new(stream: std::net::TcpStream) -> Wire {
        Wire {
            stream,
            codec: rsbal::bgp::message::Codec {
                four_octet_as: true,
            },
        }
    }

    pub fn send(&mut self, msg: &rsbal::bgp::message::Message) {
        let bytes = self.codec.encode(msg);
        self.send_raw(&bytes);
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).expect("write to rsbal");
    }

    /// The next message, `Err("eof")` when rsbal closed, `Err("timeout")`.
    pub fn recv(&mut self, timeout: Duration) -> Result<rsbal::bgp::message::Message, String> {
        use rsbal::bgp::message::{parse_header, HEADER_LEN};
        use std::io::Read;
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut bytes = vec![0u8; HEADER_LEN];
        let read = |stream: &mut std::net::TcpStream, buf: &mut [u8]| {
            stream.read_exact(buf).map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                    "eof".to_string()
                }
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    "timeout".to_string()
                }
                _ => e.to_string(),
            })
        };
        read(&mut self.stream, &mut bytes)?;
        let header = parse_header(&bytes).map_err(|n| n.to_string())?;
        bytes.resize(header.len, 0);
        read(&mut self.stream, &mut bytes[HEADER_LEN..])?;
        self.codec.decode(&bytes).map_err(|n| n.to_string())
    }

    /// The next message that is not a KEEPALIVE.
    pub fn recv_skipping_keepalives(
        &mut self,
        timeout: Duration,
    ) -> Result<rsbal::bgp::message::Message, String> {
        loop {
            match self.recv(timeout)? {
                rsbal::bgp::message::Message::Keepalive => continue,
                other => return Ok(other),
            }
        }
    }
}

/// The OPEN a scripted peer sends: IPv4 and IPv6 unicast, 4-octet ASNs.
pub fn scripted_open(
    asn: u32,
    bgp_id: std::net::Ipv4Addr,
    hold_time: u16,
) -> rsbal::bgp::message::Open {
    use rsbal::bgp::message::{Capability, Family, Open};
    Open {
        asn,
        hold_time,
        bgp_id,
        capabilities: vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::Multiprotocol(Family::IPV6_UNICAST),
            Capability::FourOctetAs(asn),
        ],
    }
}
