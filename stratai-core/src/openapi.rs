//! OpenAPI schemas (feature `openapi`) of the types whose wire form is a validated string or
//! a decimal: the derive cannot see their validation, so their schemas state it here. Every
//! other API type derives `utoipa::ToSchema` where it is defined.

use std::borrow::Cow;

use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, SchemaType, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::directory::{Email, Slug};
use crate::ids::{ModelId, TierSlug};
use crate::money::Money;

/// What [`Email`] accepts (before trimming and lowercasing), unanchored.
pub const EMAIL_PATTERN: &str =
    r"\s*[\x21-\x3f\x41-\x7e]{1,64}@(?:localhost|(?:[^\W_]|-)+(?:\.(?:[^\W_]|-)+)+)\s*";

/// A string of `min..=max` characters matching `pattern`.
fn text(
    description: &str,
    pattern: &str,
    min: usize,
    max: usize,
    format: Option<&str>,
) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(description))
        .pattern(Some(pattern))
        .min_length(Some(min))
        .max_length(Some(max))
        .format(format.map(|f| SchemaFormat::Custom(f.to_owned())))
        .into()
}

/// The wire form of a decimal amount: a decimal string (what the API sends) or, on input, a
/// JSON number. `non_negative` adds a lower bound.
#[must_use]
pub fn decimal_schema(description: &str, non_negative: bool) -> RefOr<Schema> {
    // Optional sign, digits (rust_decimal also skips `_`), optional fraction.
    let pattern = if non_negative {
        r"^\+?[0-9_]*\.?[0-9_]*[0-9][0-9_]*$|^-0*\.?0*$"
    } else {
        r"^[+-]?[0-9_]*\.?[0-9_]*[0-9][0-9_]*$"
    };
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![Type::String, Type::Number]))
        .description(Some(description))
        .format(Some(SchemaFormat::Custom("decimal".to_owned())))
        .pattern(Some(pattern))
        .minimum(non_negative.then_some(0))
        .into()
}

/// An audit entry's `before` or `after`: the entity (an object), the entities of a change made
/// to several at once (an array of objects), or null.
#[must_use]
pub fn audit_state() -> utoipa::openapi::schema::Object {
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(vec![
            Type::Object,
            Type::Array,
            Type::Null,
        ]))
        .description(Some(
            "the entity (an object), the entities of a change made to several at once (an \
             array of objects), or null",
        ))
        .build()
}

/// A chat message's role: one of [`crate::gateway::CHAT_ROLES`].
#[must_use]
pub fn chat_role() -> utoipa::openapi::schema::Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(crate::gateway::CHAT_ROLES.to_vec()))
        .description(Some("the author of the message"))
        .build()
}

macro_rules! manual_schema {
    ($ty:ty, $name:literal, $schema:expr) => {
        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                $schema
            }
        }
        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

manual_schema!(
    Money,
    "Money",
    decimal_schema(
        "A non-negative amount of US dollars as a decimal string, e.g. \"12.50\"",
        true
    )
);
manual_schema!(
    Slug,
    "Slug",
    text(
        "An organization's URL slug",
        "^[a-z0-9-]{3,63}$",
        3,
        63,
        None
    )
);
manual_schema!(
    TierSlug,
    "TierSlug",
    text("A tier's slug", "^[a-z0-9_-]{1,32}$", 1, 32, None)
);
manual_schema!(
    ModelId,
    "ModelId",
    text(
        "A model identifier, e.g. `claude-opus-4-5-20251101`",
        r"^[^\s\x00-\x1f\x7f-\x9f]{1,200}$",
        1,
        200,
        None
    )
);
manual_schema!(
    Email,
    "Email",
    text(
        "An email address (trimmed and lowercased by the server)",
        &format!("^{EMAIL_PATTERN}$"),
        3,
        254,
        None
    )
);
