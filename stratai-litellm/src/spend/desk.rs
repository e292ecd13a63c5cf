//! The spend desk: the [`SpendImporter`] with what its outcomes trigger (budget alerts and
//! the "spend outside StratAI" alert, through [`SpendAlerts`]; the `stratai_litellm_spend_*`
//! metrics), a callback delivery's tally, and the latest directory reconcile of the proxy
//! (the `stratai_litellm_drift{kind}` gauges, `stratai_litellm_drift_repaired_total`,
//! `stratai_litellm_reconcile_failures_total`, and the view the status answer shows). Both
//! spend paths share it: the callback route and the in-process sync's spend-log poll.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use stratai_core::budget::BudgetAlert;
use stratai_core::ids::RequestId;
use stratai_core::usage::UsageRecord;

use super::{Imported, PollReport, SpendError, SpendEvent, SpendImporter, SpendStats};
use crate::Secret;
use crate::sync::{DriftKind, DriftReport, TickReport};

/// Where the desk sends what a fresh direct import calls for (the server: its alert sink).
pub trait SpendAlerts: Send + Sync + std::fmt::Debug {
    /// Budget threshold alerts a direct charge fired.
    fn budget_alerts(&self, alerts: &[BudgetAlert]);
    /// A call made with a member's key outside StratAI was recorded (`usage.outside_stratai`).
    fn outside_stratai(&self, record: &UsageRecord);
}

/// How many of a reconcile's differences the status lists.
pub const LISTED_DRIFTS: usize = 50;

/// The importer with what its outcomes trigger: budget and "spend outside StratAI" alerts and
/// the `stratai_litellm_spend_*` metrics; and the latest reconcile of the proxy.
#[derive(Debug)]
pub struct SpendDesk {
    importer: Arc<SpendImporter>,
    alerts: Arc<dyn SpendAlerts>,
    secret: Option<Secret>,
    reconcile: Mutex<Option<ReconcileView>>,
}

impl SpendDesk {
    /// A desk over `importer`, alerting through `alerts`; the callback accepts `secret`
    /// (none: the callback is not served).
    #[must_use]
    pub fn new(
        importer: Arc<SpendImporter>,
        alerts: Arc<dyn SpendAlerts>,
        secret: Option<Secret>,
    ) -> Self {
        Self {
            importer,
            alerts,
            secret,
            reconcile: Mutex::new(None),
        }
    }

    /// The secret LiteLLM's callback must present, if the callback is served.
    #[must_use]
    pub fn callback_secret(&self) -> Option<&Secret> {
        self.secret.as_ref()
    }

    /// Records a directory reconcile of the proxy: the `stratai_litellm_drift{kind}` gauges
    /// (every kind, 0 when none), the repairs counter, and the view the status shows.
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
            .unwrap_or_else(PoisonError::into_inner) = Some(view);
    }

    /// Records a reconcile that failed (the proxy unreachable, a store error): the previous
    /// run's counts stay, with the error.
    pub fn reconcile_failed(&self, error: &str, at: DateTime<Utc>) {
        metrics::counter!("stratai_litellm_reconcile_failures_total").increment(1);
        let mut slot = self
            .reconcile
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
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
            .unwrap_or_else(PoisonError::into_inner)
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
                self.alerts.budget_alerts(alerts);
                self.alerts.outside_stratai(record);
                "direct"
            }
            Imported::Direct { fresh: false, .. } | Imported::Repeat => "repeat",
            Imported::Pending => "pending",
            Imported::Ignored(_) => "ignored",
        };
        metrics::counter!("stratai_litellm_spend_events_total", "outcome" => label).increment(1);
    }

    /// Tells the desk what one [`SyncRunner`](crate::sync::SyncRunner) tick did, so the
    /// status, the drift and spend metrics and the alerts follow the in-process sync as they
    /// follow the callback: its reconcile (or the reconcile's failure, the previous counts
    /// kept) and every outcome of its spend-log poll. Steps that were not due and a failed
    /// poll change nothing here (the tick's [`TickReport::log`] says why a poll failed).
    pub fn observe_tick(&self, tick: &TickReport) {
        match &tick.reconcile {
            Some((at, Ok(report))) => self.observe_reconcile(report, *at),
            Some((at, Err(e))) => self.reconcile_failed(&e.to_string(), *at),
            None => {}
        }
        if let Some(Ok(poll)) = &tick.spend {
            for outcome in &poll.outcomes {
                self.observe(outcome);
            }
        }
    }

    /// Imports one callback delivery at `now`, event by event (each observed), and tallies
    /// it. The first failed import stops the delivery (LiteLLM drops it; the poll imports its
    /// calls later).
    pub async fn import_delivery(
        &self,
        events: &[SpendEvent],
        now: DateTime<Utc>,
    ) -> Result<CallbackOutcome, SpendError> {
        let mut out = CallbackOutcome {
            received: events.len(),
            ..CallbackOutcome::default()
        };
        for event in events {
            let outcome = self.importer.import(event, now).await?;
            self.observe(&outcome);
            out.count(&outcome);
        }
        Ok(out)
    }

    /// The importer's counters since start and the latest reconcile.
    #[must_use]
    pub fn status(&self) -> SpendStatus {
        let mut status: SpendStatus = self.importer.stats().into();
        status.last_reconcile = self.last_reconcile();
        status
    }
}

/// What one callback delivery did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

impl CallbackOutcome {
    /// Counts one import's outcome (`received` is the caller's).
    pub fn count(&mut self, outcome: &Imported) {
        match outcome {
            Imported::Gateway { .. } => self.gateway += 1,
            Imported::Direct {
                record,
                fresh: true,
                ..
            } => {
                self.recorded += 1;
                self.recorded_ids.push(record.request_id);
            }
            Imported::Direct { fresh: false, .. } | Imported::Repeat => self.repeated += 1,
            Imported::Pending => self.pending += 1,
            Imported::Ignored(_) => self.ignored += 1,
        }
    }
}

/// A call whose usage record and LiteLLM's report differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MismatchView {
    /// LiteLLM's request id.
    pub litellm_request_id: String,
    /// StratAI's request id.
    pub request_id: RequestId,
    /// StratAI's provider cost, when the costs differ.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub stratai_cost: Option<Decimal>,
    /// LiteLLM's spend, when the costs differ.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub litellm_cost: Option<Decimal>,
    /// StratAI's `[prompt, completion]` tokens, when the tokens differ.
    pub stratai_tokens: Option<[u32; 2]>,
    /// LiteLLM's `[prompt, completion]` tokens, when the tokens differ.
    pub litellm_tokens: Option<[u32; 2]>,
}

/// One difference between StratAI and the proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    pub last_poll: Option<PollReport>,
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
            last_poll: s.last_poll,
            last_reconcile: None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use stratai_core::OrgId;
    use stratai_store::Stores;

    use super::*;
    use crate::spend::{IgnoredBecause, SpendSettings};
    use crate::sync::runner::SpendPoll;
    use crate::sync::{Drift, SyncError};
    use stratai_core::ids::UserId;

    #[derive(Debug, Default)]
    struct Recorded(Mutex<usize>);

    impl SpendAlerts for Recorded {
        fn budget_alerts(&self, _: &[BudgetAlert]) {}
        fn outside_stratai(&self, _: &UsageRecord) {
            *self.0.lock().unwrap() += 1;
        }
    }

    fn desk() -> SpendDesk {
        let s = Stores::memory();
        let importer = SpendImporter::new(
            s.directory,
            s.tiers,
            s.budgets,
            s.usage,
            SpendSettings::default(),
        );
        SpendDesk::new(Arc::new(importer), Arc::new(Recorded::default()), None)
    }

    #[test]
    fn a_delivery_is_tallied_by_outcome() {
        let mut out = CallbackOutcome::default();
        out.count(&Imported::Pending);
        out.count(&Imported::Repeat);
        out.count(&Imported::Ignored(IgnoredBecause::Failed));
        out.count(&Imported::Gateway {
            request_id: RequestId::new(),
            mismatch: None,
        });
        assert_eq!(
            (
                out.pending,
                out.repeated,
                out.ignored,
                out.gateway,
                out.recorded
            ),
            (1, 1, 1, 1, 0)
        );
    }

    #[test]
    fn a_failed_reconcile_keeps_the_previous_counts_with_the_error() {
        let desk = desk();
        assert!(desk.callback_secret().is_none());
        assert_eq!(desk.status().last_reconcile, None);
        let at = Utc::now();
        let report = DriftReport {
            orgs: 2,
            drifts: (0..60)
                .map(|i| Drift {
                    org_id: OrgId::new(),
                    kind: DriftKind::ALL[0],
                    subject: format!("key-{i}"),
                    detail: "found vs wanted".to_owned(),
                })
                .collect(),
            repaired: 60,
            ..DriftReport::default()
        };
        desk.observe_reconcile(&report, at);
        let view = desk.last_reconcile().unwrap();
        assert_eq!(view.listed.len(), LISTED_DRIFTS);
        assert_eq!(view.drifts[DriftKind::ALL[0].as_str()], 60);
        desk.reconcile_failed("proxy unreachable", at);
        let view = desk.status().last_reconcile.unwrap();
        assert_eq!((view.orgs, view.repaired), (2, 60));
        assert_eq!(view.error.as_deref(), Some("proxy unreachable"));
    }

    #[test]
    fn a_tick_tells_its_reconcile_and_its_poll_outcomes() {
        let desk = desk();
        let at = Utc::now();
        let quiet = |reconcile, spend| TickReport {
            guardrails: None,
            pass: Ok(crate::sync::PassReport::default()),
            reconcile,
            rotation: None,
            spend,
        };
        // Nothing due: nothing changes.
        desk.observe_tick(&quiet(None, None));
        assert_eq!(desk.last_reconcile(), None);
        let report = DriftReport {
            orgs: 3,
            ..DriftReport::default()
        };
        desk.observe_tick(&quiet(Some((at, Ok(report))), None));
        assert_eq!(desk.last_reconcile().unwrap().orgs, 3);
        let failed = SyncError::Mapping("inconsistent".to_owned());
        desk.observe_tick(&quiet(Some((at, Err(failed))), None));
        let view = desk.last_reconcile().unwrap();
        assert_eq!(view.orgs, 3);
        assert_eq!(view.error.as_deref(), Some("mapping: inconsistent"));
        // A fresh direct call of the poll fires the "outside StratAI" alert.
        let alerts = Arc::new(Recorded::default());
        let desk = SpendDesk::new(desk.importer().clone(), alerts.clone(), None);
        let poll = SpendPoll {
            report: PollReport::default(),
            outcomes: vec![
                Imported::Pending,
                Imported::Direct {
                    record: stratai_testkit::usage::usage_record(OrgId::new(), UserId::new())
                        .build(),
                    alerts: Vec::new(),
                    fresh: true,
                },
            ],
        };
        desk.observe_tick(&quiet(None, Some(Ok(poll))));
        assert_eq!(*alerts.0.lock().unwrap(), 1);
    }
}
