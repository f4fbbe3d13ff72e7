//! The reference MCP server `@modelcontextprotocol/server-everything`, started through
//! `infra/test-deps/serve-everything.mjs` on a free loopback port.

use std::process::Command;

use anyhow::{Result, bail};

use super::process::{ManagedChild, Stream};
use super::{installed_dependency, search_path};

const SCRIPT: &str = "infra/test-deps/serve-everything.mjs";
const PACKAGE_ENTRY: &str = "infra/test-deps/node_modules/@modelcontextprotocol/server-everything/dist/index.js";
const READY_PREFIX: &str = "serve-everything: listening on ";

/// A running reference server. Dropping it kills the `node` process.
pub struct ReferenceServer {
    url: String,
    _process: ManagedChild,
}

impl ReferenceServer {
    /// Starts the server on `127.0.0.1` with a free port and waits until it listens.
    ///
    /// The environment is cleared except for `PATH`, because the server's `get-env` tool
    /// returns its whole environment.
    pub fn start() -> Result<Self> {
        let script = installed_dependency(SCRIPT)?;
        installed_dependency(PACKAGE_ENTRY)?;

        let mut command = Command::new("node");
        command.arg(&script).env_clear().env("PATH", search_path()).env("PORT", "0").env("HOST", "127.0.0.1");
        if let Some(folder) = script.parent() {
            command.current_dir(folder);
        }
        let (process, url) =
            ManagedChild::spawn_until_ready("reference MCP server (node)", command, Stream::Stderr, READY_PREFIX)?;

        if !url.starts_with("http://127.0.0.1:") {
            bail!("reference server listens on `{url}`, expected a 127.0.0.1 address");
        }
        Ok(Self { url, _process: process })
    }

    /// Returns the MCP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> &str {
        &self.url
    }
}
