//! Log setup (fern) in PyBal's line format.
//!
//! Every line is `[<target>] LEVEL: text`, where the target is `<service>` or
//! `<service> <Monitor>` (the service's name, or [`monitor_target`]), so that
//! log searches written for PyBal keep working. In foreground debug mode lines
//! go to stdout with a timestamp; otherwise to stderr (the journal adds its own
//! timestamps under systemd).

use log::LevelFilter;

/// Log target of lines from one monitor of a service: `<service> <Monitor>`.
pub(crate) fn monitor_target(service: &str, monitor: &str) -> String {
    format!("{service} {monitor}")
}

/// Installs the global logger. `debug`: foreground, debug level, stdout,
/// timestamps. Otherwise info level on stderr. Calling it twice is harmless.
pub(crate) fn init(debug: bool) {
    let level = if debug {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    let dispatch = fern::Dispatch::new()
        .level(level)
        // ureq and rustls are chatty at debug level and say nothing an operator needs.
        .level_for("ureq", LevelFilter::Warn)
        .level_for("ureq_proto", LevelFilter::Warn)
        .level_for("rustls", LevelFilter::Warn);
    let dispatch = if debug {
        dispatch
            .format(|out, message, record| {
                out.finish(format_args!(
                    "{} [{}] {}: {}",
                    humantime::format_rfc3339_millis(std::time::SystemTime::now()),
                    record.target(),
                    record.level(),
                    message
                ))
            })
            .chain(std::io::stdout())
    } else {
        dispatch
            .format(|out, message, record| {
                out.finish(format_args!(
                    "[{}] {}: {}",
                    record.target(),
                    record.level(),
                    message
                ))
            })
            .chain(std::io::stderr())
    };
    // A second init (tests) fails harmlessly: the first logger stays.
    let _ = dispatch.apply();
}
