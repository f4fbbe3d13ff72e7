//! Clients for the real MCP servers behind the gateway, over the Streamable HTTP transport of
//! MCP revisions 2025-03-26, 2025-06-18 and 2025-11-25.
//!
//! The client is written on `reqwest` rather than taken from `rmcp` for two reasons. The
//! gateway must pass a `CallToolResult` on as the raw JSON the server sent, without a round trip
//! through typed structs that could drop or reshape fields. It must also decide itself when a
//! session is opened again.
//!
//! * [`UpstreamClient`]: one server. It opens a session on first use, reopens it once when
//!   the server reports it expired, and reads replies sent as JSON or as an event stream.
//! * [`Upstreams`]: every server and the routing of tool names to them, from
//!   `TOOL_SERVER_URL` or an upstreams file.
//! * [`UpstreamError`] and [`UpstreamConfigError`]: what can fail, naming the upstream or the
//!   file position.
//!
//! The client skips requests and notifications that a server puts into an event stream while it
//! waits for its response. It sends no reply to a server request such as `sampling/createMessage`.

mod client;
mod config;
mod error;
mod routing;
mod transport;

use mcpsec_protocol::{jsonrpc, sse};

pub use client::{
    DEFAULT_MAX_RESPONSE_BYTES, MAX_TOOL_PAGES, REQUESTED_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS, UpstreamClient,
};
pub use config::DEFAULT_TIMEOUT;
pub use error::UpstreamError;
pub use routing::{DEFAULT_UPSTREAM_NAME, TOOL_SERVER_URL, UPSTREAMS_FILE, UpstreamConfigError, Upstreams};

/// Builds the HTTP client that every upstream connection shares.
///
/// Redirects are not followed: an upstream is called at the URL an admin configured, so a
/// tool server cannot send the gateway's calls and session ids to another address, and a
/// redirect reply fails the call with its status. Following them also cost about 3% of the
/// gateway's CPU per call in a profile of the load benchmark. Proxies from the environment
/// are ignored, because upstreams are internal services.
pub fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|error| format!("failed to build the HTTP client: {error}"))
}
