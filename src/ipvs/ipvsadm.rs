//! `ipvsadm -R` syntax for commands and parsing of `ipvsadm -Sn` output (pure).
//!
//! This module owns the text form of the IPVS table: [`restore_line`] turns
//! one [`IpvsCommand`] into a line for `ipvsadm -R` (fed on stdin, without the
//! leading `ipvsadm`), and [`parse_save`] reads what `ipvsadm -Sn` prints back
//! into a [`Table`], so rsbal can adopt the services that already exist at
//! start-up. Spawning `ipvsadm` is the writer's job, not this module's.
//!
//! Direct routing is `ipvsadm`'s default (`-g`), so, like PyBal, rsbal writes
//! no forwarding flag for it; NAT adds `-m` and tunnelling `-i`.

use super::error::SaveError;
use super::{Dest, ForwardingMethod, IpvsCommand, ServiceKey, ServiceTable, Table, VirtualService};
use crate::config::Protocol;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// `-t` / `-u`.
fn protocol_flag(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "-t",
        Protocol::Udp => "-u",
    }
}

/// `-t 10.0.0.1:80`, `-u [2001:db8::1]:53`.
fn service_arg(key: &ServiceKey) -> String {
    format!("{} {}", protocol_flag(key.protocol), key.addr)
}

fn service_line(op: &str, vs: &VirtualService) -> String {
    let ops = if vs.ops { " -o" } else { "" };
    format!("{op} {} -s {}{ops}", service_arg(&vs.key), vs.scheduler)
}

/// ` -m` / ` -i`; nothing for direct routing, ipvsadm's default.
fn forwarding_flag(method: ForwardingMethod) -> &'static str {
    match method {
        ForwardingMethod::Dr => "",
        ForwardingMethod::Nat => " -m",
        ForwardingMethod::Tunnel => " -i",
    }
}

/// One command in `ipvsadm -R` syntax, e.g. `-A -t 10.0.0.1:80 -s wrr` or
/// `-a -u [2001:db8::1]:53 -r [2001:db8::2]:53 -w 10` (`-m -w 10` for NAT).
pub(crate) fn restore_line(cmd: &IpvsCommand) -> String {
    match cmd {
        IpvsCommand::AddService(vs) => service_line("-A", vs),
        IpvsCommand::EditService(vs) => service_line("-E", vs),
        IpvsCommand::DeleteService(key) => format!("-D {}", service_arg(key)),
        IpvsCommand::AddDest {
            service,
            dest,
            weight,
            forwarding,
        } => format!(
            "-a {} -r {dest}{} -w {weight}",
            service_arg(service),
            forwarding_flag(*forwarding)
        ),
        IpvsCommand::EditDest {
            service,
            dest,
            weight,
            forwarding,
        } => format!(
            "-e {} -r {dest}{} -w {weight}",
            service_arg(service),
            forwarding_flag(*forwarding)
        ),
        IpvsCommand::DeleteDest { service, dest } => {
            format!("-d {} -r {dest}", service_arg(service))
        }
    }
}

/// What one `-A`/`-a` line names as its service.
enum Target {
    Service(ServiceKey),
    /// `-f N` (firewall mark) or `--sctp-service`: not managed by rsbal.
    Ignored,
}

/// The fields rsbal reads from one line; unknown options are skipped.
#[derive(Default)]
struct Fields {
    target: Option<Target>,
    scheduler: Option<String>,
    ops: bool,
    real_server: Option<SocketAddr>,
    weight: Option<u32>,
    forwarding: ForwardingMethod,
}

fn parse_fields(tokens: &[&str]) -> Result<Fields, String> {
    let mut f = Fields::default();
    let mut i = 0;
    while i < tokens.len() {
        let tok = tokens[i];
        let next = tokens.get(i + 1).copied();
        let arg = || next.ok_or_else(|| format!("option {tok} needs an argument"));
        let addr = |s: &str| {
            s.parse::<SocketAddr>()
                .map_err(|_| format!("bad address {s:?} after {tok}"))
        };
        i += 1;
        match tok {
            "-t" | "--tcp-service" | "-u" | "--udp-service" => {
                let protocol = if tok == "-t" || tok == "--tcp-service" {
                    Protocol::Tcp
                } else {
                    Protocol::Udp
                };
                f.target = Some(Target::Service(ServiceKey {
                    protocol,
                    addr: addr(arg()?)?,
                }));
                i += 1;
            }
            "-f" | "--fwmark-service" | "--sctp-service" => {
                arg()?;
                f.target = Some(Target::Ignored);
                i += 1;
            }
            "-s" | "--scheduler" => {
                f.scheduler = Some(arg()?.to_string());
                i += 1;
            }
            "-o" | "--ops" => f.ops = true,
            "-r" | "--real-server" => {
                f.real_server = Some(addr(arg()?)?);
                i += 1;
            }
            "-g" | "--gatewaying" => f.forwarding = ForwardingMethod::Dr,
            "-m" | "--masquerading" => f.forwarding = ForwardingMethod::Nat,
            "-i" | "--ipip" => f.forwarding = ForwardingMethod::Tunnel,
            "-w" | "--weight" => {
                let w = arg()?;
                f.weight = Some(w.parse().map_err(|_| format!("bad weight {w:?}"))?);
                i += 1;
            }
            // Persistence, netmask, thresholds, scheduler flags, tunnel
            // options…: not part of rsbal's model. Their
            // arguments never look like the options above, so they are
            // skipped along with them.
            _ => {}
        }
    }
    Ok(f)
}

/// Parses the output of `ipvsadm -Sn` (`ipvsadm --save --numeric`).
///
/// `-A` lines create services, `-a` lines add destinations to the service
/// named on the same line, which must have appeared before. Firewall-mark
/// (`-f`) and SCTP services and their destinations are skipped, as are
/// options rsbal does not model (`-p`, `-M`, `-x`, `-y`, `-b`, …). A
/// destination without `-g`/`-m`/`-i` uses direct routing.
/// Errors name the 1-based line number.
pub(crate) fn parse_save(text: &str) -> Result<Table, SaveError> {
    let mut table = Table::new();
    for (idx, line) in text.lines().enumerate() {
        let lineno = idx + 1;
        let err = |reason: String| SaveError {
            line: lineno,
            reason,
        };
        let tokens: Vec<&str> = line.split_whitespace().collect();
        let Some((&op, rest)) = tokens.split_first() else {
            continue;
        };
        let f = parse_fields(rest).map_err(err)?;
        match op {
            "-A" | "--add-service" => {
                let key = match f.target {
                    Some(Target::Service(key)) => key,
                    Some(Target::Ignored) => continue,
                    None => return Err(err("service without -t/-u/-f".into())),
                };
                let scheduler = f
                    .scheduler
                    .ok_or_else(|| err(format!("service {key:?} has no scheduler (-s)")))?;
                if table.contains_key(&key) {
                    return Err(err(format!("service {} listed twice", service_arg(&key))));
                }
                table.insert(
                    key,
                    ServiceTable {
                        service: VirtualService {
                            key,
                            scheduler,
                            ops: f.ops,
                        },
                        dests: BTreeMap::new(),
                    },
                );
            }
            "-a" | "--add-server" => {
                let key = match f.target {
                    Some(Target::Service(key)) => key,
                    Some(Target::Ignored) => continue,
                    None => return Err(err("real server without -t/-u/-f".into())),
                };
                let dest = f
                    .real_server
                    .ok_or_else(|| err("real server line without -r".into()))?;
                let weight = f
                    .weight
                    .ok_or_else(|| err("real server line without -w".into()))?;
                let st = table.get_mut(&key).ok_or_else(|| {
                    err(format!(
                        "real server {dest} for service {} that was not defined before",
                        service_arg(&key)
                    ))
                })?;
                let spec = Dest {
                    weight,
                    forwarding: f.forwarding,
                };
                if st.dests.insert(dest, spec).is_some() {
                    return Err(err(format!(
                        "real server {dest} listed twice for {}",
                        service_arg(&key)
                    )));
                }
            }
            other => return Err(err(format!("unexpected command {other:?}"))),
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn key(protocol: Protocol, addr: &str) -> ServiceKey {
        ServiceKey {
            protocol,
            addr: sa(addr),
        }
    }

    fn vs(k: ServiceKey, sched: &str, ops: bool) -> VirtualService {
        VirtualService {
            key: k,
            scheduler: sched.into(),
            ops,
        }
    }

    #[test]
    fn restore_lines() {
        let t = key(Protocol::Tcp, "10.0.0.1:80");
        let u6 = key(Protocol::Udp, "[2001:db8::1]:53");
        let cases = [
            (
                IpvsCommand::AddService(vs(t, "wrr", false)),
                "-A -t 10.0.0.1:80 -s wrr",
            ),
            (
                IpvsCommand::AddService(vs(u6, "rr", true)),
                "-A -u [2001:db8::1]:53 -s rr -o",
            ),
            (
                IpvsCommand::EditService(vs(t, "sh", true)),
                "-E -t 10.0.0.1:80 -s sh -o",
            ),
            (
                IpvsCommand::EditService(vs(u6, "wlc", false)),
                "-E -u [2001:db8::1]:53 -s wlc",
            ),
            (IpvsCommand::DeleteService(t), "-D -t 10.0.0.1:80"),
            (IpvsCommand::DeleteService(u6), "-D -u [2001:db8::1]:53"),
            (
                IpvsCommand::AddDest {
                    service: t,
                    dest: sa("10.0.0.2:80"),
                    weight: 10,
                    forwarding: ForwardingMethod::Dr,
                },
                "-a -t 10.0.0.1:80 -r 10.0.0.2:80 -w 10",
            ),
            (
                IpvsCommand::AddDest {
                    service: u6,
                    dest: sa("[2001:db8::2]:53"),
                    weight: 0,
                    forwarding: ForwardingMethod::Dr,
                },
                "-a -u [2001:db8::1]:53 -r [2001:db8::2]:53 -w 0",
            ),
            (
                IpvsCommand::EditDest {
                    service: t,
                    dest: sa("10.0.0.2:80"),
                    weight: 25,
                    forwarding: ForwardingMethod::Dr,
                },
                "-e -t 10.0.0.1:80 -r 10.0.0.2:80 -w 25",
            ),
            (
                IpvsCommand::DeleteDest {
                    service: t,
                    dest: sa("10.0.0.2:80"),
                },
                "-d -t 10.0.0.1:80 -r 10.0.0.2:80",
            ),
            (
                IpvsCommand::DeleteDest {
                    service: u6,
                    dest: sa("[2001:db8::2]:53"),
                },
                "-d -u [2001:db8::1]:53 -r [2001:db8::2]:53",
            ),
        ];
        for (cmd, line) in cases {
            assert_eq!(restore_line(&cmd), line);
        }
        let nat = IpvsCommand::AddDest {
            service: t,
            dest: sa("10.0.0.2:8080"),
            weight: 3,
            forwarding: ForwardingMethod::Nat,
        };
        assert_eq!(
            restore_line(&nat),
            "-a -t 10.0.0.1:80 -r 10.0.0.2:8080 -m -w 3"
        );
        let tun = IpvsCommand::EditDest {
            service: u6,
            dest: sa("[2001:db8::2]:53"),
            weight: 1,
            forwarding: ForwardingMethod::Tunnel,
        };
        assert_eq!(
            restore_line(&tun),
            "-e -u [2001:db8::1]:53 -r [2001:db8::2]:53 -i -w 1"
        );
    }

    const SAVED: &str = "\
-A -t 10.2.0.1:80 -s wrr
-a -t 10.2.0.1:80 -r 10.2.0.2:80 -g -w 1
-a -t 10.2.0.1:80 -r 10.2.0.3:80 -g -w 10
-A -t 10.2.0.1:443 -s sh -p 300 -M 255.255.255.0
-a -t 10.2.0.1:443 -r 10.2.0.3:443 -g -w 10 -x 100 -y 50
-A -f 42 -s rr
-a -f 42 -r 10.2.0.9:0 -g -w 1
-A -u [2001:db8::1]:53 -s rr -o
-a -u [2001:db8::1]:53 -r [2001:db8::2]:53 -g -w 1
-a -u [2001:db8::1]:53 -r [2001:db8::3]:53 -i -w 0
-A -t [2001:db8::1]:443 -s mh -b mh-fallback,mh-port
-A -u 10.2.0.1:53 -s wrr -o
-a -u 10.2.0.1:53 -r 10.2.0.5:53 -m -w 3
";

    #[test]
    fn parse_realistic_save() {
        let t = parse_save(SAVED).unwrap();
        let http = key(Protocol::Tcp, "10.2.0.1:80");
        let https = key(Protocol::Tcp, "10.2.0.1:443");
        let dns6 = key(Protocol::Udp, "[2001:db8::1]:53");
        let https6 = key(Protocol::Tcp, "[2001:db8::1]:443");
        let dns = key(Protocol::Udp, "10.2.0.1:53");
        assert_eq!(t.keys().copied().collect::<Vec<_>>(), {
            let mut v = vec![http, https, dns6, https6, dns];
            v.sort();
            v
        });
        assert_eq!(t[&http].service, vs(http, "wrr", false));
        assert_eq!(
            t[&http].dests,
            [
                (sa("10.2.0.2:80"), Dest::dr(1)),
                (sa("10.2.0.3:80"), Dest::dr(10))
            ]
            .into_iter()
            .collect()
        );
        assert_eq!(t[&https].service, vs(https, "sh", false));
        assert_eq!(
            t[&https].dests.get(&sa("10.2.0.3:443")),
            Some(&Dest::dr(10))
        );
        assert_eq!(t[&dns6].service, vs(dns6, "rr", true));
        assert_eq!(
            t[&dns6].dests,
            [
                (sa("[2001:db8::2]:53"), Dest::dr(1)),
                (
                    sa("[2001:db8::3]:53"),
                    Dest {
                        weight: 0,
                        forwarding: ForwardingMethod::Tunnel
                    }
                )
            ]
            .into_iter()
            .collect()
        );
        assert_eq!(t[&https6].service, vs(https6, "mh", false));
        assert!(t[&https6].dests.is_empty());
        assert_eq!(t[&dns].service, vs(dns, "wrr", true));
        assert_eq!(
            t[&dns].dests.get(&sa("10.2.0.5:53")),
            Some(&Dest {
                weight: 3,
                forwarding: ForwardingMethod::Nat
            })
        );
    }

    #[test]
    fn parse_tunnel_options_of_newer_ipvsadm() {
        let t = parse_save(
            "-A -t [2001:db8::10]:80 -s wrr\n\
             -a -t [2001:db8::10]:80 -r [fd00::2]:80 -i -w 5 --tun-type ipip\n",
        )
        .unwrap();
        let k = key(Protocol::Tcp, "[2001:db8::10]:80");
        assert_eq!(
            t[&k].dests.get(&sa("[fd00::2]:80")),
            Some(&Dest {
                weight: 5,
                forwarding: ForwardingMethod::Tunnel
            })
        );
    }

    #[test]
    fn parse_empty_and_blank() {
        assert!(parse_save("").unwrap().is_empty());
        assert!(parse_save("\n  \n").unwrap().is_empty());
    }

    #[test]
    fn restore_lines_round_trip_through_parse() {
        let t = parse_save(SAVED).unwrap();
        let cmds = crate::ipvs::diff::diff_tables(&Table::new(), &t);
        let text: String = cmds.iter().map(|c| restore_line(c) + "\n").collect();
        assert_eq!(parse_save(&text).unwrap(), t);
    }

    #[test]
    fn parse_errors_name_the_line() {
        let e = parse_save("-A -t 10.0.0.1:80 -s wrr\n-a -t 10.0.0.9:80 -r 10.0.0.2:80 -g -w 1\n")
            .unwrap_err();
        assert_eq!(e.line, 2);
        let e = e.to_string();
        assert!(e.starts_with("line 2:"), "{e}");
        assert!(e.contains("not defined"), "{e}");

        let bad = [
            ("-A -t 10.0.0.1 -s wrr", "line 1:"),
            ("-A -t 10.0.0.1:80", "line 1:"),
            ("-A -t", "line 1:"),
            ("\n-A -s wrr", "line 2:"),
            ("-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -w 1", "line 2:"),
            (
                "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2:80",
                "line 2:",
            ),
            (
                "-A -t 10.0.0.1:80 -s rr\n-a -t 10.0.0.1:80 -r 10.0.0.2:80 -w x",
                "line 2:",
            ),
            (
                "-A -t 10.0.0.1:80 -s rr\n-A -t 10.0.0.1:80 -s rr",
                "line 2:",
            ),
            ("-A -t 10.0.0.1:80 -s rr\n\n\nIP Virtual Server", "line 4:"),
            ("-A -t lvs.example.org:http -s rr", "line 1:"),
        ];
        for (text, prefix) in bad {
            let e = parse_save(text).unwrap_err().to_string();
            assert!(e.starts_with(prefix), "{text:?}: {e}");
        }
    }

    #[test]
    fn fwmark_dests_are_skipped_even_without_service() {
        let t = parse_save("-a -f 7 -r 10.0.0.2:0 -g -w 1\n").unwrap();
        assert!(t.is_empty());
    }
}
