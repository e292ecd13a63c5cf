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
//! [`SpendDesk`] is the piece both paths share: the importer, the alert sink and the metrics
//! (`stratai_litellm_spend_*`, and `stratai_litellm_drift{kind}` /
//! `stratai_litellm_drift_repaired_total` / `stratai_litellm_reconcile_failures_total` from
//! the in-process sync's reconciles).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sha2::{Digest, Sha256};
use stratai_core::access::{Action, Resource};
use stratai_core::ids::RequestId;
use stratai_litellm::Secret;
use stratai_litellm::spend::{Imported, SpendImporter, SpendStats, parse_callback};
use stratai_litellm::sync::{DriftKind, DriftReport};

use super::{Caller, allow};
use crate::alerts::AlertSink;
use crate::app::AppState;
use crate::error::ApiError;
use crate::extract::ApiJson;

/// The importer with what its outcomes trigger: budget and "spend outside StratAI" alerts and
/// the `stratai_litellm_spend_*` metrics.
#[derive(Debug)]
pub struct SpendDesk {
    importer: Arc<SpendImporter>,
    alerts: AlertSink,
    secret: Option<Secret>,
    reconcile: Mutex<Option<ReconcileView>>,
}

/// How many of a reconcile's differences `GET /api/litellm/spend` lists.
const LISTED_DRIFTS: usize = 50;

impl SpendDesk {
    /// A desk over `importer`, alerting through `alerts`; the callback route accepts
    /// `secret` (none: the route answers 404).
    #[must_use]
    pub fn new(importer: Arc<SpendImporter>, alerts: AlertSink, secret: Option<Secret>) -> Self {
        Self {
            importer,
            alerts,
            secret,
            reconcile: Mutex::new(None),
        }
    }

    /// Records a directory reconcile of the proxy: the `stratai_litellm_drift{kind}` gauges
    /// (every kind, 0 when none), the repairs counter, and the view the status route shows.
    pub fn observe_reconcile(&self, report: &DriftReport, at: DateTime<Utc>) {
        let counts = report.counts();
        for kind in DriftKind::ALL {
            metrics::gauge!("stratai_litellm_drift", "kind" => kind.as_str())
                .set(counts.get(&kind).copied().unwrap_or(0) as f64);
        }
        metrics::counter!("stratai_litellm_drift_repaired_total").increment(report.repaired as u64);
        let view = ReconcileView {
            at,
            orgs: report.orgs,
            drifts: counts
                .into_iter()
                .map(|(kind, n)| (kind.as_str().to_owned(), n))
                .collect(),
            repaired: report.repaired,
            foreign: report.foreign,
            listed: report
                .drifts
                .iter()
                .take(LISTED_DRIFTS)
                .map(|d| DriftView {
                    kind: d.kind.as_str().to_owned(),
                    org_id: d.org_id.to_string(),
                    subject: d.subject.clone(),
                    detail: d.detail.clone(),
                })
                .collect(),
            error: None,
        };
        *self
            .reconcile
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(view);
    }

    /// Records a reconcile that failed (the proxy unreachable, a store error).
    pub fn reconcile_failed(&self, error: &str, at: DateTime<Utc>) {
        metrics::counter!("stratai_litellm_reconcile_failures_total").increment(1);
        let mut slot = self
            .reconcile
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut view = slot.take().unwrap_or(ReconcileView {
            at,
            orgs: 0,
            drifts: BTreeMap::new(),
            repaired: 0,
            foreign: 0,
            listed: Vec::new(),
            error: None,
        });
        view.at = at;
        view.error = Some(error.to_owned());
        *slot = Some(view);
    }

    /// The latest reconcile, if any ran.
    #[must_use]
    pub fn last_reconcile(&self) -> Option<ReconcileView> {
        self.reconcile
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The importer.
    #[must_use]
    pub fn importer(&self) -> &Arc<SpendImporter> {
        &self.importer
    }

    /// Counts an outcome and fires what a fresh direct import calls for.
    pub fn observe(&self, outcome: &Imported) {
        let label = match outcome {
            Imported::Gateway { mismatch, .. } => {
                if let Some(m) = mismatch {
                    if m.cost.is_some() {
                        metrics::counter!("stratai_litellm_spend_mismatches_total", "kind" => "cost")
                            .increment(1);
                    }
                    if m.tokens.is_some() {
                        metrics::counter!("stratai_litellm_spend_mismatches_total", "kind" => "tokens")
                            .increment(1);
                    }
                    tracing::warn!(
                        ?m,
                        "LiteLLM's spend differs from the gateway's usage record"
                    );
                }
                "gateway"
            }
            Imported::Direct {
                record,
                alerts,
                fresh: true,
            } => {
                self.alerts.fire(alerts);
                self.alerts.outside_stratai(record);
                "direct"
            }
            Imported::Direct { fresh: false, .. } | Imported::Repeat => "repeat",
            Imported::Pending => "pending",
            Imported::Ignored(_) => "ignored",
        };
        metrics::counter!("stratai_litellm_spend_events_total", "outcome" => label).increment(1);
    }

    fn authorized(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(secret) = &self.secret else {
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
}

fn desk(state: &AppState) -> Result<&Arc<SpendDesk>, ApiError> {
    state
        .gateway
        .as_ref()
        .and_then(|g| g.litellm_spend.as_ref())
        .ok_or_else(|| ApiError::NotFound("LiteLLM spend (no LiteLLM proxy configured)".to_owned()))
}

/// What one callback delivery did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CallbackOutcome {
    /// Calls in the delivery.
    pub received: usize,
    /// Calls that went through StratAI (their usage record exists).
    pub gateway: usize,
    /// Calls outside StratAI recorded now.
    pub recorded: usize,
    /// Calls already recorded by an earlier delivery or poll.
    pub repeated: usize,
    /// Calls naming a StratAI request not recorded yet (the next poll decides).
    pub pending: usize,
    /// Calls that are not StratAI's (failed, unmanaged key, unknown member).
    pub ignored: usize,
    /// StratAI request ids of the calls recorded now.
    pub recorded_ids: Vec<RequestId>,
}

/// `POST /api/litellm/spend-callback`: LiteLLM's `generic_api` logging callback (a JSON array
/// of `StandardLoggingPayload`s, one object, or NDJSON).
pub async fn spend_callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<ApiJson<CallbackOutcome>, ApiError> {
    let desk = desk(&state)?;
    desk.authorized(&headers)?;
    let now = Utc::now();
    let events = parse_callback(&body, now).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut out = CallbackOutcome {
        received: events.len(),
        ..CallbackOutcome::default()
    };
    for event in &events {
        let outcome = desk.importer.import(event, now).await.map_err(|e| {
            // LiteLLM drops a batch it could not deliver; the poll imports its calls later.
            tracing::warn!(error = %e, "LiteLLM spend callback not imported; the next poll retries");
            ApiError::Unavailable("spend not recorded; the spend-log poll retries".to_owned())
        })?;
        desk.observe(&outcome);
        match &outcome {
            Imported::Gateway { .. } => out.gateway += 1,
            Imported::Direct {
                record,
                fresh: true,
                ..
            } => {
                out.recorded += 1;
                out.recorded_ids.push(record.request_id);
            }
            Imported::Direct { fresh: false, .. } | Imported::Repeat => out.repeated += 1,
            Imported::Pending => out.pending += 1,
            Imported::Ignored(_) => out.ignored += 1,
        }
    }
    Ok(ApiJson(out))
}

/// A call whose usage record and LiteLLM's report differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct MismatchView {
    /// LiteLLM's request id.
    pub litellm_request_id: String,
    /// StratAI's request id.
    pub request_id: RequestId,
    /// StratAI's provider cost, when the costs differ.
    #[schema(value_type = Option<String>)]
    pub stratai_cost: Option<Decimal>,
    /// LiteLLM's spend, when the costs differ.
    #[schema(value_type = Option<String>)]
    pub litellm_cost: Option<Decimal>,
    /// StratAI's `[prompt, completion]` tokens, when the tokens differ.
    pub stratai_tokens: Option<[u32; 2]>,
    /// LiteLLM's `[prompt, completion]` tokens, when the tokens differ.
    pub litellm_tokens: Option<[u32; 2]>,
}

/// The latest spend-log poll.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PollView {
    /// Window start.
    pub from: DateTime<Utc>,
    /// Window end.
    pub to: DateTime<Utc>,
    /// Rows read.
    pub rows: usize,
    /// Rows of calls through StratAI.
    pub gateway: usize,
    /// Direct calls this poll recorded (no callback had).
    pub direct_recorded: usize,
    /// Rows settled before (by the callback or an earlier poll).
    pub repeated: usize,
    /// Rows left for a later poll.
    pub pending: usize,
    /// Rows ignored.
    pub ignored: usize,
    /// Mismatches found.
    pub mismatches: usize,
}

/// One difference between StratAI and the proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DriftView {
    /// What differs (`key_limits`, `key_budget`, `key_blocked`, `team_budget`, ...).
    pub kind: String,
    /// The organization.
    pub org_id: String,
    /// The LiteLLM or StratAI id concerned (key token hash, team id, user id).
    pub subject: String,
    /// Found vs wanted.
    pub detail: String,
}

/// The latest directory reconcile of the proxy (run by the in-process sync at start and
/// every five minutes, repairing what it finds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ReconcileView {
    /// When it ran.
    pub at: DateTime<Utc>,
    /// Organizations compared.
    pub orgs: usize,
    /// Differences found, by kind.
    pub drifts: BTreeMap<String, usize>,
    /// Repairs made.
    pub repaired: usize,
    /// Managed proxy entities of organizations StratAI does not know (left alone).
    pub foreign: usize,
    /// The differences (at most 50).
    pub listed: Vec<DriftView>,
    /// Why the latest attempt failed (the counts are then the previous run's).
    pub error: Option<String>,
}

/// `GET /api/litellm/spend`: counters since start, the latest mismatches and poll.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SpendStatus {
    /// Calls reported (callback deliveries and polled rows, repeats included).
    pub events: u64,
    /// Calls matched with a gateway usage record.
    pub gateway: u64,
    /// Calls outside StratAI recorded.
    pub direct_recorded: u64,
    /// Calls outside StratAI reported again (not recorded twice).
    pub direct_repeated: u64,
    /// Reports left for a later poll.
    pub pending: u64,
    /// Reports of calls already settled (overlapping polls, repeated deliveries).
    pub repeats: u64,
    /// Reports ignored.
    pub ignored: u64,
    /// Gateway records whose cost differs from LiteLLM's.
    pub cost_mismatches: u64,
    /// Gateway records whose tokens differ from LiteLLM's.
    pub token_mismatches: u64,
    /// The latest mismatches, newest last.
    pub recent_mismatches: Vec<MismatchView>,
    /// The latest poll (none before the first).
    pub last_poll: Option<PollView>,
    /// The latest directory reconcile (none before the first, or when litellm-worker runs
    /// the sync).
    pub last_reconcile: Option<ReconcileView>,
}

impl From<SpendStats> for SpendStatus {
    fn from(s: SpendStats) -> Self {
        Self {
            events: s.events,
            gateway: s.gateway,
            direct_recorded: s.direct_recorded,
            direct_repeated: s.direct_repeated,
            pending: s.pending,
            repeats: s.repeats,
            ignored: s.ignored,
            cost_mismatches: s.cost_mismatches,
            token_mismatches: s.token_mismatches,
            recent_mismatches: s
                .recent_mismatches
                .into_iter()
                .map(|m| MismatchView {
                    litellm_request_id: m.litellm_request_id,
                    request_id: m.request_id,
                    stratai_cost: m.cost.map(|c| c.0),
                    litellm_cost: m.cost.map(|c| c.1),
                    stratai_tokens: m.tokens.map(|t| [t.0.0, t.0.1]),
                    litellm_tokens: m.tokens.map(|t| [t.1.0, t.1.1]),
                })
                .collect(),
            last_poll: s.last_poll.map(|p| PollView {
                from: p.from,
                to: p.to,
                rows: p.rows,
                gateway: p.gateway,
                direct_recorded: p.direct_recorded,
                repeated: p.repeated,
                pending: p.pending,
                ignored: p.ignored,
                mismatches: p.mismatches,
            }),
            last_reconcile: None,
        }
    }
}

/// `GET /api/litellm/spend` (platform operators): the spend importer's counters since start.
pub async fn spend_status(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<ApiJson<SpendStatus>, ApiError> {
    allow(&caller, Action::ManageOrgs, Resource::Platform)?;
    let desk = desk(&state)?;
    let mut status: SpendStatus = desk.importer.stats().into();
    status.last_reconcile = desk.last_reconcile();
    Ok(ApiJson(status))
}
