//! Organization administration over the stores: an organization created with its tier
//! subscriptions and first owner, its settings edited, deactivated. Who may change the
//! platform's fields (plan, activation, self-signup domains) is the caller's decision.

use chrono::{DateTime, Utc};
use stratai_core::directory::{
    BillingPlan, Email, Membership, OrgRole, OrgSettings, Organization, PlatformRole, Slug, User,
};
use stratai_core::ports::{DirectoryStore, TierStore};
use stratai_core::tiers::subscriptions_for;
use stratai_core::{OpError, OrgId, StoreError, TierSlug, ValidationError};

/// A new organization as asked, unchecked.
#[derive(Clone, Debug, Default)]
pub struct NewOrg {
    /// Display name.
    pub name: String,
    /// Unique slug (trimmed here).
    pub slug: String,
    /// Settings (default: basic and standard allowed, standard by default).
    pub settings: Option<OrgSettings>,
    /// Billing plan (default: trial).
    pub billing_plan: Option<BillingPlan>,
    /// Billing email.
    pub billing_email: Option<String>,
    /// Tier slugs to subscribe to (default: the settings' allowed tiers).
    pub tiers: Option<Vec<String>>,
    /// Email of the first owner (created if unknown).
    pub owner_email: Option<String>,
}

fn default_settings() -> Result<OrgSettings, ValidationError> {
    OrgSettings::new(
        vec![TierSlug::new("basic")?, TierSlug::new("standard")?],
        TierSlug::new("standard")?,
    )
}

/// Creates `new` at `now`, subscribed to its tiers, with its first owner (a user created
/// when the address is unknown). Every invalid field is refused at once (`slug`,
/// `settings.<field>`, `billing_email`, `owner_email`, `tiers[i]`) before anything is written.
pub async fn create_org(
    directory: &dyn DirectoryStore,
    tiers: &dyn TierStore,
    new: NewOrg,
    now: DateTime<Utc>,
) -> Result<Organization, OpError> {
    let mut errors = Vec::new();
    let slug = Slug::new(new.slug.trim())
        .map_err(|e| errors.push(ValidationError::new("slug", e.reason)))
        .ok();
    let settings = match new.settings {
        Some(s) => match s.validate() {
            Ok(()) => Some(s),
            Err(e) => {
                errors.push(ValidationError::new(
                    format!("settings.{}", e.field),
                    e.reason,
                ));
                None
            }
        },
        None => default_settings()
            .map_err(|e| errors.push(ValidationError::new("settings", e.reason)))
            .ok(),
    };
    let mut email = |field: &str, text: &Option<String>| match text {
        Some(e) => Email::new(e)
            .map(Some)
            .map_err(|e| errors.push(ValidationError::new(field, e.reason)))
            .unwrap_or(None),
        None => None,
    };
    let billing_email = email("billing_email", &new.billing_email);
    let owner_email = email("owner_email", &new.owner_email);
    let catalog = tiers.list_tiers().await?;
    let wanted: Vec<String> = match (&new.tiers, &settings) {
        (Some(t), _) => t.clone(),
        (None, Some(s)) => s
            .allowed_tiers
            .iter()
            .map(|t| t.as_str().to_owned())
            .collect(),
        (None, None) => Vec::new(),
    };
    let mut tier_ids = Vec::new();
    for (i, slug) in wanted.iter().enumerate() {
        match catalog.iter().find(|t| t.slug.as_str() == slug) {
            Some(t) => tier_ids.push(t.id),
            None => errors.push(ValidationError::new(
                format!("tiers[{i}]"),
                format!("unknown tier `{slug}`"),
            )),
        }
    }
    let (Some(slug), Some(settings), true) = (slug, settings, errors.is_empty()) else {
        return Err(OpError::Invalid(errors));
    };
    let mut org = Organization::new(
        &new.name,
        slug,
        settings,
        new.billing_plan.unwrap_or(BillingPlan::Trial),
        now,
    )?;
    org.billing_email = billing_email;
    directory.create_org(&org).await?;
    for sub in subscriptions_for(org.id, &tier_ids, now) {
        tiers.put_subscription(org.id, &sub).await?;
    }
    if let Some(email) = owner_email {
        let user = match directory.find_user_by_email(&email).await? {
            Some(u) => u,
            None => {
                let u = User::new(email, None, PlatformRole::User, now)?;
                directory.create_user(&u).await?;
                u
            }
        };
        directory
            .add_member(
                org.id,
                &Membership::new(org.id, user.id, OrgRole::Owner, now),
            )
            .await?;
    }
    Ok(org)
}

/// An edit of an organization: the fields to change.
#[derive(Clone, Debug, Default)]
pub struct OrgEdit {
    /// New name (trimmed).
    pub name: Option<String>,
    /// New settings (replaced whole).
    pub settings: Option<OrgSettings>,
    /// New billing email (`Some(None)` clears it).
    pub billing_email: Option<Option<String>>,
    /// New billing plan.
    pub billing_plan: Option<BillingPlan>,
    /// Reactivate or deactivate.
    pub active: Option<bool>,
}

/// Writes `edit` of organization `org_id` at `now`. `may_set_signup_domains` is the caller's
/// authority over self-signup domains (they take in everyone at the domain: the platform
/// vouches the organization owns it); settings changing them are refused without it.
pub async fn update_org(
    directory: &dyn DirectoryStore,
    org_id: OrgId,
    edit: OrgEdit,
    may_set_signup_domains: bool,
    now: DateTime<Utc>,
) -> Result<Organization, OpError> {
    let mut org = directory.get_org(org_id).await?;
    if let Some(name) = edit.name {
        org.name = name.trim().to_owned();
    }
    if let Some(settings) = edit.settings {
        if settings.signup_domains != org.settings.signup_domains && !may_set_signup_domains {
            return Err(OpError::Forbidden(
                "`settings.signup_domains`: only a platform super admin may change self-signup domains"
                    .to_owned(),
            ));
        }
        org.settings = settings;
    }
    if let Some(email) = edit.billing_email {
        org.billing_email = match email {
            Some(e) => {
                Some(Email::new(&e).map_err(|e| ValidationError::new("billing_email", e.reason))?)
            }
            None => None,
        };
    }
    if let Some(plan) = edit.billing_plan {
        org.billing_plan = plan;
    }
    if let Some(active) = edit.active {
        org.active = active;
    }
    org.validate()?;
    org.updated_at = now;
    directory.update_org(&org).await?;
    Ok(org)
}

/// Deactivates organization `org_id` at `now` (its data is kept).
pub async fn deactivate_org(
    directory: &dyn DirectoryStore,
    org_id: OrgId,
    now: DateTime<Utc>,
) -> Result<Organization, OpError> {
    let mut org = directory.get_org(org_id).await.map_err(|e| match e {
        StoreError::NotFound { .. } => OpError::NotFound("organization".to_owned()),
        other => other.into(),
    })?;
    org.active = false;
    org.updated_at = now;
    directory.update_org(&org).await?;
    Ok(org)
}
