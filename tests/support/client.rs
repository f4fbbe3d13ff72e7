//! Runs `tests/mcp_client.py`, the command-line MCP client on the official Python SDK.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::process::Command;

use super::{installed_dependency, search_path};

const PYTHON: &str = "infra/.venv/bin/python";
const CLIENT_SCRIPT: &str = "tests/mcp_client.py";

/// Limit in seconds that the client applies to initialize and to each operation.
const OPERATION_TIMEOUT_SECONDS: &str = "20";
/// Limit on one whole client run.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// The value returned for an operation that is not in the output.
static NULL: Value = Value::Null;

/// Exit status of the client when initialize failed.
pub const EXIT_INITIALIZE_FAILED: i32 = 3;

/// One run of the client: its exit status and its JSON document.
#[derive(Debug)]
pub struct ClientRun {
    /// 0 after a successful initialize, 3 when initialize failed, 4 when the connection broke.
    pub exit_code: i32,
    /// The printed document (see the docstring of `tests/mcp_client.py`).
    pub output: Value,
}

impl ClientRun {
    /// Returns the outcome of operation `index`, or `Value::Null` when there is none.
    pub fn result(&self, index: usize) -> &Value {
        self.output.get("results").and_then(|results| results.get(index)).unwrap_or(&NULL)
    }

    /// Returns the tools of the `list_tools` operation at `index`, by name, in the order listed.
    /// Fails when initialize or the operation failed, or a name repeats.
    pub fn tools(&self, index: usize) -> Result<Vec<(String, Value)>> {
        let outcome = self.successful(index)?;
        let Some(tools) = outcome["tools"].as_array() else {
            bail!("operation {index} has no `tools` array: {outcome}")
        };

        let mut named = Vec::with_capacity(tools.len());
        for tool in tools {
            let Some(name) = tool["name"].as_str() else { bail!("tool without a name: {tool}") };
            if named.iter().any(|(seen, _)| seen == name) {
                bail!("tool `{name}` is listed twice");
            }
            named.push((name.to_owned(), tool.clone()));
        }
        Ok(named)
    }

    /// Returns the `result` of the successful operation at `index`.
    pub fn call_result(&self, index: usize) -> Result<&Value> {
        Ok(&self.successful(index)?["result"])
    }

    /// Returns the `error` of the failed operation at `index`.
    pub fn call_error(&self, index: usize) -> Result<&Value> {
        self.initialized()?;
        let outcome = self.result(index);
        if outcome["ok"] != Value::Bool(false) {
            bail!("operation {index} did not fail: {outcome}");
        }
        Ok(&outcome["error"])
    }

    fn successful(&self, index: usize) -> Result<&Value> {
        self.initialized()?;
        let outcome = self.result(index);
        if outcome["ok"] != Value::Bool(true) {
            bail!("operation {index} failed: {outcome}");
        }
        Ok(outcome)
    }

    fn initialized(&self) -> Result<()> {
        if self.exit_code != 0 {
            bail!("MCP client exited with {}: {}", self.exit_code, self.output);
        }
        Ok(())
    }

    /// Returns the session id that the server issued at initialize, if the client saw one.
    pub fn session_id(&self) -> Option<&str> {
        self.output.pointer("/initialize/session_id").and_then(Value::as_str)
    }
}

/// Formats the `X-Model-Key` header argument for `key`.
pub fn key_header(key: &str) -> String {
    format!("X-Model-Key: {key}")
}

/// Runs the operations `ops` (a JSON array) against the MCP endpoint `url`, sending each
/// `Name: value` header in `headers` with every request.
///
/// Fails when the client cannot run, exits with a usage error, or prints no JSON document.
pub async fn run_mcp_client(url: &str, headers: &[String], ops: &Value) -> Result<ClientRun> {
    let python = installed_dependency(PYTHON)?;
    let script = installed_dependency(CLIENT_SCRIPT)?;

    let mut command = Command::new(&python);
    command
        .arg(&script)
        .arg("--url")
        .arg(url)
        .arg("--timeout")
        .arg(OPERATION_TIMEOUT_SECONDS)
        .arg("--ops")
        .arg(ops.to_string());
    for header in headers {
        command.arg("--header").arg(header);
    }
    command.env_clear().env("PATH", search_path()).stdin(Stdio::null()).kill_on_drop(true);

    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .with_context(|| format!("MCP client against {url} did not finish within {RUN_TIMEOUT:?}"))?
        .with_context(|| format!("failed to run `{}`", python.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let Some(exit_code) = output.status.code() else {
        bail!("MCP client was killed by a signal ({}); stderr:\n{stderr}", output.status);
    };
    if exit_code == 2 {
        bail!("MCP client rejected its arguments; stderr:\n{stderr}");
    }

    let document = serde_json::from_str(&stdout).with_context(|| {
        format!("MCP client (exit {exit_code}) printed no JSON document; stdout:\n{stdout}\nstderr:\n{stderr}")
    })?;
    Ok(ClientRun { exit_code, output: document })
}
