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
/// - unique / exclusion violation: [`StoreError::Conflict`]
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
                    StoreError::Conflict(detail)
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
        assert!(matches!(db(unique), StoreError::Conflict(_)));

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
