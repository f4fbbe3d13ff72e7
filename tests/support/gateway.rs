//! The gateway binary, started as `mcpsec serve` on a free loopback port with a fresh data
//! folder, and an HTTP client for its routes.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::header::{CONTENT_TYPE, HeaderMap};
use serde_json::Value;
use tempfile::TempDir;

use super::process::{ManagedChild, Stream};
use super::{TEST_KEYS, TEST_POLICY, gateway_binary, repo_root};

/// The admin key every test gateway is started with.
pub const ADMIN_KEY: &str = "e2e-admin-key";

const SESSION_SECRET: &str = "e2e-session-secret-0123456789abcdef";
const READY_PREFIX: &str = "mcpsec: listening on ";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start a gateway. The default uses [`TEST_KEYS`] and [`TEST_POLICY`], no upstream
/// and the default body limit.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Model keys file contents; `None` starts in the repository root without
    /// `MODEL_KEYS_FILE` and `POLICY_FILE`, so the gateway uses the shipped examples.
    pub keys_and_policy: Option<(&'static str, &'static str)>,
    /// `TOOL_SERVER_URL`.
    pub upstream_url: Option<String>,
    /// Passes `--demo-tools`.
    pub demo_tools: bool,
    /// `MAX_BODY_BYTES`.
    pub max_body_bytes: Option<usize>,
    /// Further environment variables, such as `GATEWAY_STORE` and the AWS settings.
    pub extra_env: Vec<(String, String)>,
}

impl Default for GatewayOptions {
    fn default() -> Self {
        Self {
            keys_and_policy: Some((TEST_KEYS, TEST_POLICY)),
            upstream_url: None,
            demo_tools: false,
            max_body_bytes: None,
            extra_env: Vec::new(),
        }
    }
}

/// An HTTP response from the gateway.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub text: String,
    /// The body parsed as JSON, or `Value::Null` when it is empty or not JSON.
    pub json: Value,
}

/// A running gateway. Dropping it kills the process, then deletes its data folder.
pub struct Gateway {
    base_url: String,
    http: reqwest::Client,
    process: ManagedChild,
    _data_dir: Option<TempDir>,
}

impl Gateway {
    /// Starts `mcpsec serve` and waits until it prints its listening line.
    ///
    /// The environment is cleared and set from `options`, so variables of the test process
    /// (`TOOL_SERVER_URL`, `PORT` and others) cannot change the setup.
    pub fn start(options: GatewayOptions) -> Result<Self> {
        let data_dir = tempfile::tempdir().context("failed to create a temporary data folder")?;
        let mut gateway = Self::start_in(options, data_dir.path())?;
        gateway._data_dir = Some(data_dir);
        Ok(gateway)
    }

    /// Starts `mcpsec serve` like [`Gateway::start`], with its data under `folder`, which the
    /// caller keeps: a gateway started again in the same folder finds the same store.
    pub fn start_in(options: GatewayOptions, folder: &Path) -> Result<Self> {
        let binary = gateway_binary()?;

        let mut command = Command::new(&binary);
        command.arg("serve");
        if options.demo_tools {
            command.arg("--demo-tools");
        }
        command
            .env_clear()
            .env("PORT", "0")
            .env("HOST", "127.0.0.1")
            .env("DATA_DIR", folder.join("data"))
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

        let (process, base_url) =
            ManagedChild::spawn_until_ready("gateway (mcpsec serve)", command, Stream::Stdout, READY_PREFIX)?;
        if !base_url.starts_with("http://127.0.0.1:") {
            bail!("gateway listens on `{base_url}`, expected a 127.0.0.1 address");
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("failed to build the HTTP client")?;
        Ok(Self { base_url, http, process, _data_dir: None })
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit; returns its exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Result<i32> {
        self.process.terminate(timeout)
    }

    /// Returns the URL of `path` on the gateway.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Returns the MCP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub fn mcp_url(&self) -> String {
        self.url("/mcp")
    }

    /// Returns the last lines that the gateway printed, for error messages.
    pub fn recent_output(&self) -> String {
        self.process.recent_output()
    }

    /// Calls `POST /mcp/toolcall` with a JSON body and, when given, `X-Model-Key`.
    pub async fn rest_call(&self, key: Option<&str>, body: &Value) -> Result<Reply> {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(key) = key {
            headers.push(("x-model-key", key));
        }
        self.post("/mcp/toolcall", &headers, serde_json::to_vec(body)?).await
    }

    /// Sends `body` to `path` with exactly the given headers.
    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Result<Reply> {
        let mut request = self.http.post(self.url(path)).body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {path} failed; gateway output:\n{}", self.recent_output()))?;
        read_reply(response).await
    }

    /// Sends `GET path` with `X-Admin-Key`, or without it when `admin_key` is `None`.
    pub async fn admin_get(&self, path: &str, admin_key: Option<&str>) -> Result<Reply> {
        let mut request = self.http.get(self.url(path));
        if let Some(key) = admin_key {
            request = request.header("x-admin-key", key);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("GET {path} failed; gateway output:\n{}", self.recent_output()))?;
        read_reply(response).await
    }

    /// Sends `DELETE path` with `X-Admin-Key`.
    pub async fn delete(&self, path: &str, admin_key: &str) -> Result<Reply> {
        let response = self
            .http
            .delete(self.url(path))
            .header("x-admin-key", admin_key)
            .send()
            .await
            .with_context(|| format!("DELETE {path} failed; gateway output:\n{}", self.recent_output()))?;
        read_reply(response).await
    }

    /// Sends `GET /api/session/{id}` with the admin key.
    pub async fn session_trace(&self, session_id: &str) -> Result<Reply> {
        self.admin_get(&format!("/api/session/{session_id}"), Some(ADMIN_KEY)).await
    }

    /// Fetches the `events` of a session trace, which must exist.
    pub async fn trace_events(&self, session_id: &str) -> Result<Vec<Value>> {
        let reply = self.session_trace(session_id).await?;
        if reply.status != 200 {
            bail!("GET /api/session/{session_id} returned {}: {}", reply.status, reply.text);
        }
        match reply.json.get("events") {
            Some(Value::Array(events)) => Ok(events.clone()),
            _ => bail!("session trace has no `events` array: {}", reply.text),
        }
    }

    /// Fetches the `sessions` array of `GET /api/sessions`.
    pub async fn sessions(&self) -> Result<Vec<Value>> {
        let reply = self.admin_get("/api/sessions", Some(ADMIN_KEY)).await?;
        if reply.status != 200 {
            bail!("GET /api/sessions returned {}: {}", reply.status, reply.text);
        }
        match reply.json.get("sessions") {
            Some(Value::Array(sessions)) => Ok(sessions.clone()),
            _ => bail!("GET /api/sessions has no `sessions` array: {}", reply.text),
        }
    }
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

fn write_file(folder: &Path, name: &str, contents: &str) -> Result<std::path::PathBuf> {
    let path = folder.join(name);
    std::fs::write(&path, contents).with_context(|| format!("failed to write `{}`", path.display()))?;
    Ok(path)
}
