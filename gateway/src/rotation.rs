//! OIDC key rotation (DESIGN §4, §12) as a state machine persisted in the store and driven by
//! the injected clock:
//!
//! 1. `agentkeys admin keys rotate-oidc` adds the next key to the set: it is **published** in
//!    the JWKS at once, while the current key keeps signing.
//! 2. After `switch_delay` (default 24 h: relying parties such as AWS refresh their copy of the
//!    JWKS in the meantime) the next key **signs**.
//! 3. After the longest token lifetime (3,600 s) plus the verifiers' cache period (the JWKS is
//!    served with `max-age=300`), the old key is **retired**: removed from the JWKS and moved to
//!    `keys/oidc/retired/`.
//!
//! The state (`keys.oidc.rotation` in the store's meta table, JSON) and the signing kid
//! (`keys.oidc.current`) are written before the signer changes, and steps are re-applied at
//! start, so a crash between them repeats a step rather than skipping it. The machine advances
//! whenever the JWKS or a token is served, or the admin asks for the state: no timer, so tests
//! drive it with a manual clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentkeys_actors::signer::{CurrentKids, KeySetName, SignerHandle};
use agentkeys_runtime::Clock;
use agentkeys_runtime::store::Store;

use serde::{Deserialize, Serialize};

/// The store's meta name of the rotation state.
pub const META: &str = "keys.oidc.rotation";
/// Longest OIDC token lifetime.
pub const MAX_TOKEN: Duration = Duration::from_secs(3600);
/// How long verifiers may cache the JWKS.
pub const VERIFIER_CACHE: Duration = Duration::from_secs(300);

/// Persisted rotation state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotationState {
    /// The published key that starts signing at `switch_at` (ms).
    pub next: Option<Pending>,
    /// Old keys still published until `at` (ms).
    pub retiring: Vec<Pending>,
}

/// A key and when its next step is due (ms since the epoch).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The key.
    pub kid: String,
    /// When.
    pub at: u64,
}

/// What a step did, for logs and the admin answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// `kid` now signs.
    Switched {
        /// The key.
        kid: String,
    },
    /// `kid` left the JWKS.
    Retired {
        /// The key.
        kid: String,
    },
}

/// Why a rotation request failed.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    /// A rotation is already under way.
    #[error("a rotation is in progress (key {0} signs from its switch time); wait for it")]
    InProgress(String),
    /// The signer or the store failed.
    #[error("{0}")]
    Failed(String),
}

/// The rotation driver.
pub struct Rotator {
    signer: SignerHandle,
    store: Arc<Store>,
    clock: Arc<dyn Clock>,
    switch_delay: Duration,
    state: Mutex<RotationState>,
    /// Held across each read-modify-write of the state (begin, tick), so two concurrent
    /// requests cannot interleave and lose a key being retired.
    steps: tokio::sync::Mutex<()>,
    /// On a shared store: when this node last read the rotation other nodes may have
    /// advanced (ms; 0 = never).
    synced_ms: std::sync::atomic::AtomicU64,
}

/// How often a node of a shared store reads the rotation state other nodes may have changed.
const SYNC_EVERY_MS: u64 = 1_000;

impl std::fmt::Debug for Rotator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rotator")
            .field("switch_delay", &self.switch_delay)
            .finish_non_exhaustive()
    }
}

fn failed(e: impl std::fmt::Display) -> RotationError {
    RotationError::Failed(e.to_string())
}

impl Rotator {
    /// Loads the persisted state (a missing one is empty).
    pub fn load(
        signer: SignerHandle,
        store: Arc<Store>,
        clock: Arc<dyn Clock>,
        switch_delay: Duration,
    ) -> Result<Self, RotationError> {
        let state = match store.meta(META).map_err(failed)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(failed)?,
            None => RotationState::default(),
        };
        Ok(Self {
            signer,
            store,
            clock,
            switch_delay,
            state: Mutex::new(state),
            steps: tokio::sync::Mutex::new(()),
            synced_ms: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// On a shared store, takes what other nodes did (at most once a second): the keys they
    /// added (imported into this signer from their wrapped form), the signing key they
    /// switched to, the keys they retired, and the rotation state. A rotation begun on one
    /// node is therefore published by every node within a second, long before its key signs.
    async fn sync(&self) -> Result<(), RotationError> {
        use std::sync::atomic::Ordering;
        if !self.store.is_shared() {
            return Ok(());
        }
        let now = self.clock.now().as_millis();
        let last = self.synced_ms.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < SYNC_EVERY_MS {
            return Ok(());
        }
        self.synced_ms.store(now.max(1), Ordering::Relaxed);
        let state: RotationState = match self.store.meta(META).map_err(failed)? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(failed)?,
            None => RotationState::default(),
        };
        let stored: Vec<_> = crate::keystore::read(&self.store)
            .map_err(failed)?
            .into_iter()
            .filter(|k| k.set == KeySetName::Oidc)
            .collect();
        for key in &stored {
            let kid = key.kid.clone();
            if self.signer.import_key(key.clone()).await.map_err(failed)? {
                tracing::info!(%kid, "oidc key added by another node");
            }
        }
        let recorded = recorded_oidc_kid(&self.store)?;
        if let Some(kid) = recorded
            && kid != self.signer.current_kid(KeySetName::Oidc)
            && stored.iter().any(|k| k.kid == kid)
        {
            self.signer
                .use_key(KeySetName::Oidc, &kid)
                .await
                .map_err(failed)?;
            tracing::info!(%kid, "oidc signing key switched by another node");
        }
        let published = self.signer.public_jwks(KeySetName::Oidc);
        for kid in published.iter().filter_map(|k| k["kid"].as_str()) {
            if !stored.iter().any(|k| k.kid == kid) {
                // Retired by another node (a failure here means it is the signing key: kept).
                let _ = self.signer.retire_key(KeySetName::Oidc, kid).await;
            }
        }
        *self.lock() = state;
        Ok(())
    }

    /// The signer whose keys it rotates.
    pub fn signer(&self) -> &SignerHandle {
        &self.signer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RotationState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn persist(&self, state: &RotationState) -> Result<(), RotationError> {
        let bytes = serde_json::to_vec(state).map_err(failed)?;
        self.store.set_meta(META, bytes).await.map_err(failed)
    }

    /// Step 1: publishes a new key that signs after the switch delay.
    pub async fn begin(&self) -> Result<RotationState, RotationError> {
        let _step = self.steps.lock().await;
        self.synced_ms
            .store(0, std::sync::atomic::Ordering::Relaxed);
        self.sync().await?;
        if let Some(next) = self.lock().next.clone() {
            return Err(RotationError::InProgress(next.kid));
        }
        let kid = self
            .signer
            .add_key(KeySetName::Oidc)
            .await
            .map_err(failed)?;
        crate::keystore::persist_new(&self.store, &self.signer)
            .await
            .map_err(failed)?;
        let at = self.clock.now().as_millis() + duration_ms(self.switch_delay);
        let mut state = self.lock().clone();
        state.next = Some(Pending { kid, at });
        self.persist(&state).await?;
        *self.lock() = state.clone();
        tracing::info!(kid = ?state.next.as_ref().map(|n| &n.kid), "oidc key published; it signs after the switch delay");
        Ok(state)
    }

    /// Applies every step that is due at the clock's now; returns them.
    pub async fn tick(&self) -> Result<Vec<Step>, RotationError> {
        if self.store.is_shared() {
            let _step = self.steps.lock().await;
            self.sync().await?;
        }
        if !self.due() {
            return Ok(Vec::new());
        }
        let _step = self.steps.lock().await;
        let now = self.clock.now().as_millis();
        let mut steps = Vec::new();
        let mut state = self.lock().clone();
        if let Some(next) = state.next.clone().filter(|n| n.at <= now) {
            let old = self.signer.current_kid(KeySetName::Oidc);
            state.next = None;
            if old != next.kid {
                state.retiring.push(Pending {
                    kid: old,
                    at: now + duration_ms(MAX_TOKEN + VERIFIER_CACHE),
                });
            }
            self.record_current(&next.kid).await?;
            self.persist(&state).await?;
            self.signer
                .use_key(KeySetName::Oidc, &next.kid)
                .await
                .map_err(failed)?;
            steps.push(Step::Switched { kid: next.kid });
        }
        let (due, kept): (Vec<Pending>, Vec<Pending>) =
            state.retiring.drain(..).partition(|r| r.at <= now);
        state.retiring = kept;
        if !due.is_empty() {
            // A shared store marks the keys retired first (idempotent), so no crash between
            // the steps leaves a retired key loadable by the next start.
            for old in &due {
                crate::keystore::retire(&self.store, &self.signer, KeySetName::Oidc, &old.kid)
                    .await
                    .map_err(failed)?;
            }
            self.persist(&state).await?;
            for old in due {
                // Already retired by an earlier, interrupted tick: nothing left to do.
                if self
                    .signer
                    .retire_key(KeySetName::Oidc, &old.kid)
                    .await
                    .is_ok()
                {
                    steps.push(Step::Retired { kid: old.kid });
                }
            }
        }
        *self.lock() = state;
        for step in &steps {
            tracing::info!(?step, "oidc key rotation step");
        }
        Ok(steps)
    }

    /// Whether a step is due (a cheap check without the step lock: every JWKS and token
    /// request asks).
    fn due(&self) -> bool {
        let now = self.clock.now().as_millis();
        let state = self.lock();
        state.next.as_ref().is_some_and(|n| n.at <= now)
            || state.retiring.iter().any(|r| r.at <= now)
    }

    async fn record_current(&self, kid: &str) -> Result<(), RotationError> {
        let name = oidc_current_meta()?;
        self.store
            .set_meta(name, kid.as_bytes().to_vec())
            .await
            .map_err(failed)
    }

    /// The state, after applying what is due.
    pub async fn status(&self) -> Result<serde_json::Value, RotationError> {
        let steps = self.tick().await?;
        let state = self.lock().clone();
        Ok(serde_json::json!({
            "signing": self.signer.current_kid(KeySetName::Oidc),
            "published": self.signer.public_jwks(KeySetName::Oidc).iter().filter_map(|k| k["kid"].as_str().map(String::from)).collect::<Vec<_>>(),
            "next": state.next.map(|n| serde_json::json!({"kid": n.kid, "signs_from": rfc(n.at)})),
            "retiring": state.retiring.iter().map(|r| serde_json::json!({"kid": r.kid, "retired_at": rfc(r.at)})).collect::<Vec<_>>(),
            "steps": steps,
        }))
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn rfc(ms: u64) -> String {
    agentkeys_actors::crypto::rfc3339::format(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// The meta name of the OIDC set's signing kid.
fn oidc_current_meta() -> Result<&'static str, RotationError> {
    CurrentKids::META_NAMES
        .iter()
        .find(|(set, _)| *set == KeySetName::Oidc)
        .map(|(_, name)| *name)
        .ok_or_else(|| failed("no meta name for the OIDC set"))
}

/// The OIDC signing kid recorded in the store.
fn recorded_oidc_kid(store: &Store) -> Result<Option<String>, RotationError> {
    Ok(store
        .meta(oidc_current_meta()?)
        .map_err(failed)?
        .map(|v| String::from_utf8_lossy(&v).into_owned()))
}
