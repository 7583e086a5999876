//! Log setup (fern) in PyBal's line format.
//!
//! Every line is `[<target>] LEVEL: text`, where the target is `<service>` or
//! `<service> <Monitor>` (the service's name, or [`monitor_target`]), or the
//! part of rsbal speaking (`rsbal`, `bgp`, `instrumentation`, …), so that log
//! searches written for PyBal keep working. Every log call names its target;
//! one that does not (a library's) gets the last part of its module path, as
//! PyBal named such lines after the module's file (`[server] ERROR: …`).
//! Control characters in the text are escaped ([`escape_control`]): one
//! record is one line, and nothing from outside can forge a line (PyBal
//! continued a multi-line text on tab-indented lines; rsbal escapes the
//! newline instead).
//! In foreground debug mode lines go to stdout with a timestamp; otherwise to
//! stderr (the journal adds its own timestamps under systemd).

use log::LevelFilter;

/// Log target of lines from one monitor of a service: `<service> <Monitor>`.
pub(crate) fn monitor_target(service: &str, monitor: &str) -> String {
    format!("{service} {monitor}")
}

/// One log line in PyBal's shape: `[<target>] LEVEL: text`, a module path
/// target (`a::b::server`) shortened to its last part (`server`). `text`
/// is already [`escaped`], so one record is one line.
fn pybal_line(target: &str, level: log::Level, text: &str) -> String {
    let system = target.rsplit("::").next().unwrap_or(target);
    format!("[{system}] {level}: {text}")
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
                    pybal_line(record.target(), record.level(), &escaped(message))
                ))
            })
            .chain(std::io::stdout())
    } else {
        dispatch
            .format(|out, message, record| {
                out.finish(format_args!(
                    "{}",
                    pybal_line(record.target(), record.level(), &escaped(message))
                ))
            })
            .chain(std::io::stderr())
    };
    // A second init (tests) fails harmlessly: the first logger stays.
    let _ = dispatch.apply();
}

/// A log message with its control characters escaped: one record is one
/// line, and nothing from outside (a host name, a command's output, an
/// error text) can forge lines or send terminal escapes.
fn escaped(message: &std::fmt::Arguments<'_>) -> String {
    match message.as_str() {
        Some(text) => escape_control(text).into_owned(),
        None => escape_control(&message.to_string()).into_owned(),
    }
}

/// `text` with control characters escaped (`\n`, `\r`, `\t`, `\x1b`,
/// `\u{85}` …), borrowed when there are none. The one escaping of text from
/// outside that the log and the `/pools` text share.
pub(crate) fn escape_control(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape_control("a\tb\rc\x1bd\u{85}é\n\u{7}"),
            "a\\tb\\rc\\x1bd\\x85é\\n\\x07"
        );
        assert!(matches!(
            escape_control("plain é"),
            std::borrow::Cow::Borrowed("plain é")
        ));
        let args = format_args!("{}:{}", "x\ny", 1);
        assert_eq!(escaped(&args), "x\\ny:1");
    }

    #[test]
    fn lines_have_pybal_shape() {
        assert_eq!(
            pybal_line("web_80 IdleConnection", log::Level::Warn, "down"),
            "[web_80 IdleConnection] WARN: down"
        );
        assert_eq!(
            pybal_line("rsbal::status::server", log::Level::Info, "x"),
            "[server] INFO: x"
        );
    }
}
