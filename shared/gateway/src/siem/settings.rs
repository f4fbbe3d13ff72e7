//! Settings of the SIEM sink and the alert webhook, read from the environment.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::HeaderValue;

use crate::config::ConfigError;

/// Default maximum number of events in one request (`SIEM_BATCH_EVENTS`).
pub const DEFAULT_BATCH_EVENTS: usize = 100;
/// Largest accepted `SIEM_BATCH_EVENTS`.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// Default maximum size of one request body in bytes (`SIEM_BATCH_BYTES`).
pub const DEFAULT_BATCH_BYTES: usize = 1_048_576;
/// Smallest accepted `SIEM_BATCH_BYTES`: room for the reduced form of any event.
pub const MIN_BATCH_BYTES: usize = 4096;
/// Default time limit of one HTTP request (`SIEM_TIMEOUT`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default number of attempts per request (`SIEM_MAX_ATTEMPTS`).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;
/// Default size in bytes above which `truncate` replaces a tool input (`SIEM_TOOL_INPUT_BYTES`).
pub const DEFAULT_TOOL_INPUT_BYTES: usize = 2048;
/// Default Splunk sourcetype (`SIEM_SPLUNK_SOURCETYPE`).
pub const DEFAULT_SPLUNK_SOURCETYPE: &str = "mcpsec:audit";

/// Example of `SIEM_URL` in error messages.
pub(super) const SIEM_URL_EXAMPLE: &str = "https://splunk.example:8088/services/collector/event";

/// The body format of SIEM requests (`SIEM_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiemFormat {
    /// One JSON object per line (`application/x-ndjson`).
    Jsonl,
    /// Splunk HTTP Event Collector events, concatenated (`application/json`).
    Splunk,
    /// A JSON array of OCSF 1.1.0 objects (`application/json`).
    Ocsf,
}

impl SiemFormat {
    /// Returns the `Content-Type` of a request body in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Jsonl => "application/x-ndjson",
            Self::Splunk | Self::Ocsf => "application/json",
        }
    }
}

impl FromStr for SiemFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "jsonl" => Ok(Self::Jsonl),
            "splunk" => Ok(Self::Splunk),
            "ocsf" => Ok(Self::Ocsf),
            other => Err(format!("`{other}` is not `jsonl`, `splunk` or `ocsf`")),
        }
    }
}

/// Handling of the tool input of an event before it leaves the gateway (`SIEM_TOOL_INPUT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolInput {
    /// Forward the input unchanged.
    Keep,
    /// Replace an input whose JSON text is longer than the cap with its size, SHA-256 and a
    /// preview of the first bytes.
    Truncate,
    /// Remove the input.
    Drop,
}

impl FromStr for ToolInput {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim() {
            "keep" => Ok(Self::Keep),
            "truncate" => Ok(Self::Truncate),
            "drop" => Ok(Self::Drop),
            other => Err(format!("`{other}` is not `keep`, `truncate` or `drop`")),
        }
    }
}

/// Everything the SIEM forwarder needs. Build it with [`SiemSettings::new`] and change the
/// public fields, or read it with [`SiemSettings::from_env`].
///
/// The `Debug` output never contains the token, the HMAC secret, or the user and query parts
/// of the URL.
#[derive(Clone)]
pub struct SiemSettings {
    /// Endpoint that receives the requests (`SIEM_URL`), http or https.
    pub url: Url,
    /// The body format (`SIEM_FORMAT`).
    pub format: SiemFormat,
    /// Token sent as `Authorization: Splunk <token>` for Splunk and `Authorization: Bearer
    /// <token>` otherwise (`SIEM_TOKEN`).
    pub token: Option<String>,
    /// Secret of the request signature (`SIEM_HMAC_SECRET`); requests are unsigned without it.
    pub hmac_secret: Option<String>,
    /// Maximum number of events in one request (`SIEM_BATCH_EVENTS`), 1 to 10000.
    pub batch_events: usize,
    /// Maximum size of one request body in bytes (`SIEM_BATCH_BYTES`), at least 4096.
    pub batch_bytes: usize,
    /// Time limit of one HTTP request, connection included (`SIEM_TIMEOUT`).
    pub timeout: Duration,
    /// Attempts per request before giving up, at least 1 (`SIEM_MAX_ATTEMPTS`).
    pub max_attempts: u32,
    /// Handling of tool inputs (`SIEM_TOOL_INPUT`).
    pub tool_input: ToolInput,
    /// Size in bytes of JSON text above which `truncate` replaces an input, and the length of
    /// its preview (`SIEM_TOOL_INPUT_BYTES`).
    pub tool_input_bytes: usize,
    /// Names of tool-input fields whose values are replaced by `[redacted]` at any depth before
    /// forwarding (`SIEM_REDACT_FIELDS`): fnmatch patterns matched against the lowercase field
    /// name. `none` keeps every value.
    pub redact_fields: Vec<String>,
    /// Splunk index of every event (`SIEM_SPLUNK_INDEX`); the token's default index when unset.
    pub splunk_index: Option<String>,
    /// Splunk sourcetype of every event (`SIEM_SPLUNK_SOURCETYPE`).
    pub splunk_sourcetype: String,
}

impl SiemSettings {
    /// Creates settings for `url` and `format` with every other field at its default.
    pub fn new(url: Url, format: SiemFormat) -> Self {
        Self {
            url,
            format,
            token: None,
            hmac_secret: None,
            batch_events: DEFAULT_BATCH_EVENTS,
            batch_bytes: DEFAULT_BATCH_BYTES,
            timeout: DEFAULT_TIMEOUT,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            tool_input: ToolInput::Truncate,
            tool_input_bytes: DEFAULT_TOOL_INPUT_BYTES,
            redact_fields: DEFAULT_REDACT_FIELDS.iter().map(|field| (*field).to_owned()).collect(),
            splunk_index: None,
            splunk_sourcetype: DEFAULT_SPLUNK_SOURCETYPE.to_owned(),
        }
    }

    /// Reads the settings through `var`, which returns a variable's value or `None`. Blank
    /// values count as unset.
    ///
    /// Returns `None` when `SIEM_URL` is unset, which turns the sink off.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let var = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let Some(url) = var("SIEM_URL") else { return Ok(None) };

        let settings = Self {
            url: parse_url("SIEM_URL", &url, SIEM_URL_EXAMPLE)?,
            format: parse_with(&var, "SIEM_FORMAT", SiemFormat::Jsonl)?,
            token: var("SIEM_TOKEN").map(|token| token.trim().to_owned()),
            hmac_secret: var("SIEM_HMAC_SECRET"),
            batch_events: number(&var, "SIEM_BATCH_EVENTS", DEFAULT_BATCH_EVENTS, "a whole number")?,
            batch_bytes: number(&var, "SIEM_BATCH_BYTES", DEFAULT_BATCH_BYTES, "a size in bytes")?,
            timeout: read_timeout(&var)?,
            max_attempts: read_max_attempts(&var)?,
            tool_input: parse_with(&var, "SIEM_TOOL_INPUT", ToolInput::Truncate)?,
            tool_input_bytes: number(&var, "SIEM_TOOL_INPUT_BYTES", DEFAULT_TOOL_INPUT_BYTES, "a size in bytes")?,
            redact_fields: read_redact_fields(var("SIEM_REDACT_FIELDS"))?,
            splunk_index: var("SIEM_SPLUNK_INDEX").map(|index| index.trim().to_owned()),
            splunk_sourcetype: var("SIEM_SPLUNK_SOURCETYPE")
                .map_or_else(|| DEFAULT_SPLUNK_SOURCETYPE.to_owned(), |sourcetype| sourcetype.trim().to_owned()),
        };
        settings.check()?;
        Ok(Some(settings))
    }

    /// Checks the limits and the token that [`SiemSettings::from_env`] checks, for settings
    /// built in code. The error names the variable that sets the field.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        check_scheme("SIEM_URL", &self.url, SIEM_URL_EXAMPLE)?;
        if !(1..=MAX_BATCH_EVENTS).contains(&self.batch_events) {
            let reason = format!("`{}` is outside 1 to {MAX_BATCH_EVENTS}", self.batch_events);
            return Err(ConfigError { name: "SIEM_BATCH_EVENTS", reason });
        }
        if self.batch_bytes < MIN_BATCH_BYTES {
            let reason = format!("`{}` is below the minimum of {MIN_BATCH_BYTES} bytes", self.batch_bytes);
            return Err(ConfigError { name: "SIEM_BATCH_BYTES", reason });
        }
        check_timeout(self.timeout)?;
        check_max_attempts(self.max_attempts)?;
        self.check_plain_http()?;
        self.check_token()
    }

    /// Rejects a token or signing secret sent over plain HTTP to a host other than loopback,
    /// where anyone on the path could read the token or the signed events.
    fn check_plain_http(&self) -> Result<(), ConfigError> {
        let host = self.url.host_str().unwrap_or_default();
        let address = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
        let loopback = host.eq_ignore_ascii_case("localhost") || address.is_ok_and(|address| address.is_loopback());
        if self.url.scheme() == "http" && !loopback && (self.token.is_some() || self.hmac_secret.is_some()) {
            return Err(ConfigError {
                name: "SIEM_URL",
                reason: "is `http://` to a host other than loopback while `SIEM_TOKEN` or `SIEM_HMAC_SECRET` is set; use `https://` so the token and events are not sent in the clear".to_owned(),
            });
        }
        Ok(())
    }

    fn check_token(&self) -> Result<(), ConfigError> {
        match &self.token {
            None if self.format == SiemFormat::Splunk => Err(ConfigError {
                name: "SIEM_TOKEN",
                reason: "missing: `SIEM_FORMAT=splunk` needs the HTTP Event Collector token".to_owned(),
            }),
            Some(_) if self.authorization().is_err() => Err(ConfigError {
                name: "SIEM_TOKEN",
                reason: "contains characters that an HTTP header cannot carry".to_owned(),
            }),
            _ => Ok(()),
        }
    }

    /// Returns the `Authorization` header value, if a token is set.
    pub(super) fn authorization(&self) -> Result<Option<HeaderValue>, reqwest::header::InvalidHeaderValue> {
        let Some(token) = &self.token else { return Ok(None) };
        let scheme = if self.format == SiemFormat::Splunk { "Splunk" } else { "Bearer" };
        let mut value = HeaderValue::from_str(&format!("{scheme} {token}"))?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

impl fmt::Debug for SiemSettings {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        formatter
            .debug_struct("SiemSettings")
            .field("url", &redact_url(&self.url))
            .field("format", &self.format)
            .field("token", &redacted(&self.token))
            .field("hmac_secret", &redacted(&self.hmac_secret))
            .field("batch_events", &self.batch_events)
            .field("batch_bytes", &self.batch_bytes)
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("tool_input", &self.tool_input)
            .field("tool_input_bytes", &self.tool_input_bytes)
            .field("redact_fields", &format_args!("{} patterns", self.redact_fields.len()))
            .field("splunk_index", &self.splunk_index)
            .field("splunk_sourcetype", &self.splunk_sourcetype)
            .finish()
    }
}

/// Returns the scheme, host, port and path of `url`, without the user, password, query and
/// fragment, which may carry credentials.
pub(super) fn redact_url(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{}://{host}:{port}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

/// Parses the http or https URL in variable `name`; `example` shows the expected form. The
/// message leaves the value out, because a webhook URL is itself a credential.
pub(super) fn parse_url(name: &'static str, value: &str, example: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value.trim()).map_err(|error| ConfigError {
        name,
        reason: format!("the value is not a valid URL ({error}); write an http or https URL such as `{example}`"),
    })?;
    check_scheme(name, &url, example)?;
    Ok(url)
}

fn check_scheme(name: &'static str, url: &Url, example: &str) -> Result<(), ConfigError> {
    let reason = if !matches!(url.scheme(), "http" | "https") {
        format!("scheme `{}` is not http or https; write a URL such as `{example}`", url.scheme())
    } else if url.host_str().is_none_or(str::is_empty) {
        format!("the URL has no host; write a URL such as `{example}`")
    } else {
        return Ok(());
    };
    Err(ConfigError { name, reason })
}

/// Reads `SIEM_TIMEOUT`, which the alert webhook shares.
pub(super) fn read_timeout(var: &impl Fn(&str) -> Option<String>) -> Result<Duration, ConfigError> {
    let Some(value) = var("SIEM_TIMEOUT") else { return Ok(DEFAULT_TIMEOUT) };
    let timeout = humantime::parse_duration(value.trim()).map_err(|error| ConfigError {
        name: "SIEM_TIMEOUT",
        reason: format!("`{value}` is not a duration ({error}); write e.g. `5s` or `500ms`"),
    })?;
    check_timeout(timeout)?;
    Ok(timeout)
}

/// Reads `SIEM_MAX_ATTEMPTS`, which the alert webhook shares.
pub(super) fn read_max_attempts(var: &impl Fn(&str) -> Option<String>) -> Result<u32, ConfigError> {
    let attempts = number(var, "SIEM_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, "a whole number")?;
    check_max_attempts(attempts)?;
    Ok(attempts)
}

fn check_timeout(timeout: Duration) -> Result<(), ConfigError> {
    if timeout.is_zero() {
        return Err(ConfigError { name: "SIEM_TIMEOUT", reason: "must be longer than zero, such as `5s`".to_owned() });
    }
    Ok(())
}

fn check_max_attempts(attempts: u32) -> Result<(), ConfigError> {
    if attempts == 0 {
        return Err(ConfigError { name: "SIEM_MAX_ATTEMPTS", reason: "`0` is below the minimum of 1".to_owned() });
    }
    Ok(())
}

fn number<T: FromStr>(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
    expected: &str,
) -> Result<T, ConfigError> {
    let Some(value) = var(name) else { return Ok(default) };
    value.trim().parse().map_err(|_| ConfigError { name, reason: format!("`{value}` is not {expected}") })
}

fn parse_with<T: FromStr<Err = String>>(
    var: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError> {
    let Some(value) = var(name) else { return Ok(default) };
    value.parse().map_err(|reason| ConfigError { name, reason })
}

/// Tool-input fields redacted when `SIEM_REDACT_FIELDS` is unset: the usual names of keys,
/// tokens and passwords. `max_tokens` and similar numbers are redacted too, which loses
/// nothing that matters.
pub const DEFAULT_REDACT_FIELDS: &[&str] = &[
    "key",
    "*api_key*",
    "*apikey*",
    "*access_key*",
    "*private_key*",
    "*secret*",
    "*token*",
    "*password*",
    "*passwd*",
    "*credential*",
    "authorization",
    "cookie",
];

/// Reads `SIEM_REDACT_FIELDS`: comma-separated fnmatch patterns, or `none`.
fn read_redact_fields(value: Option<String>) -> Result<Vec<String>, ConfigError> {
    let Some(value) = value else {
        return Ok(DEFAULT_REDACT_FIELDS.iter().map(|field| (*field).to_owned()).collect());
    };
    if value.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let mut fields = Vec::new();
    for field in value.split(',').map(str::trim).filter(|field| !field.is_empty()) {
        let lowercase = field.to_lowercase();
        if let Err(error) = mcpsec_policy::glob::Pattern::new(&lowercase) {
            return Err(ConfigError {
                name: "SIEM_REDACT_FIELDS",
                reason: format!(
                    "`{field}` is not a valid pattern ({error}); write comma-separated patterns such as `*token*,password`, or `none`"
                ),
            });
        }
        fields.push(lowercase);
    }
    Ok(fields)
}
