//! Subtree walks over the store's `children` index: resumable depth-first pages (the cursor is
//! the path of the last entry below the root), and a count for revocation receipts. Statuses
//! are computed on the way down: a node is revoked if it or any ancestor carries a marker.

use agentkeys_actors::crypto::omni::child_omni;
use agentkeys_actors::crypto::rfc3339;
use agentkeys_runtime::Omni;
use agentkeys_runtime::store::{Lineage, Status};
use serde::{Deserialize, Serialize};

use super::AppState;
use super::error::{ApiError, ErrorCode};

/// One node of a page.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TreeEntry {
    /// The actor.
    pub omni: String,
    /// Its label.
    pub label: String,
    /// Its full path (`""` for a master).
    pub path: String,
    /// Levels below the page's root (the root is 0).
    pub depth: usize,
    /// `active`, `revoked` or `quarantined`.
    pub status: String,
    /// When the revocation that applies committed, if revoked.
    pub revoked_at: Option<String>,
    /// Scopes stored on it.
    pub scopes: Vec<String>,
}

/// A page of a subtree.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TreePage {
    /// The subtree's root.
    pub root: String,
    /// Depth-first, children in label order.
    pub entries: Vec<TreeEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A position: one node from the root down, read once, with the status inherited there.
#[derive(Clone)]
struct Frame {
    label: String,
    omni: Omni,
    status: Status,
    scopes: Vec<String>,
    path: String,
}

/// Reads the node `omni` (one store read) below a node whose status is `inherited`.
fn frame(
    state: &AppState,
    label: String,
    omni: Omni,
    inherited: Status,
) -> Result<Frame, ApiError> {
    let record = state
        .runtime
        .store()
        .actor(&omni)?
        .ok_or_else(|| ApiError::internal("a child entry without its record"))?;
    let status = match (inherited, record.revoked_at()) {
        (Status::Active, Some(at)) => Status::Revoked { by: omni, at },
        (status, _) => status,
    };
    Ok(Frame {
        label,
        omni,
        status,
        scopes: record.scopes,
        path: record.path,
    })
}

fn entry(state: &AppState, frame: &Frame, depth: usize) -> TreeEntry {
    let (status, revoked_at) = match frame.status {
        Status::Revoked { at, .. } => (
            "revoked",
            Some(rfc3339::format(
                i64::try_from(at.as_millis()).unwrap_or(i64::MAX),
            )),
        ),
        Status::Active if state.runtime.is_quarantined(&frame.omni) => ("quarantined", None),
        Status::Active => ("active", None),
    };
    TreeEntry {
        omni: frame.omni.to_string(),
        label: frame.label.clone(),
        path: frame.path.clone(),
        depth,
        status: status.into(),
        revoked_at,
        scopes: frame.scopes.clone(),
    }
}

/// Moves `stack` to the next node in depth-first order; `false` when the walk is done.
fn advance(state: &AppState, stack: &mut Vec<Frame>) -> Result<bool, ApiError> {
    let store = state.runtime.store();
    let Some(top) = stack.last() else {
        return Ok(false);
    };
    if let Some(child) = store.children(&top.omni, None, 1)?.into_iter().next() {
        let next = frame(state, child.label, child.omni, top.status)?;
        stack.push(next);
        return Ok(true);
    }
    while stack.len() > 1 {
        let done = stack
            .pop()
            .ok_or_else(|| ApiError::internal("empty walk"))?;
        let Some(parent) = stack.last() else { break };
        if let Some(next) = store
            .children(&parent.omni, Some(&done.label), 1)?
            .into_iter()
            .next()
        {
            let next = frame(state, next.label, next.omni, parent.status)?;
            stack.push(next);
            return Ok(true);
        }
    }
    Ok(false)
}

fn root_frame(lineage: &Lineage) -> Frame {
    let record = lineage.actor();
    Frame {
        label: record.label.clone(),
        omni: record.omni,
        status: lineage.status(),
        scopes: record.scopes.clone(),
        path: record.path.clone(),
    }
}

/// The walk of `lineage`'s subtree positioned at `cursor` (the path of the last node already
/// seen, relative to the root; `""`: the root itself); `None`: at the root, not yet seen.
fn position(
    state: &AppState,
    lineage: &Lineage,
    cursor: Option<&str>,
) -> Result<Vec<Frame>, ApiError> {
    let mut stack = vec![root_frame(lineage)];
    match cursor {
        None => {}
        Some(path) => {
            let bad = || {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    "the cursor is not a path in this subtree",
                )
            };
            let labels = match path {
                "" => Vec::new(),
                path => path
                    .strip_prefix("//")
                    .ok_or_else(bad)?
                    .split("//")
                    .collect(),
            };
            for label in labels {
                let parent = stack.last().ok_or_else(bad)?;
                let omni = child_omni(&parent.omni, label).map_err(|_| bad())?;
                let next =
                    frame(state, label.to_string(), omni, parent.status).map_err(|_| bad())?;
                stack.push(next);
            }
        }
    }
    Ok(stack)
}

/// The cursor naming the node a walk stands on.
fn cursor_of(stack: &[Frame]) -> String {
    stack
        .iter()
        .skip(1)
        .map(|f| format!("//{}", f.label))
        .collect()
}

/// One page of the subtree of `lineage`'s actor. The cursor is the path of the last entry
/// relative to the root (`""`: the root itself).
pub fn page(
    state: &AppState,
    lineage: &Lineage,
    cursor: Option<&str>,
    limit: usize,
) -> Result<TreePage, ApiError> {
    let mut stack = position(state, lineage, cursor)?;
    let mut entries = Vec::new();
    if cursor.is_none() {
        entries.push(entry(state, &stack[0], 0));
    }
    while entries.len() < limit && advance(state, &mut stack)? {
        let depth = stack.len() - 1;
        if let Some(frame) = stack.last() {
            entries.push(entry(state, frame, depth));
        }
    }
    let more = entries.len() == limit && {
        // Peek without moving: is there a node after the last entry?
        let mut probe = stack.clone();
        advance(state, &mut probe)?
    };
    let next_cursor = more.then(|| cursor_of(&stack));
    Ok(TreePage {
        root: lineage.actor().omni.to_string(),
        entries,
        next_cursor,
    })
}

/// Whether a node matches a search: its label contains `q` (ASCII case ignored), or its omni
/// (hex, with or without `0x`) starts with `q`.
fn matches(frame: &Frame, q: &str) -> bool {
    let q = q.to_ascii_lowercase();
    frame.label.to_ascii_lowercase().contains(&q)
        || frame
            .omni
            .to_string()
            .trim_start_matches("0x")
            .starts_with(q.trim_start_matches("0x"))
}

/// Searches the subtree of `lineage`'s actor from `cursor` (as [`page`]'s): at most `limit`
/// matches, reading at most `scan` nodes, so one call's work is bounded whatever the
/// subtree's size; `next_cursor` continues where it stopped.
pub fn search(
    state: &AppState,
    lineage: &Lineage,
    q: &str,
    cursor: Option<&str>,
    limit: usize,
    scan: usize,
) -> Result<TreePage, ApiError> {
    let mut stack = position(state, lineage, cursor)?;
    let mut entries = Vec::new();
    let mut read = 0;
    if cursor.is_none() {
        read += 1;
        if matches(&stack[0], q) {
            entries.push(entry(state, &stack[0], 0));
        }
    }
    let mut done = false;
    while entries.len() < limit && read < scan {
        if !advance(state, &mut stack)? {
            done = true;
            break;
        }
        read += 1;
        if let Some(frame) = stack.last().filter(|f| matches(f, q)) {
            entries.push(entry(state, frame, stack.len() - 1));
        }
    }
    let more = !done && {
        let mut probe = stack.clone();
        advance(state, &mut probe)?
    };
    Ok(TreePage {
        root: lineage.actor().omni.to_string(),
        entries,
        next_cursor: more.then(|| cursor_of(&stack)),
    })
}

/// Actors in the subtree of `root`, itself included, counting at most `limit`: the count and
/// whether the subtree has more. Bounded, so an answer never waits for a walk that grows
/// with the subtree.
pub fn count(state: &AppState, root: &Omni, limit: u64) -> Result<(u64, bool), ApiError> {
    let lineage = state
        .runtime
        .lineage(root)?
        .ok_or_else(|| ApiError::internal("revoked actor vanished"))?;
    let mut stack = vec![root_frame(&lineage)];
    let mut n = 1;
    while n < limit {
        if !advance(state, &mut stack)? {
            return Ok((n, false));
        }
        n += 1;
    }
    Ok((n, advance(state, &mut stack)?))
}
