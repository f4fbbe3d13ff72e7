//! The checkpoint thread: copies the WAL into the database file in the background.
//!
//! In WAL mode a commit only appends to the WAL, and a checkpoint later copies the pages into
//! the database file and syncs it. Left to the writer, SQLite runs the checkpoint inside the
//! commit that crosses the WAL size limit, and every call waiting for that commit waits for
//! the copy too. Here a connection of its own checkpoints once per [`CHECKPOINT_INTERVAL`],
//! in `PASSIVE` mode, which checkpoints what it can without waiting for the writer or the
//! readers.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

use crate::store::StoreError;

/// Time between two checkpoints.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// The running checkpoint thread. Dropping it stops the thread after the checkpoint in progress.
pub(super) struct Checkpointer {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl Checkpointer {
    /// Starts the thread, which owns `connection`.
    pub(super) fn spawn(connection: Connection) -> Result<Self, StoreError> {
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".to_owned())
            .spawn(move || run(&connection, &stopped))
            .map_err(|error| {
                StoreError::Unavailable(format!("failed to start the SQLite checkpoint thread: {error}"))
            })?;
        Ok(Self { stop, thread })
    }

    /// Stops the thread and waits for it. Blocks for at most one checkpoint.
    pub(super) fn stop(self) {
        let Self { stop, thread } = self;
        drop(stop);
        if thread.join().is_err() {
            tracing::error!("the SQLite checkpoint thread panicked");
        }
    }
}

fn run(connection: &Connection, stopped: &mpsc::Receiver<()>) {
    let mut failing = false;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(CHECKPOINT_INTERVAL) {
        match connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            Ok(()) => failing = false,
            // One message per run of failures: the writer's own checkpoints keep the WAL
            // bounded meanwhile.
            Err(error) if !failing => {
                tracing::warn!(error = %error, "WAL checkpoint failed; the writer checkpoints instead until it works again");
                failing = true;
            }
            Err(_) => {}
        }
    }
}
