//! Logins and sessions: identities, managed wallets, the registration allow-list, and the
//! mutations that bind device keys (each with its audit rows in the same transaction).
//!
//! | table | key | value |
//! |---|---|---|
//! | `identities` | (type, value), e.g. (`evm`, `0x…`) | master omni |
//! | `managed_wallets` | 20-byte address | the omni whose managed (or anchor) wallet it is |
//! | `allowlist` | lowercase address or email | added at (ms) |
//! | `master_identities` | master omni | `type:value` of the identity it was created with |

use agentkeys_runtime::store::{ReadableTable, TableDefinition, WriteTransaction};

use super::audit::{self, AuditEntry, Origin, op};
use super::devices::{self, DeviceBinding};
use agentkeys_runtime::Omni;
use agentkeys_runtime::Timestamp;
use agentkeys_runtime::store::Mutation;
use agentkeys_runtime::store::insert_record;
use agentkeys_runtime::store::{ACTORS, read_lineage, read_record};
use agentkeys_runtime::store::{ActorKind, ActorRecord, Status, StoreError, StoredStatus};

pub(crate) const IDENTITIES: TableDefinition<(&str, &str), &[u8; 32]> =
    TableDefinition::new("identities");
pub(crate) const MANAGED_WALLETS: TableDefinition<&[u8; 20], &[u8; 32]> =
    TableDefinition::new("managed_wallets");
pub(crate) const ALLOWLIST: TableDefinition<&str, u64> = TableDefinition::new("allowlist");
pub(crate) const MASTER_IDENTITIES: TableDefinition<&[u8; 32], &str> =
    TableDefinition::new("master_identities");

/// Who may create a new master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Anyone who proves an identity.
    Open,
    /// Only identities on the allow-list.
    Allowlist,
    /// Nobody new; existing masters still log in.
    Closed,
}

/// A login: creates the master on first use, binds the device key, audits both.
#[derive(Debug, Clone)]
pub struct Login {
    /// The master omni (derived from the anchor wallet by the caller).
    pub master: Omni,
    /// The master's own managed wallet `W(master)`, indexed so it can never log in.
    pub wallet: [u8; 20],
    /// The proven identity: (`evm`, lowercase `0x` address) or (`email`, address).
    pub identity: (String, String),
    /// The wallet that signed the login (SIWE): refused if it is a managed wallet.
    pub signer: Option<[u8; 20]>,
    /// An email master's anchor wallet `W(identity omni)`: indexed as managed.
    pub anchor: Option<[u8; 20]>,
    /// The policy for a new master.
    pub registration: Registration,
    /// The device key's thumbprint.
    pub jkt: String,
    /// The binding's label (for new bindings).
    pub device_label: String,
    /// Request id (the actor is the master itself).
    pub request_id: String,
    /// The time to record.
    pub at: Timestamp,
}

/// A successful login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedIn {
    /// The master's record.
    pub record: ActorRecord,
    /// The binding the session names.
    pub binding: DeviceBinding,
    /// Whether this login created the master.
    pub new_master: bool,
    /// Whether the binding is new (a repeated login with the same key reuses its binding).
    pub new_binding: bool,
}

/// Why a login was refused (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The signing wallet is one this gateway manages.
    #[error("managed wallets cannot log in")]
    ManagedWallet,
    /// No new masters may register (or the identity is not on the allow-list).
    #[error("registration is closed for this identity")]
    RegistrationClosed,
    /// The master was revoked by the host admin.
    #[error("this account was revoked")]
    Revoked {
        /// When.
        at: Timestamp,
    },
    /// The omni names an agent, not a master.
    #[error("the omni names an agent")]
    NotMaster,
    /// The identity was unlinked from its master: it logs into nothing.
    #[error("this identity was unlinked from its account")]
    IdentityUnlinked,
}

#[doc(hidden)]
#[derive(Debug)]
pub struct LoginPlan {
    op: Login,
    existing: Option<ActorRecord>,
}

impl Mutation for Login {
    type Plan = LoginPlan;
    type Output = LoggedIn;
    type Rejection = LoginError;

    fn check(self, view: &WriteTransaction) -> Result<Result<LoginPlan, LoginError>, StoreError> {
        if let Some(signer) = &self.signer
            && is_managed(view, signer)?
        {
            return Ok(Err(LoginError::ManagedWallet));
        }
        // A linked identity logs into the master it is bound to, whatever it would derive.
        let mut op = self;
        match super::identities::standing(view, &op.identity.0, &op.identity.1)? {
            super::identities::Standing::Unlinked(_) => {
                return Ok(Err(LoginError::IdentityUnlinked));
            }
            super::identities::Standing::Bound(master) => op.master = master,
            super::identities::Standing::Unbound => {}
        }
        let actors = view.open_table(ACTORS)?;
        let existing = read_record(&actors, &op.master)?;
        match &existing {
            Some(r) if r.kind != ActorKind::Master => return Ok(Err(LoginError::NotMaster)),
            Some(r) => {
                if let Some(at) = r.revoked_at() {
                    return Ok(Err(LoginError::Revoked { at }));
                }
            }
            None => {
                let allowed = match op.registration {
                    Registration::Open => true,
                    Registration::Closed => false,
                    Registration::Allowlist => {
                        let list = view.open_table(ALLOWLIST)?;
                        list.get(op.identity.1.as_str())?.is_some()
                    }
                };
                if !allowed {
                    return Ok(Err(LoginError::RegistrationClosed));
                }
            }
        }
        Ok(Ok(LoginPlan { op, existing }))
    }

    fn apply(plan: LoginPlan, txn: &WriteTransaction) -> Result<LoggedIn, StoreError> {
        let op = plan.op;
        let origin = Origin {
            actor: Some(op.master),
            request_id: op.request_id.clone(),
        };
        let entry = |code: u16, detail: [u8; 32]| {
            AuditEntry::done(op.master, origin.clone(), code, op.master, detail, op.at)
        };
        let new_master = plan.existing.is_none();
        let record = match plan.existing {
            Some(record) => record,
            None => {
                let record = ActorRecord {
                    omni: op.master,
                    parent: None,
                    label: String::new(),
                    path: String::new(),
                    kind: ActorKind::Master,
                    status: StoredStatus::Active,
                    created_at: op.at,
                    scopes: Vec::new(),
                };
                insert_record(txn, &record)?;
                index_wallet(txn, &op.wallet, &record.omni)?;
                index_identity(txn, &op)?;
                audit::append(txn, &entry(op::ACTOR_CREATE, [0; 32]))?;
                record
            }
        };
        let key_hash = audit::detail_hash(op.jkt.as_bytes());
        let (binding, new_binding) = match devices::live_binding_of_key(txn, &op.master, &op.jkt)? {
            Some(binding) => (binding, false),
            None => {
                let b = devices::insert_binding(txn, &op.master, &op.jkt, &op.device_label, op.at)?;
                audit::append(txn, &entry(op::DEVICE_ADD, key_hash))?;
                (b, true)
            }
        };
        audit::append(txn, &entry(op::LOGIN, key_hash))?;
        Ok(LoggedIn {
            record,
            binding,
            new_master,
            new_binding,
        })
    }
}

/// Whether `wallet` is a managed (or anchor) wallet of this gateway.
pub(crate) fn is_managed(view: &WriteTransaction, wallet: &[u8; 20]) -> Result<bool, StoreError> {
    let managed = view.open_table(MANAGED_WALLETS)?;
    Ok(managed.get(wallet)?.is_some())
}

/// Indexes an actor's managed wallet, so that wallet can never log in.
pub(crate) fn index_wallet(
    txn: &WriteTransaction,
    wallet: &[u8; 20],
    omni: &Omni,
) -> Result<(), StoreError> {
    txn.open_table(MANAGED_WALLETS)?
        .insert(wallet, omni.as_bytes())?;
    Ok(())
}

fn index_identity(txn: &WriteTransaction, op: &Login) -> Result<(), StoreError> {
    txn.open_table(IDENTITIES)?.insert(
        (op.identity.0.as_str(), op.identity.1.as_str()),
        op.master.as_bytes(),
    )?;
    let identity = format!("{}:{}", op.identity.0, op.identity.1);
    txn.open_table(MASTER_IDENTITIES)?
        .insert(op.master.as_bytes(), identity.as_str())?;
    if let Some(anchor) = &op.anchor {
        txn.open_table(MANAGED_WALLETS)?
            .insert(anchor, op.master.as_bytes())?;
    }
    Ok(())
}

/// Why a binding cannot be used (refresh, delete).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindingError {
    /// No such actor or binding.
    #[error("no such device binding")]
    NotFound,
    /// The binding was deleted.
    #[error("the device binding was deleted")]
    Tombstoned,
    /// The actor or an ancestor is revoked.
    #[error("the actor's lineage is revoked")]
    Revoked {
        /// The revoked actor nearest the root.
        by: Omni,
        /// When.
        at: Timestamp,
    },
    /// The binding belongs to another key.
    #[error("the binding belongs to another device key")]
    WrongKey,
}

/// A session refresh: the binding must be live, its key the caller's, the lineage live.
/// Records the use and an audit row.
#[derive(Debug, Clone)]
pub struct RefreshSession {
    /// The actor.
    pub omni: Omni,
    /// The binding the old token named.
    pub bid: u64,
    /// The caller's key thumbprint.
    pub jkt: String,
    /// Request id.
    pub request_id: String,
    /// Now.
    pub at: Timestamp,
}

/// A binding with the lineage it was checked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingInUse {
    /// The binding after the change.
    pub binding: DeviceBinding,
    /// The actor's master.
    pub master: Omni,
    /// The actor's record.
    pub record: ActorRecord,
}

fn check_binding(
    view: &WriteTransaction,
    omni: &Omni,
    bid: u64,
) -> Result<Result<BindingInUse, BindingError>, StoreError> {
    let actors = view.open_table(ACTORS)?;
    let Some(lineage) = read_lineage(&actors, omni)? else {
        return Ok(Err(BindingError::NotFound));
    };
    if let Status::Revoked { by, at } = lineage.status() {
        return Ok(Err(BindingError::Revoked { by, at }));
    }
    let table = view.open_table(devices::DEVICES)?;
    let Some(binding) = devices::read_binding(&table, omni, bid)? else {
        return Ok(Err(BindingError::NotFound));
    };
    Ok(Ok(BindingInUse {
        binding,
        master: lineage.records()[0].omni,
        record: lineage.actor().clone(),
    }))
}

impl Mutation for RefreshSession {
    type Plan = (BindingInUse, RefreshSession);
    type Output = BindingInUse;
    type Rejection = BindingError;

    fn check(
        self,
        view: &WriteTransaction,
    ) -> Result<Result<Self::Plan, BindingError>, StoreError> {
        let found = match check_binding(view, &self.omni, self.bid)? {
            Ok(found) => found,
            Err(e) => return Ok(Err(e)),
        };
        if !found.binding.is_live() {
            return Ok(Err(BindingError::Tombstoned));
        }
        if found.binding.jkt != self.jkt {
            return Ok(Err(BindingError::WrongKey));
        }
        Ok(Ok((found, self)))
    }

    fn apply(plan: Self::Plan, txn: &WriteTransaction) -> Result<BindingInUse, StoreError> {
        let (mut found, op) = plan;
        found.binding.last_used = op.at;
        devices::update_binding(txn, &found.binding)?;
        audit::append(
            txn,
            &AuditEntry::done(
                found.master,
                Origin {
                    actor: Some(op.omni),
                    request_id: op.request_id,
                },
                op::SESSION_REFRESH,
                op.omni,
                audit::detail_hash(op.jkt.as_bytes()),
                op.at,
            ),
        )?;
        Ok(found)
    }
}

/// Deletes a device binding (tombstone; idempotent); its tokens die at once.
#[derive(Debug, Clone)]
pub struct DeleteDevice {
    /// The actor.
    pub omni: Omni,
    /// The binding.
    pub bid: u64,
    /// Who asked.
    pub origin: Origin,
    /// Now.
    pub at: Timestamp,
}

impl Mutation for DeleteDevice {
    type Plan = (BindingInUse, DeleteDevice);
    type Output = BindingInUse;
    type Rejection = BindingError;

    fn check(
        self,
        view: &WriteTransaction,
    ) -> Result<Result<Self::Plan, BindingError>, StoreError> {
        Ok(check_binding(view, &self.omni, self.bid)?.map(|found| (found, self)))
    }

    fn apply(plan: Self::Plan, txn: &WriteTransaction) -> Result<BindingInUse, StoreError> {
        let (mut found, op) = plan;
        if found.binding.is_live() {
            agentkeys_runtime::store::epochs::touch(&found.master);
            found.binding.tombstoned_at = Some(op.at);
            devices::update_binding(txn, &found.binding)?;
            audit::append(
                txn,
                &AuditEntry::done(
                    found.master,
                    op.origin,
                    op::DEVICE_REVOKE,
                    op.omni,
                    audit::detail_hash(found.binding.jkt.as_bytes()),
                    op.at,
                ),
            )?;
        }
        Ok(found)
    }
}

/// Appends one audit row on its own (signatures, tokens, alerts, quarantines).
#[derive(Debug, Clone)]
pub struct AppendAudit(pub AuditEntry);

impl Mutation for AppendAudit {
    type Plan = AuditEntry;
    type Output = u64;
    type Rejection = std::convert::Infallible;

    fn check(
        self,
        _view: &WriteTransaction,
    ) -> Result<Result<AuditEntry, std::convert::Infallible>, StoreError> {
        Ok(Ok(self.0))
    }

    fn apply(plan: AuditEntry, txn: &WriteTransaction) -> Result<u64, StoreError> {
        audit::append(txn, &plan)
    }
}

/// Adds or removes an allow-list entry (host admin; idempotent). Answers whether it changed.
#[derive(Debug, Clone)]
pub struct SetAllowed {
    /// Lowercase `0x` address or email.
    pub entry: String,
    /// Add (`true`) or remove.
    pub allowed: bool,
    /// Now.
    pub at: Timestamp,
}

impl Mutation for SetAllowed {
    type Plan = SetAllowed;
    type Output = bool;
    type Rejection = std::convert::Infallible;

    fn check(
        self,
        _view: &WriteTransaction,
    ) -> Result<Result<SetAllowed, std::convert::Infallible>, StoreError> {
        Ok(Ok(self))
    }

    fn apply(plan: SetAllowed, txn: &WriteTransaction) -> Result<bool, StoreError> {
        let mut list = txn.open_table(ALLOWLIST)?;
        let changed = if plan.allowed {
            list.insert(plan.entry.as_str(), plan.at.as_millis())?
                .is_none()
        } else {
            list.remove(plan.entry.as_str())?.is_some()
        };
        Ok(changed)
    }
}
