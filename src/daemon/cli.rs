//! Command-line parsing (SPEC 1). Small enough that a parser crate would add
//! more than it saves.

use crate::config::DEFAULT_CONFIG_PATH;
use std::path::PathBuf;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Run the daemon.
    Run(RunOptions),
    /// `--check`: validate the config and server lists, report, exit 0/1.
    Check {
        config: PathBuf,
    },
    /// `status`: query a running rsbal (see `status`).
    Status(StatusOptions),
    Version,
    Help,
    /// Hidden: `--ipvs-debug ARGS…`, maintenance commands for the kernel
    /// tests and benchmarks (`ipvs::debug`).
    IpvsDebug(Vec<String>),
}

/// Options of a daemon run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunOptions {
    pub(crate) config: PathBuf,
    /// `-n`: never change IPVS; log what would be run.
    pub(crate) dry_run: bool,
    /// `-d`: foreground, debug logging, log every IPVS command.
    pub(crate) debug: bool,
}

/// Options of `rsbal status`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct StatusOptions {
    /// `--url`: where rsbal's instrumentation server listens.
    pub(crate) url: Option<String>,
    /// `-c`: take the address from this config's instrumentation settings.
    pub(crate) config: Option<PathBuf>,
    /// `--json`: print the status document as JSON.
    pub(crate) json: bool,
}

pub(crate) const USAGE: &str = "\
Usage: rsbal [-c FILE] [-n] [-d]
       rsbal --check [-c FILE]
       rsbal status [--json] [--url URL] [-c FILE]
       rsbal --version | --help

  -c, --config FILE  main config file (default /etc/rsbal/rsbal.conf;
                     a pybal.conf works unchanged)
  -n, --dryrun       never change IPVS state; log every command instead
  -d, --debug        log at debug level to stdout, log every IPVS command
      --check        validate the config and every local server list, exit 0/1
  status             show the pools of a running rsbal; exit 0 healthy, 1 warning,
                     2 critical, 3 unreachable (a monitoring-plugin check).
                     --url URL (default from -c's instrumentation settings,
                     else http://127.0.0.1:9090), --json for the raw document
      --version      print the version
  -h, --help         print this help

Signals: SIGTERM/SIGINT stop (IPVS state is left in place), SIGHUP reloads.";

/// Parses the arguments after the program name.
pub(crate) fn parse<I, S>(args: I) -> Result<Command, String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut config = PathBuf::from(DEFAULT_CONFIG_PATH);
    let mut dry_run = false;
    let mut debug = false;
    let mut check = false;
    let mut args = args.into_iter().map(Into::into).peekable();
    if args.peek().map(String::as_str) == Some("status") {
        args.next();
        return parse_status(args);
    }
    if args.peek().is_some_and(|a| a == "--ipvs-debug") {
        return Ok(Command::IpvsDebug(args.skip(1).collect()));
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-c" | "--config" => match args.next() {
                Some(path) => config = PathBuf::from(path),
                None => return Err(format!("{arg} needs a file name")),
            },
            "-n" | "--dryrun" | "--dry-run" => dry_run = true,
            "-d" | "--debug" => debug = true,
            "--check" => check = true,
            "--version" | "-V" => return Ok(Command::Version),
            "--help" | "-h" => return Ok(Command::Help),
            other => {
                if let Some(path) = other.strip_prefix("--config=") {
                    config = PathBuf::from(path);
                } else {
                    return Err(format!("unknown argument {other:?}"));
                }
            }
        }
    }
    if check {
        Ok(Command::Check { config })
    } else {
        Ok(Command::Run(RunOptions {
            config,
            dry_run,
            debug,
        }))
    }
}

fn parse_status(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut opts = StatusOptions::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => opts.json = true,
            "--url" => match args.next() {
                Some(url) => opts.url = Some(url),
                None => return Err("--url needs a URL".into()),
            },
            "-c" | "--config" => match args.next() {
                Some(path) => opts.config = Some(PathBuf::from(path)),
                None => return Err(format!("{arg} needs a file name")),
            },
            other => {
                if let Some(url) = other.strip_prefix("--url=") {
                    opts.url = Some(url.to_string());
                } else if let Some(path) = other.strip_prefix("--config=") {
                    opts.config = Some(PathBuf::from(path));
                } else {
                    return Err(format!("unknown argument to status {other:?}"));
                }
            }
        }
    }
    Ok(Command::Status(opts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let cmd = parse(Vec::<String>::new()).unwrap();
        assert_eq!(
            cmd,
            Command::Run(RunOptions {
                config: PathBuf::from(DEFAULT_CONFIG_PATH),
                dry_run: false,
                debug: false
            })
        );
    }

    #[test]
    fn flags() {
        let cmd = parse(["-c", "/tmp/p.conf", "-n", "-d"]).unwrap();
        assert_eq!(
            cmd,
            Command::Run(RunOptions {
                config: PathBuf::from("/tmp/p.conf"),
                dry_run: true,
                debug: true
            })
        );
        assert_eq!(
            parse(["--check", "--config=/x"]).unwrap(),
            Command::Check {
                config: PathBuf::from("/x")
            }
        );
        assert_eq!(parse(["--version"]).unwrap(), Command::Version);
        assert_eq!(
            parse(["--ipvs-debug", "dump", "netlink"]).unwrap(),
            Command::IpvsDebug(vec!["dump".into(), "netlink".into()])
        );
    }

    #[test]
    fn status() {
        assert_eq!(
            parse(["status"]).unwrap(),
            Command::Status(StatusOptions::default())
        );
        assert_eq!(
            parse(["status", "--json", "--url", "http://[::1]:9090", "-c", "/x"]).unwrap(),
            Command::Status(StatusOptions {
                url: Some("http://[::1]:9090".into()),
                config: Some(PathBuf::from("/x")),
                json: true
            })
        );
        assert!(parse(["status", "--url"]).is_err());
        assert!(parse(["status", "-n"]).is_err());
    }

    #[test]
    fn errors() {
        assert!(parse(["-c"]).unwrap_err().contains("needs a file"));
        assert!(parse(["--bogus"]).unwrap_err().contains("--bogus"));
    }
}
