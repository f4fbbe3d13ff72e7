//! `audit.log`: one JSON line per audit event, appended and synced once per batch.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::store::StoreError;

/// The append-only audit log file, owned by the writer thread.
pub(super) struct AuditLog {
    file: File,
    path: PathBuf,
}

impl AuditLog {
    /// Opens the log for appending, creating it with mode `0600` on Unix.
    ///
    /// A log whose last line lacks its newline (a write cut off by a crash, never
    /// acknowledged to a caller) gets one, so the next line starts on a line of its own.
    pub(super) fn open(path: &Path) -> Result<Self, StoreError> {
        let failed = |error: io::Error| {
            StoreError::Unavailable(format!("failed to open audit log `{}`: {error}", path.display()))
        };
        let mut file = open_options().open(path).map_err(failed)?;

        terminate_last_line(&mut file).map_err(failed)?;
        Ok(Self { file, path: path.to_owned() })
    }

    /// Appends `lines` (whole lines, each ending in `\n`) and syncs them to disk.
    ///
    /// On failure the file is cut back to its length before the call, so a partial write
    /// leaves no torn line in front of the next batch.
    pub(super) fn append(&mut self, lines: &[u8]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }

        let start = self.file.metadata().map_err(|error| self.failed(&error))?.len();
        let Err(error) = self.file.write_all(lines).and_then(|()| self.file.sync_data()) else {
            return Ok(());
        };

        // NOTE: after a failed fsync Linux may have dropped the dirty pages, so the cut below
        // only makes the file consistent if it reaches the disk.
        match self.file.set_len(start).and_then(|()| self.file.sync_data()) {
            Ok(()) => Err(self.failed(&error)),
            Err(cut) => Err(StoreError::Unavailable(format!(
                "{}; cutting the partial lines off at byte {start} also failed: {cut}",
                self.failed(&error)
            ))),
        }
    }

    fn failed(&self, error: &io::Error) -> StoreError {
        StoreError::Unavailable(format!(
            "failed to append to audit log `{}`: {error}; check free space and permissions",
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
