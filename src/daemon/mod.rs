//! The daemon's main thread: start-up, signal handling, reload and shutdown.
//!
//! It owns the running config and the handles of every thread it started
//! (services, IpvsWriter, instrumentation server, BGP speaker): `run` starts
//! and stops them, `reload` applies a SIGHUP, `check` is `--check`, `limits`
//! says whether a config fits the process's limits. Signals are received with
//! signal-hook's iterator on this thread only; no other thread handles them.

mod check;
pub(crate) mod cli;
pub(crate) mod limits;
pub(crate) mod logging;
mod reload;
mod run;
pub(crate) mod systemd;

use cli::Command;

/// Runs the command line `args` (without the program name); returns the exit code.
pub fn main_with_args(args: Vec<String>) -> i32 {
    match cli::parse(args) {
        Err(e) => {
            eprintln!("rsbal: {e}\n\n{}", cli::USAGE);
            2
        }
        Ok(Command::Help) => {
            println!("{}", cli::USAGE);
            0
        }
        Ok(Command::Version) => {
            println!("rsbal {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Ok(Command::Check { config }) => check::check(&config),
        Ok(Command::Status(opts)) => crate::status::client::run(&opts),
        Ok(Command::Run(opts)) => run::run(opts),
        Ok(Command::IpvsDebug(args)) => crate::ipvs::debug::main(&args),
    }
}
