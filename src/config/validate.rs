//! From INI text to a typed [`Config`](super::Config), collecting every error.

use super::{ConfigError, Loaded};
use std::path::Path;

/// Parses and validates the main config text read from `path`.
pub fn from_str(path: &Path, text: &str) -> Result<Loaded, Vec<ConfigError>> {
    let _ = (path, text);
    todo!("helper task")
}
