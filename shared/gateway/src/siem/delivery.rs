//! One HTTP POST with retries, backoff and an optional signature, shared by the SIEM forwarder
//! and the alert webhook.

use std::error::Error as _;
use std::time::Duration;

use hmac::{Hmac, Mac};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER, USER_AGENT};
use reqwest::{StatusCode, Url};
use sha2::Sha256;
use time::OffsetDateTime;

/// Header with the Unix time in seconds that the signature covers.
pub const TIMESTAMP_HEADER: &str = "x-mcpsec-timestamp";
/// Header with `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`.
pub const SIGNATURE_HEADER: &str = "x-mcpsec-signature";
/// Header that is the same on every attempt of one request, so that a receiver can drop a
/// request it already accepted.
pub const BATCH_ID_HEADER: &str = "x-mcpsec-batch-id";

/// First backoff ceiling. Attempt `n` waits a random time up to `BACKOFF_BASE * 2^(n-1)`.
const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Ceiling of every wait, including one that `Retry-After` requests.
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Characters of a response body kept in an error message.
const EXCERPT_CHARS: usize = 200;

/// The reason a POST was not delivered.
#[derive(Debug)]
pub(super) enum DeliveryError {
    /// The receiver returned 413 Payload Too Large.
    TooLarge,
    /// Every attempt failed, or one failed permanently.
    Failed(String),
}

/// The outcome of one attempt.
enum Attempt {
    Delivered,
    TooLarge,
    /// A failure that another attempt will not fix: a 4xx other than 408, 413 and 429, or a
    /// redirect, which is not followed so that the token never goes to another URL.
    Permanent(Failure),
    /// A connection error, a timeout, 408, 429 or 5xx, with the wait that `Retry-After` requested.
    Retryable {
        failure: Failure,
        retry_after: Option<Duration>,
    },
}

/// A failed attempt: the HTTP status, if the receiver replied, and a one-line description.
struct Failure {
    status: Option<u16>,
    reason: String,
}

/// An HTTP client bound to one URL.
#[derive(Debug, Clone)]
pub(super) struct Delivery {
    /// `siem` or `alert_webhook`, for logs.
    sink: &'static str,
    client: reqwest::Client,
    url: Url,
    /// The URL without credentials, for logs.
    target: String,
    headers: HeaderMap,
    signing_key: Option<Vec<u8>>,
    max_attempts: u32,
}

impl Delivery {
    /// Creates a client for the `sink` and `target` (the URL without credentials) named in logs
    /// and errors, with `timeout` on each request, `max_attempts` attempts per POST, and
    /// `Content-Type`, `User-Agent` and `Authorization` headers on every request.
    #[expect(clippy::too_many_arguments, reason = "each argument is one setting of the client")]
    pub(super) fn new(
        sink: &'static str,
        target: String,
        url: Url,
        timeout: Duration,
        max_attempts: u32,
        content_type: &'static str,
        authorization: Option<HeaderValue>,
        hmac_secret: Option<&str>,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| format!("cannot build the HTTP client: {}", transport_detail(&error, &target)))?;

        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("mcpsec-gateway/", env!("CARGO_PKG_VERSION"))));
        if let Some(authorization) = authorization {
            headers.insert(AUTHORIZATION, authorization);
        }

        Ok(Self {
            sink,
            client,
            target,
            url,
            headers,
            signing_key: hmac_secret.map(|secret| secret.as_bytes().to_vec()),
            max_attempts: max_attempts.max(1),
        })
    }

    /// Posts `body`, retrying as [`Attempt`] describes with full-jitter exponential backoff.
    ///
    /// `batch_id` goes into `X-Mcpsec-Batch-Id` on every attempt. `events` is only logged.
    pub(super) async fn post(&self, body: &[u8], batch_id: Option<&str>, events: usize) -> Result<(), DeliveryError> {
        let mut last_reason = String::new();
        for attempt in 1..=self.max_attempts {
            let (failure, retry_after) = match self.attempt(body, batch_id).await {
                Attempt::Delivered => return Ok(()),
                Attempt::TooLarge => {
                    let failure = Failure { status: Some(413), reason: "HTTP 413 Payload Too Large".to_owned() };
                    self.log_failure(attempt, batch_id, events, &failure);
                    return Err(DeliveryError::TooLarge);
                }
                Attempt::Permanent(failure) => {
                    self.log_failure(attempt, batch_id, events, &failure);
                    return Err(DeliveryError::Failed(failure.reason));
                }
                Attempt::Retryable { failure, retry_after } => (failure, retry_after),
            };

            self.log_failure(attempt, batch_id, events, &failure);
            last_reason = failure.reason;
            if attempt < self.max_attempts {
                tokio::time::sleep(retry_after.unwrap_or_else(|| backoff(attempt))).await;
            }
        }
        Err(DeliveryError::Failed(format!("gave up after {} attempts: {last_reason}", self.max_attempts)))
    }

    fn log_failure(&self, attempt: u32, batch_id: Option<&str>, events: usize, failure: &Failure) {
        tracing::warn!(
            sink = self.sink,
            target = %self.target,
            attempt,
            max_attempts = self.max_attempts,
            batch.id = batch_id,
            batch.events = events,
            http.status = failure.status,
            error = %failure.reason,
            "delivery attempt failed",
        );
    }

    async fn attempt(&self, body: &[u8], batch_id: Option<&str>) -> Attempt {
        let mut request = self.client.post(self.url.clone()).headers(self.headers.clone()).body(body.to_vec());
        if let Some(batch_id) = batch_id {
            request = request.header(HeaderName::from_static(BATCH_ID_HEADER), batch_id);
        }
        if let Some(key) = &self.signing_key {
            let timestamp = OffsetDateTime::now_utc().unix_timestamp().to_string();
            request = request
                .header(HeaderName::from_static(TIMESTAMP_HEADER), timestamp.as_str())
                .header(HeaderName::from_static(SIGNATURE_HEADER), signature(key, &timestamp, body));
        }

        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                let failure = Failure { status: None, reason: transport_detail(&error, &self.target) };
                return if error.is_builder() {
                    Attempt::Permanent(failure)
                } else {
                    Attempt::Retryable { failure, retry_after: None }
                };
            }
        };
        classify(response).await
    }
}

async fn classify(response: reqwest::Response) -> Attempt {
    let status = response.status();
    if status.is_success() {
        return Attempt::Delivered;
    }
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return Attempt::TooLarge;
    }

    let retry_after = retry_after(response.headers());
    let retryable =
        status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
    let mut failure = Failure { status: Some(status.as_u16()), reason: status_reason(status, excerpt(response).await) };
    if retryable {
        Attempt::Retryable { failure, retry_after }
    } else {
        if status.is_redirection() {
            failure.reason.push_str("; redirects are not followed, so set the final URL");
        }
        Attempt::Permanent(failure)
    }
}

fn status_reason(status: StatusCode, excerpt: String) -> String {
    if excerpt.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {excerpt}") }
}

/// Returns the `Retry-After` delay in seconds, capped at [`BACKOFF_CAP`]. The HTTP-date form is
/// ignored, and the backoff applies instead.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let seconds: u64 = headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse().ok()?;
    Some(Duration::from_secs(seconds).min(BACKOFF_CAP))
}

/// Returns a random wait up to `BACKOFF_BASE * 2^(attempt-1)`, capped at [`BACKOFF_CAP`]
/// ("full jitter").
fn backoff(attempt: u32) -> Duration {
    let factor = 1_u32.checked_shl(attempt.saturating_sub(1)).unwrap_or(u32::MAX);
    let ceiling = BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_CAP);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=millis))
}

/// Returns `sha256=<hex>` of HMAC-SHA256 with `key` over `<timestamp>.<body>`.
pub(super) fn signature(key: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mac = <Hmac<Sha256> as Mac>::new_from_slice(key).map(|mut mac| {
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    });
    // HMAC (RFC 2104) takes a key of any length, and the hmac crate returns no error for one.
    format!("sha256={}", mac.unwrap_or_default())
}

/// Reads at most 1 KiB of the response body and returns its first characters on one line.
async fn excerpt(mut response: reqwest::Response) -> String {
    let mut bytes = Vec::new();
    while bytes.len() < 1024 {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }

    let text = String::from_utf8_lossy(&bytes);
    let mut line = String::new();
    for character in text.trim().chars().take(EXCERPT_CHARS) {
        if character.is_control() {
            line.extend(character.escape_default());
        } else {
            line.push(character);
        }
    }
    line
}

/// Renders a transport error and its causes as one line, with the URL replaced by `target`,
/// because the URL may carry credentials.
fn transport_detail(error: &reqwest::Error, target: &str) -> String {
    let mut detail = error.to_string();
    if let Some(url) = error.url() {
        detail = detail.replace(url.as_str(), target);
    }
    let mut source = error.source();
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    detail
}
