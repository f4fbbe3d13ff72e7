//! Forwarding of audit events to a SIEM.
