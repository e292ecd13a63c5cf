//! Typed identifiers for every entity.
//!
//! Each id is a newtype, so an `OrgId` can never be passed where a `UserId` is expected.
//! Uuid-backed ids are created as UUIDv7 (time-ordered, index friendly).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ValidationError;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident, $label:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id.
            #[must_use]
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing uuid (from storage or input).
            #[must_use]
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying uuid.
            #[must_use]
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| ValidationError::new(
                    $label,
                    format!("`{s}` is not a valid uuid"),
                ))
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }

        impl From<$name> for Uuid {
            fn from(id: $name) -> Self {
                id.0
            }
        }
    };
}

uuid_id!(
    /// An organization (tenant).
    OrgId,
    "org_id"
);
uuid_id!(
    /// A person known to StratAI.
    UserId,
    "user_id"
);
uuid_id!(
    /// A group (department/team) inside an organization.
    GroupId,
    "group_id"
);
uuid_id!(
    /// A model tier (basic / standard / premium ...).
    TierId,
    "tier_id"
);
uuid_id!(
    /// A budget.
    BudgetId,
    "budget_id"
);
uuid_id!(
    /// An invitation to join an organization.
    InvitationId,
    "invitation_id"
);
uuid_id!(
    /// A user profile (template of defaults for a kind of user).
    ProfileId,
    "profile_id"
);
uuid_id!(
    /// One LLM request, end to end; the idempotency key of usage and budget settlement.
    RequestId,
    "request_id"
);
uuid_id!(
    /// A membership of a user in an organization.
    MembershipId,
    "membership_id"
);
uuid_id!(
    /// A guardrail rule.
    RuleId,
    "rule_id"
);
uuid_id!(
    /// A draft or issued invoice.
    InvoiceId,
    "invoice_id"
);
uuid_id!(
    /// A running instance of the governed path (one per process): the holder of its budget
    /// leases in the shared ledger, alive while its heartbeat is fresh.
    InstanceId,
    "instance_id"
);
uuid_id!(
    /// A usage record.
    UsageId,
    "usage_id"
);
uuid_id!(
    /// A conversation in the StratAI product, carried on usage records for attribution.
    ConversationId,
    "conversation_id"
);

/// A model identifier as the providers name it, e.g. `claude-opus-4-5-20251101`.
///
/// Non-empty, at most 200 characters, no whitespace or control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelId(String);

impl ModelId {
    /// Validates and wraps a model identifier.
    pub fn new(raw: impl Into<String>) -> Result<Self, ValidationError> {
        let raw = raw.into();
        if raw.is_empty() || raw.len() > 200 {
            return Err(ValidationError::new(
                "model",
                format!("`{raw}` must be 1 to 200 characters"),
            ));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ValidationError::new(
                "model",
                format!(
                    "`{}` contains whitespace or control characters",
                    raw.escape_debug()
                ),
            ));
        }
        Ok(Self(raw))
    }

    /// The identifier as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a constant known to be valid (the built-in catalog); checked by its tests.
    pub(crate) fn from_static(raw: &'static str) -> Self {
        Self(raw.to_owned())
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ModelId {
    type Error = ValidationError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<ModelId> for String {
    fn from(id: ModelId) -> Self {
        id.0
    }
}

impl FromStr for ModelId {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

/// A tier's slug, e.g. `basic`, `standard`, `premium`: 1-32 chars of a-z, 0-9, '-' and '_'.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TierSlug(String);

impl TierSlug {
    /// Validates and wraps a tier slug.
    pub fn new(raw: impl Into<String>) -> Result<Self, ValidationError> {
        let raw = raw.into();
        let ok = !raw.is_empty()
            && raw.len() <= 32
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if ok {
            Ok(Self(raw))
        } else {
            Err(ValidationError::new(
                "tier",
                format!(
                    "`{}` is not a tier slug (1-32 chars of a-z, 0-9, '-', '_')",
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

    /// Wraps a constant known to be valid (the built-in catalog); checked by its tests.
    pub(crate) fn from_static(raw: &'static str) -> Self {
        Self(raw.to_owned())
    }
}

impl fmt::Display for TierSlug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for TierSlug {
    type Error = ValidationError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<TierSlug> for String {
    fn from(slug: TierSlug) -> Self {
        slug.0
    }
}

impl FromStr for TierSlug {
    type Err = ValidationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_ids_round_trip_through_text_and_json() {
        let id = OrgId::new();
        assert_eq!(id.to_string().parse::<OrgId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<OrgId>(&json).unwrap(), id);
    }

    #[test]
    fn bad_uuid_names_the_field_and_value() {
        let err = "nope".parse::<UserId>().unwrap_err();
        assert_eq!(err.field, "user_id");
        assert!(err.to_string().contains("`nope`"), "{err}");
    }

    #[test]
    fn model_ids_are_validated() {
        assert!(ModelId::new("claude-opus-4-5-20251101").is_ok());
        assert!(ModelId::new("").is_err());
        assert!(ModelId::new("gpt 4").is_err());
        assert!(ModelId::new("x".repeat(201)).is_err());
        assert!(serde_json::from_str::<ModelId>("\"a\\nb\"").is_err());
    }

    #[test]
    fn tier_slugs_are_validated() {
        assert!(TierSlug::new("premium").is_ok());
        assert!(TierSlug::new("Premium").is_err());
        assert!(TierSlug::new("").is_err());
    }
}
