//! Budget alerts: fired once per budget scope and period, delivered by an [`AlertDelivery`]
//! ([`LogAlerts`]: the log; [`WebhookAlerts`], `webhook` feature: the log and a webhook).
//!
//! The ledger reports a threshold alert at most once per budget and period (its `alert_sent`
//! flag is set in the same transaction as the spend). This sink keeps that promise on its
//! side too: an alert already delivered by this process for the same budget and period is not
//! sent again, so a replayed settlement cannot page anyone twice.
//!
//! The webhook receives `POST <url>` with a JSON body (see [`AlertPayload`]); delivery is in
//! the background with a timeout and a few retries, and never delays a chat response.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use stratai_core::budget::{BudgetAlert, BudgetScope, BudgetState};
use stratai_core::ids::{BudgetId, OrgId, RequestId, UserId};
use stratai_core::money::Money;
use stratai_core::usage::UsageRecord;

/// The JSON body posted to the webhook.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AlertPayload {
    /// Always `budget.threshold_reached`.
    pub event: &'static str,
    /// Budget.
    pub budget_id: BudgetId,
    /// Organization.
    pub org_id: OrgId,
    /// Scope of the budget.
    pub scope: BudgetScope,
    /// Start of the period.
    pub period_start: DateTime<Utc>,
    /// Spend when the threshold was crossed.
    pub spent: Money,
    /// Limit.
    pub limit: Money,
    /// Threshold fraction.
    pub threshold: Decimal,
    /// Human summary.
    pub message: String,
}

impl AlertPayload {
    /// The payload of an alert.
    #[must_use]
    pub fn from_alert(alert: &BudgetAlert) -> Self {
        let pct = (alert.threshold * Decimal::from(100)).normalize();
        Self {
            event: "budget.threshold_reached",
            budget_id: alert.budget_id,
            org_id: alert.org_id,
            scope: alert.scope,
            period_start: alert.period_start,
            spent: alert.spent,
            limit: alert.limit,
            threshold: alert.threshold,
            message: format!(
                "{} budget reached {pct}% of its limit: spent {} of {}",
                super::metrics::scope_label(&alert.scope),
                alert.spent,
                alert.limit
            ),
        }
    }
}

/// The JSON body posted to the webhook for a request billed beyond its reservation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OveragePayload {
    /// Always `usage.overage`.
    pub event: &'static str,
    /// Organization.
    pub org_id: OrgId,
    /// The request.
    pub request_id: RequestId,
    /// The member.
    pub user_id: UserId,
    /// The model.
    pub model: String,
    /// What the request billed.
    pub billed_amount: Money,
    /// The part of it beyond the reservation (charged to no budget).
    pub overage: Money,
    /// Human summary.
    pub message: String,
}

/// An alert's identity: the budget and the start of its period.
type AlertKey = (BudgetId, DateTime<Utc>);

/// One alert to deliver.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Alert {
    /// A budget passed its alert threshold.
    Budget(AlertPayload),
    /// A request was billed beyond its reservation.
    Overage(OveragePayload),
    /// A member's LiteLLM key was used outside StratAI's gateway.
    Outside(OutsidePayload),
    /// Records charged after the fact took a hard budget past its limit.
    LateOverage(LateOveragePayload),
}

impl Alert {
    /// The human summary.
    #[must_use]
    pub fn message(&self) -> &str {
        match self {
            Self::Budget(p) => &p.message,
            Self::Overage(p) => &p.message,
            Self::Outside(p) => &p.message,
            Self::LateOverage(p) => &p.message,
        }
    }
}

/// Where an [`AlertSink`] delivers the alerts it decided to send. Delivery must not block:
/// anything slow (a network call) runs in the background.
pub trait AlertDelivery: Send + Sync + 'static {
    /// Delivers one alert.
    fn deliver(&self, alert: &Alert);
}

/// Delivers alerts to the log (`WARN`).
#[derive(Clone, Copy, Debug, Default)]
pub struct LogAlerts;

impl AlertDelivery for LogAlerts {
    fn deliver(&self, alert: &Alert) {
        match alert {
            Alert::Budget(p) => tracing::warn!(
                budget = %p.budget_id,
                org = %p.org_id,
                spent = %p.spent,
                limit = %p.limit,
                "budget alert: {}",
                p.message
            ),
            Alert::Overage(p) => tracing::warn!(
                org = %p.org_id,
                request_id = %p.request_id,
                overage = %p.overage,
                "usage alert: {}",
                p.message
            ),
            Alert::Outside(p) => tracing::warn!(
                org = %p.org_id,
                user = %p.user_id,
                request_id = %p.request_id,
                billed = %p.billed_amount,
                "usage alert: {}",
                p.message
            ),
            Alert::LateOverage(p) => tracing::warn!(
                budget = %p.budget_id,
                org = %p.org_id,
                spent = %p.spent,
                limit = %p.limit,
                "budget alert: {}",
                p.message
            ),
        }
    }
}

/// Delivers alerts to the log and as `POST <url>` with the alert's JSON body, in the
/// background with a five-second timeout and three attempts (must be used inside a Tokio
/// runtime).
#[cfg(feature = "webhook")]
#[derive(Clone, Debug)]
pub struct WebhookAlerts {
    url: url::Url,
    client: reqwest::Client,
}

#[cfg(feature = "webhook")]
impl WebhookAlerts {
    /// Delivery to `url`.
    #[must_use]
    pub fn new(url: url::Url) -> Self {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self { url, client }
    }
}

#[cfg(feature = "webhook")]
impl AlertDelivery for WebhookAlerts {
    fn deliver(&self, alert: &Alert) {
        LogAlerts.deliver(alert);
        let (client, url, alert) = (self.client.clone(), self.url.clone(), alert.clone());
        tokio::spawn(async move { post_alert(client, url, alert).await });
    }
}

#[cfg(feature = "webhook")]
async fn post_alert(client: reqwest::Client, url: url::Url, alert: Alert) {
    let mut delay = std::time::Duration::from_millis(200);
    for attempt in 1..=3u32 {
        match client.post(url.clone()).json(&alert).send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => {
                tracing::warn!(status = %r.status(), attempt, "budget alert webhook refused");
            }
            Err(e) => {
                tracing::warn!(error = %e.without_url(), attempt, "budget alert webhook unreachable");
            }
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
    }
    let label = match &alert {
        Alert::Budget(p) => p.budget_id.to_string(),
        Alert::Overage(p) => p.request_id.to_string(),
        Alert::Outside(p) => p.request_id.to_string(),
        Alert::LateOverage(p) => p.budget_id.to_string(),
    };
    tracing::error!(alert = %label, "alert webhook gave up after 3 attempts");
}

/// Decides which alerts to send (each budget alert once per budget and period, every
/// overage) and hands them to its [`AlertDelivery`].
#[derive(Clone)]
pub struct AlertSink {
    delivery: Arc<dyn AlertDelivery>,
    sent: Arc<Mutex<HashSet<AlertKey>>>,
}

impl std::fmt::Debug for AlertSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertSink").finish_non_exhaustive()
    }
}

impl Default for AlertSink {
    fn default() -> Self {
        Self::new(Arc::new(LogAlerts))
    }
}

impl AlertSink {
    /// A sink delivering to `delivery`.
    #[must_use]
    pub fn new(delivery: Arc<dyn AlertDelivery>) -> Self {
        Self {
            delivery,
            sent: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// A sink delivering to the log only.
    #[must_use]
    pub fn log() -> Self {
        Self::default()
    }

    /// A sink delivering to the log and, when `webhook` is set, to it.
    #[cfg(feature = "webhook")]
    #[must_use]
    pub fn webhook(webhook: Option<url::Url>) -> Self {
        match webhook {
            Some(url) => Self::new(Arc::new(WebhookAlerts::new(url))),
            None => Self::log(),
        }
    }

    /// Emits each alert not yet emitted for its budget and period; returns how many were new.
    pub fn fire(&self, alerts: &[BudgetAlert]) -> usize {
        let mut fresh = Vec::new();
        {
            let Ok(mut sent) = self.sent.lock() else {
                return 0;
            };
            for alert in alerts {
                if sent.insert((alert.budget_id, alert.period_start)) {
                    fresh.push(AlertPayload::from_alert(alert));
                }
            }
        }
        let count = fresh.len();
        for payload in fresh {
            super::metrics::record_budget_alert(&payload.scope);
            self.delivery.deliver(&Alert::Budget(payload));
        }
        count
    }

    /// Emits the overage alert of a usage record billed beyond its reservation (nothing when
    /// its `overage` is zero): the budgets were charged only the reservation, so someone must
    /// look at the provider's billing. Returns whether an alert was emitted.
    pub fn overage(&self, record: &UsageRecord) -> bool {
        if record.overage == Money::ZERO {
            return false;
        }
        let payload = OveragePayload {
            event: "usage.overage",
            org_id: record.org_id,
            request_id: record.request_id,
            user_id: record.user_id,
            model: record.model.to_string(),
            billed_amount: record.billed_amount,
            overage: record.overage,
            message: format!(
                "request billed {} of which {} beyond its reserved worst case: budgets were charged only the reservation",
                record.billed_amount, record.overage
            ),
        };
        self.delivery.deliver(&Alert::Overage(payload));
        true
    }

    /// Emits the late overage alert of a hard budget whose spend passed its limit because
    /// records were charged after the fact: an instance died with records only in its local
    /// usage log, another instance settled its budget leases without them (releasing the
    /// rest, which others then spent), and the log, replayed at the instance's next start,
    /// charged them (see [`super::liveness`]). Every one is delivered (it is rare, and each
    /// says how far past the limit the budget is now).
    pub fn late_overage(&self, state: &BudgetState) {
        let payload = LateOveragePayload {
            event: "budget.late_overage",
            budget_id: state.budget.id,
            org_id: state.budget.org_id,
            scope: state.budget.scope,
            period_start: state.period_start,
            spent: state.spent,
            limit: state.budget.limit,
            message: format!(
                "{} budget passed its hard limit by records charged after the fact (they were only in a dead instance's usage log): spent {} of {}",
                super::metrics::scope_label(&state.budget.scope),
                state.spent,
                state.budget.limit
            ),
        };
        super::metrics::record_late_overage();
        self.delivery.deliver(&Alert::LateOverage(payload));
    }

    /// Emits the "spend outside StratAI" alert of a usage record imported from LiteLLM: a
    /// member's virtual key was used directly against the proxy (a script, a notebook, a
    /// leaked key). The caller fires it once, when the record is first written.
    pub fn outside_stratai(&self, record: &UsageRecord) {
        let payload = OutsidePayload {
            event: "usage.outside_stratai",
            org_id: record.org_id,
            request_id: record.request_id,
            litellm_request_id: record.litellm_request_id.clone(),
            user_id: record.user_id,
            model: record.model.to_string(),
            provider_cost: record.provider_cost,
            billed_amount: record.billed_amount,
            message: format!(
                "spend outside StratAI: the member's LiteLLM key was used directly ({} billed); recorded and charged to their budgets",
                record.billed_amount
            ),
        };
        metrics::counter!("stratai_litellm_spend_outside_total").increment(1);
        self.delivery.deliver(&Alert::Outside(payload));
    }
}

/// The JSON body posted to the webhook for spend made with a member's LiteLLM key outside
/// StratAI's gateway (recorded as their usage and charged to their budgets).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OutsidePayload {
    /// Always `usage.outside_stratai`.
    pub event: &'static str,
    /// Organization.
    pub org_id: OrgId,
    /// The usage record's request id.
    pub request_id: RequestId,
    /// LiteLLM's request id.
    pub litellm_request_id: Option<String>,
    /// The member whose key was used.
    pub user_id: UserId,
    /// The model.
    pub model: String,
    /// What LiteLLM charged.
    pub provider_cost: Money,
    /// What was billed and charged to the member's budgets.
    pub billed_amount: Money,
    /// Human summary.
    pub message: String,
}

/// The JSON body posted to the webhook when records charged after the fact took a hard
/// budget past its limit (see [`AlertSink::late_overage`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LateOveragePayload {
    /// Always `budget.late_overage`.
    pub event: &'static str,
    /// Budget.
    pub budget_id: BudgetId,
    /// Organization.
    pub org_id: OrgId,
    /// Scope of the budget.
    pub scope: BudgetScope,
    /// Start of the period.
    pub period_start: DateTime<Utc>,
    /// Spend now, past the limit.
    pub spent: Money,
    /// Limit.
    pub limit: Money,
    /// Human summary.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Delivery into a list.
    #[derive(Default)]
    struct Collect(Mutex<Vec<Alert>>);

    impl AlertDelivery for Arc<Collect> {
        fn deliver(&self, alert: &Alert) {
            self.0.lock().unwrap().push(alert.clone());
        }
    }

    #[test]
    fn a_budget_alert_once_and_every_overage_reach_the_delivery() {
        let got = Arc::new(Collect::default());
        let sink = AlertSink::new(Arc::new(got.clone()));
        let b = BudgetId::new();
        let p = Utc::now();
        assert_eq!(sink.fire(&[alert(b, p), alert(b, p)]), 1);
        assert_eq!(sink.fire(&[alert(b, p)]), 0);
        let mut record = stratai_core::usage::UsageRecord {
            request_id: RequestId::new(),
            org_id: OrgId::new(),
            group_id: None,
            user_id: UserId::new(),
            tier_id: None,
            model: stratai_core::ids::ModelId::new("gpt-4o").unwrap(),
            input_tokens: 1,
            output_tokens: 1,
            provider_cost: Money::ZERO,
            billed_amount: Money::parse("0.5").unwrap(),
            overage: Money::ZERO,
            litellm_request_id: None,
            conversation_id: None,
            endpoint: "chat".to_owned(),
            status: stratai_core::usage::UsageStatus::Success,
            created_at: p,
            lease_id: None,
        };
        assert!(!sink.overage(&record));
        record.overage = Money::parse("0.1").unwrap();
        assert!(sink.overage(&record));
        let got = got.0.lock().unwrap();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(&got[0], Alert::Budget(a) if a.budget_id == b));
        assert!(matches!(&got[1], Alert::Overage(o) if o.overage == record.overage));
    }

    fn alert(budget: BudgetId, period_start: DateTime<Utc>) -> BudgetAlert {
        BudgetAlert {
            budget_id: budget,
            org_id: OrgId::new(),
            scope: BudgetScope::User(UserId::new()),
            period_start,
            spent: Money::parse("8.5").unwrap(),
            limit: Money::dollars(10),
            threshold: Decimal::new(8, 1),
        }
    }

    #[cfg(feature = "webhook")]
    #[tokio::test]
    async fn fires_once_per_budget_and_period_to_the_webhook() {
        use axum::Json;
        use axum::routing::post;
        let received = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
        let r2 = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |Json(v): Json<serde_json::Value>| {
                let r = r2.clone();
                async move {
                    r.lock().unwrap().push(v);
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let sink = AlertSink::webhook(Some(
            url::Url::parse(&format!("http://{addr}/hook")).unwrap(),
        ));
        let b = BudgetId::new();
        let p1 = Utc::now();
        let p2 = p1 + chrono::Duration::days(31);
        assert_eq!(sink.fire(&[alert(b, p1)]), 1);
        assert_eq!(sink.fire(&[alert(b, p1), alert(b, p1)]), 0);
        assert_eq!(sink.fire(&[alert(b, p2)]), 1);
        for _ in 0..100 {
            if received.lock().unwrap().len() >= 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let got = received.lock().unwrap().clone();
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0]["event"], "budget.threshold_reached");
        assert_eq!(got[0]["budget_id"], b.to_string());
        assert_eq!(got[0]["limit"], "10");
        assert!(
            got[0]["message"]
                .as_str()
                .unwrap()
                .starts_with("user budget reached 80% of its limit"),
            "{got:?}"
        );
    }
}
