//! Typed requests and answers of the LiteLLM management API (1.108).
//!
//! Answers keep the fields StratAI uses and ignore the rest (LiteLLM adds fields in every
//! release, so answers are not `deny_unknown_fields`). Money is [`Decimal`] parsed from the
//! JSON number text (see [`crate::decimal`]); timestamps are parsed leniently
//! ([`crate::time::parse_timestamp`]); unparseable timestamps become `None`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::Secret;

/// Free-form metadata stored on LiteLLM entities.
pub type Metadata = Map<String, Value>;

/// Serializes an amount as a JSON number with its exact decimal digits (no `f64`).
pub(crate) fn ser_decimal_opt<S: Serializer>(
    value: &Option<Decimal>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        None => s.serialize_none(),
        Some(amount) => {
            let raw = serde_json::value::RawValue::from_string(amount.normalize().to_string())
                .map_err(serde::ser::Error::custom)?;
            raw.serialize(s)
        }
    }
}

/// `deserialize_with` for fields LiteLLM sends as `null` or omits instead of empty.
pub(crate) fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// Like [`ser_decimal_opt`], with `Some(None)` written as `null`.
pub(crate) fn ser_decimal_opt_opt<S: Serializer>(
    value: &Option<Option<Decimal>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        None | Some(None) => s.serialize_none(),
        Some(amount) => ser_decimal_opt(amount, s),
    }
}

// ----------------------------------------------------------------------------- keys

/// The sha256 hex of a virtual key: LiteLLM's `token`, used in `/key/list`, spend logs
/// (`api_key`) and rate-limit messages. It is not a credential.
pub fn key_token(key: &Secret) -> String {
    hex::encode(Sha256::digest(key.expose().as_bytes()))
}

/// A virtual key named either by its secret or by its token hash (most management
/// endpoints accept both; prefer the token, which is not a credential).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRef {
    /// The `sk-...` secret.
    Secret(Secret),
    /// The sha256 hex token.
    Token(String),
}

impl KeyRef {
    pub(crate) fn as_param(&self) -> &str {
        match self {
            KeyRef::Secret(s) => s.expose(),
            KeyRef::Token(t) => t,
        }
    }

    /// The token hash of the key.
    pub fn token(&self) -> String {
        match self {
            KeyRef::Secret(s) => key_token(s),
            KeyRef::Token(t) => t.clone(),
        }
    }
}

impl From<Secret> for KeyRef {
    fn from(value: Secret) -> Self {
        KeyRef::Secret(value)
    }
}

impl From<&Secret> for KeyRef {
    fn from(value: &Secret) -> Self {
        KeyRef::Secret(value.clone())
    }
}

/// `POST /key/generate`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct KeyGenerate {
    /// Unique alias (LiteLLM refuses duplicates with 400, mapped to `AlreadyExists`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_alias: Option<String>,
    /// Owner user id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Team id (LiteLLM does not check that it exists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// Organization (LiteLLM Enterprise; without it the key inherits its team's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// Models the key may call; empty means all the team's models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Budget in dollars.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_decimal_opt"
    )]
    pub max_budget: Option<Decimal>,
    /// Budget period, e.g. `30d`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_duration: Option<String>,
    /// Key lifetime, e.g. `30d`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Requests per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm_limit: Option<u64>,
    /// Tokens per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm_limit: Option<u64>,
    /// Metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Created blocked (every call with it refused until unblocked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked: Option<bool>,
}

/// The answer of `/key/generate`: the only time the secret is shown.
#[derive(Clone, Debug, Deserialize)]
pub struct GeneratedKey {
    /// The secret `sk-...`.
    pub key: Secret,
    /// Its token hash.
    #[serde(default)]
    pub token: Option<String>,
    /// Alias.
    #[serde(default)]
    pub key_alias: Option<String>,
    /// `sk-...XXXX`.
    #[serde(default)]
    pub key_name: Option<String>,
    /// Allowed models.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub models: Vec<String>,
    /// Budget.
    #[serde(default, deserialize_with = "crate::decimal::optional")]
    pub max_budget: Option<Decimal>,
    /// Budget period.
    #[serde(default)]
    pub budget_duration: Option<String>,
    /// Owner.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Team.
    #[serde(default)]
    pub team_id: Option<String>,
    /// Metadata.
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// Expiry.
    #[serde(default, deserialize_with = "crate::time::optional")]
    pub expires: Option<DateTime<Utc>>,
}

impl GeneratedKey {
    /// The token hash (from the answer, or computed from the secret).
    pub fn token_hash(&self) -> String {
        self.token.clone().unwrap_or_else(|| key_token(&self.key))
    }
}

/// `POST /key/update`: only the set fields change.
#[derive(Clone, Debug, Default)]
pub struct KeyUpdate {
    /// New models.
    pub models: Option<Vec<String>>,
    /// New budget.
    pub max_budget: Option<Decimal>,
    /// New budget period.
    pub budget_duration: Option<String>,
    /// New rpm limit.
    pub rpm_limit: Option<u64>,
    /// New tpm limit.
    pub tpm_limit: Option<u64>,
    /// New metadata (replaces the old).
    pub metadata: Option<Metadata>,
    /// New alias.
    pub key_alias: Option<String>,
    /// Block or unblock.
    pub blocked: Option<bool>,
    /// Move the key to another team.
    pub team_id: Option<String>,
    /// Move the key into an organization (LiteLLM Enterprise).
    pub organization_id: Option<String>,
    /// Remove the budget (sends `max_budget: null`; wins over `max_budget`).
    pub clear_max_budget: bool,
    /// Remove the per-minute limits left unset here (sends `rpm_limit: null` when
    /// `rpm_limit` is `None`, the same for `tpm_limit`).
    pub clear_limits: bool,
    /// New lifetime from now (`1h`): LiteLLM refuses the key after it.
    pub duration: Option<String>,
}

#[derive(Serialize)]
pub(crate) struct KeyUpdateBody<'a> {
    pub(crate) key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) models: Option<&'a [String]>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_decimal_opt_opt"
    )]
    pub(crate) max_budget: Option<Option<Decimal>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) budget_duration: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rpm_limit: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) tpm_limit: Option<Option<u64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) metadata: Option<&'a Metadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key_alias: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) blocked: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) team_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) organization_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) duration: Option<&'a str>,
}

/// A key as `/key/info`, `/key/update` and `/key/list?return_full_object=true` describe it
/// (never with its secret).
#[derive(Clone, Debug, Deserialize)]
pub struct KeyInfo {
    /// Token hash (absent in `/key/info`'s `info`; the client fills it in).
    #[serde(default)]
    pub token: Option<String>,
    /// `sk-...XXXX`.
    #[serde(default)]
    pub key_name: Option<String>,
    /// Alias.
    #[serde(default)]
    pub key_alias: Option<String>,
    /// Spend so far.
    #[serde(default, deserialize_with = "crate::decimal::or_zero")]
    pub spend: Decimal,
    /// Budget.
    #[serde(default, deserialize_with = "crate::decimal::optional")]
    pub max_budget: Option<Decimal>,
    /// Budget period.
    #[serde(default)]
    pub budget_duration: Option<String>,
    /// Next budget reset.
    #[serde(default, deserialize_with = "crate::time::optional")]
    pub budget_reset_at: Option<DateTime<Utc>>,
    /// Allowed models.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub models: Vec<String>,
    /// Owner.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Team.
    #[serde(default)]
    pub team_id: Option<String>,
    /// Organization (LiteLLM Enterprise).
    #[serde(default)]
    pub organization_id: Option<String>,
    /// Metadata.
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// Requests per minute.
    #[serde(default)]
    pub rpm_limit: Option<u64>,
    /// Tokens per minute.
    #[serde(default)]
    pub tpm_limit: Option<u64>,
    /// Blocked.
    #[serde(default)]
    pub blocked: Option<bool>,
    /// `active`, or `deleted` for a deleted key (`/key/info` still answers 200).
    #[serde(default)]
    pub status: Option<String>,
    /// Expiry.
    #[serde(default, deserialize_with = "crate::time::optional")]
    pub expires: Option<DateTime<Utc>>,
    /// Created.
    #[serde(default, deserialize_with = "crate::time::optional")]
    pub created_at: Option<DateTime<Utc>>,
    /// Updated.
    #[serde(default, deserialize_with = "crate::time::optional")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl KeyInfo {
    /// Whether LiteLLM marks the key deleted.
    pub fn is_deleted(&self) -> bool {
        self.status.as_deref() == Some("deleted")
    }
}

#[derive(Deserialize)]
pub(crate) struct KeyInfoEnvelope {
    pub(crate) info: KeyInfo,
}

/// Filter of `/key/list`.
#[derive(Clone, Debug, Default)]
pub struct KeyListQuery {
    /// Keys of this user.
    pub user_id: Option<String>,
    /// Keys of this team.
    pub team_id: Option<String>,
    /// Keys with this alias.
    pub key_alias: Option<String>,
    /// Page size (default 100).
    pub page_size: Option<u32>,
}

/// One page of `/key/list?return_full_object=true`.
#[derive(Clone, Debug, Deserialize)]
pub struct KeyPage {
    /// Keys.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub keys: Vec<KeyInfo>,
    /// Total matching keys.
    #[serde(default)]
    pub total_count: Option<u64>,
    /// Page number (1-based).
    #[serde(default)]
    pub current_page: Option<u64>,
    /// Pages.
    #[serde(default)]
    pub total_pages: Option<u64>,
}

// ----------------------------------------------------------------------------- teams

/// `POST /team/new`. Pass `team_id`: LiteLLM accepts caller ids, which makes the create
/// idempotent (a duplicate `team_id` is `AlreadyExists`; a duplicate alias is NOT detected).
#[derive(Clone, Debug, Default, Serialize)]
pub struct TeamNew {
    /// Our id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    /// Alias.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_alias: Option<String>,
    /// Organization (Enterprise only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// Allowed models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Budget.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_decimal_opt"
    )]
    pub max_budget: Option<Decimal>,
    /// Budget period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_duration: Option<String>,
    /// Requests per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm_limit: Option<u64>,
    /// Tokens per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm_limit: Option<u64>,
    /// Metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// `POST /team/update`: only the set fields change.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TeamUpdate {
    /// The team.
    pub team_id: String,
    /// New alias.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_alias: Option<String>,
    /// Move the team into an organization (LiteLLM Enterprise; its models and budget must
    /// fit the organization's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// New models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// New budget.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_decimal_opt"
    )]
    pub max_budget: Option<Decimal>,
    /// New budget period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_duration: Option<String>,
    /// New rpm limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm_limit: Option<u64>,
    /// New tpm limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm_limit: Option<u64>,
    /// New metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Remove the budget (sends `max_budget: null`; wins over `max_budget`).
    #[serde(skip)]
    pub clear_max_budget: bool,
}

/// A team member.
#[derive(Clone, Debug, Deserialize)]
pub struct TeamMember {
    /// User id.
    #[serde(default)]
    pub user_id: Option<String>,
    /// Email.
    #[serde(default)]
    pub user_email: Option<String>,
    /// `admin` or `user`.
    #[serde(default)]
    pub role: Option<String>,
}

/// A team.
#[derive(Clone, Debug, Deserialize)]
pub struct Team {
    /// Id.
    pub team_id: String,
    /// Alias.
    #[serde(default)]
    pub team_alias: Option<String>,
    /// Organization.
    #[serde(default)]
    pub organization_id: Option<String>,
    /// Allowed models.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub models: Vec<String>,
    /// Budget.
    #[serde(default, deserialize_with = "crate::decimal::optional")]
    pub max_budget: Option<Decimal>,
    /// Spend so far.
    #[serde(default, deserialize_with = "crate::decimal::or_zero")]
    pub spend: Decimal,
    /// Budget period.
    #[serde(default)]
    pub budget_duration: Option<String>,
    /// Next budget reset.
    #[serde(default, deserialize_with = "crate::time::optional")]
    pub budget_reset_at: Option<DateTime<Utc>>,
    /// Requests per minute.
    #[serde(default)]
    pub rpm_limit: Option<u64>,
    /// Tokens per minute.
    #[serde(default)]
    pub tpm_limit: Option<u64>,
    /// Metadata.
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// Blocked.
    #[serde(default)]
    pub blocked: Option<bool>,
    /// Members.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub members_with_roles: Vec<TeamMember>,
    /// Created.
    #[serde(default, deserialize_with = "crate::time::optional")]
    pub created_at: Option<DateTime<Utc>>,
    /// Updated.
    #[serde(default, deserialize_with = "crate::time::optional")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl Team {
    /// Whether `user_id` is a member.
    pub fn has_member(&self, user_id: &str) -> bool {
        self.members_with_roles
            .iter()
            .any(|m| m.user_id.as_deref() == Some(user_id))
    }
}

/// `/team/info`: the team and its keys.
#[derive(Clone, Debug, Deserialize)]
pub struct TeamInfo {
    /// The team.
    pub team_info: Team,
    /// Its keys (with token hashes).
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub keys: Vec<KeyInfo>,
}

#[derive(Deserialize)]
pub(crate) struct DataEnvelope<T> {
    pub(crate) data: T,
}

// ----------------------------------------------------------------------------- users

/// `POST /user/new` (never auto-creates a key). Pass `user_id`: a duplicate is `AlreadyExists`.
#[derive(Clone, Debug, Serialize)]
pub struct UserNew {
    /// Our id.
    pub user_id: String,
    /// Email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_email: Option<String>,
    /// Display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_alias: Option<String>,
    /// `internal_user`, `internal_user_viewer`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_role: Option<String>,
    /// Budget.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_decimal_opt"
    )]
    pub max_budget: Option<Decimal>,
    /// Budget period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_duration: Option<String>,
    /// Allowed models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Teams to join.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teams: Option<Vec<String>>,
    /// Metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    auto_create_key: bool,
}

impl UserNew {
    /// A user with only its id.
    pub fn new(user_id: impl Into<String>) -> Self {
        Self {
            user_id: user_id.into(),
            user_email: None,
            user_alias: None,
            user_role: None,
            max_budget: None,
            budget_duration: None,
            models: None,
            teams: None,
            metadata: None,
            auto_create_key: false,
        }
    }
}

/// `POST /user/update` (LiteLLM upserts: an unknown `user_id` is created).
#[derive(Clone, Debug, Default, Serialize)]
pub struct UserUpdate {
    /// The user.
    pub user_id: String,
    /// New email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_email: Option<String>,
    /// New display name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_alias: Option<String>,
    /// New budget.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_decimal_opt"
    )]
    pub max_budget: Option<Decimal>,
    /// New budget period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_duration: Option<String>,
    /// New models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// New metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// A user.
#[derive(Clone, Debug, Deserialize)]
pub struct User {
    /// Id.
    pub user_id: String,
    /// Email.
    #[serde(default)]
    pub user_email: Option<String>,
    /// Display name.
    #[serde(default)]
    pub user_alias: Option<String>,
    /// Role.
    #[serde(default)]
    pub user_role: Option<String>,
    /// Budget.
    #[serde(default, deserialize_with = "crate::decimal::optional")]
    pub max_budget: Option<Decimal>,
    /// Spend so far.
    #[serde(default, deserialize_with = "crate::decimal::or_zero")]
    pub spend: Decimal,
    /// Budget period.
    #[serde(default)]
    pub budget_duration: Option<String>,
    /// Allowed models.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub models: Vec<String>,
    /// Teams.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub teams: Vec<String>,
    /// Metadata.
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// Created.
    #[serde(default, deserialize_with = "crate::time::optional")]
    pub created_at: Option<DateTime<Utc>>,
}

/// `/user/info`: the user and its keys.
#[derive(Clone, Debug, Deserialize)]
pub struct UserInfo {
    /// The user.
    pub user_info: User,
    /// Its keys.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub keys: Vec<KeyInfo>,
}

/// One page of `/user/list`.
#[derive(Clone, Debug, Deserialize)]
pub struct UserPage {
    /// Users.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub users: Vec<User>,
    /// Total.
    #[serde(default)]
    pub total: Option<u64>,
    /// Page (1-based).
    #[serde(default)]
    pub page: Option<u64>,
    /// Pages.
    #[serde(default)]
    pub total_pages: Option<u64>,
}

// ----------------------------------------------------------------------------- budgets

/// `POST /budget/new` / `/budget/update`. Pass `budget_id` (a duplicate is `AlreadyExists`).
/// `model_max_budget` is Enterprise-only and not offered.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BudgetNew {
    /// Our id.
    pub budget_id: String,
    /// Hard limit.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_decimal_opt"
    )]
    pub max_budget: Option<Decimal>,
    /// Soft limit (alerts).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_decimal_opt"
    )]
    pub soft_budget: Option<Decimal>,
    /// Period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_duration: Option<String>,
    /// Requests per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpm_limit: Option<u64>,
    /// Tokens per minute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tpm_limit: Option<u64>,
    /// Parallel requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_parallel_requests: Option<u64>,
}

/// A budget.
#[derive(Clone, Debug, Deserialize)]
pub struct Budget {
    /// Id.
    pub budget_id: String,
    /// Hard limit.
    #[serde(default, deserialize_with = "crate::decimal::optional")]
    pub max_budget: Option<Decimal>,
    /// Soft limit.
    #[serde(default, deserialize_with = "crate::decimal::optional")]
    pub soft_budget: Option<Decimal>,
    /// Period.
    #[serde(default)]
    pub budget_duration: Option<String>,
    /// Next reset.
    #[serde(default, deserialize_with = "crate::time::optional")]
    pub budget_reset_at: Option<DateTime<Utc>>,
    /// Requests per minute.
    #[serde(default)]
    pub rpm_limit: Option<u64>,
    /// Tokens per minute.
    #[serde(default)]
    pub tpm_limit: Option<u64>,
}

// ----------------------------------------------------------------------------- organizations
//
// Shapes from LiteLLM 1.108's own source (`litellm/proxy/_types.py`: `NewOrganizationRequest`,
// `LiteLLM_OrganizationTableUpdate`, `DeleteOrganizationRequest`,
// `LiteLLM_OrganizationTableWithMembers`; `litellm/models/budget.py`: `LiteLLM_BudgetTable`).
// Without a LiteLLM Enterprise license every `/organization/*` call is `EnterpriseOnly`.

/// `POST /organization/new`. LiteLLM accepts the caller's `organization_id` (a duplicate
/// fails on the table's primary key) and keeps the budget fields in a budget row of its own.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OrganizationNew {
    /// Our id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_id: Option<String>,
    /// Alias (not unique in LiteLLM).
    pub organization_alias: String,
    /// Allowed models: every team of the organization must stay within them (an empty list
    /// allows every model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Budget: no team of the organization may have a larger one.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_decimal_opt"
    )]
    pub max_budget: Option<Decimal>,
    /// Budget period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_duration: Option<String>,
    /// Metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
}

/// `PATCH /organization/update`: only the set fields change. LiteLLM *merges* `metadata`
/// into the stored one and writes the budget fields to the organization's budget row.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OrganizationUpdate {
    /// The organization.
    pub organization_id: String,
    /// New alias.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub organization_alias: Option<String>,
    /// New models.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// New budget.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_decimal_opt"
    )]
    pub max_budget: Option<Decimal>,
    /// New budget period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_duration: Option<String>,
    /// Metadata to merge in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Remove the budget (sends `max_budget: null`; wins over `max_budget`).
    #[serde(skip)]
    pub clear_max_budget: bool,
}

/// The budget row of an organization (`litellm_budget_table`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct OrganizationBudget {
    /// Id.
    #[serde(default)]
    pub budget_id: Option<String>,
    /// Hard limit.
    #[serde(default, deserialize_with = "crate::decimal::optional")]
    pub max_budget: Option<Decimal>,
    /// Soft limit.
    #[serde(default, deserialize_with = "crate::decimal::optional")]
    pub soft_budget: Option<Decimal>,
    /// Period.
    #[serde(default)]
    pub budget_duration: Option<String>,
    /// Next reset (LiteLLM's answers usually leave it out).
    #[serde(default, deserialize_with = "crate::time::optional")]
    pub budget_reset_at: Option<DateTime<Utc>>,
}

/// An organization, as `/organization/{new,update,info,list}` answer it.
#[derive(Clone, Debug, Deserialize)]
pub struct Organization {
    /// Id.
    pub organization_id: String,
    /// Alias.
    #[serde(default)]
    pub organization_alias: Option<String>,
    /// Allowed models.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub models: Vec<String>,
    /// Spend so far.
    #[serde(default, deserialize_with = "crate::decimal::or_zero")]
    pub spend: Decimal,
    /// Metadata.
    #[serde(default)]
    pub metadata: Option<Metadata>,
    /// Its budget row.
    #[serde(default)]
    pub litellm_budget_table: Option<OrganizationBudget>,
    /// Its teams (`/organization/info` and `/list`).
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub teams: Vec<Team>,
    /// Created.
    #[serde(default, deserialize_with = "crate::time::optional")]
    pub created_at: Option<DateTime<Utc>>,
    /// Updated.
    #[serde(default, deserialize_with = "crate::time::optional")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl Organization {
    /// The budget (from the budget row).
    pub fn max_budget(&self) -> Option<Decimal> {
        self.litellm_budget_table
            .as_ref()
            .and_then(|b| b.max_budget)
    }

    /// The budget period (from the budget row).
    pub fn budget_duration(&self) -> Option<&str> {
        self.litellm_budget_table
            .as_ref()
            .and_then(|b| b.budget_duration.as_deref())
    }
}

// ----------------------------------------------------------------------------- spend logs

/// One row of LiteLLM's spend logs (v1 and v2 share the shape).
#[derive(Clone, Debug, Deserialize)]
pub struct SpendLogRow {
    /// The upstream completion id for successful calls, the `x-litellm-call-id` for failures.
    pub request_id: String,
    /// `acompletion`, ...
    #[serde(default)]
    pub call_type: Option<String>,
    /// Token hash of the key.
    #[serde(default)]
    pub api_key: Option<String>,
    /// Cost in dollars.
    #[serde(default, deserialize_with = "crate::decimal::or_zero")]
    pub spend: Decimal,
    /// Tokens.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub total_tokens: u64,
    /// Prompt tokens.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub prompt_tokens: u64,
    /// Completion tokens.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub completion_tokens: u64,
    /// Start.
    #[serde(
        default,
        rename = "startTime",
        deserialize_with = "crate::time::optional"
    )]
    pub start_time: Option<DateTime<Utc>>,
    /// End.
    #[serde(
        default,
        rename = "endTime",
        deserialize_with = "crate::time::optional"
    )]
    pub end_time: Option<DateTime<Utc>>,
    /// `openai/mock-gpt`.
    #[serde(default)]
    pub model: Option<String>,
    /// `mock-gpt`: the name callers use.
    #[serde(default)]
    pub model_group: Option<String>,
    /// The key's user id (empty when none).
    #[serde(default)]
    pub user: Option<String>,
    /// The end user from `x-litellm-end-user-id`.
    #[serde(default)]
    pub end_user: Option<String>,
    /// Team id.
    #[serde(default)]
    pub team_id: Option<String>,
    /// `success` or `failure`.
    #[serde(default)]
    pub status: Option<String>,
    /// LiteLLM's call id.
    #[serde(default)]
    pub litellm_call_id: Option<String>,
    /// The row's metadata (`user_api_key_alias`, `spend_logs_metadata`, `status`, ...), as
    /// LiteLLM wrote it.
    #[serde(default)]
    pub metadata: Option<serde_json::Value>,
}

impl SpendLogRow {
    /// Whether the call succeeded (rows without status are successes in 1.108; the status
    /// is a column, and in `metadata.status` too).
    pub fn is_success(&self) -> bool {
        let in_metadata = self
            .metadata
            .as_ref()
            .and_then(|m| m.get("status"))
            .and_then(serde_json::Value::as_str);
        self.status
            .as_deref()
            .or(in_metadata)
            .is_none_or(|s| s == "success")
    }
}

/// What v1 `/spend/logs` filters on.
#[derive(Clone, Debug)]
pub enum SpendLogsFilter {
    /// Rows of a key.
    Key(KeyRef),
    /// Rows of a user id.
    User(String),
}

/// A date range query of `/spend/logs/v2`.
#[derive(Clone, Debug)]
pub struct SpendLogsQuery {
    /// Inclusive start (second precision).
    pub start: DateTime<Utc>,
    /// Inclusive end (second precision).
    pub end: DateTime<Utc>,
    /// Only this key (token hash).
    pub api_key: Option<String>,
    /// Only this user.
    pub user_id: Option<String>,
    /// Only this team.
    pub team_id: Option<String>,
    /// Rows per page (default 100).
    pub page_size: u32,
}

impl SpendLogsQuery {
    /// All rows between `start` and `end`.
    pub fn between(start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Self {
            start,
            end,
            api_key: None,
            user_id: None,
            team_id: None,
            page_size: 100,
        }
    }
}

/// One page of `/spend/logs/v2`.
#[derive(Clone, Debug, Deserialize)]
pub struct SpendLogsPage {
    /// Rows.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub data: Vec<SpendLogRow>,
    /// Total rows.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub total: u64,
    /// Page (1-based).
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub page: u64,
    /// Rows per page.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub page_size: u64,
    /// Pages.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub total_pages: u64,
}

// ----------------------------------------------------------------------------- models

/// Pricing and routing of one model (`/model/info`).
#[derive(Clone, Debug, Deserialize)]
pub struct ModelInfo {
    /// The name callers use (`mock-gpt`).
    pub model_name: String,
    /// Provider parameters.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub litellm_params: ModelParams,
    /// Details.
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub model_info: ModelDetails,
}

/// `litellm_params` of a model.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ModelParams {
    /// Provider model (`openai/mock-gpt`).
    #[serde(default)]
    pub model: Option<String>,
    /// Dollars per prompt token.
    #[serde(default, deserialize_with = "crate::decimal::optional")]
    pub input_cost_per_token: Option<Decimal>,
    /// Dollars per completion token.
    #[serde(default, deserialize_with = "crate::decimal::optional")]
    pub output_cost_per_token: Option<Decimal>,
}

/// `model_info` of a model.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ModelDetails {
    /// Deployment id.
    #[serde(default)]
    pub id: Option<String>,
    /// Dollars per prompt token.
    #[serde(default, deserialize_with = "crate::decimal::optional")]
    pub input_cost_per_token: Option<Decimal>,
    /// Dollars per completion token.
    #[serde(default, deserialize_with = "crate::decimal::optional")]
    pub output_cost_per_token: Option<Decimal>,
    /// Max output tokens.
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
}

#[derive(Deserialize)]
pub(crate) struct ModelInfoList {
    #[serde(default, deserialize_with = "crate::types::nullable")]
    pub(crate) data: Vec<ModelInfo>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn sample_body(name: &str) -> Option<Vec<u8>> {
        let path = format!(
            "{}/../../shared/litellm/samples/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).ok()?;
        let value: Value = serde_json::from_str(&text).ok()?;
        serde_json::to_vec(&value["response"]["body"]).ok()
    }

    #[test]
    fn key_token_is_sha256_hex() {
        // 19-key-generate.json: key sk-vkujPDi3aeGS3J9wv-Fp2Q has token 2008ba0b...
        assert_eq!(
            key_token(&Secret::new("sk-vkujPDi3aeGS3J9wv-Fp2Q")),
            "2008ba0bc23dbd68d759b8d35a1d10a577236fdd6ea3d2145e6ce35c8f2552ae"
        );
    }

    #[test]
    fn decimals_serialize_as_exact_json_numbers() {
        let body = KeyGenerate {
            max_budget: Some(dec!(0.050)),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"max_budget":0.05}"#
        );
        let body = TeamUpdate {
            team_id: "t".into(),
            max_budget: Some(dec!(12345678901234567.89)),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"team_id":"t","max_budget":12345678901234567.89}"#
        );
    }

    #[test]
    fn parses_recorded_answers() {
        // The recorded samples live in the kit next to the repo; skip quietly if absent
        // (the inline bodies below cover the same shapes).
        if let Some(body) = sample_body("19-key-generate.json") {
            let key: GeneratedKey = serde_json::from_slice(&body).unwrap();
            assert_eq!(
                key.token_hash(),
                "2008ba0bc23dbd68d759b8d35a1d10a577236fdd6ea3d2145e6ce35c8f2552ae"
            );
            assert_eq!(key.max_budget, Some(dec!(1.0)));
        }
        if let Some(body) = sample_body("48-spend-logs-by-key.json") {
            let rows: Vec<SpendLogRow> = serde_json::from_slice(&body).unwrap();
            assert_eq!(rows.len(), 4);
            let ok = rows
                .iter()
                .find(|r| r.request_id == "chatcmpl-mock")
                .unwrap();
            assert_eq!(ok.spend, dec!(0.024));
            assert!(ok.is_success());
            assert_eq!(ok.end_user.as_deref(), Some("end-user-hdr-7"));
        }
        if let Some(body) = sample_body("52-spend-logs-v2-page.json") {
            let page: SpendLogsPage = serde_json::from_slice(&body).unwrap();
            assert_eq!(page.total, 38);
            assert!(page.data.iter().all(|r| r.start_time.is_some()));
        }
        if let Some(body) = sample_body("27-team-info.json") {
            let info: TeamInfo = serde_json::from_slice(&body).unwrap();
            assert!(info.team_info.has_member("bob-78614@acme.test"));
            assert_eq!(info.keys.len(), 2);
        }
    }

    #[test]
    fn spend_rows_keep_float_text_exactly() {
        let row: SpendLogRow = serde_json::from_str(
            r#"{"request_id":"r","spend":0.07200000000000001,"startTime":"2026-11-28T15:10:15.512+00:00","status":"success"}"#,
        )
        .unwrap();
        assert_eq!(row.spend, dec!(0.07200000000000001));
        assert!(row.start_time.is_some());
    }
}
