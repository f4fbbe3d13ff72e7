//! The container's background consumers of the embedded store's outbox.
//!
//! Each consumer reads a feed of the store ([`Feed`]) after its saved position, handles a
//! batch, and saves the position of the last event it handled, so a restart resumes where
//! the last run stopped:
//!
//! * `siem` follows every stored version of every event ([`Feed::Changes`]) and forwards it.
//!   Its first run starts at the beginning of the store, so every stored event is sent. When
//!   the SIEM fails, the consumer waits with growing pauses (up to 30 s) and tries the same
//!   events again; nothing is skipped.
//! * `detector` follows each event once ([`Feed::Inserts`]) and raises anomalies. Its
//!   counters live in memory, so each start replays the events of the longest detection
//!   window first (or from the saved position, if that is older). Replayed anomalies have
//!   the ids they had, so none is raised twice.
//! * `alerts` follows anomaly events ([`Feed::Alerts`]) and posts each to the alert webhook.
//!   Its first run starts at the newest event, so enabling the webhook does not post the
//!   history.
//!
//! A consumer woken by a commit waits 50 ms before it reads, so it reads the events of that
//! time together. A tool call never waits for a consumer's work. The consumers read the store and write
//! their positions and anomalies through its writer queue, where each consumer adds at
//! most one position commit per second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::AnomalyRaiser;
use crate::anomaly::MemoryCounters;
use crate::audit::AuditEvent;
use crate::siem::{AlertWebhook, SiemForwarder};
use crate::state::AppState;
use crate::store::sqlite::{Feed, OutboxEntry, SqliteStore};

/// Events read from the store per batch.
const BATCH: usize = 500;

/// Maximum wait between two reads of an idle feed. Commits wake the consumers sooner.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Wait after a commit wakes an idle consumer, so that the commits of that time are read as
/// one batch. Without it, every commit under light load costs each consumer a read of the
/// store, on the cores that serve the calls.
const GATHER: Duration = Duration::from_millis(50);

/// First pause after a failure; it doubles on each failure in a row, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Maximum pause after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Minimum time between two saves of a busy consumer's position.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);

/// Name of the SIEM consumer's saved position.
pub const SIEM_CONSUMER: &str = "siem";
/// Name of the anomaly detector's saved position.
pub const DETECTOR_CONSUMER: &str = "detector";
/// Name of the alert webhook's saved position.
pub const ALERTS_CONSUMER: &str = "alerts";

/// The running consumers.
pub struct Outbox {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// The destinations of the container's consumers.
pub struct Sinks {
    /// The SIEM, when `SIEM_URL` is set.
    pub siem: Option<SiemForwarder>,
    /// The alert webhook, when `ALERT_WEBHOOK_URL` is set.
    pub webhook: Option<AlertWebhook>,
}

impl Outbox {
    /// Starts the consumers on `store`: the detector always, the SIEM and webhook consumers
    /// when they are configured. `state` gives the policy, whose `anomalies` section sets the
    /// detectors' thresholds, and the key store for quarantines.
    pub fn start(store: Arc<SqliteStore>, state: AppState, sinks: Sinks) -> Self {
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();

        if let Some(forwarder) = sinks.siem {
            let consumer = SiemConsumer { forwarder };
            tasks.push(spawn(Arc::clone(&store), Feed::Changes, SIEM_CONSUMER, Start::Beginning, consumer, &stopped));
        }
        let raiser = AnomalyRaiser::new(Arc::new(MemoryCounters::new()));
        let detector = DetectorConsumer { raiser, state, pending: None };
        tasks.push(spawn(Arc::clone(&store), Feed::Inserts, DETECTOR_CONSUMER, Start::Replay, detector, &stopped));
        if let Some(webhook) = sinks.webhook {
            let consumer = AlertConsumer { webhook };
            tasks.push(spawn(store, Feed::Alerts, ALERTS_CONSUMER, Start::End, consumer, &stopped));
        }
        Self { stop, tasks }
    }

    /// Asks every consumer to handle what is stored and stop, and waits for them for at most
    /// `grace`. A consumer still busy then is stopped; its position stays where it was saved,
    /// and the next start goes on from there.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.stop.send(true);
        let mut tasks = self.tasks;
        let all = futures::future::join_all(tasks.iter_mut());
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                grace_s = grace.as_secs_f64(),
                "outbox consumers did not finish in time; they resume at the next start"
            );
            for task in &tasks {
                task.abort();
            }
        }
    }
}

/// The start of a consumer without a saved position.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// At the first stored event.
    Beginning,
    /// At the newest stored event.
    End,
    /// At the first event of the longest detection window, or the saved position if older.
    Replay,
}

/// One batch's result: how many events at its front were handled, and why the rest were not.
struct Handled {
    count: usize,
    error: Option<String>,
}

#[async_trait]
trait Consumer: Send + Sync + 'static {
    async fn handle(&mut self, entries: &[OutboxEntry]) -> Handled;

    /// Returns how far back a [`Start::Replay`] consumer replays.
    async fn replay_window(&self) -> Duration {
        Duration::ZERO
    }
}

fn spawn(
    store: Arc<SqliteStore>,
    feed: Feed,
    name: &'static str,
    start: Start,
    consumer: impl Consumer,
    stopped: &watch::Receiver<bool>,
) -> JoinHandle<()> {
    let stopped = stopped.clone();
    tokio::spawn(async move { follow(store, feed, name, start, consumer, stopped).await })
}

/// Reads `feed` after the consumer's position and hands it batches until asked to stop and
/// nothing is left, or a failure happens after the stop request.
async fn follow(
    store: Arc<SqliteStore>,
    feed: Feed,
    name: &'static str,
    start: Start,
    mut consumer: impl Consumer,
    mut stopped: watch::Receiver<bool>,
) {
    let committed = store.committed();
    let mut backoff = FIRST_BACKOFF;
    let mut position = loop {
        match start_position(&store, feed, name, start, &consumer).await {
            Ok(position) => break position,
            Err(error) => {
                tracing::error!(consumer = name, error = %error, "outbox consumer cannot read its position; retrying");
                if pause(&mut stopped, &mut backoff).await {
                    return;
                }
            }
        }
    };
    tracing::info!(consumer = name, position, "outbox consumer started");
    let mut cursor = Cursor { name, saved: position, saved_at: Instant::now() };

    loop {
        let stopping = *stopped.borrow();
        let entries = match store.outbox(feed, position, BATCH).await {
            Ok(entries) => entries,
            Err(error) => {
                tracing::error!(consumer = name, error = %error, "outbox read failed; retrying");
                if stopping || pause(&mut stopped, &mut backoff).await {
                    cursor.save(&store, position).await;
                    return;
                }
                continue;
            }
        };
        if entries.is_empty() {
            crate::metrics::metrics().set_backlog(name, 0);
            cursor.save(&store, position).await;
            if stopping {
                tracing::info!(consumer = name, position, "outbox consumer drained and stopped");
                return;
            }
            tokio::select! {
                () = committed.notified() => {
                    tokio::select! {
                        () = tokio::time::sleep(GATHER) => {}
                        _ = stopped.changed() => {}
                    }
                }
                () = tokio::time::sleep(IDLE_POLL) => {}
                _ = stopped.changed() => {}
            }
            continue;
        }

        let handled = consumer.handle(&entries).await;
        if let Some(last) = handled.count.checked_sub(1).and_then(|index| entries.get(index)) {
            position = last.position;
            if cursor.saved_at.elapsed() >= SAVE_INTERVAL {
                cursor.save(&store, position).await;
            }
        }
        report_backlog(&store, feed, name, position).await;
        match handled.error {
            None => backoff = FIRST_BACKOFF,
            Some(error) => {
                tracing::warn!(consumer = name, handled = handled.count, pending = entries.len() - handled.count, error = %error, "outbox consumer failed; retrying the rest");
                if stopping || pause(&mut stopped, &mut backoff).await {
                    cursor.save(&store, position).await;
                    return;
                }
            }
        }
    }
}

/// Sets the consumer's backlog metric: the events stored after `position`, counted by
/// position, so gaps left by rolled-back writes count too.
async fn report_backlog(store: &SqliteStore, feed: Feed, name: &str, position: i64) {
    match store.last_position(feed).await {
        Ok(last) => crate::metrics::metrics().set_backlog(name, last.saturating_sub(position).max(0)),
        Err(error) => tracing::debug!(consumer = name, error = %error, "outbox backlog not measured"),
    }
}

/// The saved position of a consumer.
///
/// Saving after every batch would add a commit, and so a sync, per batch to the writer that
/// tool calls wait for. A busy consumer therefore saves at most once per [`SAVE_INTERVAL`],
/// and whenever it runs out of events or stops. A crash repeats at most that interval of
/// work. SIEM receivers drop the duplicates by event id, and anomalies are stored once by id,
/// so only a webhook message may be posted twice.
struct Cursor {
    name: &'static str,
    saved: i64,
    saved_at: Instant,
}

impl Cursor {
    async fn save(&mut self, store: &SqliteStore, position: i64) {
        if position == self.saved {
            return;
        }
        match store.save_cursor(self.name, position).await {
            Ok(()) => {
                self.saved = position;
                self.saved_at = Instant::now();
            }
            Err(error) => {
                tracing::error!(consumer = self.name, position, error = %error, "saving the outbox position failed; events after the saved one are handled again at the next start");
            }
        }
    }
}

async fn start_position(
    store: &SqliteStore,
    feed: Feed,
    name: &str,
    start: Start,
    consumer: &impl Consumer,
) -> Result<i64, crate::store::StoreError> {
    let saved = store.cursor(name).await?;
    match (start, saved) {
        (Start::Beginning, saved) => Ok(saved.unwrap_or(0)),
        (Start::End, Some(saved)) => Ok(saved),
        (Start::End, None) => store.position_before(feed, OffsetDateTime::now_utc()).await,
        (Start::Replay, saved) => {
            let window = consumer.replay_window().await;
            let since = OffsetDateTime::now_utc() - window;
            let replay = store.position_before(feed, since).await?;
            Ok(saved.map_or(replay, |saved| saved.min(replay)))
        }
    }
}

/// Waits for the current backoff and doubles it, or returns `true` at once when a stop is
/// requested.
async fn pause(stopped: &mut watch::Receiver<bool>, backoff: &mut Duration) -> bool {
    let jittered = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
    *backoff = (*backoff * 2).min(MAX_BACKOFF);
    tokio::select! {
        () = tokio::time::sleep(jittered) => *stopped.borrow(),
        _ = stopped.changed() => true,
    }
}

struct SiemConsumer {
    forwarder: SiemForwarder,
}

#[async_trait]
impl Consumer for SiemConsumer {
    async fn handle(&mut self, entries: &[OutboxEntry]) -> Handled {
        let events: Vec<AuditEvent> = entries.iter().map(|entry| entry.event.clone()).collect();
        match self.forwarder.forward(&events).await {
            Ok(()) => Handled { count: events.len(), error: None },
            Err(error) => Handled { count: error.delivered, error: Some(error.reason) },
        }
    }
}

struct DetectorConsumer {
    raiser: AnomalyRaiser,
    state: AppState,
    /// Anomalies counted from a batch but not stored yet, because storing failed, with the
    /// batch's first position and length. The retry stores them without counting the batch
    /// again, and handles that many events, however many more were read since.
    pending: Option<(i64, usize, Vec<AuditEvent>)>,
}

#[async_trait]
impl Consumer for DetectorConsumer {
    async fn handle(&mut self, entries: &[OutboxEntry]) -> Handled {
        let Some(first) = entries.first().map(|entry| entry.position) else {
            return Handled { count: 0, error: None };
        };
        let (count, candidates) = match self.pending.take() {
            Some((position, count, candidates)) if position == first => (count.min(entries.len()), candidates),
            _ => match self.count(entries).await {
                Ok(candidates) => (entries.len(), candidates),
                Err(error) => return Handled { count: 0, error: Some(error) },
            },
        };

        let stores = self.state.stores();
        match self.raiser.raise(candidates.clone(), stores.audit.as_ref()).await {
            Ok(raised) => {
                if raised.iter().any(|anomaly| anomaly.anomaly.as_ref().is_some_and(|a| a.quarantined_until.is_some()))
                {
                    self.state.invalidate().await;
                }
                Handled { count, error: None }
            }
            Err(error) => {
                self.pending = Some((first, count, candidates));
                Handled { count: 0, error: Some(format!("storing anomalies failed: {error}")) }
            }
        }
    }

    async fn replay_window(&self) -> Duration {
        match self.state.policy().await {
            Ok(policy) => super::longest_window(policy.anomalies()),
            Err(_) => super::longest_window(&mcpsec_policy::AnomalySettings::default()),
        }
    }
}

impl DetectorConsumer {
    async fn count(&self, entries: &[OutboxEntry]) -> Result<Vec<AuditEvent>, String> {
        let policy = self.state.policy().await?;
        let events: Vec<AuditEvent> = entries.iter().map(|entry| entry.event.clone()).collect();
        self.raiser.count(policy.anomalies(), &events).await.map_err(|error| format!("counting failed: {error}"))
    }
}

struct AlertConsumer {
    webhook: AlertWebhook,
}

#[async_trait]
impl Consumer for AlertConsumer {
    async fn handle(&mut self, entries: &[OutboxEntry]) -> Handled {
        for (index, entry) in entries.iter().enumerate() {
            if let Err(error) = self.webhook.send(&entry.event).await {
                return Handled { count: index, error: Some(error) };
            }
        }
        Handled { count: entries.len(), error: None }
    }
}
