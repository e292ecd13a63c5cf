//! Errors of the domain.

use std::fmt;

/// Invalid input: which field, and why. Messages are lowercase, user input in backticks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct ValidationError {
    /// Path of the offending field, e.g. `settings.default_tier`.
    pub field: String,
    /// What was wrong, naming the offending value.
    pub reason: String,
}

impl ValidationError {
    /// A validation error for `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error, nested under `parent` (`settings` + `default_tier` -> `settings.default_tier`).
    #[must_use]
    pub fn within(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_owned()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

/// What a store (port implementation) can fail with. Backends map their driver errors
/// into these; no driver type crosses into the domain.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The entity does not exist (in this tenant).
    #[error("{entity} not found: `{id}`")]
    NotFound {
        /// Kind of entity, e.g. `group`.
        entity: &'static str,
        /// The id or key looked up.
        id: String,
    },
    /// A uniqueness or state conflict, e.g. a slug already taken.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The operation named one tenant but touched another's data.
    #[error("tenant mismatch: {0}")]
    TenantMismatch(String),
    /// Input rejected by domain validation.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// Any other backend failure (connection, I/O, corrupt row). The message is for logs.
    #[error("backend: {0}")]
    Backend(String),
}

impl StoreError {
    /// Shorthand for [`StoreError::NotFound`].
    pub fn not_found(entity: &'static str, id: impl fmt::Display) -> Self {
        Self::NotFound {
            entity,
            id: id.to_string(),
        }
    }
}
