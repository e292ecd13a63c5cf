//! [`InvoiceStore`] on PostgreSQL: a tenant table under row-level security, its lines as
//! JSONB. A trigger of the schema refuses any change to an issued invoice but its status along
//! the life cycle, for every role.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use stratai_core::billing::{InvoiceLineItem, InvoiceState, MonthlyInvoice};
use stratai_core::ports::InvoiceStore;
use stratai_core::{InvoiceId, OrgId, StoreError};
use uuid::Uuid;

use super::PgStore;
use super::audit::commit_change;
use super::rows::{get, money};
use crate::error::{corrupt, db};
use crate::shared::{self, enum_from_text, enum_text};

const COLUMNS: &str = "id, organization_id, month, timezone, period_start, period_end, requests, \
     subtotal, tax_rate, tax, total, line_items, status, corrects, created_at, issued_at, \
     paid_at, voided_at";

fn invoice(row: &PgRow) -> Result<MonthlyInvoice, StoreError> {
    let month: String = get(row, "month")?;
    let requests: i64 = get(row, "requests")?;
    let status: String = get(row, "status")?;
    let Json(lines): Json<Vec<InvoiceLineItem>> = get(row, "line_items")?;
    Ok(MonthlyInvoice {
        id: get::<Uuid>(row, "id")?.into(),
        org_id: get::<Uuid>(row, "organization_id")?.into(),
        month: month.parse().map_err(|e| corrupt("month", e))?,
        timezone: get(row, "timezone")?,
        period_start: get::<NaiveDate>(row, "period_start")?,
        period_end: get::<NaiveDate>(row, "period_end")?,
        lines,
        requests: u64::try_from(requests).map_err(|e| corrupt("requests", e))?,
        subtotal: money(row, "subtotal")?,
        tax_rate: get::<Decimal>(row, "tax_rate")?,
        tax: money(row, "tax")?,
        total: money(row, "total")?,
        status: enum_from_text("status", &status)?,
        corrects: get::<Option<Uuid>>(row, "corrects")?.map(Into::into),
        created_at: get(row, "created_at")?,
        issued_at: get(row, "issued_at")?,
        paid_at: get(row, "paid_at")?,
        voided_at: get(row, "voided_at")?,
    })
}

async fn of_org(conn: &mut PgConnection, org: OrgId) -> Result<Vec<MonthlyInvoice>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM invoices WHERE organization_id = $1 FOR UPDATE");
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
impl InvoiceStore for PgStore {
    async fn put_draft_invoice(
        &self,
        org: OrgId,
        draft: &MonthlyInvoice,
    ) -> Result<(), StoreError> {
        let mut tx = self.tenant(org).await?;
        // The organization's row is locked first, so two drafts of one organization are
        // saved one after the other and the rule sees the other's result.
        let found: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM organizations WHERE id = $1 FOR UPDATE")
                .bind(org.as_uuid())
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
        if found.is_none() {
            return Err(StoreError::not_found("organization", org));
        }
        let existing = of_org(&mut tx, org).await?;
        let replaced: Vec<Uuid> = shared::check_invoice_draft(org, &existing, draft)?
            .into_iter()
            .map(|id| id.as_uuid())
            .collect();
        sqlx::query("DELETE FROM invoices WHERE organization_id = $1 AND id = ANY($2)")
            .bind(org.as_uuid())
            .bind(&replaced)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let d = shared::norm_invoice(draft);
        sqlx::query(
            "INSERT INTO invoices (id, organization_id, month, timezone, period_start,
                 period_end, requests, subtotal, tax_rate, tax, total, line_items, status,
                 corrects, created_at, issued_at, paid_at, voided_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                 $17, $18)",
        )
        .bind(d.id.as_uuid())
        .bind(org.as_uuid())
        .bind(d.month.to_string())
        .bind(&d.timezone)
        .bind(d.period_start)
        .bind(d.period_end)
        .bind(i64::try_from(d.requests).unwrap_or(i64::MAX))
        .bind(d.subtotal.amount())
        .bind(d.tax_rate)
        .bind(d.tax.amount())
        .bind(d.total.amount())
        .bind(Json(&d.lines))
        .bind(enum_text(&d.status)?)
        .bind(d.corrects.map(|c| c.as_uuid()))
        .bind(d.created_at)
        .bind(d.issued_at)
        .bind(d.paid_at)
        .bind(d.voided_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        commit_change(tx, None).await
    }

    async fn get_invoice(&self, org: OrgId, id: InvoiceId) -> Result<MonthlyInvoice, StoreError> {
        let mut tx = self.tenant(org).await?;
        let sql = format!("SELECT {COLUMNS} FROM invoices WHERE id = $1 AND organization_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_uuid())
            .bind(org.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::not_found("invoice", id))?;
        tx.commit().await.map_err(db)?;
        invoice(&row)
    }

    async fn list_invoices(&self, org: OrgId) -> Result<Vec<MonthlyInvoice>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let sql = format!("SELECT {COLUMNS} FROM invoices WHERE organization_id = $1");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org.as_uuid())
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        let mut all = rows.iter().map(invoice).collect::<Result<Vec<_>, _>>()?;
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
        let mut tx = self.tenant(org).await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM invoices WHERE id = $1 AND organization_id = $2 FOR UPDATE"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_uuid())
            .bind(org.as_uuid())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?
            .ok_or_else(|| StoreError::not_found("invoice", id))?;
        let next = shared::invoice_transition(&invoice(&row)?, to, at)?;
        sqlx::query(
            "UPDATE invoices SET status = $1, issued_at = $2, paid_at = $3, voided_at = $4
             WHERE id = $5 AND organization_id = $6",
        )
        .bind(enum_text(&next.status)?)
        .bind(next.issued_at)
        .bind(next.paid_at)
        .bind(next.voided_at)
        .bind(id.as_uuid())
        .bind(org.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        commit_change(tx, crate::audited::snapshot(&next)).await?;
        Ok(next)
    }
}
