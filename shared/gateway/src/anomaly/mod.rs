//! Anomaly detection on the flow of audit events.
