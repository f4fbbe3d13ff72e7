//! Prometheus metrics of the process, served at `GET /metrics` in the OpenMetrics text format.
//!
//! One set per process, because the counters describe the process: every tool call by route
//! and decision, decisions by deciding rule, the upstream's latency, the outbox consumers'
//! backlog and the anomalies raised. Rule ids and upstream names come from the
//! configuration, and routes, decisions and detectors are fixed lists, so no label takes
//! values that a caller chooses.

use std::fmt;
use std::sync::OnceLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::audit::{AuditEvent, Detector};

type Labels = Vec<(String, String)>;

/// The metrics of this process.
pub struct Metrics {
    registry: Registry,
    calls: Family<Labels, Counter>,
    decisions: Family<Labels, Counter>,
    upstream_latency: Family<Labels, Histogram, fn() -> Histogram>,
    anomalies: Family<Labels, Counter>,
    backlog: Family<Labels, Gauge>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// Returns the metrics of this process, registering them on first use.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

/// Upstream latency buckets in seconds: 1 ms doubling to about 33 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("mcpsec");
        let calls = Family::<Labels, Counter>::default();
        registry.register("tool_calls", "Tool calls by route and decision", calls.clone());
        let decisions = Family::<Labels, Counter>::default();
        registry.register(
            "decisions",
            "Tool-call decisions by the rule, limit or check that decided (`none` for the default or the key's scope)",
            decisions.clone(),
        );
        let upstream_latency: Family<Labels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "upstream_latency_seconds",
            "Time an upstream took to answer a forwarded call, by upstream and status",
            upstream_latency.clone(),
        );
        let anomalies = Family::<Labels, Counter>::default();
        registry.register("anomalies", "Anomalies raised by this process, by detector", anomalies.clone());
        let backlog = Family::<Labels, Gauge>::default();
        registry.register(
            "outbox_backlog_events",
            "Stored events that an outbox consumer (siem, detector, alerts) has not handled yet",
            backlog.clone(),
        );
        Self { registry, calls, decisions, upstream_latency, anomalies, backlog }
    }

    /// Counts one recorded tool call.
    pub fn record_call(&self, event: &AuditEvent) {
        let route = event.route.as_str().to_owned();
        let decision = event.decision.as_str().to_owned();
        self.calls.get_or_create(&vec![("route".to_owned(), route), ("decision".to_owned(), decision.clone())]).inc();
        let rule = event.rule.clone().unwrap_or_else(|| "none".to_owned());
        self.decisions.get_or_create(&vec![("decision".to_owned(), decision), ("rule".to_owned(), rule)]).inc();
        if let Some(upstream) = &event.upstream {
            let labels = vec![
                ("upstream".to_owned(), upstream.upstream.clone()),
                ("status".to_owned(), upstream.status.clone()),
            ];
            self.upstream_latency.get_or_create(&labels).observe(upstream.latency_ms / 1000.0);
        }
    }

    /// Counts one anomaly that this process raised.
    pub fn record_anomaly(&self, detector: Detector) {
        self.anomalies.get_or_create(&vec![("detector".to_owned(), detector.as_str().to_owned())]).inc();
    }

    /// Sets how many stored events `consumer` has not handled yet.
    pub fn set_backlog(&self, consumer: &str, events: i64) {
        self.backlog.get_or_create(&vec![("consumer".to_owned(), consumer.to_owned())]).set(events);
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
