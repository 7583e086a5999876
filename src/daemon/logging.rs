//! Log setup (fern) in PyBal's line format.
//!
//! Every line is `[<target>] LEVEL: text`, where the target is `<service>` or
//! `<service> <Monitor>` (the service's name, or [`monitor_target`]), or the
//! part of rsbal speaking (`rsbal`, `bgp`, `instrumentation`, …), so that log
//! searches written for PyBal keep working. Every log call names its target;
//! one that does not (a library's) gets the last part of its module path, as
//! PyBal named such lines after the module's file (`[server] ERROR: …`). A
//! newline in the text continues on a line starting with a tab, as PyBal's.
//! In foreground debug mode lines go to stdout with a timestamp; otherwise to
//! stderr (the journal adds its own timestamps under systemd).

use log::LevelFilter;

/// Log target of lines from one monitor of a service: `<service> <Monitor>`.
pub(crate) fn monitor_target(service: &str, monitor: &str) -> String {
    format!("{service} {monitor}")
}

/// One log line in PyBal's shape: `[<target>] LEVEL: text`, a module path
/// target (`a::b::server`) shortened to its last part (`server`), and each
/// newline of the text followed by a tab.
fn pybal_line(target: &str, level: log::Level, text: &str) -> String {
    let system = target.rsplit("::").next().unwrap_or(target);
    format!("[{system}] {level}: {}", text.replace('\n', "\n\t"))
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
                    "{} {}",
                    humantime::format_rfc3339_millis(std::time::SystemTime::now()),
                    pybal_line(record.target(), record.level(), &message.to_string())
                ))
            })
            .chain(std::io::stdout())
    } else {
        dispatch
            .format(|out, message, record| {
                out.finish(format_args!(
                    "{}",
                    pybal_line(record.target(), record.level(), &message.to_string())
                ))
            })
            .chain(std::io::stderr())
    };
    // A second init (tests) fails harmlessly: the first logger stays.
    let _ = dispatch.apply();
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;

    #[test]
    fn lines_have_pybal_shape() {
        assert_eq!(
            pybal_line("web_80 IdleConnection", Level::Warn, "down"),
            "[web_80 IdleConnection] WARN: down"
        );
        assert_eq!(
            pybal_line("rsbal::status::server", Level::Info, "x"),
            "[server] INFO: x"
        );
        assert_eq!(
            pybal_line("bgp", Level::Error, "a\nb"),
            "[bgp] ERROR: a\n\tb"
        );
    }
}
