//! The governed request lifecycle behind `/v1/chat/completions`:
//! organization -> model access -> (guardrails, rate limits) -> budget reservation of the
//! worst-case cost -> the LLM call (by the handler) -> settlement of the actual cost + the
//! usage record (spooled durably when the store fails) + budget alerts.
//!
//! [`Pipeline::admit`] answers an [`Admission`] (the request as it may go upstream and a
//! [`Ticket`] to settle it) or a [`Refusal`]; [`Pipeline::finish`] settles a ticket exactly
//! once per request id, whatever happened (complete, client gone mid-stream, upstream failure).

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use stratai_core::StoreError;
use stratai_core::budget::{Budget, BudgetRefusal, BudgetScope, BudgetState};
use stratai_core::directory::{Group, Membership, Organization, Slug};
use stratai_core::gateway::{ChatRequest, TokenUsage};
use stratai_core::ids::{BudgetId, GroupId, ModelId, OrgId, RequestId, UserId};
use stratai_core::money::Money;
use stratai_core::ports::{
    BudgetLedger, Clock, DirectoryStore, GuardrailStore, ReserveOutcome, ReserveRequest,
    RuleAction, TierStore, UsageStore,
};
use stratai_core::tiers::{
    MemberContext, ModelDenial, ModelTier, TierAccess, TierCatalog, check_model, resolve_tiers,
};
use stratai_core::usage::{UsageRecord, UsageStatus};
use stratai_guardrails::{Decision, Guardrails, KnownScopes, PreRequest, Principal};

use crate::alerts::AlertSink;
use crate::metrics::{self, ReasonKind};
use crate::spool::{Spool, SpoolEntry, SpoolSettle};

/// Output cap set on requests that name none, so the worst case is bounded.
pub const DEFAULT_OUTPUT_CAP: u32 = 4096;
/// How long an unsettled reservation lives before the ledger reclaims it.
pub const RESERVATION_TTL_SECS: i64 = 15 * 60;

/// The stores and sinks the pipeline works on.
#[derive(Clone)]
pub struct PipelineDeps {
    /// Organizations, members, groups.
    pub directory: Arc<dyn DirectoryStore>,
    /// Tier catalog and subscriptions.
    pub tiers: Arc<dyn TierStore>,
    /// Budgets.
    pub ledger: Arc<dyn BudgetLedger>,
    /// Usage records.
    pub usage: Arc<dyn UsageStore>,
    /// Where failed usage writes go.
    pub spool: Arc<Spool>,
    /// Budget alerts.
    pub alerts: AlertSink,
    /// Now.
    pub clock: Arc<dyn Clock>,
    /// The guardrail engine (policy + rate limiter).
    pub guardrails: Arc<Guardrails>,
    /// Where guardrail rules are stored (for [`Pipeline::reload_guardrails`]).
    pub rules: Arc<dyn GuardrailStore>,
    /// How long a caller's organization, membership, groups, tier access and budget list are
    /// reused by [`Pipeline::caller_view`] (zero: never). Changes by admins take effect
    /// after at most this long; budget *amounts* are always read by the ledger itself.
    pub view_ttl: std::time::Duration,
}

type ViewCache =
    std::sync::Mutex<std::collections::HashMap<(UserId, String), (Instant, Arc<MemberView>)>>;

/// The governed pipeline.
#[derive(Clone)]
pub struct Pipeline {
    deps: PipelineDeps,
    cache: Arc<ViewCache>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").finish_non_exhaustive()
    }
}

/// Why a request was not admitted.
#[derive(Debug)]
pub enum Refusal {
    /// The caller is in no (or not this) organization, or must choose one.
    Organization {
        /// 400 (choose) or 403 (not a member).
        must_choose: bool,
        /// Message.
        message: String,
    },
    /// The model is not accessible.
    ModelDenied(ModelDenial),
    /// A guardrail rule blocked the request (or the answer).
    Blocked(Decision),
    /// A rate limit rule refused; retry after the decision's `retry_after`.
    RateLimited(Decision),
    /// A hard budget would be passed.
    Budget {
        /// The refusal.
        refusal: BudgetRefusal,
        /// Readable scope, e.g. `user`, `group 'Marketing'`.
        scope_name: String,
    },
    /// Malformed request.
    BadRequest {
        /// The parameter.
        param: &'static str,
        /// Message.
        message: String,
    },
    /// A store failed.
    Internal(String),
}

impl From<StoreError> for Refusal {
    fn from(e: StoreError) -> Self {
        Refusal::Internal(e.to_string())
    }
}

/// Everything needed to settle a request later.
#[derive(Clone, Debug)]
pub struct Ticket {
    /// Request id (idempotency key of the ledger and the usage record).
    pub request_id: RequestId,
    /// Organization.
    pub org_id: OrgId,
    /// User.
    pub user_id: UserId,
    /// Group the usage is attributed to (the member's first group by name).
    pub group_id: Option<GroupId>,
    /// Model.
    pub model: ModelId,
    /// Its tier (rates).
    pub tier: ModelTier,
    /// Budgets reserved against.
    pub budgets: Vec<BudgetId>,
    /// Worst-case cost reserved.
    pub reserved: Money,
    /// When admitted.
    pub admitted_at: DateTime<Utc>,
    /// Monotonic admission time.
    pub started: Instant,
    /// The guardrail principal (for post-response filtering).
    pub principal: Principal,
}

/// An admitted request.
#[derive(Debug)]
pub struct Admission {
    /// The request as it may go upstream (max_tokens set or clamped).
    pub request: ChatRequest,
    /// Soft-budget and rule warnings, for the `x-stratai-warnings` header.
    pub warnings: Vec<String>,
    /// The settlement ticket.
    pub ticket: Ticket,
}

/// How a request ended.
#[derive(Clone, Debug)]
pub enum Ending {
    /// The answer was delivered whole.
    Complete {
        /// Usage reported by the upstream.
        usage: TokenUsage,
        /// The upstream completion id.
        upstream_id: Option<String>,
    },
    /// The client left mid-stream: bill what was delivered.
    Partial {
        /// Tokens delivered so far.
        usage: TokenUsage,
        /// The upstream completion id.
        upstream_id: Option<String>,
    },
    /// The upstream failed: release, bill nothing.
    Failed,
}

/// What a finished request was billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Billed {
    /// Billed amount.
    pub amount: Money,
    /// Whether the record went to the spool instead of the store.
    pub spooled: bool,
}

/// A budget as the explain endpoint reports it.
#[derive(Clone, Debug, Serialize)]
pub struct BudgetView {
    /// Budget.
    pub budget_id: BudgetId,
    /// Scope.
    pub scope: BudgetScope,
    /// Readable scope.
    pub scope_name: String,
    /// Limit.
    pub limit: Money,
    /// Spent in the period.
    pub spent: Money,
    /// Reserved in the period.
    pub reserved: Money,
    /// Left.
    pub remaining: Money,
    /// Blocks when exhausted.
    pub hard_limit: bool,
}

/// The member's situation in one organization, loaded once per request.
pub struct MemberView {
    /// Organization.
    pub org: Organization,
    /// Membership.
    pub membership: Membership,
    /// Groups the member is in, by name.
    pub groups: Vec<Group>,
    /// The catalog.
    pub catalog: TierCatalog,
    /// The organization's budgets, when loaded with the view.
    pub budgets: Option<Vec<Budget>>,
    /// Tier access.
    pub access: TierAccess,
    subscriptions: Vec<stratai_core::tiers::TierSubscription>,
}

impl MemberView {
    /// The model check of core.
    pub fn check(&self, model: &ModelId) -> Result<stratai_core::tiers::ModelGrant, ModelDenial> {
        let ctx = MemberContext {
            org: &self.org,
            subscriptions: &self.subscriptions,
            membership: &self.membership,
            groups: &self.groups,
        };
        check_model(&self.catalog, &ctx, model)
    }
}

/// Tokens a prompt can be at most: a deliberately pessimistic bound (one token per two bytes,
/// plus per-message overhead), so the reservation is never below the actual cost.
#[must_use]
pub fn prompt_token_bound(request: &ChatRequest) -> u64 {
    request
        .messages
        .iter()
        .map(|m| (m.content.len() as u64).div_ceil(2) + (m.role.len() as u64) + 4)
        .sum()
}

/// The billed cost of `usage` at `tier`'s rates, rounded once to 6 decimal places.
#[must_use]
pub fn billed_cost(tier: &ModelTier, input_tokens: u64, output_tokens: u64) -> Money {
    let million = Decimal::from(1_000_000u32);
    let amount = Decimal::from(input_tokens) * tier.input_rate_per_million / million
        + Decimal::from(output_tokens) * tier.output_rate_per_million / million;
    Money::new(amount).unwrap_or(Money::ZERO).round_dp(6)
}

/// Rounds an amount up to 6 decimal places (reservations must not be below the cost).
fn ceil6(m: Money) -> Money {
    let a = m
        .amount()
        .round_dp_with_strategy(6, rust_decimal::RoundingStrategy::AwayFromZero);
    Money::new(a).unwrap_or(m)
}

fn scope_name(scope: &BudgetScope, groups: &[Group]) -> String {
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

/// The budgets that apply to a member's request on a model of `tier`: the organization's, each
/// of the member's groups', the member's own and the tier's (inside the organization).
#[must_use]
pub fn applicable_budgets(
    budgets: Vec<Budget>,
    user: UserId,
    groups: &[Group],
    tier: stratai_core::ids::TierId,
) -> Vec<Budget> {
    budgets
        .into_iter()
        .filter(|b| match b.scope {
            BudgetScope::Org => true,
            BudgetScope::Group(g) => groups.iter().any(|x| x.id == g),
            BudgetScope::User(u) => u == user,
            BudgetScope::Tier(t) => t == tier,
        })
        .collect()
}

impl Pipeline {
    /// A pipeline over `deps`.
    #[must_use]
    pub fn new(deps: PipelineDeps) -> Self {
        Self {
            deps,
            cache: Arc::new(ViewCache::default()),
        }
    }

    /// The caller's view in the organization they chose (see [`Pipeline::choose_org`]),
    /// with the organization's budget list; reused for [`PipelineDeps::view_ttl`].
    pub async fn caller_view(
        &self,
        user: UserId,
        requested: Option<&str>,
    ) -> Result<Arc<MemberView>, Refusal> {
        let ttl = self.deps.view_ttl;
        let key = (user, requested.unwrap_or("").trim().to_owned());
        if !ttl.is_zero()
            && let Ok(cache) = self.cache.lock()
            && let Some((at, view)) = cache.get(&key)
            && at.elapsed() < ttl
        {
            return Ok(view.clone());
        }
        let org = self.choose_org(user, requested).await?;
        let mut view = self.member_view(org, user).await?;
        view.budgets = Some(self.deps.ledger.list_budgets(view.org.id).await?);
        let view = Arc::new(view);
        if !ttl.is_zero()
            && let Ok(mut cache) = self.cache.lock()
        {
            if cache.len() >= 100_000 {
                cache.clear();
            }
            cache.insert(key, (Instant::now(), view.clone()));
        }
        Ok(view)
    }

    /// The dependencies.
    #[must_use]
    pub fn deps(&self) -> &PipelineDeps {
        &self.deps
    }

    /// The organization a call acts in: `requested` (id or slug) when given, else the
    /// caller's only organization.
    pub async fn choose_org(
        &self,
        user: UserId,
        requested: Option<&str>,
    ) -> Result<Organization, Refusal> {
        let dir = &self.deps.directory;
        let not_member = || Refusal::Organization {
            must_choose: false,
            message: "you are not a member of this organization".to_owned(),
        };
        let org = match requested.map(str::trim).filter(|s| !s.is_empty()) {
            Some(text) => {
                let org = match text.parse::<OrgId>() {
                    Ok(id) => match dir.get_org(id).await {
                        Ok(o) => Some(o),
                        Err(StoreError::NotFound { .. }) => None,
                        Err(e) => return Err(e.into()),
                    },
                    Err(_) => match Slug::new(text) {
                        Ok(slug) => dir.find_org_by_slug(&slug).await?,
                        Err(_) => None,
                    },
                };
                let org = org.ok_or_else(not_member)?;
                match dir.get_member(org.id, user).await {
                    Ok(_) => org,
                    Err(StoreError::NotFound { .. }) => return Err(not_member()),
                    Err(e) => return Err(e.into()),
                }
            }
            None => {
                let memberships = dir.memberships_of_user(user).await?;
                match memberships.as_slice() {
                    [] => {
                        return Err(Refusal::Organization {
                            must_choose: false,
                            message: "you are not a member of any organization".to_owned(),
                        });
                    }
                    [only] => dir.get_org(only.org_id).await?,
                    several => {
                        let mut slugs = Vec::new();
                        for m in several {
                            if let Ok(o) = dir.get_org(m.org_id).await {
                                slugs.push(format!("`{}`", o.slug));
                            }
                        }
                        return Err(Refusal::Organization {
                            must_choose: true,
                            message: format!(
                                "you are a member of several organizations ({}): choose one with the `x-stratai-org` header",
                                slugs.join(", ")
                            ),
                        });
                    }
                }
            }
        };
        if !org.active {
            return Err(Refusal::Organization {
                must_choose: false,
                message: format!("organization `{}` is deactivated", org.slug),
            });
        }
        Ok(org)
    }

    /// Loads what a decision about `user` in `org` needs.
    pub async fn member_view(
        &self,
        org: Organization,
        user: UserId,
    ) -> Result<MemberView, Refusal> {
        let dir = &self.deps.directory;
        let membership = match dir.get_member(org.id, user).await {
            Ok(m) => m,
            Err(StoreError::NotFound { .. }) => {
                return Err(Refusal::Organization {
                    must_choose: false,
                    message: "you are not a member of this organization".to_owned(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let mut groups: Vec<Group> = dir
            .groups_of_member(org.id, user)
            .await?
            .into_iter()
            .map(|(g, _)| g)
            .collect();
        groups.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
        let tiers = self.deps.tiers.list_tiers().await?;
        let catalog = TierCatalog::new(tiers).map_err(|e| Refusal::Internal(e.to_string()))?;
        let subscriptions = self.deps.tiers.list_subscriptions(org.id).await?;
        let access = resolve_tiers(
            &catalog,
            &MemberContext {
                org: &org,
                subscriptions: &subscriptions,
                membership: &membership,
                groups: &groups,
            },
        )
        .map_err(|e| Refusal::Internal(e.to_string()))?;
        Ok(MemberView {
            org,
            membership,
            groups,
            catalog,
            budgets: None,
            access,
            subscriptions,
        })
    }

    /// Decides and reserves. On success the reservation is held under the ticket's request id
    /// until [`Pipeline::finish`] (or its expiry).
    pub async fn admit(
        &self,
        view: &MemberView,
        mut request: ChatRequest,
        request_id: RequestId,
    ) -> Result<Admission, Refusal> {
        let user = view.membership.user_id;
        let model = ModelId::new(request.model.clone()).map_err(|e| Refusal::BadRequest {
            param: "model",
            message: e.to_string(),
        })?;
        if request.messages.is_empty() {
            return Err(Refusal::BadRequest {
                param: "messages",
                message: "`messages` must not be empty".to_owned(),
            });
        }
        let grant = match view.check(&model) {
            Ok(g) => g,
            Err(denial) => {
                metrics::record_decision("deny", ReasonKind::ModelAccess);
                return Err(Refusal::ModelDenied(denial));
            }
        };
        let Some(tier) = view.catalog.get(grant.tier_id).cloned() else {
            return Err(Refusal::Internal(format!(
                "tier `{}` vanished from the catalog",
                grant.tier_id
            )));
        };
        if request.max_tokens.is_none() {
            request.max_tokens = Some(DEFAULT_OUTPUT_CAP);
        }
        let now = self.deps.clock.now();
        let principal = Principal {
            org_id: view.org.id,
            user_id: user,
            groups: view.groups.iter().map(|g| g.id).collect(),
        };
        let mut warnings = Vec::new();
        {
            let mut pre = PreRequest::from_chat(&principal, &request, Some(tier.id), now);
            pre.estimated_cost = ceil6(billed_cost(
                &tier,
                0,
                prompt_token_bound(&request) + u64::from(request.max_tokens.unwrap_or(0)),
            ));
            let decision = self.deps.guardrails.check(&pre);
            if !decision.is_allowed() {
                let rate_limited = decision.retry_after.is_some()
                    && decision
                        .blocking_reasons()
                        .all(|r| r.rule_type == stratai_guardrails::RuleType::RateLimit);
                if rate_limited {
                    metrics::record_decision("deny", ReasonKind::RateLimit);
                    return Err(Refusal::RateLimited(decision));
                }
                metrics::record_decision("deny", ReasonKind::Guardrail);
                return Err(Refusal::Blocked(decision));
            }
            decision.apply_to(&mut request);
            warnings.extend(
                decision
                    .reasons
                    .iter()
                    .filter(|r| matches!(r.action, RuleAction::Warn | RuleAction::Modify))
                    .map(ToString::to_string),
            );
        }
        let max_tokens = request.max_tokens.unwrap_or(DEFAULT_OUTPUT_CAP);

        let all = match &view.budgets {
            Some(b) => b.clone(),
            None => self.deps.ledger.list_budgets(view.org.id).await?,
        };
        let budgets = applicable_budgets(all, user, &view.groups, tier.id);
        let budget_ids: Vec<BudgetId> = budgets.iter().map(|b| b.id).collect();
        // The worst case: the prompt bound and the whole output, both at the output rate.
        let worst = ceil6(billed_cost(
            &tier,
            0,
            prompt_token_bound(&request) + u64::from(max_tokens),
        ));
        if !budget_ids.is_empty() {
            let outcome = self
                .deps
                .ledger
                .reserve(
                    view.org.id,
                    &ReserveRequest {
                        request_id,
                        budgets: budget_ids.clone(),
                        amount: worst,
                        now,
                        expires_at: now + chrono::Duration::seconds(RESERVATION_TTL_SECS),
                    },
                )
                .await?;
            match outcome {
                ReserveOutcome::Refused(refusal) => {
                    metrics::record_decision("deny", ReasonKind::Budget);
                    metrics::record_budget_refusal(&refusal.scope);
                    let scope_name = scope_name(&refusal.scope, &view.groups);
                    return Err(Refusal::Budget {
                        refusal,
                        scope_name,
                    });
                }
                ReserveOutcome::Reserved(states) => {
                    for s in states.iter().filter(|s| !s.budget.hard_limit) {
                        if s.spent + s.reserved > s.budget.limit {
                            warnings.push(format!(
                                "soft {} budget exceeded: {} of {}",
                                scope_name(&s.budget.scope, &view.groups),
                                s.spent,
                                s.budget.limit
                            ));
                        }
                    }
                }
            }
        }
        metrics::record_decision(
            if warnings.is_empty() { "allow" } else { "warn" },
            if warnings.is_empty() {
                ReasonKind::None
            } else {
                ReasonKind::Budget
            },
        );
        Ok(Admission {
            request,
            warnings,
            ticket: Ticket {
                request_id,
                org_id: view.org.id,
                user_id: user,
                group_id: view.groups.first().map(|g| g.id),
                model,
                tier,
                budgets: budget_ids,
                reserved: worst,
                admitted_at: now,
                started: Instant::now(),
                principal,
            },
        })
    }

    /// Settles a ticket: releases on failure, otherwise settles the actual cost and writes the
    /// usage record; a store failure spools both durably instead. Idempotent by request id.
    pub async fn finish(&self, ticket: &Ticket, ending: Ending) -> Billed {
        let (usage, upstream_id, status) = match ending {
            Ending::Complete { usage, upstream_id } => (usage, upstream_id, UsageStatus::Success),
            Ending::Partial { usage, upstream_id } => (usage, upstream_id, UsageStatus::Partial),
            Ending::Failed => (TokenUsage::default(), None, UsageStatus::Failed),
        };
        let amount = if status == UsageStatus::Failed {
            Money::ZERO
        } else {
            billed_cost(
                &ticket.tier,
                u64::from(usage.prompt_tokens),
                u64::from(usage.completion_tokens),
            )
        };
        let record = UsageRecord {
            request_id: ticket.request_id,
            org_id: ticket.org_id,
            group_id: ticket.group_id,
            user_id: ticket.user_id,
            tier_id: Some(ticket.tier.id),
            model: ticket.model.clone(),
            input_tokens: usage.prompt_tokens,
            output_tokens: usage.completion_tokens,
            // Without a provider price table the provider cost is what the upstream charged
            // at our tier rates; the reconciler compares it with LiteLLM's spend log.
            provider_cost: amount,
            billed_amount: amount,
            litellm_request_id: upstream_id,
            conversation_id: None,
            endpoint: "chat".to_owned(),
            status,
            created_at: ticket.admitted_at,
        };
        let ledger = &self.deps.ledger;
        let mut settle_pending = None;
        if status == UsageStatus::Failed {
            if let Err(e) = ledger.release(ticket.org_id, ticket.request_id).await {
                // The reservation expires and is reclaimed; nothing was spent.
                tracing::warn!(error = %e, request_id = %ticket.request_id, "release failed; the reservation will expire");
            }
        } else if !ticket.budgets.is_empty() {
            match ledger
                .settle(
                    ticket.org_id,
                    ticket.request_id,
                    &ticket.budgets,
                    amount,
                    self.deps.clock.now(),
                )
                .await
            {
                Ok(outcome) => {
                    self.deps.alerts.fire(&outcome.alerts);
                }
                Err(e) => {
                    tracing::warn!(error = %e, request_id = %ticket.request_id, "settle failed; spooling");
                    settle_pending = Some(SpoolSettle {
                        budgets: ticket.budgets.clone(),
                        actual: amount,
                    });
                }
            }
        }
        let done_at = Instant::now();
        let write = if settle_pending.is_some() {
            Err(StoreError::Backend("settlement pending".to_owned()))
        } else {
            self.deps
                .usage
                .append(ticket.org_id, std::slice::from_ref(&record))
                .await
        };
        match write {
            Ok(_) => {
                metrics::record_usage_write_lag("direct", done_at);
                Billed {
                    amount,
                    spooled: false,
                }
            }
            Err(e) => {
                if settle_pending.is_none() {
                    tracing::warn!(error = %e, request_id = %ticket.request_id, "usage write failed; spooling");
                }
                let entry = SpoolEntry {
                    record,
                    settle: settle_pending,
                    spooled_at: Utc::now(),
                };
                if let Err(e) = self.deps.spool.push(&entry).await {
                    tracing::error!(error = %e, request_id = %ticket.request_id, record = ?entry, "USAGE RECORD NOT DURABLE: store and spool both failed");
                }
                Billed {
                    amount,
                    spooled: true,
                }
            }
        }
    }

    /// Recompiles the guardrail policy from the store (platform rules and every
    /// organization's rules); on an invalid rule set the current policy stays in force.
    pub async fn reload_guardrails(&self) -> Result<u64, String> {
        let dir = &self.deps.directory;
        let mut records = self
            .deps
            .rules
            .list_platform_rules()
            .await
            .map_err(|e| e.to_string())?;
        let mut known = KnownScopes::new();
        for tier in self
            .deps
            .tiers
            .list_tiers()
            .await
            .map_err(|e| e.to_string())?
        {
            known.add_tier(tier.id);
        }
        for org in dir.list_orgs().await.map_err(|e| e.to_string())? {
            known.add_org(org.id);
            for g in dir.list_groups(org.id).await.map_err(|e| e.to_string())? {
                known.add_group(org.id, g.id);
            }
            for m in dir.list_members(org.id).await.map_err(|e| e.to_string())? {
                known.add_member(org.id, m.user_id);
            }
            records.extend(
                self.deps
                    .rules
                    .list_org_rules(org.id)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        self.deps
            .guardrails
            .reload(&records, &known)
            .map_err(|e| e.to_string())
    }

    /// Reloads the guardrail policy every `interval` until the task is aborted.
    pub fn spawn_guardrail_reloader(
        &self,
        interval: std::time::Duration,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = me.reload_guardrails().await {
                    tracing::warn!(error = %e, "guardrail policy not reloaded; the previous one stays in force");
                }
            }
        })
    }

    /// The states of the budgets that apply to `view`'s member for a model of `tier`, at `at`.
    pub async fn budget_views(
        &self,
        view: &MemberView,
        tier: stratai_core::ids::TierId,
        at: DateTime<Utc>,
    ) -> Result<Vec<BudgetView>, StoreError> {
        let budgets = applicable_budgets(
            self.deps.ledger.list_budgets(view.org.id).await?,
            view.membership.user_id,
            &view.groups,
            tier,
        );
        let ids: Vec<BudgetId> = budgets.iter().map(|b| b.id).collect();
        let states: Vec<BudgetState> = if ids.is_empty() {
            Vec::new()
        } else {
            self.deps.ledger.states(view.org.id, &ids, at).await?
        };
        Ok(states
            .into_iter()
            .map(|s| BudgetView {
                budget_id: s.budget.id,
                scope: s.budget.scope,
                scope_name: scope_name(&s.budget.scope, &view.groups),
                limit: s.budget.limit,
                spent: s.spent,
                reserved: s.reserved,
                remaining: s.budget.limit.saturating_sub(s.spent + s.reserved),
                hard_limit: s.budget.hard_limit,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratai_core::gateway::ChatMessage;
    use stratai_core::tiers::default_tiers;

    #[test]
    fn billed_cost_uses_tier_rates_rounded_once() {
        let basic = default_tiers().into_iter().next().unwrap();
        // 1000 in at $0.50/M + 2000 out at $2/M = 0.0005 + 0.004
        assert_eq!(
            billed_cost(&basic, 1000, 2000),
            Money::parse("0.0045").unwrap()
        );
        assert_eq!(billed_cost(&basic, 1, 0), Money::ZERO);
        assert_eq!(
            ceil6(Money::parse("0.0000001").unwrap()),
            Money::parse("0.000001").unwrap()
        );
    }

    #[test]
    fn prompt_bound_is_above_word_counts() {
        let r = ChatRequest {
            model: "m".to_owned(),
            messages: vec![ChatMessage {
                role: "user".to_owned(),
                content: "a b c d e f g".to_owned(),
            }],
            max_tokens: None,
            temperature: None,
            stream: false,
            user: None,
        };
        assert!(prompt_token_bound(&r) >= 7);
    }
}
