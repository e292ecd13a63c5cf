//! SQLite backend (the embedded default): every port over one database file.
//!
//! Writes run in `BEGIN IMMEDIATE` transactions: SQLite has one writer at a time, and taking
//! the write lock up front means a transaction never fails half-way on a lock upgrade. The
//! ledger relies on it: a reservation reads the periods, checks every hard limit and writes
//! the new state while no other writer can run, so hard limits are never overspent.

mod audit;
mod directory;
mod invoices;
mod key_vault;
mod ledger;
mod outbox;
mod rules;
mod tiers;
mod usage;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqliteConnection, Transaction};
use stratai_core::ports::OutboxEntity;
use stratai_core::{Money, OrgId, StoreError};
use uuid::Uuid;

use crate::error::{corrupt, db};

/// The migrations of the SQLite schema, embedded in the binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Connections in the pool of a file database (readers run in parallel under WAL; writers
/// take turns).
const POOL_SIZE: u32 = 8;

/// How long a connection waits for SQLite's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Every port over one SQLite database. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `url` — `sqlite://path/to/file.db`,
    /// `sqlite:file.db` or `sqlite::memory:` — with WAL, a busy timeout and foreign keys on,
    /// and applies the embedded migrations.
    ///
    /// An in-memory database lives as long as the store and uses a single connection.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|err| StoreError::Backend(format!("invalid sqlite url `{url}`: {err}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        let pool = if in_memory {
            // Every connection to `:memory:` would be a new database: keep exactly one, forever.
            SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await
        } else {
            SqlitePoolOptions::new()
                .max_connections(POOL_SIZE)
                .connect_with(options)
                .await
        }
        .map_err(db)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|err| StoreError::Backend(format!("sqlite migrations failed: {err}")))?;
        Ok(Self { pool })
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction holding SQLite's write lock from its first statement.
    async fn write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)
    }
}

/// The fixed-width text of a timestamp (microseconds, UTC), which sorts chronologically.
pub(crate) fn ts(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn parse_ts(text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|err| corrupt("timestamp", format!("`{text}`: {err}")))
}

/// The exact decimal text of an amount.
pub(crate) fn money(amount: Money) -> String {
    amount.amount().to_string()
}

fn parse_money(text: &str) -> Result<Money, StoreError> {
    Money::parse(text).map_err(|err| corrupt("amount", err))
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|err| StoreError::Backend(err.to_string()))
}

fn from_json<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|err| corrupt(what, err))
}

/// Typed column access with store errors.
trait Col {
    fn uuid(&self, col: &str) -> Result<Uuid, StoreError>;
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>, StoreError>;
    fn text(&self, col: &str) -> Result<String, StoreError>;
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, col: &str) -> Result<i64, StoreError>;
    fn flag(&self, col: &str) -> Result<bool, StoreError>;
    fn at(&self, col: &str) -> Result<DateTime<Utc>, StoreError>;
    fn opt_at(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError>;
    fn money(&self, col: &str) -> Result<Money, StoreError>;
    fn opt_money(&self, col: &str) -> Result<Option<Money>, StoreError>;
    fn json<T: DeserializeOwned>(&self, col: &str) -> Result<T, StoreError>;
    fn opt_json<T: DeserializeOwned>(&self, col: &str) -> Result<Option<T>, StoreError>;
    fn variant<T: DeserializeOwned>(&self, col: &str) -> Result<T, StoreError>;
}

impl Col for SqliteRow {
    fn uuid(&self, col: &str) -> Result<Uuid, StoreError> {
        self.try_get(col).map_err(db)
    }
    fn opt_uuid(&self, col: &str) -> Result<Option<Uuid>, StoreError> {
        self.try_get(col).map_err(db)
    }
    fn text(&self, col: &str) -> Result<String, StoreError> {
        self.try_get(col).map_err(db)
    }
    fn opt_text(&self, col: &str) -> Result<Option<String>, StoreError> {
        self.try_get(col).map_err(db)
    }
    fn int(&self, col: &str) -> Result<i64, StoreError> {
        self.try_get(col).map_err(db)
    }
    fn flag(&self, col: &str) -> Result<bool, StoreError> {
        Ok(self.int(col)? != 0)
    }
    fn at(&self, col: &str) -> Result<DateTime<Utc>, StoreError> {
        parse_ts(&self.text(col)?)
    }
    fn opt_at(&self, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.opt_text(col)?.as_deref().map(parse_ts).transpose()
    }
    fn money(&self, col: &str) -> Result<Money, StoreError> {
        parse_money(&self.text(col)?)
    }
    fn opt_money(&self, col: &str) -> Result<Option<Money>, StoreError> {
        self.opt_text(col)?.as_deref().map(parse_money).transpose()
    }
    fn json<T: DeserializeOwned>(&self, col: &str) -> Result<T, StoreError> {
        from_json(col, &self.text(col)?)
    }
    fn opt_json<T: DeserializeOwned>(&self, col: &str) -> Result<Option<T>, StoreError> {
        self.opt_text(col)?
            .as_deref()
            .map(|text| from_json(col, text))
            .transpose()
    }
    fn variant<T: DeserializeOwned>(&self, col: &str) -> Result<T, StoreError> {
        crate::shared::enum_from_text(col, &self.text(col)?)
    }
}

fn entity_parts(entity: OutboxEntity) -> (&'static str, Uuid) {
    match entity {
        OutboxEntity::Org(id) => ("org", id.as_uuid()),
        OutboxEntity::Group(id) => ("group", id.as_uuid()),
        OutboxEntity::Member(id) => ("member", id.as_uuid()),
    }
}

/// Writes the outbox event of a directory change, inside the change's transaction.
async fn emit(
    conn: &mut SqliteConnection,
    org: OrgId,
    entity: OutboxEntity,
    deleted: bool,
) -> Result<(), StoreError> {
    let (kind, id) = entity_parts(entity);
    let version: i64 = sqlx::query_scalar(
        "INSERT INTO outbox_versions (entity_kind, entity_id, version) VALUES (?, ?, 1)
         ON CONFLICT (entity_kind, entity_id) DO UPDATE SET version = version + 1
         RETURNING version",
    )
    .bind(kind)
    .bind(id)
    .fetch_one(&mut *conn)
    .await
    .map_err(db)?;
    let now = ts(crate::shared::micros(Utc::now()));
    sqlx::query(
        "INSERT INTO outbox (organization_id, entity_kind, entity_id, deleted, version,
                             available_at, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(org.as_uuid())
    .bind(kind)
    .bind(id)
    .bind(deleted)
    .bind(version)
    .bind(&now)
    .bind(&now)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// NotFound unless the organization exists.
async fn require_org(conn: &mut SqliteConnection, org: OrgId) -> Result<(), StoreError> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM organizations WHERE id = ?")
        .bind(org.as_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    found
        .map(|_| ())
        .ok_or_else(|| StoreError::not_found("organization", org))
}

/// NotFound unless the group exists in the organization.
async fn require_group(
    conn: &mut SqliteConnection,
    org: OrgId,
    group: stratai_core::GroupId,
) -> Result<(), StoreError> {
    let found: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM groups WHERE id = ? AND organization_id = ?")
            .bind(group.as_uuid())
            .bind(org.as_uuid())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
    found
        .map(|_| ())
        .ok_or_else(|| StoreError::not_found("group", group))
}

/// NotFound unless the user is a member of the organization.
async fn require_member(
    conn: &mut SqliteConnection,
    org: OrgId,
    user: stratai_core::UserId,
) -> Result<(), StoreError> {
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM org_memberships WHERE organization_id = ? AND user_id = ?",
    )
    .bind(org.as_uuid())
    .bind(user.as_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    found
        .map(|_| ())
        .ok_or_else(|| StoreError::not_found("membership", user))
}

/// NotFound unless the row with `id` exists in `table` (a platform-wide table).
async fn require_row(
    conn: &mut SqliteConnection,
    exists_sql: &'static str,
    entity: &'static str,
    id: Uuid,
) -> Result<(), StoreError> {
    let found: Option<i64> = sqlx::query_scalar(exists_sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    found
        .map(|_| ())
        .ok_or_else(|| StoreError::not_found(entity, id))
}

const USER_EXISTS: &str = "SELECT 1 FROM users WHERE id = ?";
const TIER_EXISTS: &str = "SELECT 1 FROM model_tiers WHERE id = ?";
const PROFILE_EXISTS: &str = "SELECT 1 FROM user_profiles WHERE id = ?";

fn tenant(expected: OrgId, actual: OrgId, what: &str) -> Result<(), StoreError> {
    if expected == actual {
        Ok(())
    } else {
        Err(StoreError::TenantMismatch(format!(
            "{what} belongs to organization `{actual}`, not `{expected}`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_fixed_width_and_round_trip() {
        let at: DateTime<Utc> = "2026-03-04T05:06:07.5Z".parse().unwrap();
        assert_eq!(ts(at), "2026-03-04T05:06:07.500000Z");
        assert_eq!(parse_ts(&ts(at)).unwrap(), at);
    }

    #[tokio::test]
    async fn connect_creates_the_file_and_migrates() {
        let scratch = stratai_testkit::Scratch::new();
        let url = format!("sqlite://{}", scratch.join("store.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(fk, 1);
        store.close().await;
        // Reconnecting applies no migration twice.
        let again = SqliteStore::connect(&url).await.unwrap();
        again.close().await;
    }
}
