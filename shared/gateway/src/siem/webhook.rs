//! Anomaly alerts posted to a Slack-compatible incoming webhook.

use std::fmt;
use std::time::Duration;

use reqwest::Url;
use serde_json::{Value, json};

use super::delivery::{Delivery, DeliveryError};
use super::format::{counted, detector_caption, rfc3339};
use super::settings::{parse_url, read_max_attempts, read_timeout};
use crate::audit::{Anomaly, AuditEvent, Detector};
use crate::config::ConfigError;

/// Example of `ALERT_WEBHOOK_URL` in error messages.
const WEBHOOK_URL_EXAMPLE: &str = "https://hooks.slack.com/services/T000/B000/XXXX";

/// Slack's limit on the text of one section block, in characters.
const SECTION_TEXT_CHARS: usize = 3000;

/// Posts anomaly events to a webhook (`ALERT_WEBHOOK_URL`) as Slack messages, with the same
/// timeout, attempts and retry rules as the SIEM forwarder.
///
/// A Slack webhook URL is a credential, so the `Debug` output shows only its scheme and host.
#[derive(Clone)]
pub struct AlertWebhook {
    delivery: Delivery,
    origin: String,
    detectors: Vec<Detector>,
}

/// The detectors whose anomalies are posted when `ALERT_WEBHOOK_DETECTORS` is unset. First
/// tool use is left out: it is informational, and a new deployment raises one for every tool
/// each model uses, which would flood a chat channel. It still reaches the SIEM and the
/// dashboard.
pub const DEFAULT_WEBHOOK_DETECTORS: &[Detector] =
    &[Detector::DenialSpike, Detector::CallRateSpike, Detector::ScopeProbing];

impl AlertWebhook {
    /// Creates a webhook client for `url` with `timeout` on each request and `max_attempts`
    /// attempts per alert.
    pub fn new(url: Url, timeout: Duration, max_attempts: u32) -> Result<Self, String> {
        if timeout.is_zero() {
            return Err("the alert webhook timeout must be longer than zero".to_owned());
        }
        let origin = match url.port() {
            Some(port) => format!("{}://{}:{port}", url.scheme(), url.host_str().unwrap_or_default()),
            None => format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default()),
        };
        // The path of a Slack webhook URL is its secret, so logs show the origin only.
        let delivery =
            Delivery::new("alert_webhook", origin.clone(), url, timeout, max_attempts, "application/json", None, None)?;
        Ok(Self { delivery, origin, detectors: DEFAULT_WEBHOOK_DETECTORS.to_vec() })
    }

    /// Posts the anomalies of `detectors` only.
    #[must_use]
    pub fn with_detectors(mut self, detectors: Vec<Detector>) -> Self {
        self.detectors = detectors;
        self
    }

    /// Reads `ALERT_WEBHOOK_URL`, `SIEM_TIMEOUT` and `SIEM_MAX_ATTEMPTS` through `var`. Blank
    /// values count as unset.
    ///
    /// Returns `None` when `ALERT_WEBHOOK_URL` is unset, which turns alerts off.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let var = |name: &str| var(name).filter(|value| !value.trim().is_empty());
        let Some(url) = var("ALERT_WEBHOOK_URL") else { return Ok(None) };

        let url = parse_url("ALERT_WEBHOOK_URL", &url, WEBHOOK_URL_EXAMPLE)?;
        let timeout = read_timeout(&var)?;
        let max_attempts = read_max_attempts(&var)?;
        let webhook = Self::new(url, timeout, max_attempts)
            .map_err(|reason| ConfigError { name: "ALERT_WEBHOOK_URL", reason })?;
        let webhook = match var("ALERT_WEBHOOK_DETECTORS") {
            Some(list) => webhook.with_detectors(parse_detectors(&list)?),
            None => webhook,
        };
        Ok(Some(webhook))
    }

    /// Posts `anomaly_event` as a Slack message with a one-line `text` and a section block
    /// that lists the anomaly's fields.
    ///
    /// # Errors
    ///
    /// A message when the event is not an anomaly or when every attempt failed.
    pub async fn send(&self, anomaly_event: &AuditEvent) -> Result<(), String> {
        let Some(anomaly) = anomaly_event.anomaly.as_ref().filter(|_| anomaly_event.is_anomaly()) else {
            return Err(format!("event `{}` is not an anomaly and was not posted", anomaly_event.event_id));
        };

        if !self.detectors.contains(&anomaly.detector) {
            tracing::debug!(event.id = %anomaly_event.event_id, detector = anomaly.detector.as_str(), "anomaly not posted: its detector is not in ALERT_WEBHOOK_DETECTORS");
            return Ok(());
        }
        let body = serde_json::to_vec(&message(anomaly_event, anomaly))
            .map_err(|error| format!("cannot encode the alert for event `{}`: {error}", anomaly_event.event_id))?;
        match self.delivery.post(&body, None, 1).await {
            Ok(()) => Ok(()),
            Err(DeliveryError::TooLarge) => {
                Err(format!("the webhook rejected the alert for event `{}` with HTTP 413", anomaly_event.event_id))
            }
            Err(DeliveryError::Failed(reason)) => {
                Err(format!("alert for event `{}`: {reason}", anomaly_event.event_id))
            }
        }
    }
}

impl fmt::Debug for AlertWebhook {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.debug_struct("AlertWebhook").field("origin", &self.origin).finish_non_exhaustive()
    }
}

/// Returns the Slack message of an anomaly event.
fn message(event: &AuditEvent, anomaly: &Anomaly) -> Value {
    let summary = if anomaly.detector == Detector::FirstToolUse {
        format!(
            "MCP-Sec anomaly first_tool_use: model `{}` called tool `{}` for the first time, at {}",
            escape(&event.model_id),
            escape(&event.tool_name),
            rfc3339(event.time),
        )
    } else {
        format!(
            "MCP-Sec anomaly {}: {} `{}`: {} {} > {} within {} s, at {}",
            anomaly.detector.as_str(),
            anomaly.scope.as_str(),
            escape(&anomaly.subject),
            anomaly.observed,
            counted(anomaly.detector),
            anomaly.threshold,
            anomaly.window_seconds,
            rfc3339(event.time),
        )
    };

    json!({
        "text": summary,
        "blocks": [{
            "type": "section",
            "text": { "type": "mrkdwn", "text": details(event, anomaly) },
        }],
    })
}

/// Returns the mrkdwn list of the anomaly's fields, at most [`SECTION_TEXT_CHARS`] long.
fn details(event: &AuditEvent, anomaly: &Anomaly) -> String {
    let mut lines = vec![
        format!("*{}* (`{}`)", detector_caption(anomaly.detector), anomaly.detector.as_str()),
        format!("*Subject:* {} `{}`", anomaly.scope.as_str(), escape(&anomaly.subject)),
        format!("*Observed:* {} (threshold {})", anomaly.observed, anomaly.threshold),
        format!("*Window:* {} s from {}", anomaly.window_seconds, rfc3339(anomaly.window_start)),
    ];
    if let Some(baseline) = anomaly.baseline {
        lines.push(format!("*Baseline:* {baseline:.2} per window"));
    }
    if !anomaly.tools.is_empty() {
        let tools: Vec<String> = anomaly.tools.iter().map(|tool| format!("`{}`", escape(tool))).collect();
        lines.push(format!("*Tools:* {}", tools.join(", ")));
    }
    if let Some(until) = anomaly.quarantined_until {
        lines.push(format!("*Quarantined until:* {}", rfc3339(until)));
    }
    lines.push(format!("*Decision:* {}", event.decision.as_str()));
    if !event.reason.is_empty() {
        lines.push(format!("*Reason:* {}", escape(&event.reason)));
    }
    lines.push(format!("*Trigger event:* `{}`", escape(&anomaly.trigger_event_id)));
    lines.push(format!("*Event:* `{}` at {}", escape(&event.event_id), rfc3339(event.time)));

    let text = lines.join("\n");
    if text.chars().count() <= SECTION_TEXT_CHARS {
        return text;
    }
    let mut shortened: String = text.chars().take(SECTION_TEXT_CHARS - 1).collect();
    shortened.push('…');
    shortened
}

/// Escapes `&`, `<` and `>`, which Slack reads as control characters in message text.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Parses `ALERT_WEBHOOK_DETECTORS`: comma-separated detector names.
fn parse_detectors(list: &str) -> Result<Vec<Detector>, ConfigError> {
    let all = [Detector::DenialSpike, Detector::CallRateSpike, Detector::ScopeProbing, Detector::FirstToolUse];
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            all.into_iter().find(|detector| detector.as_str() == name).ok_or_else(|| ConfigError {
                name: "ALERT_WEBHOOK_DETECTORS",
                reason: format!(
                    "`{name}` is not a detector; write a comma-separated list of `denial_spike`, `call_rate_spike`, `scope_probing` and `first_tool_use`"
                ),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_replaces_slack_control_characters() {
        assert_eq!(escape("<@U1> & <!channel>"), "&lt;@U1&gt; &amp; &lt;!channel&gt;");
    }
}
