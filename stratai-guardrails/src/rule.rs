//! The rule model: a stored [`RuleRecord`] validated into a typed [`Rule`].
//!
//! Validation happens once, when a policy is compiled (or when an API accepts a rule): a
//! [`Rule`] that exists is valid, so deciding never re-checks configs. Every error names the
//! field path (`config.blocked_patterns[2]`) and the reason.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc, Weekday};
use chrono_tz::Tz;
use regex::Regex;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use stratai_core::ports::{RuleAction, RuleRecord, RuleScope};
use stratai_core::{GroupId, ModelId, Money, OrgId, RuleId, TierId, UserId};

/// Longest accepted regex source, in bytes.
pub const MAX_PATTERN_SOURCE: usize = 1_000;
/// Longest text a blocked pattern may match, in bytes. Bounded matches are what let the
/// streaming filter find every match exactly, however the text is chunked.
pub const MAX_PATTERN_MATCH: usize = 1_024;
/// Compiled size limit of one pattern, in bytes (the `regex` crate's `size_limit`).
pub const PATTERN_SIZE_LIMIT: usize = 256 * 1024;
/// Longest accepted topic, in bytes.
pub const MAX_TOPIC_LEN: usize = 200;
/// Most topics or patterns in one content filter.
pub const MAX_FILTER_ITEMS: usize = 500;
/// Most models in one allowlist or denylist.
pub const MAX_MODELS: usize = 1_000;
/// Longest output modifier text, in characters.
pub const MAX_MODIFIER_TEXT: usize = 4_000;
/// Longest rule name, in characters.
pub const MAX_NAME: usize = 200;

/// A rule that is not valid: which rule, which field, why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rule `{rule_id}`: {field}: {reason}")]
pub struct RuleError {
    /// The rule.
    pub rule_id: RuleId,
    /// Path of the offending field, e.g. `config.blocked_patterns[2]`.
    pub field: String,
    /// What is wrong, naming the offending value.
    pub reason: String,
}

impl RuleError {
    fn new(rule_id: RuleId, field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            rule_id,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The level a rule is attached at. Ordered from the broadest to the most specific; output
/// modifiers are applied in this order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// The whole platform; cannot be overridden.
    Global,
    /// An organization.
    Org,
    /// A model tier (platform-wide or inside one organization).
    Tier,
    /// A group of an organization.
    Group,
    /// One member of an organization.
    User,
}

impl Level {
    /// The level of a scope.
    #[must_use]
    pub fn of(scope: &RuleScope) -> Level {
        match scope {
            RuleScope::Global => Level::Global,
            RuleScope::Org { .. } => Level::Org,
            RuleScope::Tier { .. } => Level::Tier,
            RuleScope::Group { .. } => Level::Group,
            RuleScope::User { .. } => Level::User,
        }
    }

    /// Lowercase name (`global`, `org`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Global => "global",
            Level::Org => "org",
            Level::Tier => "tier",
            Level::Group => "group",
            Level::User => "user",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The eight rule types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleType {
    /// Only the listed models.
    ModelAllowlist,
    /// Never the listed models.
    ModelDenylist,
    /// Bounds on input and output tokens per request.
    TokenLimit,
    /// Requests per period.
    RateLimit,
    /// Blocked topics and patterns in prompts and answers.
    ContentFilter,
    /// Text prepended or appended to answers, or a format note for the model.
    OutputModifier,
    /// A spending cap per period.
    BudgetLimit,
    /// Allowed weekdays and hours.
    TimeRestriction,
}

impl RuleType {
    /// Every type, in declaration order.
    pub const ALL: [RuleType; 8] = [
        RuleType::ModelAllowlist,
        RuleType::ModelDenylist,
        RuleType::TokenLimit,
        RuleType::RateLimit,
        RuleType::ContentFilter,
        RuleType::OutputModifier,
        RuleType::BudgetLimit,
        RuleType::TimeRestriction,
    ];

    /// The stored name (`model_allowlist`, ...).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RuleType::ModelAllowlist => "model_allowlist",
            RuleType::ModelDenylist => "model_denylist",
            RuleType::TokenLimit => "token_limit",
            RuleType::RateLimit => "rate_limit",
            RuleType::ContentFilter => "content_filter",
            RuleType::OutputModifier => "output_modifier",
            RuleType::BudgetLimit => "budget_limit",
            RuleType::TimeRestriction => "time_restriction",
        }
    }

    /// Whether `action` means something for this type. `modify` clamps token limits, redacts
    /// content and applies output modifiers; it has no meaning for the others. An output
    /// modifier either applies (`modify`) or only records what it would do (`log`): it never
    /// refuses or warns.
    #[must_use]
    pub fn supports(self, action: RuleAction) -> bool {
        match action {
            RuleAction::Log => true,
            RuleAction::Warn => self != RuleType::OutputModifier,
            RuleAction::Modify => matches!(
                self,
                RuleType::TokenLimit | RuleType::ContentFilter | RuleType::OutputModifier
            ),
            RuleAction::Block => self != RuleType::OutputModifier,
        }
    }
}

impl fmt::Display for RuleType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RuleType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RuleType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "`{}` is not a rule type (expected one of {})",
                    s.escape_debug(),
                    RuleType::ALL.map(RuleType::as_str).join(", ")
                )
            })
    }
}

/// Lowercase name of an action.
#[must_use]
pub fn action_str(action: RuleAction) -> &'static str {
    match action {
        RuleAction::Log => "log",
        RuleAction::Warn => "warn",
        RuleAction::Modify => "modify",
        RuleAction::Block => "block",
    }
}

/// A rate limit's period.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RatePeriod {
    /// 60 seconds.
    Minute,
    /// 3600 seconds.
    Hour,
    /// 86400 seconds.
    Day,
}

impl RatePeriod {
    /// Length in seconds.
    #[must_use]
    pub fn seconds(self) -> u64 {
        match self {
            RatePeriod::Minute => 60,
            RatePeriod::Hour => 3_600,
            RatePeriod::Day => 86_400,
        }
    }

    /// Lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            RatePeriod::Minute => "minute",
            RatePeriod::Hour => "hour",
            RatePeriod::Day => "day",
        }
    }
}

/// Who shares a rate limit's bucket.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RateBucket {
    /// One bucket for the whole scope (the default): an org rule limits the whole org.
    #[default]
    Scope,
    /// One bucket per user inside the scope.
    PerUser,
}

/// A budget limit's period (calendar windows).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum BudgetLimitPeriod {
    /// Calendar day.
    Day,
    /// ISO week.
    Week,
    /// Calendar month.
    Month,
}

impl BudgetLimitPeriod {
    /// Lowercase name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetLimitPeriod::Day => "day",
            BudgetLimitPeriod::Week => "week",
            BudgetLimitPeriod::Month => "month",
        }
    }
}

/// Bounds on tokens per request. At least one bound is set; bounds are positive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenLimit {
    /// Most (estimated) input tokens.
    pub max_input: Option<u32>,
    /// Most output tokens (`max_tokens` of the request).
    pub max_output: Option<u32>,
}

/// A rate limit: `requests` per `period`, in a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RateLimit {
    /// Requests allowed per period (positive).
    pub requests: u32,
    /// The period.
    pub period: RatePeriod,
    /// Who shares the bucket.
    pub bucket: RateBucket,
}

/// A blocked pattern, compiled and bounded.
#[derive(Clone, Debug)]
pub struct Pattern {
    /// The source, as configured.
    pub source: String,
    /// The compiled regex.
    pub regex: Regex,
    /// Longest text it can match, in bytes (at most [`MAX_PATTERN_MATCH`]).
    pub max_len: usize,
}

/// Blocked topics (case-insensitive substrings) and patterns (regexes).
#[derive(Clone, Debug)]
pub struct ContentFilter {
    /// Topics, matched as ASCII-case-insensitive substrings, in config order, without duplicates.
    pub topics: Vec<String>,
    /// Patterns, in config order.
    pub patterns: Vec<Pattern>,
}

/// Text around answers, or a format note for the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputModifier {
    /// Put before the answer.
    pub prepend: Option<String>,
    /// Put after the answer (at the end of a stream).
    pub append: Option<String>,
    /// Added to the request as a system message (a required output format).
    pub format_note: Option<String>,
}

/// A spending cap per period.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetLimit {
    /// The cap (positive).
    pub amount: Money,
    /// The period.
    pub period: BudgetLimitPeriod,
}

/// A window of the day, `[start, end)` in minutes since midnight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HourWindow {
    /// Start minute (0..1440).
    pub start: u16,
    /// End minute, exclusive (start < end <= 1440).
    pub end: u16,
}

/// When requests are allowed, in a timezone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeRestriction {
    /// The IANA timezone the days and hours are in.
    pub timezone: Tz,
    /// Allowed weekdays (bit `n` = `Weekday::num_days_from_monday() == n`).
    pub days: u8,
    /// Allowed windows; any one of them allows.
    pub hours: Vec<HourWindow>,
}

impl TimeRestriction {
    /// Whether the instant is allowed.
    #[must_use]
    pub fn allows(&self, now: DateTime<Utc>) -> bool {
        self.allows_local(now.with_timezone(&self.timezone))
    }

    /// Whether the instant, already converted to this restriction's timezone, is allowed.
    pub(crate) fn allows_local(&self, local: DateTime<Tz>) -> bool {
        use chrono::Datelike;
        use chrono::Timelike;
        let day_bit = 1u8 << local.weekday().num_days_from_monday();
        if self.days & day_bit == 0 {
            return false;
        }
        let minute = u16::try_from(local.hour() * 60 + local.minute()).unwrap_or(u16::MAX);
        self.hours
            .iter()
            .any(|w| w.start <= minute && minute < w.end)
    }

    /// Human summary, e.g. `mon-fri 09:00-17:00 Europe/Berlin`.
    #[must_use]
    pub fn describe(&self) -> String {
        const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let days: Vec<&str> = (0..7)
            .filter(|i| self.days & (1 << i) != 0)
            .map(|i| NAMES[i])
            .collect();
        let hours: Vec<String> = self
            .hours
            .iter()
            .map(|w| format!("{}-{}", hhmm(w.start), hhmm(w.end)))
            .collect();
        format!(
            "{} {} {}",
            days.join(","),
            hours.join(","),
            self.timezone.name()
        )
    }
}

fn hhmm(minute: u16) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// A rule's validated, typed config.
#[derive(Clone, Debug)]
pub enum RuleKind {
    /// Only these models.
    ModelAllowlist(BTreeSet<ModelId>),
    /// Never these models.
    ModelDenylist(BTreeSet<ModelId>),
    /// Token bounds.
    TokenLimit(TokenLimit),
    /// A rate limit.
    RateLimit(RateLimit),
    /// Blocked content.
    ContentFilter(ContentFilter),
    /// Output changes.
    OutputModifier(OutputModifier),
    /// A spending cap.
    BudgetLimit(BudgetLimit),
    /// Allowed times.
    TimeRestriction(TimeRestriction),
}

impl RuleKind {
    /// The type of this config.
    #[must_use]
    pub fn rule_type(&self) -> RuleType {
        match self {
            RuleKind::ModelAllowlist(_) => RuleType::ModelAllowlist,
            RuleKind::ModelDenylist(_) => RuleType::ModelDenylist,
            RuleKind::TokenLimit(_) => RuleType::TokenLimit,
            RuleKind::RateLimit(_) => RuleType::RateLimit,
            RuleKind::ContentFilter(_) => RuleType::ContentFilter,
            RuleKind::OutputModifier(_) => RuleType::OutputModifier,
            RuleKind::BudgetLimit(_) => RuleType::BudgetLimit,
            RuleKind::TimeRestriction(_) => RuleType::TimeRestriction,
        }
    }
}

/// A validated rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Id.
    pub id: RuleId,
    /// Name (trimmed, non-empty).
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Where it is attached.
    pub scope: RuleScope,
    /// The level of `scope`.
    pub level: Level,
    /// What it does on a match (supported by its type).
    pub action: RuleAction,
    /// Orders evaluation and output, never permission. Higher first.
    pub priority: i32,
    /// Inactive rules have no effect.
    pub active: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Type and config.
    pub kind: RuleKind,
}

impl Rule {
    /// Validates a stored rule (everything except whether its scope exists; see
    /// [`KnownScopes`]).
    pub fn from_record(record: &RuleRecord) -> Result<Rule, RuleError> {
        let id = record.id;
        let name = record.name.trim();
        if name.is_empty() {
            return Err(RuleError::new(id, "name", "must not be empty"));
        }
        if name.chars().count() > MAX_NAME {
            return Err(RuleError::new(
                id,
                "name",
                format!("must be at most {MAX_NAME} characters"),
            ));
        }
        let rule_type: RuleType = record
            .rule_type
            .parse()
            .map_err(|reason| RuleError::new(id, "rule_type", reason))?;
        if !rule_type.supports(record.action) {
            return Err(RuleError::new(
                id,
                "action",
                format!(
                    "`{}` has no meaning for a {rule_type} rule",
                    action_str(record.action)
                ),
            ));
        }
        let kind = parse_config(id, rule_type, &record.config)?;
        if let RuleKind::TokenLimit(limit) = &kind
            && record.action == RuleAction::Modify
            && limit.max_input.is_some()
        {
            return Err(RuleError::new(
                id,
                "config.max_input",
                "a prompt cannot be shortened: `modify` clamps `max_output` only; \
                 put `max_input` in a `block`, `warn` or `log` rule",
            ));
        }
        Ok(Rule {
            id,
            name: name.to_owned(),
            description: record.description.clone(),
            scope: record.scope,
            level: Level::of(&record.scope),
            action: record.action,
            priority: record.priority,
            active: record.active,
            created_at: record.created_at,
            kind,
        })
    }

    /// The rule's type.
    #[must_use]
    pub fn rule_type(&self) -> RuleType {
        self.kind.rule_type()
    }
}

/// The scopes that exist: rules attached to anything else are refused at load time.
#[derive(Clone, Debug, Default)]
pub struct KnownScopes {
    orgs: HashSet<OrgId>,
    tiers: HashSet<TierId>,
    groups: HashSet<(OrgId, GroupId)>,
    users: HashSet<(OrgId, UserId)>,
}

impl KnownScopes {
    /// No scopes known (only global rules pass).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an organization.
    pub fn add_org(&mut self, org: OrgId) -> &mut Self {
        self.orgs.insert(org);
        self
    }

    /// Adds a tier.
    pub fn add_tier(&mut self, tier: TierId) -> &mut Self {
        self.tiers.insert(tier);
        self
    }

    /// Adds a group of an organization.
    pub fn add_group(&mut self, org: OrgId, group: GroupId) -> &mut Self {
        self.groups.insert((org, group));
        self
    }

    /// Adds a member of an organization.
    pub fn add_member(&mut self, org: OrgId, user: UserId) -> &mut Self {
        self.users.insert((org, user));
        self
    }

    /// Checks that every entity a scope names exists (a group or member in the named
    /// organization), naming the first missing one.
    pub fn check(&self, rule_id: RuleId, scope: &RuleScope) -> Result<(), RuleError> {
        let missing = |what: String| Err(RuleError::new(rule_id, "scope", what));
        let org_ok = |org: &OrgId| {
            if self.orgs.contains(org) {
                Ok(())
            } else {
                missing(format!("organization `{org}` does not exist"))
            }
        };
        match scope {
            RuleScope::Global => Ok(()),
            RuleScope::Org { org_id } => org_ok(org_id),
            RuleScope::Tier { org_id, tier_id } => {
                if let Some(org) = org_id {
                    org_ok(org)?;
                }
                if self.tiers.contains(tier_id) {
                    Ok(())
                } else {
                    missing(format!("tier `{tier_id}` does not exist"))
                }
            }
            RuleScope::Group { org_id, group_id } => {
                org_ok(org_id)?;
                if self.groups.contains(&(*org_id, *group_id)) {
                    Ok(())
                } else {
                    missing(format!(
                        "group `{group_id}` does not exist in organization `{org_id}`"
                    ))
                }
            }
            RuleScope::User { org_id, user_id } => {
                org_ok(org_id)?;
                if self.users.contains(&(*org_id, *user_id)) {
                    Ok(())
                } else {
                    missing(format!(
                        "user `{user_id}` is not a member of organization `{org_id}`"
                    ))
                }
            }
        }
    }
}

// ---- raw configs -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelListConfig {
    models: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenLimitConfig {
    #[serde(default)]
    max_input: Option<u32>,
    #[serde(default)]
    max_output: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateLimitConfig {
    requests: u32,
    period: RatePeriod,
    #[serde(default)]
    bucket: RateBucket,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContentFilterConfig {
    #[serde(default)]
    blocked_topics: Vec<String>,
    #[serde(default)]
    blocked_patterns: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputModifierConfig {
    #[serde(default)]
    prepend: Option<String>,
    #[serde(default)]
    append: Option<String>,
    #[serde(default)]
    format_note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetLimitConfig {
    amount: rust_decimal::Decimal,
    period: BudgetLimitPeriod,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HourWindowConfig {
    start: String,
    end: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeRestrictionConfig {
    timezone: String,
    #[serde(default)]
    allowed_days: Option<Vec<String>>,
    #[serde(default)]
    allowed_hours: Option<Vec<HourWindowConfig>>,
}

fn decode<T: DeserializeOwned>(id: RuleId, config: &serde_json::Value) -> Result<T, RuleError> {
    serde_path_to_error::deserialize(config.clone()).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." {
            "config".to_owned()
        } else {
            format!("config.{path}")
        };
        RuleError::new(id, field, err.into_inner().to_string())
    })
}

fn parse_config(
    id: RuleId,
    rule_type: RuleType,
    config: &serde_json::Value,
) -> Result<RuleKind, RuleError> {
    let err = |field: &str, reason: String| RuleError::new(id, field, reason);
    match rule_type {
        RuleType::ModelAllowlist | RuleType::ModelDenylist => {
            let raw: ModelListConfig = decode(id, config)?;
            if raw.models.is_empty() {
                return Err(err("config.models", "must list at least one model".into()));
            }
            if raw.models.len() > MAX_MODELS {
                return Err(err(
                    "config.models",
                    format!("must list at most {MAX_MODELS} models"),
                ));
            }
            let mut models = BTreeSet::new();
            for (i, model) in raw.models.into_iter().enumerate() {
                let model = ModelId::new(model)
                    .map_err(|e| err(&format!("config.models[{i}]"), e.reason))?;
                models.insert(model);
            }
            Ok(if rule_type == RuleType::ModelAllowlist {
                RuleKind::ModelAllowlist(models)
            } else {
                RuleKind::ModelDenylist(models)
            })
        }
        RuleType::TokenLimit => {
            let raw: TokenLimitConfig = decode(id, config)?;
            if raw.max_input.is_none() && raw.max_output.is_none() {
                return Err(err(
                    "config",
                    "set `max_input`, `max_output` or both".into(),
                ));
            }
            if raw.max_input == Some(0) {
                return Err(err("config.max_input", "must be greater than zero".into()));
            }
            if raw.max_output == Some(0) {
                return Err(err("config.max_output", "must be greater than zero".into()));
            }
            Ok(RuleKind::TokenLimit(TokenLimit {
                max_input: raw.max_input,
                max_output: raw.max_output,
            }))
        }
        RuleType::RateLimit => {
            let raw: RateLimitConfig = decode(id, config)?;
            if raw.requests == 0 {
                return Err(err("config.requests", "must be greater than zero".into()));
            }
            Ok(RuleKind::RateLimit(RateLimit {
                requests: raw.requests,
                period: raw.period,
                bucket: raw.bucket,
            }))
        }
        RuleType::ContentFilter => {
            let raw: ContentFilterConfig = decode(id, config)?;
            if raw.blocked_topics.is_empty() && raw.blocked_patterns.is_empty() {
                return Err(err(
                    "config",
                    "list at least one of `blocked_topics` or `blocked_patterns`".into(),
                ));
            }
            if raw.blocked_topics.len() > MAX_FILTER_ITEMS {
                return Err(err(
                    "config.blocked_topics",
                    format!("must list at most {MAX_FILTER_ITEMS} topics"),
                ));
            }
            if raw.blocked_patterns.len() > MAX_FILTER_ITEMS {
                return Err(err(
                    "config.blocked_patterns",
                    format!("must list at most {MAX_FILTER_ITEMS} patterns"),
                ));
            }
            let mut topics: Vec<String> = Vec::with_capacity(raw.blocked_topics.len());
            for (i, topic) in raw.blocked_topics.into_iter().enumerate() {
                let field = format!("config.blocked_topics[{i}]");
                let topic = topic.trim().to_owned();
                if topic.is_empty() {
                    return Err(err(&field, "must not be empty".into()));
                }
                if topic.len() > MAX_TOPIC_LEN {
                    return Err(err(
                        &field,
                        format!("must be at most {MAX_TOPIC_LEN} bytes"),
                    ));
                }
                if !topics.iter().any(|t| t.eq_ignore_ascii_case(&topic)) {
                    topics.push(topic);
                }
            }
            let mut patterns = Vec::with_capacity(raw.blocked_patterns.len());
            for (i, source) in raw.blocked_patterns.into_iter().enumerate() {
                let field = format!("config.blocked_patterns[{i}]");
                patterns.push(compile_pattern(&source).map_err(|reason| err(&field, reason))?);
            }
            Ok(RuleKind::ContentFilter(ContentFilter { topics, patterns }))
        }
        RuleType::OutputModifier => {
            let raw: OutputModifierConfig = decode(id, config)?;
            let check = |field: &str, text: Option<String>| -> Result<Option<String>, RuleError> {
                match text {
                    None => Ok(None),
                    Some(t) if t.trim().is_empty() => {
                        Err(err(field, "must not be empty (omit it instead)".into()))
                    }
                    Some(t) if t.chars().count() > MAX_MODIFIER_TEXT => Err(err(
                        field,
                        format!("must be at most {MAX_MODIFIER_TEXT} characters"),
                    )),
                    Some(t) => Ok(Some(t)),
                }
            };
            let modifier = OutputModifier {
                prepend: check("config.prepend", raw.prepend)?,
                append: check("config.append", raw.append)?,
                format_note: check("config.format_note", raw.format_note)?,
            };
            if modifier.prepend.is_none()
                && modifier.append.is_none()
                && modifier.format_note.is_none()
            {
                return Err(err(
                    "config",
                    "set at least one of `prepend`, `append` or `format_note`".into(),
                ));
            }
            Ok(RuleKind::OutputModifier(modifier))
        }
        RuleType::BudgetLimit => {
            let raw: BudgetLimitConfig = decode(id, config)?;
            if raw.amount <= rust_decimal::Decimal::ZERO {
                return Err(err(
                    "config.amount",
                    format!("`{}` must be greater than zero", raw.amount),
                ));
            }
            let amount = Money::new(raw.amount).map_err(|e| err("config.amount", e.reason))?;
            Ok(RuleKind::BudgetLimit(BudgetLimit {
                amount,
                period: raw.period,
            }))
        }
        RuleType::TimeRestriction => {
            let raw: TimeRestrictionConfig = decode(id, config)?;
            let timezone: Tz = raw.timezone.parse().map_err(|_| {
                err(
                    "config.timezone",
                    format!("`{}` is not an IANA timezone", raw.timezone.escape_debug()),
                )
            })?;
            if raw.allowed_days.is_none() && raw.allowed_hours.is_none() {
                return Err(err(
                    "config",
                    "set `allowed_days`, `allowed_hours` or both".into(),
                ));
            }
            let days = match raw.allowed_days {
                None => 0b111_1111,
                Some(list) => {
                    if list.is_empty() {
                        return Err(err(
                            "config.allowed_days",
                            "must not be empty (omit it to allow every day)".into(),
                        ));
                    }
                    let mut bits = 0u8;
                    for (i, day) in list.iter().enumerate() {
                        let weekday: Weekday = day.parse().map_err(|_| {
                            err(
                                &format!("config.allowed_days[{i}]"),
                                format!("`{}` is not a weekday", day.escape_debug()),
                            )
                        })?;
                        bits |= 1 << weekday.num_days_from_monday();
                    }
                    bits
                }
            };
            let hours = match raw.allowed_hours {
                None => vec![HourWindow {
                    start: 0,
                    end: 24 * 60,
                }],
                Some(list) => {
                    if list.is_empty() {
                        return Err(err(
                            "config.allowed_hours",
                            "must not be empty (omit it to allow the whole day)".into(),
                        ));
                    }
                    let mut windows = Vec::with_capacity(list.len());
                    for (i, w) in list.iter().enumerate() {
                        let start = parse_hhmm(&w.start).ok_or_else(|| {
                            err(
                                &format!("config.allowed_hours[{i}].start"),
                                format!("`{}` is not a time `HH:MM`", w.start.escape_debug()),
                            )
                        })?;
                        let end = parse_hhmm(&w.end).ok_or_else(|| {
                            err(
                                &format!("config.allowed_hours[{i}].end"),
                                format!("`{}` is not a time `HH:MM`", w.end.escape_debug()),
                            )
                        })?;
                        if start >= end {
                            return Err(err(
                                &format!("config.allowed_hours[{i}]"),
                                format!(
                                    "start `{}` must be before end `{}` (split windows that cross midnight)",
                                    w.start, w.end
                                ),
                            ));
                        }
                        windows.push(HourWindow { start, end });
                    }
                    windows
                }
            };
            Ok(RuleKind::TimeRestriction(TimeRestriction {
                timezone,
                days,
                hours,
            }))
        }
    }
}

/// `HH:MM` in 00:00..=24:00 to minutes since midnight.
fn parse_hhmm(text: &str) -> Option<u16> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return None;
    }
    Some(h * 60 + m)
}

/// Compiles a blocked pattern, refusing ones too big, unbounded or matching empty text.
pub(crate) fn compile_pattern(source: &str) -> Result<Pattern, String> {
    if source.is_empty() {
        return Err("must not be empty".into());
    }
    if source.len() > MAX_PATTERN_SOURCE {
        return Err(format!("must be at most {MAX_PATTERN_SOURCE} bytes long"));
    }
    let hir = regex_syntax::ParserBuilder::new()
        .nest_limit(64)
        .build()
        .parse(source)
        .map_err(|e| format!("regex does not compile: {}", one_line(&e.to_string())))?;
    let props = hir.properties();
    if props.minimum_len() == Some(0) {
        return Err(format!(
            "pattern `{}` can match empty text",
            source.escape_debug()
        ));
    }
    let max_len = match props.maximum_len() {
        Some(n) if n <= MAX_PATTERN_MATCH => n,
        _ => {
            return Err(format!(
                "pattern `{}` can match text longer than {MAX_PATTERN_MATCH} bytes; \
                 use bounded repetition such as `{{1,64}}` instead of `*` or `+`",
                source.escape_debug()
            ));
        }
    };
    let regex = regex::RegexBuilder::new(source)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT)
        .nest_limit(64)
        .build()
        .map_err(|e| format!("regex does not compile: {}", one_line(&e.to_string())))?;
    Ok(Pattern {
        source: source.to_owned(),
        regex,
        max_len,
    })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(rule_type: &str, config: serde_json::Value, action: RuleAction) -> RuleRecord {
        RuleRecord {
            id: RuleId::new(),
            name: "test rule".into(),
            description: None,
            rule_type: rule_type.into(),
            config,
            scope: RuleScope::Global,
            action,
            priority: 0,
            active: true,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    fn error_of(
        rule_type: &str,
        config: serde_json::Value,
        action: RuleAction,
    ) -> (String, String) {
        let err = Rule::from_record(&record(rule_type, config, action)).unwrap_err();
        (err.field, err.reason)
    }

    #[test]
    fn every_type_parses_its_documented_config() {
        let cases = [
            (
                "model_allowlist",
                json!({"models": ["gpt-4o", "claude-sonnet-4-5"]}),
            ),
            ("model_denylist", json!({"models": ["gpt-4o"]})),
            (
                "token_limit",
                json!({"max_input": 8000, "max_output": 2000}),
            ),
            (
                "rate_limit",
                json!({"requests": 10, "period": "minute", "bucket": "per_user"}),
            ),
            (
                "content_filter",
                json!({"blocked_topics": ["acme"], "blocked_patterns": ["\\d{3}-\\d{4}"]}),
            ),
            ("output_modifier", json!({"append": "AI-generated."})),
            (
                "budget_limit",
                json!({"amount": "25.50", "period": "month"}),
            ),
            (
                "time_restriction",
                json!({"timezone": "Europe/Berlin", "allowed_days": ["mon", "fri"], "allowed_hours": [{"start": "09:00", "end": "17:30"}]}),
            ),
        ];
        for (rule_type, config) in cases {
            let action = if rule_type == "output_modifier" {
                RuleAction::Modify
            } else {
                RuleAction::Block
            };
            let rule = Rule::from_record(&record(rule_type, config, action)).unwrap();
            assert_eq!(rule.rule_type().as_str(), rule_type);
        }
    }

    #[test]
    fn load_time_errors_name_field_and_reason() {
        let cases: Vec<(&str, serde_json::Value, &str, &str)> = vec![
            (
                "model_allowlist",
                json!({"models": []}),
                "config.models",
                "at least one model",
            ),
            (
                "model_allowlist",
                json!({"models": ["ok", "bad model"]}),
                "config.models[1]",
                "whitespace",
            ),
            (
                "token_limit",
                json!({"max_input": 0}),
                "config.max_input",
                "greater than zero",
            ),
            ("token_limit", json!({}), "config", "max_input"),
            (
                "rate_limit",
                json!({"requests": 0, "period": "hour"}),
                "config.requests",
                "greater than zero",
            ),
            (
                "rate_limit",
                json!({"requests": 5, "period": "fortnight"}),
                "config.period",
                "fortnight",
            ),
            (
                "content_filter",
                json!({"blocked_patterns": ["a", "b", "(unclosed"]}),
                "config.blocked_patterns[2]",
                "regex does not compile",
            ),
            (
                "content_filter",
                json!({"blocked_patterns": ["x.*"]}),
                "config.blocked_patterns[0]",
                "bounded repetition",
            ),
            (
                "content_filter",
                json!({"blocked_patterns": ["a?"]}),
                "config.blocked_patterns[0]",
                "empty text",
            ),
            (
                "content_filter",
                json!({"blocked_topics": [" "]}),
                "config.blocked_topics[0]",
                "must not be empty",
            ),
            (
                "content_filter",
                json!({"blocked_topics": [], "extra": 1}),
                "config.extra",
                "unknown field `extra`",
            ),
            (
                "budget_limit",
                json!({"amount": 0, "period": "day"}),
                "config.amount",
                "greater than zero",
            ),
            (
                "time_restriction",
                json!({"timezone": "Mars/Olympus", "allowed_days": ["mon"]}),
                "config.timezone",
                "`Mars/Olympus` is not an IANA timezone",
            ),
            (
                "time_restriction",
                json!({"timezone": "UTC", "allowed_hours": [{"start": "18:00", "end": "08:00"}]}),
                "config.allowed_hours[0]",
                "before end",
            ),
            (
                "time_restriction",
                json!({"timezone": "UTC", "allowed_days": ["someday"]}),
                "config.allowed_days[0]",
                "`someday` is not a weekday",
            ),
            ("output_modifier", json!({}), "config", "at least one"),
        ];
        for (rule_type, config, field, reason) in cases {
            let action = if rule_type == "output_modifier" {
                RuleAction::Modify
            } else {
                RuleAction::Block
            };
            let (got_field, got_reason) = error_of(rule_type, config.clone(), action);
            assert_eq!(got_field, field, "{rule_type} {config}");
            assert!(
                got_reason.contains(reason),
                "{rule_type} {config}: {got_reason}"
            );
        }
    }

    #[test]
    fn huge_patterns_are_refused_not_compiled() {
        let (field, reason) = error_of(
            "content_filter",
            json!({"blocked_patterns": ["\\w{1,1000}"]}),
            RuleAction::Block,
        );
        assert_eq!(field, "config.blocked_patterns[0]");
        assert!(reason.contains("longer than"), "{reason}");
        let (_, reason) = error_of(
            "content_filter",
            json!({"blocked_patterns": ["(((a{1,10}){1,10}){1,10}){1,10}"]}),
            RuleAction::Block,
        );
        assert!(!reason.is_empty());
    }

    #[test]
    fn actions_without_meaning_are_refused() {
        let (field, reason) = error_of(
            "model_allowlist",
            json!({"models": ["m"]}),
            RuleAction::Modify,
        );
        assert_eq!(field, "action");
        assert!(
            reason.contains("`modify` has no meaning for a model_allowlist rule"),
            "{reason}"
        );
        let (field, _) = error_of("output_modifier", json!({"append": "x"}), RuleAction::Block);
        assert_eq!(field, "action");
        let (field, reason) = error_of("frobnicate", json!({}), RuleAction::Block);
        assert_eq!(field, "rule_type");
        assert!(reason.contains("`frobnicate`"));
    }

    #[test]
    fn unknown_scopes_are_refused() {
        let org = OrgId::new();
        let mut known = KnownScopes::new();
        known.add_org(org);
        let id = RuleId::new();
        assert!(known.check(id, &RuleScope::Org { org_id: org }).is_ok());
        let err = known
            .check(
                id,
                &RuleScope::Group {
                    org_id: org,
                    group_id: GroupId::new(),
                },
            )
            .unwrap_err();
        assert_eq!(err.field, "scope");
        assert!(err.reason.contains("group"));
        assert!(
            known
                .check(
                    id,
                    &RuleScope::Org {
                        org_id: OrgId::new()
                    }
                )
                .is_err()
        );
        assert!(
            known
                .check(
                    id,
                    &RuleScope::Tier {
                        org_id: None,
                        tier_id: TierId::new()
                    }
                )
                .is_err()
        );
    }

    #[test]
    fn time_restrictions_follow_their_timezone() {
        let rule = Rule::from_record(&record(
            "time_restriction",
            json!({"timezone": "Asia/Tokyo", "allowed_days": ["mon", "tue", "wed", "thu", "fri"], "allowed_hours": [{"start": "09:00", "end": "18:00"}]}),
            RuleAction::Block,
        ))
        .unwrap();
        let RuleKind::TimeRestriction(t) = rule.kind else {
            panic!("wrong kind")
        };
        // Friday 2026-11-27 01:00 UTC is 10:00 in Tokyo; 10:00 UTC is 19:00 there.
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert!(t.allows(at("2026-11-27T01:00:00Z")));
        assert!(!t.allows(at("2026-11-27T10:00:00Z")));
        // Saturday in Tokyo.
        assert!(!t.allows(at("2026-11-28T01:00:00Z")));
        assert_eq!(t.describe(), "mon,tue,wed,thu,fri 09:00-18:00 Asia/Tokyo");
    }
}
