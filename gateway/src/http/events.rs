//! `GET /v1/events` (SSE, DESIGN §11): revocations (with the omnis), device changes, link-code
//! alerts, quarantines and approval decisions of the caller's subtree, and the approval
//! requests the caller may decide, read from the audit log.
//!
//! An event's `id` is the row's position in the master's audit chain; `Last-Event-ID` resumes
//! after it. The stream wakes on every commit that appended audit rows (so a revocation reaches
//! it as soon as it is durable), sends comments as heartbeats every 15 s, and ends — after a
//! `closed` event naming the reason — when the token expires or the caller's lineage or binding
//! dies. At most [`MAX_STREAMS`] streams per actor (429 beyond); the route is exempt from the
//! request timeout.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentkeys_actors::ledger::AuditRow;
use agentkeys_actors::ledger::audit::op;
use agentkeys_actors::principal::CheckSession;
use agentkeys_runtime::Omni;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;

use super::AppState;
use super::audit::operation_name;
use super::error::{ApiError, ErrorCode};
use super::extract::Authenticated;
use crate::auth::session::Role;

/// Streams one actor may hold open.
pub const MAX_STREAMS: usize = 4;
/// Heartbeat period.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// Open streams per actor.
#[derive(Debug, Default)]
pub struct StreamCounts {
    open: Mutex<HashMap<Omni, usize>>,
}

/// One open stream; closing it frees the slot.
struct Slot {
    counts: Arc<StreamCounts>,
    omni: Omni,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.counts.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.omni) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.omni);
            }
        }
    }
}

impl crate::notify::Watching for StreamCounts {
    fn watching(&self, master: &Omni) -> bool {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(master).is_some_and(|n| *n > 0)
    }
}

impl StreamCounts {
    fn take(self: &Arc<Self>, omni: Omni) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(omni).or_default();
        if *n >= MAX_STREAMS {
            return None;
        }
        *n += 1;
        Some(Slot {
            counts: self.clone(),
            omni,
        })
    }
}

/// Which operations are events.
fn is_event(code: u16) -> bool {
    matches!(
        code,
        op::ACTOR_REVOKE
            | op::DEVICE_ADD
            | op::DEVICE_REVOKE
            | op::LINK_CODE_REUSE
            | op::QUARANTINE
            | op::QUARANTINE_LIFTED
            | op::APPROVAL_REQUESTED
            | op::APPROVAL_APPROVED
            | op::APPROVAL_DENIED
            | op::IDENTITY_LINK
            | op::IDENTITY_UNLINK
            | op::CRED_SET
            | op::CRED_DELETE
            | op::CRED_READ
    )
}

struct Follower {
    state: AppState,
    caller: Omni,
    role: Role,
    master: Omni,
    bid: u64,
    jkt: String,
    exp: i64,
    after: u64,
    watch: tokio::sync::watch::Receiver<u64>,
    pending: VecDeque<Event>,
    inside: HashMap<Omni, bool>,
    /// The caller's lineage, root first.
    lineage: Vec<Omni>,
    /// SHA-256 of the caller's key thumbprint (how device rows name a binding's key).
    key_hash: [u8; 32],
    /// The caller holds `approvals:decide`.
    decides: bool,
    dying: Option<&'static str>,
    done: bool,
    _slot: Slot,
}

impl Follower {
    /// Whether the caller may see `row`; a store error is an error, never "not visible".
    fn visible(&mut self, row: &AuditRow) -> Result<bool, agentkeys_runtime::store::StoreError> {
        let Some(target) = row.entry.target else {
            return Ok(false);
        };
        if row.entry.op == op::APPROVAL_REQUESTED {
            // Only to those who may decide it.
            let Some(record) = self.approval(row)? else {
                return Ok(false);
            };
            return Ok(self.decides
                && record.owner != self.caller
                && self
                    .state
                    .runtime
                    .lineage(&record.owner)?
                    .is_some_and(|l| l.omnis().contains(&self.caller)));
        }
        if self.caller == self.master || target == self.caller {
            return Ok(true);
        }
        if let Some(known) = self.inside.get(&target) {
            return Ok(*known);
        }
        let inside = self
            .state
            .runtime
            .lineage(&target)?
            .is_some_and(|l| l.omnis().contains(&self.caller));
        self.inside.insert(target, inside);
        Ok(inside)
    }

    /// The approval an approval row names.
    fn approval(
        &self,
        row: &AuditRow,
    ) -> Result<
        Option<agentkeys_actors::ledger::approvals::ApprovalRecord>,
        agentkeys_runtime::store::StoreError,
    > {
        let id: [u8; 16] = row.entry.detail[..16].try_into().unwrap_or([0; 16]);
        self.state.ledger.approval(&id)
    }

    /// Whether `row` revokes the caller's lineage or deletes its binding.
    fn kills_caller(&self, row: &AuditRow) -> Option<&'static str> {
        let target = row.entry.target?;
        match row.entry.op {
            op::ACTOR_REVOKE if self.lineage.contains(&target) => Some("actor_revoked"),
            op::DEVICE_REVOKE if target == self.caller && row.entry.detail == self.key_hash => {
                Some("binding_revoked")
            }
            _ => None,
        }
    }

    fn store_failed(&mut self, e: &agentkeys_runtime::store::StoreError) {
        tracing::error!(cause = %e, "event stream cannot read the store; closing it");
        self.dying = Some("store_error");
    }

    /// Why the stream must end now, if it must.
    async fn ended(&self) -> Option<&'static str> {
        if let Some(reason) = self.dying {
            return Some(reason);
        }
        if *self.state.stopping.borrow() {
            return Some("server_stopping");
        }
        if self.state.now_seconds() >= self.exp {
            return Some("token_expired");
        }
        // With several active nodes, a change through another node must end the stream too.
        let min_epoch = match &self.state.cluster {
            Some(_) => match self.state.ledger.epoch(&self.master) {
                Ok(epoch) => epoch,
                Err(_) => return Some("store_error"),
            },
            None => 0,
        };
        let check = CheckSession {
            bid: self.bid,
            jkt: self.jkt.clone(),
            min_epoch,
        };
        match self.state.principal(self.role, self.caller, check).await {
            Ok(Ok(_)) => None,
            Ok(Err(agentkeys_actors::principal::SessionError::BindingRevoked)) => {
                Some("binding_revoked")
            }
            Err(agentkeys_runtime::CallError::Revoked { .. })
            | Ok(Err(agentkeys_actors::principal::SessionError::Call(
                agentkeys_runtime::CallError::Revoked { .. },
            ))) => Some("actor_revoked"),
            // Busy or restarting: keep the stream, check again on the next wake.
            _ => None,
        }
    }

    /// Reads the rows after the last one sent. A store error ends the stream (`store_error`)
    /// before the row it could not judge, so the client resumes from there with
    /// `Last-Event-ID` and no event is skipped.
    fn read(&mut self) {
        let rows = match self.state.ledger.audit_rows(&self.master, self.after, 256) {
            Ok(rows) => rows,
            Err(e) => return self.store_failed(&e),
        };
        for row in rows {
            let visible = if is_event(row.entry.op) {
                match self.visible(&row) {
                    Ok(v) => v,
                    Err(e) => return self.store_failed(&e),
                }
            } else {
                false
            };
            self.after = row.chain_seq;
            // The row is the proof of a committed change: no need to wait for the indexes.
            if let Some(reason) = self.kills_caller(&row) {
                self.dying = Some(reason);
            }
            if visible {
                let mut data =
                    serde_json::to_value(super::audit::row_view(&row)).unwrap_or_default();
                if matches!(
                    row.entry.op,
                    op::APPROVAL_REQUESTED | op::APPROVAL_APPROVED | op::APPROVAL_DENIED
                ) {
                    let approval = match self.approval(&row) {
                        Ok(a) => a,
                        Err(e) => return self.store_failed(&e),
                    };
                    if let Some(a) = approval
                        && let Ok(view) = super::approvals::view(&self.state, &a, false)
                    {
                        data["approval"] = serde_json::to_value(view).unwrap_or_default();
                    }
                }
                let data = data.to_string();
                self.pending.push_back(
                    Event::default()
                        .id(row.chain_seq.to_string())
                        .event(operation_name(row.entry.op))
                        .data(data),
                );
            }
        }
    }

    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if self.done {
                return None;
            }
            self.read();
            if !self.pending.is_empty() {
                continue;
            }
            if let Some(reason) = self.ended().await {
                self.done = true;
                let event = Event::default()
                    .event("closed")
                    .data(json!({ "reason": reason }).to_string());
                return Some((Ok(event), self));
            }
            let left = u64::try_from(self.exp - self.state.now_seconds()).unwrap_or(0);
            let mut stopping = self.state.stopping.clone();
            if *stopping.borrow() {
                self.dying = Some("server_stopping");
                continue;
            }
            tokio::select! {
                changed = self.watch.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = stopping.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(left.min(HEARTBEAT.as_secs()))) => {}
            }
        }
    }
}

/// The caller's event stream (`text/event-stream`).
#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(
        ("Authorization" = String, Header, description = "DPoP <session_jwt>"),
        ("DPoP" = String, Header, description = "a proof with ath"),
        ("Last-Event-ID" = Option<String>, Header, description = "resume after this event id")),
    responses(
        (status = 200, description = "server-sent events: actor_revoke, device_add, device_revoke, link_code_reuse, quarantine, quarantine_lifted, approval_requested (to those who may decide it), approval_approved, approval_denied, identity_link, identity_unlink, cred_set, cred_delete, cred_read, closed", content_type = "text/event-stream"),
        (status = 400, description = "invalid_request: bad Last-Event-ID", body = super::openapi::ErrorEnvelope),
        (status = 401, description = "invalid_token, invalid_dpop_proof, actor_revoked, binding_revoked", body = super::openapi::ErrorEnvelope),
        (status = 429, description = "rate_limited: too many open streams for this actor", body = super::openapi::ErrorEnvelope),
        (status = 503, description = "busy", body = super::openapi::ErrorEnvelope),
        (status = 500, description = "internal", body = super::openapi::ErrorEnvelope)))]
pub async fn events(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let after = match headers.get("last-event-id") {
        None => 0,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    "Last-Event-ID must be an event id",
                )
            })?,
    };
    let slot = state.event_streams.take(auth.omni).ok_or_else(|| {
        ApiError::new(
            ErrorCode::RateLimited,
            format!("at most {MAX_STREAMS} event streams per actor; close one"),
        )
    })?;
    let lineage = state
        .runtime
        .lineage(&auth.omni)?
        .map(|l| l.omnis())
        .unwrap_or_default();
    let follower = Follower {
        lineage,
        key_hash: agentkeys_actors::ledger::audit::detail_hash(auth.claims.cnf.jkt.as_bytes()),
        decides: auth
            .require_scope(agentkeys_actors::scope::APPROVALS_DECIDE)
            .is_ok(),
        dying: None,
        watch: state.ledger.audit_watch(auth.master),
        caller: auth.omni,
        role: auth.role(),
        master: auth.master,
        bid: auth.claims.bid,
        jkt: auth.claims.cnf.jkt.clone(),
        exp: auth.claims.exp,
        after,
        pending: VecDeque::new(),
        inside: HashMap::new(),
        done: false,
        _slot: slot,
        state,
    };
    let stream = futures_util::stream::unfold(follower, Follower::next);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(HEARTBEAT)))
}
