//! Rows to domain values. A row that does not decode is a corrupt row (a backend error).

use rust_decimal::Decimal;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{Decode, Postgres, Row, Type};
use stratai_core::budget::{Budget, BudgetScope};
use stratai_core::directory::{
    Email, Group, GroupMembership, Invitation, InvitationDelivery, Membership, OrgSettings,
    Organization, Slug, User, UserProfile,
};
use stratai_core::ports::{OutboxEntity, OutboxEvent, RuleRecord, RuleScope};
use stratai_core::tiers::{ModelTier, TierSubscription};
use stratai_core::usage::UsageRecord;
use stratai_core::{ModelId, Money, StoreError, TierSlug};
use uuid::Uuid;

use crate::error::{corrupt, db};
use crate::shared::enum_from_text;

pub(super) fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T, StoreError>
where
    T: Decode<'r, Postgres> + Type<Postgres>,
{
    row.try_get(column).map_err(db)
}

pub(super) fn money(row: &PgRow, column: &str) -> Result<Money, StoreError> {
    let amount: Decimal = get(row, column)?;
    Money::new(amount).map_err(|e| corrupt(column, e))
}

fn opt_money(row: &PgRow, column: &str) -> Result<Option<Money>, StoreError> {
    let amount: Option<Decimal> = get(row, column)?;
    amount
        .map(|a| Money::new(a).map_err(|e| corrupt(column, e)))
        .transpose()
}

fn email(text: &str) -> Result<Email, StoreError> {
    Email::new(text).map_err(|e| corrupt("email", e))
}

fn tier_slugs(
    column: &str,
    slugs: Option<Vec<String>>,
) -> Result<Option<Vec<TierSlug>>, StoreError> {
    slugs
        .map(|list| {
            list.into_iter()
                .map(|s| TierSlug::new(s).map_err(|e| corrupt(column, e)))
                .collect()
        })
        .transpose()
}

/// Columns of `organizations`.
macro_rules! org_columns {
    () => {
        "id, name, slug, litellm_org_id, settings, billing_email, \
     billing_plan, is_active, created_at, updated_at"
    };
}

pub(super) fn org(row: &PgRow) -> Result<Organization, StoreError> {
    let slug: String = get(row, "slug")?;
    let settings: Json<OrgSettings> = get(row, "settings")?;
    let billing_email: Option<String> = get(row, "billing_email")?;
    let plan: String = get(row, "billing_plan")?;
    Ok(Organization {
        id: get::<Uuid>(row, "id")?.into(),
        name: get(row, "name")?,
        slug: Slug::new(slug).map_err(|e| corrupt("slug", e))?,
        settings: settings.0,
        billing_email: billing_email.as_deref().map(email).transpose()?,
        billing_plan: enum_from_text("billing plan", &plan)?,
        active: get(row, "is_active")?,
        litellm_org_id: get(row, "litellm_org_id")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

/// Columns of `users`.
macro_rules! user_columns {
    () => {
        "id, email, name, avatar_url, oidc_subject, platform_role, \
     is_active, last_login_at, created_at"
    };
}

pub(super) fn user(row: &PgRow) -> Result<User, StoreError> {
    let address: String = get(row, "email")?;
    let role: String = get(row, "platform_role")?;
    Ok(User {
        id: get::<Uuid>(row, "id")?.into(),
        email: email(&address)?,
        name: get(row, "name")?,
        avatar_url: get(row, "avatar_url")?,
        oidc_subject: get(row, "oidc_subject")?,
        platform_role: enum_from_text("platform role", &role)?,
        active: get(row, "is_active")?,
        last_login_at: get(row, "last_login_at")?,
        created_at: get(row, "created_at")?,
    })
}

/// Columns of `org_memberships`.
macro_rules! member_columns {
    () => {
        "organization_id, user_id, role, allowed_tiers, \
     monthly_budget, profile_id, virtual_key_id, joined_at"
    };
}

pub(super) fn member(row: &PgRow) -> Result<Membership, StoreError> {
    let role: String = get(row, "role")?;
    Ok(Membership {
        org_id: get::<Uuid>(row, "organization_id")?.into(),
        user_id: get::<Uuid>(row, "user_id")?.into(),
        role: enum_from_text("org role", &role)?,
        allowed_tiers: tier_slugs("allowed_tiers", get(row, "allowed_tiers")?)?,
        monthly_budget: opt_money(row, "monthly_budget")?,
        profile_id: get::<Option<Uuid>>(row, "profile_id")?.map(Into::into),
        litellm_key_id: get(row, "virtual_key_id")?,
        joined_at: get(row, "joined_at")?,
    })
}

/// Columns of `groups`.
macro_rules! group_columns {
    () => {
        "id, organization_id, name, description, allowed_tiers, \
     monthly_budget, created_at, updated_at"
    };
}

pub(super) fn group(row: &PgRow) -> Result<Group, StoreError> {
    Ok(Group {
        id: get::<Uuid>(row, "id")?.into(),
        org_id: get::<Uuid>(row, "organization_id")?.into(),
        name: get(row, "name")?,
        description: get(row, "description")?,
        allowed_tiers: tier_slugs("allowed_tiers", get(row, "allowed_tiers")?)?,
        monthly_budget: opt_money(row, "monthly_budget")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

pub(super) fn group_member(row: &PgRow) -> Result<GroupMembership, StoreError> {
    let role: String = get(row, "role")?;
    Ok(GroupMembership {
        org_id: get::<Uuid>(row, "organization_id")?.into(),
        group_id: get::<Uuid>(row, "group_id")?.into(),
        user_id: get::<Uuid>(row, "user_id")?.into(),
        role: enum_from_text("group role", &role)?,
        joined_at: get(row, "joined_at")?,
    })
}

pub(super) fn profile(row: &PgRow) -> Result<UserProfile, StoreError> {
    let available: String = get(row, "available_to")?;
    let tiers = tier_slugs("default_tiers", Some(get(row, "default_tiers")?))?;
    Ok(UserProfile {
        id: get::<Uuid>(row, "id")?.into(),
        name: get(row, "name")?,
        description: get(row, "description")?,
        default_tiers: tiers.unwrap_or_default(),
        default_guardrails: get(row, "default_guardrails")?,
        available_to: enum_from_text("profile availability", &available)?,
        created_at: get(row, "created_at")?,
    })
}

/// Columns of `invitations`.
macro_rules! invitation_columns {
    () => {
        "id, email, organization_id, role, group_ids, \
     profile_id, token_hash, status, expires_at, invited_by, accepted_at, created_at, \
     delivery_status, delivery_attempts, delivery_error, delivery_attempted_at"
    };
}

pub(super) fn invitation(row: &PgRow) -> Result<Invitation, StoreError> {
    let address: String = get(row, "email")?;
    let role: String = get(row, "role")?;
    let status: String = get(row, "status")?;
    let groups: Vec<Uuid> = get(row, "group_ids")?;
    let delivery: String = get(row, "delivery_status")?;
    Ok(Invitation {
        id: get::<Uuid>(row, "id")?.into(),
        email: email(&address)?,
        org_id: get::<Uuid>(row, "organization_id")?.into(),
        role: enum_from_text("org role", &role)?,
        group_ids: groups.into_iter().map(Into::into).collect(),
        profile_id: get::<Option<Uuid>>(row, "profile_id")?.map(Into::into),
        token_hash: get(row, "token_hash")?,
        status: enum_from_text("invitation status", &status)?,
        expires_at: get(row, "expires_at")?,
        invited_by: get::<Option<Uuid>>(row, "invited_by")?.map(Into::into),
        accepted_at: get(row, "accepted_at")?,
        created_at: get(row, "created_at")?,
        delivery: InvitationDelivery {
            status: enum_from_text("delivery status", &delivery)?,
            attempts: u32::try_from(get::<i32>(row, "delivery_attempts")?)
                .map_err(|e| corrupt("delivery_attempts", e))?,
            last_error: get(row, "delivery_error")?,
            last_attempt_at: get(row, "delivery_attempted_at")?,
        },
    })
}

/// Columns of `model_tiers`.
macro_rules! tier_columns {
    () => {
        "id, slug, name, description, best_use_case, models, \
     base_price, input_token_rate, output_token_rate, sort_order, is_active, rate_schedule"
    };
}

pub(super) fn tier(row: &PgRow) -> Result<ModelTier, StoreError> {
    let slug: String = get(row, "slug")?;
    let models: Vec<String> = get(row, "models")?;
    Ok(ModelTier {
        id: get::<Uuid>(row, "id")?.into(),
        slug: TierSlug::new(slug).map_err(|e| corrupt("tier slug", e))?,
        name: get(row, "name")?,
        description: get(row, "description")?,
        best_use_case: get(row, "best_use_case")?,
        models: models
            .into_iter()
            .map(|m| ModelId::new(m).map_err(|e| corrupt("model", e)))
            .collect::<Result<_, _>>()?,
        base_price: money(row, "base_price")?,
        input_rate_per_million: get(row, "input_token_rate")?,
        output_rate_per_million: get(row, "output_token_rate")?,
        sort_order: get(row, "sort_order")?,
        active: get(row, "is_active")?,
        rate_schedule: get::<Json<Vec<stratai_core::tiers::RatePeriod>>>(row, "rate_schedule")?.0,
    }
    // The rate fields are the rates in force now (the schedule decides when it has periods).
    .as_of(chrono::Utc::now()))
}

pub(super) fn subscription(row: &PgRow) -> Result<TierSubscription, StoreError> {
    Ok(TierSubscription {
        org_id: get::<Uuid>(row, "organization_id")?.into(),
        tier_id: get::<Uuid>(row, "tier_id")?.into(),
        enabled: get(row, "enabled")?,
        monthly_budget: opt_money(row, "monthly_budget")?,
        enabled_at: get(row, "enabled_at")?,
    })
}

/// Columns of `guardrails`.
macro_rules! rule_columns {
    () => {
        "id, organization_id, name, description, type, config, \
     level, scope_id, action, priority, is_active, created_at"
    };
}

/// `(level, organization_id, scope_id)` of a rule scope.
pub(super) fn rule_scope_columns(scope: &RuleScope) -> (&'static str, Option<Uuid>, Option<Uuid>) {
    match *scope {
        RuleScope::Global => ("global", None, None),
        RuleScope::Org { org_id } => ("org", Some(org_id.as_uuid()), Some(org_id.as_uuid())),
        RuleScope::Tier { org_id, tier_id } => {
            ("tier", org_id.map(|o| o.as_uuid()), Some(tier_id.as_uuid()))
        }
        RuleScope::Group { org_id, group_id } => {
            ("group", Some(org_id.as_uuid()), Some(group_id.as_uuid()))
        }
        RuleScope::User { org_id, user_id } => {
            ("user", Some(org_id.as_uuid()), Some(user_id.as_uuid()))
        }
    }
}

pub(super) fn rule(row: &PgRow) -> Result<RuleRecord, StoreError> {
    let level: String = get(row, "level")?;
    let org: Option<Uuid> = get(row, "organization_id")?;
    let scope_id: Option<Uuid> = get(row, "scope_id")?;
    let action: String = get(row, "action")?;
    let bad = || {
        corrupt(
            "rule scope",
            format!("level `{level}` with {org:?}/{scope_id:?}"),
        )
    };
    let scope = match (level.as_str(), org, scope_id) {
        ("global", None, None) => RuleScope::Global,
        ("org", Some(org), Some(_)) => RuleScope::Org { org_id: org.into() },
        ("tier", org, Some(tier)) => RuleScope::Tier {
            org_id: org.map(Into::into),
            tier_id: tier.into(),
        },
        ("group", Some(org), Some(group)) => RuleScope::Group {
            org_id: org.into(),
            group_id: group.into(),
        },
        ("user", Some(org), Some(user)) => RuleScope::User {
            org_id: org.into(),
            user_id: user.into(),
        },
        _ => return Err(bad()),
    };
    Ok(RuleRecord {
        id: get::<Uuid>(row, "id")?.into(),
        name: get(row, "name")?,
        description: get(row, "description")?,
        rule_type: get(row, "type")?,
        config: get(row, "config")?,
        scope,
        action: enum_from_text("rule action", &action)?,
        priority: get(row, "priority")?,
        active: get(row, "is_active")?,
        created_at: get(row, "created_at")?,
    })
}

/// `(scope_type, scope_id)` of a budget scope (the organization itself for `org`).
pub(super) fn budget_scope_columns(
    org: stratai_core::OrgId,
    scope: &BudgetScope,
) -> (&'static str, Uuid) {
    match *scope {
        BudgetScope::Org => ("org", org.as_uuid()),
        BudgetScope::Group(g) => ("group", g.as_uuid()),
        BudgetScope::User(u) => ("user", u.as_uuid()),
        BudgetScope::Tier(t) => ("tier", t.as_uuid()),
    }
}

/// Columns of `budgets`.
macro_rules! budget_columns {
    () => {
        "id, organization_id, scope_type, scope_id, \
     limit_amount, limit_period, alert_threshold, hard_limit, created_at, updated_at"
    };
}

pub(super) fn budget(row: &PgRow) -> Result<Budget, StoreError> {
    let scope_type: String = get(row, "scope_type")?;
    let scope_id: Uuid = get(row, "scope_id")?;
    let period: String = get(row, "limit_period")?;
    let scope = match scope_type.as_str() {
        "org" => BudgetScope::Org,
        "group" => BudgetScope::Group(scope_id.into()),
        "user" => BudgetScope::User(scope_id.into()),
        "tier" => BudgetScope::Tier(scope_id.into()),
        other => return Err(corrupt("budget scope", format!("`{other}`"))),
    };
    Ok(Budget {
        id: get::<Uuid>(row, "id")?.into(),
        org_id: get::<Uuid>(row, "organization_id")?.into(),
        scope,
        limit: money(row, "limit_amount")?,
        period: enum_from_text("budget period", &period)?,
        hard_limit: get(row, "hard_limit")?,
        alert_threshold: get(row, "alert_threshold")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

/// Columns of `usage_records`.
macro_rules! usage_columns {
    () => {
        "request_id, organization_id, group_id, user_id, tier_id, \
     model, input_tokens, output_tokens, provider_cost, billed_amount, overage, \
     litellm_request_id, conversation_id, endpoint, status, created_at, lease_id"
    };
}

pub(super) fn usage(row: &PgRow) -> Result<UsageRecord, StoreError> {
    let model: String = get(row, "model")?;
    let status: String = get(row, "status")?;
    let input: i64 = get(row, "input_tokens")?;
    let output: i64 = get(row, "output_tokens")?;
    Ok(UsageRecord {
        request_id: get::<Uuid>(row, "request_id")?.into(),
        org_id: get::<Uuid>(row, "organization_id")?.into(),
        group_id: get::<Option<Uuid>>(row, "group_id")?.map(Into::into),
        user_id: get::<Uuid>(row, "user_id")?.into(),
        tier_id: get::<Option<Uuid>>(row, "tier_id")?.map(Into::into),
        model: ModelId::new(model).map_err(|e| corrupt("model", e))?,
        input_tokens: u32::try_from(input).map_err(|e| corrupt("input_tokens", e))?,
        output_tokens: u32::try_from(output).map_err(|e| corrupt("output_tokens", e))?,
        provider_cost: money(row, "provider_cost")?,
        billed_amount: money(row, "billed_amount")?,
        overage: money(row, "overage")?,
        lease_id: get::<Option<Uuid>>(row, "lease_id")?.map(Into::into),
        litellm_request_id: get(row, "litellm_request_id")?,
        conversation_id: get::<Option<Uuid>>(row, "conversation_id")?.map(Into::into),
        endpoint: get(row, "endpoint")?,
        status: enum_from_text("usage status", &status)?,
        created_at: get(row, "created_at")?,
    })
}

pub(super) fn outbox_event(row: &PgRow) -> Result<OutboxEvent, StoreError> {
    let kind: String = get(row, "entity_kind")?;
    let id: Uuid = get(row, "entity_id")?;
    let attempts: i32 = get(row, "attempts")?;
    let entity = match kind.as_str() {
        "org" => OutboxEntity::Org(id.into()),
        "group" => OutboxEntity::Group(id.into()),
        "member" => OutboxEntity::Member(id.into()),
        other => return Err(corrupt("outbox entity", format!("`{other}`"))),
    };
    Ok(OutboxEvent {
        seq: get(row, "seq")?,
        org_id: get::<Uuid>(row, "organization_id")?.into(),
        entity,
        deleted: get(row, "deleted")?,
        version: get(row, "version")?,
        attempts: u32::try_from(attempts).map_err(|e| corrupt("attempts", e))?,
        last_error: get(row, "last_error")?,
        available_at: get(row, "available_at")?,
        created_at: get(row, "created_at")?,
    })
}

/// The kind and id of an outbox entity, as stored.
pub(super) fn outbox_entity_columns(entity: &OutboxEntity) -> (&'static str, Uuid) {
    match *entity {
        OutboxEntity::Org(id) => ("org", id.as_uuid()),
        OutboxEntity::Group(id) => ("group", id.as_uuid()),
        OutboxEntity::Member(id) => ("member", id.as_uuid()),
    }
}
