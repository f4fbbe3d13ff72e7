//! Child processes that print a ready line, are killed on drop, and keep their recent output
//! for error messages.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// How long a process may take to print its ready line.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Number of recent output lines kept for error messages.
const KEPT_LINES: usize = 200;

/// The output stream that carries a process's ready line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A running child process. Dropping it kills the process with SIGKILL and reaps it.
///
/// The processes started here (`mcpsec` and `node`) do not start children of their own, so
/// killing the one pid leaves no orphan.
pub struct ManagedChild {
    name: String,
    child: Child,
    output: Arc<Mutex<VecDeque<String>>>,
}

impl ManagedChild {
    /// Spawns `command` with piped stdout and stderr, and waits up to [`READY_TIMEOUT`] for a
    /// line on `stream` that starts with `ready_prefix`. Returns the process and the rest of
    /// that line.
    pub fn spawn_until_ready(
        name: &str,
        mut command: Command,
        stream: Stream,
        ready_prefix: &str,
    ) -> Result<(Self, String)> {
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().with_context(|| format!("failed to start {name} ({command:?})"))?;

        let output = Arc::new(Mutex::new(VecDeque::new()));
        let (ready_sender, ready_receiver) = mpsc::sync_channel(1);
        let stdout = child.stdout.take().context("child stdout is not piped")?;
        let stderr = child.stderr.take().context("child stderr is not piped")?;
        let (stdout_ready, stderr_ready) = match stream {
            Stream::Stdout => (Some(ready_sender), None),
            Stream::Stderr => (None, Some(ready_sender)),
        };
        drain(stdout, "stdout", &output, stdout_ready.map(|sender| (ready_prefix.to_owned(), sender)));
        drain(stderr, "stderr", &output, stderr_ready.map(|sender| (ready_prefix.to_owned(), sender)));

        let mut process = Self { name: name.to_owned(), child, output };
        match ready_receiver.recv_timeout(READY_TIMEOUT) {
            Ok(rest) => Ok((process, rest)),
            Err(RecvTimeoutError::Timeout) => {
                bail!(
                    "{name} printed no `{ready_prefix}` line within {READY_TIMEOUT:?}; its output:\n{}",
                    process.recent_output()
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = process.exit_status();
                bail!(
                    "{name} closed its {stream:?} before it was ready ({status}); its output:\n{}",
                    process.recent_output()
                )
            }
        }
    }

    /// Describes how the process ended, waiting up to a second for it to exit.
    fn exit_status(&mut self) -> String {
        for _ in 0..20 {
            match self.child.try_wait() {
                Ok(Some(status)) => return format!("exited with {status}"),
                Ok(None) => thread::sleep(Duration::from_millis(50)),
                Err(error) => return format!("exit status unknown: {error}"),
            }
        }
        "still running".to_owned()
    }

    /// Sends SIGTERM (with the `kill` command) and waits up to `timeout` for the process to
    /// exit; returns its exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Result<i32> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().context("failed to run `kill -TERM`")?;
        if !status.success() {
            bail!("`kill -TERM {pid}` failed with {status}");
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("failed to wait for the process")? {
                return status.code().with_context(|| format!("{} ended by a signal: {status}", self.name));
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "{} did not exit within {timeout:?} of SIGTERM; its output:\n{}",
                    self.name,
                    self.recent_output()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Returns the last lines that the process printed on stdout and stderr, for error messages.
    pub fn recent_output(&self) -> String {
        let lines = self.output.lock().unwrap_or_else(PoisonError::into_inner);
        lines.iter().map(String::as_str).collect::<Vec<_>>().join("\n")
    }
}

impl Drop for ManagedChild {
    fn drop(&mut self) {
        if let Err(error) = self.child.kill() {
            eprintln!("failed to kill {} (pid {}): {error}", self.name, self.child.id());
        }
        if let Err(error) = self.child.wait() {
            eprintln!("failed to reap {} (pid {}): {error}", self.name, self.child.id());
        }
    }
}

/// Reads `stream` line by line on a thread until it closes, keeping the recent lines in
/// `output`. The first line that starts with the ready prefix sends the rest of the line.
/// Reading on after the ready line keeps the pipe from filling up and blocking the child.
fn drain(
    stream: impl Read + Send + 'static,
    label: &'static str,
    output: &Arc<Mutex<VecDeque<String>>>,
    mut ready: Option<(String, SyncSender<String>)>,
) {
    let output = Arc::clone(output);
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut bytes = Vec::new();
        loop {
            bytes.clear();
            match reader.read_until(b'\n', &mut bytes) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            // Lossy, so that output that is not UTF-8 cannot stop the draining.
            let line = String::from_utf8_lossy(&bytes).trim_end_matches(['\r', '\n']).to_owned();

            if let Some((prefix, sender)) = &ready
                && let Some(rest) = line.strip_prefix(prefix.as_str())
            {
                let _ = sender.send(rest.trim().to_owned());
                ready = None;
            }

            let mut lines = output.lock().unwrap_or_else(PoisonError::into_inner);
            if lines.len() == KEPT_LINES {
                lines.pop_front();
            }
            lines.push_back(format!("[{label}] {line}"));
        }
    });
}
