//! `file://` server lists: the file is re-read every poll interval (PyBal:
//! every second) and applied when its content changed.

use super::{ListKeeper, SourceError};
use std::path::Path;
use std::time::{Duration, Instant};

/// The source thread's body for a file at `path`.
pub(super) fn watch(mut keeper: ListKeeper, path: &Path, json: bool, interval: Duration) {
    loop {
        let started = Instant::now();
        match std::fs::read(path) {
            Ok(content) => {
                if !keeper.apply_document(content, json) {
                    return;
                }
            }
            Err(source) => keeper.fail(&SourceError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
        if !keeper.sleep_until(started + interval) {
            return;
        }
    }
}
