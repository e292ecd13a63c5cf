//! The directory: organizations, users, memberships, groups, profiles and invitations.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::ids::{GroupId, InvitationId, OrgId, ProfileId, TierSlug, UserId};
use crate::money::Money;

/// An organization's URL slug: 3-63 chars of a-z, 0-9 and '-'.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Slug(String);

impl Slug {
    /// Validates and wraps a slug.
    pub fn new(raw: impl Into<String>) -> Result<Self, ValidationError> {
        let raw = raw.into();
        let len_ok = (3..=63).contains(&raw.len());
        let chars_ok = raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if len_ok && chars_ok {
            Ok(Self(raw))
        } else {
            Err(ValidationError::new(
                "slug",
                format!(
                    "`{}` must be 3-63 characters of a-z, 0-9 and '-'",
                    raw.escape_debug()
                ),
            ))
        }
    }

    /// The slug as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Slug {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Slug> for String {
    fn from(s: Slug) -> Self {
        s.0
    }
}

/// An email address, trimmed and lowercased, with a plausible `local@domain.tld` shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

impl Email {
    /// Normalizes (trim, lowercase) and validates an email address.
    pub fn new(raw: impl AsRef<str>) -> Result<Self, ValidationError> {
        let raw = raw.as_ref();
        let normalized = raw.trim().to_lowercase();
        let invalid = || {
            ValidationError::new(
                "email",
                format!("`{}` is not a valid email address", raw.escape_debug()),
            )
        };
        if normalized.len() > 254
            || normalized
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid());
        }
        let (local, domain) = normalized.split_once('@').ok_or_else(invalid)?;
        let domain_ok = !domain.is_empty()
            && !domain.contains('@')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
        // `localhost` is accepted so the demo's default admin works without a real domain.
        let has_tld = domain.contains('.') || domain == "localhost";
        if local.is_empty() || local.len() > 64 || !domain_ok || !has_tld {
            return Err(invalid());
        }
        Ok(Self(normalized))
    }

    /// The normalized address.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Email {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> Self {
        e.0
    }
}

/// The billing plan of an organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingPlan {
    /// Trying StratAI out.
    Trial,
    /// Small team plan.
    Starter,
    /// Business plan.
    Business,
    /// Enterprise plan (the internal pilot uses it too).
    Enterprise,
}

/// An organization's settings (the seed's `settings` JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgSettings {
    /// Tiers the organization allows its people to use (further restricting its subscriptions).
    pub allowed_tiers: Vec<TierSlug>,
    /// The default tier; must be one of `allowed_tiers`.
    pub default_tier: TierSlug,
    /// Upper bound on members per group.
    pub max_users_per_group: u32,
    /// Whether members must log in with MFA.
    pub require_mfa: bool,
    /// IANA timezone used for budget periods (`None`: UTC).
    #[serde(default)]
    pub timezone: Option<String>,
}

/// A customer organization: the tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organization {
    /// Id.
    pub id: OrgId,
    /// Display name.
    pub name: String,
    /// Unique URL slug.
    pub slug: Slug,
    /// Settings.
    pub settings: OrgSettings,
    /// Billing contact.
    pub billing_email: Option<Email>,
    /// Billing plan.
    pub billing_plan: BillingPlan,
    /// Deactivated organizations keep their data but serve no requests.
    pub active: bool,
    /// LiteLLM organization id, when the proxy has Enterprise organizations.
    pub litellm_org_id: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last update.
    pub updated_at: DateTime<Utc>,
}

/// A person's platform-wide role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlatformRole {
    /// Platform operator: manages organizations and tiers.
    SuperAdmin,
    /// Everyone else.
    User,
}

/// A person known to StratAI (identity is platform-wide; access is per organization).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Normalized email, unique.
    pub email: Email,
    /// Display name.
    pub name: Option<String>,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// OIDC subject (`auth0|...`), unique when set.
    pub oidc_subject: Option<String>,
    /// Platform role.
    pub platform_role: PlatformRole,
    /// Inactive users are refused everywhere.
    pub active: bool,
    /// Last login.
    pub last_login_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// A role inside an organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrgRole {
    /// Owns the organization; alone may change owners.
    Owner,
    /// Manages members, groups, budgets and guardrails.
    Admin,
    /// Uses the models the organization grants.
    Member,
}

/// A user's membership of an organization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The organization.
    pub org_id: OrgId,
    /// The user.
    pub user_id: UserId,
    /// Role in the organization.
    pub role: OrgRole,
    /// Tiers this member may use (`None`: no member-level restriction).
    pub allowed_tiers: Option<Vec<TierSlug>>,
    /// Personal monthly budget inside the organization.
    pub monthly_budget: Option<Money>,
    /// Profile assigned by an admin.
    pub profile_id: Option<ProfileId>,
    /// LiteLLM virtual key id (the key's hash), once synced.
    pub litellm_key_id: Option<String>,
    /// When the user joined.
    pub joined_at: DateTime<Utc>,
}

/// A group (department/team) inside an organization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Id.
    pub id: GroupId,
    /// Owning organization.
    pub org_id: OrgId,
    /// Name, unique within the organization.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Tiers the group may use (`None`: no group-level restriction).
    pub allowed_tiers: Option<Vec<TierSlug>>,
    /// Group monthly budget.
    pub monthly_budget: Option<Money>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last update.
    pub updated_at: DateTime<Utc>,
}

/// A role inside a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupRole {
    /// Leads the group; may view its usage.
    Lead,
    /// Member of the group.
    Member,
}

/// A user's membership of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMembership {
    /// The group's organization.
    pub org_id: OrgId,
    /// The group.
    pub group_id: GroupId,
    /// The user (must be a member of the organization).
    pub user_id: UserId,
    /// Role in the group.
    pub role: GroupRole,
    /// When the user joined the group.
    pub joined_at: DateTime<Utc>,
}

/// Which organizations may use a profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileAvailability {
    /// Every organization.
    All,
    /// Only the internal pilot.
    Internal,
    /// Only enterprise-plan organizations.
    Enterprise,
}

/// A template of defaults for a kind of user ("Internal Employee", "External Contractor").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserProfile {
    /// Id.
    pub id: ProfileId,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Tiers granted by default.
    pub default_tiers: Vec<TierSlug>,
    /// Guardrail rules (raw rule JSON, validated by stratai-guardrails) applied by default.
    pub default_guardrails: serde_json::Value,
    /// Who may use the profile.
    pub available_to: ProfileAvailability,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

/// The state of an invitation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvitationStatus {
    /// Waiting to be accepted.
    Pending,
    /// Accepted (final).
    Accepted,
    /// Past its expiry (final).
    Expired,
    /// Revoked by an admin (final).
    Revoked,
}

/// An invitation to join an organization. Only the SHA-256 of its token is kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// Id.
    pub id: InvitationId,
    /// Invited address.
    pub email: Email,
    /// Organization to join.
    pub org_id: OrgId,
    /// Role granted on acceptance.
    pub role: OrgRole,
    /// Groups joined on acceptance.
    pub group_ids: Vec<GroupId>,
    /// Profile assigned on acceptance.
    pub profile_id: Option<ProfileId>,
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// State.
    pub status: InvitationStatus,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Who invited.
    pub invited_by: Option<UserId>,
    /// When accepted.
    pub accepted_at: Option<DateTime<Utc>>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}
