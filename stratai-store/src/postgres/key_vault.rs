//! [`KeyVaultStore`] on PostgreSQL: the sealed LiteLLM keys, one row per membership, in a
//! tenant table under row-level security like every other.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use stratai_core::ports::{KeyVaultStore, SealedKey};
use stratai_core::{OrgId, StoreError, UserId};

use super::PgStore;
use crate::error::db;
use crate::shared::micros;

#[async_trait]
impl KeyVaultStore for PgStore {
    async fn put_sealed_key(
        &self,
        org: OrgId,
        user: UserId,
        key: &SealedKey,
    ) -> Result<(), StoreError> {
        let mut tx = self.tenant(org).await?;
        // The row references the membership (composite foreign key); checked first so the
        // answer names the missing membership.
        let member: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM org_memberships WHERE organization_id = $1 AND user_id = $2",
        )
        .bind(org.as_uuid())
        .bind(user.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        if member.is_none() {
            return Err(StoreError::not_found("membership", user));
        }
        sqlx::query(
            "INSERT INTO litellm_key_vault (organization_id, user_id, key_id, sealed, sealed_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (organization_id, user_id) DO UPDATE SET
                 key_id = EXCLUDED.key_id, sealed = EXCLUDED.sealed,
                 sealed_at = EXCLUDED.sealed_at",
        )
        .bind(org.as_uuid())
        .bind(user.as_uuid())
        .bind(&key.key_id)
        .bind(&key.sealed)
        .bind(micros(key.sealed_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn find_sealed_key(
        &self,
        org: OrgId,
        user: UserId,
    ) -> Result<Option<SealedKey>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let row = sqlx::query(
            "SELECT key_id, sealed, sealed_at FROM litellm_key_vault
             WHERE organization_id = $1 AND user_id = $2",
        )
        .bind(org.as_uuid())
        .bind(user.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(SealedKey {
            key_id: row.try_get("key_id").map_err(db)?,
            sealed: row.try_get("sealed").map_err(db)?,
            sealed_at: row.try_get::<DateTime<Utc>, _>("sealed_at").map_err(db)?,
        }))
    }

    async fn delete_sealed_key(&self, org: OrgId, user: UserId) -> Result<bool, StoreError> {
        let mut tx = self.tenant(org).await?;
        let done = sqlx::query(
            "DELETE FROM litellm_key_vault WHERE organization_id = $1 AND user_id = $2",
        )
        .bind(org.as_uuid())
        .bind(user.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}
