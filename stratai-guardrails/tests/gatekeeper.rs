#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The gatekeeper's lifecycle over core's ports, with core's mockall mocks: what it calls, in
//! which order, with which amounts, and what it refuses without touching budgets.

mod common;

use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use common::{at, record};
use rust_decimal_macros::dec;
use serde_json::json;
use stratai_core::budget::{Budget, BudgetPeriod, BudgetRefusal, BudgetScope};
use stratai_core::directory::{
    BillingPlan, Group, GroupRole, Membership, OrgRole, OrgSettings, Organization, Slug,
};
use stratai_core::gateway::{ChatChoice, ChatMessage, ChatRequest, ChatResponse, TokenUsage};
use stratai_core::ports::{
    AppendOutcome, MockBudgetLedger, MockDirectoryStore, MockTierStore, MockUsageStore,
    ReserveOutcome, RuleAction, RuleScope, SettleOutcome,
};
use stratai_core::tiers::{BASIC_TIER_ID, STANDARD_TIER_ID, default_tiers, subscriptions_for};
use stratai_core::usage::{UsageRecord, UsageStatus};
use stratai_core::{BudgetId, GroupId, Money, OrgId, StoreError, TierSlug, UserId};
use stratai_guardrails::{
    Caller, Gatekeeper, GatekeeperConfig, Guardrails, KnownScopes, Outcome, Policy, Refusal,
};

const NOW: &str = "2026-11-27T10:00:00Z";

struct Fixture {
    org: OrgId,
    user: UserId,
    group: GroupId,
    budget: BudgetId,
}

impl Fixture {
    fn new() -> Self {
        Fixture {
            org: OrgId::new(),
            user: UserId::new(),
            group: GroupId::new(),
            budget: BudgetId::new(),
        }
    }

    fn organization(&self) -> Organization {
        Organization {
            id: self.org,
            name: "Second Co".into(),
            slug: Slug::new("second-co").unwrap(),
            settings: OrgSettings {
                allowed_tiers: vec![
                    TierSlug::new("basic").unwrap(),
                    TierSlug::new("standard").unwrap(),
                ],
                default_tier: TierSlug::new("standard").unwrap(),
                max_users_per_group: 50,
                require_mfa: false,
                timezone: None,
                signup_domains: Vec::new(),
            },
            billing_email: None,
            billing_plan: BillingPlan::Business,
            active: true,
            litellm_org_id: None,
            created_at: at(NOW),
            updated_at: at(NOW),
        }
    }

    fn directory(&self) -> MockDirectoryStore {
        let mut d = MockDirectoryStore::new();
        let org = self.organization();
        d.expect_get_org().returning(move |_| Ok(org.clone()));
        let (org_id, user_id, group_id) = (self.org, self.user, self.group);
        d.expect_get_member().returning(move |_, _| {
            Ok(Membership {
                org_id,
                user_id,
                role: OrgRole::Member,
                allowed_tiers: None,
                monthly_budget: None,
                profile_id: None,
                litellm_key_id: None,
                joined_at: at(NOW),
            })
        });
        d.expect_groups_of_member().returning(move |_, _| {
            Ok(vec![(
                Group {
                    id: group_id,
                    org_id,
                    name: "Engineering".into(),
                    description: None,
                    allowed_tiers: None,
                    monthly_budget: None,
                    created_at: at(NOW),
                    updated_at: at(NOW),
                },
                GroupRole::Member,
            )])
        });
        d
    }

    fn tiers(&self) -> MockTierStore {
        let mut t = MockTierStore::new();
        t.expect_list_tiers().returning(|| Ok(default_tiers()));
        let org = self.org;
        t.expect_list_subscriptions().returning(move |_| {
            Ok(subscriptions_for(
                org,
                &[BASIC_TIER_ID, STANDARD_TIER_ID],
                at(NOW),
            ))
        });
        t
    }

    fn budget(&self) -> Budget {
        Budget {
            id: self.budget,
            org_id: self.org,
            scope: BudgetScope::Org,
            limit: Money::dollars(100),
            period: BudgetPeriod::Monthly,
            hard_limit: true,
            alert_threshold: dec!(0.8),
            created_at: at(NOW),
            updated_at: at(NOW),
        }
    }

    fn guardrails(&self) -> Arc<Guardrails> {
        let records = vec![
            record(
                1,
                "no competitor talk",
                "content_filter",
                json!({"blocked_topics": ["acme"]}),
                RuleScope::Org { org_id: self.org },
                RuleAction::Block,
            ),
            record(
                2,
                "short answers",
                "token_limit",
                json!({"max_output": 500}),
                RuleScope::Org { org_id: self.org },
                RuleAction::Modify,
            ),
            record(
                3,
                "disclaimer",
                "output_modifier",
                json!({"append": "AI-generated."}),
                RuleScope::Org { org_id: self.org },
                RuleAction::Modify,
            ),
            record(
                4,
                "secrets",
                "content_filter",
                json!({"blocked_patterns": ["sk-[a-z0-9]{6,20}"]}),
                RuleScope::Group {
                    org_id: self.org,
                    group_id: self.group,
                },
                RuleAction::Modify,
            ),
        ];
        let mut known = KnownScopes::new();
        known
            .add_org(self.org)
            .add_group(self.org, self.group)
            .add_tier(BASIC_TIER_ID)
            .add_tier(STANDARD_TIER_ID);
        Arc::new(Guardrails::new(
            Policy::compile(&records, &known, 1).unwrap(),
        ))
    }

    fn caller(&self) -> Caller {
        Caller {
            org_id: self.org,
            user_id: self.user,
            group_id: None,
            conversation_id: None,
            endpoint: "chat".into(),
        }
    }

    fn gate(&self, ledger: MockBudgetLedger, usage: MockUsageStore) -> Gatekeeper {
        Gatekeeper::new(
            Arc::new(self.directory()),
            Arc::new(self.tiers()),
            Arc::new(ledger),
            Arc::new(usage),
            self.guardrails(),
            GatekeeperConfig::default(),
        )
    }
}

fn chat(model: &str, text: &str, max_tokens: Option<u32>) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        messages: vec![ChatMessage {
            role: "user".into(),
            content: text.into(),
        }],
        max_tokens,
        temperature: None,
        stream: false,
        user: None,
    }
}

fn answer(text: &str, prompt: u32, completion: u32) -> ChatResponse {
    ChatResponse {
        id: "chatcmpl-1".into(),
        object: "chat.completion".into(),
        created: 0,
        model: "gpt-4o".into(),
        choices: vec![ChatChoice {
            index: 0,
            message: ChatMessage {
                role: "assistant".into(),
                content: text.into(),
            },
            finish_reason: Some("stop".into()),
        }],
        usage: TokenUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
        },
    }
}

fn recording_usage() -> (MockUsageStore, Arc<Mutex<Vec<UsageRecord>>>) {
    let written = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&written);
    let mut usage = MockUsageStore::new();
    usage.expect_append().times(1).returning(move |_, records| {
        sink.lock().unwrap().extend_from_slice(records);
        Ok(AppendOutcome {
            inserted: records.len() as u64,
            duplicates: 0,
        })
    });
    (usage, written)
}

#[tokio::test]
async fn admits_reserves_worst_case_then_filters_settles_and_records() {
    let f = Fixture::new();
    let now: DateTime<Utc> = at(NOW);
    let mut ledger = MockBudgetLedger::new();
    let budget = f.budget();
    ledger
        .expect_list_budgets()
        .returning(move |_| Ok(vec![budget.clone()]));
    let reserved = Arc::new(Mutex::new(None));
    let seen = Arc::clone(&reserved);
    let budget_id = f.budget;
    ledger.expect_reserve().times(1).returning(move |_, req| {
        assert_eq!(req.budgets, vec![budget_id]);
        *seen.lock().unwrap() = Some(req.amount);
        Ok(ReserveOutcome::Reserved(vec![]))
    });
    let reserved_then = Arc::clone(&reserved);
    ledger
        .expect_settle()
        .times(1)
        // The provider bills more than the bound reserved (300 prompt tokens for a prompt of
        // 38 bytes): the budget is charged the reservation, not more.
        .withf(move |_, _, budgets, actual, _| {
            budgets == [budget_id] && Some(*actual) == *reserved_then.lock().unwrap()
        })
        .returning(|_, _, _, _, _| {
            Ok(SettleOutcome {
                applied: true,
                alerts: vec![],
            })
        });
    let (usage, written) = recording_usage();
    let gate = f.gate(ledger, usage);

    let admission = gate
        .admit(
            &f.caller(),
            &chat(
                "gpt-4o",
                "my token is sk-abcdef123 please rotate",
                Some(4000),
            ),
            now,
        )
        .await
        .unwrap();
    // Clamped by the org's modify rule, redacted by the group's, before the call.
    assert_eq!(admission.request().max_tokens, Some(500));
    assert_eq!(
        admission.request().messages[0].content,
        "my token is [redacted] please rotate"
    );
    assert_eq!(admission.grant().tier_id, STANDARD_TIER_ID);
    // Worst case at the Standard rates ($4 in / $16 out per 1M): the reservation covers the
    // clamped request (the prompt's bound + 500 output tokens).
    let amount = reserved.lock().unwrap().unwrap();
    assert!(
        amount >= Money::parse("0.008").unwrap() && amount <= Money::parse("0.0085").unwrap(),
        "{amount}"
    );

    // 300 in, 500 out at $4/$16 per 1M = 0.0012 + 0.008 = 0.0092.
    let done = admission
        .complete(answer("Rotated.", 300, 500), now)
        .await
        .unwrap();
    assert_eq!(done.decision.outcome, Outcome::Allow);
    assert_eq!(
        done.response.unwrap().choices[0].message.content,
        "Rotated.\n\nAI-generated."
    );
    let records = written.lock().unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        (r.org_id, r.user_id, r.group_id),
        (f.org, f.user, Some(f.group))
    );
    assert_eq!(
        (r.input_tokens, r.output_tokens, r.status),
        (300, 500, UsageStatus::Success)
    );
    assert_eq!(r.billed_amount, Money::parse("0.0092").unwrap());
    // What the budget was not charged is the record's overage.
    assert_eq!(
        r.overage,
        Money::parse("0.0092").unwrap().saturating_sub(amount)
    );
    assert!(r.overage > Money::ZERO);
    assert_eq!(done.usage.overage, r.overage);
    assert_eq!(r.litellm_request_id.as_deref(), Some("chatcmpl-1"));
    assert_eq!(r.tier_id, Some(STANDARD_TIER_ID));
}

#[tokio::test]
async fn refusals_before_the_ledger_touch_no_budget() {
    let f = Fixture::new();
    // The budget list is read with the member's snapshot; any other ledger or usage call
    // (a reservation, a record) would fail the test.
    let mut ledger = MockBudgetLedger::new();
    let budget = f.budget();
    ledger
        .expect_list_budgets()
        .returning(move |_| Ok(vec![budget.clone()]));
    let gate = f.gate(ledger, MockUsageStore::new());
    let now = at(NOW);

    let err = gate
        .admit(
            &f.caller(),
            &chat("claude-opus-4-5-20251101", "plan", None),
            now,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "model_not_allowed");
    let Refusal::Model(denial) = &err else {
        panic!("{err}")
    };
    assert_eq!(denial.hint().as_deref(), Some("Upgrade to Premium"));

    let err = gate
        .admit(
            &f.caller(),
            &chat("gpt-4o", "compare us with ACME", None),
            now,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "guardrail_blocked");
    assert_eq!(
        err.to_string(),
        "blocked by org rule 'no competitor talk': matched topic `acme`"
    );

    let err = gate
        .admit(&f.caller(), &chat("not a model", "hi", None), now)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "bad_request");
}

#[tokio::test]
async fn a_full_budget_refuses_with_what_is_left() {
    let f = Fixture::new();
    let mut ledger = MockBudgetLedger::new();
    let budget = f.budget();
    ledger
        .expect_list_budgets()
        .returning(move |_| Ok(vec![budget.clone()]));
    let budget_id = f.budget;
    ledger.expect_reserve().returning(move |_, req| {
        Ok(ReserveOutcome::Refused(BudgetRefusal {
            budget_id,
            scope: BudgetScope::Org,
            limit: Money::dollars(100),
            remaining: Money::parse("0.001").unwrap(),
            requested: req.amount,
        }))
    });
    // The refusal is explained by the budgets' states, read on this path only (here they
    // changed in between: the ledger's word stands).
    ledger
        .expect_states()
        .times(1)
        .returning(|_, _, _| Ok(vec![]));
    let gate = f.gate(ledger, MockUsageStore::new());
    let err = gate
        .admit(&f.caller(), &chat("gpt-4o", "hello", Some(100)), at(NOW))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "budget_exceeded");
    assert!(
        err.to_string()
            .starts_with("budget exceeded: $0.001 left of $100"),
        "{err}"
    );
}

#[tokio::test]
async fn abort_releases_and_records_a_failed_request() {
    let f = Fixture::new();
    let mut ledger = MockBudgetLedger::new();
    let budget = f.budget();
    ledger
        .expect_list_budgets()
        .returning(move |_| Ok(vec![budget.clone()]));
    ledger
        .expect_reserve()
        .times(1)
        .returning(|_, _| Ok(ReserveOutcome::Reserved(vec![])));
    ledger.expect_release().times(1).returning(|_, _| Ok(()));
    let (usage, written) = recording_usage();
    let gate = f.gate(ledger, usage);
    let admission = gate
        .admit(
            &f.caller(),
            &chat("gpt-4o-mini", "hello", Some(100)),
            at(NOW),
        )
        .await
        .unwrap();
    assert_eq!(admission.grant().tier_id, BASIC_TIER_ID);
    let record = admission.abort().await.unwrap();
    assert_eq!(record.status, UsageStatus::Failed);
    assert_eq!(record.billed_amount, Money::ZERO);
    assert_eq!(written.lock().unwrap().len(), 1);
}

/// A request to which no budget applies asks the ledger nothing: no reservation, no
/// (zero-amount) settlement, no release. The mock ledger answers only the budget list; any
/// other call fails the test.
#[tokio::test]
async fn a_request_without_a_budget_asks_the_ledger_nothing() {
    let f = Fixture::new();
    let mut ledger = MockBudgetLedger::new();
    ledger.expect_list_budgets().returning(|_| Ok(vec![]));
    let written = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&written);
    let mut usage = MockUsageStore::new();
    usage.expect_append().times(2).returning(move |_, records| {
        sink.lock().unwrap().extend_from_slice(records);
        Ok(AppendOutcome {
            inserted: records.len() as u64,
            duplicates: 0,
        })
    });
    let gate = f.gate(ledger, usage);
    let ask = chat("gpt-4o-mini", "hello", Some(100));
    let served = gate.admit(&f.caller(), &ask, at(NOW)).await.unwrap();
    assert!(served.budgets().is_empty());
    let done = served
        .complete(answer("Hello!", 9, 3), at(NOW))
        .await
        .unwrap();
    assert!(done.usage.billed_amount > Money::ZERO);
    assert!(done.alerts.is_empty());
    let failed = gate.admit(&f.caller(), &ask, at(NOW)).await.unwrap();
    let record = failed.abort().await.unwrap();
    assert_eq!(record.status, UsageStatus::Failed);
    assert_eq!(written.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn streams_are_filtered_then_settled() {
    let f = Fixture::new();
    let mut ledger = MockBudgetLedger::new();
    let budget = f.budget();
    ledger
        .expect_list_budgets()
        .returning(move |_| Ok(vec![budget.clone()]));
    ledger
        .expect_reserve()
        .times(1)
        .returning(|_, _| Ok(ReserveOutcome::Reserved(vec![])));
    ledger
        .expect_settle()
        .times(1)
        .returning(|_, _, _, _, _| Ok(SettleOutcome::default()));
    let (usage, written) = recording_usage();
    let gate = f.gate(ledger, usage);
    let now = at(NOW);
    let admission = gate
        .admit(&f.caller(), &chat("gpt-4o", "hello", Some(100)), now)
        .await
        .unwrap();
    let mut stream = admission.answer_stream(now);
    let mut out = String::new();
    for chunk in ["use sk-abc", "def99 now"] {
        out.push_str(&stream.push(chunk).text);
    }
    let end = stream.finish();
    out.push_str(&end.text);
    assert_eq!(out, "use [redacted] now\n\nAI-generated.");
    let usage = TokenUsage {
        prompt_tokens: 10,
        completion_tokens: 5,
        total_tokens: 15,
    };
    let done = admission
        .finish_stream(end, usage, Some("up-1".into()), false, now)
        .await
        .unwrap();
    assert_eq!(done.usage.status, UsageStatus::Partial);
    assert_eq!(written.lock().unwrap()[0].output_tokens, 5);
}

#[tokio::test]
async fn store_failures_refuse_the_request() {
    let f = Fixture::new();
    let mut directory = MockDirectoryStore::new();
    directory
        .expect_get_org()
        .returning(|_| Err(StoreError::Backend("connection refused".into())));
    let gate = Gatekeeper::new(
        Arc::new(directory),
        Arc::new(f.tiers()),
        Arc::new(MockBudgetLedger::new()),
        Arc::new(MockUsageStore::new()),
        f.guardrails(),
        GatekeeperConfig::default(),
    );
    let err = gate
        .admit(&f.caller(), &chat("gpt-4o", "hi", None), at(NOW))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unavailable");
}

#[tokio::test]
async fn a_kept_snapshot_admits_without_store_reads_and_a_fresh_budget_list_overrides_its_own() {
    let f = Fixture::new();
    let now = at(NOW);
    // The snapshot is loaded once (five reads); afterwards the directory and tier mocks would
    // answer too, so the test counts list_budgets and reserve calls on the ledger instead.
    let mut ledger = MockBudgetLedger::new();
    ledger
        .expect_list_budgets()
        .times(1)
        .returning(|_| Ok(vec![]));
    let reserved_against = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&reserved_against);
    ledger.expect_reserve().times(1).returning(move |_, req| {
        seen.lock().unwrap().push(req.budgets.clone());
        Ok(ReserveOutcome::Reserved(vec![]))
    });
    let gate = f.gate(ledger, MockUsageStore::new());
    let snapshot = gate.load_snapshot(f.org, f.user).await.unwrap();
    assert!(snapshot.budgets.is_empty());

    // The snapshot's own (empty) list: no reservation at all.
    let free = gate
        .admit_with(&f.caller(), &snapshot, &chat("gpt-4o", "hi", Some(50)), now)
        .await
        .unwrap();
    assert!(free.budgets().is_empty());

    // A budget created since: given apart, it is reserved against; the snapshot is untouched.
    let fresh = [f.budget()];
    let bound = gate
        .admit_with_budgets(
            &f.caller(),
            &snapshot,
            &fresh,
            &chat("gpt-4o", "hi", Some(50)),
            now,
        )
        .await
        .unwrap();
    assert_eq!(bound.budgets(), [f.budget]);
    assert_eq!(*reserved_against.lock().unwrap(), vec![vec![f.budget]]);
    assert!(snapshot.budgets.is_empty());

    // Someone else's snapshot is refused before anything is reserved.
    let mut stranger = f.caller();
    stranger.user_id = UserId::new();
    let err = gate
        .admit_with(&stranger, &snapshot, &chat("gpt-4o", "hi", Some(50)), now)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "bad_request");
}
