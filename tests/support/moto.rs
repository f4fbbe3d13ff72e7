//! The AWS emulator `moto_server` (PyPI `moto[server]`, installed in `infra/.venv`), started on
//! a free loopback port, and the environment that points the gateway's AWS stores at it.

use std::process::Command;

use anyhow::{Context, Result, bail};

use super::process::{ManagedChild, Stream};
use super::{gateway_binary, installed_dependency, search_path};

const SERVER: &str = "infra/.venv/bin/moto_server";
const READY_PREFIX: &str = " * Running on ";

/// A running emulator. Dropping it kills the process.
pub struct Moto {
    endpoint: String,
    _process: ManagedChild,
}

impl Moto {
    /// Starts `moto_server` on `127.0.0.1` with a port it picks, and waits until it listens.
    pub fn start() -> Result<Self> {
        let server = installed_dependency(SERVER)?;
        let mut command = Command::new(server);
        command.args(["-H", "127.0.0.1", "-p", "0"]).env_clear().env("PATH", search_path());
        let (process, endpoint) =
            ManagedChild::spawn_until_ready("AWS emulator (moto_server)", command, Stream::Stderr, READY_PREFIX)?;
        let endpoint = endpoint.trim().to_owned();
        if !endpoint.starts_with("http://127.0.0.1:") {
            bail!("moto_server listens on `{endpoint}`, expected a 127.0.0.1 address");
        }
        Ok(Self { endpoint, _process: process })
    }

    /// The environment of a gateway that uses the AWS stores on this emulator, with tables
    /// and a bucket whose names end in `suffix`. Static credentials and a disabled metadata
    /// client keep the AWS SDK from looking anywhere but the emulator.
    pub fn gateway_env(&self, suffix: &str) -> Vec<(String, String)> {
        [
            ("GATEWAY_STORE", "aws".to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "test".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
            ("KEYS_TABLE", format!("keys-{suffix}")),
            ("SESSIONS_TABLE", format!("sessions-{suffix}")),
            ("POLICY_BUCKET", format!("policy-{suffix}")),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
    }

    /// Runs `mcpsec aws-init` with [`Moto::gateway_env`] and returns what it printed.
    pub fn aws_init(&self, suffix: &str) -> Result<String> {
        let output = Command::new(gateway_binary()?)
            .arg("aws-init")
            .env_clear()
            .envs(self.gateway_env(suffix))
            .output()
            .context("failed to run `mcpsec aws-init`")?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            bail!(
                "`mcpsec aws-init` failed with {}: {}{}",
                output.status,
                stdout,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(stdout)
    }
}
