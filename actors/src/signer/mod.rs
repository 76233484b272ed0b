//! The signer: the only holder of key material.
//!
//! **Owns** K3 (every managed wallet and sr25519 key derives from it), the session key set
//! (K1), the OIDC key set (K2) and the audit key, in one [`SignerState`] shared by every
//! instance. **Runs** on its own pool of threads (one per core) fed by one queue that callers
//! write to directly (no dispatcher thread in between), so 15–150 µs of crypto never
//! stalls an arbiter that hosts other actors. **Takes** one message per operation (see
//! [`messages`]); callers use [`SignerHandle`]. Operations on behalf of an actor take a
//! [`LiveProof`], which only the runtime's lineage check produces. **Restart policy**: each
//! operation runs under `catch_unwind`; a panic fails that request with `Unavailable`, the
//! thread goes on with the next operation as a fresh instance would (the state is shared and
//! changes only under its locks, so nothing is lost) and the count is reported by
//! [`SignerHandle::health`] as a replacement. **Lost on restart**: nothing but the cache of
//! derived wallets when a panic poisoned its lock (it is then bypassed and rebuilt on demand).

mod error;
pub mod keys;
pub mod messages;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::ledger::HeadSigner;
use agentkeys_runtime::{LiveProof, Omni};
use serde_json::Value;

pub use crate::crypto::account::Account;
pub use error::SignerError;
pub use keys::{P256Key, StoredKey};
pub use messages::{KeySetName, SignedMessage, SignedSr25519, SignedTypedData};

use crate::crypto::secret::{Fingerprint, MasterSecret};
use crate::crypto::wallet::{WalletKey, derive_wallet};

/// Most derived wallets kept in memory; the cache is emptied when full.
pub const WALLET_CACHE: usize = 16_384;

/// Where the P-256 key sets (K1, K2, the audit key) are kept.
#[derive(Debug, Clone)]
pub enum KeyPlacement {
    /// Files in `session/`, `oidc/`, `audit/` below this directory (`<data>/keys`), 0600: a
    /// store on one machine.
    Files(PathBuf),
    /// In a store every node shares (PostgreSQL), wrapped by a key HKDF derives from K3: these
    /// are the keys read from it at start. Keys the signer creates are handed out by
    /// [`SignerHandle::take_new_keys`] for the caller to store before using them.
    Stored(Vec<StoredKey>),
}

/// How to start the signer.
#[derive(Debug, Clone)]
pub struct SignerConfig {
    /// Where the P-256 key sets are kept.
    pub keys: KeyPlacement,
    /// The deployment's `client_id`.
    pub client_id: String,
    /// host[:port] of `public_url`: EIP-4361 text for it is never EIP-191-signed.
    pub siwe_domain: String,
    /// Pool threads (default: one per core).
    pub threads: usize,
}

/// A set of P-256 keys (newest file first) and the one that signs.
#[derive(Debug)]
pub(crate) struct KeySet {
    keys: Vec<P256Key>,
    current: usize,
}

impl KeySet {
    /// Loads the set in `dir`; the signing key is `recorded` (the kid the store holds) or, the
    /// first time, the newest key. A recorded kid without a file refuses to start.
    fn load(dir: &std::path::Path, recorded: Option<&str>) -> Result<Self, SignerError> {
        let keys = keys::load_or_create_set(dir, recorded.is_none())?;
        Self::with_current(keys, recorded, || {
            format!(
                "no key file in {} has it; restore the key file",
                dir.display()
            )
        })
    }

    /// The set `name` from the keys a shared store holds (newest first); the first time (no
    /// recorded kid, no key) a new key is created and queued in `created` for the caller to
    /// store.
    fn unwrap_stored(
        name: KeySetName,
        stored: &[StoredKey],
        kek: &[u8; 32],
        recorded: Option<&str>,
        created: &mut Vec<StoredKey>,
        now_ms: u64,
    ) -> Result<Self, SignerError> {
        let mut keys = keys::unwrap_set(kek, stored, name)?;
        if keys.is_empty() && recorded.is_none() {
            let (key, der) = keys::generate_key()?;
            created.push(StoredKey::wrap(kek, name, &key, &der, now_ms)?);
            keys.push(key);
        }
        Self::with_current(keys, recorded, || {
            "the store holds no such key; restore the database from a backup".to_string()
        })
    }

    fn with_current(
        keys: Vec<P256Key>,
        recorded: Option<&str>,
        missing: impl FnOnce() -> String,
    ) -> Result<Self, SignerError> {
        let current = match recorded {
            None if keys.is_empty() => {
                return Err(SignerError::KeyFile("the key set is empty".into()));
            }
            None => 0,
            Some(kid) => keys.iter().position(|k| k.kid() == kid).ok_or_else(|| {
                SignerError::KeyFile(format!(
                    "the store names key {kid} as current, but {}",
                    missing()
                ))
            })?,
        };
        Ok(Self { keys, current })
    }

    fn current(&self) -> &P256Key {
        &self.keys[self.current]
    }

    fn position(&self, kid: &str) -> Option<usize> {
        self.keys.iter().position(|k| k.kid() == kid)
    }
}

/// The signing kid of each key set, as recorded in the store (the rotation state).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentKids {
    /// K1.
    pub session: Option<String>,
    /// K2.
    pub oidc: Option<String>,
    /// The audit key.
    pub audit: Option<String>,
}

impl CurrentKids {
    /// The store's meta names of the three entries.
    pub const META_NAMES: [(KeySetName, &'static str); 3] = [
        (KeySetName::Session, "keys.session.current"),
        (KeySetName::Oidc, "keys.oidc.current"),
        (KeySetName::Audit, "keys.audit.current"),
    ];

    /// The recorded kid of `set`.
    pub fn get(&self, set: KeySetName) -> Option<&str> {
        match set {
            KeySetName::Session => self.session.as_deref(),
            KeySetName::Oidc => self.oidc.as_deref(),
            KeySetName::Audit => self.audit.as_deref(),
        }
    }
}

/// Everything the signer instances share.
pub struct SignerState {
    k3: MasterSecret,
    client_id: String,
    siwe_domain: String,
    placement: Placement,
    session: RwLock<KeySet>,
    oidc: RwLock<KeySet>,
    audit: RwLock<KeySet>,
    wallets: Mutex<HashMap<Omni, Arc<WalletKey>>>,
    replaced: AtomicU64,
    threads: usize,
}

impl std::fmt::Debug for SignerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerState")
            .field("client_id", &self.client_id)
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl SignerState {
    /// The wallet of `omni`, from the bounded cache or derived (HKDF + scalar check).
    pub(crate) fn wallet(&self, omni: &Omni) -> Result<Arc<WalletKey>, SignerError> {
        if let Some(w) = self.wallets.lock().ok().and_then(|c| c.get(omni).cloned()) {
            return Ok(w);
        }
        let wallet = Arc::new(
            derive_wallet(&self.k3, omni)
                .map_err(|_| SignerError::Internal("wallet derivation"))?,
        );
        if let Ok(mut cache) = self.wallets.lock() {
            if cache.len() >= WALLET_CACHE {
                cache.clear();
            }
            cache.insert(*omni, wallet.clone());
        }
        Ok(wallet)
    }

    fn lock(&self, name: KeySetName) -> &RwLock<KeySet> {
        match name {
            KeySetName::Session => &self.session,
            KeySetName::Oidc => &self.oidc,
            KeySetName::Audit => &self.audit,
        }
    }

    pub(crate) fn set(&self, name: KeySetName) -> std::sync::RwLockReadGuard<'_, KeySet> {
        self.lock(name).read().unwrap_or_else(|p| p.into_inner())
    }

    fn set_mut(&self, name: KeySetName) -> std::sync::RwLockWriteGuard<'_, KeySet> {
        self.lock(name).write().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory of a set kept in files (`None` when the keys live in a shared store).
    fn dir(&self, name: KeySetName) -> Option<PathBuf> {
        match &self.placement {
            Placement::Files(dir) => Some(dir.join(name.dir_name())),
            Placement::Stored { .. } => None,
        }
    }

    /// A new key of `name`, persisted as the placement requires: a file written now, or a
    /// wrapped key queued for the caller to store ([`SignerHandle::take_new_keys`]).
    fn new_key(&self, name: KeySetName) -> Result<P256Key, SignerError> {
        match &self.placement {
            Placement::Files(dir) => keys::create_key(&dir.join(name.dir_name())),
            Placement::Stored { kek, created } => {
                let (key, der) = keys::generate_key()?;
                let stored = StoredKey::wrap(kek, name, &key, &der, now_ms())?;
                created
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(stored);
                Ok(key)
            }
        }
    }
}

/// Where this signer's key sets live (see [`KeyPlacement`]).
enum Placement {
    Files(PathBuf),
    Stored {
        kek: zeroize::Zeroizing<[u8; 32]>,
        /// Keys created and not yet handed to the caller to store.
        created: Mutex<Vec<StoredKey>>,
    },
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One operation of the signer, run on a signer thread with the shared state (see
/// [`messages`]). Only this crate's messages implement it.
pub trait SignerOp: Send + 'static {
    /// The answer on success.
    type Ok: Send + 'static;

    /// Runs the operation.
    fn run(self, state: &SignerState) -> Result<Self::Ok, SignerError>;
}

/// An operation with where its answer goes.
type Job = Box<dyn FnOnce(&SignerState) + Send>;

/// A pool of signer threads fed by one queue. Callers on any thread put their operation on the
/// queue themselves (no dispatcher in between); a free thread takes it, runs it under
/// `catch_unwind` and sends the answer back.
struct Pool {
    queue: crossbeam_channel::Sender<Job>,
}

impl Pool {
    fn start(state: &Arc<SignerState>, threads: usize, name: &str) -> Result<Self, SignerError> {
        let (queue, jobs) = crossbeam_channel::unbounded::<Job>();
        for _ in 0..threads {
            let (state, jobs) = (state.clone(), jobs.clone());
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || {
                    // Ends when every handle (every sender) is gone.
                    while let Ok(job) = jobs.recv() {
                        job(&state);
                    }
                })
                .map_err(|_| SignerError::Internal("cannot start a signer thread"))?;
        }
        Ok(Self { queue })
    }

    /// Queues `op`; `reply` gets its answer on the signer thread. `false` if the pool is gone.
    fn submit<O: SignerOp>(
        &self,
        op: O,
        reply: impl FnOnce(Result<O::Ok, SignerError>) + Send + 'static,
    ) -> bool {
        let job: Job = Box::new(move |state| reply(guarded(state, op)));
        self.queue.send(job).is_ok()
    }
}

/// Runs `op` under `catch_unwind`. A panic fails that operation with `Unavailable` and counts
/// a replacement; the thread goes on with the next operation (the state is shared and changes
/// only under its locks, so the next operation starts as a fresh instance would).
fn guarded<O: SignerOp>(state: &SignerState, op: O) -> Result<O::Ok, SignerError> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| op.run(state))) {
        Ok(result) => result,
        Err(_) => {
            state.replaced.fetch_add(1, Ordering::Relaxed);
            tracing::error!("a signer thread panicked; its operation failed, the thread goes on");
            Err(SignerError::Unavailable)
        }
    }
}

/// Signer health for readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignerHealth {
    /// Pool threads.
    pub threads: usize,
    /// Instances replaced after a panic since start.
    pub replaced: u64,
}

/// The typed handle to the signer pool; cheap to clone.
#[derive(Clone)]
pub struct SignerHandle {
    pool: Arc<Pool>,
    /// One thread of its own for audit heads, so a commit never queues behind wallet signatures.
    heads: Arc<Pool>,
    state: Arc<SignerState>,
}

impl std::fmt::Debug for SignerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerHandle").finish_non_exhaustive()
    }
}

/// How long the store's writer waits for a head signature before failing its batch.
const HEAD_SIGNING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the store's writer holds to sign audit chain heads: the address of the signer's
/// audit-head thread, never the key (see [`SignerHandle::audit_head_signer`]).
struct AuditHeadSigner {
    heads: Arc<Pool>,
}

impl HeadSigner for AuditHeadSigner {
    fn sign_head(&self, message: &[u8]) -> Result<(String, Vec<u8>), String> {
        // The writer is a plain thread: it sends, then blocks on the answer.
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let head = messages::SignAuditHead {
            message: message.to_vec(),
        };
        self.heads.submit(head, move |signed| {
            let _ = reply.send(signed);
        });
        match answer.recv_timeout(HEAD_SIGNING_TIMEOUT) {
            Ok(signed) => signed.map_err(|e| e.to_string()),
            Err(_) => Err("the signer did not sign the audit head in time".into()),
        }
    }

    fn sign_heads_then(&self, messages: Vec<Vec<u8>>, done: crate::ledger::audit::HeadsSigned) {
        let count = messages.len();
        let heads = messages::SignAuditHeads { messages };
        // `done` runs on the audit-head thread; if the pool is gone, the reply (and `done`) is
        // dropped with the job, and the heads stay pending.
        self.heads.submit(heads, move |signed| {
            let answers = match signed {
                Ok(answers) => answers
                    .into_iter()
                    .map(|a| a.map_err(|e| e.to_string()))
                    .collect(),
                Err(e) => vec![Err(e.to_string()); count],
            };
            done(answers);
        });
    }
}

/// The public JWKs of the key set stored in `dir`, for checking signatures offline (when no
/// signer runs, e.g. `agentkeys audit verify` on a stopped server). The private parts are read
/// and dropped here; only public keys leave this module.
pub fn public_jwks_on_disk(dir: &std::path::Path) -> Result<Vec<Value>, SignerError> {
    Ok(keys::load_set(dir)?
        .iter()
        .map(P256Key::public_jwk)
        .collect())
}

/// Starts the signer pool with `k3` (already checked against the store's fingerprint) and the
/// signing kids recorded in the store. Loads — or, the first time, creates — the P-256 key
/// sets; persist [`SignerHandle::current_kids`] afterwards. Must run inside an actix System.
pub fn start(
    config: SignerConfig,
    k3: MasterSecret,
    recorded: &CurrentKids,
) -> Result<SignerHandle, SignerError> {
    let (placement, sets) = match &config.keys {
        KeyPlacement::Files(dir) => {
            let load =
                |name: KeySetName| KeySet::load(&dir.join(name.dir_name()), recorded.get(name));
            (
                Placement::Files(dir.clone()),
                [
                    load(KeySetName::Session)?,
                    load(KeySetName::Oidc)?,
                    load(KeySetName::Audit)?,
                ],
            )
        }
        KeyPlacement::Stored(stored) => {
            let kek = k3.signing_key_kek();
            let mut created = Vec::new();
            let now = now_ms();
            let mut load = |name: KeySetName| {
                KeySet::unwrap_stored(name, stored, &kek, recorded.get(name), &mut created, now)
            };
            let sets = [
                load(KeySetName::Session)?,
                load(KeySetName::Oidc)?,
                load(KeySetName::Audit)?,
            ];
            (
                Placement::Stored {
                    kek,
                    created: Mutex::new(created),
                },
                sets,
            )
        }
    };
    let [session, oidc, audit] = sets;
    let state = Arc::new(SignerState {
        k3,
        client_id: config.client_id,
        siwe_domain: config.siwe_domain,
        placement,
        session: RwLock::new(session),
        oidc: RwLock::new(oidc),
        audit: RwLock::new(audit),
        wallets: Mutex::new(HashMap::new()),
        replaced: AtomicU64::new(0),
        threads: config.threads.max(1),
    });
    let pool = Arc::new(Pool::start(&state, state.threads, "agentkeys-signer")?);
    let heads = Arc::new(Pool::start(&state, 1, "agentkeys-heads")?);
    Ok(SignerHandle { pool, heads, state })
}

impl SignerHandle {
    async fn ask<O: SignerOp>(&self, op: O) -> Result<O::Ok, SignerError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.pool.submit(op, move |result| {
            let _ = reply.send(result);
        });
        answer.await.map_err(|_| SignerError::Unavailable)?
    }

    /// The fingerprint of the K3 in use.
    pub fn k3_fingerprint(&self) -> Fingerprint {
        self.state.k3.fingerprint()
    }

    /// The key that seals the logins in progress every node of a deployment on one store
    /// keeps in the database (HKDF from K3; it signs nothing).
    pub fn pending_key(&self) -> zeroize::Zeroizing<[u8; 32]> {
        self.state.k3.pending_key()
    }

    /// The key of server `DPoP-Nonce`s shared by every node of a deployment on one store
    /// (HKDF from K3; it authenticates nonces and signs nothing).
    pub fn dpop_nonce_key(&self) -> zeroize::Zeroizing<[u8; 32]> {
        self.state.k3.dpop_nonce_key()
    }

    /// Whether an operation asked now would find a pool thread without queueing behind others
    /// (fewer operations wait than the pool has threads). A hint: the pool may be busier by the
    /// time the operation is queued.
    pub fn starts_now(&self) -> bool {
        self.pool.queue.len() < self.state.threads
    }

    /// Pool size and replacements.
    pub fn health(&self) -> SignerHealth {
        SignerHealth {
            threads: self.state.threads,
            replaced: self.state.replaced.load(Ordering::Relaxed),
        }
    }

    /// The HMAC key of `master`'s approval webhook at `version` (shown once when it is set).
    pub async fn webhook_secret(
        &self,
        master: Omni,
        version: u64,
    ) -> Result<zeroize::Zeroizing<[u8; 32]>, SignerError> {
        self.ask(messages::WebhookSecret { master, version }).await
    }

    /// HMAC-SHA256 of `message` with `master`'s webhook key at `version`.
    pub async fn webhook_mac(
        &self,
        master: Omni,
        version: u64,
        message: Vec<u8>,
    ) -> Result<[u8; 32], SignerError> {
        self.ask(messages::WebhookMac {
            master,
            version,
            message,
        })
        .await
    }

    /// Encrypts a credential value for the vault of the proof's master (a master's proof).
    pub async fn vault_seal(
        &self,
        msg: messages::VaultSeal,
    ) -> Result<messages::Sealed, SignerError> {
        self.ask(msg).await
    }

    /// Decrypts a credential for the proof's actor (`Tampered` if it does not authenticate).
    pub async fn vault_open(
        &self,
        msg: messages::VaultOpen,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, SignerError> {
        self.ask(msg).await
    }

    /// Public identifiers of the actor at `path` under `master` (no proof needed: public data).
    pub async fn account(&self, master: Omni, path: String) -> Result<Account, SignerError> {
        self.ask(messages::DeriveAccount { master, path }).await
    }

    /// EIP-191 `personal_sign` with the wallet of the proof's actor. Refuses EIP-4361 text for this
    /// gateway's domain.
    pub async fn sign_eip191(
        &self,
        message: Vec<u8>,
        proof: LiveProof,
    ) -> Result<SignedMessage, SignerError> {
        self.ask(messages::SignEip191 { message, proof }).await
    }

    /// EIP-191 `personal_sign` with the anchor wallet of the master `proof` names, created by the
    /// email or OpenID identity `(kind, value)` (refused for anyone else).
    pub async fn sign_eip191_as_anchor(
        &self,
        identity: (String, String),
        message: Vec<u8>,
        proof: LiveProof,
    ) -> Result<SignedMessage, SignerError> {
        self.ask(messages::SignEip191AsAnchor {
            identity,
            message,
            proof,
        })
        .await
    }

    /// EIP-712 v4 with the wallet of the proof's actor; returns the signature and the digest.
    pub async fn sign_typed_data(
        &self,
        typed: Value,
        proof: LiveProof,
    ) -> Result<SignedTypedData, SignerError> {
        self.ask(messages::SignTypedData { typed, proof }).await
    }

    /// Signs a transaction request with the wallet of the proof's actor.
    pub async fn sign_transaction(
        &self,
        tx: Value,
        proof: LiveProof,
    ) -> Result<crate::crypto::tx::SignedTx, SignerError> {
        self.ask(messages::SignTransaction { tx, proof }).await
    }

    /// sr25519 in the Substrate context with the proof's actor's key (`path` must be its path);
    /// the signature and the public key (one derivation).
    pub async fn sign_sr25519(
        &self,
        path: String,
        message: Vec<u8>,
        proof: LiveProof,
    ) -> Result<SignedSr25519, SignerError> {
        self.ask(messages::SignSr25519 {
            path,
            message,
            proof,
        })
        .await
    }

    /// A compact ES256 JWS with the current key of `set` (`alg` and `kid` are set here).
    pub async fn sign_jwt(
        &self,
        set: KeySetName,
        header: Value,
        claims: Value,
    ) -> Result<String, SignerError> {
        self.ask(messages::SignJwt {
            set,
            header,
            claims,
        })
        .await
    }

    /// The signing kid of each set (to record in the store).
    pub fn current_kids(&self) -> CurrentKids {
        CurrentKids {
            session: Some(self.current_kid(KeySetName::Session)),
            oidc: Some(self.current_kid(KeySetName::Oidc)),
            audit: Some(self.current_kid(KeySetName::Audit)),
        }
    }

    /// Makes one signer thread panic (tests of the replacement path; no route sends this).
    #[doc(hidden)]
    pub async fn inject_panic(&self) -> Result<(), SignerError> {
        self.ask(messages::InjectPanic).await
    }

    /// The capability the store's writer uses to sign audit chain heads: it sends each head to
    /// the signer's audit-head thread, which signs only messages carrying the audit-head label.
    pub fn audit_head_signer(&self) -> Arc<dyn HeadSigner> {
        Arc::new(AuditHeadSigner {
            heads: self.heads.clone(),
        })
    }

    /// The signing kid of `set`.
    pub fn current_kid(&self, set: KeySetName) -> String {
        self.state.set(set).current().kid().to_string()
    }

    /// Adds a new key to `set` (published from now on, not yet signing); returns its kid.
    pub async fn add_key(&self, set: KeySetName) -> Result<String, SignerError> {
        self.ask(messages::AddKey { set }).await
    }

    /// Keys created since the last call that a shared store must keep (empty when the keys are
    /// files). Store them before a key is used: [`start`]'s first keys before serving,
    /// [`add_key`](Self::add_key)'s before [`use_key`](Self::use_key).
    pub fn take_new_keys(&self) -> Vec<StoredKey> {
        match &self.state.placement {
            Placement::Files(_) => Vec::new(),
            Placement::Stored { created, .. } => {
                std::mem::take(&mut *created.lock().unwrap_or_else(|p| p.into_inner()))
            }
        }
    }

    /// Whether the key sets live in a shared store (else in files).
    pub fn keys_stored(&self) -> bool {
        matches!(self.state.placement, Placement::Stored { .. })
    }

    /// Adds a key another node of a shared store created (see [`messages::ImportKey`]).
    pub async fn import_key(&self, key: StoredKey) -> Result<bool, SignerError> {
        self.ask(messages::ImportKey { key }).await
    }

    /// Makes `kid` the signing key of `set`.
    pub async fn use_key(&self, set: KeySetName, kid: &str) -> Result<(), SignerError> {
        self.ask(messages::UseKey {
            set,
            kid: kid.to_string(),
        })
        .await
    }

    /// Removes `kid` from `set` (no longer published or usable) and moves its file to
    /// `retired/`. The signing key cannot be retired.
    pub async fn retire_key(&self, set: KeySetName, kid: &str) -> Result<(), SignerError> {
        self.ask(messages::RetireKey {
            set,
            kid: kid.to_string(),
        })
        .await
    }

    /// The public JWKs of a key set, the signing key first (never private parts).
    pub fn public_jwks(&self, set: KeySetName) -> Vec<Value> {
        self.state
            .set(set)
            .keys
            .iter()
            .map(P256Key::public_jwk)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_starts_now_only_while_fewer_wait_than_the_pool_has_threads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = SignerConfig {
            keys: KeyPlacement::Files(dir.path().join("keys")),
            client_id: "agentkeys".into(),
            siwe_domain: "127.0.0.1:8090".into(),
            threads: 1,
        };
        let k3 = MasterSecret::from_bytes([7; 32]);
        let signer = start(config, k3, &CurrentKids::default()).expect("starts");
        assert!(signer.starts_now(), "an idle pool");
        // The pool's one thread held by a job, a second job waiting behind it.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (done, finished) = std::sync::mpsc::channel::<&str>();
        let first = done.clone();
        let hold: Job = Box::new(move |_| {
            let _ = held.recv();
            let _ = first.send("first");
        });
        let next: Job = Box::new(move |_| {
            let _ = done.send("second");
        });
        signer.pool.queue.send(hold).expect("queued");
        signer.pool.queue.send(next).expect("queued");
        assert!(!signer.starts_now(), "one job waits for the only thread");
        release.send(()).expect("released");
        assert_eq!(finished.recv().expect("first"), "first");
        assert_eq!(finished.recv().expect("second"), "second");
        assert!(signer.starts_now(), "the queue drained");
    }
}
