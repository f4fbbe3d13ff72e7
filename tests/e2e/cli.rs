//! `mcpsec validate` and `mcpsec check` on the shipped examples and on a broken policy.

use std::process::{Command, Output};

use anyhow::{Context, Result};

use crate::support::{gateway_binary, repo_root};

const EXAMPLE_KEYS: &str = "examples/model_keys.yaml";
const EXAMPLE_POLICY: &str = "examples/policies.yaml";

/// Runs `mcpsec` with `args` in the repository root, with an empty environment so that
/// `MODEL_KEYS_FILE` or `POLICY_FILE` of the test process cannot fill in options.
fn mcpsec(args: &[&str]) -> Result<Output> {
    let binary = gateway_binary()?;
    Command::new(&binary)
        .args(args)
        .env_clear()
        .current_dir(repo_root()?)
        .output()
        .with_context(|| format!("failed to run `{}`", binary.display()))
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn validate_accepts_shipped_examples() -> Result<()> {
    let output = mcpsec(&["validate", EXAMPLE_POLICY, EXAMPLE_KEYS])?;
    assert_eq!(output.status.code(), Some(0), "validate exits 0 on the examples: {}", describe(&output));

    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("{EXAMPLE_POLICY}: valid")),
        "validate reports the policy valid: {}",
        describe(&output)
    );
    assert!(
        stdout.contains(&format!("{EXAMPLE_KEYS}: valid")),
        "validate reports the keys file valid: {}",
        describe(&output)
    );
    Ok(())
}

#[test]
fn validate_reports_policy_error_position() -> Result<()> {
    let folder = tempfile::tempdir()?;
    let policy = folder.path().join("broken.yaml");
    let text = "version: 1\ndefault: allow\nrules:\n  - id: r1\n    action: maybe\n    tools: [\"echo\"]\n    reason: never valid\n";
    std::fs::write(&policy, text)?;
    let policy = policy.to_string_lossy().into_owned();

    let output = mcpsec(&["validate", &policy])?;
    assert_eq!(output.status.code(), Some(2), "validate exits 2 on a broken policy: {}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let position = format!("{policy}:5:13:");
    assert!(
        stderr.contains(&position),
        "validate names `{position}`, the file, line and column of `maybe`: {}",
        describe(&output)
    );
    assert!(stderr.contains("maybe"), "validate quotes the invalid value: {}", describe(&output));
    Ok(())
}

#[test]
fn validate_warns_of_deny_only_policy() -> Result<()> {
    let folder = tempfile::tempdir()?;
    let policy = folder.path().join("deny-only.yaml");
    let text = "version: 1\ndefault: deny\nrules:\n  - id: no-env\n    action: deny\n    tools: [\"get-env\"]\n    reason: secrets\n";
    std::fs::write(&policy, text)?;
    let policy = policy.to_string_lossy().into_owned();

    let output = mcpsec(&["validate", &policy])?;
    assert_eq!(output.status.code(), Some(0), "a deny-only policy is valid: {}", describe(&output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{policy}: warning: ")),
        "validate prints a warning naming the file: {}",
        describe(&output)
    );
    assert!(stderr.contains("every tool call is denied"), "the warning says what happens: {}", describe(&output));
    Ok(())
}

#[test]
fn check_denies_calendar_delete_with_rule_id() -> Result<()> {
    let args = [
        "check",
        "--keys",
        EXAMPLE_KEYS,
        "--policy",
        EXAMPLE_POLICY,
        "--model",
        "gpt-4o",
        "--tool",
        "calendar.delete_event",
        "--input",
        r#"{"id": "evt-1"}"#,
    ];
    let output = mcpsec(&args)?;
    assert_eq!(output.status.code(), Some(1), "check exits 1 on a denied call: {}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("no-calendar-deletes"), "check prints the id of the denying rule: {}", describe(&output));
    Ok(())
}

#[test]
fn check_allows_calendar_create() -> Result<()> {
    let args = [
        "check",
        "--keys",
        EXAMPLE_KEYS,
        "--policy",
        EXAMPLE_POLICY,
        "--model",
        "gpt-4o",
        "--tool",
        "calendar.create_event",
        "--key",
        "modelkey-abc123",
    ];
    let output = mcpsec(&args)?;
    assert_eq!(output.status.code(), Some(0), "check exits 0 on an allowed call: {}", describe(&output));
    Ok(())
}
