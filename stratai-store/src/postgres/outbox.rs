//! [`OutboxStore`] on PostgreSQL: platform-wide, through the `stratai_outbox_*` functions
//! (the app role can only insert outbox rows, inside a tenant's directory change).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use stratai_core::StoreError;
use stratai_core::ports::{OutboxEvent, OutboxStore};

use super::PgStore;
use super::rows;
use crate::error::db;
use crate::shared::micros;

fn found(updated: bool, seq: i64) -> Result<(), StoreError> {
    if updated {
        Ok(())
    } else {
        Err(StoreError::not_found("outbox event", seq))
    }
}

fn limit(limit: u32) -> i32 {
    i32::try_from(limit).unwrap_or(i32::MAX)
}

#[async_trait]
impl OutboxStore for PgStore {
    async fn pending(&self, now: DateTime<Utc>, max: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        sqlx::query("SELECT * FROM stratai_outbox_pending($1, $2)")
            .bind(now)
            .bind(limit(max))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(rows::outbox_event)
            .collect()
    }

    async fn complete(&self, seq: i64) -> Result<(), StoreError> {
        let updated: bool = sqlx::query_scalar("SELECT stratai_outbox_complete($1)")
            .bind(seq)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        found(updated, seq)
    }

    async fn fail(&self, seq: i64, error: &str, retry_at: DateTime<Utc>) -> Result<(), StoreError> {
        let updated: bool = sqlx::query_scalar("SELECT stratai_outbox_fail($1, $2, $3)")
            .bind(seq)
            .bind(error)
            .bind(micros(retry_at))
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        found(updated, seq)
    }

    async fn dead_letter(&self, seq: i64, reason: &str) -> Result<(), StoreError> {
        let updated: bool = sqlx::query_scalar("SELECT stratai_outbox_dead_letter($1, $2)")
            .bind(seq)
            .bind(reason)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        found(updated, seq)
    }

    async fn dead_letters(&self, max: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        sqlx::query("SELECT * FROM stratai_outbox_dead_letters($1)")
            .bind(limit(max))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(rows::outbox_event)
            .collect()
    }
}
