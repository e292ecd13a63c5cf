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

/// Why an administrative operation (a library service over the stores, e.g. issuing an
/// invitation or changing a budget) did not happen. The services decide; the HTTP layer only
/// maps each variant to its status and error shape, so an embedder running the same service
/// gets the same refusals.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// The caller may not do this (403).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The entity does not exist, or belongs to another organization (404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The input failed validation: every invalid field, with its path (422).
    #[error("validation failed ({} fields)", .0.len())]
    Invalid(Vec<ValidationError>),
    /// A state conflict, e.g. an address that is already a member (409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store failed; mapped like the store's own errors.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ValidationError> for OpError {
    fn from(e: ValidationError) -> Self {
        Self::Invalid(vec![e])
    }
}
