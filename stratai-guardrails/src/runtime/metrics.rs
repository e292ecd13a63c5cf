//! The runtime's metrics, recorded through the [`metrics`] facade (a no-op until the embedding
//! program installs a recorder; the server installs a Prometheus one and serves it at
//! `GET /metrics`). Every series is labelled by a bounded kind, never by user or org.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `stratai_gateway_decisions_total` | counter | `outcome` (`allow`/`warn`/`deny`), `reason` (kind) |
//! | `stratai_budget_refusals_total` | counter | `scope` (`org`/`group`/`user`/`tier`) |
//! | `stratai_upstream_latency_seconds` | histogram | `provider`, `outcome` |
//! | `stratai_usage_write_lag_seconds` | histogram | `path` (`direct`/`batched`/`spool`) |
//! | `stratai_usage_spooled_total` | counter | — |
//! | `stratai_usage_spool_pending` | gauge | — |
//! | `stratai_budget_alerts_total` | counter | `scope` |

use std::time::{Duration, Instant};

use stratai_core::budget::BudgetScope;

/// The kind of reason behind a gateway decision (a bounded label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReasonKind {
    /// Nothing stood in the way.
    None,
    /// Tier / model access.
    ModelAccess,
    /// A guardrail rule (pre or post).
    Guardrail,
    /// A rate limit.
    RateLimit,
    /// A budget (hard refusal, or soft warning).
    Budget,
    /// The upstream failed.
    Upstream,
}

impl ReasonKind {
    /// The label value.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ModelAccess => "model_access",
            Self::Guardrail => "guardrail",
            Self::RateLimit => "rate_limit",
            Self::Budget => "budget",
            Self::Upstream => "upstream",
        }
    }
}

/// Counts one gateway decision.
pub fn record_decision(outcome: &'static str, reason: ReasonKind) {
    metrics::counter!(
        "stratai_gateway_decisions_total",
        "outcome" => outcome,
        "reason" => reason.as_str(),
    )
    .increment(1);
}

/// The label of a budget scope type.
#[must_use]
pub fn scope_label(scope: &BudgetScope) -> &'static str {
    match scope {
        BudgetScope::Org => "org",
        BudgetScope::Group(_) => "group",
        BudgetScope::User(_) => "user",
        BudgetScope::Tier(_) => "tier",
    }
}

/// Counts a hard budget refusal by the refusing scope's type.
pub fn record_budget_refusal(scope: &BudgetScope) {
    metrics::counter!("stratai_budget_refusals_total", "scope" => scope_label(scope)).increment(1);
}

/// Counts a budget alert by scope type.
pub fn record_budget_alert(scope: &BudgetScope) {
    metrics::counter!("stratai_budget_alerts_total", "scope" => scope_label(scope)).increment(1);
}

/// Records the latency of one upstream call (until the answer, or the end of a stream).
pub fn record_upstream_latency(provider: &'static str, outcome: &'static str, elapsed: Duration) {
    metrics::histogram!(
        "stratai_upstream_latency_seconds",
        "provider" => provider,
        "outcome" => outcome,
    )
    .record(elapsed.as_secs_f64());
}

/// Records how long after the response a usage record became durable.
pub fn record_usage_write_lag(path: &'static str, since: Instant) {
    metrics::histogram!("stratai_usage_write_lag_seconds", "path" => path)
        .record(since.elapsed().as_secs_f64());
}

/// Records the lag of a spooled record, from when it was spooled until it reached the store.
pub fn record_usage_write_lag_since(spooled_at: chrono::DateTime<chrono::Utc>) {
    let lag = (chrono::Utc::now() - spooled_at)
        .to_std()
        .unwrap_or(Duration::ZERO);
    metrics::histogram!("stratai_usage_write_lag_seconds", "path" => "spool")
        .record(lag.as_secs_f64());
}

/// Counts a usage record written to the spool instead of the store.
pub fn record_spooled() {
    metrics::counter!("stratai_usage_spooled_total").increment(1);
}

/// Sets the number of records waiting in the spool.
pub fn set_spool_pending(pending: usize) {
    #[allow(clippy::cast_precision_loss)] // a count far below 2^52
    metrics::gauge!("stratai_usage_spool_pending").set(pending as f64);
}

/// Counts a hard budget taken past its limit by records charged after the fact.
pub fn record_late_overage() {
    metrics::counter!("stratai_budget_late_overage_total").increment(1);
}

/// Counts budget leases of a dead instance settled (or released) by this one.
pub fn record_abandoned_lease(outcome: &'static str) {
    metrics::counter!("stratai_abandoned_leases_total", "outcome" => outcome).increment(1);
}
