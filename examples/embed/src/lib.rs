//! The seed's internal pilot, run through the governed path StratAI's server runs.
//!
//! This is what embedding StratAI looks like: put the directory, catalog and budgets in a
//! store (here the in-memory one of `stratai-store`), build a [`Runtime`] on it with the
//! provider (here a simulated model) and ask it. Every chat request of the report is
//! [`Runtime::caller_view`] -> [`Runtime::admit`] (the Gatekeeper's one decision, then the
//! reservation of the worst case) -> [`Runtime::call`] (the provider call, settlement bounded
//! by the reservation, the usage record): nothing here re-derives a decision. The rest of the
//! report asks core's pure functions:
//!
//! * the model selector: [`stratai_core::tiers::resolve_tiers`];
//! * prices of the usage history: [`stratai_core::pricing`];
//! * who may do what: [`stratai_core::access::authorize`];
//! * invitations: [`stratai_core::directory::Invitation`];
//! * reports: [`stratai_core::usage`].
//!
//! The clock is fixed ([`pilot_clock`], given to the runtime with
//! [`RuntimeBuilder::clock`](stratai_guardrails::runtime::RuntimeBuilder::clock)) so the
//! output is the same on every run.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use futures::stream::BoxStream;
use rust_decimal::Decimal;
use stratai_core::access::{Action, Actor, Resource, authorize};
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope, BudgetState, RequestScope};
use stratai_core::directory::{
    BillingPlan, Email, Group, GroupMembership, GroupRole, Invitation, InvitationRequest,
    Membership, OrgRole, OrgSettings, Organization, PlatformRole, Slug, User,
};
use stratai_core::gateway::{
    CallContext, ChatChoice, ChatChunk, ChatMessage, ChatRequest, ChatResponse, GatewayError,
    TokenUsage,
};
use stratai_core::ports::{Clock, LlmGateway};
use stratai_core::pricing::{PriceTable, estimate_prompt_tokens, price_usage};
use stratai_core::tiers::{
    Availability, BASIC_TIER_ID, DenialReason, MemberContext, PREMIUM_TIER_ID, STANDARD_TIER_ID,
    TierCatalog, TierSubscription, resolve_tiers, subscriptions_for,
};
use stratai_core::usage::{
    Dimension, DimensionValue, InvoiceInput, UsageQuery, UsageRecord, UsageStatus, aggregate,
    draft_invoice,
};
use stratai_core::{ModelId, Money, OrgId, RequestId, TierSlug, UserId};
use stratai_guardrails::runtime::{
    CallFailure, Refusal, Runtime, RuntimeHandle, RuntimeStores, Served,
};
use stratai_store::Stores;

/// Any failure building or running the pilot (none is expected: the data is fixed).
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The pilot's fixed "now": Thursday 2026-01-15 10:00 UTC.
#[must_use]
pub fn pilot_clock() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 15, 10, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// The pilot world: two organizations, their people, groups, budgets, ledger and usage.
pub struct Pilot {
    /// The seed's tier catalog.
    pub catalog: TierCatalog,
    /// Provider prices.
    pub prices: PriceTable,
    /// "Our Company" (`internal`): every tier.
    pub internal: Organization,
    /// "Acme Corp" (`acme`): Basic and Standard.
    pub acme: Organization,
    /// Both organizations' subscriptions.
    pub subscriptions: Vec<TierSubscription>,
    /// People by short name (`alice`, `bob`, ...).
    pub users: BTreeMap<&'static str, User>,
    /// Memberships of both organizations.
    pub memberships: Vec<Membership>,
    /// Groups of both organizations.
    pub groups: Vec<Group>,
    /// Group memberships.
    pub group_memberships: Vec<GroupMembership>,
    /// Budgets of both organizations.
    pub budgets: Vec<Budget>,
    /// The clock.
    pub now: DateTime<Utc>,
    /// Where all of the above lives: the in-memory store, with the usage history of January
    /// so far settled in its ledger and recorded.
    pub stores: Stores,
    /// The governed path on `stores`.
    pub runtime: Runtime,
    /// The runtime's background tasks (stopped by [`Pilot::shutdown`]).
    pub handle: RuntimeHandle,
    /// The model the runtime calls.
    pub model: Arc<SimulatedModel>,
    /// The async runtime the pilot's calls are driven on (the report is a plain function).
    exec: tokio::runtime::Runtime,
    /// Usage records written for the history, to name their upstream ids.
    history: usize,
}

/// The pilot's fixed clock.
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

/// The model the pilot calls: it answers each request with the number of tokens queued for
/// it ([`SimulatedModel::answer_next`]), its tokenizer counting the prompt at about 4
/// characters a token (below the bound the runtime reserves for).
#[derive(Debug, Default)]
pub struct SimulatedModel {
    answers: Mutex<VecDeque<u32>>,
}

impl SimulatedModel {
    /// The next call answers with `tokens` tokens.
    pub fn answer_next(&self, tokens: u32) {
        if let Ok(mut q) = self.answers.lock() {
            q.push_back(tokens);
        }
    }
}

#[async_trait]
impl LlmGateway for SimulatedModel {
    async fn chat(
        &self,
        ctx: &CallContext,
        request: &ChatRequest,
    ) -> Result<ChatResponse, GatewayError> {
        let completion_tokens = self
            .answers
            .lock()
            .ok()
            .and_then(|mut q| q.pop_front())
            .ok_or_else(|| GatewayError::Unavailable("no answer queued".to_owned()))?;
        let prompt_tokens = estimate_prompt_tokens(&request.messages);
        Ok(ChatResponse {
            id: format!("chatcmpl-{}", ctx.request_id),
            object: "chat.completion".to_owned(),
            created: 0,
            model: request.model.clone(),
            choices: vec![ChatChoice {
                index: 0,
                message: ChatMessage {
                    role: "assistant".to_owned(),
                    content: "...".to_owned(),
                },
                finish_reason: Some("stop".to_owned()),
            }],
            usage: TokenUsage {
                prompt_tokens,
                completion_tokens,
                total_tokens: prompt_tokens.saturating_add(completion_tokens),
            },
        })
    }

    async fn chat_stream(
        &self,
        _ctx: &CallContext,
        _request: &ChatRequest,
    ) -> Result<BoxStream<'static, Result<ChatChunk, GatewayError>>, GatewayError> {
        Err(GatewayError::Unavailable(
            "the pilot does not stream".to_owned(),
        ))
    }
}

fn tiers(slugs: &[&str]) -> Result<Vec<TierSlug>, Error> {
    slugs
        .iter()
        .map(|s| TierSlug::new(*s).map_err(Error::from))
        .collect()
}

impl Pilot {
    /// Builds the pilot (with the usage history of January 2 to 14 settled in the ledger).
    pub fn build(now: DateTime<Utc>) -> Result<Self, Error> {
        let month_start = now - Duration::days(14);
        let mut internal_settings = OrgSettings::new(
            tiers(&["basic", "standard", "premium"])?,
            TierSlug::new("standard")?,
        )?;
        internal_settings.max_users_per_group = 50;
        let internal = Organization::new(
            "Our Company",
            Slug::new("internal")?,
            internal_settings,
            BillingPlan::Enterprise,
            month_start,
        )?;
        let mut acme_settings =
            OrgSettings::new(tiers(&["basic", "standard"])?, TierSlug::new("standard")?)?;
        acme_settings.timezone = Some("Europe/Berlin".to_owned());
        let acme = Organization::new(
            "Acme Corp",
            Slug::new("acme")?,
            acme_settings,
            BillingPlan::Business,
            month_start,
        )?;

        let mut subscriptions = subscriptions_for(
            internal.id,
            &[BASIC_TIER_ID, STANDARD_TIER_ID, PREMIUM_TIER_ID],
            month_start,
        );
        subscriptions.extend(subscriptions_for(
            acme.id,
            &[BASIC_TIER_ID, STANDARD_TIER_ID],
            month_start,
        ));

        let mut users = BTreeMap::new();
        for (name, email, role) in [
            ("alice", "alice@stratai.example", PlatformRole::SuperAdmin),
            ("bob", "bob@stratai.example", PlatformRole::User),
            ("carol", "carol@stratai.example", PlatformRole::User),
            ("dana", "dana@acme.example", PlatformRole::User),
            ("erin", "erin@acme.example", PlatformRole::User),
        ] {
            let display = format!("{}{}", name[..1].to_uppercase(), &name[1..]);
            users.insert(
                name,
                User::new(Email::new(email)?, Some(&display), role, month_start)?,
            );
        }
        let id = |users: &BTreeMap<&str, User>, n: &str| -> Result<UserId, Error> {
            users
                .get(n)
                .map(|u| u.id)
                .ok_or_else(|| format!("no user {n}").into())
        };
        let (alice, bob, carol, dana, erin) = (
            id(&users, "alice")?,
            id(&users, "bob")?,
            id(&users, "carol")?,
            id(&users, "dana")?,
            id(&users, "erin")?,
        );

        let memberships = vec![
            Membership::new(internal.id, alice, OrgRole::Owner, month_start),
            Membership::new(internal.id, bob, OrgRole::Member, month_start),
            Membership::new(internal.id, carol, OrgRole::Member, month_start),
            // The seed's scenario: a Standard-only user in an organization without Premium.
            Membership::new(acme.id, dana, OrgRole::Member, month_start)
                .with_allowed_tiers(tiers(&["basic", "standard"])?)?
                .with_monthly_budget(Money::dollars(5)),
            Membership::new(acme.id, erin, OrgRole::Admin, month_start),
        ];
        let engineering = Group::new(internal.id, "Engineering", month_start)?
            .with_description("Builds the product");
        let marketing = Group::new(internal.id, "Marketing", month_start)?
            .with_allowed_tiers(tiers(&["basic", "standard"])?)?
            .with_monthly_budget(Money::dollars(50));
        let group_memberships = vec![
            GroupMembership::new(
                internal.id,
                engineering.id,
                bob,
                GroupRole::Lead,
                month_start,
            ),
            GroupMembership::new(
                internal.id,
                marketing.id,
                carol,
                GroupRole::Member,
                month_start,
            ),
        ];

        let threshold = Decimal::new(8, 1);
        let budgets = vec![
            Budget::new(
                internal.id,
                BudgetScope::Org,
                Money::dollars(10_000),
                BudgetPeriod::Monthly,
                true,
                threshold,
                month_start,
            )?,
            Budget::new(
                internal.id,
                BudgetScope::Tier(PREMIUM_TIER_ID),
                Money::dollars(2_000),
                BudgetPeriod::Monthly,
                true,
                threshold,
                month_start,
            )?,
            Budget::new(
                internal.id,
                BudgetScope::Group(marketing.id),
                Money::dollars(50),
                BudgetPeriod::Monthly,
                false,
                threshold,
                month_start,
            )?,
            Budget::new(
                acme.id,
                BudgetScope::Org,
                Money::dollars(500),
                BudgetPeriod::Monthly,
                true,
                threshold,
                month_start,
            )?,
            Budget::new(
                acme.id,
                BudgetScope::User(dana),
                Money::dollars(5),
                BudgetPeriod::Monthly,
                true,
                threshold,
                month_start,
            )?,
        ];
        let exec = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let catalog = TierCatalog::seed_default();
        let stores = Stores::memory();
        let groups = vec![engineering, marketing];
        exec.block_on(async {
            for tier in catalog.tiers() {
                stores.tiers.upsert_tier(tier).await?;
            }
            for org in [&internal, &acme] {
                stores.directory.create_org(org).await?;
            }
            for s in &subscriptions {
                stores.tiers.put_subscription(s.org_id, s).await?;
            }
            for user in users.values() {
                stores.directory.create_user(user).await?;
            }
            for m in &memberships {
                stores.directory.add_member(m.org_id, m).await?;
            }
            for g in &groups {
                stores.directory.create_group(g.org_id, g).await?;
            }
            for gm in &group_memberships {
                stores.directory.put_group_member(gm.org_id, gm).await?;
            }
            for b in &budgets {
                stores.budgets.create_budget(b.org_id, b).await?;
            }
            Ok::<_, Error>(())
        })?;
        let model = Arc::new(SimulatedModel::default());
        let (runtime, handle) = exec.block_on(
            Runtime::builder(RuntimeStores {
                directory: stores.directory.clone(),
                tiers: stores.tiers.clone(),
                budgets: stores.budgets.clone(),
                usage: stores.usage.clone(),
                rules: stores.guardrails.clone(),
            })
            .provider(model.clone(), "simulated")
            .clock(Arc::new(FixedClock(now)))
            .build(),
        )?;

        let mut pilot = Pilot {
            catalog,
            prices: PriceTable::seed_defaults(),
            internal,
            acme,
            subscriptions,
            users,
            memberships,
            groups,
            group_memberships,
            budgets,
            now,
            stores,
            runtime,
            handle,
            model,
            exec,
            history: 0,
        };
        // January so far (input, output tokens). Dana's history leaves her $0.05 of $5; the
        // Marketing group is at $49.99 of its soft $50.
        let internal_id = pilot.internal.id;
        let acme_id = pilot.acme.id;
        let history: [(&str, OrgId, &str, u32, u32, i64); 8] = [
            (
                "alice",
                internal_id,
                "claude-sonnet-4-20250514",
                420_000,
                96_000,
                2,
            ),
            (
                "bob",
                internal_id,
                "claude-opus-4-5-20251101",
                900_000,
                210_000,
                5,
            ),
            ("bob", internal_id, "gpt-4o-mini", 2_400_000, 600_000, 6),
            ("carol", internal_id, "gpt-4o", 3_000_000, 2_374_375, 7),
            ("alice", internal_id, "o3", 150_000, 80_000, 9),
            ("dana", acme_id, "gpt-4o", 300_000, 234_375, 8),
            ("erin", acme_id, "gemini-2.0-flash", 1_200_000, 300_000, 12),
            (
                "erin",
                acme_id,
                "claude-3-7-sonnet-20250219",
                250_000,
                60_000,
                13,
            ),
        ];
        for (user, org, model, input, output, day) in history {
            let at = month_start + Duration::days(day - 1) + Duration::hours(9 + day % 5);
            pilot.record_spend(user, org, &ModelId::new(model)?, input, output, at)?;
        }
        Ok(pilot)
    }

    /// A person by short name.
    pub fn user(&self, name: &str) -> Result<&User, Error> {
        self.users
            .get(name)
            .ok_or_else(|| format!("no user `{name}`").into())
    }

    fn org(&self, id: OrgId) -> Result<&Organization, Error> {
        [&self.internal, &self.acme]
            .into_iter()
            .find(|o| o.id == id)
            .ok_or_else(|| format!("no organization `{id}`").into())
    }

    fn membership(&self, org: OrgId, user: UserId) -> Result<&Membership, Error> {
        self.memberships
            .iter()
            .find(|m| m.org_id == org && m.user_id == user)
            .ok_or_else(|| format!("`{user}` is not a member of `{org}`").into())
    }

    fn groups_of(&self, org: OrgId, user: UserId) -> Vec<Group> {
        self.groups
            .iter()
            .filter(|g| {
                g.org_id == org
                    && self
                        .group_memberships
                        .iter()
                        .any(|gm| gm.group_id == g.id && gm.user_id == user)
            })
            .cloned()
            .collect()
    }

    /// The access-control actor for a person.
    pub fn actor(&self, name: &str) -> Result<Actor, Error> {
        Ok(Actor::new(
            self.user(name)?,
            &self.memberships,
            &self.group_memberships,
        ))
    }

    /// Loads one call of the usage history: prices it, settles it in the store's ledger and
    /// records its usage (history, not a request: it was admitted before the pilot's "now").
    fn record_spend(
        &mut self,
        user: &str,
        org: OrgId,
        model: &ModelId,
        input: u32,
        output: u32,
        at: DateTime<Utc>,
    ) -> Result<Money, Error> {
        let user_id = self.user(user)?.id;
        let tier = self
            .catalog
            .tier_of_model(model)
            .ok_or("model without tier")?
            .clone();
        let usage = TokenUsage {
            prompt_tokens: input,
            completion_tokens: output,
            total_tokens: input.saturating_add(output),
        };
        let cost = price_usage(&self.prices, &tier, model, &usage)?;
        let request_id = RequestId::new();
        let groups = self.groups_of(org, user_id);
        let group_ids: Vec<_> = groups.iter().map(|g| g.id).collect();
        let scope = RequestScope {
            org_id: org,
            user_id,
            group_ids: &group_ids,
            tier_id: Some(tier.id),
        };
        let budget_ids: Vec<_> = stratai_core::budget::applicable_budgets(&self.budgets, &scope)
            .iter()
            .map(|b| b.id)
            .collect();
        self.history += 1;
        let record = UsageRecord {
            request_id,
            org_id: org,
            group_id: group_ids.first().copied(),
            user_id,
            tier_id: Some(tier.id),
            model: model.clone(),
            input_tokens: input,
            output_tokens: output,
            provider_cost: cost.provider_cost,
            billed_amount: cost.billed_amount,
            overage: Default::default(),
            litellm_request_id: Some(format!("chatcmpl-{}", self.history)),
            conversation_id: None,
            endpoint: "chat".to_owned(),
            status: UsageStatus::Success,
            created_at: at,
            lease_id: None,
        };
        self.exec.block_on(async {
            self.stores
                .budgets
                .settle(org, request_id, &budget_ids, cost.billed_amount, at)
                .await?;
            self.stores.usage.append(org, &[record]).await?;
            Ok::<_, Error>(())
        })?;
        Ok(cost.billed_amount)
    }

    /// Every usage record of both organizations, oldest first.
    pub fn usage(&self) -> Result<Vec<UsageRecord>, Error> {
        self.exec.block_on(async {
            let mut all = Vec::new();
            for org in [self.internal.id, self.acme.id] {
                all.extend(
                    self.stores
                        .usage
                        .query(org, &UsageQuery::default(), u32::MAX)
                        .await?,
                );
            }
            Ok(all)
        })
    }

    /// Every budget's state (spent, reserved, alert sent) in the period current now.
    pub fn budget_states(&self) -> Result<Vec<BudgetState>, Error> {
        self.exec.block_on(async {
            let mut all = Vec::new();
            for org in [self.internal.id, self.acme.id] {
                let ids: Vec<_> = self
                    .budgets
                    .iter()
                    .filter(|b| b.org_id == org)
                    .map(|b| b.id)
                    .collect();
                all.extend(self.stores.budgets.states(org, &ids, self.now).await?);
            }
            Ok(all)
        })
    }

    /// Stops the runtime's background tasks (queued usage records written first).
    pub fn shutdown(&self) {
        self.exec
            .block_on(self.handle.shutdown(std::time::Duration::from_secs(5)));
    }
}

/// A chat request to decide.
#[derive(Clone, Debug)]
pub struct Ask<'a> {
    /// Who asks (short name).
    pub user: &'a str,
    /// In which organization.
    pub org: OrgId,
    /// The model.
    pub model: &'a str,
    /// The prompt.
    pub prompt: &'a str,
    /// `max_tokens`, if set.
    pub max_tokens: Option<u32>,
    /// How many tokens the (simulated) model answers with.
    pub answer_tokens: u32,
}

/// What happened to a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The model is not accessible.
    ModelDenied {
        /// The model's tier, when the model is known.
        tier: Option<String>,
        /// Why, one sentence per reason (the first is the primary one).
        reasons: Vec<String>,
        /// What to do.
        hint: Option<String>,
    },
    /// A hard budget has no room for the worst case.
    BudgetDenied {
        /// The worst-case estimate.
        estimate: Money,
        /// Why.
        message: String,
    },
    /// Served.
    Served {
        /// The model's tier.
        tier: String,
        /// Reserved before the call.
        reserved: Money,
        /// Billed after it.
        billed: Money,
        /// What the provider charged.
        provider_cost: Money,
        /// Soft budgets passed.
        warnings: Vec<String>,
    },
}

/// Serves one request through the governed path, as a service embedding StratAI does: the
/// caller's view, admission (the one decision: model access, guardrails, the worst case and
/// the applicable budgets; then the reservation), the (simulated) model's call, settlement
/// of the actual cost and the usage record.
pub fn handle(pilot: &Pilot, ask: &Ask<'_>) -> Result<Verdict, Error> {
    let user = pilot.user(ask.user)?.id;
    let org = pilot.org(ask.org)?.slug.to_string();
    let request = ChatRequest {
        model: ask.model.to_owned(),
        messages: vec![ChatMessage {
            role: "user".to_owned(),
            content: ask.prompt.to_owned(),
        }],
        max_tokens: ask.max_tokens,
        temperature: None,
        stream: false,
        user: None,
    };
    let runtime = &pilot.runtime;
    pilot.exec.block_on(async {
        let view = runtime
            .caller_view(user, Some(&org))
            .await
            .map_err(|r| r.to_string())?;
        let admission = match runtime
            .admit(&view, request, stratai_core::usage::Attribution::default())
            .await
        {
            Ok(admission) => admission,
            Err(Refusal::ModelDenied(denial)) => {
                let (tier, reasons) = match &denial.reason {
                    DenialReason::TierLocked {
                        tier_name, reasons, ..
                    } => (
                        Some(tier_name.clone()),
                        reasons.iter().map(|r| r.explain(tier_name)).collect(),
                    ),
                    _ => (None, vec![denial.message()]),
                };
                return Ok(Verdict::ModelDenied {
                    tier,
                    reasons,
                    hint: denial.hint(),
                });
            }
            Err(Refusal::Budget { refusal, .. }) => {
                return Ok(Verdict::BudgetDenied {
                    estimate: refusal.requested,
                    message: refusal.to_string(),
                });
            }
            Err(other) => return Err(other.to_string().into()),
        };
        let tier = admission.ticket.tier.name.clone();
        let reserved = admission.ticket.admission.reserved();
        let warnings = admission.warnings.clone();
        let org_id = admission.ticket.org_id;
        let request_id = admission.ticket.request_id;
        pilot.model.answer_next(ask.answer_tokens);
        match runtime.call(admission).await.outcome {
            Ok(Served { billed, .. }) => {
                let record = pilot.stores.usage.get(org_id, request_id).await?;
                Ok(Verdict::Served {
                    tier,
                    reserved,
                    billed: billed.amount,
                    provider_cost: record.provider_cost,
                    warnings,
                })
            }
            Err(CallFailure::Blocked { decision, .. }) => {
                Err(format!("the answer was blocked: {decision:?}").into())
            }
            Err(CallFailure::Upstream(e)) => Err(e.to_string().into()),
        }
    })
}

fn verdict_lines(who: &str, ask: &Ask<'_>, verdict: &Verdict) -> String {
    let head = format!("{who} -> {}", ask.model);
    match verdict {
        Verdict::ModelDenied {
            tier,
            reasons,
            hint,
        } => {
            let tier = tier
                .as_ref()
                .map(|t| format!(" ({t} tier)"))
                .unwrap_or_default();
            let mut s = format!("  [DENY ] {head}{tier}\n");
            for r in reasons {
                s.push_str(&format!("          - {r}\n"));
            }
            if let Some(h) = hint {
                s.push_str(&format!("          hint: {h}\n"));
            }
            s
        }
        Verdict::BudgetDenied { estimate, message } => format!(
            "  [DENY ] {head} (max_tokens {})\n          worst case {estimate}: {message}\n",
            ask.max_tokens.map_or("unset".to_owned(), |m| m.to_string())
        ),
        Verdict::Served {
            tier,
            reserved,
            billed,
            provider_cost,
            warnings,
        } => {
            let tag = if warnings.is_empty() {
                "ALLOW"
            } else {
                "WARN "
            };
            let mut s = format!(
                "  [{tag}] {head} ({tier} tier)\n          reserved {reserved} (worst case), billed {billed}, provider cost {provider_cost}\n"
            );
            for w in warnings {
                s.push_str(&format!("          warning: {w}\n"));
            }
            s
        }
    }
}

/// Dollars for display: at least two decimals, all the significant ones the amount has.
#[must_use]
pub fn usd(amount: Money) -> String {
    let mut d = amount.amount();
    if d.scale() < 2 {
        d.rescale(2);
    }
    format!("${d}")
}

/// Runs the pilot and renders everything the binary prints.
pub fn report(now: DateTime<Utc>) -> Result<String, Error> {
    let pilot = Pilot::build(now)?;
    let mut out = String::new();
    let title = format!(
        "StratAI embedded in a Rust program: the internal pilot on {}",
        now.format("%Y-%m-%d %H:%M UTC")
    );
    writeln!(out, "{title}\n{}\n", "=".repeat(title.chars().count()))?;

    writeln!(
        out,
        "Tier catalog (the seed's defaults; billed $ per 1M input / output tokens)"
    )?;
    for t in pilot.catalog.tiers() {
        let models: Vec<&str> = t.models.iter().map(ModelId::as_str).collect();
        writeln!(
            out,
            "  {:<9} ${:>5} / ${:>5}   {}",
            t.name,
            t.input_rate_per_million,
            t.output_rate_per_million,
            models.join(", ")
        )?;
    }

    writeln!(out, "\nOrganizations")?;
    for org in [&pilot.internal, &pilot.acme] {
        let subscribed: Vec<String> = pilot
            .subscriptions
            .iter()
            .filter(|s| s.org_id == org.id && s.enabled)
            .filter_map(|s| pilot.catalog.get(s.tier_id).map(|t| t.name.clone()))
            .collect();
        writeln!(
            out,
            "  {:<9} {:<12} {:<10} plan, subscribed to {}",
            org.slug.as_str(),
            org.name,
            org.billing_plan.as_str(),
            subscribed.join(" + ")
        )?;
    }
    writeln!(out, "\nPeople")?;
    for (name, desc) in [
        ("alice", "platform super admin; owner of internal"),
        ("bob", "member of internal; lead of Engineering (all tiers)"),
        (
            "carol",
            "member of internal; in Marketing (Basic + Standard, soft $50/month)",
        ),
        (
            "dana",
            "member of acme, allowed Basic + Standard; own hard budget $5/month",
        ),
        ("erin", "admin of acme"),
    ] {
        writeln!(out, "  {:<24} {desc}", pilot.user(name)?.email.as_str())?;
    }

    // ---- model access and budgets ----
    writeln!(
        out,
        "\n1. Chat requests: model access, then budgets (worst case reserved, actual billed)"
    )?;
    let (internal, acme) = (pilot.internal.id, pilot.acme.id);
    let asks = [
        Ask {
            user: "dana",
            org: acme,
            model: "claude-opus-4-5-20251101",
            prompt: "Draft our 5-year strategy.",
            max_tokens: Some(2_000),
            answer_tokens: 1_500,
        },
        Ask {
            user: "dana",
            org: acme,
            model: "gpt-4o",
            prompt: "Summarize the attached meeting notes for the team.",
            max_tokens: Some(4_000),
            answer_tokens: 600,
        },
        Ask {
            user: "dana",
            org: acme,
            model: "gpt-4o",
            prompt: "Summarize the attached meeting notes for the team.",
            max_tokens: Some(1_000),
            answer_tokens: 600,
        },
        Ask {
            user: "bob",
            org: internal,
            model: "claude-opus-4-5-20251101",
            prompt: "Review this service architecture for failure modes.",
            max_tokens: Some(2_000),
            answer_tokens: 1_400,
        },
        Ask {
            user: "carol",
            org: internal,
            model: "o1",
            prompt: "Plan the launch campaign.",
            max_tokens: None,
            answer_tokens: 900,
        },
        Ask {
            user: "carol",
            org: internal,
            model: "gpt-4o",
            prompt: "Write three taglines for the launch.",
            max_tokens: Some(2_000),
            answer_tokens: 120,
        },
        Ask {
            user: "bob",
            org: internal,
            model: "gpt-7",
            prompt: "Hello?",
            max_tokens: None,
            answer_tokens: 1,
        },
    ];
    for ask in &asks {
        let who = pilot.user(ask.user)?.email.to_string();
        let verdict = handle(&pilot, ask)?;
        out.push_str(&verdict_lines(&who, ask, &verdict));
    }

    writeln!(out, "\n2. The model selector for dana@acme.example")?;
    {
        let dana = pilot.user("dana")?.id;
        let membership = pilot.membership(acme, dana)?.clone();
        let groups = pilot.groups_of(acme, dana);
        let ctx = MemberContext {
            org: &pilot.acme,
            subscriptions: &pilot.subscriptions,
            membership: &membership,
            groups: &groups,
        };
        for status in resolve_tiers(&pilot.catalog, &ctx)?.tiers {
            match &status.availability {
                Availability::Accessible => writeln!(
                    out,
                    "  {:<9} open     {} models",
                    status.name,
                    status.models.len()
                )?,
                Availability::Locked { reasons } => {
                    let why: Vec<String> =
                        reasons.iter().map(|r| r.explain(&status.name)).collect();
                    let button = status
                        .unlock_label()
                        .map(|l| format!("[{l}] "))
                        .unwrap_or_default();
                    writeln!(
                        out,
                        "  {:<9} locked   {button}{}",
                        status.name,
                        why.join("; ")
                    )?;
                }
            }
        }
    }

    // ---- alerts ----
    writeln!(
        out,
        "\n3. Budget alerts fired this month (each once per budget and period)"
    )?;
    for s in pilot.budget_states()? {
        if s.alert_sent {
            let org = pilot.org(s.budget.org_id)?;
            let scope = match s.budget.scope {
                BudgetScope::Org => "organization".to_owned(),
                BudgetScope::Group(g) => format!(
                    "group {}",
                    pilot
                        .groups
                        .iter()
                        .find(|x| x.id == g)
                        .map_or("?", |x| x.name.as_str())
                ),
                BudgetScope::User(u) => format!(
                    "member {}",
                    pilot
                        .users
                        .values()
                        .find(|x| x.id == u)
                        .map_or("?", |x| x.email.as_str())
                ),
                BudgetScope::Tier(t) => format!(
                    "tier {}",
                    pilot.catalog.get(t).map_or("?", |x| x.name.as_str())
                ),
            };
            writeln!(
                out,
                "  {:<9} {:<32} {} of {} spent (alert at {}%)",
                org.slug.as_str(),
                format!("{scope} budget:"),
                usd(s.spent),
                usd(s.budget.limit),
                (s.budget.alert_threshold * Decimal::from(100)).normalize()
            )?;
        }
    }

    // ---- access control ----
    writeln!(out, "\n4. Who may do what (RBAC)")?;
    let bob_id = pilot.user("bob")?.id;
    let engineering = pilot
        .groups
        .iter()
        .find(|g| g.name == "Engineering")
        .map(|g| g.id)
        .ok_or("no Engineering")?;
    let checks: [(&str, Action, Resource); 7] = [
        ("alice", Action::ManageTiers, Resource::Platform),
        ("erin", Action::ManageBudgets, Resource::Org(acme)),
        ("erin", Action::ViewOrgUsage, Resource::Org(internal)),
        ("erin", Action::ChangeOwners, Resource::Org(acme)),
        ("carol", Action::ManageGuardrails, Resource::Org(internal)),
        (
            "bob",
            Action::ViewGroupUsage,
            Resource::Group {
                org_id: internal,
                group_id: engineering,
            },
        ),
        (
            "carol",
            Action::ViewMemberUsage,
            Resource::Member {
                org_id: internal,
                user_id: bob_id,
            },
        ),
    ];
    for (who, action, resource) in checks {
        let email = pilot.user(who)?.email.to_string();
        let target = match resource {
            Resource::Platform => "the platform".to_owned(),
            Resource::Org(o) => format!("org {}", pilot.org(o)?.slug),
            Resource::Group { .. } => "group Engineering".to_owned(),
            Resource::Member { .. } => "bob's usage".to_owned(),
        };
        match authorize(&pilot.actor(who)?, action, &resource) {
            Ok(()) => writeln!(out, "  [ALLOW] {email} {action} on {target}")?,
            Err(denied) => writeln!(
                out,
                "  [DENY ] {email} {action} on {target}: {}",
                denied.reason
            )?,
        }
    }

    // ---- invitation ----
    writeln!(out, "\n5. An invitation to acme")?;
    let (mut invitation, token) = Invitation::issue(
        InvitationRequest {
            email: Email::new("frank@acme.example")?,
            org_id: acme,
            role: OrgRole::Member,
            group_ids: Vec::new(),
            profile_id: None,
            invited_by: Some(pilot.user("erin")?.id),
            valid_for: Duration::days(7),
        },
        now,
    )?;
    writeln!(
        out,
        "  issued for frank@acme.example, valid 7 days: a {}-character token is shown once; only its SHA-256 is stored",
        token.expose().len()
    )?;
    match invitation.accept(&Email::new("mallory@evil.example")?, now) {
        Ok(()) => writeln!(out, "  accept as mallory@evil.example: accepted")?,
        Err(e) => writeln!(out, "  accept as mallory@evil.example: refused ({e})")?,
    }
    match invitation.accept(&Email::new("Frank@Acme.example")?, now + Duration::hours(3)) {
        Ok(()) => writeln!(
            out,
            "  accept as Frank@Acme.example: accepted, joins acme as a {}",
            invitation.role.as_str()
        )?,
        Err(e) => writeln!(out, "  accept as Frank@Acme.example: refused ({e})")?,
    }
    if let Err(e) = invitation.accept(&Email::new("frank@acme.example")?, now + Duration::hours(4))
    {
        writeln!(out, "  accept again: refused ({e})")?;
    }

    // ---- usage and billing ----
    writeln!(out, "\n6. January usage of internal by tier")?;
    let usage = pilot.usage()?;
    let internal_usage: Vec<&UsageRecord> = usage.iter().filter(|r| r.org_id == internal).collect();
    for row in aggregate(internal_usage.iter().copied(), &[Dimension::Tier]) {
        let name = match row.key.first() {
            Some(DimensionValue::Tier(Some(t))) => pilot
                .catalog
                .get(*t)
                .map_or_else(|| t.to_string(), |t| t.name.clone()),
            _ => "untiered".to_owned(),
        };
        writeln!(
            out,
            "  {:<9} {:>2} requests {:>10} tokens   billed {:>12}   provider cost {:>12}",
            name,
            row.totals.requests,
            row.totals.input_tokens + row.totals.output_tokens,
            usd(row.totals.billed_amount),
            usd(row.totals.provider_cost)
        )?;
    }

    let invoice = draft_invoice(&InvoiceInput {
        org_id: acme,
        tz: pilot.acme.tz(),
        period_start: NaiveDate::from_ymd_opt(2026, 1, 1).ok_or("date")?,
        period_end: NaiveDate::from_ymd_opt(2026, 1, 31).ok_or("date")?,
        records: &usage,
        catalog: &pilot.catalog,
        subscriptions: &pilot.subscriptions,
        tax_rate: Decimal::new(19, 2),
        now,
    })?;
    writeln!(out, "\n7. Draft invoice for acme, January 2026 (so far)")?;
    for line in &invoice.lines {
        writeln!(out, "  {:<62} {:>10}", line.description, usd(line.amount))?;
    }
    writeln!(out, "  {:<62} {:>10}", "subtotal", usd(invoice.subtotal))?;
    writeln!(
        out,
        "  {:<62} {:>10}",
        format!(
            "tax {}%",
            (invoice.tax_rate * Decimal::from(100)).normalize()
        ),
        usd(invoice.tax)
    )?;
    writeln!(out, "  {:<62} {:>10}", "total", usd(invoice.total))?;
    pilot.shutdown();
    Ok(out)
}
