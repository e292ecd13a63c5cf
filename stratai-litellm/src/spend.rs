//! LiteLLM's spend in StratAI's books: what the proxy reports of each call (its HTTP logging
//! callback in real time, its spend logs when polled) is matched with the gateway's usage
//! record, or, for a call made with a member's virtual key directly against the proxy,
//! recorded as usage of that member and charged to their budgets.
//!
//! Both paths end in [`SpendImporter::import`], idempotent by LiteLLM's request id:
//!
//! - **Through StratAI.** The gateway sends `x-litellm-spend-logs-metadata:
//!   {"stratai_request_id": ...}` with every call (see [`crate::Attribution`]), which LiteLLM
//!   keeps in the spend log row and in the callback payload (`metadata.spend_logs_metadata`).
//!   A call naming a usage record of the same member whose LiteLLM request id is the call's
//!   is the gateway's: nothing is written, cost and tokens are compared
//!   ([`Imported::Gateway`]). A call naming a record not written yet (the gateway writes after
//!   the answer, possibly in batches or from its spool) is [`Imported::Pending`] for
//!   `grace`; the next poll sees it again.
//! - **Outside StratAI.** Any other call of a managed key (alias `stratai:<org>:<user>`) is
//!   recorded with endpoint [`DIRECT_ENDPOINT`] (the record's source) under a request id derived
//!   from LiteLLM's (or, for a call still naming an unwritten StratAI record after `grace`,
//!   under that StratAI id, so a late gateway record or spool replay is a duplicate, not a
//!   second charge), and settled against the member's applicable budgets at its tier's billed
//!   amount ([`Imported::Direct`]). Usage appends and budget settlements are both idempotent
//!   by request id, so a repeated delivery writes nothing and charges nothing
//!   (`fresh: false`); the caller alerts only on fresh imports.
//!
//! A header naming a StratAI request cannot hide a direct call: the named record must exist,
//! be the same member's and carry this call's LiteLLM request id.

pub mod desk;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use stratai_core::budget::{BudgetAlert, RequestScope, applicable_budgets};
use stratai_core::directory::attribution_group;
use stratai_core::ids::{ModelId, OrgId, RequestId, UserId};
use stratai_core::ports::{BudgetLedger, DirectoryStore, TierStore, UsageStore};
use stratai_core::pricing::billed_amount;
use stratai_core::tiers::TierCatalog;
use stratai_core::usage::{UsageRecord, UsageStatus};
use stratai_core::{Money, StoreError};

use crate::types::{SpendLogRow, SpendLogsQuery};

/// The usage record endpoint of a call made outside StratAI with a member's virtual key: the
/// record's source.
pub const DIRECT_ENDPOINT: &str = "litellm:direct";

/// The key of `x-litellm-spend-logs-metadata` (and so of `metadata.spend_logs_metadata`)
/// naming StratAI's request id.
pub const STRATAI_REQUEST_KEY: &str = "stratai_request_id";

/// One LiteLLM call, as its logging callback or its spend log row reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpendEvent {
    /// LiteLLM's request id (the upstream completion id for a success).
    pub litellm_request_id: String,
    /// Token hash of the key.
    pub key_hash: Option<String>,
    /// Alias of the key (`stratai:<org>:<user>` for StratAI's keys).
    pub key_alias: Option<String>,
    /// The key's LiteLLM user id.
    pub litellm_user: Option<String>,
    /// The model name the caller used (`mock-gpt`).
    pub model: Option<String>,
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Completion tokens.
    pub completion_tokens: u32,
    /// What LiteLLM charged, in dollars.
    pub spend: Decimal,
    /// Whether the call succeeded.
    pub success: bool,
    /// When the call started.
    pub started_at: DateTime<Utc>,
    /// The StratAI request id the caller named (`spend_logs_metadata.stratai_request_id`).
    pub stratai_request_id: Option<String>,
}

/// The callback body could not be read.
#[derive(Debug, thiserror::Error)]
#[error("invalid LiteLLM callback body: {0}")]
pub struct CallbackBodyError(String);

/// LiteLLM's `StandardLoggingPayload`, the fields read here.
#[derive(Deserialize)]
struct CallbackPayload {
    id: String,
    #[serde(default, deserialize_with = "crate::decimal::or_zero")]
    response_cost: Decimal,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, deserialize_with = "crate::types::nullable")]
    prompt_tokens: u64,
    #[serde(default, deserialize_with = "crate::types::nullable")]
    completion_tokens: u64,
    #[serde(default, rename = "startTime")]
    start_time: Option<Value>,
    #[serde(default)]
    model_group: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    metadata: Option<Value>,
}

fn clamp(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn text(value: Option<&Value>) -> Option<String> {
    value
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// `spend_logs_metadata.stratai_request_id` of a metadata object; LiteLLM keeps the header's
/// JSON object, some paths a JSON text.
fn stratai_request_id(metadata: Option<&Value>) -> Option<String> {
    let inner = metadata?.get("spend_logs_metadata")?;
    match inner {
        Value::String(s) => serde_json::from_str::<Value>(s)
            .ok()
            .and_then(|v| text(v.get(STRATAI_REQUEST_KEY))),
        other => text(other.get(STRATAI_REQUEST_KEY)),
    }
}

/// A callback timestamp: epoch seconds (a JSON number) or any text LiteLLM writes.
fn callback_time(value: Option<&Value>) -> Option<DateTime<Utc>> {
    match value? {
        Value::Number(n) => {
            let secs = n.as_f64()?;
            if !secs.is_finite() || secs < 0.0 {
                return None;
            }
            // Whole microseconds: a timestamp, not money.
            #[allow(clippy::cast_possible_truncation)]
            let micros = (secs * 1_000_000.0).round() as i64;
            Utc.timestamp_micros(micros).single()
        }
        Value::String(s) => crate::time::parse_timestamp(s),
        _ => None,
    }
}

impl CallbackPayload {
    fn into_event(self, received: DateTime<Utc>) -> SpendEvent {
        let metadata = self.metadata.as_ref();
        SpendEvent {
            litellm_request_id: self.id,
            key_hash: text(metadata.and_then(|m| m.get("user_api_key_hash"))),
            key_alias: text(metadata.and_then(|m| m.get("user_api_key_alias"))),
            litellm_user: text(metadata.and_then(|m| m.get("user_api_key_user_id"))),
            model: self.model_group.or(self.model),
            prompt_tokens: clamp(self.prompt_tokens),
            completion_tokens: clamp(self.completion_tokens),
            spend: self.response_cost,
            success: self.status.as_deref().is_none_or(|s| s == "success"),
            started_at: callback_time(self.start_time.as_ref()).unwrap_or(received),
            stratai_request_id: stratai_request_id(metadata),
        }
    }
}

/// The events of one callback delivery: LiteLLM's `generic_api` callback posts a JSON array
/// (`log_format: json_array`, the default), one object (`single`) or one object per line
/// (`ndjson`). `received` stands in for a missing start time.
pub fn parse_callback(
    body: &[u8],
    received: DateTime<Utc>,
) -> Result<Vec<SpendEvent>, CallbackBodyError> {
    let trimmed = body.trim_ascii();
    let payloads: Vec<CallbackPayload> = if trimmed.starts_with(b"[") {
        serde_json::from_slice(trimmed).map_err(|e| CallbackBodyError(e.to_string()))?
    } else {
        let mut out = Vec::new();
        for (n, line) in trimmed
            .split(|b| *b == b'\n')
            .map(<[u8]>::trim_ascii)
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
        {
            out.push(
                serde_json::from_slice(line)
                    .map_err(|e| CallbackBodyError(format!("line {}: {e}", n + 1)))?,
            );
        }
        out
    };
    Ok(payloads
        .into_iter()
        .map(|p| p.into_event(received))
        .collect())
}

impl SpendEvent {
    /// The event of a spend log row (`None` without a start time: a row LiteLLM garbled).
    pub fn from_spend_log(row: &SpendLogRow) -> Option<Self> {
        let metadata = row.metadata.as_ref();
        Some(Self {
            litellm_request_id: row.request_id.clone(),
            key_hash: row.api_key.clone().filter(|k| !k.is_empty()),
            key_alias: text(metadata.and_then(|m| m.get("user_api_key_alias"))),
            litellm_user: row.user.clone().filter(|u| !u.is_empty()),
            model: row.model_group.clone().or_else(|| row.model.clone()),
            prompt_tokens: clamp(row.prompt_tokens),
            completion_tokens: clamp(row.completion_tokens),
            spend: row.spend,
            success: row.is_success(),
            started_at: row.start_time?,
            stratai_request_id: stratai_request_id(metadata),
        })
    }

    /// The organization and member of a StratAI key's alias (`stratai:<org>:<user>`).
    pub fn member(&self) -> Option<(OrgId, UserId)> {
        // A rotated key's alias goes on (`...:retiring:<token>`): still the member's key.
        let mut parts = self
            .key_alias
            .as_deref()?
            .strip_prefix("stratai:")?
            .split(':');
        let (org, user) = (parts.next()?, parts.next()?);
        Some((org.parse().ok()?, user.parse().ok()?))
    }
}

/// The request id of a direct call's usage record: derived from LiteLLM's request id, so
/// every delivery of the call (callback, polls, restarts) names the same record.
pub fn direct_request_id(litellm_request_id: &str) -> RequestId {
    let digest = Sha256::digest(format!("stratai/litellm-spend/{litellm_request_id}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    RequestId::from_uuid(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

/// What [`SpendImporter::import`] did with one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Imported {
    /// The call went through StratAI: its usage record exists; nothing written.
    Gateway {
        /// The record's request id.
        request_id: RequestId,
        /// Where the record and LiteLLM disagree.
        mismatch: Option<SpendMismatch>,
    },
    /// A call made outside StratAI with a member's key, recorded as their usage.
    Direct {
        /// The usage record.
        record: UsageRecord,
        /// Budget threshold alerts the charge fired.
        alerts: Vec<BudgetAlert>,
        /// False when an earlier delivery already recorded it (nothing written now).
        fresh: bool,
    },
    /// The call names a StratAI request whose record is not written yet: a later pass decides.
    Pending,
    /// This importer already settled the call (matched, recorded or ignored it): nothing
    /// done, nothing counted again (polls read overlapping windows).
    Repeat,
    /// Not StratAI's to record.
    Ignored(IgnoredBecause),
}

/// Why an event was not recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IgnoredBecause {
    /// A failed call (LiteLLM bills nothing).
    Failed,
    /// Not a StratAI key (no `stratai:<org>:<user>` alias).
    UnmanagedKey,
    /// The key's member is not (or no longer) a member of the organization.
    UnknownMember,
}

/// Where the gateway's usage record and LiteLLM's report of the same call disagree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SpendMismatch {
    /// LiteLLM's request id.
    pub litellm_request_id: String,
    /// StratAI's request id.
    pub request_id: RequestId,
    /// StratAI's provider cost and LiteLLM's spend, when they differ beyond the tolerance.
    pub cost: Option<(Decimal, Decimal)>,
    /// StratAI's and LiteLLM's (prompt, completion) tokens, when they differ.
    pub tokens: Option<((u32, u32), (u32, u32))>,
}

/// Counters of everything imported since start, and the latest mismatches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SpendStats {
    /// Events seen (callback deliveries and polled rows, repeats included).
    pub events: u64,
    /// Calls matched with a gateway record.
    pub gateway: u64,
    /// Direct calls recorded now.
    pub direct_recorded: u64,
    /// Direct calls seen again (already recorded).
    pub direct_repeated: u64,
    /// Events left for a later pass.
    pub pending: u64,
    /// Events this importer had settled already (overlapping polls, repeated deliveries).
    pub repeats: u64,
    /// Events ignored.
    pub ignored: u64,
    /// Gateway records whose cost differs from LiteLLM's.
    pub cost_mismatches: u64,
    /// Gateway records whose tokens differ from LiteLLM's.
    pub token_mismatches: u64,
    /// The latest mismatches, newest last (at most [`SpendImporter::KEEP_MISMATCHES`]).
    pub recent_mismatches: Vec<SpendMismatch>,
    /// The latest poll, if any ran.
    pub last_poll: Option<PollReport>,
}

/// One poll of LiteLLM's spend logs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = PollView))]
pub struct PollReport {
    /// Window start.
    pub from: DateTime<Utc>,
    /// Window end.
    pub to: DateTime<Utc>,
    /// Rows read.
    pub rows: usize,
    /// Rows matched with gateway records.
    pub gateway: usize,
    /// Direct calls recorded by this poll (no callback had delivered them).
    pub direct_recorded: usize,
    /// Rows already settled (by the callback or an earlier poll).
    pub repeated: usize,
    /// Rows left for a later poll.
    pub pending: usize,
    /// Rows ignored.
    pub ignored: usize,
    /// Mismatches found.
    pub mismatches: usize,
}

/// Settings of the importer.
#[derive(Clone, Debug)]
pub struct SpendSettings {
    /// How long a call naming a StratAI request waits for that request's usage record before
    /// it is recorded as a call of its own.
    pub grace: chrono::Duration,
    /// Cost differences up to this are not mismatches (LiteLLM computes in `f64`).
    pub tolerance: Decimal,
}

impl Default for SpendSettings {
    fn default() -> Self {
        Self {
            grace: chrono::Duration::minutes(15),
            tolerance: Decimal::new(1, 6),
        }
    }
}

/// Records LiteLLM's spend in StratAI's books (see the module docs).
pub struct SpendImporter {
    directory: Arc<dyn DirectoryStore>,
    tiers: Arc<dyn TierStore>,
    budgets: Arc<dyn BudgetLedger>,
    usage: Arc<dyn UsageStore>,
    settings: SpendSettings,
    stats: Mutex<(SpendStats, VecDeque<SpendMismatch>)>,
    /// LiteLLM request ids of calls settled by this importer, oldest first (bounded).
    settled: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl std::fmt::Debug for SpendImporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpendImporter")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Why an import failed (retry later: nothing half-done stays wrong, both writes are
/// idempotent).
#[derive(Debug, thiserror::Error)]
pub enum SpendError {
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// LiteLLM failed (polling).
    #[error("litellm: {0}")]
    LiteLlm(#[from] crate::LiteLlmError),
}

impl SpendImporter {
    /// How many recent mismatches [`SpendImporter::stats`] keeps.
    pub const KEEP_MISMATCHES: usize = 100;

    /// How many settled request ids the importer remembers (a poll window's worth).
    pub const KEEP_SETTLED: usize = 200_000;

    fn is_settled(&self, id: &str) -> bool {
        self.settled.lock().is_ok_and(|g| g.0.contains(id))
    }

    fn settle_id(&self, id: &str) {
        let Ok(mut guard) = self.settled.lock() else {
            return;
        };
        let (set, order) = &mut *guard;
        if set.insert(id.to_owned()) {
            order.push_back(id.to_owned());
            if order.len() > Self::KEEP_SETTLED
                && let Some(old) = order.pop_front()
            {
                set.remove(&old);
            }
        }
    }

    /// An importer over the stores' ports. `budgets` must be the shared ledger (or a lease
    /// ledger over it): direct calls are settled there without a reservation.
    pub fn new(
        directory: Arc<dyn DirectoryStore>,
        tiers: Arc<dyn TierStore>,
        budgets: Arc<dyn BudgetLedger>,
        usage: Arc<dyn UsageStore>,
        settings: SpendSettings,
    ) -> Self {
        Self {
            directory,
            tiers,
            budgets,
            usage,
            settings,
            stats: Mutex::new((SpendStats::default(), VecDeque::new())),
            settled: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }

    /// Counters since start and the latest mismatches.
    pub fn stats(&self) -> SpendStats {
        match self.stats.lock() {
            Ok(guard) => {
                let (stats, recent) = &*guard;
                let mut out = stats.clone();
                out.recent_mismatches = recent.iter().cloned().collect();
                out
            }
            Err(_) => SpendStats::default(),
        }
    }

    fn count(&self, outcome: &Imported) {
        let Ok(mut guard) = self.stats.lock() else {
            return;
        };
        let (stats, recent) = &mut *guard;
        stats.events += 1;
        match outcome {
            Imported::Gateway { mismatch, .. } => {
                stats.gateway += 1;
                if let Some(m) = mismatch {
                    stats.cost_mismatches += u64::from(m.cost.is_some());
                    stats.token_mismatches += u64::from(m.tokens.is_some());
                    if recent.len() == Self::KEEP_MISMATCHES {
                        recent.pop_front();
                    }
                    recent.push_back(m.clone());
                }
            }
            Imported::Direct { fresh: true, .. } => stats.direct_recorded += 1,
            Imported::Direct { fresh: false, .. } => stats.direct_repeated += 1,
            Imported::Pending => stats.pending += 1,
            Imported::Ignored(_) => stats.ignored += 1,
            Imported::Repeat => stats.repeats += 1,
        }
    }

    /// Imports one event (see the module docs). `now` decides whether a record the event
    /// names is still awaited.
    pub async fn import(
        &self,
        event: &SpendEvent,
        now: DateTime<Utc>,
    ) -> Result<Imported, SpendError> {
        if self.is_settled(&event.litellm_request_id) {
            if let Ok(mut guard) = self.stats.lock() {
                guard.0.events += 1;
                guard.0.repeats += 1;
            }
            return Ok(Imported::Repeat);
        }
        let outcome = self.decide(event, now).await?;
        if !matches!(outcome, Imported::Pending) {
            self.settle_id(&event.litellm_request_id);
        }
        self.count(&outcome);
        Ok(outcome)
    }

    async fn decide(&self, event: &SpendEvent, now: DateTime<Utc>) -> Result<Imported, SpendError> {
        if !event.success {
            return Ok(Imported::Ignored(IgnoredBecause::Failed));
        }
        let Some((org, user)) = event.member() else {
            return Ok(Imported::Ignored(IgnoredBecause::UnmanagedKey));
        };
        if event
            .litellm_user
            .as_deref()
            .is_some_and(|u| u != user.to_string())
        {
            // An alias that does not name the key's own user: not a key StratAI made.
            return Ok(Imported::Ignored(IgnoredBecause::UnmanagedKey));
        }
        match self.directory.get_member(org, user).await {
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) => {
                return Ok(Imported::Ignored(IgnoredBecause::UnknownMember));
            }
            Err(e) => return Err(e.into()),
        }
        let mut request_id = direct_request_id(&event.litellm_request_id);
        if let Some(claimed) = event
            .stratai_request_id
            .as_deref()
            .and_then(|s| s.parse::<RequestId>().ok())
        {
            match self.usage.get(org, claimed).await {
                Ok(record)
                    if record.user_id == user
                        && record.endpoint != DIRECT_ENDPOINT
                        && record
                            .litellm_request_id
                            .as_deref()
                            .is_none_or(|id| id == event.litellm_request_id) =>
                {
                    return Ok(Imported::Gateway {
                        request_id: claimed,
                        mismatch: self.compare(&record, event),
                    });
                }
                // Names someone else's record, or another call's: the claim is false.
                Ok(_) => {}
                Err(StoreError::NotFound { .. })
                    if now - event.started_at < self.settings.grace =>
                {
                    return Ok(Imported::Pending);
                }
                // Never written: recorded under the claimed id, so a gateway record
                // arriving even later (a spool replay) is a duplicate, not a second charge.
                Err(StoreError::NotFound { .. }) => request_id = claimed,
                Err(e) => return Err(e.into()),
            }
        }
        self.record_direct(event, org, user, request_id).await
    }

    fn compare(&self, record: &UsageRecord, event: &SpendEvent) -> Option<SpendMismatch> {
        let ours = record.provider_cost.amount();
        let cost =
            ((ours - event.spend).abs() > self.settings.tolerance).then_some((ours, event.spend));
        let mine = (record.input_tokens, record.output_tokens);
        let theirs = (event.prompt_tokens, event.completion_tokens);
        let tokens = (mine != theirs).then_some((mine, theirs));
        (cost.is_some() || tokens.is_some()).then(|| SpendMismatch {
            litellm_request_id: event.litellm_request_id.clone(),
            request_id: record.request_id,
            cost,
            tokens,
        })
    }

    async fn record_direct(
        &self,
        event: &SpendEvent,
        org: OrgId,
        user: UserId,
        request_id: RequestId,
    ) -> Result<Imported, SpendError> {
        let model = event
            .model
            .as_deref()
            .and_then(|m| ModelId::new(m).ok())
            .or_else(|| ModelId::new("unknown").ok());
        let Some(model) = model else {
            return Ok(Imported::Ignored(IgnoredBecause::UnmanagedKey));
        };
        let catalog = TierCatalog::new(self.tiers.list_tiers().await?)
            .map_err(|e| StoreError::Backend(format!("tier catalog: {e}")))?;
        let tier = catalog.tier_of_model(&model);
        // LiteLLM computes in `f64` (`0.018000000000000002`): ten places keep every real
        // price and drop the float's tail.
        let spend = event.spend.max(Decimal::ZERO).round_dp(10).normalize();
        let provider_cost = Money::new(spend).unwrap_or(Money::ZERO);
        // StratAI bills a direct call as it bills one through the gateway: at the tier's
        // rates; a model of no tier at what the provider charged.
        let billed = tier.map_or(provider_cost, |t| {
            // at the rates in force when the call was made
            billed_amount(
                &t.as_of(event.started_at),
                event.prompt_tokens,
                event.completion_tokens,
            )
        });
        let groups: Vec<_> = match self.directory.groups_of_member(org, user).await {
            Ok(groups) => groups.into_iter().map(|(g, _)| g.id).collect(),
            Err(StoreError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let scope = RequestScope {
            org_id: org,
            user_id: user,
            group_ids: &groups,
            tier_id: tier.map(|t| t.id),
        };
        let budgets = self.budgets.list_budgets(org).await?;
        let ids: Vec<_> = applicable_budgets(&budgets, &scope)
            .into_iter()
            .map(|b| b.id)
            .collect();
        let record = UsageRecord {
            request_id,
            org_id: org,
            group_id: attribution_group(groups.iter().copied()),
            user_id: user,
            tier_id: tier.map(|t| t.id),
            model,
            input_tokens: event.prompt_tokens,
            output_tokens: event.completion_tokens,
            provider_cost,
            billed_amount: billed,
            overage: Money::ZERO,
            litellm_request_id: Some(event.litellm_request_id.clone()),
            conversation_id: None,
            endpoint: DIRECT_ENDPOINT.to_owned(),
            status: UsageStatus::Success,
            created_at: event.started_at,
            lease_id: None,
        };
        // Settle first: a settlement is idempotent by request id, so a crash between the two
        // writes is repaired by the next delivery (settled again: no-op; appended: fresh).
        let settled = self
            .budgets
            .settle(org, request_id, &ids, billed, event.started_at)
            .await?;
        let appended = self
            .usage
            .append(org, std::slice::from_ref(&record))
            .await?;
        Ok(Imported::Direct {
            record,
            alerts: settled.alerts,
            fresh: appended.inserted > 0,
        })
    }

    /// Polls LiteLLM's spend logs of `[from, to]` and imports every row (the callback's
    /// path, so rows it delivered are repeats). `to` should lag real time (LiteLLM writes
    /// spend logs in batches, ~10 s). Returns the poll's report and every row's outcome
    /// (for the caller's alerts and metrics).
    pub async fn poll(
        &self,
        client: &crate::LiteLlmClient,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(PollReport, Vec<Imported>), SpendError> {
        let rows = client
            .spend_logs_range(&SpendLogsQuery::between(from, to))
            .await?;
        let mut report = PollReport {
            from,
            to,
            rows: rows.len(),
            ..PollReport::default()
        };
        let mut outcomes = Vec::new();
        for row in &rows {
            let Some(event) = SpendEvent::from_spend_log(row) else {
                report.ignored += 1;
                continue;
            };
            let outcome = self.import(&event, now).await?;
            match &outcome {
                Imported::Gateway { mismatch, .. } => {
                    report.gateway += 1;
                    report.mismatches += usize::from(mismatch.is_some());
                }
                Imported::Direct { fresh: true, .. } => report.direct_recorded += 1,
                Imported::Direct { fresh: false, .. } | Imported::Repeat => report.repeated += 1,
                Imported::Pending => report.pending += 1,
                Imported::Ignored(_) => report.ignored += 1,
            }
            outcomes.push(outcome);
        }
        if let Ok(mut guard) = self.stats.lock() {
            guard.0.last_poll = Some(report.clone());
        }
        Ok((report, outcomes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_callback_format_and_the_stratai_request_id() {
        let one = r#"{"id":"chatcmpl-1","response_cost":0.024,"status":"success","prompt_tokens":2,
            "completion_tokens":11,"startTime":1765000000.25,"model_group":"mock-gpt",
            "metadata":{"user_api_key_hash":"abc","user_api_key_alias":"stratai:0193a0a0-0000-7000-8000-000000000001:0193a0a0-0000-7000-8000-000000000002",
            "user_api_key_user_id":"0193a0a0-0000-7000-8000-000000000002",
            "spend_logs_metadata":{"stratai_request_id":"0193a0a0-0000-7000-8000-000000000003"}}}"#;
        let now = Utc::now();
        let array = parse_callback(format!("[{one}]").as_bytes(), now).unwrap();
        let single = parse_callback(one.replace('\n', " ").as_bytes(), now).unwrap();
        let ndjson = parse_callback(
            format!("{}\n{}\n", one.replace('\n', " "), one.replace('\n', " ")).as_bytes(),
            now,
        )
        .unwrap();
        assert_eq!(array, single);
        assert_eq!(ndjson.len(), 2);
        let e = &array[0];
        assert_eq!(e.spend, Decimal::new(24, 3));
        assert_eq!((e.prompt_tokens, e.completion_tokens), (2, 11));
        assert_eq!(e.started_at.timestamp_millis(), 1_765_000_000_250);
        assert_eq!(
            e.stratai_request_id.as_deref(),
            Some("0193a0a0-0000-7000-8000-000000000003")
        );
        let (org, user) = e.member().unwrap();
        assert_eq!(org.to_string(), "0193a0a0-0000-7000-8000-000000000001");
        assert_eq!(user.to_string(), "0193a0a0-0000-7000-8000-000000000002");
        assert!(parse_callback(b"{not json", now).is_err());
        assert!(parse_callback(b"[{\"no_id\":1}]", now).is_err());
    }

    #[test]
    fn direct_request_ids_are_stable_and_distinct() {
        assert_eq!(direct_request_id("a"), direct_request_id("a"));
        assert_ne!(direct_request_id("a"), direct_request_id("b"));
    }

    #[test]
    fn a_spend_log_row_reads_alias_and_claim_from_its_metadata() {
        let row: SpendLogRow = serde_json::from_str(
            r#"{"request_id":"r1","api_key":"h","spend":0.5,"prompt_tokens":1,"completion_tokens":2,
            "startTime":"2026-11-28T15:10:14.226000Z","model_group":"mock-gpt","user":"u",
            "metadata":{"status":"success","user_api_key_alias":"alias",
            "spend_logs_metadata":{"stratai_request_id":"x"}}}"#,
        )
        .unwrap();
        let e = SpendEvent::from_spend_log(&row).unwrap();
        assert_eq!(e.key_alias.as_deref(), Some("alias"));
        assert_eq!(e.stratai_request_id.as_deref(), Some("x"));
        assert_eq!(e.spend, Decimal::new(5, 1));
        assert!(e.member().is_none());
    }
}
