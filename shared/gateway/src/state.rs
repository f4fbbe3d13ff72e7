//! State shared by every handler.

use std::sync::{Arc, Mutex, RwLock};

use mcpsec_policy::{KeySet, Policy, WindowCounters};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::sessions::SessionIssuer;
use crate::store::AuditStore;
use crate::upstream::Upstreams;

/// Handler state. Cloning is cheap.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    keys: RwLock<Arc<KeySet>>,
    policy: RwLock<Arc<Policy>>,
    counters: Mutex<WindowCounters>,
    upstreams: Upstreams,
    audit: Arc<dyn AuditStore>,
    admin_key_hash: Option<[u8; 32]>,
    sessions: SessionIssuer,
    options: Options,
}

/// Settings that change how calls are handled.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whether audit events keep tool inputs.
    pub audit_tool_input: bool,
    /// Largest accepted request body in bytes.
    pub max_body_bytes: usize,
}

impl AppState {
    /// Builds the state from loaded keys and policy, the upstreams and the audit store.
    pub fn new(
        keys: KeySet,
        policy: Policy,
        upstreams: Upstreams,
        audit: Arc<dyn AuditStore>,
        admin_key: Option<&str>,
        sessions: SessionIssuer,
        options: Options,
    ) -> Self {
        let admin_key_hash = admin_key.map(|key| Sha256::digest(key.as_bytes()).into());
        let inner = Inner {
            keys: RwLock::new(Arc::new(keys)),
            policy: RwLock::new(Arc::new(policy)),
            counters: Mutex::new(WindowCounters::new()),
            upstreams,
            audit,
            admin_key_hash,
            sessions,
            options,
        };
        Self { inner: Arc::new(inner) }
    }

    /// The model keys in force.
    pub fn keys(&self) -> Option<Arc<KeySet>> {
        self.inner.keys.read().ok().map(|keys| Arc::clone(&keys))
    }

    /// The policy in force.
    pub fn policy(&self) -> Option<Arc<Policy>> {
        self.inner.policy.read().ok().map(|policy| Arc::clone(&policy))
    }

    /// Replaces the policy in force.
    pub fn set_policy(&self, policy: Policy) {
        if let Ok(mut current) = self.inner.policy.write() {
            *current = Arc::new(policy);
        }
    }

    /// Call counters for limits; `None` if a thread panicked while holding them.
    pub fn counters(&self) -> Option<std::sync::MutexGuard<'_, WindowCounters>> {
        self.inner.counters.lock().ok()
    }

    /// The upstream MCP servers.
    pub fn upstreams(&self) -> &Upstreams {
        &self.inner.upstreams
    }

    /// The audit store.
    pub fn audit(&self) -> &dyn AuditStore {
        self.inner.audit.as_ref()
    }

    /// The session id issuer.
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
