//! The StratAI -> LiteLLM mapping, as pure functions from directory state to the desired
//! LiteLLM entities (see the crate README, "Mapping").

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use stratai_core::Money;
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope};
use stratai_core::directory::{Group, Membership, Organization, attribution_group};
use stratai_core::ids::{ModelId, OrgId, UserId};
use stratai_core::tiers::{
    MemberContext, TierCatalog, TierSubscription, resolve_group_tiers, resolve_org_tiers,
    resolve_tiers,
};

use crate::types::Metadata;

/// The model name a key or team gets when nothing is allowed: LiteLLM reads an empty
/// `models` list as "every model", so an empty list must never be sent.
pub const NO_MODELS: &str = "stratai-no-models";

/// Metadata marker of the entities the sync manages.
pub const MANAGED_BY: &str = "stratai";

/// How StratAI model ids become LiteLLM model names: identity unless overridden.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelNames {
    overrides: BTreeMap<String, String>,
}

impl ModelNames {
    /// Identity mapping.
    pub fn identity() -> Self {
        Self::default()
    }

    /// Maps `model` (a StratAI model id) to `litellm_name`.
    pub fn with(mut self, model: impl Into<String>, litellm_name: impl Into<String>) -> Self {
        self.overrides.insert(model.into(), litellm_name.into());
        self
    }

    /// The LiteLLM names of `models`, sorted and deduplicated, never empty (see [`NO_MODELS`]).
    pub fn litellm_models(&self, models: &[ModelId]) -> Vec<String> {
        let mut names: Vec<String> = models
            .iter()
            .map(|m| {
                self.overrides
                    .get(m.as_str())
                    .cloned()
                    .unwrap_or_else(|| m.as_str().to_owned())
            })
            .collect();
        names.sort();
        names.dedup();
        if names.is_empty() {
            names.push(NO_MODELS.to_owned());
        }
        names
    }
}

/// A team as a group should look in LiteLLM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredTeam {
    /// `team_id` = the group id.
    pub team_id: String,
    /// `<org slug>/<group name>`.
    pub alias: String,
    /// Models of the tiers the group may use.
    pub models: Vec<String>,
    /// The group budget.
    pub max_budget: Option<Decimal>,
    /// Budget period when there is a budget.
    pub budget_duration: Option<String>,
    /// Members (user ids).
    pub members: Vec<String>,
    /// The organization.
    pub org_id: OrgId,
    /// The LiteLLM organization, when the proxy has them ([`place_team`]).
    pub organization_id: Option<String>,
}

/// A virtual key as a member should have it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredKey {
    /// `stratai:<org id>:<user id>`.
    pub alias: String,
    /// The LiteLLM user (= our user id).
    pub user_id: String,
    /// The member's group their usage is attributed to (core's `attribution_group`: the
    /// smallest id) as the key's team, if any.
    pub team_id: Option<String>,
    /// The member's accessible models.
    pub models: Vec<String>,
    /// The member budget.
    pub max_budget: Option<Decimal>,
    /// Budget period when there is a budget.
    pub budget_duration: Option<String>,
    /// The organization.
    pub org_id: OrgId,
    /// The member.
    pub member: UserId,
    /// The LiteLLM organization, when the proxy has them ([`place_key`]).
    pub organization_id: Option<String>,
    /// The key is blocked: its user is deactivated (LiteLLM refuses every call with it).
    pub blocked: bool,
    /// Requests per minute ([`KeyLimits`]).
    pub rpm_limit: Option<u64>,
    /// Tokens per minute ([`KeyLimits`]).
    pub tpm_limit: Option<u64>,
}

/// The per-minute limits a member's key carries on the proxy (LiteLLM `rpm_limit` and
/// `tpm_limit`), resolved from the guardrail rules that apply to the member (see
/// [`super::RateLimitSource`]). `None`: no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeyLimits {
    /// Requests per minute.
    pub rpm: Option<u64>,
    /// Tokens per minute.
    pub tpm: Option<u64>,
}

/// A LiteLLM organization as a StratAI organization should look (LiteLLM Enterprise only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredOrg {
    /// `organization_id` = the organization id (LiteLLM accepts caller ids).
    pub organization_id: String,
    /// The organization's slug.
    pub alias: String,
    /// The models of every tier the organization may use (its enabled subscriptions among
    /// active tiers, within its allowed tiers), plus [`NO_MODELS`]: LiteLLM refuses a team
    /// whose models are not all the organization's, and a team with no tier carries that
    /// sentinel.
    pub models: Vec<String>,
    /// The organization's monthly budget.
    pub max_budget: Option<Decimal>,
    /// Budget period when there is a budget.
    pub budget_duration: Option<String>,
    /// The organization.
    pub org_id: OrgId,
}

/// The key alias of a member: unique per (org, user), which LiteLLM enforces.
pub fn key_alias(org: OrgId, user: UserId) -> String {
    format!("stratai:{org}:{user}")
}

/// The team of a group.
#[allow(clippy::too_many_arguments)] // every input of the mapping, each its own kind of data
pub fn desired_team(
    catalog: &TierCatalog,
    org: &Organization,
    subscriptions: &[TierSubscription],
    group: &Group,
    members: &[UserId],
    names: &ModelNames,
    budget_duration: &str,
    budgets: &[Budget],
) -> Result<DesiredTeam, String> {
    let access =
        resolve_group_tiers(catalog, org, subscriptions, group).map_err(|e| e.to_string())?;
    let mut members: Vec<String> = members.iter().map(ToString::to_string).collect();
    members.sort();
    members.dedup();
    let budget = scope_budget(
        budgets,
        BudgetScope::Group(group.id),
        group.monthly_budget,
        budget_duration,
    );
    Ok(DesiredTeam {
        team_id: group.id.to_string(),
        alias: format!("{}/{}", org.slug, group.name),
        models: names.litellm_models(&access.accessible_models()),
        max_budget: budget.as_ref().map(|b| b.0),
        budget_duration: budget.map(|b| b.1),
        members,
        org_id: org.id,
        organization_id: None,
    })
}

/// The key of a member.
#[allow(clippy::too_many_arguments)] // every input of the mapping, each its own kind of data
pub fn desired_key(
    catalog: &TierCatalog,
    org: &Organization,
    subscriptions: &[TierSubscription],
    membership: &Membership,
    groups: &[Group],
    names: &ModelNames,
    budget_duration: &str,
    budgets: &[Budget],
    limits: KeyLimits,
) -> Result<DesiredKey, String> {
    let ctx = MemberContext {
        org,
        subscriptions,
        membership,
        groups,
    };
    let access = resolve_tiers(catalog, &ctx).map_err(|e| e.to_string())?;
    // The group StratAI attributes the member's usage to, so LiteLLM's team spend and
    // StratAI's group reports count the same requests.
    let team = attribution_group(groups.iter().map(|g| g.id));
    let budget = scope_budget(
        budgets,
        BudgetScope::User(membership.user_id),
        membership.monthly_budget,
        budget_duration,
    );
    Ok(DesiredKey {
        alias: key_alias(org.id, membership.user_id),
        user_id: membership.user_id.to_string(),
        team_id: team.map(|g| g.to_string()),
        models: names.litellm_models(&access.accessible_models()),
        max_budget: budget.as_ref().map(|b| b.0),
        budget_duration: budget.map(|b| b.1),
        org_id: org.id,
        member: membership.user_id,
        organization_id: None,
        blocked: false,
        rpm_limit: limits.rpm,
        tpm_limit: limits.tpm,
    })
}

impl KeyLimits {
    /// The most requests a StratAI rate limit of `requests` per `period` lets through in one
    /// LiteLLM rpm window (60 s from its first request): the rule's burst (`requests`) plus
    /// what its bucket refills within the minute (`requests x 60 s / period`, rounded up).
    /// So a key's `rpm_limit` never refuses a call StratAI's limiter admitted; it stops a
    /// key used directly from going faster than StratAI ever would.
    pub fn rpm_bound(requests: u32, period: std::time::Duration) -> u64 {
        let requests = u64::from(requests);
        let period = period.as_secs().max(1);
        requests + (requests * 60).div_ceil(period)
    }

    /// The limits of a key bound by every `(requests, period)` rate limit that applies to
    /// its member (the smallest [`KeyLimits::rpm_bound`]); no token-per-minute limit, since
    /// no StratAI rule limits tokens over time (`token_limit` bounds one request).
    pub fn from_rate_limits(limits: impl IntoIterator<Item = (u32, std::time::Duration)>) -> Self {
        Self {
            rpm: limits
                .into_iter()
                .map(|(requests, period)| Self::rpm_bound(requests, period))
                .min(),
            tpm: None,
        }
    }
}

/// The LiteLLM `budget_duration` closest to a StratAI budget period: `1d` (LiteLLM resets
/// it at midnight in the proxy's timezone, StratAI's calendar day there), `7d` (seven days
/// from when the budget was set, not the ISO week from Monday: LiteLLM has no calendar
/// week) and `monthly` for a month (`1mo`: the 1st of each month).
pub fn litellm_period(period: BudgetPeriod, monthly: &str) -> String {
    match period {
        BudgetPeriod::Daily => "1d".to_owned(),
        BudgetPeriod::Weekly => "7d".to_owned(),
        BudgetPeriod::Monthly => monthly.to_owned(),
    }
}

/// At most how many periods of a kind a calendar month holds (31 days, 5 ISO weeks touch
/// one): what a limit per period lets through in a month at worst.
fn periods_per_month(period: BudgetPeriod) -> u32 {
    match period {
        BudgetPeriod::Daily => 31,
        BudgetPeriod::Weekly => 5,
        BudgetPeriod::Monthly => 1,
    }
}

/// The one budget LiteLLM holds for a scope (a key, a team, an organization: LiteLLM has
/// one `max_budget` and one `budget_duration` each): among the scope's **hard** budgets of
/// `/api/budgets` and the directory's `monthly_budget` field (`field`, a hard monthly
/// budget), the one letting the least through in a month (limit x periods a month can hold;
/// on a tie the shorter period, which also bounds bursts), as `(limit, budget_duration)`.
/// Soft budgets only warn, so LiteLLM gets none of them; tier budgets have no LiteLLM
/// entity. StratAI's ledger keeps enforcing every budget exactly, in its calendar periods
/// and the organization's timezone; this is the second wall for calls that bypass it.
pub fn scope_budget(
    budgets: &[Budget],
    scope: BudgetScope,
    field: Option<Money>,
    monthly: &str,
) -> Option<(Decimal, String)> {
    budgets
        .iter()
        .filter(|b| b.scope == scope && b.hard_limit)
        .map(|b| (b.limit, b.period))
        .chain(field.map(|m| (m, BudgetPeriod::Monthly)))
        .min_by_key(|(limit, period)| {
            (
                limit.amount() * Decimal::from(periods_per_month(*period)),
                std::cmp::Reverse(periods_per_month(*period)),
            )
        })
        .map(|(limit, period)| (limit.amount().normalize(), litellm_period(period, monthly)))
}

/// Blocks the key of a deactivated user (`active` false), so the proxy refuses it even when
/// called directly; a reactivated user's key is unblocked.
pub fn block_key_unless_active(key: &mut DesiredKey, active: bool) {
    key.blocked = !active;
}

/// The LiteLLM organization of an organization. `budget` is its monthly budget (see
/// [`super::SyncSource::org_budget`]).
pub fn desired_org(
    catalog: &TierCatalog,
    org: &Organization,
    subscriptions: &[TierSubscription],
    budget: Option<Money>,
    names: &ModelNames,
    budget_duration: &str,
) -> DesiredOrg {
    let access = resolve_org_tiers(catalog, org, subscriptions);
    let mut models = names.litellm_models(&access.accessible_models());
    if !models.iter().any(|m| m == NO_MODELS) {
        models.push(NO_MODELS.to_owned());
        models.sort();
    }
    DesiredOrg {
        organization_id: org.id.to_string(),
        alias: org.slug.to_string(),
        models,
        max_budget: budget.map(|m| m.amount().normalize()),
        budget_duration: budget.map(|_| budget_duration.to_owned()),
        org_id: org.id,
    }
}

/// The organization budget LiteLLM can enforce: the smallest hard, monthly, org-wide budget
/// (LiteLLM has one budget per organization and only hard limits; soft, daily and weekly
/// budgets stay StratAI's alone).
pub fn org_monthly_budget(budgets: &[Budget]) -> Option<Money> {
    budgets
        .iter()
        .filter(|b| {
            b.scope == BudgetScope::Org && b.period == BudgetPeriod::Monthly && b.hard_limit
        })
        .map(|b| b.limit)
        .min()
}

/// Puts a team into its LiteLLM organization: `organization_id` set, and the budget capped
/// at the organization's (LiteLLM refuses a team budget above its organization's; the
/// organization's budget binds first anyway).
pub fn place_team(team: &mut DesiredTeam, org: &DesiredOrg) {
    team.organization_id = Some(org.organization_id.clone());
    if let (Some(team_budget), Some(org_budget)) = (team.max_budget, org.max_budget)
        && team_budget > org_budget
    {
        team.max_budget = Some(org_budget);
    }
}

/// Puts a key into its LiteLLM organization (a key without a team would otherwise escape
/// the organization's budget).
pub fn place_key(key: &mut DesiredKey, org: &DesiredOrg) {
    key.organization_id = Some(org.organization_id.clone());
}

/// Metadata of a managed team.
pub fn team_metadata(team: &DesiredTeam, version: i64) -> Metadata {
    let value = json!({
        "managed_by": MANAGED_BY,
        "stratai_org_id": team.org_id.to_string(),
        "stratai_group_id": team.team_id,
        "stratai_version": version,
    });
    value.as_object().cloned().unwrap_or_default()
}

/// Metadata of a managed LiteLLM organization.
pub fn org_metadata(org: &DesiredOrg, version: i64) -> Metadata {
    let value = json!({
        "managed_by": MANAGED_BY,
        "stratai_org_id": org.organization_id,
        "stratai_version": version,
    });
    value.as_object().cloned().unwrap_or_default()
}

/// Whether `stored` holds every entry of `wanted` (LiteLLM merges organization metadata, so
/// it may hold more).
pub(super) fn metadata_includes(stored: Option<&Metadata>, wanted: &Metadata) -> bool {
    wanted
        .iter()
        .all(|(k, v)| stored.and_then(|m| m.get(k)) == Some(v))
}

/// Metadata of a managed key.
pub fn key_metadata(key: &DesiredKey, version: i64) -> Metadata {
    let value = json!({
        "managed_by": MANAGED_BY,
        "stratai_org_id": key.org_id.to_string(),
        "stratai_user_id": key.member.to_string(),
        "stratai_version": version,
    });
    value.as_object().cloned().unwrap_or_default()
}

/// Whether metadata marks an entity managed by StratAI.
pub fn is_managed(metadata: Option<&Metadata>) -> bool {
    metadata
        .and_then(|m| m.get("managed_by"))
        .and_then(Value::as_str)
        == Some(MANAGED_BY)
}

/// The StratAI version recorded in metadata (0 when none).
pub fn recorded_version(metadata: Option<&Metadata>) -> i64 {
    metadata
        .and_then(|m| m.get("stratai_version"))
        .and_then(Value::as_i64)
        .unwrap_or(0)
}

/// A string field of the metadata.
pub(super) fn metadata_str<'a>(metadata: Option<&'a Metadata>, field: &str) -> Option<&'a str> {
    metadata.and_then(|m| m.get(field)).and_then(Value::as_str)
}

/// Sorted copy of a model list, for comparisons.
pub(super) fn sorted(models: &[String]) -> Vec<String> {
    let mut models = models.to_vec();
    models.sort();
    models.dedup();
    models
}

/// Budgets compare by value (`10.0` == `10`).
pub(super) fn same_budget(a: Option<Decimal>, b: Option<Decimal>) -> bool {
    a.map(|d| d.normalize()) == b.map(|d| d.normalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_model_lists_become_the_sentinel() {
        let names = ModelNames::identity().with("gpt-4o-mini", "mock-gpt");
        assert_eq!(names.litellm_models(&[]), [NO_MODELS]);
        let models = [
            ModelId::new("gpt-4o-mini").unwrap(),
            ModelId::new("claude-x").unwrap(),
            ModelId::new("gpt-4o-mini").unwrap(),
        ];
        assert_eq!(names.litellm_models(&models), ["claude-x", "mock-gpt"]);
    }

    fn org(slug: &str) -> Organization {
        use stratai_core::directory::{BillingPlan, OrgSettings, Slug};
        use stratai_core::ids::TierSlug;
        let tiers = vec![
            TierSlug::new("basic").unwrap(),
            TierSlug::new("standard").unwrap(),
        ];
        let settings = OrgSettings::new(tiers, TierSlug::new("basic").unwrap()).unwrap();
        Organization::new(
            slug,
            Slug::new(slug).unwrap(),
            settings,
            BillingPlan::Business,
            chrono::Utc::now(),
        )
        .unwrap()
    }

    #[test]
    fn an_org_gets_its_allowed_subscribed_models_the_sentinel_and_its_budget() {
        use stratai_core::tiers::{BASIC_TIER_ID, PREMIUM_TIER_ID, subscriptions_for};
        let catalog = TierCatalog::seed_default();
        let acme = org("acme");
        // subscribed to basic and premium; premium is not among the org's allowed tiers
        let subs = subscriptions_for(
            acme.id,
            &[BASIC_TIER_ID, PREMIUM_TIER_ID],
            chrono::Utc::now(),
        );
        let budget = Money::new(Decimal::new(2500, 2)).ok();
        let desired = desired_org(
            &catalog,
            &acme,
            &subs,
            budget,
            &ModelNames::identity(),
            "1mo",
        );
        let basic = catalog.get(BASIC_TIER_ID).unwrap();
        let mut expected: Vec<String> =
            basic.models.iter().map(|m| m.as_str().to_owned()).collect();
        expected.push(NO_MODELS.to_owned());
        expected.sort();
        assert_eq!(desired.models, expected);
        assert_eq!(desired.organization_id, acme.id.to_string());
        assert_eq!(desired.alias, "acme");
        assert_eq!(desired.max_budget, Some(Decimal::new(25, 0)));
        assert_eq!(desired.budget_duration.as_deref(), Some("1mo"));
        let none = desired_org(&catalog, &acme, &[], None, &ModelNames::identity(), "1mo");
        assert_eq!(none.models, [NO_MODELS]);
        assert_eq!(none.budget_duration, None);
    }

    proptest::proptest! {
        /// The key's team is the group StratAI attributes the member's usage to (core's
        /// `attribution_group`), whatever the groups' names and the order they come in, so
        /// LiteLLM's team spend and StratAI's group reports count the same requests.
        #[test]
        fn the_keys_team_is_the_group_usage_is_attributed_to(
            names in proptest::collection::vec("[a-z]{1,6}", 0..6),
            rotate in 0usize..6,
        ) {
            use stratai_core::directory::OrgRole;
            let acme = org("acme");
            let now = chrono::Utc::now();
            let mut groups: Vec<Group> = names
                .iter()
                .map(|n| Group::new(acme.id, n, now).unwrap())
                .collect();
            if !groups.is_empty() {
                let by = rotate % groups.len();
                groups.rotate_left(by);
            }
            let member = Membership::new(acme.id, UserId::new(), OrgRole::Member, now);
            let key = desired_key(
                &TierCatalog::seed_default(),
                &acme,
                &[],
                &member,
                &groups,
                &ModelNames::identity(),
                "1mo",
                &[],
                KeyLimits::default(),
            )
            .unwrap();
            let attributed = attribution_group(groups.iter().map(|g| g.id));
            proptest::prop_assert_eq!(key.team_id, attributed.map(|g| g.to_string()));
            // The smallest id: not the first by name.
            proptest::prop_assert_eq!(attributed, groups.iter().map(|g| g.id).min());
        }
    }

    #[test]
    fn a_team_in_an_org_is_capped_at_its_budget() {
        let acme = org("acme");
        let desired = DesiredOrg {
            organization_id: acme.id.to_string(),
            alias: "acme".into(),
            models: vec![NO_MODELS.into()],
            max_budget: Some(Decimal::new(50, 0)),
            budget_duration: Some("1mo".into()),
            org_id: acme.id,
        };
        let mut team = DesiredTeam {
            team_id: "t".into(),
            alias: "acme/eng".into(),
            models: vec![NO_MODELS.into()],
            max_budget: Some(Decimal::new(80, 0)),
            budget_duration: Some("1mo".into()),
            members: vec![],
            org_id: acme.id,
            organization_id: None,
        };
        place_team(&mut team, &desired);
        assert_eq!(team.organization_id, Some(acme.id.to_string()));
        assert_eq!(team.max_budget, Some(Decimal::new(50, 0)));
        team.max_budget = Some(Decimal::new(20, 0));
        place_team(&mut team, &desired);
        assert_eq!(team.max_budget, Some(Decimal::new(20, 0)));
        team.max_budget = None;
        place_team(&mut team, &desired);
        assert_eq!(team.max_budget, None, "no team budget stays none");
    }

    #[test]
    fn the_org_budget_is_the_smallest_hard_monthly_org_budget() {
        let acme = org("acme");
        let now = chrono::Utc::now();
        let money = |cents| Money::new(Decimal::new(cents, 2)).unwrap();
        let budget = |scope, cents, period, hard| {
            Budget::new(
                acme.id,
                scope,
                money(cents),
                period,
                hard,
                Decimal::ONE,
                now,
            )
            .unwrap()
        };
        let user = BudgetScope::User(UserId::new());
        let budgets = [
            budget(BudgetScope::Org, 90_00, BudgetPeriod::Monthly, true),
            budget(BudgetScope::Org, 70_00, BudgetPeriod::Monthly, true),
            budget(BudgetScope::Org, 10_00, BudgetPeriod::Monthly, false),
            budget(BudgetScope::Org, 5_00, BudgetPeriod::Daily, true),
            budget(user, 1_00, BudgetPeriod::Monthly, true),
        ];
        assert_eq!(org_monthly_budget(&budgets), Some(money(70_00)));
        assert_eq!(org_monthly_budget(&budgets[2..]), None);
    }

    #[test]
    fn key_limits_bound_what_stratai_admits_in_a_minute() {
        use std::time::Duration;
        let minute = Duration::from_secs(60);
        let hour = Duration::from_secs(3600);
        let day = Duration::from_secs(86_400);
        // A burst of 10 and 10 more refilled within the window.
        assert_eq!(KeyLimits::rpm_bound(10, minute), 20);
        assert_eq!(KeyLimits::rpm_bound(120, hour), 122);
        assert_eq!(KeyLimits::rpm_bound(1000, day), 1001);
        let limits = KeyLimits::from_rate_limits([(10, minute), (5, hour), (1000, day)]);
        assert_eq!(limits.rpm, Some(6));
        assert_eq!(limits.tpm, None);
        assert_eq!(KeyLimits::from_rate_limits([]), KeyLimits::default());
    }

    #[test]
    fn a_scope_gets_the_hard_budget_letting_least_through_a_month() {
        let acme = org("acme");
        let user = UserId::new();
        let scope = BudgetScope::User(user);
        let now = chrono::Utc::now();
        let money = |cents| Money::new(Decimal::new(cents, 2)).unwrap();
        let budget = |scope, cents, period, hard| {
            Budget::new(
                acme.id,
                scope,
                money(cents),
                period,
                hard,
                Decimal::ONE,
                now,
            )
            .unwrap()
        };
        // $2 a day (<= $62 a month) vs the field's $30 a month: the month.
        let daily = budget(scope, 2_00, BudgetPeriod::Daily, true);
        assert_eq!(
            scope_budget(
                std::slice::from_ref(&daily),
                scope,
                Some(money(30_00)),
                "1mo"
            ),
            Some((Decimal::new(30, 0), "1mo".to_owned()))
        );
        // $4 a week (<= $20 a month) wins; soft budgets and other scopes never count.
        let weekly = budget(scope, 4_00, BudgetPeriod::Weekly, true);
        let soft = budget(scope, 1, BudgetPeriod::Monthly, false);
        let other = budget(
            BudgetScope::User(UserId::new()),
            1,
            BudgetPeriod::Monthly,
            true,
        );
        assert_eq!(
            scope_budget(
                &[daily, weekly, soft.clone(), other],
                scope,
                Some(money(30_00)),
                "1mo"
            ),
            Some((Decimal::new(4, 0), "7d".to_owned()))
        );
        // A tie goes to the shorter period: $31 a month vs $1 a day.
        let tie = budget(scope, 1_00, BudgetPeriod::Daily, true);
        assert_eq!(
            scope_budget(&[tie], scope, Some(money(31_00)), "1mo"),
            Some((Decimal::ONE, "1d".to_owned()))
        );
        assert_eq!(scope_budget(&[soft], scope, None, "1mo"), None);
    }

    #[test]
    fn budgets_compare_by_value() {
        assert!(same_budget(
            Some(Decimal::new(100, 1)),
            Some(Decimal::new(10, 0))
        ));
        assert!(!same_budget(None, Some(Decimal::ONE)));
    }
}
