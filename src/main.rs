//! The `rsbal` command: see `rsbal --help` and `rsbal::daemon`.
//!
//! Before anything else it limits glibc's malloc arenas ([`limit_arenas`]).

use std::os::unix::process::CommandExt;
use std::process::Command;

/// glibc's `MALLOC_ARENA_MAX` for rsbal. By default glibc gives threads up
/// to 8 arenas per core, and with thousands of threads (one per idle
/// connection, the check workers) memory freed in one arena is not reused by
/// another: the scale benchmark (issue 13, 5,000 servers) measured 531–536
/// MiB RSS with the default, 275–330 MiB with 2 arenas, 729–739 MiB with
/// jemalloc and about 5 GiB with mimalloc, at the same CPU per check.
const ARENA_MAX: &str = "2";

/// Runs rsbal again, in place (same PID), with `MALLOC_ARENA_MAX` set, unless
/// the environment already sets it (an operator's choice wins). glibc reads
/// it only at start, and setting it from inside (`mallopt`) would need
/// `unsafe`. If the exec fails (no `/proc`), rsbal runs on with glibc's
/// default.
fn limit_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    let mut args = std::env::args_os();
    let mut command = Command::new("/proc/self/exe");
    if let Some(argv0) = args.next() {
        command.arg0(argv0);
    }
    let _error = command.args(args).env("MALLOC_ARENA_MAX", ARENA_MAX).exec();
}

fn main() {
    limit_arenas();
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(rsbal::daemon::main_with_args(args));
}
