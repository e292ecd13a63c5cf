//! LiteLLM's spend in StratAI's books, the server's side (the logic is stratai-litellm's
//! [`stratai_litellm::spend`]):
//!
//! - `POST /api/litellm/spend-callback`: LiteLLM's `generic_api` logging callback. It must
//!   send `Authorization: Bearer <STRATAI_LITELLM_CALLBACK_SECRET>`; without that setting (or
//!   without LiteLLM) the route answers 404. Each reported call is imported (a call through
//!   StratAI is matched with its usage record; a direct use of a member's key is recorded
//!   and charged, and alerted as `usage.outside_stratai`), idempotent by LiteLLM's request id.
//! - `GET /api/litellm/spend`: what the callback and the spend-log poll found since start,
//!   and what the latest directory reconcile found and repaired on the proxy (keys' and
//!   teams' models, budgets, per-minute limits, blocked flags, ...) (platform operators).
//!
//! [`SpendDesk`] (stratai-litellm's) is the piece both paths share: the importer, the alerts
//! (this server's alert sink, [`desk_alerts`]) and the metrics.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use chrono::Utc;
use sha2::{Digest, Sha256};
use stratai_core::access::{Action, Resource};
use stratai_core::budget::BudgetAlert;
use stratai_core::usage::UsageRecord;
use stratai_litellm::spend::desk::SpendAlerts;
pub use stratai_litellm::spend::desk::{
    CallbackOutcome, DriftView, MismatchView, ReconcileView, SpendDesk, SpendStatus,
};
use stratai_litellm::spend::parse_callback;

use super::{Caller, allow};
use crate::alerts::AlertSink;
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ApiJson;

/// The desk's alerts go to this server's alert sink.
#[derive(Debug)]
struct SinkAlerts(AlertSink);

impl SpendAlerts for SinkAlerts {
    fn budget_alerts(&self, alerts: &[BudgetAlert]) {
        self.0.fire(alerts);
    }

    fn outside_stratai(&self, record: &UsageRecord) {
        self.0.outside_stratai(record);
    }
}

/// The desk's alerts through this server's sink (the callback route accepts the desk's
/// secret; none: the route answers 404).
#[must_use]
pub fn desk_alerts(alerts: AlertSink) -> Arc<dyn SpendAlerts> {
    Arc::new(SinkAlerts(alerts))
}

/// Refuses a callback delivery without the desk's secret (404 when none is set).
fn authorized(desk: &SpendDesk, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(secret) = desk.callback_secret() else {
        return Err(ApiError::NotFound(
            "spend callback (STRATAI_LITELLM_CALLBACK_SECRET is not set)".to_owned(),
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(ApiError::Unauthenticated("missing callback secret"))?;
    // Digests compared, so the comparison's time says nothing about the secret.
    if Sha256::digest(given.as_bytes()) == Sha256::digest(secret.expose().trim().as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthenticated("wrong callback secret"))
    }
}

fn desk(state: &AppState) -> Result<&Arc<SpendDesk>, ApiError> {
    state
        .gateway
        .as_ref()
        .and_then(|g| g.litellm_spend.as_ref())
        .ok_or_else(|| ApiError::NotFound("LiteLLM spend (no LiteLLM proxy configured)".to_owned()))
}

/// `POST /api/litellm/spend-callback`: LiteLLM's `generic_api` logging callback (a JSON array
/// of `StandardLoggingPayload`s, one object, or NDJSON).
pub async fn spend_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<ApiJson<CallbackOutcome>, ApiError> {
    let desk = desk(&state)?;
    authorized(desk, &headers)?;
    let now = Utc::now();
    let events = parse_callback(&body, now).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let out = desk.import_delivery(&events, now).await.map_err(|e| {
        // LiteLLM drops a batch it could not deliver; the poll imports its calls later.
        tracing::warn!(error = %e, "LiteLLM spend callback not imported; the next poll retries");
        ApiError::Unavailable("spend not recorded; the spend-log poll retries".to_owned())
    })?;
    Ok(ApiJson(out))
}

/// `GET /api/litellm/spend` (platform operators): the spend importer's counters since start.
pub async fn spend_status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<ApiJson<SpendStatus>, ApiError> {
    allow(&caller, Action::ManageOrgs, Resource::Platform)?;
    Ok(ApiJson(desk(&state)?.status()))
}
