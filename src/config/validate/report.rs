//! Collecting problems: where each is ([`Place`]), the errors and warnings
//! found so far ([`Report`]), and typed reads out of one section ([`Reader`]).

use crate::config::ini::{Entry, Ini, Section};
use crate::config::{Config, ConfigError, Loaded};
use std::path::{Path, PathBuf};

/// Where a problem is: line, section and key, each optional.
#[derive(Debug, Clone, Default)]
pub(super) struct Place {
    pub(super) line: Option<usize>,
    pub(super) section: Option<String>,
    pub(super) key: Option<String>,
}

impl Place {
    pub(super) fn line(line: usize) -> Self {
        Place {
            line: Some(line),
            ..Place::default()
        }
    }

    pub(super) fn section(section: &Section) -> Self {
        Place {
            line: Some(section.line),
            section: Some(section.name.clone()),
            key: None,
        }
    }

    pub(super) fn key(section: &Section, key: &str, line: usize) -> Self {
        Place {
            line: Some(line),
            section: Some(section.name.clone()),
            key: Some(key.to_string()),
        }
    }
}

/// Errors and warnings found so far.
pub(super) struct Report {
    pub(super) file: PathBuf,
    pub(super) errors: Vec<ConfigError>,
    pub(super) warnings: Vec<ConfigError>,
}

impl Report {
    pub(super) fn new(file: &Path) -> Self {
        Report {
            file: file.to_path_buf(),
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(super) fn problem(&self, place: Place, reason: String) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: place.line,
            section: place.section,
            key: place.key,
            reason,
        }
    }

    pub(super) fn error(&mut self, place: Place, reason: String) {
        let problem = self.problem(place, reason);
        self.errors.push(problem);
    }

    pub(super) fn warning(&mut self, place: Place, reason: String) {
        let problem = self.problem(place, reason);
        self.warnings.push(problem);
    }

    pub(super) fn finish(self, config: Config) -> Result<Loaded, Vec<ConfigError>> {
        let by_line = |e: &ConfigError| e.line.unwrap_or(usize::MAX);
        let mut errors = self.errors;
        if !errors.is_empty() {
            errors.sort_by_key(by_line);
            return Err(errors);
        }
        let mut warnings = self.warnings;
        warnings.sort_by_key(by_line);
        Ok(Loaded { config, warnings })
    }
}

/// Reads typed values out of one section (with `[DEFAULT]` inheritance),
/// recording errors as it goes.
pub(super) struct Reader<'a> {
    pub(super) ini: &'a Ini,
    pub(super) section: &'a Section,
    pub(super) report: &'a mut Report,
}

impl<'a> Reader<'a> {
    pub(super) fn new(ini: &'a Ini, section: &'a Section, report: &'a mut Report) -> Self {
        Reader {
            ini,
            section,
            report,
        }
    }

    pub(super) fn name(&self) -> &'a str {
        &self.section.name
    }

    pub(super) fn entry(&self, key: &str) -> Option<&'a Entry> {
        self.ini.get(self.section, key)
    }

    /// The line to blame for `key`: its own, else the section header's.
    pub(super) fn line_of(&self, key: &str) -> usize {
        self.entry(key).map_or(self.section.line, |e| e.line)
    }

    pub(super) fn error_at(&mut self, key: &str, line: usize, reason: String) {
        self.report
            .error(Place::key(self.section, key, line), reason);
    }

    pub(super) fn error(&mut self, key: &str, reason: String) {
        let line = self.line_of(key);
        self.error_at(key, line, reason);
    }

    pub(super) fn warning(&mut self, key: &str, reason: String) {
        let line = self.line_of(key);
        self.report
            .warning(Place::key(self.section, key, line), reason);
    }
}
