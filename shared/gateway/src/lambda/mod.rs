//! The AWS Lambda side of the gateway: the state the HTTP functions build, the service that
//! runs a router under `lambda_http`, and the DynamoDB stream handler ([`stream`]).
//!
//! Each binary in `functions/` calls [`init_tracing`], builds its state with
//! [`http_state_from_env`] and hands its routes to [`run_http`], or runs [`stream::run`].
//!
//! # Environment
//!
//! The HTTP functions read the container's variables (see [`crate::config::Settings`]) with
//! two differences. `SESSION_SECRET` is required, because any instance must verify the MCP
//! session ids that another instance issued. `AUDIT_WRITES` defaults to `once`, so a warm tool
//! call makes one DynamoDB write. The stores are named by `KEYS_TABLE`, `SESSIONS_TABLE`,
//! `POLICY_BUCKET` and the optional `POLICY_KEY`; upstreams come from `TOOL_SERVER_URL` or
//! `UPSTREAMS_FILE`.
//!
//! # API Gateway stages
//!
//! Routes are matched on the path without the stage; see [`strip_stage`] for what
//! `lambda_http` does with stages and how the path is rebuilt.

mod stage;
pub mod stream;

use std::sync::Arc;

use tower::ServiceExt;
use tower::util::MapRequest;

pub use self::stage::strip_stage;
use crate::config::{ConfigError, Settings};
use crate::sessions::SessionIssuer;
use crate::state::{AppState, Options, Stores};
use crate::store::aws::setup::load_sdk_config;
use crate::store::aws::{AwsNames, AwsStores};
use crate::upstream::Upstreams;

/// The error a Lambda function returns from `main`.
pub use lambda_http::Error;

/// Minimum length of `SESSION_SECRET` in bytes: the output size of HMAC-SHA256, which the
/// secret keys. A shorter key weakens the session id tags.
pub const MIN_SESSION_SECRET_BYTES: usize = 32;

/// The service [`run_http`] runs: the router behind [`strip_stage`].
pub type HttpService = MapRequest<axum::Router, fn(lambda_http::Request) -> lambda_http::Request>;

/// Installs the global `tracing` subscriber: one JSON object per line on standard output,
/// which Lambda sends to CloudWatch Logs.
///
/// The level comes from `AWS_LAMBDA_LOG_LEVEL` (set by Lambda's logging configuration), else
/// from `LOG_LEVEL` (an `EnvFilter` directive such as `info` or `mcpsec_gateway=debug`), else
/// `info`. Lines carry no time stamp because CloudWatch Logs stamps each line.
pub fn init_tracing() {
    let level = ["AWS_LAMBDA_LOG_LEVEL", "LOG_LEVEL"]
        .into_iter()
        .find_map(|name| std::env::var(name).ok().filter(|value| !value.trim().is_empty()));
    let directive = match level.as_deref() {
        // Lambda's levels go up to FATAL, which tracing does not have.
        Some(level) if level.trim().eq_ignore_ascii_case("fatal") => "error",
        Some(level) => level,
        None => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_new(directive)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));

    let _ = tracing_subscriber::fmt().json().with_env_filter(filter).without_time().with_span_list(false).try_init();
}

/// Reads the settings of an HTTP function through `var`, which returns a variable's value or
/// `None`: the container's [`Settings`], with `SESSION_SECRET` required (at least
/// [`MIN_SESSION_SECRET_BYTES`] bytes) and `AUDIT_WRITES` defaulting to `once`.
pub fn settings_from_env(var: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
    let settings = Settings::from_env(|name| match name {
        "AUDIT_WRITES" => var(name).filter(|value| !value.trim().is_empty()).or_else(|| Some("once".to_owned())),
        _ => var(name),
    })?;

    let Some(secret) = settings.session_secret.as_deref() else {
        return Err(ConfigError {
            name: "SESSION_SECRET",
            reason: "missing; set it to the same random secret in every function, such as the output of `openssl rand -hex 32`, \
                     because each Lambda instance must verify the MCP session ids that the others issue"
                .to_owned(),
        });
    };
    if secret.len() < MIN_SESSION_SECRET_BYTES {
        return Err(ConfigError {
            name: "SESSION_SECRET",
            reason: format!(
                "too short ({} bytes); set at least {MIN_SESSION_SECRET_BYTES} random bytes, such as the output of `openssl rand -hex 32`",
                secret.len()
            ),
        });
    }
    Ok(settings)
}

/// Builds the state of an HTTP function from the process environment: the AWS stores,
/// the upstreams and the settings of [`settings_from_env`].
///
/// The AWS SDK reads its region, credentials and endpoint the usual way (`AWS_REGION`, the
/// credentials Lambda provides, `AWS_ENDPOINT_URL` for an emulator). Nothing is read from the
/// stores here; keys and the policy are read on the first call.
pub async fn http_state_from_env() -> Result<AppState, String> {
    let var = |name: &str| std::env::var(name).ok();
    let settings = settings_from_env(var).map_err(|error| error.to_string())?;
    let names = AwsNames::from_env(var).map_err(|error| error.to_string())?;
    let upstreams = Upstreams::from_env(var, crate::upstream::http_client()?).map_err(|error| error.to_string())?;
    let sdk_config = load_sdk_config().await;

    let stores = Arc::new(AwsStores::new(&sdk_config, names));
    let stores = Stores { keys: stores.clone(), policy: stores.clone(), audit: stores };
    let secret = settings.session_secret.as_deref().unwrap_or_default().as_bytes();
    let sessions = SessionIssuer::new(secret, settings.session_ttl);
    let options = Options {
        audit_tool_input: settings.audit_tool_input,
        max_body_bytes: settings.max_body_bytes,
        cache_ttl: settings.cache_ttl,
        audit_writes: settings.audit_writes,
    };
    Ok(AppState::new(stores, upstreams, settings.admin_key.as_deref(), sessions, options))
}

/// Builds the state that the stream function reads the policy and the stores through: the
/// AWS stores of [`AwsNames::from_env`], `CACHE_TTL`, and no upstreams or sessions, which
/// the stream function never uses.
pub async fn stream_state_from_env() -> Result<AppState, String> {
    let var = |name: &str| std::env::var(name).ok();
    let names = AwsNames::from_env(var).map_err(|error| error.to_string())?;
    let settings = Settings::from_env(var).map_err(|error| error.to_string())?;
    let sdk_config = load_sdk_config().await;

    let stores = Arc::new(AwsStores::new(&sdk_config, names));
    let stores = Stores { keys: stores.clone(), policy: stores.clone(), audit: stores };
    let unused_secret = uuid::Uuid::new_v4();
    let sessions = SessionIssuer::new(unused_secret.as_bytes(), settings.session_ttl);
    let options = Options {
        audit_tool_input: settings.audit_tool_input,
        max_body_bytes: settings.max_body_bytes,
        cache_ttl: settings.cache_ttl,
        audit_writes: settings.audit_writes,
    };
    Ok(AppState::new(stores, Upstreams::none(), None, sessions, options))
}

/// Wraps `router` into the service [`run_http`] runs, which matches routes on the path
/// without the API Gateway stage.
pub fn http_service(router: axum::Router) -> HttpService {
    router.map_request(strip_stage as fn(lambda_http::Request) -> lambda_http::Request)
}

/// Runs `router` under the Lambda runtime, one API Gateway event (REST API or HTTP API
/// payload) at a time, until the runtime stops the process.
pub async fn run_http(router: axum::Router) -> Result<(), Error> {
    lambda_http::run(http_service(router)).await
}
