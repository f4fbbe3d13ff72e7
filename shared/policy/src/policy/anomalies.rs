//! The `anomalies` section of `policies.yaml`: thresholds of the anomaly detectors and the
//! quarantine after a denial spike.

use std::time::Duration;

/// Thresholds of the anomaly detectors; a detector set to `None` is off.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalySettings {
    /// Denied or unauthorized calls counted per model, per session and overall.
    pub denial_spike: Option<DenialSpike>,
    /// A model's calls in one window against its mean over the preceding windows.
    pub call_rate_spike: Option<CallRateSpike>,
    /// Distinct tools denied to one session.
    pub scope_probing: Option<ScopeProbing>,
    /// Whether a model's first allowed call of a tool raises an anomaly.
    pub first_tool_use: bool,
    /// How long a model's calls are denied after a denial spike of that model; `None`: never.
    pub quarantine: Option<Duration>,
}

impl Default for AnomalySettings {
    fn default() -> Self {
        Self {
            denial_spike: Some(DenialSpike::default()),
            call_rate_spike: Some(CallRateSpike::default()),
            scope_probing: Some(ScopeProbing::default()),
            first_tool_use: true,
            quarantine: None,
        }
    }
}

/// More than `threshold` denied or unauthorized calls within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DenialSpike {
    /// Raised when the count in the window is greater than this.
    pub threshold: u64,
    /// Length of the sliding window.
    pub window: Duration,
}

impl Default for DenialSpike {
    fn default() -> Self {
        Self { threshold: 10, window: Duration::from_secs(120) }
    }
}

/// More than `max(min_calls, factor × baseline)` calls of one model within one window, where
/// the baseline is the model's mean calls per window over the `baseline_windows` before it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallRateSpike {
    /// Length of one window; windows are aligned to multiples of it since the Unix epoch.
    pub window: Duration,
    /// Number of windows before the current one that make the baseline.
    pub baseline_windows: u32,
    /// How many times the baseline the current window must exceed.
    pub factor: f64,
    /// The least threshold, so that a model with little history does not raise an anomaly
    /// on its first few calls.
    pub min_calls: u64,
}

impl Default for CallRateSpike {
    fn default() -> Self {
        Self { window: Duration::from_secs(60), baseline_windows: 30, factor: 5.0, min_calls: 30 }
    }
}

/// One session denied on more than `distinct_tools` different tools within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeProbing {
    /// Raised when the number of distinct denied tools in the window is greater than this.
    pub distinct_tools: u64,
    /// Length of the sliding window.
    pub window: Duration,
}

impl Default for ScopeProbing {
    fn default() -> Self {
        Self { distinct_tools: 5, window: Duration::from_secs(600) }
    }
}
