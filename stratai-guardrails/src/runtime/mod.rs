//! The runtime of the governed request path (`runtime` feature, on by default): what a service
//! needs to run requests the way StratAI's server does, fast and exactly once.
//!
//! organization -> model access -> (guardrails, rate limits) -> budget reservation of the
//! worst-case cost -> the provider call -> settlement of the actual cost + the usage record
//! (written to the usage log first, so it survives the process) + budget alerts.
//!
//! Build one with [`Runtime::builder`]: the stores, then typed settings (member-view cache,
//! budget leases, batched usage writes, the usage log, the alert sink, a shared rate limiter,
//! reload and replay intervals). [`RuntimeBuilder::build`] answers the [`Runtime`] (cheap to
//! clone, share it) and the [`RuntimeHandle`] that owns every background task it started
//! (policy reload, the usage log's writer and syncer, lease upkeep) and drains them at shutdown.
//!
//! A request: [`Runtime::caller_view`] (cached, see [`fresh_cache`]) -> [`Runtime::admit`]
//! (the [`Gatekeeper`]'s one decision, then the reservation) -> [`Runtime::call`] (the
//! provider call, settled and recorded even if the caller stops waiting) or
//! [`Runtime::open_stream`] (a [`stream::GovernedStream`] that settles exactly once, when it
//! ends or is dropped). [`Runtime::chat`] does all of it in one call. A [`Ticket`] can also
//! be settled by hand with [`Runtime::complete`], [`Runtime::finish_stream`] or
//! [`Runtime::abort`].
//!
//! Without side effects: [`Runtime::explain`] gives the decision admission would make for a
//! member's request, and [`Runtime::explain_for`] answers the whole question a member or an
//! administrator asks (whom about, in which organization, whether they may ask, the budgets
//! that apply).

pub mod alerts;
pub mod batch;
mod builder;
pub mod demo;
mod explain;
mod finish;
pub mod fresh_cache;
pub mod liveness;
pub mod metrics;
pub mod spool;
pub mod stream;

pub use builder::{
    RuntimeBuilder, RuntimeError, RuntimeHandle, RuntimeSettings, RuntimeStores, UsageBatching,
    lease_config,
};
pub use explain::{ExplainAnswer, ExplainCaller, ExplainQuestion, ExplainRefusal, ExplainSubject};
pub use finish::Finish;

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use stratai_core::StoreError;
use stratai_core::budget::BudgetRefusal;
use stratai_core::directory::{Group, Membership, Organization, Slug};
use stratai_core::gateway::{CallContext, ChatRequest, ChatResponse, GatewayError, TokenUsage};
use stratai_core::ids::{BudgetId, GroupId, ModelId, OrgId, RequestId, UserId};
use stratai_core::money::Money;
use stratai_core::ports::{
    BudgetLedger, Clock, DirectoryStore, GuardrailStore, LlmGateway, TierStore, UsageStore,
};
use stratai_core::tiers::{
    MemberContext, ModelDenial, ModelTier, TierAccess, TierCatalog, check_model, resolve_tiers,
};
use stratai_core::usage::UsageStatus;

use self::metrics::ReasonKind;
use crate::plan::{Plan, scope_name};
use crate::{
    Admission as GateAdmission, Caller, Decision, Gatekeeper, Guardrails, MemberSnapshot,
    Refusal as GateRefusal,
};
use alerts::AlertSink;
use fresh_cache::{FreshCache, Lookup};
use spool::UsageLog;

/// How long an unsettled reservation lives before the ledger reclaims it.
pub const RESERVATION_TTL_SECS: i64 = 15 * 60;

/// What a [`Runtime`] works on (see [`Runtime::deps`]).
#[derive(Clone)]
pub struct RuntimeDeps {
    /// Organizations, members, groups.
    pub directory: Arc<dyn DirectoryStore>,
    /// Tier catalog and subscriptions.
    pub tiers: Arc<dyn TierStore>,
    /// Budgets.
    pub ledger: Arc<dyn BudgetLedger>,
    /// Usage records.
    pub usage: Arc<dyn UsageStore>,
    /// The usage log every record and shared reservation goes through first (`None`:
    /// records go straight to the store, and a failed write is logged as not durable).
    pub spool: Option<Arc<UsageLog>>,
    /// The LLM provider.
    pub llm: Arc<dyn LlmGateway>,
    /// The provider's label in metrics (`litellm`, `demo`).
    pub provider: &'static str,
    /// Budget alerts.
    pub alerts: AlertSink,
    /// Now.
    pub clock: Arc<dyn Clock>,
    /// The guardrail engine (policy + rate limiter), shared with the Gatekeeper.
    pub guardrails: Arc<Guardrails>,
    /// The SDK's request lifecycle (model access, guardrails, rate limits, budget
    /// reservation, post filter, settlement, usage record).
    pub gatekeeper: Gatekeeper,
    /// Where guardrail rules are stored (for [`Runtime::reload_guardrails`]).
    pub rules: Arc<dyn GuardrailStore>,
    /// How long a caller's organization, membership, groups, tier access and budget list are
    /// reused by [`Runtime::caller_view`] (zero: never). Changes by admins take effect
    /// after at most this long; budget *amounts* are always read by the ledger itself.
    pub view_ttl: std::time::Duration,
    /// Read the organization's budget list at every admission (true in strict mode), so a
    /// budget created or changed applies to the very next request. False with budget leases:
    /// the cached list is used and a budget change applies after at most `view_ttl`.
    pub fresh_budgets: bool,
}

/// A caller's view, by user and the organization they asked for.
type ViewKey = (UserId, String);

/// The governed request path (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    deps: Arc<RuntimeDeps>,
    cache: Arc<FreshCache<ViewKey, Arc<MemberView>>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("provider", &self.deps.provider)
            .finish_non_exhaustive()
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

/// What the runtime knows about an admitted request besides the Gatekeeper's admission.
#[derive(Clone, Debug)]
pub struct TicketInfo {
    /// Request id (idempotency key of the ledger and the usage record).
    pub request_id: RequestId,
    /// Organization.
    pub org_id: OrgId,
    /// User.
    pub user_id: UserId,
    /// Group the usage is attributed to (the Gatekeeper's rule: the member's first group by id).
    pub group_id: Option<GroupId>,
    /// All the member's groups (the guardrail principal).
    pub groups: Vec<GroupId>,
    /// Model.
    pub model: ModelId,
    /// Its tier (rates).
    pub tier: ModelTier,
    /// Budgets reserved against.
    pub budgets: Vec<BudgetId>,
    /// When admitted.
    pub admitted_at: DateTime<Utc>,
    /// Monotonic admission time.
    pub started: Instant,
}

/// An admitted request's settlement handle: the Gatekeeper's admission (which holds the
/// reservation) and what the runtime needs if the store fails.
#[derive(Debug)]
pub struct Ticket {
    /// The Gatekeeper's admission.
    pub admission: GateAdmission,
    /// Request id.
    pub request_id: RequestId,
    /// Organization.
    pub org_id: OrgId,
    /// User.
    pub user_id: UserId,
    /// Group the usage is attributed to.
    pub group_id: Option<GroupId>,
    /// All the member's groups (the guardrail principal).
    pub groups: Vec<GroupId>,
    /// Model.
    pub model: ModelId,
    /// Its tier.
    pub tier: ModelTier,
    /// Budgets reserved against.
    pub budgets: Vec<BudgetId>,
    /// When admitted.
    pub admitted_at: DateTime<Utc>,
    /// Monotonic admission time.
    pub started: Instant,
}

struct SplitTicket {
    admission: GateAdmission,
    rest: TicketInfo,
}

impl Ticket {
    fn split(self) -> SplitTicket {
        SplitTicket {
            admission: self.admission,
            rest: TicketInfo {
                request_id: self.request_id,
                org_id: self.org_id,
                user_id: self.user_id,
                group_id: self.group_id,
                groups: self.groups,
                model: self.model,
                tier: self.tier,
                budgets: self.budgets,
                admitted_at: self.admitted_at,
                started: self.started,
            },
        }
    }

    /// A post filter for the streamed answer (the Gatekeeper's, for this member and tier).
    #[must_use]
    pub fn answer_stream(&self) -> crate::AnswerStream {
        self.admission.answer_stream(Utc::now())
    }
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

/// What a finished request was billed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Billed {
    /// Billed amount.
    pub amount: Money,
    /// Whether the record or its settlement waits in the usage log for the store.
    pub spooled: bool,
}

/// The member's situation in one organization: the Gatekeeper's [`MemberSnapshot`] (org,
/// membership, groups sorted by name, catalog, subscriptions and, when loaded for requests,
/// the budget list) and the tier access resolved from it.
pub struct MemberView {
    /// What a decision about the member needs; its `budgets` are empty unless
    /// `budgets_loaded`.
    pub snapshot: MemberSnapshot,
    /// Tier access.
    pub access: TierAccess,
    /// Whether `snapshot.budgets` holds the organization's budget list.
    budgets_loaded: bool,
}

impl MemberView {
    /// The organization.
    #[must_use]
    pub fn org(&self) -> &Organization {
        &self.snapshot.org
    }

    /// The membership.
    #[must_use]
    pub fn membership(&self) -> &Membership {
        &self.snapshot.membership
    }

    /// The member's groups, by name.
    #[must_use]
    pub fn groups(&self) -> &[Group] {
        &self.snapshot.groups
    }

    /// The tier catalog.
    #[must_use]
    pub fn catalog(&self) -> &TierCatalog {
        &self.snapshot.catalog
    }

    /// The model check of core.
    pub fn check(&self, model: &ModelId) -> Result<stratai_core::tiers::ModelGrant, ModelDenial> {
        let s = &self.snapshot;
        let ctx = MemberContext {
            org: &s.org,
            subscriptions: &s.subscriptions,
            membership: &s.membership,
            groups: &s.groups,
        };
        check_model(&s.catalog, &ctx, model)
    }
}

/// The runtime's refusal for the Gatekeeper's (the chat routes and `/api/explain` answer
/// the same error for the same refusal).
#[must_use]
pub fn gate_refusal(refusal: GateRefusal, view: &MemberView) -> Refusal {
    match refusal {
        GateRefusal::OrgInactive(_) => Refusal::Organization {
            must_choose: false,
            message: format!("organization `{}` is deactivated", view.org().slug),
        },
        GateRefusal::NotMember { .. } => Refusal::Organization {
            must_choose: false,
            message: "you are not a member of this organization".to_owned(),
        },
        GateRefusal::BadRequest(message) => Refusal::BadRequest {
            param: "model",
            message,
        },
        GateRefusal::Model(denial) => Refusal::ModelDenied(denial),
        GateRefusal::Guardrails(decision) => {
            let rate_limited = decision.retry_after.is_some()
                && decision
                    .blocking_reasons()
                    .all(|r| r.rule_type == crate::RuleType::RateLimit);
            if rate_limited {
                Refusal::RateLimited(*decision)
            } else {
                Refusal::Blocked(*decision)
            }
        }
        GateRefusal::Budget(refusal) => {
            let scope_name = scope_name(&refusal.scope, view.groups());
            Refusal::Budget {
                refusal,
                scope_name,
            }
        }
        GateRefusal::Unavailable(e) => Refusal::Internal(e.to_string()),
    }
}

impl Runtime {
    /// A builder over `stores` (see [`RuntimeBuilder`]).
    #[must_use]
    pub fn builder(stores: RuntimeStores) -> RuntimeBuilder {
        RuntimeBuilder::new(stores)
    }

    fn new(deps: RuntimeDeps) -> Self {
        Self {
            cache: Arc::new(FreshCache::new(deps.view_ttl)),
            deps: Arc::new(deps),
        }
    }

    /// The caller's view in the organization they chose (see [`Runtime::choose_org`]),
    /// with the organization's budget list (unless [`RuntimeDeps::fresh_budgets`]); reused
    /// for at most [`RuntimeDeps::view_ttl`], refreshed ahead of expiry by one background
    /// load, loaded once for concurrent callers that miss (see [`FreshCache`]).
    pub async fn caller_view(
        &self,
        user: UserId,
        requested: Option<&str>,
    ) -> Result<Arc<MemberView>, Refusal> {
        let key: ViewKey = (user, requested.unwrap_or("").trim().to_owned());
        match self.cache.lookup(&key) {
            Lookup::Fresh(view) => return Ok(view),
            Lookup::Refresh(view) => {
                // Refreshed ahead of expiry by one task while requests go on with this one.
                let me = self.clone();
                tokio::spawn(async move {
                    let (user, org) = key.clone();
                    let load = me.load_caller_view(user, Some(&org));
                    if let Err(e) = me.cache.refresh(key, || load).await {
                        tracing::debug!(error = ?e, "caller view not refreshed ahead of expiry");
                    }
                });
                return Ok(view);
            }
            Lookup::Miss => {}
        }
        let (user, org) = key.clone();
        self.cache
            .load(key, || self.load_caller_view(user, Some(&org)))
            .await
    }

    /// Drops every cached caller view, so the next request of each caller reads its view
    /// (organization and its settings, membership, groups, tier access, budget list) afresh:
    /// for a service that changed one of them (the server calls it after every change through
    /// its admin API). A load under way is not cached (it may have read the state before the
    /// change).
    pub fn forget_views(&self) {
        self.cache.forget_where(|_| true);
    }

    async fn load_caller_view(
        &self,
        user: UserId,
        requested: Option<&str>,
    ) -> Result<Arc<MemberView>, Refusal> {
        let org = self.choose_org(user, requested).await?;
        let mut view = self.member_view(org, user).await?;
        if !self.deps.fresh_budgets {
            // Strict mode reads the list at every admission; reading it here too would be
            // a second read on every cache miss.
            view.snapshot.budgets = self.deps.ledger.list_budgets(view.org().id).await?;
            view.budgets_loaded = true;
        }
        Ok(Arc::new(view))
    }

    /// The dependencies.
    #[must_use]
    pub fn deps(&self) -> &RuntimeDeps {
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
            snapshot: MemberSnapshot {
                org,
                membership,
                groups,
                catalog,
                subscriptions,
                budgets: Vec::new(),
            },
            access,
            budgets_loaded: false,
        })
    }

    /// Decides and reserves through the SDK's [`Gatekeeper`] (model access, pre-request
    /// guardrails and rate limits, budget reservation of the worst case). On success the
    /// reservation is held by the returned ticket until [`Runtime::complete`],
    /// [`Runtime::finish_stream`] or [`Runtime::abort`] (or its expiry).
    pub async fn admit(
        &self,
        view: &MemberView,
        request: ChatRequest,
        attribution: stratai_core::usage::Attribution,
    ) -> Result<Admission, Refusal> {
        let user = view.membership().user_id;
        if request.messages.is_empty() {
            return Err(Refusal::BadRequest {
                param: "messages",
                message: "`messages` must not be empty".to_owned(),
            });
        }
        let caller = Caller {
            org_id: view.org().id,
            user_id: user,
            group_id: None,
            conversation_id: attribution.conversation_id(),
            endpoint: attribution.endpoint().to_owned(),
        };
        let now = self.deps.clock.now();
        let gate = &self.deps.gatekeeper;
        let admitted = if self.deps.fresh_budgets || !view.budgets_loaded {
            let budgets = self.deps.ledger.list_budgets(view.org().id).await?;
            gate.admit_with_budgets(&caller, &view.snapshot, &budgets, &request, now)
                .await
        } else {
            gate.admit_with(&caller, &view.snapshot, &request, now)
                .await
        };
        let admitted = match admitted {
            Ok(a) => a,
            Err(refusal) => return Err(self.refusal(refusal, view)),
        };
        let warnings = admitted.warnings().to_vec();
        self::metrics::record_decision(
            if warnings.is_empty() { "allow" } else { "warn" },
            if warnings.is_empty() {
                ReasonKind::None
            } else {
                ReasonKind::Guardrail
            },
        );
        let admitted_at = self.deps.clock.now();
        let Some(tier) = view
            .catalog()
            .get(admitted.grant().tier_id)
            .map(|t| t.as_of(admitted_at))
        else {
            return Err(Refusal::Internal(format!(
                "tier `{}` vanished from the catalog",
                admitted.grant().tier_id
            )));
        };
        Ok(Admission {
            request: admitted.request().clone(),
            warnings,
            ticket: Ticket {
                request_id: admitted.request_id(),
                org_id: view.org().id,
                user_id: user,
                group_id: view.groups().iter().map(|g| g.id).min(),
                groups: view.groups().iter().map(|g| g.id).collect(),
                model: ModelId::new(admitted.request().model.clone())
                    .map_err(|e| Refusal::Internal(e.to_string()))?,
                budgets: admitted
                    .budget_states()
                    .iter()
                    .map(|s| s.budget.id)
                    .collect(),
                tier,
                admitted_at,
                started: Instant::now(),
                admission: admitted,
            },
        })
    }

    fn refusal(&self, refusal: GateRefusal, view: &MemberView) -> Refusal {
        let refusal = gate_refusal(refusal, view);
        match &refusal {
            Refusal::ModelDenied(_) => {
                self::metrics::record_decision("deny", ReasonKind::ModelAccess)
            }
            Refusal::RateLimited(_) => {
                self::metrics::record_decision("deny", ReasonKind::RateLimit)
            }
            Refusal::Blocked(_) => self::metrics::record_decision("deny", ReasonKind::Guardrail),
            Refusal::Budget { refusal, .. } => {
                self::metrics::record_decision("deny", ReasonKind::Budget);
                self::metrics::record_budget_refusal(&refusal.scope);
            }
            Refusal::Organization { .. } | Refusal::BadRequest { .. } | Refusal::Internal(_) => {}
        }
        refusal
    }

    /// Post-filters a whole answer, settles and records it (the Gatekeeper's `complete`).
    /// Returns the answer to deliver (`None`: a post guardrail blocked it), the post decision
    /// and what was billed. A store failure spools the record instead.
    pub async fn complete(
        &self,
        ticket: Ticket,
        response: ChatResponse,
    ) -> (Option<ChatResponse>, Option<Decision>, Billed) {
        let original = response.clone();
        let SplitTicket { admission, rest } = ticket.split();
        match admission.complete(response, self.deps.clock.now()).await {
            Ok(done) => {
                let billed = self.settled(&done.alerts, &done.usage, rest.started);
                let blocked = (!done.decision.is_allowed()).then_some(done.decision);
                (done.response, blocked, billed)
            }
            Err(unrecorded) => {
                let billed = self.spool(*unrecorded).await;
                if !billed.spooled {
                    // No record anywhere: no answer either (nothing was settled).
                    return (None, None, billed);
                }
                // The record is safe in the usage log: deliver the answer, filtered as the
                // Gatekeeper would have.
                let principal = crate::Principal {
                    org_id: rest.org_id,
                    user_id: rest.user_id,
                    groups: rest.groups.clone(),
                };
                let mut answer = original;
                for choice in &mut answer.choices {
                    let filtered = self.deps.guardrails.filter_answer(
                        &principal,
                        Some(rest.tier.id),
                        &choice.message.content,
                        Utc::now(),
                    );
                    match filtered.text {
                        Some(text) => choice.message.content = text,
                        None => return (None, Some(filtered.decision), billed),
                    }
                }
                (Some(answer), None, billed)
            }
        }
    }

    /// Settles a streamed answer (`complete` false: the client left, or the stream broke,
    /// after `usage` was produced).
    pub async fn finish_stream(
        &self,
        ticket: Ticket,
        end: crate::StreamEnd,
        usage: TokenUsage,
        upstream_id: Option<String>,
        complete: bool,
    ) -> Billed {
        let SplitTicket { admission, rest } = ticket.split();
        match admission
            .finish_stream(end, usage, upstream_id, complete, self.deps.clock.now())
            .await
        {
            Ok(done) => self.settled(&done.alerts, &done.usage, rest.started),
            Err(unrecorded) => self.spool(*unrecorded).await,
        }
    }

    /// The upstream failed: release the reservation, record the failed request, bill nothing.
    pub async fn abort(&self, ticket: Ticket) -> Billed {
        let SplitTicket { admission, rest } = ticket.split();
        if let Err(unrecorded) = admission.abort().await {
            tracing::warn!(error = %unrecorded.error, request_id = %rest.request_id, released = unrecorded.settled, "abort not recorded; an unreleased reservation expires");
            self.spool(*unrecorded).await;
        }
        Billed {
            amount: Money::ZERO,
            spooled: false,
        }
    }

    /// The Gatekeeper could not record or settle: fire the alerts the settlement raised,
    /// and have the usage log's writer finish what did not happen (the record, if the store
    /// refused it before the log had it; then the settlement; both idempotent by request id).
    async fn spool(&self, unrecorded: crate::Unrecorded) -> Billed {
        let crate::Unrecorded {
            error,
            recorded,
            settled,
            record,
            budgets,
            alerts,
        } = unrecorded;
        tracing::warn!(error = %error, request_id = %record.request_id, recorded, "usage not recorded or not settled; the usage log keeps it");
        self.deps.alerts.fire(&alerts);
        self.deps.alerts.overage(&record);
        let amount = record.billed_amount;
        let logged = match (&self.deps.spool, recorded) {
            (_, true) => Ok(()),
            (Some(log), false) => log
                .log_usage(std::slice::from_ref(&record), true)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            (None, false) => Err("no usage log is configured".to_owned()),
        };
        if let Err(e) = logged {
            // No record anywhere, so no settlement either: the reservation is released
            // (nothing spent, nothing recorded) and the answer withheld.
            tracing::error!(error = %e, request_id = %record.request_id, record = ?record, "USAGE RECORD NOT DURABLE: the store and the usage log failed; the request is not billed");
            if let Err(e) = self
                .deps
                .ledger
                .release(record.org_id, record.request_id)
                .await
            {
                tracing::warn!(error = %e, request_id = %record.request_id, "reservation not released; it expires");
            }
            return Billed {
                amount: Money::ZERO,
                spooled: false,
            };
        }
        let Some(log) = &self.deps.spool else {
            tracing::error!(request_id = %record.request_id, "settlement failed and no usage log is configured to retry it; the reservation expires");
            return Billed {
                amount,
                spooled: false,
            };
        };
        if !settled && !budgets.is_empty() {
            // The budgets are charged what the Gatekeeper would have: at most the
            // reservation (the rest is the record's overage); a failed request nothing.
            let charged = if record.status == UsageStatus::Failed {
                Money::ZERO
            } else {
                amount.saturating_sub(record.overage)
            };
            log.resettle(
                record.org_id,
                record.request_id,
                budgets,
                charged,
                record.created_at,
            );
        }
        Billed {
            amount,
            spooled: true,
        }
    }

    /// Recompiles the guardrail policy from the store (platform rules and every
    /// organization's rules); on an invalid rule set the current policy stays in force.
    pub async fn reload_guardrails(&self) -> Result<u64, String> {
        self.deps
            .guardrails
            .reload_from_store(
                self.deps.directory.as_ref(),
                self.deps.tiers.as_ref(),
                self.deps.rules.as_ref(),
            )
            .await
    }

    /// Recompiles the guardrail policy after a change of `org`'s rules (`None`: the
    /// platform's), reading that organization and the platform rules only
    /// ([`Guardrails::reload_org_from_store`]); what a rule change through the admin API runs.
    pub async fn reload_guardrails_of(&self, org: Option<OrgId>) -> Result<u64, String> {
        self.deps
            .guardrails
            .reload_org_from_store(
                org,
                self.deps.directory.as_ref(),
                self.deps.tiers.as_ref(),
                self.deps.rules.as_ref(),
            )
            .await
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

    /// The decision admission would make for `request` by `view`'s member at `at`, without
    /// its side effects (no rate-limit token taken, nothing reserved): the budget list as
    /// admission reads it, the Gatekeeper's one decision, the budgets judged as the
    /// reservation would.
    pub async fn explain(
        &self,
        view: &MemberView,
        request: &ChatRequest,
        at: DateTime<Utc>,
    ) -> Result<Plan, StoreError> {
        let caller = Caller {
            org_id: view.org().id,
            user_id: view.membership().user_id,
            group_id: None,
            conversation_id: None,
            endpoint: "chat".to_owned(),
        };
        let budgets = self.deps.ledger.list_budgets(view.org().id).await?;
        self.deps
            .gatekeeper
            .explain_request(&caller, &view.snapshot, &budgets, request, at)
            .await
    }

    /// Calls the provider for an admitted request and settles it: the answer post-filtered,
    /// the actual cost charged (at most the reservation), the usage record written (or
    /// spooled). The call and its settlement run to the end even if the caller stops waiting
    /// for this future (they then move to a task of their own, see [`Finish`]): the
    /// reservation never stays unsettled, nor the usage unrecorded.
    pub async fn call(&self, admission: Admission) -> Called {
        let me = self.clone();
        Finish::new(async move {
            let Admission {
                request, ticket, ..
            } = admission;
            let ctx = ticket.context();
            let started = Instant::now();
            let result = me.deps.llm.chat(&ctx, &request).await;
            let upstream = started.elapsed();
            self::metrics::record_upstream_latency(
                me.deps.provider,
                if result.is_ok() { "ok" } else { "error" },
                upstream,
            );
            let outcome = match result {
                Ok(answer) => match me.complete(ticket, answer).await {
                    (_, Some(decision), billed) => {
                        self::metrics::record_decision("deny", ReasonKind::Guardrail);
                        Err(CallFailure::Blocked { decision, billed })
                    }
                    (Some(answer), None, billed) => Ok(Served { answer, billed }),
                    (None, None, _) => Err(CallFailure::Upstream(GatewayError::Unavailable(
                        "the answer could not be recorded".to_owned(),
                    ))),
                },
                Err(e) => {
                    self::metrics::record_decision("deny", ReasonKind::Upstream);
                    me.abort(ticket).await;
                    Err(CallFailure::Upstream(e))
                }
            };
            Called { upstream, outcome }
        })
        .await
    }

    /// Opens the provider's stream for an admitted request: a [`stream::GovernedStream`]
    /// that post-filters the text as it flows and settles exactly once (when the stream ends,
    /// fails, is blocked, or is dropped). Also answers how long the provider took to open
    /// it. When it cannot be opened the reservation is released.
    pub async fn open_stream(
        &self,
        admission: Admission,
    ) -> (Duration, Result<stream::GovernedStream, GatewayError>) {
        let Admission {
            request, ticket, ..
        } = admission;
        let ctx = ticket.context();
        let started = Instant::now();
        let opened = self.deps.llm.chat_stream(&ctx, &request).await;
        let upstream = started.elapsed();
        match opened {
            Ok(s) => (
                upstream,
                Ok(stream::GovernedStream::new(
                    self.clone(),
                    s,
                    ticket,
                    &request,
                    started,
                )),
            ),
            Err(e) => {
                self::metrics::record_upstream_latency(self.deps.provider, "error", upstream);
                self::metrics::record_decision("deny", ReasonKind::Upstream);
                self.abort(ticket).await;
                (upstream, Err(e))
            }
        }
    }

    /// The whole governed path in one call, for a non-streamed `request` by `user` in the
    /// organization `org` names (id or slug; `None`: the user's only one): the cached view,
    /// admission, the provider call, settlement.
    pub async fn chat(
        &self,
        user: UserId,
        org: Option<&str>,
        request: ChatRequest,
    ) -> Result<Answer, ChatError> {
        let view = self.caller_view(user, org).await?;
        let admission = self
            .admit(&view, request, stratai_core::usage::Attribution::default())
            .await?;
        let request_id = admission.ticket.request_id;
        let warnings = admission.warnings.clone();
        match self.call(admission).await.outcome {
            Ok(Served { answer, billed }) => Ok(Answer {
                request_id,
                response: answer,
                billed,
                warnings,
            }),
            Err(CallFailure::Blocked { decision, billed }) => {
                Err(ChatError::Blocked { decision, billed })
            }
            Err(CallFailure::Upstream(e)) => Err(ChatError::Upstream(e)),
        }
    }

    /// Fires the alerts a settlement raised and measures how long its record took.
    fn settled(
        &self,
        alerts: &[stratai_core::budget::BudgetAlert],
        usage: &stratai_core::usage::UsageRecord,
        started: Instant,
    ) -> Billed {
        self.deps.alerts.fire(alerts);
        self.deps.alerts.overage(usage);
        self::metrics::record_usage_write_lag("direct", started);
        Billed {
            amount: usage.billed_amount,
            spooled: false,
        }
    }
}

impl Ticket {
    /// The provider's call context.
    #[must_use]
    pub fn context(&self) -> CallContext {
        CallContext {
            request_id: self.request_id,
            org_id: self.org_id,
            user_id: self.user_id,
        }
    }
}

/// What [`Runtime::call`] did: how long the provider took, and the outcome.
#[derive(Debug)]
pub struct Called {
    /// The provider call's duration.
    pub upstream: Duration,
    /// The answer as delivered, or why there is none.
    pub outcome: Result<Served, CallFailure>,
}

/// A delivered answer and its bill.
#[derive(Debug)]
pub struct Served {
    /// The answer, post-filtered.
    pub answer: ChatResponse,
    /// What it was billed.
    pub billed: Billed,
}

/// Why an admitted call delivered no answer.
#[derive(Debug)]
pub enum CallFailure {
    /// A post-response guardrail blocked the answer (which was still billed).
    Blocked {
        /// The blocking decision.
        decision: Decision,
        /// What was billed.
        billed: Billed,
    },
    /// The provider failed; the reservation was released and nothing billed.
    Upstream(GatewayError),
}

/// The answer of [`Runtime::chat`].
#[derive(Debug)]
pub struct Answer {
    /// The request id (the usage record's key).
    pub request_id: RequestId,
    /// The answer, post-filtered.
    pub response: ChatResponse,
    /// What it was billed.
    pub billed: Billed,
    /// Soft-budget and rule warnings.
    pub warnings: Vec<String>,
}

/// Why [`Runtime::chat`] answered nothing.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    /// The request was not admitted.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// A post-response guardrail blocked the answer.
    #[error("the answer was blocked by a guardrail (billed {})", billed.amount)]
    Blocked {
        /// The blocking decision.
        decision: Decision,
        /// What was billed.
        billed: Billed,
    },
    /// The provider failed; nothing was billed.
    #[error("the provider failed: {0}")]
    Upstream(GatewayError),
}

impl From<Refusal> for ChatError {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Organization { message, .. } | Self::Internal(message) => f.write_str(message),
            Self::BadRequest { param, message } => write!(f, "{param}: {message}"),
            Self::ModelDenied(denial) => f.write_str(&denial.message()),
            Self::Blocked(d) | Self::RateLimited(d) => match d.blocking_reasons().next() {
                Some(r) => write!(f, "{r}"),
                None => f.write_str("blocked by a guardrail"),
            },
            Self::Budget {
                refusal,
                scope_name,
            } => write!(f, "the {scope_name} budget: {refusal}"),
        }
    }
}
