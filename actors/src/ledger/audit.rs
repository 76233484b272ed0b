//! The audit log: append-only rows, one hash chain per master, a global sequence, and chain
//! heads signed once per batch.
//!
//! Rows are written by the mutation that makes the change, inside its transaction, so a change
//! and its row commit together or not at all. Encoding of a row, version 1 (integers
//! big-endian, pinned; `docs/audit.md` repeats it):
//!
//! ```text
//! u8  version = 1
//! u64 global sequence (1-based, across all masters)
//! [32] master omni (the chain)
//! u64 chain sequence (1-based within the master's chain)
//! u64 time, milliseconds since the Unix epoch
//! u8  has_actor, [32] actor omni (who acted; absent = host admin or the system)
//! u16 operation code (see [`op`])
//! u8  has_target, [32] target omni
//! u8  outcome (see [`outcome`])
//! u16 request id length, request id bytes (UTF-8)
//! [32] detail: SHA-256 of the signed message, the token or the binding key; zero if none
//! ```
//!
//! A row that records a spend (a signature that moved value, docs/policies.md) is version 2:
//! the same fields, then `u8 count` and per spend `u8 asset kind (0 native, 1 token)`, `[20]
//! token` (kind 1 only), `u64 chain`, `u128 amount` (saturating). Rows without a spend stay
//! version 1, byte for byte.
//!
//! `hash = SHA256(prev_hash || encoding)`, `prev_hash` of the first row = 32 zero bytes. The
//! stored value is `encoding || hash`. After every batch that appended rows, each touched
//! chain's head is signed: the message is `"agentkeys-audit-head-v1" || master || u64 length ||
//! head hash || u64 global sequence of the head row`.

use agentkeys_runtime::store::{ReadableTable, TableDefinition, WriteTransaction};
use sha2::{Digest, Sha256};

use agentkeys_runtime::Omni;
use agentkeys_runtime::Timestamp;
pub use agentkeys_runtime::store::Origin;
use agentkeys_runtime::store::encoding::{Reader, put_bytes, put_omni};
use agentkeys_runtime::store::{DecodeError, StoreError};

pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
pub(crate) const AUDIT_CHAIN: TableDefinition<(&[u8; 32], u64), u64> =
    TableDefinition::new("audit_chain");
pub(crate) const AUDIT_HEADS: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new("audit_heads");
pub(crate) const AUDIT_UNSIGNED: TableDefinition<&[u8; 32], ()> =
    TableDefinition::new("audit_unsigned");

/// The version byte of rows without a spend.
pub const AUDIT_ROW_VERSION: u8 = 1;
/// The version byte of rows that record a spend.
pub const AUDIT_ROW_VERSION_SPEND: u8 = 2;
/// Domain separation of signed chain heads.
pub const HEAD_LABEL: &[u8] = b"agentkeys-audit-head-v1";

/// Stable operation codes (upstream's numbers where they exist).
pub mod op {
    /// An actor was created (a master at its first login).
    pub const ACTOR_CREATE: u16 = 1;
    /// An actor (and so its subtree) was revoked.
    pub const ACTOR_REVOKE: u16 = 2;
    /// An actor's scopes were set.
    pub const SCOPES_SET: u16 = 3;
    /// A login issued a session.
    pub const LOGIN: u16 = 10;
    /// A session was refreshed.
    pub const SESSION_REFRESH: u16 = 11;
    /// An EIP-191 signature (upstream `SignEip191`).
    pub const SIGN_EIP191: u16 = 20;
    /// An EIP-712 signature (upstream `SignEip712`).
    pub const SIGN_EIP712: u16 = 21;
    /// A transaction signature.
    pub const SIGN_TX: u16 = 22;
    /// An sr25519 signature.
    pub const SIGN_SR25519: u16 = 23;
    /// An OIDC token was minted.
    pub const OIDC_TOKEN: u16 = 30;
    /// A link code was issued.
    pub const LINK_CODE_ISSUE: u16 = 40;
    /// A link code was redeemed.
    pub const LINK_CODE_REDEEM: u16 = 41;
    /// A used link code was presented by another key (alert).
    pub const LINK_CODE_REUSE: u16 = 42;
    /// A device binding was added (upstream `DeviceAdd`).
    pub const DEVICE_ADD: u16 = 50;
    /// A device binding was tombstoned (upstream `DeviceRevoke`).
    pub const DEVICE_REVOKE: u16 = 51;
    /// An actor was quarantined after repeated crashes.
    pub const QUARANTINE: u16 = 60;
    /// A quarantine was lifted early by the host administrator.
    pub const QUARANTINE_LIFTED: u16 = 61;
    /// A policy was set on an actor (detail: SHA-256 of the document).
    pub const POLICY_SET: u16 = 70;
    /// A policy was removed from an actor.
    pub const POLICY_REMOVE: u16 = 71;
    /// A signing request was refused by a policy rule (detail: the request's digest).
    pub const POLICY_DENIED: u16 = 72;
    /// A signing request was refused because a budget would be exceeded.
    pub const BUDGET_EXCEEDED: u16 = 73;
    /// A signing request was refused by a policy's rate limit.
    pub const RATE_LIMITED: u16 = 74;
    /// A signing request waits for a person (detail: the approval id).
    pub const APPROVAL_REQUESTED: u16 = 75;
    /// A person approved a request (detail: the approval id; the signature has its own row).
    pub const APPROVAL_APPROVED: u16 = 76;
    /// A person denied a request (detail: the approval id).
    pub const APPROVAL_DENIED: u16 = 77;
    /// An approval's webhook address was set (detail: SHA-256 of the URL).
    pub const APPROVAL_WEBHOOK_SET: u16 = 78;
    /// A login identity was linked to a master (detail: SHA-256 of `type:value`).
    pub const IDENTITY_LINK: u16 = 80;
    /// A login identity was unlinked and tombstoned (detail: SHA-256 of `type:value`).
    pub const IDENTITY_UNLINK: u16 = 81;
    /// A credential version was written by the master (detail: SHA-256 of `service:version`).
    pub const CRED_SET: u16 = 90;
    /// A credential was deleted with its versions (detail: SHA-256 of `service:last version`).
    pub const CRED_DELETE: u16 = 91;
    /// A credential was read (actor: the reader; detail: SHA-256 of `service:version`).
    pub const CRED_READ: u16 = 92;
}

/// Outcome codes.
pub mod outcome {
    /// The operation happened.
    pub const OK: u8 = 0;
    /// It was refused (the row records an attempt, e.g. a reused link code).
    pub const REFUSED: u8 = 1;
}

/// A row to append (the store assigns the sequences, the time comes from the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// The chain: the master of the tree the row belongs to.
    pub master: Omni,
    /// Who acted and the request.
    pub origin: Origin,
    /// Operation code ([`op`]).
    pub op: u16,
    /// The actor acted upon.
    pub target: Option<Omni>,
    /// [`outcome`].
    pub outcome: u8,
    /// SHA-256 of the message, token or key concerned; zero if none.
    pub detail: [u8; 32],
    /// When.
    pub at: Timestamp,
    /// What a signature spent (empty for everything else).
    pub spend: Vec<crate::policy::Spend>,
}

/// A stored row with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    /// Global sequence.
    pub seq: u64,
    /// Position in the master's chain (1-based).
    pub chain_seq: u64,
    /// The row.
    pub entry: AuditEntry,
    /// `SHA256(prev_hash || encoding)`.
    pub hash: [u8; 32],
}

/// A chain's state as a head signature covers it: rows, last hash, global sequence of the last
/// row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadState {
    /// Rows in the chain.
    pub length: u64,
    /// Hash of the last row.
    pub hash: [u8; 32],
    /// Global sequence of the last row.
    pub seq: u64,
}

impl HeadState {
    /// The signed bytes for `master`'s chain in this state.
    pub fn message(&self, master: &Omni) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEAD_LABEL.len() + 32 + 8 + 32 + 8);
        out.extend_from_slice(HEAD_LABEL);
        out.extend_from_slice(master.as_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out
    }
}

/// A chain head: the chain's current end and the audit key's signature over it — or, while the
/// signature of the current end is being made, over an earlier state of the chain
/// ([`ChainHead::signed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// The master.
    pub master: Omni,
    /// Rows in the chain.
    pub length: u64,
    /// Hash of the last row.
    pub hash: [u8; 32],
    /// Global sequence of the last row.
    pub seq: u64,
    /// The audit key that signed (empty while nothing is signed).
    pub kid: String,
    /// ES256 `r || s` over [`ChainHead::signed_message`] (empty while nothing is signed).
    pub signature: Vec<u8>,
    /// The earlier state the signature covers, while the current end waits for its own
    /// (`None`: the signature, if any, covers the current end).
    pub signed: Option<HeadState>,
}

impl ChainHead {
    /// A chain's first head: no rows, nothing signed.
    pub fn empty(master: Omni) -> Self {
        Self {
            master,
            length: 0,
            hash: [0; 32],
            seq: 0,
            kid: String::new(),
            signature: Vec::new(),
            signed: None,
        }
    }

    /// The chain's current end.
    pub fn state(&self) -> HeadState {
        HeadState {
            length: self.length,
            hash: self.hash,
            seq: self.seq,
        }
    }

    /// The state the signature covers (the current end unless [`ChainHead::signed`] says
    /// otherwise).
    pub fn signed_state(&self) -> HeadState {
        self.signed.unwrap_or_else(|| self.state())
    }

    /// The bytes a signature of the current end covers.
    pub fn message(&self) -> Vec<u8> {
        self.state().message(&self.master)
    }

    /// The bytes the stored signature covers.
    pub fn signed_message(&self) -> Vec<u8> {
        self.signed_state().message(&self.master)
    }

    /// Whether the signature covers the current end.
    pub fn is_signed(&self) -> bool {
        !self.signature.is_empty() && self.signed.is_none()
    }

    /// The head after a row moved the chain's end to `next`: a signature of the old end is kept
    /// as the signed earlier state.
    fn advanced(&self, next: HeadState) -> Self {
        let signed = if self.signature.is_empty() {
            None
        } else {
            Some(self.signed_state())
        };
        Self {
            master: self.master,
            length: next.length,
            hash: next.hash,
            seq: next.seq,
            kid: self.kid.clone(),
            signature: self.signature.clone(),
            signed,
        }
    }

    /// Takes a signature of `state` (a state this chain went through) if it is newer than what
    /// the head holds; answers whether the head is now signed at its current end.
    pub(crate) fn take_signature(&mut self, state: HeadState, kid: &str, signature: &[u8]) -> bool {
        let held = (!self.signature.is_empty()).then(|| self.signed_state().length);
        if state.length > self.length || held.is_some_and(|held| held >= state.length) {
            return self.is_signed();
        }
        self.kid = kid.to_owned();
        self.signature = signature.to_vec();
        self.signed = (state != self.state()).then_some(state);
        self.is_signed()
    }

    /// The stored encoding: `u64 length, [32] hash, u64 seq, u16+kid, u16+signature`, then —
    /// only when the signature covers an earlier state — that state's `u64 length, [32] hash,
    /// u64 seq`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(148 + self.kid.len() + self.signature.len());
        out.extend_from_slice(&self.length.to_be_bytes());
        out.extend_from_slice(&self.hash);
        out.extend_from_slice(&self.seq.to_be_bytes());
        put_bytes(&mut out, self.kid.as_bytes());
        put_bytes(&mut out, &self.signature);
        if let Some(signed) = &self.signed {
            out.extend_from_slice(&signed.length.to_be_bytes());
            out.extend_from_slice(&signed.hash);
            out.extend_from_slice(&signed.seq.to_be_bytes());
        }
        out
    }

    pub(crate) fn decode(master: Omni, bytes: &[u8]) -> Result<Self, StoreError> {
        let mut r = Reader::new(bytes);
        let head = (|| {
            let mut head = ChainHead {
                master,
                length: r.u64()?,
                hash: r.array()?,
                seq: r.u64()?,
                kid: r.string()?,
                signature: r.bytes()?.to_vec(),
                signed: None,
            };
            if r.position() < bytes.len() {
                head.signed = Some(HeadState {
                    length: r.u64()?,
                    hash: r.array()?,
                    seq: r.u64()?,
                });
            }
            r.finish().map(|()| head)
        })();
        head.map_err(|e| StoreError::Corrupt(format!("audit head of {}: {e}", master.short())))
    }
}

/// Signs chain heads with the audit key (implemented by the signer; the key never leaves it).
pub trait HeadSigner: Send + Sync + 'static {
    /// Signs `message`; returns the key id and the signature.
    fn sign_head(&self, message: &[u8]) -> Result<(String, Vec<u8>), String>;

    /// Signs every message and hands the answers, in order, to `done` — on another thread when
    /// the signer has one (the store's writer does not wait); here, at once.
    fn sign_heads_then(&self, messages: Vec<Vec<u8>>, done: HeadsSigned) {
        done(messages.iter().map(|m| self.sign_head(m)).collect());
    }
}

/// Where [`HeadSigner::sign_heads_then`] delivers its answers.
pub type HeadsSigned = Box<dyn FnOnce(Vec<Result<(String, Vec<u8>), String>>) + Send>;

impl AuditEntry {
    /// A row for an operation that happened (`outcome::OK`).
    pub fn done(
        master: Omni,
        origin: Origin,
        op: u16,
        target: Omni,
        detail: [u8; 32],
        at: Timestamp,
    ) -> Self {
        Self {
            master,
            origin,
            op,
            target: Some(target),
            outcome: outcome::OK,
            detail,
            at,
            spend: Vec::new(),
        }
    }

    /// A row for a refused attempt (`outcome::REFUSED`).
    pub fn refused(
        master: Omni,
        origin: Origin,
        op: u16,
        target: Omni,
        detail: [u8; 32],
        at: Timestamp,
    ) -> Self {
        Self {
            outcome: outcome::REFUSED,
            ..Self::done(master, origin, op, target, detail, at)
        }
    }

    /// The pinned version-1 encoding, given the row's sequences.
    pub fn encode(&self, seq: u64, chain_seq: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(200 + self.origin.request_id.len());
        out.push(if self.spend.is_empty() {
            AUDIT_ROW_VERSION
        } else {
            AUDIT_ROW_VERSION_SPEND
        });
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(self.master.as_bytes());
        out.extend_from_slice(&chain_seq.to_be_bytes());
        out.extend_from_slice(&self.at.as_millis().to_be_bytes());
        put_omni(&mut out, self.origin.actor.as_ref());
        out.extend_from_slice(&self.op.to_be_bytes());
        put_omni(&mut out, self.target.as_ref());
        out.push(self.outcome);
        let id = self.origin.request_id.as_bytes();
        let id = &id[..id.len().min(usize::from(u16::MAX))];
        put_bytes(&mut out, id);
        out.extend_from_slice(&self.detail);
        if !self.spend.is_empty() {
            let spends = &self.spend[..self.spend.len().min(255)];
            out.push(spends.len() as u8);
            for s in spends {
                match s.asset {
                    crate::policy::Asset::Native => out.push(0),
                    crate::policy::Asset::Token(addr) => {
                        out.push(1);
                        out.extend_from_slice(&addr);
                    }
                }
                out.extend_from_slice(&s.chain.to_be_bytes());
                out.extend_from_slice(&s.amount.to_be_bytes());
            }
        }
        out
    }
}

impl AuditRow {
    /// Decodes a stored value (`encoding || hash`).
    pub fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let split = bytes.len().checked_sub(32).ok_or(DecodeError::Malformed(0));
        let row = split.and_then(|split| {
            let (body, hash) = bytes.split_at(split);
            let mut r = Reader::new(body);
            let version = r.u8()?;
            if version != AUDIT_ROW_VERSION && version != AUDIT_ROW_VERSION_SPEND {
                return Err(DecodeError::Version(version));
            }
            let seq = r.u64()?;
            let master = Omni::from_bytes(r.array()?);
            let chain_seq = r.u64()?;
            let at = Timestamp::from_millis(r.u64()?);
            let actor = r.omni()?;
            let op = r.u16()?;
            let target = r.omni()?;
            let outcome = r.u8()?;
            let request_id = r.string()?;
            let detail = r.array()?;
            let mut spend = Vec::new();
            if version == AUDIT_ROW_VERSION_SPEND {
                for _ in 0..r.u8()? {
                    let asset = match r.u8()? {
                        0 => crate::policy::Asset::Native,
                        1 => crate::policy::Asset::Token(r.array()?),
                        _ => return Err(DecodeError::Malformed(r.position())),
                    };
                    spend.push(crate::policy::Spend {
                        asset,
                        chain: r.u64()?,
                        amount: u128::from_be_bytes(r.array()?),
                    });
                }
            }
            r.finish()?;
            Ok(AuditRow {
                seq,
                chain_seq,
                entry: AuditEntry {
                    master,
                    origin: Origin { actor, request_id },
                    op,
                    target,
                    outcome,
                    detail,
                    at,
                    spend,
                },
                hash: hash.try_into().map_err(|_| DecodeError::Malformed(split))?,
            })
        });
        row.map_err(|e| StoreError::Corrupt(format!("audit row: {e}")))
    }

    /// `SHA256(prev || encoding)` of this row.
    pub fn compute_hash(&self, prev: &[u8; 32]) -> [u8; 32] {
        chain_hash(prev, &self.entry.encode(self.seq, self.chain_seq))
    }
}

fn chain_hash(prev: &[u8; 32], encoding: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(encoding);
    h.finalize().into()
}

/// SHA-256 of `bytes`, for [`AuditEntry::detail`].
pub fn detail_hash(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Which pending heads a batch signs itself before it commits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum SignNow {
    /// None: their signatures are asked for after the commit.
    #[default]
    None,
    /// These masters' heads.
    Masters(Vec<Omni>),
    /// Every pending head.
    All,
}

impl SignNow {
    /// Whether `master`'s head is among these.
    pub(crate) fn covers(&self, master: &Omni) -> bool {
        match self {
            SignNow::None => false,
            SignNow::Masters(masters) => masters.contains(master),
            SignNow::All => true,
        }
    }
}

thread_local! {
    /// Set by [`sign_now`] on the writer thread.
    static SIGN_NOW: std::cell::RefCell<SignNow> = const { std::cell::RefCell::new(SignNow::None) };
}

/// Which pending heads the batch on this thread was asked to sign (and resets the request).
pub(crate) fn take_sign_now() -> SignNow {
    SIGN_NOW.with(|flag| std::mem::take(&mut *flag.borrow_mut()))
}

/// Makes the batch on this (writer) thread sign `master`'s pending head (`None`: every pending
/// head) before it commits.
pub(crate) fn sign_now(master: Option<Omni>) {
    SIGN_NOW.with(|flag| {
        let mut flag = flag.borrow_mut();
        *flag = match (std::mem::take(&mut *flag), master) {
            (SignNow::All, _) | (_, None) => SignNow::All,
            (SignNow::None, Some(m)) => SignNow::Masters(vec![m]),
            (SignNow::Masters(mut ms), Some(m)) => {
                if !ms.contains(&m) {
                    ms.push(m);
                }
                SignNow::Masters(ms)
            }
        };
    });
}

/// What the batch in progress on the writer thread appended: the next global sequence and the
/// head of every chain it touched, kept here between rows and written once per chain just
/// before the commit ([`finish_batch`]) — instead of a head read, a head write and an
/// unsigned-set write per row.
#[derive(Default)]
struct Batch {
    next_seq: Option<u64>,
    heads: std::collections::BTreeMap<[u8; 32], ChainHead>,
}

thread_local! {
    /// `Some` between [`begin_batch`] and [`finish_batch`] on the writer thread.
    static BATCH: std::cell::RefCell<Option<Batch>> = const { std::cell::RefCell::new(None) };
}

/// Starts a batch on this (writer) thread; whatever an aborted batch left is dropped.
pub(crate) fn begin_batch() {
    BATCH.with(|b| *b.borrow_mut() = Some(Batch::default()));
}

/// A signature of one state of a chain, made after the batch that wrote that state committed,
/// waiting for a batch to store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SignedHead {
    pub master: Omni,
    pub state: HeadState,
    pub kid: String,
    pub signature: Vec<u8>,
}

/// Ends the batch: writes the head of every chain it appended to once — with the signature of
/// its previous end (or of an earlier state) kept, and in the unsigned set, since its new end
/// is signed only after the commit — and stores the signatures in `ready` (states earlier
/// batches committed). A batch that fails afterwards writes nothing at all, so memory and
/// store agree.
///
/// Answers the chains the batch appended to with their new ends (to be signed once the batch
/// committed).
pub(crate) fn finish_batch(
    txn: &WriteTransaction,
    ready: &[SignedHead],
) -> Result<Vec<(Omni, HeadState)>, StoreError> {
    let batch = BATCH.with(|b| b.borrow_mut().take()).unwrap_or_default();
    if batch.heads.is_empty() && ready.is_empty() {
        return Ok(Vec::new());
    }
    let mut written = Vec::with_capacity(batch.heads.len());
    let mut heads = txn.open_table(AUDIT_HEADS)?;
    let mut unsigned = txn.open_table(AUDIT_UNSIGNED)?;
    for (key, mut head) in batch.heads {
        let master = head.master;
        for s in ready.iter().filter(|s| s.master == master) {
            head.take_signature(s.state, &s.kid, &s.signature);
        }
        heads.put(&key, head.encode().as_slice())?;
        // Already listed while a chain waits for its signature (most batches at a low rate):
        // rewriting the entry would copy its page for nothing.
        if unsigned.get(&key)?.is_none() {
            unsigned.put(&key, ())?;
        }
        written.push((head.master, head.state()));
    }
    for s in ready {
        if written.iter().any(|(m, _)| *m == s.master) {
            continue;
        }
        let key = *s.master.as_bytes();
        let Some(bytes) = heads.get(&key)?.map(|v| v.value().to_vec()) else {
            continue;
        };
        let mut head = ChainHead::decode(s.master, &bytes)?;
        if head.take_signature(s.state, &s.kid, &s.signature) {
            unsigned.remove(&key)?;
        }
        heads.put(&key, head.encode().as_slice())?;
    }
    Ok(written)
}

fn sign_head(head: &mut ChainHead, signer: &dyn HeadSigner) -> Result<(), StoreError> {
    let (kid, signature) = signer
        .sign_head(&head.message())
        .map_err(|e| StoreError::Corrupt(format!("audit head signing failed: {e}")))?;
    head.kid = kid;
    head.signature = signature;
    head.signed = None;
    Ok(())
}

/// Appends a row inside `txn` (the change's own transaction); returns its global sequence.
///
/// Inside a writer batch ([`begin_batch`]) the sequence and the chain's head come from the
/// batch's memory after its first row, and the head is written once by [`finish_batch`];
/// outside one (a transaction of its own) the head is written here and left unsigned.
pub(crate) fn append(txn: &WriteTransaction, entry: &AuditEntry) -> Result<u64, StoreError> {
    let master = entry.master;
    let mut rows = txn.open_table(AUDIT)?;
    let last_seq =
        |rows: &agentkeys_runtime::store::Table<'_, u64, &[u8]>| -> Result<u64, StoreError> {
            Ok(rows.last()?.map_or(0, |(k, _)| k.value()))
        };
    let stored_head = || -> Result<Option<ChainHead>, StoreError> {
        txn.open_table(AUDIT_HEADS)?
            .get(master.as_bytes())?
            .map(|v| ChainHead::decode(master, v.value()))
            .transpose()
    };
    // In a batch: what earlier rows of the batch left (`None` inside = not known yet).
    let batch = BATCH.with(|b| {
        b.borrow()
            .as_ref()
            .map(|batch| (batch.next_seq, batch.heads.get(master.as_bytes()).cloned()))
    });
    let in_batch = batch.is_some();
    let (next_seq, cached) = batch.unwrap_or_default();
    let seq = match next_seq {
        Some(seq) => seq,
        None => last_seq(&rows)? + 1,
    };
    let previous = match cached {
        Some(head) => Some(head),
        None => stored_head()?,
    };
    let previous = previous.unwrap_or_else(|| ChainHead::empty(master));
    let (length, prev_hash) = (previous.length, previous.hash);
    let chain_seq = length + 1;
    let encoding = entry.encode(seq, chain_seq);
    let hash = chain_hash(&prev_hash, &encoding);
    let mut value = encoding;
    value.extend_from_slice(&hash);
    rows.put(seq, value.as_slice())?;
    txn.open_table(AUDIT_CHAIN)?
        .put((master.as_bytes(), chain_seq), seq)?;
    let head = previous.advanced(HeadState {
        length: chain_seq,
        hash,
        seq,
    });
    if in_batch {
        BATCH.with(|b| {
            if let Some(batch) = b.borrow_mut().as_mut() {
                batch.next_seq = Some(seq + 1);
                batch.heads.insert(*master.as_bytes(), head);
            }
        });
    } else {
        txn.open_table(AUDIT_HEADS)?
            .put(master.as_bytes(), head.encode().as_slice())?;
        txn.open_table(AUDIT_UNSIGNED)?.put(master.as_bytes(), ())?;
    }
    Ok(seq)
}

/// Signs the heads left unsigned by earlier transactions (run before a commit).
pub(crate) fn sign_heads(
    txn: &WriteTransaction,
    signer: &dyn HeadSigner,
    which: &SignNow,
) -> Result<(), StoreError> {
    let mut unsigned = txn.open_table(AUDIT_UNSIGNED)?;
    let keys: Vec<[u8; 32]> = match which {
        SignNow::None => return Ok(()),
        SignNow::All => {
            let mut keys = Vec::new();
            for entry in unsigned.iter()? {
                keys.push(*entry?.0.value());
            }
            keys
        }
        SignNow::Masters(masters) => masters.iter().map(|m| *m.as_bytes()).collect(),
    };
    let mut heads = txn.open_table(AUDIT_HEADS)?;
    for key in keys {
        if unsigned.get(&key)?.is_none() {
            continue;
        }
        unsigned.remove(&key)?;
        let master = Omni::from_bytes(key);
        let Some(bytes) = heads.get(&key)?.map(|v| v.value().to_vec()) else {
            continue;
        };
        let mut head = ChainHead::decode(master, &bytes)?;
        sign_head(&mut head, signer)?;
        heads.put(&key, head.encode().as_slice())?;
    }
    Ok(())
}

/// Reads rows of one chain from `after` (exclusive), at most `limit`.
pub(crate) fn chain_rows(
    chain: &impl ReadableTable<(&'static [u8; 32], u64), u64>,
    rows: &impl ReadableTable<u64, &'static [u8]>,
    master: &Omni,
    after: u64,
    limit: usize,
) -> Result<Vec<AuditRow>, StoreError> {
    let m = master.as_bytes();
    let mut out = Vec::new();
    for entry in chain.range((m, after.saturating_add(1))..=(m, u64::MAX))? {
        if out.len() >= limit {
            break;
        }
        let (_, seq) = entry?;
        let seq = seq.value();
        let value = rows
            .get(seq)?
            .ok_or_else(|| StoreError::Corrupt(format!("audit row {seq} is missing")))?;
        out.push(AuditRow::decode(value.value())?);
    }
    Ok(out)
}

/// How far a verifier has seen one chain: `agentkeys audit verify` keeps these between runs so
/// a chain cut back to an older (validly signed) head is still caught.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainMark {
    /// The master.
    pub master: Omni,
    /// Rows seen.
    pub length: u64,
    /// Hash of the last row seen.
    pub hash: [u8; 32],
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// Chains checked.
    pub chains: usize,
    /// Rows checked.
    pub rows: u64,
    /// Every inconsistency, one line each (empty: the log is intact).
    pub problems: Vec<String>,
    /// The marks to keep for the next run.
    pub marks: Vec<ChainMark>,
}

/// Checks a signature on a chain head: (kid, message, signature) → valid.
pub type HeadCheck<'a> = &'a dyn Fn(&str, &[u8], &[u8]) -> bool;

/// Verifies every chain in one read snapshot: each row's hash from its predecessor, the chain
/// index against the rows, the signed heads, the global sequence, and the `last` marks of an
/// earlier run. Detects modified, deleted and truncated rows.
pub fn verify(
    txn: &agentkeys_runtime::store::ReadTransaction,
    check: HeadCheck<'_>,
    last: &[ChainMark],
) -> Result<AuditReport, StoreError> {
    let rows = txn.open_table(AUDIT)?;
    let chain = txn.open_table(AUDIT_CHAIN)?;
    let heads = txn.open_table(AUDIT_HEADS)?;
    let unsigned = txn.open_table(AUDIT_UNSIGNED)?;
    let mut report = AuditReport::default();
    let mut referenced = std::collections::BTreeSet::new();
    for entry in heads.iter()? {
        let (key, value) = entry?;
        let master = Omni::from_bytes(*key.value());
        let head = ChainHead::decode(master, value.value())?;
        let pending = unsigned.get(key.value())?.is_some();
        let walked = walk_chain(&chain, &rows, &head, &mut report, &mut referenced)?;
        report.chains += 1;
        let name = master.short();
        if walked.length != head.length || walked.hash != head.hash {
            report.problems.push(format!(
                "chain {name}: {} rows end in a hash that does not match its head ({} rows): rows were deleted or truncated",
                walked.length, head.length
            ));
        }
        if head.signature.is_empty() {
            if !pending {
                report
                    .problems
                    .push(format!("chain {name}: the head is not signed"));
            }
        } else if !check(&head.kid, &head.signed_message(), &head.signature) {
            report
                .problems
                .push(format!("chain {name}: the head signature does not verify"));
        } else if let Some(signed) = head.signed {
            // The signature covers an earlier state: the chain must have passed through it.
            let through = walked.length >= signed.length
                && state_at(&chain, &rows, &master, signed.length)? == Some(signed);
            if !pending || !through {
                report.problems.push(format!(
                    "chain {name}: the signed head ({} rows) is not a state of the chain",
                    signed.length
                ));
            }
        }
        report.marks.push(walked);
    }
    check_marks(&chain, &rows, last, &mut report)?;
    let mut expected = 1u64;
    for entry in rows.iter()? {
        let (seq, _) = entry?;
        let seq = seq.value();
        if seq != expected {
            report.problems.push(format!(
                "global sequence jumps from {} to {seq}: rows were deleted",
                expected.saturating_sub(1)
            ));
        }
        if !referenced.contains(&seq) {
            report
                .problems
                .push(format!("row {seq} belongs to no chain"));
        }
        expected = seq + 1;
    }
    Ok(report)
}

fn walk_chain(
    chain: &impl ReadableTable<(&'static [u8; 32], u64), u64>,
    rows: &impl ReadableTable<u64, &'static [u8]>,
    head: &ChainHead,
    report: &mut AuditReport,
    referenced: &mut std::collections::BTreeSet<u64>,
) -> Result<ChainMark, StoreError> {
    let m = head.master.as_bytes();
    let name = head.master.short();
    let mut prev = [0u8; 32];
    let mut length = 0u64;
    for entry in chain.range((m, 0)..=(m, u64::MAX))? {
        let (key, seq) = entry?;
        let (position, seq) = (key.value().1, seq.value());
        referenced.insert(seq);
        if position != length + 1 {
            report.problems.push(format!(
                "chain {name}: row {} is missing (next is {position}): rows were deleted",
                length + 1
            ));
        }
        length = position;
        let Some(value) = rows.get(seq)? else {
            report.problems.push(format!(
                "chain {name}: row {position} (global {seq}) was deleted"
            ));
            continue;
        };
        report.rows += 1;
        let row = match AuditRow::decode(value.value()) {
            Ok(row) => row,
            Err(e) => {
                report
                    .problems
                    .push(format!("chain {name}: row {position}: {e}"));
                continue;
            }
        };
        let in_place =
            row.seq == seq && row.chain_seq == position && row.entry.master == head.master;
        if !in_place || row.compute_hash(&prev) != row.hash {
            report.problems.push(format!(
                "chain {name}: row {position} (global {seq}) was modified"
            ));
        }
        prev = row.hash;
    }
    Ok(ChainMark {
        master: head.master,
        length,
        hash: prev,
    })
}

/// The state of `master`'s chain after its row `length` (as the rows say).
fn state_at(
    chain: &impl ReadableTable<(&'static [u8; 32], u64), u64>,
    rows: &impl ReadableTable<u64, &'static [u8]>,
    master: &Omni,
    length: u64,
) -> Result<Option<HeadState>, StoreError> {
    let Some(seq) = chain.get((master.as_bytes(), length))?.map(|v| v.value()) else {
        return Ok(None);
    };
    let Some(row) = rows.get(seq)? else {
        return Ok(None);
    };
    Ok(AuditRow::decode(row.value()).ok().map(|row| HeadState {
        length,
        hash: row.hash,
        seq,
    }))
}

fn check_marks(
    chain: &impl ReadableTable<(&'static [u8; 32], u64), u64>,
    rows: &impl ReadableTable<u64, &'static [u8]>,
    last: &[ChainMark],
    report: &mut AuditReport,
) -> Result<(), StoreError> {
    for mark in last {
        let name = mark.master.short();
        let stored = chain
            .get((mark.master.as_bytes(), mark.length))?
            .map(|seq| seq.value())
            .and_then(|seq| rows.get(seq).ok().flatten())
            .and_then(|v| AuditRow::decode(v.value()).ok());
        match stored {
            Some(row) if row.hash == mark.hash => {}
            Some(_) => report.problems.push(format!(
                "chain {name}: row {} differs from the last verified run",
                mark.length
            )),
            None => report.problems.push(format!(
                "chain {name}: the last verified run saw {} rows; the log was truncated",
                mark.length
            )),
        }
    }
    Ok(())
}
