//! [`AuditStore`] over SQLite: entries appended under the write lock (`BEGIN IMMEDIATE`), so
//! a chain's head is read and moved by one writer at a time. Triggers of the schema refuse
//! every UPDATE and DELETE of an entry.

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::{QueryBuilder, Sqlite, SqliteConnection, Transaction};
use stratai_core::audit::{
    AuditChain, AuditDraft, AuditEntry, AuditQuery, ChainHead, GENESIS_HASH, StoredChain,
    canonical_json,
};
use stratai_core::ports::AuditStore;
use stratai_core::{OrgId, StoreError};

use super::{Col, SqliteStore, require_org, ts};
use crate::audited::take_pending;
use crate::error::{corrupt, db};

const COLUMNS: &str = "organization_id, seq, at, actor_id, request_id, action, target, \
     before_state, after_state, prev_hash, hash";

fn state(row: &SqliteRow, col: &str) -> Result<Option<serde_json::Value>, StoreError> {
    row.opt_text(col)?
        .map(|text| serde_json::from_str(&text).map_err(|e| corrupt(col, e)))
        .transpose()
}

fn entry(row: &SqliteRow) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry {
        org_id: row.opt_uuid("organization_id")?.map(Into::into),
        seq: row.int("seq")?,
        at: row.at("at")?,
        actor: row.opt_uuid("actor_id")?.map(Into::into),
        request_id: row.opt_text("request_id")?,
        action: row.text("action")?,
        target: row.text("target")?,
        before: state(row, "before_state")?,
        after: state(row, "after_state")?,
        prev_hash: row.text("prev_hash")?,
        hash: row.text("hash")?,
    })
}

fn push_filters(qb: &mut QueryBuilder<Sqlite>, query: &AuditQuery) {
    if let Some(actor) = query.actor {
        qb.push(" AND actor_id = ").push_bind(actor.as_uuid());
    }
    if let Some(action) = &query.action {
        qb.push(" AND substr(action, 1, length(")
            .push_bind(action.clone())
            .push(")) = ")
            .push_bind(action.clone());
    }
    if let Some(target) = &query.target {
        qb.push(" AND substr(target, 1, length(")
            .push_bind(target.clone())
            .push(")) = ")
            .push_bind(target.clone());
    }
    if let Some(request) = &query.request_id {
        qb.push(" AND request_id = ").push_bind(request.clone());
    }
    if let Some(since) = query.since {
        qb.push(" AND at >= ").push_bind(ts(since));
    }
    if let Some(until) = query.until {
        qb.push(" AND at < ").push_bind(ts(until));
    }
    if let Some(c) = &query.before {
        let (at, chain, seq) = c.key();
        qb.push(" AND (at, chain_id, seq) < (")
            .push_bind(ts(at))
            .push(", ")
            .push_bind(chain)
            .push(", ")
            .push_bind(seq)
            .push(")");
    }
    qb.push(" ORDER BY at DESC, chain_id DESC, seq DESC LIMIT ")
        .push_bind(i64::from(query.limit));
}

/// Appends `draft` to `chain` in the write transaction `conn` (which holds the write lock).
async fn append(
    conn: &mut SqliteConnection,
    chain: AuditChain,
    draft: &AuditDraft,
) -> Result<AuditEntry, StoreError> {
    if let AuditChain::Org(org) = chain {
        require_org(&mut *conn, org).await?;
    }
    let head: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE chain_id = ?")
            .bind(chain.key())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
    let (seq, prev) = head.map_or((1, GENESIS_HASH.to_owned()), |(s, h)| (s + 1, h));
    let entry = AuditEntry::seal(chain, seq, &prev, draft);
    let sql = format!(
        "INSERT INTO audit_log (chain_id, {COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(chain.key())
        .bind(entry.org_id.map(|o| o.as_uuid()))
        .bind(entry.seq)
        .bind(ts(entry.at))
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
    sqlx::query(
        "INSERT INTO audit_heads (chain_id, organization_id, seq, hash) VALUES (?, ?, ?, ?)
         ON CONFLICT (chain_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
    )
    .bind(chain.key())
    .bind(entry.org_id.map(|o| o.as_uuid()))
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
    mut tx: Transaction<'_, Sqlite>,
    after: Option<serde_json::Value>,
) -> Result<(), StoreError> {
    if let Some(entry) = take_pending(after) {
        append(&mut tx, entry.chain, &entry.draft).await?;
    }
    tx.commit().await.map_err(db)
}

impl SqliteStore {
    async fn append_to(
        &self,
        chain: AuditChain,
        draft: &AuditDraft,
    ) -> Result<AuditEntry, StoreError> {
        let mut tx = self.write().await?;
        let entry = append(&mut tx, chain, draft).await?;
        tx.commit().await.map_err(db)?;
        Ok(entry)
    }

    async fn list_in(
        &self,
        chain: Option<AuditChain>,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut qb =
            QueryBuilder::<Sqlite>::new(format!("SELECT {COLUMNS} FROM audit_log WHERE 1 = 1"));
        if let Some(chain) = chain {
            qb.push(" AND chain_id = ").push_bind(chain.key());
        }
        push_filters(&mut qb, query);
        qb.build()
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(entry)
            .collect()
    }

    async fn chain_of(&self, chain: AuditChain) -> Result<StoredChain, StoreError> {
        let mut conn = self.pool.begin().await.map_err(db)?;
        let sql = format!("SELECT {COLUMNS} FROM audit_log WHERE chain_id = ? ORDER BY seq");
        let entries = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(chain.key())
            .fetch_all(&mut *conn)
            .await
            .map_err(db)?
            .iter()
            .map(entry)
            .collect::<Result<Vec<_>, _>>()?;
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, hash FROM audit_heads WHERE chain_id = ?")
                .bind(chain.key())
                .fetch_optional(&mut *conn)
                .await
                .map_err(db)?;
        conn.commit().await.map_err(db)?;
        Ok(StoredChain {
            entries,
            head: head
                .filter(|(seq, _)| *seq > 0)
                .map(|(seq, hash)| ChainHead { seq, hash }),
        })
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, org: OrgId, draft: &AuditDraft) -> Result<AuditEntry, StoreError> {
        self.append_to(AuditChain::Org(org), draft).await
    }

    async fn append_platform_audit(&self, draft: &AuditDraft) -> Result<AuditEntry, StoreError> {
        self.append_to(AuditChain::Platform, draft).await
    }

    async fn list_audit(
        &self,
        org: OrgId,
        query: &AuditQuery,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.list_in(Some(AuditChain::Org(org)), query).await
    }

    async fn list_platform_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        self.list_in(Some(AuditChain::Platform), query).await
    }

    async fn list_all_audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>, StoreError> {
        self.list_in(None, query).await
    }

    async fn audit_chain(&self, org: OrgId) -> Result<StoredChain, StoreError> {
        self.chain_of(AuditChain::Org(org)).await
    }

    async fn platform_audit_chain(&self) -> Result<StoredChain, StoreError> {
        self.chain_of(AuditChain::Platform).await
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

impl SqliteStore {
    /// A page of `chain` (see [`AuditStore::audit_page`]).
    async fn page_of(
        &self,
        chain: AuditChain,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM audit_log WHERE chain_id = ? AND seq > ? ORDER BY seq LIMIT ?"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(chain.key())
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(entry)
            .collect()
    }
}
