//! Budget alerts: fired once per budget scope and period, to the log and a webhook.
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
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use stratai_core::budget::{BudgetAlert, BudgetScope};
use stratai_core::ids::{BudgetId, OrgId, RequestId, UserId};
use stratai_core::money::Money;
use stratai_core::usage::UsageRecord;
use url::Url;

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
                crate::metrics::scope_label(&alert.scope),
                alert.spent,
                alert.limit
            ),
        }
    }
}

/// An alert's identity: the budget and the start of its period.
type AlertKey = (BudgetId, DateTime<Utc>);

/// Where alerts go.
#[derive(Clone, Debug)]
pub struct AlertSink {
    webhook: Option<Url>,
    client: reqwest::Client,
    sent: Arc<Mutex<HashSet<AlertKey>>>,
}

impl AlertSink {
    /// A sink logging alerts and, when `webhook` is set, posting them there.
    #[must_use]
    pub fn new(webhook: Option<Url>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            webhook,
            client,
            sent: Arc::new(Mutex::new(HashSet::new())),
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
        for payload in &fresh {
            crate::metrics::record_budget_alert(&payload.scope);
            tracing::warn!(
                budget = %payload.budget_id,
                org = %payload.org_id,
                spent = %payload.spent,
                limit = %payload.limit,
                "budget alert: {}",
                payload.message
            );
            if let Some(url) = self.webhook.clone() {
                let client = self.client.clone();
                let payload = payload.clone();
                let label = payload.budget_id.to_string();
                tokio::spawn(async move { deliver(client, url, payload, label).await });
            }
        }
        fresh.len()
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
        tracing::warn!(
            org = %payload.org_id,
            request_id = %payload.request_id,
            overage = %payload.overage,
            "usage alert: {}",
            payload.message
        );
        if let Some(url) = self.webhook.clone() {
            let client = self.client.clone();
            let label = payload.request_id.to_string();
            tokio::spawn(async move { deliver(client, url, payload, label).await });
        }
        true
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

impl AlertSink {
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
        tracing::warn!(
            org = %payload.org_id,
            user = %payload.user_id,
            request_id = %payload.request_id,
            billed = %payload.billed_amount,
            "usage alert: {}",
            payload.message
        );
        if let Some(url) = self.webhook.clone() {
            let client = self.client.clone();
            let label = payload.request_id.to_string();
            tokio::spawn(async move { deliver(client, url, payload, label).await });
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

async fn deliver<P: Serialize>(client: reqwest::Client, url: Url, payload: P, label: String) {
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=3u32 {
        match client.post(url.clone()).json(&payload).send().await {
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
    tracing::error!(alert = %label, "alert webhook gave up after 3 attempts");
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Json;
    use axum::routing::post;

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

    #[tokio::test]
    async fn fires_once_per_budget_and_period_to_the_webhook() {
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

        let sink = AlertSink::new(Some(Url::parse(&format!("http://{addr}/hook")).unwrap()));
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
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
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
