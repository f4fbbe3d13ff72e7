//! Helpers shared by the end-to-end tests: locating the binaries, starting the gateway and the
//! reference MCP server, and running the MCP Python client.

pub mod client;
pub mod fault_proxy;
pub mod gateway;
pub mod hostile_upstream;
pub mod moto;
pub mod observed;
pub mod process;
pub mod receiver;
pub mod reference;

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

pub use client::{key_header, run_mcp_client};
pub use gateway::{ADMIN_KEY, Gateway, GatewayOptions};
pub use reference::ReferenceServer;

/// Model `full`: every tool is in its scope.
pub const FULL_MODEL: &str = "full";
/// The key of [`FULL_MODEL`].
pub const FULL_KEY: &str = "e2e-key-full";
/// Model `narrow`: only `echo` and `get-sum` are in its scope.
pub const NARROW_MODEL: &str = "narrow";
/// The key of [`NARROW_MODEL`].
pub const NARROW_KEY: &str = "e2e-key-narrow";

/// Model keys file for the tests against the reference server.
pub const TEST_KEYS: &str = r#"models:
  full:
    key: "e2e-key-full"
    tools: ["*"]
  narrow:
    key: "e2e-key-narrow"
    tools: ["echo", "get-sum"]
"#;

/// Id of the deny rule in [`TEST_POLICY`].
pub const DENY_RULE: &str = "no-get-env";
/// Tool that [`DENY_RULE`] denies for every model.
pub const DENIED_TOOL: &str = "get-env";
/// Reason of [`DENY_RULE`], as the gateway returns it.
pub const DENY_REASON: &str = "get-env returns the server environment, which may contain secrets";

/// Policy for the tests against the reference server: allow by default, deny `get-env`.
pub const TEST_POLICY: &str = r#"version: 1
default: allow
rules:
  - id: no-get-env
    action: deny
    tools: ["get-env"]
    reason: get-env returns the server environment, which may contain secrets
"#;

/// Returns the repository root, one level above this package.
pub fn repo_root() -> Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    match manifest_dir.parent() {
        Some(root) => Ok(root.to_path_buf()),
        None => bail!("package folder `{}` has no parent folder", manifest_dir.display()),
    }
}

/// Locates the `mcpsec` binary: `MCPSEC_BIN`, or else `debug/mcpsec` in the Cargo target folder
/// (`CARGO_TARGET_DIR`, relative paths taken from the repository root, or `target`).
pub fn gateway_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("MCPSEC_BIN") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!(
                "MCPSEC_BIN is `{}`, which is not a file; unset it or point it at a built `mcpsec` binary",
                path.display()
            );
        }
        return Ok(path);
    }

    let root = repo_root()?;
    let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    let path = target_dir.join("debug").join("mcpsec");
    if !path.is_file() {
        bail!("gateway binary not found at `{}`; run `cargo build -p mcpsec` first, or set MCPSEC_BIN", path.display());
    }
    Ok(path)
}

/// Returns `relative` below the repository root if it exists, or else an error that names
/// the install script of the test dependencies.
pub fn installed_dependency(relative: &str) -> Result<PathBuf> {
    let path = repo_root()?.join(relative);
    if !path.exists() {
        bail!(
            "test dependency `{}` is missing; run `bash infra/install-test-deps.sh` from the repository root",
            path.display()
        );
    }
    Ok(path)
}

/// Returns the `PATH` of the test process, for children whose environment is cleared.
pub fn search_path() -> std::ffi::OsString {
    std::env::var_os("PATH").unwrap_or_default()
}
