#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Laws of the one decision, on random policies, budgets, prior spend and requests over the
//! memory store: what `explain_request` answers is what admission does (outcome, reasons,
//! refusal), and a hard budget is never charged beyond its limit, even when the provider bills
//! more than the reserved worst case (the rest is the usage record's overage).

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use proptest::sample::select;
use rust_decimal::Decimal;
use serde_json::json;
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope, BudgetState};
use stratai_core::directory::{
    BillingPlan, Email, Group, GroupMembership, GroupRole, Membership, OrgRole, OrgSettings,
    Organization, PlatformRole, Slug, User, attribution_group,
};
use stratai_core::gateway::{ChatChoice, ChatMessage, ChatRequest, ChatResponse, TokenUsage};
use stratai_core::ports::{
    BudgetLedger, DirectoryStore, RuleAction, RuleRecord, RuleScope, TierStore, UsageStore,
};
use stratai_core::tiers::{BASIC_TIER_ID, STANDARD_TIER_ID, TierSubscription, default_tiers};
use stratai_core::usage::{UsageRecord, UsageStatus};
use stratai_core::{ModelId, Money, RequestId, RuleId, TierSlug};
use stratai_guardrails::{
    Caller, Gatekeeper, GatekeeperConfig, Guardrails, KnownScopes, Outcome, Policy, Principal,
};
use stratai_store::MemoryStore;

/// Models of the seed catalog (Basic, Standard, Premium) and one of none.
const MODELS: [&str; 4] = ["gpt-4o-mini", "gpt-4o", "claude-opus-4-5-20251101", "gpt-7"];
const WORDS: [&str; 6] = ["hello", "globex", "plan", "a", "été", "sk-abc123"];

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 18, 10, 0, 0).unwrap()
}

fn micros(n: u32) -> Money {
    Money::new(Decimal::new(i64::from(n), 6)).unwrap()
}

/// Where a rule or budget applies: 0 org, 1 user, 2 group, 3 the Basic tier, 4 Standard.
type Where = u8;

#[derive(Clone, Debug)]
struct Case {
    rules: Vec<(&'static str, serde_json::Value, RuleAction, Where)>,
    /// Scope, limit, hard, prior spend (micro-dollars).
    budgets: Vec<(Where, u32, bool, u32)>,
    /// The member's spend earlier today on a Basic model (what budget limit rules count:
    /// settled against the ledger budgets of the rules that applied to it).
    prior_usage: u32,
    in_group: bool,
    model: &'static str,
    prompt: Vec<&'static str>,
    max_tokens: Option<u32>,
    /// What the provider reports, as multiples of the prompt's words and of max_tokens:
    /// beyond the bound when large.
    billed_tokens: (u32, u32),
}

fn arb_rule() -> impl Strategy<Value = (&'static str, serde_json::Value, RuleAction, Where)> {
    let wherever = 0u8..5;
    let bwl = select(vec![RuleAction::Block, RuleAction::Warn, RuleAction::Log]);
    prop_oneof![
        (
            1u32..600,
            select(vec!["day", "week", "month"]),
            bwl.clone(),
            wherever.clone()
        )
            .prop_map(|(amount, p, a, w)| (
                "budget_limit",
                json!({"amount": micros(amount).to_string().trim_start_matches('$'), "period": p}),
                a,
                w
            )),
        (
            select(vec!["globex", "plan"]),
            bwl.clone(),
            wherever.clone()
        )
            .prop_map(|(t, a, w)| ("content_filter", json!({"blocked_topics": [t]}), a, w)),
        (1u32..400, bwl.clone(), wherever.clone()).prop_map(|(o, a, w)| (
            "token_limit",
            json!({"max_output": o}),
            a,
            w
        )),
        (1u32..400, wherever.clone()).prop_map(|(o, w)| (
            "token_limit",
            json!({"max_output": o}),
            RuleAction::Modify,
            w
        )),
        (select(MODELS.to_vec()), bwl, wherever.clone()).prop_map(|(m, a, w)| (
            "model_denylist",
            json!({"models": [m]}),
            a,
            w
        )),
        (
            select(vec!["be brief", "answer in French, with many words"]),
            wherever
        )
            .prop_map(|(n, w)| (
                "output_modifier",
                json!({"format_note": n}),
                RuleAction::Modify,
                w
            )),
    ]
}

fn arb_case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(arb_rule(), 0..4),
        proptest::collection::vec((0u8..5, 1u32..800, any::<bool>(), 0u32..600), 0..4),
        0u32..600,
        any::<bool>(),
        select(MODELS.to_vec()),
        proptest::collection::vec(select(WORDS.to_vec()), 1..30),
        proptest::option::of(1u32..300),
        (1u32..6, 1u32..3),
    )
        .prop_map(
            |(rules, budgets, prior_usage, in_group, model, prompt, max_tokens, billed_tokens)| {
                Case {
                    rules,
                    budgets,
                    prior_usage,
                    in_group,
                    model,
                    prompt,
                    max_tokens,
                    billed_tokens,
                }
            },
        )
}

struct World {
    store: Arc<MemoryStore>,
    gate: Gatekeeper,
    caller: Caller,
    budgets: Vec<Budget>,
    /// The ledger budgets of the budget limit rules, with the spend settled on them before.
    rule_budgets: Vec<(Budget, Money)>,
}

async fn world(case: &Case) -> World {
    let store = Arc::new(MemoryStore::new());
    let at = now();
    for tier in default_tiers() {
        store.upsert_tier(&tier).await.unwrap();
    }
    let basic = TierSlug::new("basic").unwrap();
    let standard = TierSlug::new("standard").unwrap();
    let org = Organization::new(
        "Acme",
        Slug::new("acme-laws").unwrap(),
        OrgSettings::new(vec![basic, standard.clone()], standard).unwrap(),
        BillingPlan::Business,
        at,
    )
    .unwrap();
    store.create_org(&org).await.unwrap();
    for tier in [BASIC_TIER_ID, STANDARD_TIER_ID] {
        let sub = TierSubscription {
            org_id: org.id,
            tier_id: tier,
            enabled: true,
            monthly_budget: None,
            enabled_at: at,
        };
        store.put_subscription(org.id, &sub).await.unwrap();
    }
    let user = User::new(
        Email::new("ann@acme.test").unwrap(),
        None,
        PlatformRole::User,
        at,
    )
    .unwrap();
    store.create_user(&user).await.unwrap();
    store
        .add_member(
            org.id,
            &Membership::new(org.id, user.id, OrgRole::Member, at),
        )
        .await
        .unwrap();
    let group = Group::new(org.id, "Marketing", at).unwrap();
    store.create_group(org.id, &group).await.unwrap();
    if case.in_group {
        let gm = GroupMembership::new(org.id, group.id, user.id, GroupRole::Member, at);
        store.put_group_member(org.id, &gm).await.unwrap();
    }
    let rule_scope = |w: Where| match w {
        0 => RuleScope::Org { org_id: org.id },
        1 => RuleScope::User {
            org_id: org.id,
            user_id: user.id,
        },
        2 => RuleScope::Group {
            org_id: org.id,
            group_id: group.id,
        },
        3 => RuleScope::Tier {
            org_id: Some(org.id),
            tier_id: BASIC_TIER_ID,
        },
        _ => RuleScope::Tier {
            org_id: Some(org.id),
            tier_id: STANDARD_TIER_ID,
        },
    };
    let budget_scope = |w: Where| match w {
        0 => BudgetScope::Org,
        1 => BudgetScope::User(user.id),
        2 => BudgetScope::Group(group.id),
        3 => BudgetScope::Tier(BASIC_TIER_ID),
        _ => BudgetScope::Tier(STANDARD_TIER_ID),
    };
    let records: Vec<RuleRecord> = case
        .rules
        .iter()
        .enumerate()
        .map(|(i, (kind, config, action, w))| RuleRecord {
            id: RuleId::new(),
            name: format!("rule {i}"),
            description: None,
            rule_type: (*kind).to_owned(),
            config: config.clone(),
            scope: rule_scope(*w),
            action: *action,
            priority: 0,
            active: true,
            created_at: at,
        })
        .collect();
    let mut known = KnownScopes::new();
    known
        .add_org(org.id)
        .add_member(org.id, user.id)
        .add_group(org.id, group.id)
        .add_tier(BASIC_TIER_ID)
        .add_tier(STANDARD_TIER_ID);
    let guardrails = Arc::new(Guardrails::new(Policy::empty()));
    guardrails.reload(&records, &known).unwrap();
    // The member's earlier request counted on the ledger budgets of the rules that applied
    // to it (as admission reserves and settles them).
    let policy = guardrails.policy();
    let principal = Principal {
        org_id: org.id,
        user_id: user.id,
        groups: if case.in_group {
            vec![group.id]
        } else {
            Vec::new()
        },
    };
    let earlier = policy.rule_budgets(&principal, Some(BASIC_TIER_ID));
    let mut rule_budgets = Vec::new();
    for r in policy.rule_budgets_of_org(org.id) {
        store.create_budget(org.id, &r.budget).await.unwrap();
        let prior = if earlier.contains(&r) {
            micros(case.prior_usage)
        } else {
            Money::ZERO
        };
        rule_budgets.push((r.budget, prior));
    }
    if case.prior_usage > 0 && !earlier.is_empty() {
        let ids: Vec<_> = earlier.iter().map(|r| r.budget.id).collect();
        store
            .settle(
                org.id,
                RequestId::new(),
                &ids,
                micros(case.prior_usage),
                at - chrono::Duration::minutes(5),
            )
            .await
            .unwrap();
    }
    let mut budgets = Vec::new();
    for (w, limit, hard, prior) in &case.budgets {
        let b = Budget::new(
            org.id,
            budget_scope(*w),
            micros(*limit),
            BudgetPeriod::Monthly,
            *hard,
            Decimal::new(8, 1),
            at,
        )
        .unwrap();
        store.create_budget(org.id, &b).await.unwrap();
        if *prior > 0 {
            store
                .settle(org.id, RequestId::new(), &[b.id], micros(*prior), at)
                .await
                .unwrap();
        }
        budgets.push(b);
    }
    if case.prior_usage > 0 {
        let record = UsageRecord {
            request_id: RequestId::new(),
            org_id: org.id,
            group_id: case.in_group.then_some(group.id),
            user_id: user.id,
            tier_id: Some(BASIC_TIER_ID),
            model: ModelId::new("gpt-4o-mini").unwrap(),
            input_tokens: 10,
            output_tokens: 10,
            provider_cost: micros(case.prior_usage),
            billed_amount: micros(case.prior_usage),
            overage: Money::ZERO,
            litellm_request_id: None,
            conversation_id: None,
            endpoint: "chat".to_owned(),
            status: UsageStatus::Success,
            created_at: at - chrono::Duration::minutes(5),
            lease_id: None,
        };
        store.append(org.id, &[record]).await.unwrap();
    }
    let gate = Gatekeeper::new(
        store.clone(),
        store.clone(),
        store.clone(),
        store.clone(),
        guardrails,
        GatekeeperConfig::default(),
    );
    World {
        store,
        gate,
        caller: Caller {
            org_id: org.id,
            user_id: user.id,
            group_id: None,
            conversation_id: None,
            endpoint: "chat".to_owned(),
        },
        budgets,
        rule_budgets,
    }
}

fn request(case: &Case) -> ChatRequest {
    ChatRequest {
        model: case.model.to_owned(),
        messages: vec![ChatMessage {
            role: "user".to_owned(),
            content: case.prompt.join(" "),
        }],
        max_tokens: case.max_tokens,
        temperature: None,
        stream: false,
        user: None,
    }
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Allow => "allow",
        Outcome::Warn => "warn",
        Outcome::Deny => "deny",
    }
}

async fn law(case: Case) -> Result<(), TestCaseError> {
    let w = world(&case).await;
    let ask = request(&case);
    let snapshot = w
        .gate
        .load_snapshot(w.caller.org_id, w.caller.user_id)
        .await
        .unwrap();
    let explained = w
        .gate
        .explain_request(&w.caller, &snapshot, &snapshot.budgets, &ask, now())
        .await
        .unwrap();
    // The explain endpoint's budget views name a rule's budget by its rule.
    let states: Vec<BudgetState> = explained
        .rule_budgets
        .iter()
        .map(|r| BudgetState {
            budget: r.budget.clone(),
            period_start: now(),
            period_end: now(),
            spent: Money::ZERO,
            reserved: Money::ZERO,
            alert_sent: false,
        })
        .collect();
    let views = explained.budget_views(states, &snapshot.groups);
    prop_assert_eq!(views.len(), explained.rule_budgets.len());
    for (v, r) in views.iter().zip(&explained.rule_budgets) {
        prop_assert_eq!(&v.scope_name, &format!("rule '{}'", r.name));
        prop_assert_eq!(v.remaining, r.budget.limit);
    }
    let admitted = w
        .gate
        .admit_planned(&w.caller, &snapshot, &snapshot.budgets, &ask, now())
        .await;
    let admission = match admitted {
        Err(plan) => {
            prop_assert_eq!(outcome_name(explained.outcome), "deny");
            prop_assert_eq!(&explained.reasons, &plan.reasons);
            prop_assert_eq!(&explained.hint, &plan.hint);
            let (e, a) = (explained.refusal.unwrap(), plan.refusal.unwrap());
            prop_assert_eq!(e.code(), a.code());
            prop_assert_eq!(e.to_string(), a.to_string());
            return Ok(());
        }
        Ok(admission) => admission,
    };
    prop_assert!(
        explained.refusal.is_none(),
        "explain refused: {:?}",
        explained.reasons
    );
    prop_assert_eq!(
        outcome_name(explained.outcome),
        outcome_name(admission.outcome())
    );
    prop_assert_eq!(&explained.reasons[..], admission.reasons());
    prop_assert_eq!(&explained.warnings[..], admission.warnings());
    prop_assert_eq!(explained.worst_case, admission.reserved());
    prop_assert_eq!(&explained.request, admission.request());
    // Every budget limit rule that applies is reserved on, as its ledger budget.
    for r in &explained.rule_budgets {
        prop_assert!(admission.budgets().contains(&r.budget.id), "{:?}", r);
    }
    // The usage goes to the one attribution group.
    prop_assert_eq!(
        explained.group_id,
        attribution_group(snapshot.groups.iter().map(|g| g.id))
    );

    // Settlement: the provider may bill beyond the bound; the budgets are charged at most
    // the reservation, the rest is the record's overage.
    let sent = admission.request().clone();
    let prompt = u32::try_from(case.prompt.len()).unwrap() * case.billed_tokens.0 * 20;
    let completion = sent.max_tokens.unwrap_or(1) * case.billed_tokens.1;
    let reserved = admission.reserved();
    let done = admission
        .complete(answer(&sent.model, prompt, completion), now())
        .await
        .unwrap();
    let record = &done.usage;
    prop_assert_eq!(
        record.overage,
        record.billed_amount.saturating_sub(reserved)
    );
    let ids: Vec<_> = w.budgets.iter().map(|b| b.id).collect();
    let states = w.store.states(w.caller.org_id, &ids, now()).await.unwrap();
    for (s, (_, _, _, prior)) in states.iter().zip(&case.budgets) {
        prop_assert_eq!(s.reserved, Money::ZERO);
        if s.budget.hard_limit && micros(*prior) <= s.budget.limit {
            prop_assert!(s.spent <= s.budget.limit, "{:?}", s);
        }
    }
    prop_assert_eq!(record.group_id, explained.group_id);
    // A blocking budget limit rule is a hard budget: never charged beyond its cap.
    let ids: Vec<_> = w.rule_budgets.iter().map(|(b, _)| b.id).collect();
    let states = w.store.states(w.caller.org_id, &ids, now()).await.unwrap();
    for (s, (_, prior)) in states.iter().zip(&w.rule_budgets) {
        prop_assert_eq!(s.reserved, Money::ZERO);
        if s.budget.hard_limit && *prior <= s.budget.limit {
            prop_assert!(s.spent <= s.budget.limit, "{:?}", s);
        }
    }
    Ok(())
}

fn answer(model: &str, prompt: u32, completion: u32) -> ChatResponse {
    ChatResponse {
        id: "chatcmpl-1".into(),
        object: "chat.completion".into(),
        created: 0,
        model: model.into(),
        choices: vec![ChatChoice {
            index: 0,
            message: ChatMessage {
                role: "assistant".into(),
                content: "fine".into(),
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Explain answers what admission does, and settlement never passes a hard limit.
    #[test]
    fn explain_is_admission_and_hard_limits_hold(case in arb_case()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(law(case))?;
    }
}
