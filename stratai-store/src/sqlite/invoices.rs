//! [`InvoiceStore`] over SQLite: one row per invoice, its lines as JSON. Triggers of the
//! schema refuse any change to an issued invoice but its status along the life cycle.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteRow;
use stratai_core::billing::{InvoiceState, MonthlyInvoice};
use stratai_core::ports::InvoiceStore;
use stratai_core::{InvoiceId, OrgId, StoreError};

use super::audit::commit_change;
use super::{Col, SqliteStore, money, require_org, to_json, ts};
use crate::error::{corrupt, db};
use crate::shared::{self, enum_text};

const COLUMNS: &str = "id, organization_id, month, timezone, period_start, period_end, requests, \
     subtotal, tax_rate, tax, total, line_items, status, corrects, created_at, issued_at, \
     paid_at, voided_at";

fn date(row: &SqliteRow, col: &str) -> Result<NaiveDate, StoreError> {
    let text = row.text(col)?;
    text.parse().map_err(|e| corrupt(col, e))
}

fn invoice(row: &SqliteRow) -> Result<MonthlyInvoice, StoreError> {
    let rate = row.text("tax_rate")?;
    Ok(MonthlyInvoice {
        id: row.uuid("id")?.into(),
        org_id: row.uuid("organization_id")?.into(),
        month: row
            .text("month")?
            .parse()
            .map_err(|e| corrupt("month", e))?,
        timezone: row.text("timezone")?,
        period_start: date(row, "period_start")?,
        period_end: date(row, "period_end")?,
        lines: row.json("line_items")?,
        requests: u64::try_from(row.int("requests")?).map_err(|e| corrupt("requests", e))?,
        subtotal: row.money("subtotal")?,
        tax_rate: rate.parse().map_err(|e| corrupt("tax_rate", e))?,
        tax: row.money("tax")?,
        total: row.money("total")?,
        status: row.variant("status")?,
        corrects: row.opt_uuid("corrects")?.map(Into::into),
        created_at: row.at("created_at")?,
        issued_at: row.opt_at("issued_at")?,
        paid_at: row.opt_at("paid_at")?,
        voided_at: row.opt_at("voided_at")?,
    })
}

async fn of_org(
    conn: &mut SqliteConnection,
    org: OrgId,
) -> Result<Vec<MonthlyInvoice>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM invoices WHERE organization_id = ?");
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(org.as_uuid())
        .fetch_all(&mut *conn)
        .await
        .map_err(db)?
        .iter()
        .map(invoice)
        .collect()
}

#[async_trait]
impl InvoiceStore for SqliteStore {
    async fn put_draft_invoice(
        &self,
        org: OrgId,
        draft: &MonthlyInvoice,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        require_org(&mut tx, org).await?;
        let existing = of_org(&mut tx, org).await?;
        for id in shared::check_invoice_draft(org, &existing, draft)? {
            sqlx::query("DELETE FROM invoices WHERE id = ? AND organization_id = ?")
                .bind(id.as_uuid())
                .bind(org.as_uuid())
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        let d = shared::norm_invoice(draft);
        sqlx::query(
            "INSERT INTO invoices (id, organization_id, month, timezone, period_start,
                 period_end, requests, subtotal, tax_rate, tax, total, line_items, status,
                 corrects, created_at, issued_at, paid_at, voided_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(d.id.as_uuid())
        .bind(org.as_uuid())
        .bind(d.month.to_string())
        .bind(&d.timezone)
        .bind(d.period_start.to_string())
        .bind(d.period_end.to_string())
        .bind(i64::try_from(d.requests).unwrap_or(i64::MAX))
        .bind(money(d.subtotal))
        .bind(d.tax_rate.to_string())
        .bind(money(d.tax))
        .bind(money(d.total))
        .bind(to_json(&d.lines)?)
        .bind(enum_text(&d.status)?)
        .bind(d.corrects.map(|c| c.as_uuid()))
        .bind(ts(d.created_at))
        .bind(d.issued_at.map(ts))
        .bind(d.paid_at.map(ts))
        .bind(d.voided_at.map(ts))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        commit_change(tx, None).await
    }

    async fn get_invoice(&self, org: OrgId, id: InvoiceId) -> Result<MonthlyInvoice, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM invoices WHERE id = ? AND organization_id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_uuid())
            .bind(org.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::not_found("invoice", id))?;
        invoice(&row)
    }

    async fn list_invoices(&self, org: OrgId) -> Result<Vec<MonthlyInvoice>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let mut all = of_org(&mut conn, org).await?;
        shared::sort_invoices(&mut all);
        Ok(all)
    }

    async fn set_invoice_status(
        &self,
        org: OrgId,
        id: InvoiceId,
        to: InvoiceState,
        at: DateTime<Utc>,
    ) -> Result<MonthlyInvoice, StoreError> {
        let mut tx = self.write().await?;
        let sql = format!("SELECT {COLUMNS} FROM invoices WHERE id = ? AND organization_id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_uuid())
            .bind(org.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::not_found("invoice", id))?;
        let next = shared::invoice_transition(&invoice(&row)?, to, at)?;
        sqlx::query(
            "UPDATE invoices SET status = ?, issued_at = ?, paid_at = ?, voided_at = ?
             WHERE id = ? AND organization_id = ?",
        )
        .bind(enum_text(&next.status)?)
        .bind(next.issued_at.map(ts))
        .bind(next.paid_at.map(ts))
        .bind(next.voided_at.map(ts))
        .bind(id.as_uuid())
        .bind(org.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        commit_change(tx, crate::audited::snapshot(&next)).await?;
        Ok(next)
    }
}
