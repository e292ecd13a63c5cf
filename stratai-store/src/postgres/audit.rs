//! [`AuditStore`] on PostgreSQL. An organization's chain is read and appended in its tenant
//! transaction (row-level security); the platform chain (no organization) in a transaction
//! without one. Appends lock the chain's head row, so they serialize per chain. Operators'
//! listing of every chain goes through `stratai_audit_all` (SECURITY DEFINER). The app role
//! may not UPDATE, DELETE or TRUNCATE entries, and triggers refuse those to every role.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Postgres, QueryBuilder, Transaction};
use stratai_core::audit::{
    AuditChain, AuditDraft, AuditEntry, AuditQuery, ChainHead, GENESIS_HASH, StoredChain,
    canonical_json,
};
use stratai_core::ports::AuditStore;
use stratai_core::{OrgId, StoreError};
use uuid::Uuid;

use super::PgStore;
use super::rows::get;
use crate::audited::take_pending;
use crate::error::{corrupt, db};

const COLUMNS: &str = "organization_id, seq, at, actor_id, request_id, action, target, \
     before_state, after_state, prev_hash, hash";

fn state(row: &PgRow, col: &str) -> Result<Option<serde_json::Value>, StoreError> {
    get::<Option<String>>(row, col)?
        .map(|text| serde_json::from_str(&text).map_err(|e| corrupt(col, e)))
        .transpose()
}

fn entry(row: &PgRow) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        org_id: get::<Option<Uuid>>(row, "organization_id")?.map(Into::into),
        seq: get(row, "seq")?,
        at: get::<DateTime<Utc>>(row, "at")?,
        actor: get::<Option<Uuid>>(row, "actor_id")?.map(Into::into),
        request_id: get(row, "request_id")?,
        action: get(row, "action")?,
        target: get(row, "target")?,
        before: state(row, "before_state")?,
        after: state(row, "after_state")?,
        prev_hash: get(row, "prev_hash")?,
        hash: get(row, "hash")?,
    })
}

fn push_filters(qb: &mut QueryBuilder<Postgres>, query: &AuditQuery) {
    if let Some(actor) = query.actor {
        qb.push(" AND actor_id = ").push_bind(actor.as_uuid());
    }
    if let Some(action) = &query.action {
        qb.push(" AND starts_with(action, ")
            .push_bind(action.clone())
            .push(")");
    }
    if let Some(target) = &query.target {
        qb.push(" AND starts_with(target, ")
            .push_bind(target.clone())
            .push(")");
    }
    if let Some(request) = &query.request_id {
        qb.push(" AND request_id = ").push_bind(request.clone());
    }
    if let Some(since) = query.since {
        qb.push(" AND at >= ").push_bind(since);
    }
    if let Some(until) = query.until {
        qb.push(" AND at < ").push_bind(until);
    }
    if let Some(c) = &query.before {
        let (at, chain, seq) = c.key();
        qb.push(" AND (at, chain_id, seq) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(chain)
            .push(", ")
            .push_bind(seq)
            .push(")");
    }
    qb.push(" ORDER BY at DESC, chain_id DESC, seq DESC LIMIT ")
        .push_bind(i64::from(query.limit));
}

async fn append(
    conn: &mut PgConnection,
    chain: AuditChain,
    draft: &AuditDraft,
) -> Result<AuditEntry, StoreError> {
    let org = chain.org().map(|o| o.as_uuid());
    // The head row exists before it is locked (seq 0 = nothing appended yet), so two first
    // appends to a chain also serialize on it.
    sqlx::query(
        "INSERT INTO audit_heads (chain_id, organization_id, seq, hash) VALUES ($1, $2, 0, $3)
         ON CONFLICT (chain_id) DO NOTHING",
    )
    .bind(chain.key())
    .bind(org)
    .bind(GENESIS_HASH)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    let (head_seq, prev): (i64, String) =
        sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE chain_id = $1 FOR UPDATE")
            .bind(chain.key())
            .fetch_one(&mut *conn)
            .await
            .map_err(db)?;
    let entry = AuditEntry::seal(chain, head_seq + 1, &prev, draft);
    let sql = format!(
        "INSERT INTO audit_log (chain_id, {COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(chain.key())
        .bind(org)
        .bind(entry.seq)
        .bind(entry.at)
        .bind(entry.actor.map(|u| u.as_uuid()))
        .bind(&entry.request_id)
        .bind(&entry.action)
        .bind(&entry.target)
        .bind(entry.before.as_ref().map(canonical_json))
        .bind(entry.after.as_ref().map(canonical_json))
        .bind(&entry.prev_hash)
        .bind(&entry.hash)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    sqlx::query("UPDATE audit_heads SET seq = $2, hash = $3 WHERE chain_id = $1")
        .bind(chain.key())
        .bind(entry.seq)
        .bind(&entry.hash)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(entry)
}

/// Commits a write's transaction with the audit entry of the change it made, when one is
/// pending ([`crate::audited`]): the entry is appended in this transaction, so the change and
/// its entry are committed together or not at all. `after` is the write's result, when the
/// entry's after-state is what the write returned.
pub(super) async fn commit_change(
    mut tx: Transaction<'_, Postgres>,
    after: Option<serde_json::Value>,
) -> Result<(), StoreError> {
    if let Some(entry) = take_pending(after) {
        if let AuditChain::Org(org) = entry.chain {
            // An organization's chain is a tenant table: appended in its organization's
            // context, switched transaction-locally (a platform write's transaction has none).
            sqlx::query("SELECT set_config('app.current_org_id', $1, true)")
                .bind(org.to_string())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        append(&mut tx, entry.chain, &entry.draft).await?;
    }
    tx.commit().await.map_err(db)
}

async fn list(
    conn: &mut PgConnection,
    chain: AuditChain,
    query: &AuditQuery,
) -> Result<Vec<AuditEntry>, StoreError> {
    let mut qb =
        QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM audit_log WHERE chain_id = "));
    qb.push_bind(chain.key());
    push_filters(&mut qb, query);
    qb.build()
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?
        .iter()
        .map(entry)
        .collect()
}

async fn chain_of(conn: &mut PgConnection, chain: AuditChain) -> Result<StoredChain, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE chain_id = $1 ORDER BY seq");
    let entries = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(chain.key())
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?
        .iter()
        .map(entry)
        .collect::<Result<Vec<_>, _>>()?;
    let head: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE chain_id = $1")
            .bind(chain.key())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
    Ok(StoredChain {
        entries,
        head: head
            .filter(|(seq, _)| *seq > 0)
            .map(|(seq, hash)| ChainHead { seq, hash }),
    })
}

async fn require_org(conn: &mut PgConnection, org: OrgId) -> Result<(), StoreError> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM organizations WHERE id = $1")
        .bind(org.as_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    found
        .map(|_| ())
        .ok_or_else(|| StoreError::not_found("organization", org))
}

#[async_trait]
impl AuditStore for PgStore {
    async fn append_audit(&self, org: OrgId, draft: &AuditDraft) -> Result<AuditEntry, StoreError> {
        let mut tx = self.tenant(org).await?;
        require_org(&mut tx, org).await?;
        let entry = append(&mut tx, AuditChain::Org(org), draft).await?;
        tx.commit().await.map_err(db)?;
        Ok(entry)
    }

    async fn append_platform_audit(&self, draft: &AuditDraft) -> Result<AuditEntry, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let entry = append(&mut tx, AuditChain::Platform, draft).await?;
        tx.commit().await.map_err(db)?;
        Ok(entry)
    }

    async fn list_audit(
        &self,
        org: OrgId,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let out = list(&mut tx, AuditChain::Org(org), query).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn list_platform_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let out = list(&mut tx, AuditChain::Platform, query).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn list_all_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        let before = query.before.as_ref().map(|c| c.key());
        let sql = format!(
            "SELECT {COLUMNS} FROM stratai_audit_all($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(query.actor.map(|u| u.as_uuid()))
            .bind(&query.action)
            .bind(&query.target)
            .bind(&query.request_id)
            .bind(query.since)
            .bind(query.until)
            .bind(before.map(|b| b.0))
            .bind(before.map(|b| b.1))
            .bind(before.map(|b| b.2))
            .bind(i32::try_from(query.limit).unwrap_or(i32::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(entry)
            .collect()
    }

    async fn audit_chain(&self, org: OrgId) -> Result<StoredChain, StoreError> {
        let mut tx = self.tenant(org).await?;
        let out = chain_of(&mut tx, AuditChain::Org(org)).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn platform_audit_chain(&self) -> Result<StoredChain, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let out = chain_of(&mut tx, AuditChain::Platform).await?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }

    async fn audit_page(
        &self,
        org: OrgId,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.page_of(AuditChain::Org(org), after_seq, limit).await
    }

    async fn platform_audit_page(
        &self,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.page_of(AuditChain::Platform, after_seq, limit).await
    }
}

impl PgStore {
    /// A page of `chain` (see [`AuditStore::audit_page`]).
    async fn page_of(
        &self,
        chain: AuditChain,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut tx = match chain {
            AuditChain::Org(org) => self.tenant(org).await?,
            AuditChain::Platform => self.pool.begin().await.map_err(db)?,
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log WHERE chain_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
        );
        let out = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(chain.key())
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?
            .iter()
            .map(entry)
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().await.map_err(db)?;
        Ok(out)
    }
}
