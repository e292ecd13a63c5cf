//! The idempotent first-start seed: the seed document's tier catalog, its two user
//! profiles, the internal pilot organization and the platform super admin. The server runs
//! it at every start; an embedding service runs it once to have the platform the seed
//! document describes.

use chrono::Utc;
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope};
use stratai_core::directory::{
    BillingPlan, Email, INTERNAL_ORG_SLUG, Membership, OrgRole, OrgSettings, Organization,
    PlatformRole, ProfileAvailability, Slug, User, UserProfile,
};
use stratai_core::money::Money;
use stratai_core::tiers::{TierSubscription, default_tiers};
use stratai_core::{StoreError, TierSlug};

use crate::Stores;

/// What the seed found or created.
#[derive(Clone, Debug)]
pub struct SeedReport {
    /// The internal pilot organization.
    pub internal_org: Organization,
    /// The platform super admin.
    pub super_admin: User,
    /// Tiers created now (0 when the catalog existed).
    pub tiers_created: usize,
}

/// The internal pilot as the seed document sets it up: its name, 50 people per group at most
/// and a hard monthly organization budget of $10,000 (all tiers, `standard` by default).
pub const INTERNAL_ORG_NAME: &str = "Our Company";
/// The internal pilot's `max_users_per_group`.
pub const INTERNAL_MAX_USERS_PER_GROUP: u32 = 50;
/// The internal pilot's monthly organization budget, in dollars (hard).
pub const INTERNAL_MONTHLY_BUDGET_DOLLARS: u32 = 10_000;

/// The seed document's two user profiles (`user_profiles.name`): internal employees start
/// with the basic and standard tiers, in the internal pilot only; external contractors with
/// basic, anywhere.
fn seed_profiles(now: chrono::DateTime<Utc>) -> Result<Vec<UserProfile>, StoreError> {
    let basic = TierSlug::new("basic")?;
    let standard = TierSlug::new("standard")?;
    let mut employee = UserProfile::new(
        "Internal Employee",
        vec![basic.clone(), standard],
        ProfileAvailability::Internal,
        now,
    )?;
    employee.description = Some("People of the company running the internal pilot".to_owned());
    let mut contractor = UserProfile::new(
        "External Contractor",
        vec![basic],
        ProfileAvailability::All,
        now,
    )?;
    contractor.description = Some("People from outside the organization".to_owned());
    Ok(vec![employee, contractor])
}

/// The idempotent first-start seed: the seed document's three tiers, its two user profiles,
/// the internal pilot organization as the seed document sets it up (name `Our Company`, slug
/// `internal`, every tier, `standard` by default, 50 people per group, a hard monthly
/// organization budget of $10,000) and the platform super admin `admin_email`, owner of that
/// organization. Running it again changes nothing (existing tiers, profiles, settings and
/// budgets are left as operators changed them; the configured admin is kept a super admin).
pub async fn seed(stores: &Stores, admin_email: &str) -> Result<SeedReport, StoreError> {
    let now = Utc::now();
    let mut tiers_created = 0;
    let existing = stores.tiers.list_tiers().await?;
    let catalog = default_tiers();
    for tier in &catalog {
        if !existing.iter().any(|t| t.id == tier.id) {
            stores.tiers.upsert_tier(tier).await?;
            tiers_created += 1;
        }
    }

    let slug = Slug::new(INTERNAL_ORG_SLUG)?;
    let internal_org = match stores.directory.find_org_by_slug(&slug).await? {
        Some(org) => org,
        None => {
            let slugs: Vec<_> = catalog.iter().map(|t| t.slug.clone()).collect();
            let default = catalog
                .iter()
                .find(|t| t.slug.as_str() == "standard")
                .map_or_else(|| slugs[0].clone(), |t| t.slug.clone());
            let mut settings = OrgSettings::new(slugs, default)?;
            settings.max_users_per_group = INTERNAL_MAX_USERS_PER_GROUP;
            let org = Organization::new(
                INTERNAL_ORG_NAME,
                slug,
                settings,
                BillingPlan::Enterprise,
                now,
            )?;
            match stores.directory.create_org(&org).await {
                Ok(()) => {
                    let budget = Budget::new(
                        org.id,
                        BudgetScope::Org,
                        Money::dollars(INTERNAL_MONTHLY_BUDGET_DOLLARS),
                        BudgetPeriod::Monthly,
                        true,
                        rust_decimal::Decimal::new(8, 1),
                        now,
                    )?;
                    stores.budgets.create_budget(org.id, &budget).await?;
                    org
                }
                // Another instance seeded concurrently.
                Err(StoreError::Conflict(_)) => stores
                    .directory
                    .find_org_by_slug(&org.slug)
                    .await?
                    .ok_or_else(|| StoreError::Backend("internal org vanished".to_owned()))?,
                Err(e) => return Err(e),
            }
        }
    };
    let profiles = stores.directory.list_profiles().await?;
    for profile in seed_profiles(now)? {
        if !profiles.iter().any(|p| p.name == profile.name) {
            stores.directory.create_profile(&profile).await?;
        }
    }

    let subscriptions = stores.tiers.list_subscriptions(internal_org.id).await?;
    for tier in &catalog {
        if !subscriptions.iter().any(|s| s.tier_id == tier.id) {
            stores
                .tiers
                .put_subscription(
                    internal_org.id,
                    &TierSubscription {
                        org_id: internal_org.id,
                        tier_id: tier.id,
                        enabled: true,
                        monthly_budget: None,
                        enabled_at: now,
                    },
                )
                .await?;
        }
    }

    let email = Email::new(admin_email)?;
    let super_admin = match stores.directory.find_user_by_email(&email).await? {
        Some(mut user) => {
            if user.platform_role != PlatformRole::SuperAdmin {
                user = stores
                    .directory
                    .set_platform_role(user.id, PlatformRole::SuperAdmin)
                    .await?;
            }
            if !user.active {
                user = stores.directory.set_user_active(user.id, true).await?;
            }
            user
        }
        None => {
            let user = User::new(email, Some("Platform Admin"), PlatformRole::SuperAdmin, now)?;
            match stores.directory.create_user(&user).await {
                Ok(()) => user,
                Err(StoreError::Conflict(_)) => stores
                    .directory
                    .find_user_by_email(&user.email)
                    .await?
                    .ok_or_else(|| StoreError::Backend("super admin vanished".to_owned()))?,
                Err(e) => return Err(e),
            }
        }
    };
    match stores
        .directory
        .get_member(internal_org.id, super_admin.id)
        .await
    {
        Ok(_) => {}
        Err(StoreError::NotFound { .. }) => {
            let member = Membership::new(internal_org.id, super_admin.id, OrgRole::Owner, now);
            match stores.directory.add_member(internal_org.id, &member).await {
                Ok(()) | Err(StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    Ok(SeedReport {
        internal_org,
        super_admin,
        tiers_created,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn seed_is_idempotent() {
        let stores = Stores::memory();
        let first = seed(&stores, "admin@localhost").await.unwrap();
        assert_eq!(first.tiers_created, 3);
        let second = seed(&stores, "admin@localhost").await.unwrap();
        assert_eq!(second.tiers_created, 0);
        assert_eq!(first.internal_org.id, second.internal_org.id);
        assert_eq!(first.super_admin.id, second.super_admin.id);
        let member = stores
            .directory
            .get_member(first.internal_org.id, first.super_admin.id)
            .await
            .unwrap();
        assert_eq!(member.role, OrgRole::Owner);
        assert_eq!(
            stores
                .tiers
                .list_subscriptions(first.internal_org.id)
                .await
                .unwrap()
                .len(),
            3
        );
        assert_eq!(stores.directory.list_orgs().await.unwrap().len(), 1);

        // The internal pilot as the seed document has it.
        let org = &first.internal_org;
        assert_eq!(org.name, "Our Company");
        assert_eq!(org.slug.as_str(), "internal");
        assert_eq!(org.billing_plan, BillingPlan::Enterprise);
        assert_eq!(org.settings.max_users_per_group, 50);
        assert_eq!(org.settings.default_tier.as_str(), "standard");
        let allowed: Vec<&str> = org
            .settings
            .allowed_tiers
            .iter()
            .map(TierSlug::as_str)
            .collect();
        assert_eq!(allowed, ["basic", "standard", "premium"]);
        assert!(!org.settings.require_mfa);
        let budgets = stores.budgets.list_budgets(org.id).await.unwrap();
        assert_eq!(
            budgets.len(),
            1,
            "one budget, not one per start: {budgets:?}"
        );
        assert_eq!(budgets[0].scope, BudgetScope::Org);
        assert_eq!(budgets[0].limit, Money::dollars(10_000));
        assert_eq!(budgets[0].period, BudgetPeriod::Monthly);
        assert!(budgets[0].hard_limit);

        // The two profiles, once each.
        let profiles = stores.directory.list_profiles().await.unwrap();
        let mut names: Vec<&str> = profiles.iter().map(|p| p.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["External Contractor", "Internal Employee"]);
        let employee = profiles
            .iter()
            .find(|p| p.name == "Internal Employee")
            .unwrap();
        assert_eq!(employee.available_to, ProfileAvailability::Internal);
        assert!(employee.available_for(org));
    }
}
