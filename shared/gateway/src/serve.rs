//! `mcpsec serve`: the one-process gateway on the embedded store.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mcpsec_policy::{KeySet, Policy};
use time::OffsetDateTime;

use crate::config::{Settings, Source};
use crate::pipeline::outbox::{Outbox, Sinks};
use crate::sessions::SessionIssuer;
use crate::siem::{AlertWebhook, SiemForwarder, SiemSettings};
use crate::state::{AppState, Options, Stores};
use crate::store::aws::setup::load_sdk_config;
use crate::store::aws::{AwsNames, AwsStores};
use crate::store::sqlite::SqliteStore;
use crate::store::{KeyStore, PolicyStore};
use crate::upstream::{UpstreamClient, Upstreams};

/// Exit code when the gateway cannot start.
const EXIT_START_FAILED: u8 = 2;

/// How long a shutdown waits for the outbox consumers to hand over what is stored. What
/// they do not finish is handled after the next start.
const OUTBOX_GRACE: Duration = Duration::from_secs(10);

/// Options of `mcpsec serve`; everything else comes from the environment.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ServeArgs {
    /// Also start the demo MCP tool server (`calendar.*` and `search.*` over made-up data) on
    /// a loopback port and use it as the upstream. For trying the gateway out; never needed
    /// in production.
    #[arg(long)]
    pub demo_tools: bool,
}

/// Runs the gateway until SIGINT or SIGTERM and returns the process exit code.
pub fn run(args: ServeArgs) -> u8 {
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(error = %error, "failed to start the async runtime");
            return EXIT_START_FAILED;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => 0,
        Err(message) => {
            tracing::error!(error = %message, "gateway stopped");
            eprintln!("mcpsec: {message}");
            EXIT_START_FAILED
        }
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let settings = Settings::from_env(|name| std::env::var(name).ok()).map_err(|error| error.to_string())?;
    let (stores, sqlite) = open_stores(&settings).await?;
    import_keys(stores.keys.as_ref(), &settings.model_keys).await?;
    import_policy(stores.policy.as_ref(), &settings.policy).await?;
    let upstreams = build_upstreams(args.demo_tools).await?;

    let secret = session_secret(settings.session_secret.as_deref());
    let sessions = SessionIssuer::new(&secret, settings.session_ttl);
    if settings.admin_key.is_none() {
        tracing::warn!("ADMIN_KEY is not set; admin routes return 503 until it is set");
    }
    let state = AppState::new(stores, upstreams, settings.admin_key.as_deref(), sessions, options(&settings));
    state.keys().await?;
    state.policy().await?;
    let outbox = start_outbox(sqlite.as_ref(), &state)?;

    let address = SocketAddr::new(settings.host, settings.port);
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|error| format!("failed to listen on {address}: {error}"))?;
    let local = listener.local_addr().map_err(|error| error.to_string())?;
    tracing::info!(address = %local, data_dir = %settings.data_dir.display(), "gateway listening");
    println!("mcpsec: listening on http://{local}");

    axum::serve(listener, crate::http::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|error| error.to_string())?;
    if let Some(outbox) = outbox {
        tracing::info!("calls finished; handing the stored events to the SIEM and the detectors");
        outbox.shutdown(OUTBOX_GRACE).await;
    }
    tracing::info!("gateway stopped; closing the store");
    if let Some(store) = sqlite.and_then(|store| Arc::try_unwrap(store).ok()) {
        store.close().await.map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// Starts the outbox consumers of the embedded store: the SIEM forwarder (`SIEM_URL`), the
/// anomaly detectors and the alert webhook (`ALERT_WEBHOOK_URL`). With the AWS stores they
/// run in the `stream` function instead, fed by the table's stream.
fn start_outbox(sqlite: Option<&Arc<SqliteStore>>, state: &AppState) -> Result<Option<Outbox>, String> {
    let var = |name: &str| std::env::var(name).ok();
    let Some(store) = sqlite else {
        let ignored: Vec<&str> = ["SIEM_URL", "ALERT_WEBHOOK_URL"]
            .into_iter()
            .filter(|name| var(name).is_some_and(|value| !value.trim().is_empty()))
            .collect();
        if ignored.is_empty() {
            tracing::info!("AWS stores: SIEM forwarding and anomaly detection run in the stream function");
        } else {
            tracing::warn!(ignored = ?ignored, "AWS stores: this process does not forward events or post alerts; set these variables on the stream function instead");
        }
        return Ok(None);
    };
    let siem = match SiemSettings::from_env(var).map_err(|error| error.to_string())? {
        Some(settings) => {
            tracing::info!(siem = ?settings, "forwarding audit events to the SIEM");
            Some(SiemForwarder::new(settings)?)
        }
        None => {
            tracing::info!("SIEM_URL is not set; audit events stay in the store and audit.log");
            None
        }
    };
    let webhook = AlertWebhook::from_env(var).map_err(|error| error.to_string())?;
    Ok(Some(Outbox::start(Arc::clone(store), state.clone(), Sinks { siem, webhook })))
}

/// Opens the stores `GATEWAY_STORE` names: `sqlite` (the default) under `DATA_DIR`, or `aws`,
/// DynamoDB and S3 named by `KEYS_TABLE`, `SESSIONS_TABLE` and `POLICY_BUCKET`, so several
/// gateways share one state. The SQLite store is returned too, to be closed at shutdown.
async fn open_stores(settings: &Settings) -> Result<(Stores, Option<Arc<SqliteStore>>), String> {
    let kind = std::env::var("GATEWAY_STORE").unwrap_or_default();
    match kind.trim() {
        "" | "sqlite" => {
            let store = Arc::new(SqliteStore::open(&settings.data_dir).map_err(|error| error.to_string())?);
            let stores = Stores { keys: store.clone(), policy: store.clone(), audit: store.clone() };
            Ok((stores, Some(store)))
        }
        "aws" => {
            let names = AwsNames::from_env(|name| std::env::var(name).ok()).map_err(|error| error.to_string())?;
            tracing::info!(keys_table = %names.keys_table, sessions_table = %names.sessions_table, bucket = %names.policy_bucket, "using the AWS stores");
            let store = Arc::new(AwsStores::new(&load_sdk_config().await, names));
            Ok((Stores { keys: store.clone(), policy: store.clone(), audit: store }, None))
        }
        other => Err(format!("invalid environment variable `GATEWAY_STORE`: `{other}` is not `sqlite` or `aws`")),
    }
}

fn options(settings: &Settings) -> Options {
    Options {
        audit_tool_input: settings.audit_tool_input,
        max_body_bytes: settings.max_body_bytes,
        cache_ttl: settings.cache_ttl,
        audit_writes: settings.audit_writes,
    }
}

/// Imports the keys file into an empty store.
async fn import_keys(store: &dyn KeyStore, source: &Source) -> Result<(), String> {
    if store.is_empty().await.map_err(|error| error.to_string())? {
        let (origin, text) = read_source(source)?;
        let imported = KeySet::from_yaml(&origin, &text).map_err(|error| error.to_string())?;
        for entry in imported.entries() {
            store.put_model(entry).await.map_err(|error| error.to_string())?;
        }
        tracing::info!(models = imported.len(), source = %origin, "imported model keys into an empty store");
    }
    Ok(())
}

/// Imports the policy file when no version is stored.
async fn import_policy(store: &dyn PolicyStore, source: &Source) -> Result<(), String> {
    if store.current().await.map_err(|error| error.to_string())?.is_some() {
        return Ok(());
    }
    let (origin, text) = read_source(source)?;
    Policy::from_yaml(&origin, &text).map_err(|error| error.to_string())?;
    let comment = format!("imported from {origin}");
    let saved = store.save(&text, None, "import", Some(&comment)).await.map_err(|error| error.to_string())?;
    tracing::info!(version = %saved.version, source = %origin, "imported policy into an empty store");
    Ok(())
}

fn read_source(source: &Source) -> Result<(String, String), String> {
    match source {
        Source::File(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|error| format!("{}: cannot read file: {error}", path.display()))?;
            Ok((path.display().to_string(), text))
        }
        Source::Builtin(text) => Ok(("built-in example".to_owned(), (*text).to_owned())),
    }
}

async fn build_upstreams(demo_tools: bool) -> Result<Upstreams, String> {
    let http = crate::upstream::http_client()?;
    let configured =
        Upstreams::from_env(|name| std::env::var(name).ok(), http.clone()).map_err(|error| error.to_string())?;
    if !demo_tools || !configured.is_empty() {
        if configured.is_empty() {
            tracing::warn!("no upstream configured: set TOOL_SERVER_URL or UPSTREAMS_FILE, or pass --demo-tools");
        }
        return Ok(configured);
    }

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|error| format!("failed to start the demo tools: {error}"))?;
    let address = listener.local_addr().map_err(|error| error.to_string())?;
    tokio::spawn(async move {
        if let Err(error) = crate::demo::serve(listener).await {
            tracing::error!(error = %error, "demo tool server stopped");
        }
    });
    let url = reqwest::Url::parse(&format!("http://{address}{}", crate::demo::MCP_PATH))
        .map_err(|error| error.to_string())?;
    tracing::info!(url = %url, "demo tool server started");
    let client = UpstreamClient::new("demo".to_owned(), url, http, crate::upstream::DEFAULT_TIMEOUT);
    Ok(Upstreams::single(client))
}

/// Returns the secret that signs session ids: `SESSION_SECRET`, or else random bytes, in
/// which case sessions end when the process restarts.
fn session_secret(configured: Option<&str>) -> Vec<u8> {
    if let Some(secret) = configured {
        return secret.as_bytes().to_vec();
    }
    let mut secret = Vec::with_capacity(32);
    secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    secret.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    secret.extend_from_slice(&OffsetDateTime::now_utc().unix_timestamp_nanos().to_le_bytes());
    secret
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut terminate) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            let _ = interrupt.await;
            return;
        };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutdown signal received; finishing calls in flight");
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOG_LEVEL")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
