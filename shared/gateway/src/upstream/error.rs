//! Errors of calls to an upstream MCP server.

use std::error::Error as _;
use std::time::Duration;

pub(crate) use mcpsec_protocol::excerpt;
use reqwest::StatusCode;

/// Maximum length of the body excerpt in [`UpstreamError::HttpStatus`], in characters.
pub(crate) const MAX_EXCERPT_CHARS: usize = 200;

/// A failed request to one upstream MCP server.
///
/// Every variant names the upstream by the name it was configured with. A tool result with
/// `isError: true` is not an error here: it is a successful reply that the caller passes on.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The reply did not arrive within the time limit.
    #[error(
        "upstream `{upstream}` did not reply within {}; check that the server is healthy or raise its timeout",
        humantime::format_duration(*after)
    )]
    Timeout {
        /// Name of the upstream.
        upstream: String,
        /// Time waited before giving up.
        after: Duration,
    },

    /// The connection to the server failed.
    #[error("upstream `{upstream}` is unreachable: {detail}; check its URL and that the server is running")]
    Unreachable {
        /// Name of the upstream.
        upstream: String,
        /// The transport error and its causes.
        detail: String,
    },

    /// The server replied with an HTTP status other than 2xx.
    #[error(
        "upstream `{upstream}` replied with HTTP status {status}{}{}",
        excerpt_suffix(body_excerpt),
        redirect_hint(status)
    )]
    HttpStatus {
        /// Name of the upstream.
        upstream: String,
        /// Status of the reply.
        status: StatusCode,
        /// Start of the reply body, with control characters escaped; empty when the body was.
        body_excerpt: String,
    },

    /// The reply broke the MCP Streamable HTTP transport or JSON-RPC: invalid JSON, no
    /// response to the request, an event stream that ended early, or a body over the size limit.
    #[error("upstream `{upstream}` sent an invalid reply: {detail}")]
    Protocol {
        /// Name of the upstream.
        upstream: String,
        /// The problem with the reply.
        detail: String,
    },

    /// The server returned a JSON-RPC error response to the request.
    #[error("upstream `{upstream}` returned JSON-RPC error {code}: {message}")]
    JsonRpc {
        /// Name of the upstream.
        upstream: String,
        /// JSON-RPC error code.
        code: i64,
        /// JSON-RPC error message as sent by the server, shortened to a bounded length.
        message: String,
    },
}

impl UpstreamError {
    /// Returns `true` when the request ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }

    /// Returns the name of the upstream that failed.
    pub fn upstream(&self) -> &str {
        match self {
            Self::Timeout { upstream, .. }
            | Self::Unreachable { upstream, .. }
            | Self::HttpStatus { upstream, .. }
            | Self::Protocol { upstream, .. }
            | Self::JsonRpc { upstream, .. } => upstream,
        }
    }
}

fn excerpt_suffix(excerpt: &str) -> String {
    if excerpt.is_empty() { String::new() } else { format!(": {excerpt}") }
}

/// Renders a transport error and its causes as one line, without the URL, which may carry
/// credentials.
pub(crate) fn transport_detail(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut detail = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    detail
}

/// Returns the advice for a redirect reply, which the gateway does not follow.
fn redirect_hint(status: &StatusCode) -> &'static str {
    if status.is_redirection() {
        "; redirects are not followed, so set the upstream's URL to the address it redirects to"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_message_omits_empty_body() {
        let error = UpstreamError::HttpStatus {
            upstream: "calendar".to_owned(),
            status: StatusCode::BAD_GATEWAY,
            body_excerpt: String::new(),
        };
        assert_eq!(error.to_string(), "upstream `calendar` replied with HTTP status 502 Bad Gateway");
    }

    #[test]
    fn redirect_message_says_it_is_not_followed() {
        let error = UpstreamError::HttpStatus {
            upstream: "calendar".to_owned(),
            status: StatusCode::PERMANENT_REDIRECT,
            body_excerpt: String::new(),
        };
        assert_eq!(
            error.to_string(),
            "upstream `calendar` replied with HTTP status 308 Permanent Redirect; redirects are not followed, so set the upstream's URL to the address it redirects to"
        );
    }

    #[test]
    fn timeout_message_names_limit() {
        let error = UpstreamError::Timeout { upstream: "search".to_owned(), after: Duration::from_secs(30) };
        assert!(error.is_timeout());
        assert_eq!(
            error.to_string(),
            "upstream `search` did not reply within 30s; check that the server is healthy or raise its timeout"
        );
    }
}
