//! State shared by every handler: the stores, the cached keys and policy, and settings.
//!
//! Keys and the policy are read from their stores and cached for `cache_ttl`, so a warm call
//! reads nothing. A revoked key or a new policy therefore applies within one `cache_ttl`, or
//! at once in this process when it was changed through [`AppState::invalidate`]. When a
//! refresh fails, calls are denied until the store is reachable again, because a stale cache
//! could keep a revoked key working. Calls that waited for a refresh that failed share its
//! error instead of each trying the store again in turn, so that during an outage concurrent
//! calls are denied after one store timeout, not after one timeout per queued call.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcpsec_policy::{KeySet, Policy, WindowCounters};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::sessions::SessionIssuer;
use crate::store::{AuditStore, KeyStore, PolicyStore};
use crate::upstream::Upstreams;

/// Handler state. Cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

/// The stores a deployment runs on.
#[derive(Clone)]
pub struct Stores {
    /// Model keys.
    pub keys: Arc<dyn KeyStore>,
    /// Policy versions.
    pub policy: Arc<dyn PolicyStore>,
    /// Audit events and session traces.
    pub audit: Arc<dyn AuditStore>,
}

struct Inner {
    stores: Stores,
    keys: tokio::sync::Mutex<Slot<KeySet>>,
    policy: tokio::sync::Mutex<Slot<Policy>>,
    counters: Mutex<WindowCounters>,
    upstreams: Upstreams,
    admin_key_hash: Option<[u8; 32]>,
    sessions: SessionIssuer,
    options: Options,
}

struct Cached<T> {
    value: Arc<T>,
    loaded: Instant,
    /// The policy version the value was compiled from; empty for keys.
    version: String,
}

/// A cached value and the outcome of its last refresh.
struct Slot<T> {
    cached: Option<Cached<T>>,
    /// When the last refresh failed, and the error it returned; cleared by a successful one.
    failed: Option<(Instant, String)>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self { cached: None, failed: None }
    }
}

impl<T> Slot<T> {
    /// Returns the error of a refresh that failed after `waiting_since`, which a caller that
    /// waited for the lock since then shares instead of refreshing again.
    fn failed_since(&self, waiting_since: Instant) -> Option<String> {
        self.failed.as_ref().filter(|(at, _)| *at >= waiting_since).map(|(_, error)| error.clone())
    }

    /// Records the outcome of a refresh and returns it.
    fn refreshed<V>(&mut self, result: Result<V, String>) -> Result<V, String> {
        self.failed = result.as_ref().err().map(|error| (Instant::now(), error.clone()));
        result
    }
}

/// How many audit writes an allowed call makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditWrites {
    /// The decision before forwarding, then the outcome: a forwarded call always has its
    /// record, even if the process dies while the upstream works.
    Twice,
    /// One write, with the outcome, after forwarding: half the writes, at the price of no
    /// record for a call whose process dies before the upstream replies.
    Once,
}

/// Settings that change how calls are handled.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whether audit events keep tool inputs.
    pub audit_tool_input: bool,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
    /// How long keys and the policy are cached; zero reads the stores on every call.
    pub cache_ttl: Duration,
    /// Audit writes per allowed call.
    pub audit_writes: AuditWrites,
}

impl AppState {
    /// Builds the state. Keys and policy are read from `stores` on first use.
    pub fn new(
        stores: Stores,
        upstreams: Upstreams,
        admin_key: Option<&str>,
        sessions: SessionIssuer,
        options: Options,
    ) -> Self {
        let admin_key_hash = admin_key.map(|key| Sha256::digest(key.as_bytes()).into());
        let inner = Inner {
            stores,
            keys: tokio::sync::Mutex::new(Slot::default()),
            policy: tokio::sync::Mutex::new(Slot::default()),
            counters: Mutex::new(WindowCounters::new()),
            upstreams,
            admin_key_hash,
            sessions,
            options,
        };
        Self { inner: Arc::new(inner) }
    }

    /// Returns the model keys in force, reading the store when the cache is older than the TTL.
    pub async fn keys(&self) -> Result<Arc<KeySet>, String> {
        let waiting_since = Instant::now();
        let mut slot = self.inner.keys.lock().await;
        if let Some(cached) = slot.cached.as_ref().filter(|cached| self.is_fresh(cached)) {
            return Ok(Arc::clone(&cached.value));
        }
        if let Some(error) = slot.failed_since(waiting_since) {
            return Err(error);
        }

        let loaded = self.inner.stores.keys.load_models().await.map_err(|error| {
            tracing::error!(error = %error, "failed to load model keys; calls are denied until the store is reachable");
            format!("model keys could not be loaded ({error})")
        });
        let entries = slot.refreshed(loaded)?;
        let value = Arc::new(KeySet::from_entries(entries));
        slot.cached = Some(Cached { value: Arc::clone(&value), loaded: Instant::now(), version: String::new() });
        Ok(value)
    }

    /// Returns the policy in force, reading the store when the cache is older than the TTL
    /// and compiling only when the stored version changed.
    pub async fn policy(&self) -> Result<Arc<Policy>, String> {
        let waiting_since = Instant::now();
        let mut slot = self.inner.policy.lock().await;
        if let Some(cached) = slot.cached.as_ref().filter(|cached| self.is_fresh(cached)) {
            return Ok(Arc::clone(&cached.value));
        }
        if let Some(error) = slot.failed_since(waiting_since) {
            return Err(error);
        }

        let loaded = self.inner.stores.policy.current().await.map_err(|error| {
            tracing::error!(error = %error, "failed to load the policy; calls are denied until the store is reachable");
            format!("the policy could not be loaded ({error})")
        });
        let Some(stored) = slot.refreshed(loaded)? else {
            return Err("no policy is stored; save one through the admin API or set POLICY_FILE".to_owned());
        };
        if let Some(cached) = slot.cached.as_mut().filter(|cached| cached.version == stored.version) {
            cached.loaded = Instant::now();
            return Ok(Arc::clone(&cached.value));
        }

        let origin = format!("stored policy version {}", stored.version);
        let policy = Policy::from_yaml(&origin, &stored.yaml).map_err(|error| {
            tracing::error!(version = %stored.version, error = %error, "stored policy is invalid; calls are denied");
            format!("the stored policy is invalid: {error}")
        })?;
        let value = Arc::new(policy);
        slot.cached = Some(Cached { value: Arc::clone(&value), loaded: Instant::now(), version: stored.version });
        Ok(value)
    }

    /// Drops the cached keys and policy, so the next call reads the stores. Admin routes call
    /// it after a change, which then applies at once in this process.
    pub async fn invalidate(&self) {
        *self.inner.keys.lock().await = Slot::default();
        *self.inner.policy.lock().await = Slot::default();
    }

    fn is_fresh<T>(&self, cached: &Cached<T>) -> bool {
        cached.loaded.elapsed() < self.inner.options.cache_ttl
    }

    /// Call counters for limits; `None` if a thread panicked while holding them.
    pub fn counters(&self) -> Option<std::sync::MutexGuard<'_, WindowCounters>> {
        self.inner.counters.lock().ok()
    }

    /// Returns the upstream MCP servers.
    pub fn upstreams(&self) -> &Upstreams {
        &self.inner.upstreams
    }

    /// The stores.
    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    /// Returns the audit store.
    pub fn audit(&self) -> &dyn AuditStore {
        self.inner.stores.audit.as_ref()
    }

    /// Returns the session id issuer.
    pub fn sessions(&self) -> &SessionIssuer {
        &self.inner.sessions
    }

    /// Handling options.
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// Checks an admin key in constant time. `None` when no admin key is configured.
    pub fn check_admin_key(&self, presented: Option<&str>) -> Option<bool> {
        let expected = self.inner.admin_key_hash?;
        let presented: [u8; 32] = Sha256::digest(presented.unwrap_or_default().as_bytes()).into();
        Some(bool::from(presented.ct_eq(&expected)))
    }
}
