//! `file://` server lists: the file is re-read every poll interval (PyBal:
//! every second) and applied when its content changed. Only a regular file
//! of at most [`MAX_LIST_BYTES`] is read: `/dev/zero`, a FIFO or a runaway
//! file is a failed read (the last good list stays), never unbounded memory
//! or a blocked thread.

use super::{ListKeeper, SourceError};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Largest server list read, in bytes (the largest production lists are a
/// few hundred KiB).
pub(super) const MAX_LIST_BYTES: u64 = 64 * 1024 * 1024;

/// The source thread's body for a file at `path`.
pub(super) fn watch(mut keeper: ListKeeper, path: &Path, json: bool, interval: Duration) {
    loop {
        let started = Instant::now();
        match read_list(path) {
            Ok(content) => {
                if !keeper.apply_document(content, json) {
                    return;
                }
            }
            Err(e) => keeper.fail(&e),
        }
        if !keeper.sleep_until(started + interval) {
            return;
        }
    }
}

/// The content of the server list at `path`: a regular file of at most
/// [`MAX_LIST_BYTES`].
pub(super) fn read_list(path: &Path) -> Result<Vec<u8>, SourceError> {
    read_bounded(path, MAX_LIST_BYTES)
}

/// [`read_list`] for `--check`, which prints the error as the log would.
pub(crate) fn read_for_check(path: &Path) -> Result<Vec<u8>, String> {
    read_list(path).map_err(|e| e.to_string())
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, SourceError> {
    let failed = |source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    };
    // Non-blocking: opening a FIFO without a writer must not hang.
    let file = File::options()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(failed)?;
    let meta = file.metadata().map_err(failed)?;
    if !meta.is_file() {
        return Err(SourceError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mut content = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut content)
        .map_err(failed)?;
    if content.len() as u64 > limit {
        return Err(SourceError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list");
        std::fs::write(&list, "0123456789").unwrap();
        assert_eq!(read_bounded(&list, 10).unwrap(), b"0123456789");
        let err = read_bounded(&list, 9).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{} is larger than 9 bytes; not read", list.display())
        );
        for device in ["/dev/zero", "/dev/urandom"] {
            let err = read_list(Path::new(device)).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("{device} is not a regular file; not read")
            );
        }
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(matches!(
            read_list(&fifo),
            Err(SourceError::NotAFile { .. })
        ));
        assert!(matches!(
            read_list(&dir.path().join("missing")),
            Err(SourceError::Read { .. })
        ));
        assert!(matches!(
            read_list(dir.path()),
            Err(SourceError::NotAFile { .. })
        ));
    }
}
