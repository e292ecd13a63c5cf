//! The directory: organizations, users, memberships, groups, profiles and invitations.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::ids::{GroupId, InvitationId, OrgId, ProfileId, RuleId, TierSlug, UserId};
use crate::money::Money;
use crate::ports::{RuleAction, RuleRecord, RuleScope};

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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Self-signup (the seed's onboarding B): people whose verified email is at one of these
    /// domains join the organization at their first sign-in, as members with the default
    /// tier. Empty (the default): nobody joins without an invitation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signup_domains: Vec<String>,
}

/// A customer organization: the tenant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum PlatformRole {
    /// Platform operator: manages organizations and tiers.
    SuperAdmin,
    /// Everyone else.
    User,
}

/// A person known to StratAI (identity is platform-wide; access is per organization).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// The group a member's usage is attributed to when the request names none: the member's
/// group with the smallest id (stable under renames). The one rule of StratAI's usage
/// records (the gateway's plan, LiteLLM spend imported as the member's) and of the team of
/// the member's LiteLLM key, so both books put a request in the same group.
#[must_use]
pub fn attribution_group(groups: impl IntoIterator<Item = GroupId>) -> Option<GroupId> {
    groups.into_iter().min()
}

/// A first member of a new group.
#[derive(Clone, Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewGroupMember {
    /// A member of the organization.
    pub user_id: UserId,
    /// Role in the group (default member).
    #[serde(default)]
    pub role: Option<GroupRole>,
}

/// A group (department/team) inside an organization.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum GroupRole {
    /// Leads the group; may view its usage.
    Lead,
    /// Member of the group.
    Member,
}

/// A user's membership of a group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// Most default guardrails one profile holds.
pub const MAX_PROFILE_GUARDRAILS: usize = 32;

/// One default guardrail of a profile: a rule without its scope. A member given the profile
/// gets it as a member-level rule ([`UserProfile::member_rules`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProfileGuardrail {
    /// Name of the rule.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// One of the rule types (`content_filter`, `token_limit`, ...).
    pub rule_type: String,
    /// The type's config.
    pub config: serde_json::Value,
    /// What it does on a match.
    pub action: RuleAction,
    /// Evaluation order (higher first).
    #[serde(default)]
    pub priority: i32,
}

/// The id of the rule made from default guardrail `index` of `profile` for `user` in `org`:
/// fixed, so the rules a profile gave a member are found again (and replaced or removed)
/// without touching the rules an admin wrote by hand.
#[must_use]
pub fn profile_rule_id(org: OrgId, user: UserId, profile: ProfileId, index: usize) -> RuleId {
    use sha2::{Digest, Sha256};
    let digest =
        Sha256::digest(format!("stratai/profile-rule/{org}/{user}/{profile}/{index}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    RuleId::from_uuid(uuid::Builder::from_custom_bytes(bytes).into_uuid())
}

/// Whether `rule` is one that `profile` gave `user` in `org` (see [`profile_rule_id`]).
#[must_use]
pub fn is_profile_rule(rule: &RuleRecord, org: OrgId, user: UserId, profile: ProfileId) -> bool {
    rule.scope
        == (RuleScope::User {
            org_id: org,
            user_id: user,
        })
        && (0..MAX_PROFILE_GUARDRAILS).any(|i| rule.id == profile_rule_id(org, user, profile, i))
}

/// The state of an invitation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Whether the invitation email went out.
    pub delivery: InvitationDelivery,
}

/// Where the invitation email stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting to be sent (just created, or resent).
    Queued,
    /// Handed to the mail server.
    Sent,
    /// The last attempt failed; it is retried with a fresh link while the invitation is pending.
    Failed,
    /// Not emailed (created before invitations were emailed).
    Skipped,
}

impl DeliveryStatus {
    /// The stored text.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Skipped => "skipped",
        }
    }
}

/// The delivery record of an invitation email.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvitationDelivery {
    /// State.
    pub status: DeliveryStatus,
    /// Attempts made for the current link.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<DateTime<Utc>>,
}

impl InvitationDelivery {
    /// Not attempted yet.
    #[must_use]
    pub fn queued() -> Self {
        Self {
            status: DeliveryStatus::Queued,
            attempts: 0,
            last_error: None,
            last_attempt_at: None,
        }
    }

    /// Longest stored failure reason (a mail server's answer can be long).
    pub const MAX_ERROR_LEN: usize = 500;

    /// Records an attempt at `now`: sent, or failed with `error`.
    pub fn record(&mut self, outcome: Result<(), String>, now: DateTime<Utc>) {
        self.attempts = self.attempts.saturating_add(1);
        self.last_attempt_at = Some(now);
        match outcome {
            Ok(()) => {
                self.status = DeliveryStatus::Sent;
                self.last_error = None;
            }
            Err(e) => {
                self.status = DeliveryStatus::Failed;
                self.last_error = Some(e.chars().take(Self::MAX_ERROR_LEN).collect());
            }
        }
    }

    /// Whether a retry is due at `now`: queued, or failed and the back-off since the last
    /// attempt has passed (1, 2, 4 ... minutes, at most an hour).
    #[must_use]
    pub fn retry_due(&self, now: DateTime<Utc>) -> bool {
        match self.status {
            DeliveryStatus::Queued => true,
            DeliveryStatus::Failed => {
                let exponent = self.attempts.saturating_sub(1).min(6);
                let wait = chrono::Duration::minutes(1i64 << exponent);
                self.last_attempt_at.is_none_or(|at| now >= at + wait)
            }
            DeliveryStatus::Sent | DeliveryStatus::Skipped => false,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validated construction
// ---------------------------------------------------------------------------------------------

/// Longest display name accepted for organizations, groups, users and profiles.
pub const MAX_NAME_LEN: usize = 200;

/// Trims a display name and checks it is non-empty, at most [`MAX_NAME_LEN`] characters and
/// free of control characters.
fn clean_name(field: &str, raw: &str) -> Result<String, ValidationError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(ValidationError::new(
            field,
            format!("`{name}` is longer than {MAX_NAME_LEN} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(ValidationError::new(
            field,
            format!("`{}` contains control characters", name.escape_debug()),
        ));
    }
    Ok(name.to_owned())
}

/// Refuses a tier list that names a tier twice (a sign of a confused client).
fn check_distinct_tiers(field: &str, tiers: &[TierSlug]) -> Result<(), ValidationError> {
    for (i, tier) in tiers.iter().enumerate() {
        if tiers[..i].contains(tier) {
            return Err(ValidationError::new(
                field,
                format!("tier `{tier}` is listed twice"),
            ));
        }
    }
    Ok(())
}

/// Checks a self-signup domain: lowercase, at least two labels of letters, digits and
/// hyphens (no `@`, no wildcard, no leading or trailing dot).
fn check_signup_domain(domain: &str) -> Result<(), String> {
    let shown = domain.escape_debug();
    if domain.is_empty() || domain.len() > 253 {
        return Err(format!("`{shown}` is not a domain"));
    }
    if domain != domain.to_lowercase() {
        return Err(format!("`{shown}` must be lowercase"));
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let label_ok = |l: &&str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars().all(|c| c.is_alphanumeric() || c == '-')
    };
    if labels.len() < 2 || !labels.iter().all(label_ok) {
        return Err(format!(
            "`{shown}` is not a domain such as `example.com` (no `@`, no wildcard)"
        ));
    }
    Ok(())
}

/// Parses an IANA timezone name such as `Europe/Berlin`.
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, ValidationError> {
    name.parse::<chrono_tz::Tz>().map_err(|_| {
        ValidationError::new(
            "timezone",
            format!("`{}` is not an IANA timezone", name.escape_debug()),
        )
    })
}

impl OrgSettings {
    /// Settings allowing `allowed_tiers`, defaulting to `default_tier`, with the seed's
    /// defaults otherwise (100 users per group, no MFA, UTC). Validated.
    pub fn new(
        allowed_tiers: Vec<TierSlug>,
        default_tier: TierSlug,
    ) -> Result<Self, ValidationError> {
        let settings = Self {
            allowed_tiers,
            default_tier,
            max_users_per_group: 100,
            require_mfa: false,
            timezone: None,
            signup_domains: Vec::new(),
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Checks the rules: the default tier is allowed, tiers are distinct, groups can hold at
    /// least one user, the timezone (if any) is an IANA name. Field paths are relative to the
    /// settings (`default_tier`, `timezone` ...).
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_distinct_tiers("allowed_tiers", &self.allowed_tiers)?;
        if !self.allowed_tiers.contains(&self.default_tier) {
            return Err(ValidationError::new(
                "default_tier",
                format!("`{}` is not one of the allowed tiers", self.default_tier),
            ));
        }
        if self.max_users_per_group == 0 {
            return Err(ValidationError::new(
                "max_users_per_group",
                "`0` must be at least 1",
            ));
        }
        if let Some(tz) = &self.timezone {
            parse_timezone(tz)?;
        }
        for (i, domain) in self.signup_domains.iter().enumerate() {
            check_signup_domain(domain)
                .map_err(|reason| ValidationError::new(format!("signup_domains[{i}]"), reason))?;
        }
        Ok(())
    }

    /// Whether a person with the verified address `email` may join by self-signup: its
    /// domain is one of [`signup_domains`](Self::signup_domains) (exactly; a subdomain is
    /// another domain).
    #[must_use]
    pub fn admits_signup(&self, email: &Email) -> bool {
        let Some((_, domain)) = email.as_str().rsplit_once('@') else {
            return false;
        };
        self.signup_domains.iter().any(|d| d == domain)
    }

    /// The timezone budget periods are computed in (UTC when unset or, for data that skipped
    /// validation, unparsable).
    #[must_use]
    pub fn tz(&self) -> chrono_tz::Tz {
        self.timezone
            .as_deref()
            .and_then(|name| name.parse().ok())
            .unwrap_or(chrono_tz::UTC)
    }
}

impl Organization {
    /// A new, active organization with a fresh id. Validates the name (non-empty, at most
    /// [`MAX_NAME_LEN`] characters) and the settings (errors name `settings.<field>`).
    pub fn new(
        name: &str,
        slug: Slug,
        settings: OrgSettings,
        billing_plan: BillingPlan,
        now: DateTime<Utc>,
    ) -> Result<Self, ValidationError> {
        let org = Self {
            id: OrgId::new(),
            name: clean_name("name", name)?,
            slug,
            settings,
            billing_email: None,
            billing_plan,
            active: true,
            litellm_org_id: None,
            created_at: now,
            updated_at: now,
        };
        org.validate()?;
        Ok(org)
    }

    /// Re-checks an organization built or changed field by field (e.g. by an update request).
    pub fn validate(&self) -> Result<(), ValidationError> {
        clean_name("name", &self.name)?;
        self.settings.validate().map_err(|e| e.within("settings"))
    }

    /// The organization's timezone for budget periods and reports.
    #[must_use]
    pub fn tz(&self) -> chrono_tz::Tz {
        self.settings.tz()
    }

    /// Checks that a group of this organization that has `current_members` members can take one
    /// more (`max_users_per_group`).
    pub fn check_group_capacity(&self, current_members: usize) -> Result<(), ValidationError> {
        let max = self.settings.max_users_per_group as usize;
        if current_members >= max {
            Err(ValidationError::new(
                "group",
                format!(
                    "the group already has `{current_members}` members, the organization allows {max}"
                ),
            ))
        } else {
            Ok(())
        }
    }
}

impl User {
    /// A new, active user with a fresh id. A name, when given, is trimmed and validated; a
    /// blank name counts as none.
    pub fn new(
        email: Email,
        name: Option<&str>,
        platform_role: PlatformRole,
        now: DateTime<Utc>,
    ) -> Result<Self, ValidationError> {
        let name = match name {
            Some(n) if !n.trim().is_empty() => Some(clean_name("name", n)?),
            _ => None,
        };
        Ok(Self {
            id: UserId::new(),
            email,
            name,
            avatar_url: None,
            oidc_subject: None,
            platform_role,
            active: true,
            last_login_at: None,
            created_at: now,
        })
    }

    /// Whether the user is an active platform super admin.
    #[must_use]
    pub fn is_super_admin(&self) -> bool {
        self.active && self.platform_role == PlatformRole::SuperAdmin
    }
}

impl Membership {
    /// A membership with no tier restriction, budget or profile (add them with the `with_`
    /// methods).
    #[must_use]
    pub fn new(org_id: OrgId, user_id: UserId, role: OrgRole, now: DateTime<Utc>) -> Self {
        Self {
            org_id,
            user_id,
            role,
            allowed_tiers: None,
            monthly_budget: None,
            profile_id: None,
            litellm_key_id: None,
            joined_at: now,
        }
    }

    /// Restricts the member to `tiers` (each at most once).
    pub fn with_allowed_tiers(mut self, tiers: Vec<TierSlug>) -> Result<Self, ValidationError> {
        check_distinct_tiers("allowed_tiers", &tiers)?;
        self.allowed_tiers = Some(tiers);
        Ok(self)
    }

    /// Sets the personal monthly budget.
    #[must_use]
    pub fn with_monthly_budget(mut self, budget: Money) -> Self {
        self.monthly_budget = Some(budget);
        self
    }

    /// Assigns a profile.
    #[must_use]
    pub fn with_profile(mut self, profile: ProfileId) -> Self {
        self.profile_id = Some(profile);
        self
    }

    /// Assigns `profile` and takes its default tiers as the member's allowed tiers (an admin may
    /// change them afterwards).
    pub fn apply_profile(&mut self, profile: &UserProfile) {
        self.profile_id = Some(profile.id);
        self.allowed_tiers = Some(profile.default_tiers.clone());
    }

    /// Re-checks a membership built or changed field by field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(tiers) = &self.allowed_tiers {
            check_distinct_tiers("allowed_tiers", tiers)?;
        }
        Ok(())
    }
}

impl Group {
    /// A new group with a fresh id, no tier restriction and no budget. The name is trimmed
    /// and validated.
    pub fn new(org_id: OrgId, name: &str, now: DateTime<Utc>) -> Result<Self, ValidationError> {
        Ok(Self {
            id: GroupId::new(),
            org_id,
            name: clean_name("name", name)?,
            description: None,
            allowed_tiers: None,
            monthly_budget: None,
            created_at: now,
            updated_at: now,
        })
    }

    /// Sets the description (blank: none).
    #[must_use]
    pub fn with_description(mut self, description: &str) -> Self {
        let d = description.trim();
        self.description = (!d.is_empty()).then(|| d.to_owned());
        self
    }

    /// Restricts the group to `tiers` (each at most once).
    pub fn with_allowed_tiers(mut self, tiers: Vec<TierSlug>) -> Result<Self, ValidationError> {
        check_distinct_tiers("allowed_tiers", &tiers)?;
        self.allowed_tiers = Some(tiers);
        Ok(self)
    }

    /// Sets the group's monthly budget.
    #[must_use]
    pub fn with_monthly_budget(mut self, budget: Money) -> Self {
        self.monthly_budget = Some(budget);
        self
    }

    /// Re-checks a group built or changed field by field.
    pub fn validate(&self) -> Result<(), ValidationError> {
        clean_name("name", &self.name)?;
        if let Some(tiers) = &self.allowed_tiers {
            check_distinct_tiers("allowed_tiers", tiers)?;
        }
        Ok(())
    }
}

impl GroupMembership {
    /// `user` joins `group` (of `org`) with `role`. The caller has checked that the user is a
    /// member of the organization and the group has room ([`Organization::check_group_capacity`]).
    #[must_use]
    pub fn new(
        org_id: OrgId,
        group_id: GroupId,
        user_id: UserId,
        role: GroupRole,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            org_id,
            group_id,
            user_id,
            role,
            joined_at: now,
        }
    }
}

impl UserProfile {
    /// A new profile with a fresh id and no default guardrails.
    pub fn new(
        name: &str,
        default_tiers: Vec<TierSlug>,
        available_to: ProfileAvailability,
        now: DateTime<Utc>,
    ) -> Result<Self, ValidationError> {
        check_distinct_tiers("default_tiers", &default_tiers)?;
        Ok(Self {
            id: ProfileId::new(),
            name: clean_name("name", name)?,
            description: None,
            default_tiers,
            default_guardrails: serde_json::Value::Array(Vec::new()),
            available_to,
            created_at: now,
        })
    }

    /// The default guardrails, read from their stored JSON (errors name
    /// `default_guardrails[i]`).
    pub fn guardrails(&self) -> Result<Vec<ProfileGuardrail>, ValidationError> {
        let serde_json::Value::Array(items) = &self.default_guardrails else {
            return Err(ValidationError::new(
                "default_guardrails",
                "must be an array of rules",
            ));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                serde_json::from_value(item.clone()).map_err(|e| {
                    ValidationError::new(format!("default_guardrails[{i}]"), e.to_string())
                })
            })
            .collect()
    }

    /// Replaces the default guardrails (at most [`MAX_PROFILE_GUARDRAILS`], each named).
    pub fn set_guardrails(&mut self, rules: &[ProfileGuardrail]) -> Result<(), ValidationError> {
        if rules.len() > MAX_PROFILE_GUARDRAILS {
            return Err(ValidationError::new(
                "default_guardrails",
                format!("at most {MAX_PROFILE_GUARDRAILS} rules"),
            ));
        }
        for (i, rule) in rules.iter().enumerate() {
            clean_name(&format!("default_guardrails[{i}].name"), &rule.name)?;
        }
        self.default_guardrails = serde_json::to_value(rules)
            .map_err(|e| ValidationError::new("default_guardrails", e.to_string()))?;
        Ok(())
    }

    /// The member-level rules this profile gives `user` in `org`, with fixed ids
    /// ([`profile_rule_id`]).
    pub fn member_rules(
        &self,
        org: OrgId,
        user: UserId,
        now: DateTime<Utc>,
    ) -> Result<Vec<RuleRecord>, ValidationError> {
        Ok(self
            .guardrails()?
            .into_iter()
            .enumerate()
            .map(|(i, g)| RuleRecord {
                id: profile_rule_id(org, user, self.id, i),
                name: g.name.trim().to_owned(),
                description: Some(g.description.map_or_else(
                    || format!("from profile `{}`", self.name),
                    |d| d.trim().to_owned(),
                )),
                rule_type: g.rule_type,
                config: g.config,
                scope: RuleScope::User {
                    org_id: org,
                    user_id: user,
                },
                action: g.action,
                priority: g.priority,
                active: true,
                created_at: now,
            })
            .collect())
    }

    /// Whether `org` may use the profile (`internal` profiles only
    /// in the organization whose slug is `internal`).
    #[must_use]
    pub fn available_for(&self, org: &Organization) -> bool {
        match self.available_to {
            ProfileAvailability::All => true,
            ProfileAvailability::Internal => org.slug.as_str() == INTERNAL_ORG_SLUG,
            ProfileAvailability::Enterprise => org.billing_plan == BillingPlan::Enterprise,
        }
    }
}

impl InvitationStatus {
    /// The status' name: `pending`, `accepted`, `expired`, `revoked`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            InvitationStatus::Pending => "pending",
            InvitationStatus::Accepted => "accepted",
            InvitationStatus::Expired => "expired",
            InvitationStatus::Revoked => "revoked",
        }
    }
}

impl OrgRole {
    /// The role's name: `owner`, `admin`, `member`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            OrgRole::Owner => "owner",
            OrgRole::Admin => "admin",
            OrgRole::Member => "member",
        }
    }
}

impl GroupRole {
    /// The role's name: `lead`, `member`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            GroupRole::Lead => "lead",
            GroupRole::Member => "member",
        }
    }
}

impl PlatformRole {
    /// The role's name: `super_admin`, `user`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            PlatformRole::SuperAdmin => "super_admin",
            PlatformRole::User => "user",
        }
    }
}

impl BillingPlan {
    /// The plan's name: `trial`, `starter`, `business`, `enterprise`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            BillingPlan::Trial => "trial",
            BillingPlan::Starter => "starter",
            BillingPlan::Business => "business",
            BillingPlan::Enterprise => "enterprise",
        }
    }
}

/// The slug of the internal pilot organization.
pub const INTERNAL_ORG_SLUG: &str = "internal";

// ---------------------------------------------------------------------------------------------
// Invitations
// ---------------------------------------------------------------------------------------------

/// Random bytes in an invitation token (256 bits; the issue asks for at least 128).
pub const INVITATION_TOKEN_BYTES: usize = 32;

/// Longest validity of an invitation.
pub const MAX_INVITATION_TTL_DAYS: i64 = 30;

/// The secret of an invitation: 64 hex characters (32 random bytes from the OS-seeded CSPRNG).
///
/// It is shown once (in the create response / the invitation email) and never stored; only
/// [`hash_token`] of it is. `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct InvitationToken(String);

impl InvitationToken {
    /// The token text, to hand to the invitee exactly once.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The hash stored in place of the token.
    #[must_use]
    pub fn hash(&self) -> String {
        hash_token(&self.0)
    }
}

impl fmt::Debug for InvitationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("InvitationToken(<redacted>)")
    }
}

/// Lowercase hex SHA-256 of an invitation token: how it is stored and looked up. The token is
/// hashed as given (a presented token is not normalized, so it must match exactly).
#[must_use]
pub fn hash_token(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// What an invitation grants, for [`Invitation::issue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvitationRequest {
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
    /// Who invites.
    pub invited_by: Option<UserId>,
    /// How long the invitation stays valid (positive, at most [`MAX_INVITATION_TTL_DAYS`]).
    pub valid_for: chrono::Duration,
}

/// An invalid invitation transition.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvitationError {
    /// The invitation was already accepted, revoked or expired.
    #[error("the invitation is {}, not pending", .status.as_str())]
    NotPending {
        /// Its status.
        status: InvitationStatus,
    },
    /// The invitation expired (it is now marked expired).
    #[error("the invitation expired at {expires_at}")]
    Expired {
        /// When it expired.
        expires_at: DateTime<Utc>,
    },
    /// The accepting user is not the invited address.
    #[error("the invitation is for another email address, not `{presented}`")]
    EmailMismatch {
        /// The accepting user's address.
        presented: Email,
    },
}

/// Why an invitation could not be renewed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenewError {
    /// It is no longer pending.
    #[error(transparent)]
    NotPending(InvitationError),
    /// The request is invalid.
    #[error(transparent)]
    Invalid(ValidationError),
}

impl Invitation {
    /// Issues a pending invitation and its token. Only the token's hash is in the invitation;
    /// the token is returned once, to be shown to the inviter or mailed to the invitee.
    pub fn issue(
        request: InvitationRequest,
        now: DateTime<Utc>,
    ) -> Result<(Invitation, InvitationToken), ValidationError> {
        if request.valid_for <= chrono::Duration::zero()
            || request.valid_for > chrono::Duration::days(MAX_INVITATION_TTL_DAYS)
        {
            return Err(ValidationError::new(
                "valid_for",
                format!(
                    "`{}` must be positive and at most {MAX_INVITATION_TTL_DAYS} days",
                    request.valid_for
                ),
            ));
        }
        let mut group_ids = request.group_ids;
        group_ids.sort();
        group_ids.dedup();
        let token = new_token();
        let invitation = Invitation {
            id: InvitationId::new(),
            email: request.email,
            org_id: request.org_id,
            role: request.role,
            group_ids,
            profile_id: request.profile_id,
            token_hash: token.hash(),
            status: InvitationStatus::Pending,
            expires_at: now + request.valid_for,
            invited_by: request.invited_by,
            accepted_at: None,
            created_at: now,
            delivery: InvitationDelivery::queued(),
        };
        Ok((invitation, token))
    }

    /// Invites the same address again (the seed's "resend"): a pending invitation (overdue or
    /// not) takes `request`'s grant, a fresh token and expiry, and a queued email. The old
    /// link stops working. Any other state is refused.
    pub fn renew(
        &mut self,
        request: InvitationRequest,
        now: DateTime<Utc>,
    ) -> Result<InvitationToken, RenewError> {
        if self.status != InvitationStatus::Pending {
            return Err(RenewError::NotPending(InvitationError::NotPending {
                status: self.status,
            }));
        }
        if request.email != self.email || request.org_id != self.org_id {
            return Err(RenewError::Invalid(ValidationError::new(
                "email",
                "a renewal is for the same address and organization",
            )));
        }
        let (fresh, token) = Invitation::issue(request, now).map_err(RenewError::Invalid)?;
        self.role = fresh.role;
        self.group_ids = fresh.group_ids;
        self.profile_id = fresh.profile_id;
        self.token_hash = fresh.token_hash;
        self.expires_at = fresh.expires_at;
        self.invited_by = fresh.invited_by.or(self.invited_by);
        self.delivery = InvitationDelivery::queued();
        Ok(token)
    }

    /// A fresh token for a retried email (the token of a mail that may not have arrived is
    /// never stored, so a retry mails a new one; the old link stops working).
    pub fn rotate_token(&mut self) -> InvitationToken {
        let token = new_token();
        self.token_hash = token.hash();
        token
    }

    /// Whether `token` is this invitation's token.
    #[must_use]
    pub fn matches_token(&self, token: &str) -> bool {
        // Both sides are hashes of secrets, so comparing them leaks nothing useful about the token.
        hash_token(token) == self.token_hash
    }

    /// Marks a pending invitation expired when `now` is at or past its expiry. Returns whether
    /// it changed.
    pub fn expire_if_due(&mut self, now: DateTime<Utc>) -> bool {
        if self.status == InvitationStatus::Pending && now >= self.expires_at {
            self.status = InvitationStatus::Expired;
            true
        } else {
            false
        }
    }

    /// Accepts the invitation for a user with `user_email`: it must be pending, unexpired (an
    /// expired one is marked expired and refused) and for that address.
    pub fn accept(
        &mut self,
        user_email: &Email,
        now: DateTime<Utc>,
    ) -> Result<(), InvitationError> {
        if self.status != InvitationStatus::Pending {
            return Err(InvitationError::NotPending {
                status: self.status,
            });
        }
        if self.expire_if_due(now) {
            return Err(InvitationError::Expired {
                expires_at: self.expires_at,
            });
        }
        if &self.email != user_email {
            return Err(InvitationError::EmailMismatch {
                presented: user_email.clone(),
            });
        }
        self.status = InvitationStatus::Accepted;
        self.accepted_at = Some(now);
        Ok(())
    }

    /// Revokes a pending invitation.
    pub fn revoke(&mut self) -> Result<(), InvitationError> {
        if self.status != InvitationStatus::Pending {
            return Err(InvitationError::NotPending {
                status: self.status,
            });
        }
        self.status = InvitationStatus::Revoked;
        Ok(())
    }

    /// The membership an accepted invitation creates for `user`.
    #[must_use]
    pub fn membership_for(&self, user: UserId, now: DateTime<Utc>) -> Membership {
        let mut membership = Membership::new(self.org_id, user, self.role, now);
        membership.profile_id = self.profile_id;
        membership
    }
}

fn new_token() -> InvitationToken {
    use rand::RngCore;
    let mut bytes = [0u8; INVITATION_TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    InvitationToken(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 15, 12, 0, 0).unwrap()
    }

    fn slug(s: &str) -> TierSlug {
        TierSlug::new(s).unwrap()
    }

    fn settings() -> OrgSettings {
        OrgSettings::new(vec![slug("basic"), slug("standard")], slug("standard")).unwrap()
    }

    #[test]
    fn organization_new_validates_name_and_settings() {
        let org = Organization::new(
            "  Our Company ",
            Slug::new("internal").unwrap(),
            settings(),
            BillingPlan::Enterprise,
            now(),
        )
        .unwrap();
        assert_eq!(org.name, "Our Company");
        assert!(org.active);

        let err = Organization::new(
            "  ",
            Slug::new("internal").unwrap(),
            settings(),
            BillingPlan::Trial,
            now(),
        )
        .unwrap_err();
        assert_eq!(err.field, "name");

        let mut bad = settings();
        bad.default_tier = slug("premium");
        let err = Organization::new(
            "X",
            Slug::new("xyz").unwrap(),
            bad,
            BillingPlan::Trial,
            now(),
        )
        .unwrap_err();
        assert_eq!(err.field, "settings.default_tier");
        assert!(err.to_string().contains("`premium`"), "{err}");
    }

    #[test]
    fn settings_rules_are_each_enforced() {
        type Mutation = Box<dyn Fn(&mut OrgSettings)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "max_users_per_group",
                Box::new(|s| s.max_users_per_group = 0),
            ),
            (
                "timezone",
                Box::new(|s| s.timezone = Some("Mars/Olympus".into())),
            ),
            (
                "allowed_tiers",
                Box::new(|s| s.allowed_tiers.push(TierSlug::new("basic").unwrap())),
            ),
            (
                "default_tier",
                Box::new(|s| s.allowed_tiers.retain(|t| t.as_str() != "standard")),
            ),
        ];
        for (field, mutate) in cases {
            let mut s = settings();
            mutate(&mut s);
            assert_eq!(s.validate().unwrap_err().field, field);
        }
        let mut s = settings();
        s.timezone = Some("Europe/Berlin".into());
        s.validate().unwrap();
        assert_eq!(s.tz(), chrono_tz::Europe::Berlin);
        assert_eq!(settings().tz(), chrono_tz::UTC);
    }

    #[test]
    fn settings_json_rejects_unknown_fields() {
        let json = r#"{"allowed_tiers":["basic"],"default_tier":"basic","max_users_per_group":5,"require_mfa":false,"colour":"red"}"#;
        assert!(serde_json::from_str::<OrgSettings>(json).is_err());
    }

    #[test]
    fn group_capacity_is_enforced() {
        let mut org = Organization::new(
            "Acme",
            Slug::new("acme").unwrap(),
            settings(),
            BillingPlan::Business,
            now(),
        )
        .unwrap();
        org.settings.max_users_per_group = 2;
        org.check_group_capacity(1).unwrap();
        assert!(org.check_group_capacity(2).is_err());
    }

    #[test]
    fn group_user_and_membership_constructors_validate() {
        let org = OrgId::new();
        assert_eq!(Group::new(org, "", now()).unwrap_err().field, "name");
        let g = Group::new(org, " Marketing ", now())
            .unwrap()
            .with_description("  ")
            .with_allowed_tiers(vec![slug("basic")])
            .unwrap();
        assert_eq!(g.name, "Marketing");
        assert_eq!(g.description, None);
        assert!(
            Group::new(org, "G", now())
                .unwrap()
                .with_allowed_tiers(vec![slug("basic"), slug("basic")])
                .is_err()
        );
        assert!(Group::new(org, &"x".repeat(MAX_NAME_LEN + 1), now()).is_err());

        let u = User::new(
            Email::new("Ann@Example.com").unwrap(),
            Some("  "),
            PlatformRole::User,
            now(),
        )
        .unwrap();
        assert_eq!(u.email.as_str(), "ann@example.com");
        assert_eq!(u.name, None);
        assert!(!u.is_super_admin());

        let m = Membership::new(org, u.id, OrgRole::Member, now())
            .with_allowed_tiers(vec![slug("basic")])
            .unwrap();
        m.validate().unwrap();
        assert!(
            Membership::new(org, u.id, OrgRole::Member, now())
                .with_allowed_tiers(vec![slug("basic"), slug("basic")])
                .is_err()
        );
    }

    #[test]
    fn profiles_set_default_tiers_and_availability() {
        let internal = Organization::new(
            "Our Company",
            Slug::new("internal").unwrap(),
            settings(),
            BillingPlan::Enterprise,
            now(),
        )
        .unwrap();
        let acme = Organization::new(
            "Acme",
            Slug::new("acme").unwrap(),
            settings(),
            BillingPlan::Starter,
            now(),
        )
        .unwrap();
        let contractor = UserProfile::new(
            "External Contractor",
            vec![slug("basic")],
            ProfileAvailability::All,
            now(),
        )
        .unwrap();
        let employee = UserProfile::new(
            "Internal Employee",
            vec![slug("basic"), slug("standard")],
            ProfileAvailability::Internal,
            now(),
        )
        .unwrap();
        let exec = UserProfile::new(
            "Executive",
            vec![slug("premium")],
            ProfileAvailability::Enterprise,
            now(),
        )
        .unwrap();
        assert!(contractor.available_for(&acme) && contractor.available_for(&internal));
        assert!(employee.available_for(&internal) && !employee.available_for(&acme));
        assert!(exec.available_for(&internal) && !exec.available_for(&acme));
        assert!(UserProfile::new(" ", vec![], ProfileAvailability::All, now()).is_err());

        let mut m = Membership::new(acme.id, UserId::new(), OrgRole::Member, now());
        m.apply_profile(&contractor);
        assert_eq!(m.profile_id, Some(contractor.id));
        assert_eq!(m.allowed_tiers, Some(vec![slug("basic")]));
    }

    fn invite(email: &str) -> (Invitation, InvitationToken) {
        Invitation::issue(
            InvitationRequest {
                email: Email::new(email).unwrap(),
                org_id: OrgId::new(),
                role: OrgRole::Member,
                group_ids: vec![],
                profile_id: None,
                invited_by: None,
                valid_for: chrono::Duration::days(7),
            },
            now(),
        )
        .unwrap()
    }

    #[test]
    fn tokens_are_random_long_and_only_hashed() {
        let (inv, token) = invite("a@example.com");
        let (_, other) = invite("a@example.com");
        assert_eq!(token.expose().len(), 2 * INVITATION_TOKEN_BYTES);
        assert_ne!(token, other);
        assert_eq!(inv.token_hash, hash_token(token.expose()));
        assert_ne!(inv.token_hash, token.expose());
        assert!(inv.matches_token(token.expose()));
        assert!(!inv.matches_token(other.expose()));
        assert!(!format!("{token:?}").contains(token.expose()));
        // Known SHA-256 vector.
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn invitation_ttl_is_bounded() {
        let mut req = InvitationRequest {
            email: Email::new("a@example.com").unwrap(),
            org_id: OrgId::new(),
            role: OrgRole::Member,
            group_ids: vec![],
            profile_id: None,
            invited_by: None,
            valid_for: chrono::Duration::zero(),
        };
        assert!(Invitation::issue(req.clone(), now()).is_err());
        req.valid_for = chrono::Duration::days(MAX_INVITATION_TTL_DAYS + 1);
        assert!(Invitation::issue(req, now()).is_err());
    }

    #[test]
    fn renewing_keeps_the_invitation_and_replaces_link_expiry_and_grant() {
        let (mut inv, old) = invite("bob@example.com");
        let id = inv.id;
        let later = now() + chrono::Duration::days(3);
        let request = InvitationRequest {
            email: inv.email.clone(),
            org_id: inv.org_id,
            role: OrgRole::Admin,
            group_ids: vec![],
            profile_id: None,
            invited_by: None,
            valid_for: chrono::Duration::days(7),
        };
        inv.delivery.record(Err("smtp down".to_owned()), now());
        let new = inv.renew(request.clone(), later).unwrap();
        assert_eq!(inv.id, id);
        assert!(inv.matches_token(new.expose()) && !inv.matches_token(old.expose()));
        assert_eq!(inv.expires_at, later + chrono::Duration::days(7));
        assert_eq!(inv.role, OrgRole::Admin);
        assert_eq!(inv.delivery, InvitationDelivery::queued());
        let mut other = request.clone();
        other.email = Email::new("eve@example.com").unwrap();
        assert!(matches!(
            inv.renew(other, later),
            Err(RenewError::Invalid(_))
        ));
        inv.revoke().unwrap();
        assert!(matches!(
            inv.renew(request, later),
            Err(RenewError::NotPending(_))
        ));
        let rotated = inv.rotate_token();
        assert!(inv.matches_token(rotated.expose()) && !inv.matches_token(new.expose()));
    }

    #[test]
    fn failed_deliveries_are_retried_with_growing_waits() {
        let mut d = InvitationDelivery::queued();
        assert!(d.retry_due(now()));
        d.record(Err("x".repeat(2000)), now());
        assert_eq!(d.status, DeliveryStatus::Failed);
        assert_eq!(
            d.last_error.as_ref().map(String::len),
            Some(InvitationDelivery::MAX_ERROR_LEN)
        );
        assert!(!d.retry_due(now() + chrono::Duration::seconds(59)));
        assert!(d.retry_due(now() + chrono::Duration::minutes(1)));
        d.record(Err("again".to_owned()), now());
        assert!(!d.retry_due(now() + chrono::Duration::minutes(1)));
        assert!(d.retry_due(now() + chrono::Duration::minutes(2)));
        for _ in 0..20 {
            d.record(Err("down".to_owned()), now());
        }
        assert!(d.retry_due(now() + chrono::Duration::minutes(64)));
        d.record(Ok(()), now());
        assert_eq!(d.status, DeliveryStatus::Sent);
        assert_eq!(d.last_error, None);
        assert!(!d.retry_due(now() + chrono::Duration::days(1)));
    }

    #[test]
    fn signup_domains_are_plain_domains_matched_exactly() {
        let mut s = settings();
        assert!(!s.admits_signup(&Email::new("ann@acme.example").unwrap()));
        s.signup_domains = vec!["acme.example".to_owned()];
        s.validate().unwrap();
        assert!(s.admits_signup(&Email::new("Ann@ACME.example").unwrap()));
        assert!(!s.admits_signup(&Email::new("ann@eu.acme.example").unwrap()));
        assert!(!s.admits_signup(&Email::new("ann@acme.example.evil").unwrap()));
        for bad in [
            "",
            "acme",
            "*.acme.example",
            "ann@acme.example",
            "Acme.example",
            ".acme.example",
            "acme..example",
            "-a.example",
        ] {
            s.signup_domains = vec!["ok.example".to_owned(), bad.to_owned()];
            let e = s.validate().unwrap_err();
            assert_eq!(e.field, "signup_domains[1]", "{bad}");
        }
    }

    #[test]
    fn accept_checks_email_then_succeeds_once() {
        let (mut inv, _) = invite("bob@example.com");
        let err = inv
            .accept(&Email::new("eve@example.com").unwrap(), now())
            .unwrap_err();
        assert!(matches!(err, InvitationError::EmailMismatch { .. }));
        assert_eq!(inv.status, InvitationStatus::Pending);

        inv.accept(&Email::new("BOB@example.com").unwrap(), now())
            .unwrap();
        assert_eq!(inv.status, InvitationStatus::Accepted);
        assert_eq!(inv.accepted_at, Some(now()));
        let again = inv.accept(&Email::new("bob@example.com").unwrap(), now());
        assert_eq!(
            again,
            Err(InvitationError::NotPending {
                status: InvitationStatus::Accepted
            })
        );
        assert!(inv.revoke().is_err());
    }

    #[test]
    fn accept_after_expiry_marks_expired() {
        let (mut inv, _) = invite("bob@example.com");
        let later = inv.expires_at;
        let err = inv
            .accept(&Email::new("bob@example.com").unwrap(), later)
            .unwrap_err();
        assert!(matches!(err, InvitationError::Expired { .. }));
        assert_eq!(inv.status, InvitationStatus::Expired);
        assert!(matches!(
            inv.accept(&Email::new("bob@example.com").unwrap(), now()),
            Err(InvitationError::NotPending { .. })
        ));
    }

    #[test]
    fn revoked_invitations_cannot_be_accepted() {
        let (mut inv, _) = invite("bob@example.com");
        inv.revoke().unwrap();
        assert_eq!(inv.status, InvitationStatus::Revoked);
        assert!(inv.revoke().is_err());
        assert!(
            inv.accept(&Email::new("bob@example.com").unwrap(), now())
                .is_err()
        );
        let membership = inv.membership_for(UserId::new(), now());
        assert_eq!(membership.org_id, inv.org_id);
        assert_eq!(membership.role, OrgRole::Member);
    }
}
