//! Link codes (DESIGN §11): one-time codes that bind a device key to an actor. Only
//! SHA-256(normalized code) is stored. Redemption consumes the code, binds the key and writes
//! the audit rows in one transaction; the same key again gets the same binding; another key
//! after use is refused with an alert row.
//!
//! | table | key | value |
//! |---|---|---|
//! | `link_codes` | SHA-256(code) | v1: target omni, created, expires, state (unused \| used by jkt → bid at time) |
//! | `link_codes_by_actor` | (omni, hash) | expires (ms): outstanding codes, for the per-actor cap |

use agentkeys_runtime::store::{ReadableTable, TableDefinition, WriteTransaction};

use super::audit::{self, AuditEntry, Origin, op, outcome};
use super::devices::{self, DeviceBinding};
use agentkeys_runtime::Omni;
use agentkeys_runtime::Timestamp;
use agentkeys_runtime::store::Mutation;
use agentkeys_runtime::store::encoding::{Reader, put_bytes};
use agentkeys_runtime::store::{ACTORS, read_lineage};
use agentkeys_runtime::store::{ActorRecord, DecodeError, Status, StoreError};

pub(crate) const LINK_CODES: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("link_codes");
pub(crate) const LINK_CODES_BY_ACTOR: TableDefinition<(&[u8; 32], &[u8; 32]), u64> =
    TableDefinition::new("link_codes_by_actor");

const LINK_VERSION: u8 = 1;

#[doc(hidden)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCode {
    omni: Omni,
    created_at: Timestamp,
    expires_at: Timestamp,
    used: Option<(String, u64, Timestamp)>,
}

impl LinkCode {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(100);
        out.push(LINK_VERSION);
        out.extend_from_slice(self.omni.as_bytes());
        out.extend_from_slice(&self.created_at.as_millis().to_be_bytes());
        out.extend_from_slice(&self.expires_at.as_millis().to_be_bytes());
        match &self.used {
            None => out.push(0),
            Some((jkt, bid, at)) => {
                out.push(1);
                put_bytes(&mut out, jkt.as_bytes());
                out.extend_from_slice(&bid.to_be_bytes());
                out.extend_from_slice(&at.as_millis().to_be_bytes());
            }
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let mut r = Reader::new(bytes);
        let decoded = (|| {
            let version = r.u8()?;
            if version != LINK_VERSION {
                return Err(DecodeError::Version(version));
            }
            let code = LinkCode {
                omni: Omni::from_bytes(r.array()?),
                created_at: Timestamp::from_millis(r.u64()?),
                expires_at: Timestamp::from_millis(r.u64()?),
                used: match r.u8()? {
                    0 => None,
                    1 => Some((r.string()?, r.u64()?, Timestamp::from_millis(r.u64()?))),
                    _ => return Err(DecodeError::Malformed(r.position() - 1)),
                },
            };
            r.finish().map(|()| code)
        })();
        decoded.map_err(|e| StoreError::Corrupt(format!("link code: {e}")))
    }
}

/// Issue a link code for an actor.
#[derive(Debug, Clone)]
pub struct IssueLinkCode {
    /// The actor the code binds a device to.
    pub omni: Omni,
    /// SHA-256 of the normalized code.
    pub hash: [u8; 32],
    /// Now.
    pub at: Timestamp,
    /// When it stops working.
    pub expires_at: Timestamp,
    /// Most outstanding (unused, unexpired) codes per actor.
    pub cap: usize,
    /// Who asked.
    pub origin: Origin,
}

/// Why a code was not issued or not redeemed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// No such code (or actor).
    #[error("no such link code")]
    NotFound,
    /// Past its expiry.
    #[error("the link code expired")]
    Expired,
    /// The actor or an ancestor is revoked.
    #[error("the actor's lineage is revoked")]
    Revoked {
        /// The revoked actor nearest the root.
        by: Omni,
        /// When.
        at: Timestamp,
    },
    /// Too many outstanding codes for this actor; the earliest expires in `retry_after_ms`.
    #[error("too many link codes are outstanding for this actor")]
    TooMany {
        /// Milliseconds until the earliest outstanding code expires.
        retry_after_ms: u64,
    },
    /// The code is already issued (a random collision; issue another).
    #[error("the code exists")]
    Collision,
    /// The scopes were narrowed by an ancestor of the caller; only it or one above may widen
    /// them.
    #[error(
        "these scopes were narrowed by an ancestor of yours; only it or one above it may widen them"
    )]
    SetAbove {
        /// Who narrowed them last.
        set_by: Omni,
    },
}

/// The actor a link code was issued for, if the code exists.
pub(crate) fn code_owner(
    codes: &impl ReadableTable<&'static [u8; 32], &'static [u8]>,
    hash: &[u8; 32],
) -> Result<Option<Omni>, StoreError> {
    codes
        .get(hash)?
        .map(|v| LinkCode::decode(v.value()).map(|code| code.omni))
        .transpose()
}

fn live_lineage(
    view: &WriteTransaction,
    omni: &Omni,
) -> Result<Result<agentkeys_runtime::store::Lineage, LinkError>, StoreError> {
    let actors = view.open_table(ACTORS)?;
    Ok(match read_lineage(&actors, omni)? {
        None => Err(LinkError::NotFound),
        Some(lineage) => match lineage.status() {
            Status::Active => Ok(lineage),
            Status::Revoked { by, at } => Err(LinkError::Revoked { by, at }),
        },
    })
}

impl Mutation for IssueLinkCode {
    type Plan = (IssueLinkCode, Omni);
    type Output = Timestamp;
    type Rejection = LinkError;

    fn check(self, view: &WriteTransaction) -> Result<Result<Self::Plan, LinkError>, StoreError> {
        let lineage = match live_lineage(view, &self.omni)? {
            Ok(lineage) => lineage,
            Err(e) => return Ok(Err(e)),
        };
        let codes = view.open_table(LINK_CODES)?;
        if codes.get(&self.hash)?.is_some() {
            return Ok(Err(LinkError::Collision));
        }
        let by_actor = view.open_table(LINK_CODES_BY_ACTOR)?;
        let o = self.omni.as_bytes();
        let now = self.at.as_millis();
        let (mut outstanding, mut earliest) = (0, u64::MAX);
        for entry in by_actor.range((o, &[0u8; 32])..=(o, &[0xffu8; 32]))? {
            let (_, expires) = entry?;
            let expires = expires.value();
            if expires > now {
                outstanding += 1;
                earliest = earliest.min(expires);
            }
        }
        if outstanding >= self.cap {
            return Ok(Err(LinkError::TooMany {
                retry_after_ms: earliest.saturating_sub(now),
            }));
        }
        let master = lineage.records()[0].omni;
        Ok(Ok((self, master)))
    }

    fn apply(plan: Self::Plan, txn: &WriteTransaction) -> Result<Timestamp, StoreError> {
        let (op, master) = plan;
        let code = LinkCode {
            omni: op.omni,
            created_at: op.at,
            expires_at: op.expires_at,
            used: None,
        };
        txn.open_table(LINK_CODES)?
            .insert(&op.hash, code.encode().as_slice())?;
        let mut by_actor = txn.open_table(LINK_CODES_BY_ACTOR)?;
        // Forget this actor's expired entries while here (the codes themselves stay, so a late
        // redemption still answers `expired`).
        let o = op.omni.as_bytes();
        let stale: Vec<[u8; 32]> = by_actor
            .range((o, &[0u8; 32])..=(o, &[0xffu8; 32]))?
            .filter_map(Result::ok)
            .filter(|(_, expires)| expires.value() <= op.at.as_millis())
            .map(|(key, _)| *key.value().1)
            .collect();
        for hash in &stale {
            by_actor.remove((o, hash))?;
        }
        by_actor.insert((o, &op.hash), op.expires_at.as_millis())?;
        audit::append(
            txn,
            &AuditEntry::done(
                master,
                op.origin,
                op::LINK_CODE_ISSUE,
                op.omni,
                op.hash,
                op.at,
            ),
        )?;
        Ok(op.expires_at)
    }
}

/// Redeem a link code with a device key.
#[derive(Debug, Clone)]
pub struct RedeemLinkCode {
    /// The actor redeeming it (its owner): a code of another actor is `NotFound`.
    pub omni: Omni,
    /// SHA-256 of the normalized code.
    pub hash: [u8; 32],
    /// The redeeming key.
    pub jkt: String,
    /// A label for the new binding.
    pub device_label: String,
    /// Now.
    pub at: Timestamp,
    /// Request id.
    pub request_id: String,
}

/// What a redemption did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    /// The key is bound (now, or by an earlier redemption of this code by the same key).
    Bound {
        /// The actor.
        record: Box<ActorRecord>,
        /// Its master.
        master: Omni,
        /// The binding.
        binding: Box<DeviceBinding>,
        /// Whether this call bound it.
        new: bool,
    },
    /// Another key already used the code: refused, and an alert row was written.
    UsedByOther {
        /// The code's actor.
        omni: Omni,
        /// Its master.
        master: Omni,
    },
}

#[doc(hidden)]
#[derive(Debug)]
pub enum RedeemPlan {
    Bind(RedeemLinkCode, LinkCode, ActorRecord, Omni),
    Again(ActorRecord, Omni, DeviceBinding),
    Alert(RedeemLinkCode, Omni, Omni),
}

impl Mutation for RedeemLinkCode {
    type Plan = RedeemPlan;
    type Output = Redemption;
    type Rejection = LinkError;

    fn check(self, view: &WriteTransaction) -> Result<Result<RedeemPlan, LinkError>, StoreError> {
        let codes = view.open_table(LINK_CODES)?;
        let Some(code) = codes
            .get(&self.hash)?
            .map(|v| LinkCode::decode(v.value()))
            .transpose()?
            .filter(|code| code.omni == self.omni)
        else {
            return Ok(Err(LinkError::NotFound));
        };
        let lineage = match live_lineage(view, &code.omni)? {
            Ok(lineage) => lineage,
            Err(e) => return Ok(Err(e)),
        };
        let master = lineage.records()[0].omni;
        let record = lineage.actor().clone();
        match &code.used {
            Some((jkt, bid, _)) if *jkt == self.jkt => {
                let devices = view.open_table(devices::DEVICES)?;
                Ok(match devices::read_binding(&devices, &code.omni, *bid)? {
                    Some(binding) if binding.is_live() && code.expires_at > self.at => {
                        Ok(RedeemPlan::Again(record, master, binding))
                    }
                    _ => Err(LinkError::Expired),
                })
            }
            Some(_) => Ok(Ok(RedeemPlan::Alert(self, code.omni, master))),
            None if code.expires_at <= self.at => Ok(Err(LinkError::Expired)),
            None => Ok(Ok(RedeemPlan::Bind(self, code, record, master))),
        }
    }

    fn apply(plan: RedeemPlan, txn: &WriteTransaction) -> Result<Redemption, StoreError> {
        match plan {
            RedeemPlan::Again(record, master, binding) => Ok(Redemption::Bound {
                record: Box::new(record),
                master,
                binding: Box::new(binding),
                new: false,
            }),
            RedeemPlan::Alert(op, omni, master) => {
                let mut entry = AuditEntry::done(
                    master,
                    Origin {
                        actor: None,
                        request_id: op.request_id,
                    },
                    op::LINK_CODE_REUSE,
                    omni,
                    audit::detail_hash(op.jkt.as_bytes()),
                    op.at,
                );
                entry.outcome = outcome::REFUSED;
                audit::append(txn, &entry)?;
                Ok(Redemption::UsedByOther { omni, master })
            }
            RedeemPlan::Bind(op, mut code, record, master) => {
                let omni = record.omni;
                let (binding, added) = match devices::live_binding_of_key(txn, &omni, &op.jkt)? {
                    Some(binding) => (binding, false),
                    None => (
                        devices::insert_binding(txn, &omni, &op.jkt, &op.device_label, op.at)?,
                        true,
                    ),
                };
                code.used = Some((op.jkt.clone(), binding.bid, op.at));
                txn.open_table(LINK_CODES)?
                    .insert(&op.hash, code.encode().as_slice())?;
                txn.open_table(LINK_CODES_BY_ACTOR)?
                    .remove((omni.as_bytes(), &op.hash))?;
                let origin = Origin {
                    actor: Some(omni),
                    request_id: op.request_id,
                };
                let key = audit::detail_hash(op.jkt.as_bytes());
                audit::append(
                    txn,
                    &AuditEntry::done(
                        master,
                        origin.clone(),
                        op::LINK_CODE_REDEEM,
                        omni,
                        op.hash,
                        op.at,
                    ),
                )?;
                if added {
                    audit::append(
                        txn,
                        &AuditEntry::done(master, origin, op::DEVICE_ADD, omni, key, op.at),
                    )?;
                }
                Ok(Redemption::Bound {
                    record: Box::new(record),
                    master,
                    binding: Box::new(binding),
                    new: true,
                })
            }
        }
    }
}

/// Set the scopes stored on an agent (its effective scopes are the intersection along its
/// lineage, computed at check time).
#[derive(Debug, Clone)]
pub struct SetScopes {
    /// The agent.
    pub omni: Omni,
    /// The new set.
    pub scopes: Vec<String>,
    /// Who asked.
    pub origin: Origin,
    /// Now.
    pub at: Timestamp,
}

/// Who last set an agent's scopes (the setter rule: a narrowing by an ancestor is widened only
/// by it or one above it).
pub(crate) const SCOPES_SET_BY: TableDefinition<&[u8; 32], &[u8; 32]> =
    TableDefinition::new("scopes_set_by");

#[doc(hidden)]
#[derive(Debug)]
pub struct SetScopesPlan {
    op: SetScopes,
    record: ActorRecord,
    master: Omni,
    set_by: Option<Omni>,
}

impl Mutation for SetScopes {
    type Plan = SetScopesPlan;
    type Output = ActorRecord;
    type Rejection = LinkError;

    fn check(self, view: &WriteTransaction) -> Result<Result<Self::Plan, LinkError>, StoreError> {
        let lineage = match live_lineage(view, &self.omni)? {
            Ok(lineage) => lineage,
            Err(e) => return Ok(Err(e)),
        };
        if lineage.records().len() < 2 {
            // A master holds every scope; nothing is stored for it.
            return Ok(Err(LinkError::NotFound));
        }
        let record = lineage.actor().clone();
        let master = lineage.records()[0].omni;
        let chain = lineage.omnis();
        let depth = |o: &Omni| chain.iter().position(|c| c == o);
        let previous = view
            .open_table(SCOPES_SET_BY)?
            .get(self.omni.as_bytes())?
            .map(|v| Omni::from_bytes(*v.value()));
        let caller = self.origin.actor;
        // The higher of the caller and the previous setter stays recorded.
        let set_by = match (
            caller.and_then(|c| depth(&c)),
            previous.and_then(|p| depth(&p)),
        ) {
            (Some(mine), Some(theirs)) if theirs < mine => {
                let widens = self.scopes.iter().any(|s| !record.scopes.contains(s));
                if widens {
                    return Ok(Err(LinkError::SetAbove {
                        set_by: chain[theirs],
                    }));
                }
                previous
            }
            (Some(_), _) => caller,
            // The host operator (no actor) is above everyone.
            (None, _) => None,
        };
        Ok(Ok(SetScopesPlan {
            op: self,
            record,
            master,
            set_by,
        }))
    }

    fn apply(plan: Self::Plan, txn: &WriteTransaction) -> Result<ActorRecord, StoreError> {
        let SetScopesPlan {
            op,
            mut record,
            master,
            set_by,
        } = plan;
        agentkeys_runtime::store::epochs::touch(&master);
        let mut setters = txn.open_table(SCOPES_SET_BY)?;
        match set_by {
            Some(s) => setters.insert(op.omni.as_bytes(), s.as_bytes())?,
            None => setters.remove(op.omni.as_bytes())?,
        };
        drop(setters);
        record.scopes = op.scopes;
        txn.open_table(ACTORS)?
            .insert(record.omni.as_bytes(), record.encode().as_slice())?;
        let detail = audit::detail_hash(record.scopes.join(" ").as_bytes());
        audit::append(
            txn,
            &AuditEntry::done(master, op.origin, op::SCOPES_SET, op.omni, detail, op.at),
        )?;
        Ok(record)
    }
}

/// Create an actor (or find its live label) and bind a device key to it, in one transaction:
/// a pairing claim.
#[derive(Debug, Clone)]
pub struct CreateAndBind {
    /// The actor to create (its scopes are ignored when the label exists and is live).
    pub create: super::NewActor,
    /// The key to bind.
    pub jkt: String,
    /// The binding's label.
    pub device_label: String,
}

/// What a pairing claim did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedAndBound {
    /// The actor.
    pub record: ActorRecord,
    /// Its master.
    pub master: Omni,
    /// The binding.
    pub binding: DeviceBinding,
    /// Whether the actor was created now (else a binding was added to an existing one).
    pub created: bool,
}

#[doc(hidden)]
#[derive(Debug)]
pub enum CreateAndBindPlan {
    Create(super::NewActorPlan, CreateAndBind),
    Existing(ActorRecord, Omni, CreateAndBind),
}

impl Mutation for CreateAndBind {
    type Plan = CreateAndBindPlan;
    type Output = CreatedAndBound;
    type Rejection = agentkeys_runtime::store::CreateError;

    fn check(
        self,
        view: &WriteTransaction,
    ) -> Result<Result<CreateAndBindPlan, agentkeys_runtime::store::CreateError>, StoreError> {
        let actors = view.open_table(ACTORS)?;
        let create = &self.create.actor;
        if let Some(lineage) = read_lineage(&actors, &create.omni)? {
            let record = lineage.actor().clone();
            if record.parent == create.parent && record.label == create.label {
                return Ok(match lineage.status() {
                    Status::Active => {
                        let master = lineage.records()[0].omni;
                        Ok(CreateAndBindPlan::Existing(record, master, self))
                    }
                    Status::Revoked { by, at } if by == record.omni => {
                        Err(agentkeys_runtime::store::CreateError::Revoked { at })
                    }
                    Status::Revoked { by, at } => {
                        Err(agentkeys_runtime::store::CreateError::ParentRevoked { by, at })
                    }
                });
            }
        }
        drop(actors);
        let create = self.create.clone();
        Ok(create
            .check(view)?
            .map(|plan| CreateAndBindPlan::Create(plan, self)))
    }

    fn apply(
        plan: CreateAndBindPlan,
        txn: &WriteTransaction,
    ) -> Result<CreatedAndBound, StoreError> {
        let (record, master, op, created) = match plan {
            CreateAndBindPlan::Existing(record, master, op) => (record, master, op, false),
            CreateAndBindPlan::Create(plan, op) => {
                let master = plan.master().unwrap_or(op.create.actor.omni);
                let created = super::NewActor::apply(plan, txn)?;
                (created.record, master, op, created.new)
            }
        };
        let binding = bind_key(
            txn,
            &BindKey {
                omni: record.omni,
                jkt: op.jkt,
                device_label: op.device_label,
                origin: op.create.actor.origin,
                at: op.create.actor.created_at,
            },
            master,
        )?;
        Ok(CreatedAndBound {
            record,
            master,
            binding,
            created,
        })
    }
}

/// Binds a device key to an existing live actor (a pairing claimed as another device of that
/// actor): the key's live binding if it has one, else a new binding and its `device_add` row.
#[derive(Debug, Clone)]
pub struct BindKey {
    /// The actor.
    pub omni: Omni,
    /// RFC 7638 thumbprint of the key.
    pub jkt: String,
    /// The binding's label.
    pub device_label: String,
    /// Who asked.
    pub origin: Origin,
    /// When.
    pub at: Timestamp,
}

/// A key bound by [`BindKey`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBound {
    /// The actor.
    pub record: ActorRecord,
    /// Its master.
    pub master: Omni,
    /// The binding (the earlier one when the key was bound already).
    pub binding: DeviceBinding,
}

impl Mutation for BindKey {
    type Plan = (BindKey, ActorRecord, Omni);
    type Output = KeyBound;
    type Rejection = LinkError;

    fn check(self, view: &WriteTransaction) -> Result<Result<Self::Plan, LinkError>, StoreError> {
        Ok(live_lineage(view, &self.omni)?.map(|lineage| {
            let master = lineage.records()[0].omni;
            let record = lineage.actor().clone();
            (self, record, master)
        }))
    }

    fn apply(plan: Self::Plan, txn: &WriteTransaction) -> Result<KeyBound, StoreError> {
        let (op, record, master) = plan;
        let binding = bind_key(txn, &op, master)?;
        Ok(KeyBound {
            record,
            master,
            binding,
        })
    }
}

/// The live binding of `op.jkt` on `op.omni`, or a new one with its audit row.
fn bind_key(
    txn: &WriteTransaction,
    op: &BindKey,
    master: Omni,
) -> Result<DeviceBinding, StoreError> {
    if let Some(binding) = devices::live_binding_of_key(txn, &op.omni, &op.jkt)? {
        return Ok(binding);
    }
    let binding = devices::insert_binding(txn, &op.omni, &op.jkt, &op.device_label, op.at)?;
    audit::append(
        txn,
        &AuditEntry::done(
            master,
            op.origin.clone(),
            op::DEVICE_ADD,
            op.omni,
            audit::detail_hash(op.jkt.as_bytes()),
            op.at,
        ),
    )?;
    Ok(binding)
}
