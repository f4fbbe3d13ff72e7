//! Anomaly detection on the flow of audit events, off the request path.
//!
//! A [`Detector`] reads tool-call events in order, in batches. On AWS it runs in the Lambda
//! function fed by the stream of the sessions table, where several shards and invocations run
//! at once and failed batches are retried. In the container it runs in a background task. Its counters
//! live in a [`CounterStore`] shared by all of them: [`DynamoCounters`] on AWS,
//! [`MemoryCounters`] in the container. Thresholds come from [`AnomalySettings`].
//!
//! # Detectors
//!
//! * Denial spike: more than `threshold` calls denied or unauthorized within the sliding
//!   `window`, counted per model, per session and across all calls (subject `*`). Events with
//!   an empty model or session id count only where they have one. With a `quarantine` set,
//!   a spike of one model carries `quarantined_until` = the trigger's time + the quarantine.
//! * Call-rate spike: a model's calls of any decision in one fixed `window`, against its mean
//!   over the `baseline_windows` windows before it (empty windows count as 0). It is raised
//!   when the current window contains more than `max(min_calls, ceil(factor × mean))` calls.
//! * Scope probing: the distinct tools that one session was denied (decision `deny` only)
//!   within the sliding `window`. It is raised when there are more than `distinct_tools`, and
//!   lists up to 20 of them, sorted. A bucket stores at most `max(distinct_tools + 1, 20)`
//!   tools, enough to cross the threshold, so the count reported can be lower than the
//!   number of tools denied. The cap bounds the size of a DynamoDB item.
//! * First tool use: every allowed call whose model and tool the detector has not yet
//!   emitted is a candidate. The caller's write that stores it only if absent decides whether
//!   it really is the first.
//!
//! Every time is the event's `time` in whole Unix seconds, never the wall clock, so a replay
//! or a retry counts in the same windows.
//!
//! # Window arithmetic
//!
//! A sliding window of `W` seconds is counted in buckets of `w = max(1, floor(W / 12))`
//! seconds. An event at time `t` is in bucket `floor(t / w)`, and the window that ends at an
//! event sums the `ceil(W / w)` buckets up to the event's. With the default windows `w`
//! divides `W`, so the window covers between `W - w + 1` and `W` seconds, depending on where
//! the event falls in its bucket. Counters keep twice the buckets that a window needs, so an
//! event that arrives late from another shard still finds its window.
//!
//! The call-rate spike uses fixed windows aligned to multiples of `window` since the Unix
//! epoch, one bucket each. Counters keep the current window, the baseline and one window
//! more.
//!
//! # Counters
//!
//! Each counter has the key `<detector>|<scope>|<subject>`, such as `denial_spike|model|m-1`
//! (a subject that would make the key longer than 1,024 bytes is replaced by its SHA-256).
//! On DynamoDB it is one item of the counters table (created by [`ensure_counters_table`]):
//! partition key `pk` (S) = the key, `ttl` (N, Unix seconds, the table's time to live) and one
//! attribute `b<bucket>` per bucket, a number for counts and a string set for tools. A batch
//! sends one `UpdateItem` per counter (`SET #ttl = :ttl ADD #b0 :b0, …`, returning the new
//! item), and a second `UpdateItem` that removes the buckets older than the oldest one
//! needed, when the item contains some.
//!
//! The counter `denial_spike|all|*` is a hot key: every batch with a denial updates it.
//! The updates of one batch are merged into one request, which costs one write unit while
//! the item stays under 1 KB. So the item receives one write per batch with a denial, plus
//! about one removal per bucket (10 s with the default window), however many denials the
//! batch carries. The writes per second are therefore bounded by the batches that finish per
//! second across all shards. By our estimate that stays far below DynamoDB's limit of 1,000
//! write units per second on one partition, unless many shards deliver batches that each
//! finish within a few milliseconds.
//!
//! NOTE: a call-rate item contains `baseline_windows + 2` numbers, so with a baseline of several
//! hundred windows it grows past 1 KB and each update costs several write units.
//!
//! # Emitted once per window
//!
//! An anomaly's event id is a UUID v8 made from the first 16 bytes of the SHA-256 of
//! `<detector>|<scope>|<subject>|<window start in Unix seconds>`, and of
//! `first_tool_use|model|<model>|<tool>` for a first use; see [`window_anomaly_id`] and
//! [`first_use_anomaly_id`]. The window start is that of the fixed window of length `window`
//! that contains the trigger, `floor(t / W) × W`, so a spike that lasts raises one anomaly per
//! fixed window. [`Detector::observe`] returns candidates. The caller stores each one only if
//! its id is absent, which makes it emitted once across processes, and then passes the ids to
//! [`Detector::mark_emitted`], so this process stops returning them.
//!
//! # Delivery
//!
//! Counting is at least once. A batch retried after a partial failure counts its events
//! again, and a counter update is not atomic across keys, so a retry can raise an anomaly a
//! little early. Events of one batch update the store together, and a crossing is judged
//! once per batch on the state after it, attributed to the counter's last event in the batch.
//!
//! [`AnomalySettings`]: mcpsec_policy::AnomalySettings

mod cache;
mod counters;
mod detector;
mod dynamo;
mod event;
mod judge;
mod memory;
mod plan;
mod window;

pub use self::counters::{CounterState, CounterStore, CounterUpdate, CounterValue};
pub use self::detector::Detector;
pub use self::dynamo::DynamoCounters;
pub use self::event::{first_use_anomaly_id, window_anomaly_id};
pub use self::memory::{DEFAULT_MAX_KEYS, MemoryCounters};
pub use crate::store::aws::setup::ensure_counters_table;
