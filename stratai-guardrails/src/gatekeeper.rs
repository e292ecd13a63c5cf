//! The [`Gatekeeper`]: the whole request lifecycle over core's ports.
//!
//! ```text
//! admit:    member + tiers -> model access (core's check_model)
//!           -> pre guardrails (rules, then rate limits) -> budget reservation (worst case)
//! (caller): the LLM call, with Admission::request and Admission::call_context
//! complete: post guardrails (whole answer or stream) -> usage record -> settle actual cost
//! abort:    release the reservation, record the failed request
//! ```
//!
//! Every refusal is a value ([`Refusal`]) with a stable code; store failures refuse too (the
//! gatekeeper fails closed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use stratai_core::budget::{Budget, BudgetAlert, BudgetRefusal, BudgetState, is_rule_budget};
use stratai_core::directory::{Group, Membership, Organization};
use stratai_core::gateway::{CallContext, ChatRequest, ChatResponse, TokenUsage};
use stratai_core::ids::{BudgetId, ConversationId, GroupId, ModelId, OrgId, RequestId, UserId};
use stratai_core::ports::{
    BudgetLedger, DirectoryStore, RateLimitStore, ReserveOutcome, ReserveRequest, TierStore,
    UsageStore,
};
use stratai_core::pricing::{PriceTable, billed_amount};
use stratai_core::tiers::{ModelDenial, ModelGrant, ModelTier, TierCatalog, TierSubscription};
use stratai_core::usage::{UsageRecord, UsageStatus};
use stratai_core::{Money, StoreError};

use crate::decision::{Decision, Outcome};
use crate::engine::Guardrails;
use crate::plan::{Plan, PlanRequest, Planner, Spend};
use crate::policy::{Principal, RuleBudget, SpendSnapshot};
use crate::post::{AnswerStream, FilteredAnswer};
use crate::pre::{PreRequest, RateCheck, RateQuery};
use crate::rate::FetchedVerdicts;

/// Who is calling, and how the request is attributed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The organization the request is made in.
    pub org_id: OrgId,
    /// The member.
    pub user_id: UserId,
    /// The group the usage is attributed to (must be one of the member's groups); `None`:
    /// the member's first group by id, if any.
    pub group_id: Option<GroupId>,
    /// Conversation in the product, if any.
    pub conversation_id: Option<ConversationId>,
    /// Product endpoint, e.g. `chat`.
    pub endpoint: String,
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The organization is deactivated.
    #[error("organization `{0}` is not active")]
    OrgInactive(OrgId),
    /// The user is not a member of the organization.
    #[error("user `{user_id}` is not a member of organization `{org_id}`")]
    NotMember {
        /// The organization.
        org_id: OrgId,
        /// The user.
        user_id: UserId,
    },
    /// The request is malformed (e.g. an invalid model id).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The member may not use the model (tiers).
    #[error("{}", .0.message())]
    Model(ModelDenial),
    /// Guardrail rules refused (including rate limits: see `retry_after`).
    #[error("{}", guardrail_message(.0))]
    Guardrails(Box<Decision>),
    /// A hard budget has no room for the worst-case cost.
    #[error("budget exceeded: {} left of {}, {} needed", .0.remaining, .0.limit, .0.requested)]
    Budget(BudgetRefusal),
    /// A store failed: the request cannot be decided, so it is refused.
    #[error("cannot decide the request: {0}")]
    Unavailable(#[from] StoreError),
}

fn guardrail_message(decision: &Decision) -> String {
    decision
        .blocking_reasons()
        .next()
        .map_or_else(|| "refused by guardrails".to_owned(), ToString::to_string)
}

impl Refusal {
    /// A stable machine-readable code for APIs.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::OrgInactive(_) => "org_inactive",
            Refusal::NotMember { .. } => "not_a_member",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::Model(_) => "model_not_allowed",
            Refusal::Guardrails(d) if d.retry_after.is_some() => "rate_limited",
            Refusal::Guardrails(_) => "guardrail_blocked",
            Refusal::Budget(_) => "budget_exceeded",
            Refusal::Unavailable(_) => "unavailable",
        }
    }
}

/// The gatekeeper's settings.
#[derive(Clone, Debug)]
pub struct GatekeeperConfig {
    /// Provider prices (provider cost of usage records, output caps of estimates).
    pub prices: PriceTable,
    /// How long an unsettled reservation lives before the ledger reclaims it.
    pub reservation_ttl: ChronoDuration,
}

impl Default for GatekeeperConfig {
    fn default() -> Self {
        Self {
            prices: PriceTable::seed_defaults(),
            reservation_ttl: ChronoDuration::minutes(15),
        }
    }
}

struct Inner {
    directory: Arc<dyn DirectoryStore>,
    tiers: Arc<dyn TierStore>,
    ledger: Arc<dyn BudgetLedger>,
    usage: Arc<dyn UsageStore>,
    guardrails: Arc<Guardrails>,
    config: GatekeeperConfig,
    shared_rates: Option<SharedRates>,
    /// The rule budgets this gatekeeper put into the ledger, as it put them.
    ensured: std::sync::Mutex<std::collections::HashMap<BudgetId, Budget>>,
}

/// A shared rate limiter, and how often it failed since the last warning.
struct SharedRates {
    store: Arc<dyn RateLimitStore>,
    started: Instant,
    /// Seconds since `started` of the last warning (`u64::MAX`: none yet).
    last_warning: AtomicU64,
    failures: AtomicU64,
}

impl SharedRates {
    /// Logs the failure at most once a minute, with the count of failures since the last one.
    fn warn(&self, error: &StoreError) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.started.elapsed().as_secs();
        let last = self.last_warning.load(Ordering::Relaxed);
        if (last == u64::MAX || now >= last.saturating_add(60))
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.failures.store(0, Ordering::Relaxed);
            tracing::warn!(
                %error,
                failures,
                "shared rate limiter unreachable: rate limits are enforced by this instance alone meanwhile"
            );
        }
    }
}

/// Runs the request lifecycle over core's ports. Cheap to clone.
#[derive(Clone)]
pub struct Gatekeeper {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gatekeeper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gatekeeper")
            .field("guardrails", &self.inner.guardrails)
            .finish_non_exhaustive()
    }
}

impl Gatekeeper {
    /// A gatekeeper over the given ports and guardrail engine.
    #[must_use]
    pub fn new(
        directory: Arc<dyn DirectoryStore>,
        tiers: Arc<dyn TierStore>,
        ledger: Arc<dyn BudgetLedger>,
        usage: Arc<dyn UsageStore>,
        guardrails: Arc<Guardrails>,
        config: GatekeeperConfig,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                directory,
                tiers,
                ledger,
                usage,
                guardrails,
                config,
                shared_rates: None,
                ensured: std::sync::Mutex::default(),
            }),
        }
    }

    /// The same gatekeeper, with rate limits counted in `store`, shared by every instance
    /// (e.g. stratai-store's Redis limiter), instead of in this process alone. Decisions read
    /// the same (rules, reasons, `retry_after`). When the store fails, the request is decided
    /// by the guardrail engine's in-process limiter instead (a shared-store outage neither
    /// blocks all traffic nor lifts the limits; each instance then allows the full limit),
    /// and a warning is logged at most once a minute.
    #[must_use]
    pub fn with_shared_rate_limiter(self, store: Arc<dyn RateLimitStore>) -> Self {
        let i = &self.inner;
        Self {
            inner: Arc::new(Inner {
                directory: i.directory.clone(),
                tiers: i.tiers.clone(),
                ledger: i.ledger.clone(),
                usage: i.usage.clone(),
                guardrails: i.guardrails.clone(),
                config: i.config.clone(),
                ensured: std::sync::Mutex::default(),
                shared_rates: Some(SharedRates {
                    store,
                    started: Instant::now(),
                    last_warning: AtomicU64::new(u64::MAX),
                    failures: AtomicU64::new(0),
                }),
            }),
        }
    }

    /// The guardrails' pre-request decision, taking rate-limit tokens: from the shared
    /// limiter when one is configured, else from the engine's own.
    pub async fn check(&self, pre: &PreRequest<'_>) -> Decision {
        self.decide_pre(pre, true).await
    }

    /// The same decision as [`check`](Self::check) with no side effect: rate-limit buckets
    /// (shared or local) are only looked at.
    pub async fn explain(&self, pre: &PreRequest<'_>) -> Decision {
        self.decide_pre(pre, false).await
    }

    async fn decide_pre(&self, pre: &PreRequest<'_>, take: bool) -> Decision {
        let policy = self.inner.guardrails.policy();
        let pending = policy.decide_pre_rules(pre);
        let queries = pending.rate_queries(pre);
        self.with_rates(&queries, take, |rates| pending.finish(pre, rates))
            .await
    }

    /// Runs `finish` with the rate limiter to consult: the engine's own (`take`: acquire,
    /// else peek), or, with a shared limiter, the verdicts of `queries` fetched from it (the
    /// engine's own when the shared store fails).
    async fn with_rates<T>(
        &self,
        queries: &[RateQuery],
        take: bool,
        finish: impl FnOnce(RateCheck<'_>) -> T,
    ) -> T {
        let local = self.inner.guardrails.limiter().as_ref();
        let own = if take {
            RateCheck::Acquire(local)
        } else {
            RateCheck::Peek(local)
        };
        let Some(shared) = &self.inner.shared_rates else {
            return finish(own);
        };
        if queries.is_empty() {
            return finish(RateCheck::Skip);
        }
        match FetchedVerdicts::fetch(shared.store.as_ref(), queries, take).await {
            Ok(fetched) if take => finish(RateCheck::Acquire(&fetched)),
            Ok(fetched) => finish(RateCheck::Peek(&fetched)),
            Err(error) => {
                shared.warn(&error);
                finish(own)
            }
        }
    }

    /// The guardrail engine (to reload rules or explain decisions).
    #[must_use]
    pub fn guardrails(&self) -> &Arc<Guardrails> {
        &self.inner.guardrails
    }

    /// The provider prices it records costs with.
    #[must_use]
    pub fn prices(&self) -> &PriceTable {
        &self.inner.config.prices
    }

    /// Decides a request and, when it may go ahead, reserves its worst-case cost. The caller
    /// then makes the LLM call with [`Admission::request`] (already clamped, redacted and
    /// annotated) and ends with [`Admission::complete`], [`Admission::finish_stream`] or
    /// [`Admission::abort`].
    pub async fn admit(
        &self,
        caller: &Caller,
        request: &ChatRequest,
        now: DateTime<Utc>,
    ) -> Result<Admission, Refusal> {
        let snapshot = self.load_snapshot(caller.org_id, caller.user_id).await?;
        self.admit_with(caller, &snapshot, request, now).await
    }

    /// Loads what a decision about `user` in `org` needs (organization, membership, groups,
    /// tier catalog, subscriptions, budget list): five store reads. A caller that serves many
    /// requests of the same member may keep the snapshot for a short while and pass it to
    /// [`admit_with`](Self::admit_with); budget *amounts* are never part of it (the ledger
    /// reads them at reservation).
    pub async fn load_snapshot(&self, org: OrgId, user: UserId) -> Result<MemberSnapshot, Refusal> {
        let inner = &self.inner;
        let org = inner.directory.get_org(org).await?;
        let membership = match inner.directory.get_member(org.id, user).await {
            Ok(m) => m,
            Err(StoreError::NotFound { .. }) => {
                return Err(Refusal::NotMember {
                    org_id: org.id,
                    user_id: user,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let groups: Vec<Group> = inner
            .directory
            .groups_of_member(org.id, user)
            .await?
            .into_iter()
            .map(|(g, _)| g)
            .collect();
        let catalog = TierCatalog::new(inner.tiers.list_tiers().await?)
            .map_err(|e| StoreError::Backend(format!("tier catalog: {e}")))?;
        let subscriptions = inner.tiers.list_subscriptions(org.id).await?;
        let budgets = inner.ledger.list_budgets(org.id).await?;
        Ok(MemberSnapshot {
            org,
            membership,
            groups,
            catalog,
            subscriptions,
            budgets,
        })
    }

    /// [`admit`](Self::admit) over a snapshot loaded earlier by
    /// [`load_snapshot`](Self::load_snapshot): no directory or tier reads, only the budget
    /// reservation (and, when budget limit rules apply, their spend query).
    pub async fn admit_with(
        &self,
        caller: &Caller,
        snapshot: &MemberSnapshot,
        request: &ChatRequest,
        now: DateTime<Utc>,
    ) -> Result<Admission, Refusal> {
        self.admit_with_budgets(caller, snapshot, &snapshot.budgets, request, now)
            .await
    }

    /// [`admit_with`](Self::admit_with), with the organization's budget list given apart
    /// from the snapshot (whose own `budgets` are ignored): for a caller that keeps the
    /// member's snapshot but reads the budget list fresh for every request, so a budget
    /// created a moment ago applies to the very next one, without copying the snapshot.
    pub async fn admit_with_budgets(
        &self,
        caller: &Caller,
        snapshot: &MemberSnapshot,
        budgets: &[Budget],
        request: &ChatRequest,
        now: DateTime<Utc>,
    ) -> Result<Admission, Refusal> {
        self.admit_planned(caller, snapshot, budgets, request, now)
            .await
            .map_err(|plan| {
                plan.refusal
                    .unwrap_or_else(|| Refusal::BadRequest("refused without a reason".to_owned()))
            })
    }

    /// [`admit_with_budgets`](Self::admit_with_budgets), answering a refusal with its whole
    /// [`Plan`] (outcome, every reason, hint): load (the budget limit rules' spend) -> decide
    /// ([`Planner::decide`], taking rate-limit tokens) -> reserve the plan's worst case
    /// against its budgets. A refusal by the ledger is explained by its budgets' states read
    /// then (only on that path), so the reasons are those [`explain_request`] gives.
    ///
    /// [`explain_request`]: Self::explain_request
    pub async fn admit_planned(
        &self,
        caller: &Caller,
        snapshot: &MemberSnapshot,
        budgets: &[Budget],
        request: &ChatRequest,
        now: DateTime<Utc>,
    ) -> Result<Admission, Box<Plan>> {
        let inner = &self.inner;
        let unavailable = |plan: Plan, error: StoreError| {
            let mut plan = Box::new(plan);
            plan.outcome = Outcome::Deny;
            plan.refusal = Some(Refusal::Unavailable(error));
            plan
        };
        let mut plan = match self
            .plan(caller, snapshot, budgets, request, now, true)
            .await
        {
            Ok(plan) => plan,
            Err(refusal) => return Err(Box::new(Plan::refused(caller, request, refusal))),
        };
        if !plan.is_allowed() {
            return Err(Box::new(plan));
        }
        let request_id = RequestId::new();
        let mut budget_states = Vec::new();
        if !plan.budgets.is_empty() {
            let reserved = inner
                .ledger
                .reserve(
                    caller.org_id,
                    &ReserveRequest {
                        request_id,
                        budgets: plan.budgets.clone(),
                        amount: plan.worst_case,
                        now,
                        expires_at: now + inner.config.reservation_ttl,
                        holder: None,
                    },
                )
                .await;
            match reserved {
                Ok(ReserveOutcome::Reserved(states)) => {
                    plan.judge_reserved(&states, &snapshot.groups);
                    budget_states = states;
                }
                Ok(ReserveOutcome::Refused(refusal)) => {
                    let states = match inner.ledger.states(caller.org_id, &plan.budgets, now).await
                    {
                        Ok(states) => states,
                        Err(e) => return Err(unavailable(plan, e)),
                    };
                    plan.judge_budgets(&states, &snapshot.groups);
                    plan.refuse_budget(refusal, &snapshot.groups);
                    return Err(Box::new(plan));
                }
                Err(e) => return Err(unavailable(plan, e)),
            }
        }
        let (Some(grant), Some(tier), Some(decision)) =
            (plan.grant.clone(), plan.tier.clone(), plan.decision.take())
        else {
            return Err(Box::new(plan));
        };
        Ok(Admission {
            gate: self.clone(),
            request_id,
            caller: caller.clone(),
            group_id: plan.group_id,
            principal: plan.principal,
            model: grant.model.clone(),
            grant,
            tier,
            request: plan.request,
            decision,
            budgets: plan.budgets,
            reserved: plan.worst_case,
            budget_states,
            outcome: plan.outcome,
            reasons: plan.reasons,
            warnings: plan.warnings,
            admitted_at: now,
        })
    }

    /// The decision [`admit_planned`](Self::admit_planned) would make for `request` at `now`,
    /// with no side effect: the same loads and [`Planner::decide`], rate-limit buckets only
    /// looked at, and the applicable budgets' states read and judged instead of reserved.
    pub async fn explain_request(
        &self,
        caller: &Caller,
        snapshot: &MemberSnapshot,
        budgets: &[Budget],
        request: &ChatRequest,
        now: DateTime<Utc>,
    ) -> Result<Plan, StoreError> {
        let mut plan = match self
            .plan(caller, snapshot, budgets, request, now, false)
            .await
        {
            Ok(plan) => plan,
            Err(Refusal::Unavailable(e)) => return Err(e),
            Err(refusal) => return Ok(Plan::refused(caller, request, refusal)),
        };
        if plan.is_allowed() && !plan.budgets.is_empty() {
            let states = self
                .inner
                .ledger
                .states(caller.org_id, &plan.budgets, now)
                .await?;
            plan.judge_budgets(&states, &snapshot.groups);
        }
        Ok(plan)
    }

    /// Loads the budget limit rules' spend, then decides (the rate limits taken or peeked).
    async fn plan(
        &self,
        caller: &Caller,
        snapshot: &MemberSnapshot,
        budgets: &[Budget],
        request: &ChatRequest,
        now: DateTime<Utc>,
        take: bool,
    ) -> Result<Plan, Refusal> {
        let tier = ModelId::new(request.model.clone())
            .ok()
            .and_then(|m| snapshot.catalog.tier_of_model(&m).map(|t| t.id));
        let spend = self
            .rule_spend(&snapshot.org, &snapshot.principal(), tier, budgets, now)
            .await?;
        let policy = self.inner.guardrails.policy();
        let planner = Planner {
            policy: &policy,
            prices: &self.inner.config.prices,
        };
        let spend = Spend {
            rules: Some(&spend),
            budgets: None,
        };
        let ask = PlanRequest {
            caller,
            request,
            now,
        };
        let draft = planner.decide(snapshot, budgets, spend, &ask);
        let queries = draft.rate_queries();
        Ok(self
            .with_rates(&queries, take, |rates| draft.finish(rates))
            .await)
    }

    /// What the budget limit rules that apply count: their ledger budgets' spend and
    /// reservations in the current period (none apply: no query). The budgets are made
    /// sure of first, so the reservation that follows finds them.
    async fn rule_spend(
        &self,
        org: &Organization,
        principal: &Principal,
        tier: Option<stratai_core::TierId>,
        listed: &[Budget],
        now: DateTime<Utc>,
    ) -> Result<SpendSnapshot, StoreError> {
        let mut spend = SpendSnapshot::new();
        let wanted = self.inner.guardrails.policy().rule_budgets(principal, tier);
        if wanted.is_empty() {
            return Ok(spend);
        }
        self.ensure_rule_budgets(org.id, listed, &wanted).await?;
        let ids: Vec<BudgetId> = wanted.iter().map(|r| r.budget.id).collect();
        let states = self.inner.ledger.states(org.id, &ids, now).await?;
        for rule in &wanted {
            if let Some(state) = states.iter().find(|s| s.budget.id == rule.budget.id) {
                spend.set_rule(rule.rule_id, state.spent + state.reserved);
            }
        }
        Ok(spend)
    }

    /// Puts the budgets of budget limit rules into the ledger as the rules now define them
    /// (created, or updated when the rule changed), unless the organization's list `listed`
    /// or this gatekeeper already has them so: a platform rule's budget appears in an
    /// organization on its first request there, an organization rule's is normally written
    /// with the rule ([`sync_rule_budgets`]).
    pub async fn ensure_rule_budgets(
        &self,
        org: OrgId,
        listed: &[Budget],
        wanted: &[RuleBudget],
    ) -> Result<(), StoreError> {
        for rule in wanted {
            let want = &rule.budget;
            if listed.iter().any(|b| b.same_terms(want)) {
                continue;
            }
            let known = {
                let ensured = self
                    .inner
                    .ensured
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                ensured.get(&want.id).is_some_and(|b| b.same_terms(want))
            };
            if known {
                continue;
            }
            put_budget(self.inner.ledger.as_ref(), org, want).await?;
            self.inner
                .ensured
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(want.id, want.clone());
        }
        Ok(())
    }
}

/// Creates or replaces `budget` in the ledger (its spend is kept).
async fn put_budget(
    ledger: &dyn BudgetLedger,
    org: OrgId,
    budget: &Budget,
) -> Result<(), StoreError> {
    match ledger.update_budget(org, budget).await {
        Err(StoreError::NotFound { .. }) => match ledger.create_budget(org, budget).await {
            // Created meanwhile by another request or instance.
            Err(StoreError::Conflict(_)) => ledger.update_budget(org, budget).await,
            other => other,
        },
        other => other,
    }
}

/// Keeps the ledger budgets of an organization's `budget_limit` rules in step with `wanted`,
/// the budgets of every active budget limit rule that can apply in `org` (its own rules and
/// the platform's, e.g. [`Policy::rule_budgets_of_org`](crate::Policy::rule_budgets_of_org) or [`Rule::budget_in`] over the stored
/// rules): each is written as its rule defines it, and the budget of a rule that no longer
/// exists, is disabled or is no longer a budget limit is deleted. The admin API calls it when
/// a rule changes and before it lists budgets; a decision never relies on it (it takes rule
/// budgets from the policy and puts them in the ledger itself when missing).
///
/// [`Rule::budget_in`]: crate::Rule::budget_in
pub async fn sync_rule_budgets(
    ledger: &dyn BudgetLedger,
    org: OrgId,
    wanted: &[RuleBudget],
) -> Result<(), StoreError> {
    let listed = ledger.list_budgets(org).await?;
    for rule in wanted {
        if !listed.iter().any(|b| b.same_terms(&rule.budget)) {
            put_budget(ledger, org, &rule.budget).await?;
        }
    }
    for stale in listed
        .iter()
        .filter(|b| is_rule_budget(b.id) && !wanted.iter().any(|r| r.budget.id == b.id))
    {
        match ledger.delete_budget(org, stale.id).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

impl MemberSnapshot {
    /// The guardrail principal: the member and their groups, by id.
    #[must_use]
    pub fn principal(&self) -> Principal {
        let mut groups: Vec<GroupId> = self.groups.iter().map(|g| g.id).collect();
        groups.sort_unstable();
        Principal {
            org_id: self.org.id,
            user_id: self.membership.user_id,
            groups,
        }
    }
}

/// What a decision about one member needs, loaded by [`Gatekeeper::load_snapshot`].
#[derive(Clone, Debug)]
pub struct MemberSnapshot {
    /// The organization.
    pub org: Organization,
    /// The membership.
    pub membership: Membership,
    /// The member's groups.
    pub groups: Vec<Group>,
    /// The tier catalog.
    pub catalog: TierCatalog,
    /// The organization's tier subscriptions.
    pub subscriptions: Vec<TierSubscription>,
    /// The organization's budgets (definitions; amounts live in the ledger).
    pub budgets: Vec<Budget>,
}

/// An admitted request: its reservation is held until it is completed or aborted.
pub struct Admission {
    gate: Gatekeeper,
    request_id: RequestId,
    caller: Caller,
    group_id: Option<GroupId>,
    principal: Principal,
    grant: ModelGrant,
    tier: ModelTier,
    model: ModelId,
    request: ChatRequest,
    decision: Decision,
    budgets: Vec<BudgetId>,
    reserved: Money,
    budget_states: Vec<BudgetState>,
    outcome: Outcome,
    reasons: Vec<String>,
    warnings: Vec<String>,
    admitted_at: DateTime<Utc>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("request_id", &self.request_id)
            .field("model", &self.model)
            .field("reserved", &self.reserved)
            .finish_non_exhaustive()
    }
}

/// A request's end that the stores did not take: the settlement or the usage record failed.
/// It carries everything needed to write it later (a durable spool), and the alerts that
/// fired when the settlement did go through, so that they are not lost with the error.
#[derive(Debug, thiserror::Error)]
#[error("usage not recorded: {error}")]
pub struct Unrecorded {
    /// What failed.
    #[source]
    pub error: StoreError,
    /// Whether the store took the record (the settlement is then what failed); when false
    /// the settlement was not attempted (never a settlement without a record).
    pub recorded: bool,
    /// Whether the ledger took the settlement (or the release); when false it must be
    /// applied again with the record.
    pub settled: bool,
    /// The record that was not written, priced as it would have been.
    pub record: UsageRecord,
    /// The budgets the request was reserved against.
    pub budgets: Vec<BudgetId>,
    /// Threshold alerts that fired with the settlement.
    pub alerts: Vec<stratai_core::budget::BudgetAlert>,
}

/// The end of an admitted request.
#[derive(Clone, Debug, PartialEq)]
pub struct Completion {
    /// The answer to deliver (post-filtered); `None` when a post guardrail blocked it.
    pub response: Option<ChatResponse>,
    /// The post-response decision.
    pub decision: Decision,
    /// The usage record written.
    pub usage: UsageRecord,
    /// Budget threshold alerts that fired with this settlement.
    pub alerts: Vec<stratai_core::budget::BudgetAlert>,
}

impl Admission {
    /// The StratAI request id (idempotency key of settlement and usage).
    #[must_use]
    pub fn request_id(&self) -> RequestId {
        self.request_id
    }

    /// The request to send: clamped, redacted and annotated by the pre decision.
    #[must_use]
    pub fn request(&self) -> &ChatRequest {
        &self.request
    }

    /// The pre-request decision (allow or warn, with reasons and modifications).
    #[must_use]
    pub fn decision(&self) -> &Decision {
        &self.decision
    }

    /// The decision's outcome: allow, or warn (warning rules, soft budgets passed).
    #[must_use]
    pub fn outcome(&self) -> Outcome {
        self.outcome
    }

    /// Every reason of the decision, in order (model access, guardrail rules, budgets), as
    /// [`Gatekeeper::explain_request`] gives them.
    #[must_use]
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }

    /// What the client is warned of: warning and modifying rules, soft budgets passed.
    #[must_use]
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The model's grant (model and tier).
    #[must_use]
    pub fn grant(&self) -> &ModelGrant {
        &self.grant
    }

    /// The worst-case amount reserved.
    #[must_use]
    pub fn reserved(&self) -> Money {
        self.reserved
    }

    /// The budgets the worst case was reserved against (empty: none applied).
    #[must_use]
    pub fn budgets(&self) -> &[BudgetId] {
        &self.budgets
    }

    /// The budgets' states right after the reservation.
    #[must_use]
    pub fn budget_states(&self) -> &[BudgetState] {
        &self.budget_states
    }

    /// The context for the gateway call.
    #[must_use]
    pub fn call_context(&self) -> CallContext {
        CallContext {
            request_id: self.request_id,
            org_id: self.caller.org_id,
            user_id: self.caller.user_id,
        }
    }

    /// A post filter for a streamed answer; feed it the deltas, then hand its end to
    /// [`finish_stream`](Self::finish_stream).
    #[must_use]
    pub fn answer_stream(&self, now: DateTime<Utc>) -> AnswerStream {
        self.gate
            .inner
            .guardrails
            .answer_stream(&self.principal, Some(self.tier.id), now)
    }

    /// Post-filters a whole answer (every choice), settles the actual cost and records usage.
    /// The cost is settled even when the answer is blocked: the tokens were spent.
    pub async fn complete(
        self,
        mut response: ChatResponse,
        now: DateTime<Utc>,
    ) -> Result<Completion, Box<Unrecorded>> {
        let guardrails = &self.gate.inner.guardrails;
        let mut decisions: Vec<FilteredAnswer> = Vec::new();
        for choice in &mut response.choices {
            let filtered = guardrails.filter_answer(
                &self.principal,
                Some(self.tier.id),
                &choice.message.content,
                now,
            );
            if let Some(text) = &filtered.text {
                choice.message.content.clone_from(text);
            }
            decisions.push(filtered);
        }
        let decision = merge_decisions(decisions, now);
        let usage = response.usage;
        let upstream_id = Some(response.id.clone());
        let response = decision.is_allowed().then_some(response);
        self.settle(
            usage,
            UsageStatus::Success,
            upstream_id,
            decision,
            response,
            now,
        )
        .await
    }

    /// Settles a streamed answer: `usage` as reported by the upstream's last chunk (or counted
    /// by the caller), `end` from the stream's post filter. `complete` is false when the
    /// client went away mid-stream (recorded as partial, billed for what was produced).
    pub async fn finish_stream(
        self,
        end: crate::post::StreamEnd,
        usage: TokenUsage,
        upstream_id: Option<String>,
        complete: bool,
        now: DateTime<Utc>,
    ) -> Result<Completion, Box<Unrecorded>> {
        let status = if complete {
            UsageStatus::Success
        } else {
            UsageStatus::Partial
        };
        self.settle(usage, status, upstream_id, end.decision, None, now)
            .await
    }

    /// The call failed: releases the reservation and records the failed request (nothing
    /// billed).
    pub async fn abort(self) -> Result<UsageRecord, Box<Unrecorded>> {
        let inner = &self.gate.inner;
        let record = self.record(
            TokenUsage::default(),
            UsageStatus::Failed,
            None,
            Money::ZERO,
            Money::ZERO,
        );
        let ledger = &inner.ledger;
        let (org, id) = (self.caller.org_id, self.request_id);
        // No budget applied: nothing was reserved, so there is nothing to release.
        let reserved = !self.budgets.is_empty();
        self.record_then(record, async move {
            if !reserved {
                return Ok(Vec::new());
            }
            ledger.release(org, id).await.map(|()| Vec::new())
        })
        .await
        .map(|(r, _)| r)
    }

    async fn settle(
        self,
        usage: TokenUsage,
        status: UsageStatus,
        upstream_id: Option<String>,
        decision: Decision,
        response: Option<ChatResponse>,
        now: DateTime<Utc>,
    ) -> Result<Completion, Box<Unrecorded>> {
        let inner = &self.gate.inner;
        let billed = billed_amount(&self.tier, usage.prompt_tokens, usage.completion_tokens);
        // A model of a tier without a provider price still bills; its provider cost is unknown
        // and recorded as zero (the pricing discovery report shows it).
        let provider = inner
            .config
            .prices
            .provider_cost(&self.model, usage.prompt_tokens, usage.completion_tokens)
            .unwrap_or(Money::ZERO);
        // The budgets are charged at most what was reserved (the bound held by them); a
        // provider billing beyond the bound is recorded as overage, which the caller alerts on.
        let charged = billed.min(self.reserved);
        let mut record = self.record(usage, status, upstream_id, provider, billed);
        record.overage = billed.saturating_sub(charged);
        let ledger = &inner.ledger;
        let (org, id, budgets) = (self.caller.org_id, self.request_id, &self.budgets);
        // No budget applied: nothing was reserved and nothing is charged, so the ledger is
        // not asked (no zero-amount settlement marker, no read of the organization).
        let (record, alerts) = self
            .record_then(record, async move {
                if budgets.is_empty() {
                    return Ok(Vec::new());
                }
                ledger
                    .settle(org, id, budgets, charged, now)
                    .await
                    .map(|s| s.alerts)
            })
            .await?;
        Ok(Completion {
            response,
            decision,
            usage: record,
            alerts,
        })
    }

    /// The one ending of every settlement (complete, stream, abort): appends `record`, then
    /// (only once the store took it: never a settlement without a record) applies `ledger`
    /// (the settlement or the release, answering the alerts it raised). What did not happen
    /// comes back as [`Unrecorded`] for the caller to spool.
    async fn record_then(
        &self,
        record: UsageRecord,
        ledger: impl std::future::Future<Output = Result<Vec<BudgetAlert>, StoreError>>,
    ) -> Result<(UsageRecord, Vec<BudgetAlert>), Box<Unrecorded>> {
        let unrecorded = |error, recorded, settled, record, alerts| {
            Box::new(Unrecorded {
                error,
                recorded,
                settled,
                record,
                budgets: self.budgets.clone(),
                alerts,
            })
        };
        if let Err(e) = self
            .gate
            .inner
            .usage
            .append(self.caller.org_id, std::slice::from_ref(&record))
            .await
        {
            return Err(unrecorded(e, false, false, record, Vec::new()));
        }
        match ledger.await {
            Ok(alerts) => Ok((record, alerts)),
            Err(e) => Err(unrecorded(e, true, false, record, Vec::new())),
        }
    }

    fn record(
        &self,
        usage: TokenUsage,
        status: UsageStatus,
        upstream_id: Option<String>,
        provider_cost: Money,
        billed_amount: Money,
    ) -> UsageRecord {
        UsageRecord {
            request_id: self.request_id,
            org_id: self.caller.org_id,
            group_id: self.group_id,
            user_id: self.caller.user_id,
            tier_id: Some(self.tier.id),
            model: self.model.clone(),
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            provider_cost,
            billed_amount,
            overage: Default::default(),
            litellm_request_id: upstream_id,
            conversation_id: self.caller.conversation_id,
            endpoint: self.caller.endpoint.clone(),
            status,
            created_at: self.admitted_at,
            lease_id: None,
        }
    }
}

/// One decision over several choices: every reason and change, the strongest outcome.
fn merge_decisions(decisions: Vec<FilteredAnswer>, now: DateTime<Utc>) -> Decision {
    let mut merged = Decision {
        outcome: Outcome::Allow,
        modifications: Vec::new(),
        reasons: Vec::new(),
        retry_after: None,
        at: now,
    };
    for d in decisions {
        merged.outcome = merged.outcome.max(d.decision.outcome);
        for r in d.decision.reasons {
            if !merged.reasons.contains(&r) {
                merged.reasons.push(r);
            }
        }
        for m in d.decision.modifications {
            if !merged.modifications.contains(&m) {
                merged.modifications.push(m);
            }
        }
    }
    if merged.outcome == Outcome::Deny {
        merged.modifications.clear();
    }
    merged
}
