//! The gateway binary started so that a test can inspect all of it: every byte it writes to stdout and
//! stderr (not only the recent lines that [`super::Gateway`] keeps), its process id for
//! `/proc/<pid>/status`, and optionally with `SIGXFSZ` ignored, so that a file size limit set
//! with `prlimit` makes its file writes fail as on a full disk instead of killing it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use reqwest::header::CONTENT_TYPE;
use serde_json::Value;

use super::gateway::Reply;
use super::process::READY_TIMEOUT;
use super::{ADMIN_KEY, GatewayOptions, gateway_binary, repo_root};

const READY_PREFIX: &str = "mcpsec: listening on ";
const SESSION_SECRET: &str = "e2e-observed-session-secret-0123456789";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the gateway may see failed file writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSizeSignal {
    /// The default action of `SIGXFSZ`: a write past the file size limit kills the process.
    Default,
    /// `SIGXFSZ` is ignored, so a write past the limit fails with `EFBIG` and the gateway
    /// handles the error.
    Ignored,
}

/// A running gateway whose whole output is kept. Dropping it kills the process with SIGKILL.
pub struct ObservedGateway {
    child: Child,
    base_url: String,
    data_dir: PathBuf,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    http: reqwest::Client,
}

impl ObservedGateway {
    /// Starts `mcpsec serve` configured like [`super::Gateway::start_in`], with its data in
    /// `folder/data`, and waits until it prints its listening line.
    pub fn start(options: &GatewayOptions, folder: &Path, signal: FileSizeSignal) -> Result<Self> {
        let binary = gateway_binary()?;
        let mut command = match signal {
            FileSizeSignal::Default => Command::new(&binary),
            FileSizeSignal::Ignored => {
                // An ignored signal stays ignored across exec, so the gateway inherits it.
                let mut shell = Command::new("/bin/sh");
                shell.arg("-c").arg("trap '' XFSZ; exec \"$0\" \"$@\"").arg(&binary);
                shell
            }
        };
        command.arg("serve");
        if options.demo_tools {
            command.arg("--demo-tools");
        }

        let data_dir = folder.join("data");
        command
            .env_clear()
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("DATA_DIR", &data_dir)
            .env("ADMIN_KEY", ADMIN_KEY)
            .env("SESSION_SECRET", SESSION_SECRET)
            .env("NO_COLOR", "1");
        match options.keys_and_policy {
            Some((keys, policy)) => {
                let keys_file = write_file(folder, "model_keys.yaml", keys)?;
                let policy_file = write_file(folder, "policies.yaml", policy)?;
                command.env("MODEL_KEYS_FILE", keys_file).env("POLICY_FILE", policy_file).current_dir(folder);
            }
            None => {
                command.current_dir(repo_root()?);
            }
        }
        if let Some(url) = &options.upstream_url {
            command.env("TOOL_SERVER_URL", url);
        }
        if let Some(limit) = options.max_body_bytes {
            command.env("MAX_BODY_BYTES", limit.to_string());
        }
        command.envs(options.extra_env.iter().map(|(name, value)| (name, value)));

        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().with_context(|| format!("failed to start the gateway ({command:?})"))?;
        let stdout = keep_all(child.stdout.take().context("gateway stdout is not piped")?);
        let stderr = keep_all(child.stderr.take().context("gateway stderr is not piped")?);
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("failed to build the HTTP client")?;

        let mut gateway = Self { child, base_url: String::new(), data_dir, stdout, stderr, http };
        gateway.base_url = gateway.wait_until_ready()?;
        if !gateway.base_url.starts_with("http://127.0.0.1:") {
            bail!("gateway listens on `{}`, expected a 127.0.0.1 address", gateway.base_url);
        }
        Ok(gateway)
    }

    fn wait_until_ready(&mut self) -> Result<String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let printed = String::from_utf8_lossy(&lock(&self.stdout)).into_owned();
            if let Some(line) = printed.lines().find_map(|line| line.strip_prefix(READY_PREFIX)) {
                return Ok(line.trim().to_owned());
            }
            if let Some(status) = self.child.try_wait().context("failed to check the gateway process")? {
                bail!("the gateway exited with {status} before it was ready; its output:\n{}", self.output_text());
            }
            if Instant::now() >= deadline {
                bail!("the gateway printed no `{READY_PREFIX}` line within {READY_TIMEOUT:?}:\n{}", self.output_text());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Returns the process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Returns the data folder (`DATA_DIR`).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Returns the URL of `path` on the gateway.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Returns every byte printed so far: stdout, then stderr.
    pub fn output(&self) -> Vec<u8> {
        let mut bytes = lock(&self.stdout).clone();
        bytes.extend_from_slice(&lock(&self.stderr));
        bytes
    }

    /// Returns [`ObservedGateway::output`] as text, for error messages.
    pub fn output_text(&self) -> String {
        String::from_utf8_lossy(&self.output()).into_owned()
    }

    /// Sends SIGTERM (with the `kill` command) and waits up to `timeout` for the process to
    /// exit; returns its exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Result<i32> {
        let pid = self.pid().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().context("failed to run `kill -TERM`")?;
        if !status.success() {
            bail!("`kill -TERM {pid}` failed with {status}");
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().context("failed to wait for the gateway")? {
                return status.code().with_context(|| format!("the gateway ended by a signal: {status}"));
            }
            if Instant::now() >= deadline {
                bail!("the gateway did not exit within {timeout:?} of SIGTERM:\n{}", self.output_text());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends `method path` with exactly the given headers and body.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply> {
        let mut request = self.http.request(method.clone(), self.url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.with_context(|| format!("{method} {path} failed"))?;
        read_reply(response).await
    }

    /// Sends `POST path` with a JSON body and the given headers.
    pub async fn post_json(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Result<Reply> {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(reqwest::Method::POST, path, &all, serde_json::to_vec(body)?).await
    }

    /// Sends `GET path` with the admin key.
    pub async fn admin_get(&self, path: &str) -> Result<Reply> {
        self.send(reqwest::Method::GET, path, &[("x-admin-key", ADMIN_KEY)], Vec::new()).await
    }
}

impl Drop for ObservedGateway {
    fn drop(&mut self) {
        if let Err(error) = self.child.kill() {
            eprintln!("failed to kill the gateway (pid {}): {error}", self.child.id());
        }
        if let Err(error) = self.child.wait() {
            eprintln!("failed to reap the gateway (pid {}): {error}", self.child.id());
        }
    }
}

/// Returns the resident set size of process `pid` in KiB, from `VmRSS` in `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("failed to read `{path}`"))?;
    let Some(line) = status.lines().find(|line| line.starts_with("VmRSS:")) else {
        bail!("`{path}` has no VmRSS line");
    };
    let kib = line.trim_start_matches("VmRSS:").trim().trim_end_matches("kB").trim();
    kib.parse().with_context(|| format!("invalid VmRSS line `{line}` in `{path}`"))
}

/// Reads `stream` on a thread until it closes, keeping every byte.
fn keep_all(mut stream: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let kept = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&kept);
    thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        loop {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(read) => lock(&sink).extend_from_slice(buffer.get(..read).unwrap_or_default()),
            }
        }
    });
    kept
}

async fn read_reply(response: reqwest::Response) -> Result<Reply> {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.context("failed to read the response body")?;
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let json = if is_json {
        serde_json::from_str(&text).with_context(|| format!("invalid JSON body: {text}"))?
    } else {
        Value::Null
    };
    Ok(Reply { status, headers, text, json })
}

fn write_file(folder: &Path, name: &str, contents: &str) -> Result<PathBuf> {
    let path = folder.join(name);
    std::fs::write(&path, contents).with_context(|| format!("failed to write `{}`", path.display()))?;
    Ok(path)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
