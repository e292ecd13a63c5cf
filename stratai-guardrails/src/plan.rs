//! The decision about one request, made once, by one pure function: [`Planner::decide`].
//!
//! ```text
//! load (the caller):  member snapshot, budget list, budget-limit rule spend, [budget states]
//! decide (here):      org active -> model access -> worst case -> pre guardrails with the
//!                     spend -> (rate-limit verdicts fetched in between) -> applicable budgets
//!                     -> [their verdicts and warnings]
//! reserve (the caller): the worst case against the applicable budgets, atomically
//! ```
//!
//! The [`Plan`] is the whole answer: outcome, every reason in order, the hint, the request as it
//! may go upstream, its worst-case cost and the budgets it is reserved against. Admission
//! ([`Gatekeeper::admit`](crate::Gatekeeper::admit)) and explanation
//! ([`Gatekeeper::explain_request`](crate::Gatekeeper::explain_request)) both come here, so they
//! cannot disagree; they differ only in what was loaded (admission leaves the budget verdict to
//! the ledger's atomic reservation, then judges the states it answers with the same
//! [`Plan::judge_budgets`]) and in whether rate-limit tokens are taken.
//!
//! # The worst case is a bound
//!
//! The reserved amount is at least what the request can be billed:
//! [`prompt_token_bound`] counts the prompt's UTF-8 bytes plus the chat format's framing (a
//! byte-level BPE token is never shorter than one byte), and the request goes upstream with
//! `max_tokens` set to [`output_token_bound`] (the asked `max_tokens` clamped to the model's
//! output cap, or the cap). Should a provider still bill more (a tokenizer outside the bound),
//! settlement charges the budgets only the reservation and records the rest as the usage
//! record's `overage`.

use chrono::{DateTime, Utc};
use smallvec::SmallVec;
use stratai_core::Money;
use stratai_core::budget::{
    Budget, BudgetOutcome, BudgetRefusal, BudgetScope, BudgetState, BudgetView, RequestScope,
    applicable_budgets, evaluate_budgets, is_rule_budget,
};
use stratai_core::directory::{Group, attribution_group};
use stratai_core::gateway::ChatRequest;
use stratai_core::ids::{BudgetId, GroupId, ModelId};
use stratai_core::ports::RuleAction;
use stratai_core::pricing::{
    PriceTable, output_token_bound, prompt_token_bound, reservation_estimate,
};
use stratai_core::tiers::{MemberContext, ModelGrant, ModelTier, check_model};

use crate::decision::{Decision, Outcome};
use crate::gatekeeper::{Caller, MemberSnapshot, Refusal};
use crate::policy::{Policy, Principal, RuleBudget, SpendSnapshot};
use crate::pre::{PendingPre, PreRequest, RateCheck, RateQuery, estimate_tokens};

/// The hint of a budget refusal.
const BUDGET_HINT: &str =
    "ask an organization admin to raise the budget, or wait for the next period";

/// The spend a decision counts, read before deciding.
#[derive(Clone, Copy, Debug, Default)]
pub struct Spend<'a> {
    /// Spend per subject and period of the budget limit rules that apply (`None`: zero).
    pub rules: Option<&'a SpendSnapshot>,
    /// The states of the applicable budgets before this request. `None` leaves the budget
    /// verdict to the ledger's reservation (admission), whose states are then judged by
    /// [`Plan::judge_budgets`].
    pub budgets: Option<&'a [BudgetState]>,
}

/// What the decision is about.
#[derive(Clone, Copy, Debug)]
pub struct PlanRequest<'a> {
    /// Who asks, and the group to attribute the usage to.
    pub caller: &'a Caller,
    /// The request as the client sent it.
    pub request: &'a ChatRequest,
    /// The instant decided for.
    pub now: DateTime<Utc>,
}

/// The rules and prices a decision is made with.
#[derive(Clone, Copy, Debug)]
pub struct Planner<'p> {
    /// The compiled guardrail policy.
    pub policy: &'p Policy,
    /// Provider prices (the models' output caps).
    pub prices: &'p PriceTable,
}

/// The decision about a request, with its reasons.
#[derive(Debug)]
pub struct Plan {
    /// Allow, warn (allowed, with warnings) or deny.
    pub outcome: Outcome,
    /// Why the request is refused (`Some` exactly when `outcome` is deny).
    pub refusal: Option<Refusal>,
    /// Every reason, in order: model access, guardrail rules, budgets.
    pub reasons: Vec<String>,
    /// What to do about a denial.
    pub hint: Option<String>,
    /// What a client is warned of (warning and modifying rules, soft budgets passed).
    pub warnings: Vec<String>,
    /// The model's grant (`None`: refused before model access was decided).
    pub grant: Option<ModelGrant>,
    /// The model's tier.
    pub tier: Option<ModelTier>,
    /// The guardrail principal (the member and their groups, sorted).
    pub principal: Principal,
    /// The group the usage is attributed to: the caller's choice, else the member's first
    /// group by id.
    pub group_id: Option<GroupId>,
    /// The pre-request guardrail decision (`None`: not reached).
    pub decision: Option<Decision>,
    /// The request as it may go upstream: modified by the guardrails, `max_tokens` set to the
    /// output bound.
    pub request: ChatRequest,
    /// The worst-case billed cost of `request` (the amount reserved).
    pub worst_case: Money,
    /// The budgets that apply, to reserve against: the organization's that apply (but
    /// those of guardrail rules) and those of the budget limit rules that apply.
    pub budgets: Vec<BudgetId>,
    /// The ledger budgets of the budget limit rules that apply (among `budgets`): the
    /// caller makes sure the ledger has them before reserving.
    pub rule_budgets: Vec<RuleBudget>,
}

/// A decision whose rate limits are still to be consulted: [`Draft::rate_queries`] names the
/// buckets (for a limiter shared between instances, fetched asynchronously), then
/// [`Draft::finish`] completes the decision with the verdicts.
#[derive(Debug)]
pub struct Draft<'p, 'a> {
    plan: Plan,
    pending: Option<(PendingPre<'p>, Pending<'p, 'a>)>,
}

#[derive(Debug)]
struct Pending<'p, 'a> {
    planner: Planner<'p>,
    original: &'a ChatRequest,
    model: ModelId,
    input_tokens: u32,
    estimate: Money,
    spend: Spend<'a>,
    groups: &'a [Group],
    now: DateTime<Utc>,
}

impl Pending<'_, '_> {
    fn pre<'x>(&'x self, principal: &'x Principal, tier: &ModelTier) -> PreRequest<'x> {
        PreRequest {
            principal,
            model: self.model.as_str(),
            tier: Some(tier.id),
            input_tokens: self.input_tokens,
            max_tokens: self.original.max_tokens,
            messages: &self.original.messages,
            estimated_cost: self.estimate,
            spend: self.spend.rules,
            now: self.now,
        }
    }
}

impl<'p> Planner<'p> {
    /// Decides `ask` for the member of `snapshot` (whose own budget list is ignored for
    /// `budgets`), counting `spend`. Pure: everything it needs is passed in.
    #[must_use]
    pub fn decide<'a>(
        &self,
        snapshot: &'a MemberSnapshot,
        budgets: &[Budget],
        spend: Spend<'a>,
        ask: &PlanRequest<'a>,
    ) -> Draft<'p, 'a> {
        let MemberSnapshot {
            org,
            membership,
            groups,
            catalog,
            subscriptions,
            budgets: _,
        } = snapshot;
        let mut plan = Plan::new(snapshot.principal(), ask.request.clone());
        let group_ids = plan.principal.groups.clone();
        let refused = |mut plan: Plan, refusal: Refusal| {
            plan.deny(refusal.to_string(), None, refusal);
            Draft {
                plan,
                pending: None,
            }
        };
        if org.id != ask.caller.org_id || membership.user_id != ask.caller.user_id {
            let refusal = Refusal::BadRequest("the member snapshot is not the caller's".into());
            return refused(plan, refusal);
        }
        if !org.active {
            return refused(plan, Refusal::OrgInactive(org.id));
        }
        plan.group_id = match ask.caller.group_id {
            Some(g) if group_ids.contains(&g) => Some(g),
            // Attribution to a group the member is not in would mislead reports.
            Some(g) => {
                let refusal = Refusal::BadRequest(format!("user is not a member of group `{g}`"));
                return refused(plan, refusal);
            }
            None => attribution_group(group_ids.iter().copied()),
        };
        let model = match ModelId::new(ask.request.model.clone()) {
            Ok(m) => m,
            Err(e) => return refused(plan, Refusal::BadRequest(e.to_string())),
        };

        // 1. model access
        let context = MemberContext {
            org,
            subscriptions,
            membership,
            groups,
        };
        let grant = match check_model(catalog, &context, &model) {
            Ok(grant) => grant,
            Err(denial) => {
                let (reason, hint) = (denial.message(), denial.hint());
                plan.deny(reason, hint, Refusal::Model(denial));
                return Draft {
                    plan,
                    pending: None,
                };
            }
        };
        // The tier at the rates in force now: the worst case is reserved, and the request
        // billed, at them (a cached catalog holds scheduled changes, so it switches on time).
        let Some(tier) = catalog.get(grant.tier_id).map(|t| t.as_of(ask.now)) else {
            let refusal = Refusal::BadRequest(format!("tier `{}` vanished", grant.tier_id));
            return refused(plan, refusal);
        };
        plan.reasons.push(format!(
            "model `{model}` is in the accessible {} tier",
            grant.tier_slug
        ));

        // 2. the applicable budgets and the worst case the guardrails check
        let scope = RequestScope {
            org_id: org.id,
            user_id: membership.user_id,
            group_ids: &group_ids,
            tier_id: Some(tier.id),
        };
        // A rule's budget applies while its rule does: taken from the policy, never from the
        // ledger's list (where a deleted rule's budget may linger).
        let listed: Vec<Budget> = budgets
            .iter()
            .filter(|b| !is_rule_budget(b.id))
            .cloned()
            .collect();
        plan.rule_budgets = self.policy.rule_budgets(&plan.principal, Some(tier.id));
        let mut ordered: Vec<&Budget> = applicable_budgets(&listed, &scope);
        ordered.extend(plan.rule_budgets.iter().map(|r| &r.budget));
        ordered.sort_by_key(|b| (b.scope, b.id));
        ordered.dedup_by_key(|b| b.id);
        plan.budgets = ordered.iter().map(|b| b.id).collect();
        let estimate = reservation_estimate(
            self.prices,
            &tier,
            &model,
            prompt_token_bound(&ask.request.messages),
            ask.request.max_tokens,
        );
        plan.worst_case = estimate;

        // 3. the guardrail rules; rate limits wait for `finish`
        let rules = self.policy.decide_pre_rules(&PreRequest {
            principal: &plan.principal,
            model: model.as_str(),
            tier: Some(tier.id),
            input_tokens: estimate_tokens(&ask.request.messages),
            max_tokens: ask.request.max_tokens,
            messages: &ask.request.messages,
            estimated_cost: estimate,
            spend: spend.rules,
            now: ask.now,
        });
        let pending = Pending {
            planner: *self,
            original: ask.request,
            input_tokens: estimate_tokens(&ask.request.messages),
            model,
            estimate,
            spend,
            groups,
            now: ask.now,
        };
        plan.grant = Some(grant);
        plan.tier = Some(tier);
        Draft {
            plan,
            pending: Some((rules, pending)),
        }
    }
}

impl Draft<'_, '_> {
    /// The rate-limit buckets [`finish`](Self::finish) will consult, in its order (empty when
    /// the request is already refused or no rate limit applies).
    #[must_use]
    pub fn rate_queries(&self) -> SmallVec<[RateQuery; 4]> {
        match (&self.pending, &self.plan.tier) {
            (Some((rules, p)), Some(tier)) => {
                rules.rate_queries(&p.pre(&self.plan.principal, tier))
            }
            _ => SmallVec::new(),
        }
    }

    /// Completes the decision with the rate limits (`Acquire` takes tokens, `Peek` only
    /// looks), then the worst case of the request as it will be sent and, when the budget
    /// states were given, the budgets' verdicts.
    #[must_use]
    pub fn finish(self, rates: RateCheck<'_>) -> Plan {
        let Draft { mut plan, pending } = self;
        let (Some((rules, pending)), Some(tier)) = (pending, plan.tier.clone()) else {
            return plan;
        };
        let decision = rules.finish(&pending.pre(&plan.principal, &tier), rates);
        plan.reasons
            .extend(decision.reasons.iter().map(ToString::to_string));
        if decision.outcome == Outcome::Deny {
            let hint = decision
                .retry_after
                .map(|wait| format!("retry in {}s", wait.as_secs().max(1)));
            plan.outcome = Outcome::Deny;
            plan.hint = hint;
            plan.refusal = Some(Refusal::Guardrails(Box::new(decision.clone())));
            plan.decision = Some(decision);
            return plan;
        }
        plan.warnings = decision
            .reasons
            .iter()
            .filter(|r| matches!(r.action, RuleAction::Warn | RuleAction::Modify))
            .map(ToString::to_string)
            .collect();
        if decision.outcome == Outcome::Warn {
            plan.outcome = Outcome::Warn;
        }
        decision.apply_to(&mut plan.request);
        // The request goes upstream bounded: what it may produce is what is reserved.
        let prices = pending.planner.prices;
        let output = output_token_bound(prices, &pending.model, plan.request.max_tokens);
        plan.request.max_tokens = Some(output);
        plan.worst_case = reservation_estimate(
            prices,
            &tier,
            &pending.model,
            prompt_token_bound(&plan.request.messages),
            Some(output),
        );
        plan.decision = Some(decision);
        if let Some(states) = pending.spend.budgets {
            plan.judge_budgets(states, pending.groups);
        }
        plan
    }
}

impl Plan {
    fn new(principal: Principal, request: ChatRequest) -> Self {
        Self {
            outcome: Outcome::Allow,
            refusal: None,
            reasons: Vec::new(),
            hint: None,
            warnings: Vec::new(),
            grant: None,
            tier: None,
            principal,
            group_id: None,
            decision: None,
            request,
            worst_case: Money::ZERO,
            budgets: Vec::new(),
            rule_budgets: Vec::new(),
        }
    }

    /// A plan refused before a decision could be made (e.g. the spend could not be read).
    pub(crate) fn refused(caller: &Caller, request: &ChatRequest, refusal: Refusal) -> Self {
        let principal = Principal {
            org_id: caller.org_id,
            user_id: caller.user_id,
            groups: Vec::new(),
        };
        let mut plan = Self::new(principal, request.clone());
        plan.deny(refusal.to_string(), None, refusal);
        plan
    }

    fn deny(&mut self, reason: String, hint: Option<String>, refusal: Refusal) {
        self.outcome = Outcome::Deny;
        self.reasons.push(reason);
        self.hint = hint;
        self.refusal = Some(refusal);
    }

    /// Whether the request may go ahead (to the reservation).
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        self.refusal.is_none()
    }

    /// Judges the applicable budgets against the worst case, given their states *before*
    /// this request (core's [`evaluate_budgets`], the rule the ledger reserves by): a hard
    /// budget without room denies, soft budgets passed warn, every budget adds its line to
    /// the reasons. `groups` name group budgets.
    pub fn judge_budgets(&mut self, states: &[BudgetState], groups: &[Group]) {
        self.judge(states, groups, true);
    }

    /// `enforce` false: the ledger already admitted the request, and its word stands (a
    /// budget lease's states count its whole block as reserved).
    fn judge(&mut self, states: &[BudgetState], groups: &[Group], enforce: bool) {
        if !self.is_allowed() {
            return;
        }
        let mut ordered: Vec<&BudgetState> = states.iter().collect();
        ordered.sort_by_key(|s| (s.budget.scope, s.budget.id));
        let worst = self.worst_case;
        let verdict = evaluate_budgets(states, worst);
        let mut soft_passed = false;
        for s in ordered {
            let b = &s.budget;
            let of_rule = self.rule_budgets.iter().any(|r| r.budget.id == b.id);
            let name = self.budget_name(b.id, &b.scope, groups);
            let committed = s.spent + s.reserved;
            let remaining = b.limit.saturating_sub(committed);
            if committed + worst <= b.limit || (b.hard_limit && !enforce) {
                self.reasons.push(format!(
                    "the {name} budget has {remaining} left of {}",
                    b.limit
                ));
            } else if b.hard_limit {
                self.reasons.push(format!(
                    "the {name} budget (hard) has {remaining} left of {}, below the worst-case cost {worst}",
                    b.limit
                ));
            } else if of_rule {
                // A warning or logging rule: the rule itself said so (or chose not to).
                self.reasons.push(format!(
                    "the {name} budget (soft) has {remaining} left of {}",
                    b.limit
                ));
            } else {
                soft_passed = true;
                self.reasons.push(format!(
                    "the {name} budget (soft) has {remaining} left of {}: the request goes through with a warning",
                    b.limit
                ));
                self.warnings.push(format!(
                    "soft {name} budget exceeded: {} of {}",
                    committed + worst,
                    b.limit
                ));
            }
        }
        match verdict.outcome {
            BudgetOutcome::Deny { refusal } if enforce => {
                self.outcome = Outcome::Deny;
                self.hint = Some(BUDGET_HINT.to_owned());
                self.refusal = Some(Refusal::Budget(refusal));
            }
            _ if soft_passed => self.outcome = Outcome::Warn,
            _ => {}
        }
    }

    /// Judges the states a reservation answered with (this request's worst case already
    /// among their reservations): the same verdict and reasons as [`judge_budgets`] of the
    /// states before it. The reservation was admitted, so no budget denies here.
    ///
    /// [`judge_budgets`]: Self::judge_budgets
    pub fn judge_reserved(&mut self, after: &[BudgetState], groups: &[Group]) {
        let before: Vec<BudgetState> = after
            .iter()
            .map(|s| BudgetState {
                reserved: s.reserved.saturating_sub(self.worst_case),
                ..s.clone()
            })
            .collect();
        self.judge(&before, groups, false);
    }

    /// A refusal by the ledger whose states could not explain it (they changed in between):
    /// the ledger's word stands.
    pub(crate) fn refuse_budget(&mut self, refusal: BudgetRefusal, groups: &[Group]) {
        if !self.is_allowed() {
            return;
        }
        self.reasons.push(format!(
            "the {} budget (hard) has {} left of {}, below the worst-case cost {}",
            self.budget_name(refusal.budget_id, &refusal.scope, groups),
            refusal.remaining,
            refusal.limit,
            refusal.requested
        ));
        self.outcome = Outcome::Deny;
        self.hint = Some(BUDGET_HINT.to_owned());
        self.refusal = Some(Refusal::Budget(refusal));
    }
}

impl Plan {
    /// A budget as people read it: a guardrail rule's by the rule (`rule 'daily cap'`), any
    /// other by its scope ([`scope_name`]).
    #[must_use]
    pub fn budget_name(&self, id: BudgetId, scope: &BudgetScope, groups: &[Group]) -> String {
        match self.rule_budgets.iter().find(|r| r.budget.id == id) {
            Some(r) => format!("rule '{}'", r.name),
            None => scope_name(scope, groups),
        }
    }

    /// `states` (those of the budgets this plan applies, [`Plan::budgets`]) as the explain
    /// endpoint reports them, named as the plan's reasons name them.
    #[must_use]
    pub fn budget_views(&self, states: Vec<BudgetState>, groups: &[Group]) -> Vec<BudgetView> {
        states
            .into_iter()
            .map(|s| BudgetView {
                budget_id: s.budget.id,
                scope: s.budget.scope,
                scope_name: self.budget_name(s.budget.id, &s.budget.scope, groups),
                limit: s.budget.limit,
                spent: s.spent,
                reserved: s.reserved,
                remaining: s.budget.limit.saturating_sub(s.spent + s.reserved),
                hard_limit: s.budget.hard_limit,
            })
            .collect()
    }
}

/// A budget scope as people read it: `organization`, `user`, `tier`, `group 'Marketing'`.
#[must_use]
pub fn scope_name(scope: &BudgetScope, groups: &[Group]) -> String {
    match scope {
        BudgetScope::Org => "organization".to_owned(),
        BudgetScope::User(_) => "user".to_owned(),
        BudgetScope::Tier(_) => "tier".to_owned(),
        BudgetScope::Group(id) => match groups.iter().find(|g| g.id == *id) {
            Some(g) => format!("group '{}'", g.name),
            None => "group".to_owned(),
        },
    }
}
