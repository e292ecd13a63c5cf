//! [`KeyVaultStore`] over SQLite: the sealed LiteLLM keys, one row per membership.

use async_trait::async_trait;
use stratai_core::ports::{KeyVaultStore, SealedKey};
use stratai_core::{OrgId, StoreError, UserId};

use super::{Col, SqliteStore, require_member, ts};
use crate::error::db;
use crate::shared::micros;

#[async_trait]
impl KeyVaultStore for SqliteStore {
    async fn put_sealed_key(
        &self,
        org: OrgId,
        user: UserId,
        key: &SealedKey,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        require_member(&mut tx, org, user).await?;
        sqlx::query(
            "INSERT INTO litellm_key_vault (organization_id, user_id, key_id, sealed, sealed_at)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (organization_id, user_id) DO UPDATE SET
                 key_id = excluded.key_id, sealed = excluded.sealed,
                 sealed_at = excluded.sealed_at",
        )
        .bind(org.as_uuid())
        .bind(user.as_uuid())
        .bind(&key.key_id)
        .bind(&key.sealed)
        .bind(ts(micros(key.sealed_at)))
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
        let row = sqlx::query(
            "SELECT key_id, sealed, sealed_at FROM litellm_key_vault
             WHERE organization_id = ? AND user_id = ?",
        )
        .bind(org.as_uuid())
        .bind(user.as_uuid())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        Ok(Some(SealedKey {
            key_id: row.text("key_id")?,
            sealed: sqlx::Row::try_get(&row, "sealed").map_err(db)?,
            sealed_at: row.at("sealed_at")?,
        }))
    }

    async fn delete_sealed_key(&self, org: OrgId, user: UserId) -> Result<bool, StoreError> {
        let done =
            sqlx::query("DELETE FROM litellm_key_vault WHERE organization_id = ? AND user_id = ?")
                .bind(org.as_uuid())
                .bind(user.as_uuid())
                .execute(&self.pool)
                .await
                .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}
