//! The `mcpsec` command line: serve the gateway, validate files, check a call.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use mcpsec_policy::{Decision, KeySet, LoadError, NoCalls, Policy, Request, authorize};
use time::OffsetDateTime;

/// Exit code for an allowed call or valid files.
const EXIT_OK: u8 = 0;
/// Exit code for a denied call.
const EXIT_DENIED: u8 = 1;
/// Exit code for invalid input: unreadable or invalid files, bad arguments.
const EXIT_INVALID: u8 = 2;

/// MCP-Sec Gateway: a security gateway for Model Context Protocol tool calls.
#[derive(Debug, Parser)]
#[command(name = "mcpsec", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the default). Settings come from the environment; see the README.
    Serve(crate::serve::ServeArgs),
    /// Validate policy or model key files and report every problem with its line and column.
    Validate(ValidateArgs),
    /// Decide one tool call against a keys file and a policy file, without sending it.
    Check(CheckArgs),
    /// Create the DynamoDB tables and the S3 bucket named by `KEYS_TABLE`, `SESSIONS_TABLE`
    /// and `POLICY_BUCKET`, with the settings of the SAM template. Safe to run twice.
    AwsInit,
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// Files to validate.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// What the files are; guessed from the top-level `models:` key when absent.
    #[arg(long, value_enum)]
    kind: Option<FileKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FileKind {
    /// `policies.yaml`.
    Policy,
    /// `model_keys.yaml`.
    Keys,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The model keys file.
    #[arg(long, env = "MODEL_KEYS_FILE")]
    keys: PathBuf,
    /// The policy file.
    #[arg(long, env = "POLICY_FILE")]
    policy: PathBuf,
    /// The calling model's id.
    #[arg(long)]
    model: String,
    /// The tool to call.
    #[arg(long)]
    tool: String,
    /// The tool input as a JSON object.
    #[arg(long, default_value = "{}")]
    input: String,
    /// The model's key; when given, it is authenticated too.
    #[arg(long)]
    key: Option<String>,
    /// The instant to decide at, RFC 3339; now when absent.
    #[arg(long)]
    at: Option<String>,
    /// Print the decision as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        None => crate::serve::run(crate::serve::ServeArgs::default()),
        Some(Command::Serve(args)) => crate::serve::run(args),
        Some(Command::Validate(args)) => validate(&args),
        Some(Command::Check(args)) => check(&args),
        Some(Command::AwsInit) => aws_init(),
    };
    ExitCode::from(code)
}

fn aws_init() -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mcpsec: failed to start the async runtime: {error}");
            return EXIT_INVALID;
        }
    };
    let result = runtime.block_on(async {
        let names =
            crate::cli_aws::AwsNames::from_env(|name| std::env::var(name).ok()).map_err(|error| error.to_string())?;
        let sdk_config = crate::cli_aws::load_sdk_config().await;
        crate::cli_aws::aws_init(&sdk_config, &names).await
    });
    match result {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            EXIT_OK
        }
        Err(message) => {
            eprintln!("mcpsec: aws-init failed: {message}");
            EXIT_INVALID
        }
    }
}

fn validate(args: &ValidateArgs) -> u8 {
    let mut code = EXIT_OK;
    for path in &args.files {
        match validate_file(path, args.kind) {
            Ok(summary) => println!("{}: valid {summary}", path.display()),
            Err(message) => {
                eprintln!("{message}");
                code = EXIT_INVALID;
            }
        }
    }
    code
}

fn validate_file(path: &Path, kind: Option<FileKind>) -> Result<String, String> {
    let text = read(path)?;
    let origin = path.display().to_string();
    let kind = kind.unwrap_or_else(|| guess_kind(&text));
    match kind {
        FileKind::Keys => {
            let keys = KeySet::from_yaml(&origin, &text).map_err(|error| error.to_string())?;
            Ok(format!("model keys file, {} models", keys.len()))
        }
        FileKind::Policy => {
            let policy = Policy::from_yaml(&origin, &text).map_err(|error| error.to_string())?;
            // The command line knows no upstream tools and no keys, so only the warnings about
            // the policy alone apply here; the admin API gives the others.
            for warning in policy.warnings(None, None) {
                eprintln!("{origin}: warning: {}", warning.message);
            }
            Ok(format!(
                "policy, {} rules, {} limits, default {}",
                policy.rule_count(),
                policy.limit_count(),
                policy.default_effect().as_str()
            ))
        }
    }
}

/// A keys file is a mapping with a top-level `models` key; anything else is read as a policy.
fn guess_kind(text: &str) -> FileKind {
    let keys = text.lines().any(|line| line.starts_with("models:"));
    if keys { FileKind::Keys } else { FileKind::Policy }
}

fn check(args: &CheckArgs) -> u8 {
    match decide(args) {
        Ok(decision) => {
            print_decision(args, &decision);
            if decision.is_allowed() { EXIT_OK } else { EXIT_DENIED }
        }
        Err(message) => {
            eprintln!("{message}");
            EXIT_INVALID
        }
    }
}

fn decide(args: &CheckArgs) -> Result<Decision, String> {
    let keys = load(&args.keys, KeySet::from_yaml)?;
    let policy = load(&args.policy, Policy::from_yaml)?;
    let input: serde_json::Value = serde_json::from_str(&args.input)
        .map_err(|error| format!("invalid --input: {error}; pass a JSON object such as '{{\"query\":\"rust\"}}'"))?;
    if !input.is_object() {
        return Err("invalid --input: expected a JSON object such as '{\"query\":\"rust\"}'".to_owned());
    }
    let now = match &args.at {
        Some(text) => {
            mcpsec_policy::keys::parse_timestamp(text).map_err(|message| format!("invalid --at: {message}"))?
        }
        None => OffsetDateTime::now_utc(),
    };

    let request =
        Request { model_id: &args.model, session_id: "cli", tool_name: &args.tool, input: &input, calls: &NoCalls };
    let Some(entry) = keys.get(&args.model) else {
        return Ok(unauthorized(format!("unknown model `{}`", args.model)));
    };
    let principal = match &args.key {
        Some(key) => match keys.authenticate(&args.model, Some(key), now) {
            Ok(principal) => principal,
            Err(error) => return Ok(unauthorized(error.to_string())),
        },
        None => {
            mcpsec_policy::Principal { entry, credential: entry.credentials.first().ok_or("the model has no key")? }
        }
    };
    Ok(authorize(&principal, &policy, &request, now))
}

fn unauthorized(reason: String) -> Decision {
    let mut decision = Decision::out_of_scope("");
    decision.verdict.reason = reason;
    decision
}

fn print_decision(args: &CheckArgs, decision: &Decision) {
    if args.json {
        println!("{}", serde_json::to_string_pretty(decision).unwrap_or_default());
        return;
    }
    println!("decision: {}", decision.verdict.effect.as_str());
    println!("reason:   {}", decision.verdict.reason);
    if let Some(rule) = &decision.verdict.rule {
        println!("rule:     {rule}");
    }
    for matched in &decision.matched {
        let shadow = if matched.shadow { " (shadow)" } else { "" };
        println!("matched:  {} {}{shadow}", matched.id, matched.action.as_str());
    }
    if let Some(shadow) = &decision.shadow {
        println!("shadow:   would {}: {}", shadow.effect.as_str(), shadow.reason);
    }
}

fn load<T>(path: &Path, parse: fn(&str, &str) -> Result<T, LoadError>) -> Result<T, String> {
    let text = read(path)?;
    parse(&path.display().to_string(), &text).map_err(|error| error.to_string())
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|error| format!("{}: cannot read file: {error}", path.display()))
}
