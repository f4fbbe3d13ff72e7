//! `audit.log`: one JSON line per stored audit event version, appended after each commit and
//! synced about once a second.
//!
//! The database is the durable record; this file is a copy for people and log shippers. The
//! writer records in the database the last change whose line is synced here, and at start
//! appends the lines of every later change, so a crash or a failed append loses no line (it
//! may repeat some).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::store::StoreError;

/// The append-only audit log file, owned by the writer thread.
pub(super) struct AuditLog {
    file: File,
    path: PathBuf,
    /// Whether bytes were written since the last sync.
    dirty: bool,
}

impl AuditLog {
    /// Opens the log for appending, creating it with mode `0600` on Unix.
    ///
    /// A log whose last line lacks its newline (a write cut off by a crash) gets one, so the
    /// next line starts on a line of its own.
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        let failed = |error: io::Error| {
            StoreError::Unavailable(format!("failed to open audit log `{}`: {error}", path.display()))
        };
        let mut file = open_options().open(path).map_err(failed)?;

        terminate_last_line(&mut file).map_err(failed)?;
        Ok(Self { file, path: path.to_owned(), dirty: false })
    }

    /// Appends `lines` (whole lines, each ending in `\n`) without syncing them.
    ///
    /// On failure the file is cut back to its length before the call, so a partial write
    /// leaves no torn line in front of the next append.
    pub(super) fn append(&mut self, lines: &[u8]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }

        // The length is read each time, because another program may have truncated or
        // rotated the file, and append mode writes at its real end.
        let start = self.file.metadata().map_err(|error| self.failed("read the length of", &error))?.len();
        self.dirty = true;
        let Err(error) = self.file.write_all(lines) else {
            return Ok(());
        };
        match self.file.set_len(start) {
            Ok(()) => Err(self.failed("append to", &error)),
            Err(cut) => Err(StoreError::Unavailable(format!(
                "{}; cutting the partial lines off at byte {start} also failed: {cut}",
                self.failed("append to", &error)
            ))),
        }
    }

    /// Returns whether lines were appended since the last successful [`AuditLog::sync`].
    pub(super) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Counts the log as unsynced again, so that the next sync is tried.
    pub(super) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Adds a newline after a last line that lacks one, such as the rest of a failed append
    /// that could not be cut off.
    pub(super) fn terminate(&mut self) -> Result<(), StoreError> {
        terminate_last_line(&mut self.file).map_err(|error| self.failed("terminate the last line of", &error))
    }

    /// Syncs the appended lines to disk.
    ///
    /// After a failed sync, Linux may have dropped the unsynced pages and the next sync may
    /// succeed without them, so the caller appends those lines again instead of retrying.
    pub(super) fn sync(&mut self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(|error| self.failed("sync", &error))?;
        self.dirty = false;
        Ok(())
    }

    fn failed(&self, action: &str, error: &io::Error) -> StoreError {
        StoreError::Unavailable(format!(
            "failed to {action} audit log `{}`: {error}; check free space and permissions",
            self.path.display()
        ))
    }
}

/// Opens for reading too, which [`terminate_last_line`] needs. Append mode makes every write go
/// to the end.
fn open_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.read(true).append(true).create(true);

    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

fn terminate_last_line(file: &mut File) -> io::Result<()> {
    if file.metadata()?.len() == 0 {
        return Ok(());
    }

    let mut last = [0_u8; 1];
    file.seek(SeekFrom::End(-1))?;
    file.read_exact(&mut last)?;
    if last != *b"\n" {
        file.write_all(b"\n")?;
        file.sync_data()?;
    }
    Ok(())
}
