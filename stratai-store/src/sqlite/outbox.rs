//! The LiteLLM sync outbox over SQLite.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use stratai_core::ports::{OutboxEntity, OutboxEvent, OutboxStore};
use stratai_core::{GroupId, OrgId, StoreError, UserId};

use super::{Col, SqliteStore, ts};
use crate::error::{corrupt, db};
use crate::shared::micros;

fn event_from_row(row: &SqliteRow) -> Result<OutboxEvent, StoreError> {
    let id = row.uuid("entity_id")?;
    let entity = match row.text("entity_kind")?.as_str() {
        "org" => OutboxEntity::Org(OrgId::from_uuid(id)),
        "group" => OutboxEntity::Group(GroupId::from_uuid(id)),
        "member" => OutboxEntity::Member(UserId::from_uuid(id)),
        other => return Err(corrupt("outbox entity", format!("`{other}`"))),
    };
    Ok(OutboxEvent {
        seq: row.int("seq")?,
        org_id: OrgId::from_uuid(row.uuid("organization_id")?),
        entity,
        deleted: row.flag("deleted")?,
        version: row.int("version")?,
        attempts: u32::try_from(row.int("attempts")?).map_err(|err| corrupt("attempts", err))?,
        last_error: row.opt_text("last_error")?,
        available_at: row.at("available_at")?,
        created_at: row.at("created_at")?,
    })
}

fn found(rows: u64, seq: i64) -> Result<(), StoreError> {
    if rows == 0 {
        Err(StoreError::not_found("outbox event", seq))
    } else {
        Ok(())
    }
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn pending(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<OutboxEvent>, StoreError> {
        sqlx::query(
            "SELECT * FROM outbox WHERE status = 'pending' AND available_at <= ?
             ORDER BY seq LIMIT ?",
        )
        .bind(ts(micros(now)))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?
        .iter()
        .map(event_from_row)
        .collect()
    }

    async fn complete(&self, seq: i64) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE outbox SET status = 'done' WHERE seq = ?")
            .bind(seq)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        found(done.rows_affected(), seq)
    }

    async fn fail(&self, seq: i64, error: &str, retry_at: DateTime<Utc>) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, available_at = ?
             WHERE seq = ?",
        )
        .bind(error)
        .bind(ts(micros(retry_at)))
        .bind(seq)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        found(done.rows_affected(), seq)
    }

    async fn dead_letter(&self, seq: i64, reason: &str) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE outbox SET status = 'dead', last_error = ? WHERE seq = ?")
            .bind(reason)
            .bind(seq)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        found(done.rows_affected(), seq)
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        sqlx::query("SELECT * FROM outbox WHERE status = 'dead' ORDER BY seq DESC LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(event_from_row)
            .collect()
    }
}
