//! Policies in the store: the documents set on actors, the per-tree version the writer checks,
//! and the spend counters every budget and rate limit reads (docs/policies.md).
//!
//! **Counters.** A spend is added, for each owner with a budget on that asset and chain, to
//! three bucket series at once: 1 s, 1 min and 1 h buckets (kept for 2 min, 2 h and 31 days). A budget reads the series that fits
//! its window (≤ 120 s: 1 s; ≤ 2 h: 1 min; longer: 1 h), so a check reads at most 745
//! buckets (31 days) and usually 25–121. A bucket counts while any part of it lies inside the
//! window, so a spend leaves the window between `window` and `window + granularity` after it
//! was made — never earlier. Because the series are keyed by owner, asset and chain, not by
//! policy, replacing a policy keeps what was spent.
//!
//! **Versions.** Every policy change in a tree bumps the master's version. A signature's
//! mutation carries the version its evaluation read; if another change committed in between,
//! the writer refuses it ([`SpendError::PolicyChanged`]) and the request is evaluated again.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use agentkeys_runtime::store::encoding::{Reader, put_bytes, put_omni};
use agentkeys_runtime::store::{
    ACTORS, Lineage, Mutation, Origin, Status, Store, StoreError, read_lineage,
};
use agentkeys_runtime::store::{ReadableTable, TableDefinition, WriteTransaction};
use agentkeys_runtime::{Omni, Timestamp};

use super::audit::{self, AuditEntry, op};
use crate::policy::{Asset, Charge, Effective, Policy, RateCharge, StoredPolicy};

pub(crate) const POLICIES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("policies");
pub(crate) const POLICY_VERSIONS: TableDefinition<&[u8; 32], u64> =
    TableDefinition::new("policy_versions");
/// A spend bucket's key: (owner, asset key, chain, level, bucket start in seconds).
pub(crate) type SpendKey = (&'static [u8; 32], &'static [u8; 21], u64, u8, u64);
/// Spend buckets → amount.
pub(crate) const SPENDS: TableDefinition<SpendKey, u128> = TableDefinition::new("spends");
/// (actor, request digest) → when it stops counting as a retry, ms.
pub(crate) const SPEND_DIGESTS: TableDefinition<(&[u8; 32], &[u8; 32]), u64> =
    TableDefinition::new("spend_digests");
/// (expiry ms, actor, digest) → (), for pruning [`SPEND_DIGESTS`].
pub(crate) const SPEND_DIGEST_EXPIRY: TableDefinition<(u64, &[u8; 32], &[u8; 32]), ()> =
    TableDefinition::new("spend_digest_expiry");

/// The asset key under which a rate limit counts signatures.
const RATE_KEY: [u8; 21] = [2; 21];
/// Bucket widths of the three series, seconds.
const LEVELS: [u64; 3] = [1, 60, 3600];
/// The longest window each series serves (older buckets are pruned).
const LEVEL_REACH: [u64; 3] = [120, 7200, crate::policy::document::MAX_WINDOW_SECONDS];
/// Expired digests pruned per signature.
const PRUNE_PER_WRITE: usize = 8;

/// The series a window reads: (level, bucket width).
pub fn granularity(window_seconds: u64) -> (u8, u64) {
    match window_seconds {
        0..=120 => (0, LEVELS[0]),
        121..=7200 => (1, LEVELS[1]),
        _ => (2, LEVELS[2]),
    }
}

/// A budget's state at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetState {
    /// Whose budget.
    pub owner: Omni,
    /// The asset (`None`: the rate limit's signature count).
    pub asset: Option<Asset>,
    /// The chain (0 for a rate limit).
    pub chain: u64,
    /// The window.
    pub window_seconds: u64,
    /// The limit.
    pub max: u128,
    /// Counted in the window now.
    pub spent: u128,
    /// `max - spent` (0 when over).
    pub remaining: u128,
    /// When the oldest counted spend leaves the window.
    pub frees_at: Option<Timestamp>,
    /// When this state was read.
    pub at: Timestamp,
}

fn encode_policy(stored: &StoredPolicy) -> Vec<u8> {
    let json = stored.policy.to_json();
    let mut out = Vec::with_capacity(48 + json.len());
    out.push(1);
    put_omni(&mut out, stored.set_by.as_ref());
    out.extend_from_slice(&stored.set_at.as_millis().to_be_bytes());
    put_bytes(&mut out, json.as_bytes());
    out
}

fn decode_policy(omni: &Omni, bytes: &[u8]) -> Result<StoredPolicy, StoreError> {
    let corrupt = |e: String| StoreError::Corrupt(format!("policy of {}: {e}", omni.short()));
    let mut r = Reader::new(bytes);
    let parsed = (|| {
        let version = r.u8()?;
        if version != 1 {
            return Err(agentkeys_runtime::store::DecodeError::Version(version));
        }
        let set_by = r.omni()?;
        let set_at = Timestamp::from_millis(r.u64()?);
        let json = r.bytes()?.to_vec();
        r.finish()?;
        Ok((set_by, set_at, json))
    })();
    let (set_by, set_at, json) = parsed.map_err(|e| corrupt(e.to_string()))?;
    let policy = Policy::from_json(&json).map_err(|e| corrupt(e.to_string()))?;
    Ok(StoredPolicy {
        policy,
        set_by,
        set_at,
    })
}

/// Every policy in memory, shared by the actors (each reads its lineage's entries; none copies
/// a document), and the version of each tree's policies.
#[derive(Debug, Default)]
pub struct PolicyBook {
    inner: RwLock<BookInner>,
    /// One [`Effective`] per master, version and set of policies, shared by every actor whose
    /// lineage has that set (an agent's published view holds one: a copy each cost about 120
    /// bytes per active agent).
    shared: std::sync::Mutex<HashMap<Omni, Vec<Arc<Effective>>>>,
}

/// The most distinct policy sets shared per master (more are built per actor).
const SHARED_PER_MASTER: usize = 16;

/// The most masters with shared sets; beyond it the cache starts over.
const SHARED_MASTERS: usize = 65_536;

#[derive(Debug, Default)]
struct BookInner {
    policies: HashMap<Omni, Arc<StoredPolicy>>,
    versions: HashMap<Omni, u64>,
}

impl PolicyBook {
    /// Loads every stored policy.
    pub(crate) fn load(store: &Store) -> Result<Self, StoreError> {
        let txn = store.read()?;
        let mut inner = BookInner::default();
        let table = txn.open_table(POLICIES)?;
        for entry in table.iter()? {
            let (k, v) = entry?;
            let omni = Omni::from_bytes(*k.value());
            inner
                .policies
                .insert(omni, Arc::new(decode_policy(&omni, v.value())?));
        }
        let versions = txn.open_table(POLICY_VERSIONS)?;
        for entry in versions.iter()? {
            let (k, v) = entry?;
            inner
                .versions
                .insert(Omni::from_bytes(*k.value()), v.value());
        }
        Ok(Self {
            inner: RwLock::new(inner),
            shared: Default::default(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BookInner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The version of `master`'s tree.
    pub fn version(&self, master: &Omni) -> u64 {
        self.read().versions.get(master).copied().unwrap_or(0)
    }

    /// The policies along `chain` (root first).
    pub fn effective(&self, chain: &[Omni]) -> Effective {
        let inner = self.read();
        let master = chain.first().copied().unwrap_or(Omni::from_bytes([0; 32]));
        Effective {
            master,
            version: inner.versions.get(&master).copied().unwrap_or(0),
            policies: chain
                .iter()
                .filter_map(|o| inner.policies.get(o).map(|p| (*o, p.clone())))
                .collect(),
        }
    }

    /// [`effective`](Self::effective), shared with every other caller whose lineage has the
    /// same policies at the same version.
    pub fn shared_effective(&self, chain: &[Omni]) -> Arc<Effective> {
        let fresh = self.effective(chain);
        let same = |e: &Effective| {
            e.policies.len() == fresh.policies.len()
                && e.policies
                    .iter()
                    .zip(&fresh.policies)
                    .all(|((a, p), (b, q))| a == b && Arc::ptr_eq(p, q))
        };
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if shared.len() >= SHARED_MASTERS && !shared.contains_key(&fresh.master) {
            shared.clear();
        }
        let sets = shared.entry(fresh.master).or_default();
        sets.retain(|e| e.version == fresh.version);
        if let Some(e) = sets.iter().find(|e| same(e)) {
            return e.clone();
        }
        let fresh = Arc::new(fresh);
        if sets.len() < SHARED_PER_MASTER {
            sets.push(fresh.clone());
        }
        fresh
    }

    /// The policy set on `omni`.
    pub fn get(&self, omni: &Omni) -> Option<Arc<StoredPolicy>> {
        self.read().policies.get(omni).cloned()
    }

    /// Takes a committed change (versions only move forward).
    pub(crate) fn apply(&self, change: &PolicyChange) {
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let current = inner.versions.entry(change.master).or_insert(0);
        if *current > change.version {
            return;
        }
        *current = change.version;
        match &change.stored {
            Some(p) => inner.policies.insert(change.omni, p.clone()),
            None => inner.policies.remove(&change.omni),
        };
    }

    /// Re-reads `chain`'s policies and its tree's version from the latest commit (after the
    /// writer reported a newer version than this book holds).
    pub(crate) fn refresh(&self, store: &Store, chain: &[Omni]) -> Result<(), StoreError> {
        let Some(master) = chain.first() else {
            return Ok(());
        };
        let txn = store.read()?;
        let table = txn.open_table(POLICIES)?;
        let mut found = Vec::with_capacity(chain.len());
        for omni in chain {
            let stored = table
                .get(omni.as_bytes())?
                .map(|v| decode_policy(omni, v.value()))
                .transpose()?;
            found.push((*omni, stored.map(Arc::new)));
        }
        let version = txn
            .open_table(POLICY_VERSIONS)?
            .get(master.as_bytes())?
            .map_or(0, |v| v.value());
        let mut inner = self.inner.write().unwrap_or_else(|p| p.into_inner());
        if inner.versions.get(master).copied().unwrap_or(0) > version {
            return Ok(());
        }
        inner.versions.insert(*master, version);
        for (omni, stored) in found {
            match stored {
                Some(p) => inner.policies.insert(omni, p),
                None => inner.policies.remove(&omni),
            };
        }
        Ok(())
    }
}

/// Who sets a policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setter {
    /// The host operator (through the admin socket).
    Operator,
    /// An actor (a strict ancestor of the target).
    Actor(Omni),
}

/// Sets (`Some`) or removes (`None`) the policy on `target`.
#[derive(Debug, Clone)]
pub struct SetPolicy {
    /// The actor the policy applies to.
    pub target: Omni,
    /// The policy, or `None` to remove it.
    pub policy: Option<Policy>,
    /// Who.
    pub by: Setter,
    /// The request.
    pub origin: Origin,
    /// Now.
    pub at: Timestamp,
}

/// Why a policy change is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyWriteError {
    /// No such actor.
    #[error("no such actor")]
    NotFound,
    /// The target's lineage is revoked.
    #[error("the actor's lineage is revoked")]
    Revoked {
        /// The revoked actor nearest the root.
        by: Omni,
        /// When.
        at: Timestamp,
    },
    /// Only a strict ancestor sets an actor's policy (the operator a master's).
    #[error(
        "only a strict ancestor of an actor sets its policy; a master's is set by the operator"
    )]
    NotAncestor,
    /// The policy was set higher up; only that setter or its ancestors may change it.
    #[error("this policy was set by an ancestor of yours; only it or one above it may change it")]
    SetAbove {
        /// Who set it (`None`: the operator).
        set_by: Option<Omni>,
    },
}

/// A committed policy change.
#[derive(Debug, Clone)]
pub struct PolicyChange {
    /// The actor.
    pub omni: Omni,
    /// Its master.
    pub master: Omni,
    /// The tree's version after the change.
    pub version: u64,
    /// The policy now on the actor.
    pub stored: Option<Arc<StoredPolicy>>,
    /// Whether anything changed (removing an absent policy does not).
    pub changed: bool,
}

#[doc(hidden)]
#[derive(Debug)]
pub struct SetPolicyPlan {
    op: SetPolicy,
    master: Omni,
    existed: bool,
}

/// Whether `setter` may change a setting last made by `previous` on `lineage`'s actor: a strict
/// ancestor of the actor that is `previous` or above it (`None`: the operator, above all).
pub fn setter_may_change(
    lineage: &Lineage,
    setter: Setter,
    previous: Option<Option<Omni>>,
) -> Result<(), PolicyWriteError> {
    let chain = lineage.omnis();
    let target = chain.last().copied();
    let depth = |o: &Omni| chain.iter().position(|c| c == o);
    let mine = match setter {
        // The operator is above every actor.
        Setter::Operator => return Ok(()),
        Setter::Actor(me) => match depth(&me) {
            Some(d) if Some(me) != target => d,
            _ => return Err(PolicyWriteError::NotAncestor),
        },
    };
    match previous {
        None => Ok(()),
        Some(None) => Err(PolicyWriteError::SetAbove { set_by: None }),
        Some(Some(prev)) => match depth(&prev) {
            Some(p) if mine <= p => Ok(()),
            // A setter no longer on the lineage cannot happen (omnis never move).
            _ => Err(PolicyWriteError::SetAbove { set_by: Some(prev) }),
        },
    }
}

impl Mutation for SetPolicy {
    type Plan = SetPolicyPlan;
    type Output = PolicyChange;
    type Rejection = PolicyWriteError;

    fn check(
        self,
        view: &WriteTransaction,
    ) -> Result<Result<SetPolicyPlan, PolicyWriteError>, StoreError> {
        let actors = view.open_table(ACTORS)?;
        let Some(lineage) = read_lineage(&actors, &self.target)? else {
            return Ok(Err(PolicyWriteError::NotFound));
        };
        if let Status::Revoked { by, at } = lineage.status() {
            return Ok(Err(PolicyWriteError::Revoked { by, at }));
        }
        let previous = view
            .open_table(POLICIES)?
            .get(self.target.as_bytes())?
            .map(|v| decode_policy(&self.target, v.value()))
            .transpose()?;
        if let Err(e) = setter_may_change(&lineage, self.by, previous.as_ref().map(|p| p.set_by)) {
            return Ok(Err(e));
        }
        Ok(Ok(SetPolicyPlan {
            master: lineage.records()[0].omni,
            existed: previous.is_some(),
            op: self,
        }))
    }

    fn apply(plan: SetPolicyPlan, txn: &WriteTransaction) -> Result<PolicyChange, StoreError> {
        let SetPolicyPlan {
            op,
            master,
            existed,
        } = plan;
        let set_by = match op.by {
            Setter::Operator => None,
            Setter::Actor(o) => Some(o),
        };
        agentkeys_runtime::store::epochs::touch(&master);
        let mut versions = txn.open_table(POLICY_VERSIONS)?;
        let current = versions.get(master.as_bytes())?.map_or(0, |v| v.value());
        if op.policy.is_none() && !existed {
            return Ok(PolicyChange {
                omni: op.target,
                master,
                version: current,
                stored: None,
                changed: false,
            });
        }
        let version = current + 1;
        versions.insert(master.as_bytes(), version)?;
        let mut table = txn.open_table(POLICIES)?;
        let (stored, code, detail) = match op.policy {
            Some(policy) => {
                let stored = StoredPolicy {
                    policy,
                    set_by,
                    set_at: op.at,
                };
                let bytes = encode_policy(&stored);
                table.insert(op.target.as_bytes(), bytes.as_slice())?;
                let detail = audit::detail_hash(stored.policy.to_json().as_bytes());
                (Some(Arc::new(stored)), op::POLICY_SET, detail)
            }
            None => {
                table.remove(op.target.as_bytes())?;
                (None, op::POLICY_REMOVE, [0; 32])
            }
        };
        audit::append(
            txn,
            &AuditEntry::done(master, op.origin, code, op.target, detail, op.at),
        )?;
        Ok(PolicyChange {
            omni: op.target,
            master,
            version,
            stored,
            changed: true,
        })
    }
}

fn seconds(t: Timestamp) -> u64 {
    t.as_millis() / 1000
}

/// Reads one budget (or rate, with `asset = None`) over `window_seconds` at `now`.
pub(crate) fn read_budget(
    spends: &impl ReadableTable<SpendKey, u128>,
    owner: &Omni,
    asset: Option<Asset>,
    chain: u64,
    window_seconds: u64,
    max: u128,
    now: Timestamp,
) -> Result<BudgetState, StoreError> {
    let key = asset.map_or(RATE_KEY, |a| a.key());
    let (level, width) = granularity(window_seconds);
    let now_s = seconds(now);
    // Buckets with start + width > now - window.
    let from = (now_s + 1).saturating_sub(window_seconds + width);
    let o = owner.as_bytes();
    let mut spent: u128 = 0;
    let mut oldest = None;
    for entry in spends.range((o, &key, chain, level, from)..=(o, &key, chain, level, u64::MAX))? {
        let (k, v) = entry?;
        let amount = v.value();
        if amount > 0 && oldest.is_none() {
            oldest = Some(k.value().4);
        }
        spent = spent.saturating_add(amount);
    }
    Ok(BudgetState {
        owner: *owner,
        asset,
        chain,
        window_seconds,
        max,
        spent,
        remaining: max.saturating_sub(spent),
        frees_at: oldest.map(|b| Timestamp::from_millis((b + width + window_seconds) * 1000)),
        at: now,
    })
}

fn add_spend(
    spends: &mut agentkeys_runtime::store::Table<'_, SpendKey, u128>,
    owner: &Omni,
    key: &[u8; 21],
    chain: u64,
    amount: u128,
    now: Timestamp,
) -> Result<(), StoreError> {
    let o = owner.as_bytes();
    let now_s = seconds(now);
    for (level, width) in LEVELS.iter().enumerate() {
        let level = level as u8;
        let bucket = now_s / width * width;
        let current = spends
            .get((o, key, chain, level, bucket))?
            .map_or(0, |v| v.value());
        spends.insert(
            (o, key, chain, level, bucket),
            current.saturating_add(amount),
        )?;
        if current != 0 {
            continue;
        }
        // A new bucket: drop a few that no window of this series can reach any more (at most
        // one bucket is created per width, so the series stays at its reach).
        let stale = now_s.saturating_sub(LEVEL_REACH[usize::from(level)] + width);
        let old: Vec<u64> = spends
            .range((o, key, chain, level, 0)..(o, key, chain, level, stale))?
            .take(PRUNE_PER_WRITE)
            .map(|e| e.map(|(k, _)| k.value().4))
            .collect::<Result<_, _>>()?;
        for b in old {
            spends.remove((o, key, chain, level, b))?;
        }
    }
    Ok(())
}

/// What a signature's spend must pass, from the evaluation of its request.
#[derive(Debug, Clone)]
pub struct SpendCheck {
    /// The tree's master.
    pub master: Omni,
    /// The policy version the evaluation read.
    pub version: u64,
    /// The budgets on the lineage with this request's amounts.
    pub charges: Vec<Charge>,
    /// The rate limits on the lineage.
    pub rates: Vec<RateCharge>,
    /// The request's digest (a retry of the same digest within the window counts once).
    pub digest: [u8; 32],
    /// The longest window counted.
    pub window_seconds: u64,
}

impl SpendCheck {
    /// What `evaluation` (made against `effective`) asks the writer to check for the
    /// signature whose digest is `digest`.
    pub fn of(
        effective: &crate::policy::Effective,
        evaluation: &crate::policy::Evaluation,
        digest: [u8; 32],
    ) -> Self {
        SpendCheck {
            master: effective.master,
            version: effective.version,
            window_seconds: evaluation.window_seconds(),
            charges: evaluation.charges.clone(),
            rates: evaluation.rates.clone(),
            digest,
        }
    }
}

/// Why a signature was refused by its counters (the refusal's audit row is written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpendRefusal {
    /// A budget would be exceeded.
    Budget(BudgetState),
    /// A rate limit is reached.
    Rate(BudgetState),
}

/// Why a signature's record was not written at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpendError {
    /// A policy of the tree changed after the request was evaluated: evaluate again.
    #[error("a policy of this tree changed; evaluate the request again")]
    PolicyChanged,
}

/// The audit row of a signature (or token) and, when policies apply, its spend: checked and
/// counted in the row's own transaction.
#[derive(Debug, Clone)]
pub struct RecordSigned {
    /// The row (with its spend, if any).
    pub entry: AuditEntry,
    /// The counters to check and add to (`None`: no policy could apply, e.g. a token).
    pub check: Option<SpendCheck>,
}

#[doc(hidden)]
#[derive(Debug)]
pub enum RecordPlan {
    Write {
        entry: AuditEntry,
        adds: Vec<(Omni, [u8; 21], u64, u128)>,
        digest: Option<(Omni, [u8; 32], u64)>,
    },
    Refuse {
        entry: AuditEntry,
        refusal: SpendRefusal,
    },
}

impl RecordSigned {
    /// The check of this write inside another write's transaction (an approval's decision).
    pub(crate) fn plan_in(
        self,
        view: &WriteTransaction,
    ) -> Result<Result<RecordPlan, SpendError>, StoreError> {
        <Self as Mutation>::check(self, view)
    }

    fn plan(
        entry: AuditEntry,
        check: SpendCheck,
        view: &WriteTransaction,
    ) -> Result<Result<RecordPlan, SpendError>, StoreError> {
        let version = view
            .open_table(POLICY_VERSIONS)?
            .get(check.master.as_bytes())?
            .map_or(0, |v| v.value());
        if version != check.version {
            return Ok(Err(SpendError::PolicyChanged));
        }
        if check.charges.is_empty() && check.rates.is_empty() {
            return Ok(Ok(RecordPlan::Write {
                entry,
                adds: Vec::new(),
                digest: None,
            }));
        }
        let actor = entry.target.unwrap_or(check.master);
        let now = entry.at;
        let digests = view.open_table(SPEND_DIGESTS)?;
        let retry = digests
            .get((actor.as_bytes(), &check.digest))?
            .is_some_and(|until| until.value() > now.as_millis());
        if retry {
            // The same signature again: its row records no new spend (the first row did).
            let mut entry = entry;
            entry.spend.clear();
            return Ok(Ok(RecordPlan::Write {
                entry,
                adds: Vec::new(),
                digest: None,
            }));
        }
        let spends = view.open_table(SPENDS)?;
        let refuse = |code: u16, refusal: SpendRefusal, entry: AuditEntry| {
            let mut row =
                AuditEntry::refused(entry.master, entry.origin, code, actor, check.digest, now);
            row.spend = entry.spend;
            Ok(Ok(RecordPlan::Refuse {
                entry: row,
                refusal,
            }))
        };
        for c in &check.charges {
            if c.amount == 0 {
                continue;
            }
            let b = &c.budget;
            let state = read_budget(
                &spends,
                &c.owner,
                Some(b.asset),
                b.chain,
                b.window_seconds,
                b.max,
                now,
            )?;
            if state.spent.saturating_add(c.amount) > b.max {
                return refuse(op::BUDGET_EXCEEDED, SpendRefusal::Budget(state), entry);
            }
        }
        for r in &check.rates {
            let state = read_budget(
                &spends,
                &r.owner,
                None,
                0,
                r.window_seconds,
                u128::from(r.max),
                now,
            )?;
            if state.spent >= u128::from(r.max) {
                return refuse(op::RATE_LIMITED, SpendRefusal::Rate(state), entry);
            }
        }
        let mut adds: Vec<(Omni, [u8; 21], u64, u128)> = Vec::new();
        let mut add = |owner: Omni, key: [u8; 21], chain: u64, amount: u128| {
            match adds
                .iter_mut()
                .find(|a| (a.0, a.1, a.2) == (owner, key, chain))
            {
                // The same owner, asset and chain under two windows is one spend.
                Some(_) => {}
                None => adds.push((owner, key, chain, amount)),
            }
        };
        for c in check.charges.iter().filter(|c| c.amount > 0) {
            add(c.owner, c.budget.asset.key(), c.budget.chain, c.amount);
        }
        for r in &check.rates {
            add(r.owner, RATE_KEY, 0, 1);
        }
        let until = now.as_millis() + check.window_seconds * 1000;
        Ok(Ok(RecordPlan::Write {
            entry,
            adds,
            digest: Some((actor, check.digest, until)),
        }))
    }
}

impl Mutation for RecordSigned {
    type Plan = RecordPlan;
    type Output = Result<u64, SpendRefusal>;
    type Rejection = SpendError;

    fn check(self, view: &WriteTransaction) -> Result<Result<RecordPlan, SpendError>, StoreError> {
        match self.check {
            None => Ok(Ok(RecordPlan::Write {
                entry: self.entry,
                adds: Vec::new(),
                digest: None,
            })),
            Some(check) => Self::plan(self.entry, check, view),
        }
    }

    fn apply(plan: RecordPlan, txn: &WriteTransaction) -> Result<Self::Output, StoreError> {
        match plan {
            RecordPlan::Refuse { entry, refusal } => {
                audit::append(txn, &entry)?;
                Ok(Err(refusal))
            }
            RecordPlan::Write {
                entry,
                adds,
                digest,
            } => {
                if !adds.is_empty() {
                    let mut spends = txn.open_table(SPENDS)?;
                    for (owner, key, chain, amount) in &adds {
                        add_spend(&mut spends, owner, key, *chain, *amount, entry.at)?;
                    }
                }
                if let Some((actor, digest, until)) = digest {
                    remember_digest(txn, &actor, &digest, until, entry.at)?;
                }
                Ok(Ok(audit::append(txn, &entry)?))
            }
        }
    }
}

fn remember_digest(
    txn: &WriteTransaction,
    actor: &Omni,
    digest: &[u8; 32],
    until: u64,
    now: Timestamp,
) -> Result<(), StoreError> {
    let mut digests = txn.open_table(SPEND_DIGESTS)?;
    let mut expiry = txn.open_table(SPEND_DIGEST_EXPIRY)?;
    let expired: Vec<(u64, [u8; 32], [u8; 32])> = expiry
        .range(..(now.as_millis(), &[0u8; 32], &[0u8; 32]))?
        .take(PRUNE_PER_WRITE)
        .map(|e| {
            e.map(|(k, _)| {
                let (t, a, d) = k.value();
                (t, *a, *d)
            })
        })
        .collect::<Result<_, _>>()?;
    for (t, a, d) in expired {
        expiry.remove((t, &a, &d))?;
        digests.remove((&a, &d))?;
    }
    if let Some(old) = digests.insert((actor.as_bytes(), digest), until)? {
        expiry.remove((old.value(), actor.as_bytes(), digest))?;
    }
    expiry.insert((until, actor.as_bytes(), digest), ())?;
    Ok(())
}

/// The number of stored spend buckets (for tests of pruning).
pub fn bucket_count(store: &Store) -> Result<u64, StoreError> {
    let txn = store.read()?;
    txn.open_table(SPENDS)?.len()
}
