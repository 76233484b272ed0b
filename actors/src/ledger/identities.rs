//! Several login identities per master (docs/login.md): a logged-in master proves another
//! identity and links it; afterwards that identity logs into the same master. Unlinking
//! tombstones the identity, so a later login with it is refused rather than deriving (and
//! creating) the master it would otherwise name.
//!
//! | table | key | value |
//! |---|---|---|
//! | `identities` (accounts) | (type, value) | master omni: the one source of truth for logins |
//! | `identity_links` | (master, type, value) | linked at (ms) |
//! | `identity_tombstones` | (type, value) | (master it left, unlinked at ms) |
//!
//! The identity a master was created with stays in `master_identities` (it names the anchor
//! wallet of an email or OpenID master for good); it is listed while `identities` still maps it
//! to the master.

use agentkeys_runtime::store::{ReadableTable, TableDefinition, WriteTransaction};

use super::accounts::{IDENTITIES, MASTER_IDENTITIES};
use super::audit::{self, AuditEntry, Origin, op};
use agentkeys_runtime::store::{ACTORS, ActorKind, Mutation, StoreError, read_lineage};
use agentkeys_runtime::{Omni, Timestamp};

pub(crate) const IDENTITY_LINKS: TableDefinition<(&[u8; 32], &str, &str), u64> =
    TableDefinition::new("identity_links");
pub(crate) const IDENTITY_TOMBSTONES: TableDefinition<(&str, &str), (&[u8; 32], u64)> =
    TableDefinition::new("identity_tombstones");

/// Most identities one master may hold (each is a way in; the list stays short to review).
pub const MAX_IDENTITIES: usize = 16;

/// One identity of a master, as `GET /v1/identities` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedIdentity {
    /// `evm`, `email`, `oauth2_google` or `oidc`.
    pub kind: String,
    /// The canonical value.
    pub value: String,
    /// When it was linked (the master's creation for the identity it was created with).
    pub linked_at: Timestamp,
    /// Whether the master was created with it (its anchor wallet, for email and OpenID).
    pub created_with: bool,
}

/// The identities that log into `master` now: the one it was created with first, then by the
/// time they were linked. Reads `identities`, `master_identities` and `identity_links` from a
/// read or a write transaction.
pub fn list(
    identities: &impl ReadableTable<(&'static str, &'static str), &'static [u8; 32]>,
    master_identities: &impl ReadableTable<&'static [u8; 32], &'static str>,
    links: &impl ReadableTable<(&'static [u8; 32], &'static str, &'static str), u64>,
    master: &Omni,
    created_at: Timestamp,
) -> Result<Vec<LinkedIdentity>, StoreError> {
    let maps_here = |kind: &str, value: &str| -> Result<bool, StoreError> {
        Ok(identities
            .get((kind, value))?
            .is_some_and(|m| m.value() == master.as_bytes()))
    };
    let mut out = Vec::new();
    let created = master_identities.get(master.as_bytes())?.and_then(|v| {
        v.value()
            .split_once(':')
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
    });
    if let Some((kind, value)) = &created
        && maps_here(kind, value)?
    {
        out.push(LinkedIdentity {
            kind: kind.clone(),
            value: value.clone(),
            linked_at: created_at,
            created_with: true,
        });
    }
    let m = master.as_bytes();
    for entry in links.range((m, "", "")..)? {
        let (key, at) = entry?;
        let (owner, kind, value) = key.value();
        if owner != m {
            break;
        }
        if created
            .as_ref()
            .is_some_and(|(k, v)| k == kind && v == value)
        {
            continue;
        }
        out.push(LinkedIdentity {
            kind: kind.to_owned(),
            value: value.to_owned(),
            linked_at: Timestamp::from_millis(at.value()),
            created_with: false,
        });
    }
    out.sort_by_key(|i| {
        (
            !i.created_with,
            i.linked_at,
            i.kind.clone(),
            i.value.clone(),
        )
    });
    Ok(out)
}

/// How many identities log into `master` (inside a write).
fn held(view: &WriteTransaction, master: &Omni) -> Result<usize, StoreError> {
    let actors = view.open_table(ACTORS)?;
    let created_at = agentkeys_runtime::store::read_record(&actors, master)?
        .map_or(Timestamp::from_millis(0), |r| r.created_at);
    Ok(list(
        &view.open_table(IDENTITIES)?,
        &view.open_table(MASTER_IDENTITIES)?,
        &view.open_table(IDENTITY_LINKS)?,
        master,
        created_at,
    )?
    .len())
}

/// Where an identity stands for a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Unknown here: a login derives (and may create) its own master.
    Unbound,
    /// It logs into this master.
    Bound(Omni),
    /// It was unlinked from this master: logins with it are refused.
    Unlinked(Omni),
}

/// Where (`kind`, `value`) stands.
pub fn standing(txn: &WriteTransaction, kind: &str, value: &str) -> Result<Standing, StoreError> {
    let identities = txn.open_table(IDENTITIES)?;
    if let Some(m) = identities.get((kind, value))? {
        return Ok(Standing::Bound(Omni::from_bytes(*m.value())));
    }
    let tombstones = txn.open_table(IDENTITY_TOMBSTONES)?;
    let gone = tombstones
        .get((kind, value))?
        .map(|v| Omni::from_bytes(*v.value().0));
    Ok(gone.map_or(Standing::Unbound, Standing::Unlinked))
}

/// Why a link or unlink was refused (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The identity logs into another master.
    #[error("this identity belongs to another account")]
    Taken,
    /// A wallet this gateway manages is never a login identity.
    #[error("managed wallets cannot be linked")]
    ManagedWallet,
    /// The master holds [`MAX_IDENTITIES`] already.
    #[error("an account holds at most {MAX_IDENTITIES} identities")]
    TooMany,
    /// The identity is not one of this master's.
    #[error("no such identity on this account")]
    NotFound,
    /// The last identity of a master cannot go (the tree would be unreachable).
    #[error("the last identity of an account cannot be unlinked")]
    Last,
    /// The master is revoked or is not a master.
    #[error("the account is revoked or unknown")]
    NotLive,
}

/// Links a proven identity to a master (idempotent: answers `false` if it was linked already).
#[derive(Debug, Clone)]
pub struct LinkIdentity {
    /// The master.
    pub master: Omni,
    /// (`type`, canonical value).
    pub identity: (String, String),
    /// For `evm`: the address, refused when it is a managed wallet.
    pub wallet: Option<[u8; 20]>,
    /// Who asked.
    pub origin: Origin,
    /// Now.
    pub at: Timestamp,
}

fn master_live(view: &WriteTransaction, master: &Omni) -> Result<bool, StoreError> {
    let actors = view.open_table(ACTORS)?;
    Ok(read_lineage(&actors, master)?.is_some_and(|l| {
        l.actor().kind == ActorKind::Master
            && matches!(l.status(), agentkeys_runtime::store::Status::Active)
    }))
}

fn identity_detail(kind: &str, value: &str) -> [u8; 32] {
    audit::detail_hash(format!("{kind}:{value}").as_bytes())
}

impl Mutation for LinkIdentity {
    type Plan = Option<LinkIdentity>;
    type Output = bool;
    type Rejection = IdentityError;

    fn check(
        self,
        view: &WriteTransaction,
    ) -> Result<Result<Option<LinkIdentity>, IdentityError>, StoreError> {
        if !master_live(view, &self.master)? {
            return Ok(Err(IdentityError::NotLive));
        }
        if let Some(wallet) = &self.wallet
            && super::accounts::is_managed(view, wallet)?
        {
            return Ok(Err(IdentityError::ManagedWallet));
        }
        let (kind, value) = (&self.identity.0, &self.identity.1);
        match standing(view, kind, value)? {
            Standing::Bound(m) if m == self.master => return Ok(Ok(None)),
            Standing::Bound(_) => return Ok(Err(IdentityError::Taken)),
            // Proven again by a master: an unlinked identity may be linked anew.
            Standing::Unbound | Standing::Unlinked(_) => {}
        }
        if held(view, &self.master)? >= MAX_IDENTITIES {
            return Ok(Err(IdentityError::TooMany));
        }
        Ok(Ok(Some(self)))
    }

    fn apply(plan: Option<LinkIdentity>, txn: &WriteTransaction) -> Result<bool, StoreError> {
        let Some(op) = plan else {
            return Ok(false);
        };
        let (kind, value) = (op.identity.0.as_str(), op.identity.1.as_str());
        txn.open_table(IDENTITIES)?
            .insert((kind, value), op.master.as_bytes())?;
        txn.open_table(IDENTITY_LINKS)?
            .insert((op.master.as_bytes(), kind, value), op.at.as_millis())?;
        txn.open_table(IDENTITY_TOMBSTONES)?.remove((kind, value))?;
        audit::append(
            txn,
            &AuditEntry::done(
                op.master,
                op.origin,
                op::IDENTITY_LINK,
                op.master,
                identity_detail(kind, value),
                op.at,
            ),
        )?;
        Ok(true)
    }
}

/// Unlinks an identity from a master and tombstones it (never the master's last one).
#[derive(Debug, Clone)]
pub struct UnlinkIdentity {
    /// The master.
    pub master: Omni,
    /// (`type`, canonical value).
    pub identity: (String, String),
    /// Who asked.
    pub origin: Origin,
    /// Now.
    pub at: Timestamp,
}

impl Mutation for UnlinkIdentity {
    type Plan = UnlinkIdentity;
    type Output = ();
    type Rejection = IdentityError;

    fn check(
        self,
        view: &WriteTransaction,
    ) -> Result<Result<UnlinkIdentity, IdentityError>, StoreError> {
        if !master_live(view, &self.master)? {
            return Ok(Err(IdentityError::NotLive));
        }
        let (kind, value) = (&self.identity.0, &self.identity.1);
        if standing(view, kind, value)? != Standing::Bound(self.master) {
            return Ok(Err(IdentityError::NotFound));
        }
        if held(view, &self.master)? <= 1 {
            return Ok(Err(IdentityError::Last));
        }
        Ok(Ok(self))
    }

    fn apply(op: UnlinkIdentity, txn: &WriteTransaction) -> Result<(), StoreError> {
        let (kind, value) = (op.identity.0.as_str(), op.identity.1.as_str());
        txn.open_table(IDENTITIES)?.remove((kind, value))?;
        txn.open_table(IDENTITY_LINKS)?
            .remove((op.master.as_bytes(), kind, value))?;
        txn.open_table(IDENTITY_TOMBSTONES)?
            .insert((kind, value), (op.master.as_bytes(), op.at.as_millis()))?;
        audit::append(
            txn,
            &AuditEntry::done(
                op.master,
                op.origin,
                op::IDENTITY_UNLINK,
                op.master,
                identity_detail(kind, value),
                op.at,
            ),
        )?;
        Ok(())
    }
}
