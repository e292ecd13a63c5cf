//! The audit trail's recording side: who changed what, through the admin API or the UI.
//!
//! **Recorded once, at the store boundary, not per route.** [`audited`] wraps the server's
//! [`Stores`] so that every mutating method of the directory, the tier catalog, the budgets,
//! the guardrail rules and the invoices reads the entity before, applies the change, and
//! appends an entry (action, target, before and after) to the organization's chain, or to the
//! platform chain for platform entities (people, profiles, the tier catalog, platform rules).
//! The UI's form actions call the admin API's handlers, which call these stores, so both are
//! covered by the same code, and a route another change adds is covered as soon as it writes
//! through a store method (a new store method is one line in the wrappers, `audited.rs`).
//!
//! **Who and which request** come from [`scope`], the middleware of the admin API and UI
//! routes: a mutating request (`POST`, `PUT`, `PATCH`, `DELETE`) runs inside a task-local
//! [`AuditContext`] holding its `x-request-id`; the [`crate::api::Caller`] extractor notes the
//! signed-in caller in it ([`note_actor`]). Store writes outside such a request (the first-start
//! seed, sign-in bookkeeping, the LiteLLM sync, the gateway's ledger) are not admin changes and
//! are not recorded; neither is a write in a request nobody is signed in for.
//!
//! The change and its entry are two transactions: when the entry cannot be appended, the
//! change stands and the request fails with the store's error (logged), so a caller never sees
//! success for an unrecorded change.

mod audited;

use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use chrono::Utc;
use serde::Serialize;
use serde_json::Value;
use stratai_core::audit::{AuditChain, AuditDraft};
use stratai_core::ports::AuditStore;
use stratai_core::{StoreError, UserId};
use tower_http::request_id::RequestId;

pub use audited::audited;

/// What a mutating request's store writes are recorded with.
#[derive(Debug, Default)]
pub struct AuditContext {
    request_id: Option<String>,
    actor: Mutex<Option<UserId>>,
}

tokio::task_local! {
    static CONTEXT: Arc<AuditContext>;
}

/// Middleware of the admin API and UI routes: runs a mutating request inside an
/// [`AuditContext`] with its request id.
pub async fn scope(req: Request, next: Next) -> Response {
    if !matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return next.run(req).await;
    }
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .and_then(|id| id.header_value().to_str().ok())
        .map(str::to_owned);
    let context = Arc::new(AuditContext {
        request_id,
        actor: Mutex::new(None),
    });
    CONTEXT.scope(context, next.run(req)).await
}

/// Notes the signed-in caller of the current request (no-op outside a mutating request).
pub fn note_actor(user: UserId) {
    let _ = CONTEXT.try_with(|c| {
        if let Ok(mut actor) = c.actor.lock() {
            *actor = Some(user);
        }
    });
}

/// The current request's caller and id, when it is a mutating request someone signed in for.
fn current() -> Option<(UserId, Option<String>)> {
    CONTEXT
        .try_with(|c| {
            let actor = c.actor.lock().ok().and_then(|a| *a)?;
            Some((actor, c.request_id.clone()))
        })
        .ok()
        .flatten()
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

/// Appends entries for the changes of the current request.
#[derive(Clone)]
pub(crate) struct Recorder {
    store: Arc<dyn AuditStore>,
}

impl Recorder {
    /// Whether the current task is a mutating request of a signed-in caller, i.e. whether a
    /// change now is recorded (and so whether to read the "before" snapshot at all).
    pub(crate) fn active() -> bool {
        current().is_some()
    }

    /// Appends `action` on `target` to `chain`, when the current task is a mutating request
    /// of a signed-in caller.
    pub(crate) async fn record(
        &self,
        chain: AuditChain,
        action: &str,
        target: String,
        before: Option<Value>,
        after: Option<Value>,
    ) -> Result<(), StoreError> {
        let Some((actor, request_id)) = current() else {
            return Ok(());
        };
        let draft = AuditDraft {
            at: Utc::now(),
            actor: Some(actor),
            request_id,
            action: action.to_owned(),
            target,
            before,
            after,
        };
        let appended = match chain {
            AuditChain::Org(org) => self.store.append_audit(org, &draft).await.map(|_| ()),
            AuditChain::Platform => self.store.append_platform_audit(&draft).await.map(|_| ()),
        };
        appended.map_err(|e| {
            tracing::error!(error = %e, action, "a change was applied but could not be audited");
            StoreError::Backend(format!("the change was applied but not audited: {e}"))
        })
    }
}
