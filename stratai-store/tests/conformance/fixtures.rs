//! Builders shared by the bodies: every entity gets fresh ids and random unique names.

use chrono::{DateTime, Duration, Utc};
use rust_decimal::Decimal;
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope};
use stratai_core::directory::{
    BillingPlan, Email, Group, Invitation, InvitationStatus, Membership, OrgRole, OrgSettings,
    Organization, PlatformRole, Slug, User,
};
use stratai_core::ports::{
    BudgetLedger, DirectoryStore, GuardrailStore, InvoiceStore, KeyVaultStore, OutboxStore,
    RuleAction, RuleRecord, RuleScope, TierStore, UsageStore,
};
use stratai_core::tiers::ModelTier;
use stratai_core::usage::UsageRecord;
use stratai_core::{
    BudgetId, GroupId, InvitationId, ModelId, Money, OrgId, RuleId, TierId, TierSlug, UserId,
};

/// Every port at once.
pub trait Store:
    DirectoryStore
    + TierStore
    + BudgetLedger
    + UsageStore
    + GuardrailStore
    + OutboxStore
    + KeyVaultStore
    + InvoiceStore
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<T> Store for T where
    T: DirectoryStore
        + TierStore
        + BudgetLedger
        + UsageStore
        + GuardrailStore
        + OutboxStore
        + KeyVaultStore
        + InvoiceStore
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// A fixed "now" for the suite: 2026-01-15 12:00 UTC.
pub fn now() -> DateTime<Utc> {
    at("2026-01-15T12:00:00Z")
}

pub fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

pub fn money(text: &str) -> Money {
    Money::parse(text).unwrap()
}

/// A short random suffix for names that must be unique platform-wide.
pub fn unique() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

pub fn tier_slug(s: &str) -> TierSlug {
    TierSlug::new(s).unwrap()
}

pub fn new_org() -> Organization {
    Organization {
        id: OrgId::new(),
        name: "Acme".to_owned(),
        slug: Slug::new(format!("org-{}", unique())).unwrap(),
        settings: OrgSettings {
            allowed_tiers: vec![tier_slug("basic"), tier_slug("standard")],
            default_tier: tier_slug("standard"),
            max_users_per_group: 100,
            require_mfa: false,
            timezone: None,
            signup_domains: Vec::new(),
        },
        billing_email: Some(Email::new("billing@acme.example").unwrap()),
        billing_plan: BillingPlan::Business,
        active: true,
        litellm_org_id: None,
        created_at: now(),
        updated_at: now(),
    }
}

pub async fn org<S: Store>(store: &S) -> Organization {
    let org = new_org();
    store.create_org(&org).await.unwrap();
    org
}

pub fn new_user() -> User {
    let tag = unique();
    User {
        id: UserId::new(),
        email: Email::new(format!("user-{tag}@example.com")).unwrap(),
        name: Some("Ada".to_owned()),
        avatar_url: None,
        oidc_subject: Some(format!("auth0|{tag}")),
        platform_role: PlatformRole::User,
        active: true,
        last_login_at: None,
        created_at: now(),
    }
}

pub async fn user<S: Store>(store: &S) -> User {
    let user = new_user();
    store.create_user(&user).await.unwrap();
    user
}

pub fn membership(org: OrgId, user: UserId, role: OrgRole) -> Membership {
    Membership {
        org_id: org,
        user_id: user,
        role,
        allowed_tiers: None,
        monthly_budget: None,
        profile_id: None,
        litellm_key_id: None,
        joined_at: now(),
    }
}

/// A new user who is a member of `org`.
pub async fn member<S: Store>(store: &S, org: OrgId) -> User {
    let user = user(store).await;
    store
        .add_member(org, &membership(org, user.id, OrgRole::Member))
        .await
        .unwrap();
    user
}

pub fn new_group(org: OrgId, name: &str) -> Group {
    Group {
        id: GroupId::new(),
        org_id: org,
        name: name.to_owned(),
        description: None,
        allowed_tiers: None,
        monthly_budget: None,
        created_at: now(),
        updated_at: now(),
    }
}

pub async fn group<S: Store>(store: &S, org: OrgId, name: &str) -> Group {
    let group = new_group(org, name);
    store.create_group(org, &group).await.unwrap();
    group
}

pub fn new_tier(sort_order: i32) -> ModelTier {
    let tag = unique();
    ModelTier {
        id: TierId::new(),
        slug: tier_slug(&format!("t-{tag}")),
        name: "Standard".to_owned(),
        description: "Everyday work".to_owned(),
        best_use_case: "Writing".to_owned(),
        models: vec![
            ModelId::new(format!("model-a-{tag}")).unwrap(),
            ModelId::new(format!("model-b-{tag}")).unwrap(),
        ],
        base_price: money("10"),
        input_rate_per_million: Decimal::new(3, 0),
        output_rate_per_million: Decimal::new(15, 0),
        sort_order,
        active: true,
        rate_schedule: Vec::new(),
    }
}

pub async fn tier<S: Store>(store: &S) -> ModelTier {
    let tier = new_tier(0);
    store.upsert_tier(&tier).await.unwrap();
    tier
}

pub fn new_budget(org: OrgId, scope: BudgetScope, limit: &str, hard: bool) -> Budget {
    Budget {
        id: BudgetId::new(),
        org_id: org,
        scope,
        limit: money(limit),
        period: BudgetPeriod::Monthly,
        hard_limit: hard,
        alert_threshold: Decimal::new(80, 2),
        created_at: now(),
        updated_at: now(),
    }
}

pub async fn budget<S: Store>(
    store: &S,
    org: OrgId,
    scope: BudgetScope,
    limit: &str,
    hard: bool,
) -> Budget {
    let budget = new_budget(org, scope, limit, hard);
    store.create_budget(org, &budget).await.unwrap();
    budget
}

pub fn record(org: OrgId, user: UserId, created_at: DateTime<Utc>, billed: &str) -> UsageRecord {
    stratai_testkit::usage_record(org, user)
        .model("claude-sonnet-4-5")
        .cost("0.001")
        .billed(billed)
        .litellm_request_id(format!("chatcmpl-{}", unique()))
        .at(created_at)
        .build()
}

/// A pending invitation of `org` for `email`, with the hash of a random token.
pub fn new_invitation(org: OrgId, email: &Email, groups: Vec<GroupId>) -> Invitation {
    Invitation {
        id: InvitationId::new(),
        email: email.clone(),
        org_id: org,
        role: OrgRole::Admin,
        group_ids: groups,
        profile_id: None,
        token_hash: stratai_core::directory::hash_token(&unique()),
        status: InvitationStatus::Pending,
        expires_at: now() + Duration::days(7),
        invited_by: None,
        accepted_at: None,
        created_at: now(),
        delivery: stratai_core::directory::InvitationDelivery::queued(),
    }
}

pub fn rule(scope: RuleScope, priority: i32) -> RuleRecord {
    RuleRecord {
        id: RuleId::new(),
        name: format!("rule {}", unique()),
        description: None,
        rule_type: "token_limit".to_owned(),
        config: serde_json::json!({ "max_output_tokens": 1000 }),
        scope,
        action: RuleAction::Block,
        priority,
        active: true,
        created_at: now(),
    }
}

/// Asserts a `NotFound`.
#[track_caller]
pub fn assert_not_found<T: std::fmt::Debug>(result: Result<T, stratai_core::StoreError>) {
    match result {
        Err(stratai_core::StoreError::NotFound { .. }) => {}
        other => panic!("expected not found, got {other:?}"),
    }
}

/// Asserts a `Conflict`.
#[track_caller]
pub fn assert_conflict<T: std::fmt::Debug>(result: Result<T, stratai_core::StoreError>) {
    match result {
        Err(stratai_core::StoreError::Conflict(_)) => {}
        other => panic!("expected conflict, got {other:?}"),
    }
}

/// Asserts a `TenantMismatch`.
#[track_caller]
pub fn assert_tenant_mismatch<T: std::fmt::Debug>(result: Result<T, stratai_core::StoreError>) {
    match result {
        Err(stratai_core::StoreError::TenantMismatch(_)) => {}
        other => panic!("expected tenant mismatch, got {other:?}"),
    }
}

/// Asserts an `Invalid`.
#[track_caller]
pub fn assert_invalid<T: std::fmt::Debug>(result: Result<T, stratai_core::StoreError>) {
    match result {
        Err(stratai_core::StoreError::Invalid(_)) => {}
        other => panic!("expected invalid input, got {other:?}"),
    }
}
