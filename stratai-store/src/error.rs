//! Mapping of sqlx errors into core's [`StoreError`], shared by the SQLite and PostgreSQL
//! backends. No sqlx type crosses into core: every SQL call site ends in [`db`] (or
//! [`db_on_delete`] where a foreign-key violation means "still referenced").

use std::fmt;

use sqlx::error::ErrorKind;
use stratai_core::{StoreError, ValidationError};

/// SQLSTATE raised by PostgreSQL when a row-level security policy refuses a row
/// (`insufficient_privilege`).
const PG_INSUFFICIENT_PRIVILEGE: &str = "42501";

/// Maps a sqlx error to a store error.
///
/// - unique / exclusion violation: [`StoreError::Conflict`] naming the row and the field, in
///   the same words on SQLite and PostgreSQL (see [`unique_conflict`]); never the constraint
///   text of the database
/// - foreign-key violation on insert or update: [`StoreError::NotFound`] (a referenced row
///   does not exist, or belongs to another tenant)
/// - check / not-null violation: [`StoreError::Invalid`]
/// - PostgreSQL `42501` (a row-level security policy refused the row):
///   [`StoreError::TenantMismatch`]
/// - no row where one was required: [`StoreError::NotFound`]
/// - anything else (I/O, pool, decoding, protocol): [`StoreError::Backend`]
pub(crate) fn db(err: sqlx::Error) -> StoreError {
    map(err, ForeignKey::Missing)
}

/// Like [`db`], but for deletes: a foreign-key violation means the row is still referenced,
/// which is a [`StoreError::Conflict`].
#[allow(dead_code)] // used by the postgres backend and by sqlite deletes of referenced rows
pub(crate) fn db_on_delete(err: sqlx::Error) -> StoreError {
    map(err, ForeignKey::StillReferenced)
}

/// A backend error for a value read from the database that does not decode into the domain
/// (a corrupt or hand-edited row).
pub(crate) fn corrupt(what: &str, detail: impl fmt::Display) -> StoreError {
    StoreError::Backend(format!("corrupt {what} in database: {detail}"))
}

/// The message of a unique violation: "{row} with this `{field}` already exists", from what
/// the database reports, so both backends read the same and no constraint text leaks:
/// SQLite names the columns (`UNIQUE constraint failed: t.a, t.b`, or the index of an
/// expression); PostgreSQL names the table and the constraint (its detail, which would list
/// the columns, is withheld on tables under row-level security). The field is the last column
/// other than the organization's id: the tenant is never the conflicting part.
fn unique_conflict(err: &dyn sqlx::error::DatabaseError) -> String {
    let (table, field) = unique_field(err);
    let field = match field.as_str() {
        "" => "value",
        "auth0_id" => "oidc_subject",
        "virtual_key_id" => "litellm_key_id",
        other => other,
    };
    let row = match table.as_str() {
        "organizations" => "an organization",
        "users" => "a user",
        "groups" => "a group",
        "group_memberships" => "a group membership",
        "org_memberships" => "a membership",
        "invitations" => "an invitation",
        "model_tiers" | "tier_models" => "a tier",
        "budgets" => "a budget",
        "guardrails" => "a rule",
        "user_profiles" => "a profile",
        "usage_records" => "a usage record",
        _ => "a row",
    };
    format!("{row} with this `{field}` already exists")
}

/// The table and the conflicting column of a unique violation.
fn unique_field(err: &dyn sqlx::error::DatabaseError) -> (String, String) {
    let table = err.table().unwrap_or("").to_owned();
    if let Some(constraint) = err.constraint() {
        // PostgreSQL: `{table}_pkey`, `{table}_{columns}_key`, or an index of ours.
        let field = match (constraint, table.as_str()) {
            ("groups_org_name_nocase", _) => "name",
            (_, "org_memberships" | "group_memberships") if constraint.ends_with("_pkey") => {
                "user_id"
            }
            (c, _) if c.ends_with("_pkey") => "id",
            (c, t) => c
                .strip_prefix(t)
                .and_then(|c| c.strip_prefix('_'))
                .and_then(|c| c.strip_suffix("_key"))
                .map_or("", |c| c.strip_prefix("organization_id_").unwrap_or(c)),
        };
        return (table, field.to_owned());
    }
    // SQLite: "UNIQUE constraint failed: groups.organization_id, groups.name", or
    // "UNIQUE constraint failed: index 'groups_org_name_nocase'" for an expression index.
    let message = err.message();
    let list = message.split_once("failed: ").map_or("", |(_, l)| l.trim());
    if list == "index 'groups_org_name_nocase'" {
        return ("groups".to_owned(), "name".to_owned());
    }
    let columns: Vec<(&str, &str)> = list
        .split(", ")
        .filter_map(|qualified| qualified.split_once('.'))
        .collect();
    let table = columns.first().map_or("", |(t, _)| *t).to_owned();
    let field = columns
        .iter()
        .rev()
        .map(|(_, c)| *c)
        .find(|c| *c != "organization_id")
        .unwrap_or("")
        .to_owned();
    (table, field)
}

#[derive(Clone, Copy)]
enum ForeignKey {
    Missing,
    StillReferenced,
}

fn map(err: sqlx::Error, foreign_key: ForeignKey) -> StoreError {
    match err {
        sqlx::Error::RowNotFound => StoreError::not_found("row", "?"),
        sqlx::Error::Database(db_err) => {
            let constraint = db_err.constraint().unwrap_or("").to_owned();
            let message = db_err.message().to_owned();
            let detail = if constraint.is_empty() {
                message.clone()
            } else {
                format!("{message} (`{constraint}`)")
            };
            if db_err.code().as_deref() == Some(PG_INSUFFICIENT_PRIVILEGE) {
                return StoreError::TenantMismatch(detail);
            }
            match db_err.kind() {
                ErrorKind::UniqueViolation | ErrorKind::ExclusionViolation => {
                    StoreError::Conflict(unique_conflict(db_err.as_ref()))
                }
                ErrorKind::ForeignKeyViolation => match foreign_key {
                    ForeignKey::Missing => StoreError::NotFound {
                        entity: "referenced row",
                        id: if constraint.is_empty() {
                            message
                        } else {
                            constraint
                        },
                    },
                    ForeignKey::StillReferenced => {
                        StoreError::Conflict(format!("still referenced: {detail}"))
                    }
                },
                ErrorKind::CheckViolation | ErrorKind::NotNullViolation => {
                    StoreError::Invalid(ValidationError::new(
                        if constraint.is_empty() {
                            "value".to_owned()
                        } else {
                            constraint
                        },
                        message,
                    ))
                }
                _ => StoreError::Backend(detail),
            }
        }
        other => StoreError::Backend(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_database_errors_are_backend_errors() {
        assert!(matches!(
            db(sqlx::Error::PoolTimedOut),
            StoreError::Backend(_)
        ));
        assert!(matches!(
            db(sqlx::Error::RowNotFound),
            StoreError::NotFound { .. }
        ));
    }

    #[tokio::test]
    async fn sqlite_constraint_violations_map_to_typed_errors() {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect("sqlite::memory:")
            .await
            .unwrap();
        sqlx::raw_sql(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL CHECK (name <> ''));
             CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES parent(id));
             INSERT INTO parent (id, name) VALUES (1, 'a');
             INSERT INTO child (id, parent_id) VALUES (1, 1);",
        )
        .execute(&mut conn)
        .await
        .unwrap();

        let unique = sqlx::query("INSERT INTO parent (id, name) VALUES (2, 'a')")
            .execute(&mut conn)
            .await
            .unwrap_err();
        match db(unique) {
            StoreError::Conflict(message) => {
                assert_eq!(message, "a row with this `name` already exists");
            }
            other => panic!("expected a conflict, got {other:?}"),
        }

        let check = sqlx::query("INSERT INTO parent (id, name) VALUES (3, '')")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert!(matches!(db(check), StoreError::Invalid(_)));

        let missing = sqlx::query("INSERT INTO child (id, parent_id) VALUES (2, 42)")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert!(matches!(db(missing), StoreError::NotFound { .. }));

        let referenced = sqlx::query("DELETE FROM parent WHERE id = 1")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert!(matches!(db_on_delete(referenced), StoreError::Conflict(_)));
    }
}
