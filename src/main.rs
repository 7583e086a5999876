//! The `rsbal` command: see `rsbal --help` and `rsbal::daemon`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(rsbal::daemon::main_with_args(args));
}
