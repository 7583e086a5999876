//! Programs the config names that cannot be run: a RunCommand `command`,
//! and `ipvsadm` when the ipvsadm backend is chosen. Warnings, not errors:
//! the program may be installed before the service starts, and a missing
//! RunCommand program only makes its checks fail. Whether a program can be
//! run is asked of a [`Probe`], so the checks stay pure; [`filesystem`] is
//! the real one, used by `config::load`.

use super::keys::GLOBAL_SECTION;
use super::report::{Place, Report};
use crate::config::ini::{Ini, Section};
use crate::config::{GlobalConfig, IpvsBackendKind, MonitorConfig, ServiceConfig};
use std::collections::BTreeMap;
use std::path::Path;

/// Why the program at a path cannot be run, or `None` when it can.
pub(crate) type Probe<'a> = &'a dyn Fn(&Path) -> Option<String>;

/// Warns about every program named by `global` and `services` that
/// `probe` says cannot be run, at the line of the key that names it.
pub(super) fn warn_missing_programs(
    ini: &Ini,
    global: &GlobalConfig,
    services: &BTreeMap<String, ServiceConfig>,
    probe: Probe<'_>,
    report: &mut Report,
) {
    if global.ipvs_backend == Some(IpvsBackendKind::Ipvsadm) {
        if let Some(why) = probe(&global.ipvsadm) {
            let section = ini.section(GLOBAL_SECTION);
            report.warning(place(ini, section, "ipvsadm"), why);
        }
    }
    for section in &ini.sections {
        let Some(service) = services.get(&section.name) else {
            continue;
        };
        for monitor in &service.monitors {
            if let MonitorConfig::RunCommand(opts) = monitor {
                if let Some(why) = probe(Path::new(&opts.command)) {
                    let why = format!("{why}; every check of this service will fail");
                    report.warning(place(ini, Some(section), "runcommand.command"), why);
                }
            }
        }
    }
}

/// Where `key` of `section` is (or the section, when it is not there).
fn place(ini: &Ini, section: Option<&Section>, key: &str) -> Place {
    let Some(section) = section else {
        return Place {
            key: Some(key.to_string()),
            ..Place::default()
        };
    };
    match ini.get(section, key) {
        Some(entry) => Place::key(section, key, entry.line),
        None => Place {
            key: Some(key.to_string()),
            ..Place::section(section)
        },
    }
}

/// The real probe: a path with a `/` must be an executable file; a bare
/// name must be one in `search_path` (`:`-separated), as the child's `PATH`.
pub(crate) fn filesystem(program: &Path, search_path: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |path: &Path| -> Result<(), String> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(format!("{} does not exist", path.display()))
            }
            Err(e) => Err(format!("cannot look at {}: {e}", path.display())),
            Ok(meta) if !meta.is_file() => Err(format!("{} is not a file", path.display())),
            Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
                Err(format!("{} is not executable", path.display()))
            }
            Ok(_) => Ok(()),
        }
    };
    if program.as_os_str().is_empty() {
        return None; // an error of its own
    }
    if program.to_string_lossy().contains('/') {
        return runnable(program).err();
    }
    let found = search_path
        .split(':')
        .any(|dir| runnable(&Path::new(dir).join(program)).is_ok());
    (!found).then(|| format!("{} is not in PATH ({search_path})", program.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filesystem_probe() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "x").unwrap();
        let path = dir.path().display().to_string();
        assert_eq!(filesystem(Path::new("/bin/sh"), ""), None);
        assert_eq!(filesystem(Path::new("sh"), "/nonexistent:/bin"), None);
        let missing = dir.path().join("missing");
        assert_eq!(
            filesystem(&missing, ""),
            Some(format!("{} does not exist", missing.display()))
        );
        assert_eq!(
            filesystem(&plain, ""),
            Some(format!("{} is not executable", plain.display()))
        );
        assert_eq!(
            filesystem(dir.path(), ""),
            Some(format!("{path} is not a file"))
        );
        assert_eq!(
            filesystem(Path::new("plain"), &path),
            Some(format!("plain is not in PATH ({path})"))
        );
    }
}
