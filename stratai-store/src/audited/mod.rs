//! The audit trail's recording side: who changed what, written in the change's own
//! transaction.
//!
//! **Recorded once, at the store boundary, not per route.** [`audited`] wraps [`Stores`](crate::Stores) so
//! that every mutating method of the directory, the tier catalog, the budgets, the guardrail
//! rules and the invoices reads the entity before (only when the change will be recorded) and
//! hands the backend the entry to append (action, target, before and after) to the
//! organization's chain, or to the platform chain for platform entities (people, profiles, the
//! tier catalog, platform rules). A store method another change adds to a port must be written
//! in the wrappers too (the compiler asks for it): a read is one pass-through line, a write one
//! `change` call (the private `wrappers` module).
//!
//! **Atomic with the change.** The entry travels to the backend in a task-local slot
//! (`PendingEntry`); the backend's write path appends it inside the transaction that makes
//! the change, just before the commit (PostgreSQL and SQLite: the same transaction, so a crash
//! or a failed append leaves neither the change nor the entry; memory: under the same call). A
//! write that turns out to change nothing (deactivating an inactive person) discards it. A
//! write path that neither appends nor discards is a bug: debug builds panic on it, release
//! builds append the entry in a transaction of its own and log an error.
//!
//! **Who and which request** come from [`in_request`]: a service runs each mutating request
//! inside it with the request's id, and notes the signed-in caller with [`note_actor`]. Store
//! writes outside such a request (a first-start seed, sign-in bookkeeping, a sync, the gateway's
//! ledger) are not admin changes and are not recorded; neither is a write in a request nobody
//! is signed in for.

mod wrappers;

use std::future::Future;
use std::sync::{Arc, Mutex};

use chrono::Utc;
use serde::Serialize;
use serde_json::Value;
use stratai_core::UserId;
use stratai_core::audit::{AuditChain, AuditDraft};

pub use wrappers::audited;

/// What a mutating request's store writes are recorded with.
#[derive(Debug, Default)]
struct RequestContext {
    request_id: Option<String>,
    actor: Mutex<Option<UserId>>,
}

tokio::task_local! {
    static REQUEST: Arc<RequestContext>;
    static PENDING: Arc<Mutex<Slot>>;
}

/// Runs `request` (one mutating request) with the audit context of `request_id`: the store
/// writes it makes, once [`note_actor`] has named the caller, are recorded.
pub async fn in_request<F: Future>(request_id: Option<String>, request: F) -> F::Output {
    let context = Arc::new(RequestContext {
        request_id,
        actor: Mutex::new(None),
    });
    REQUEST.scope(context, request).await
}

/// Notes the signed-in caller of the current request (no-op outside [`in_request`]).
pub fn note_actor(user: UserId) {
    let _ = REQUEST.try_with(|c| {
        if let Ok(mut actor) = c.actor.lock() {
            *actor = Some(user);
        }
    });
}

/// The current request's caller and id, when it is a mutating request someone signed in for.
fn current() -> Option<(UserId, Option<String>)> {
    REQUEST
        .try_with(|c| {
            let actor = c.actor.lock().ok().and_then(|a| *a)?;
            Some((actor, c.request_id.clone()))
        })
        .ok()
        .flatten()
}

/// Whether a change now is recorded (and so whether to read the "before" snapshot at all).
pub(crate) fn recording() -> bool {
    current().is_some()
}

/// A snapshot of an entity for the trail: its JSON, without secrets (an invitation's token
/// hash).
pub fn snapshot<T: Serialize>(value: &T) -> Option<Value> {
    let mut value = serde_json::to_value(value).ok()?;
    if let Value::Object(map) = &mut value {
        map.remove("token_hash");
    }
    Some(value)
}

/// The entry a change's transaction appends, and its chain.
#[derive(Debug)]
pub(crate) struct PendingEntry {
    pub(crate) chain: AuditChain,
    pub(crate) draft: AuditDraft,
}

/// The task-local slot between the wrapper and the backend's write path.
#[derive(Debug)]
enum Slot {
    /// Handed to the backend, not yet taken.
    Waiting(PendingEntry),
    /// Taken by the write path that appends it in its transaction.
    Taken,
    /// The write changed nothing; no entry.
    Discarded,
}

/// The entry of the change being written, for the backend to append in the change's
/// transaction (none when the change is not recorded). Called once per write, just before its
/// commit; `after` replaces the entry's after-state with what the write returned.
pub(crate) fn take_pending(after: Option<Value>) -> Option<PendingEntry> {
    PENDING
        .try_with(|slot| {
            let mut slot = slot.lock().ok()?;
            match std::mem::replace(&mut *slot, Slot::Taken) {
                Slot::Waiting(mut entry) => {
                    if after.is_some() {
                        entry.draft.after = after;
                    }
                    Some(entry)
                }
                other => {
                    *slot = other;
                    None
                }
            }
        })
        .ok()
        .flatten()
}

/// The write being made changes nothing: its pending entry (if any) is dropped.
pub(crate) fn discard_pending() {
    let _ = PENDING.try_with(|slot| {
        if let Ok(mut slot) = slot.lock()
            && matches!(*slot, Slot::Waiting(_))
        {
            *slot = Slot::Discarded;
        }
    });
}

/// Runs `write` with `entry` pending; what is left of it after a successful write (a write path
/// that did not take it) comes back.
async fn with_pending<T, E, F>(
    entry: PendingEntry,
    write: F,
) -> (Result<T, E>, Option<PendingEntry>)
where
    F: Future<Output = Result<T, E>>,
{
    let slot = Arc::new(Mutex::new(Slot::Waiting(entry)));
    let out = PENDING.scope(slot.clone(), write).await;
    let left = match slot.lock() {
        Ok(mut slot) => match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Waiting(entry) => Some(entry),
            Slot::Taken | Slot::Discarded => None,
        },
        Err(_) => None,
    };
    (out, left)
}

/// The draft of a change by the current request's caller (none: not recorded).
fn draft(
    action: &str,
    target: String,
    before: Option<Value>,
    after: Option<Value>,
) -> Option<AuditDraft> {
    let (actor, request_id) = current()?;
    Some(AuditDraft {
        at: Utc::now(),
        actor: Some(actor),
        request_id,
        action: action.to_owned(),
        target,
        before,
        after,
    })
}
