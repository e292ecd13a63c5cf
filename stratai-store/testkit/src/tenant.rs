//! A tenant to test against (feature `stores`): the seed document's tier catalog, an
//! organization subscribed to every tier, one member and a hard daily budget of that member.

use chrono::Utc;
use stratai_core::Money;
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope};
use stratai_core::directory::{
    BillingPlan, Email, Membership, OrgRole, OrgSettings, Organization, PlatformRole, Slug, User,
};
use stratai_core::ids::{BudgetId, OrgId, UserId};
use stratai_core::tiers::{default_tiers, subscriptions_for};
use stratai_store::Stores;

/// What [`member_with_budget`] wrote.
#[derive(Clone, Copy, Debug)]
pub struct Tenant {
    /// The organization `Acme` (slug `acme`).
    pub org: OrgId,
    /// Its member Alice.
    pub user: UserId,
    /// Alice's hard daily budget.
    pub budget: BudgetId,
}

/// Writes into `stores` the default tiers, the organization `Acme` subscribed to each, its
/// member `alice@acme.example` and a hard daily budget of `limit` dollars for her (alerting at
/// 80 %).
// Test support: a fixture that cannot be written is the calling test's failure.
#[allow(clippy::expect_used)]
pub async fn member_with_budget(stores: &Stores, limit: &str) -> Tenant {
    let now = Utc::now();
    let tiers = default_tiers();
    for tier in &tiers {
        stores.tiers.upsert_tier(tier).await.expect("tier");
    }
    let slugs: Vec<_> = tiers.iter().map(|t| t.slug.clone()).collect();
    let settings = OrgSettings::new(slugs.clone(), slugs[0].clone()).expect("settings");
    let org = Organization::new(
        "Acme",
        Slug::new("acme").expect("slug"),
        settings,
        BillingPlan::Business,
        now,
    )
    .expect("organization");
    stores.directory.create_org(&org).await.expect("create org");
    let ids: Vec<_> = tiers.iter().map(|t| t.id).collect();
    for s in subscriptions_for(org.id, &ids, now) {
        stores
            .tiers
            .put_subscription(org.id, &s)
            .await
            .expect("subscription");
    }
    let user = User::new(
        Email::new("alice@acme.example").expect("email"),
        Some("Alice"),
        PlatformRole::User,
        now,
    )
    .expect("user");
    stores
        .directory
        .create_user(&user)
        .await
        .expect("create user");
    stores
        .directory
        .add_member(
            org.id,
            &Membership::new(org.id, user.id, OrgRole::Member, now),
        )
        .await
        .expect("membership");
    let budget = Budget::new(
        org.id,
        BudgetScope::User(user.id),
        Money::parse(limit).expect("limit"),
        BudgetPeriod::Daily,
        true,
        rust_decimal::Decimal::new(8, 1),
        now,
    )
    .expect("budget");
    stores
        .budgets
        .create_budget(org.id, &budget)
        .await
        .expect("create budget");
    Tenant {
        org: org.id,
        user: user.id,
        budget: budget.id,
    }
}
