//! A demo MCP tool server over made-up, deterministic data, so that a new user has tools to
//! call through the gateway.
//!
//! It serves five tools at `/mcp` over the Streamable HTTP transport, built with `rmcp`, the
//! official MCP Rust SDK:
//!
//! | tool | arguments | returns |
//! | --- | --- | --- |
//! | `calendar.create_event` | `title`, `start`, `end` (RFC 3339), `attendees` | the event with its id |
//! | `calendar.list_events` | optional `day` (`YYYY-MM-DD`) | events by start time |
//! | `calendar.delete_event` | `id` | the deleted event |
//! | `search.web` | `query`, optional `limit` (1 to 10, default 5) | matching fake pages |
//! | `search.docs` | `query` | matching fake documentation |
//!
//! The calendar starts with the same three events every time and is shared by every session
//! of one [`router`]; it lives in memory only. Results carry `structuredContent` and the same
//! JSON as text. Invalid arguments give a result with `isError: true` and a message that names
//! the invalid value and what to change.
//!
//! Sessions are stateful: `initialize` returns an `Mcp-Session-Id`, and replies to requests
//! are event streams, as `rmcp` sends them by default.

mod calendar;
mod search;
mod server;

use std::sync::Arc;

use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

pub use calendar::{Calendar, CreateEvent, DeleteEvent, Event, EventList, ListEvents};
pub use search::{DocMatch, DocsResults, DocsSearch, WebResult, WebResults, WebSearch};

use server::DemoServer;

/// Path at which the demo serves MCP.
pub const MCP_PATH: &str = "/mcp";

/// Builds the demo server's routes, accepting only requests whose `Host` is a loopback name
/// (`localhost`, `127.0.0.1` or `::1`, any port), which protects against DNS rebinding.
pub fn router() -> axum::Router {
    router_with_config(StreamableHttpServerConfig::default())
}

/// Builds the demo server's routes, accepting requests whose `Host` is one of `hosts`, given
/// as a host name or `host:port`. Use it when clients reach the demo under another name, for
/// example a container's service name.
pub fn router_with_allowed_hosts(hosts: impl IntoIterator<Item = impl Into<String>>) -> axum::Router {
    router_with_config(StreamableHttpServerConfig::default().with_allowed_hosts(hosts))
}

fn router_with_config(config: StreamableHttpServerConfig) -> axum::Router {
    let calendar = Calendar::new();
    let service = StreamableHttpService::new(
        move || Ok(DemoServer::new(calendar.clone())),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    axum::Router::new().nest_service(MCP_PATH, service)
}

/// Serves [`router`] on `listener` until the listener fails.
pub async fn serve(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router()).await
}
