#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub,
    dead_code
)]
//! The database's own guard of issued invoices (the triggers of the invoices migration), below
//! the stores: SQL run as the app role on PostgreSQL, or on a raw connection to the SQLite
//! file, cannot change an issued invoice's numbers, move it outside the life cycle or delete
//! it; a draft stays editable and the life cycle's own steps pass.

use stratai_testkit::pg;

#[path = "conformance/fixtures.rs"]
mod fixtures;

use rust_decimal::Decimal;
use stratai_core::OrgId;
use stratai_core::billing::{InvoiceDraft, InvoiceState, MonthlyInvoice, draft_monthly_invoice};
use stratai_core::ports::InvoiceStore;
use stratai_core::tiers::TierCatalog;
use stratai_core::usage::{Dimension, aggregate};

fn draft(org: OrgId, month: &str) -> MonthlyInvoice {
    let records = vec![fixtures::record(
        org,
        stratai_core::UserId::new(),
        fixtures::now(),
        "1.25",
    )];
    let rows = aggregate(&records, &[Dimension::Tier, Dimension::Model]);
    let catalog = TierCatalog::seed_default();
    draft_monthly_invoice(&InvoiceDraft {
        org_id: org,
        month: month.parse().unwrap(),
        tz: chrono_tz::UTC,
        usage: &rows,
        catalog: &catalog,
        tax_rate: Decimal::ZERO,
        corrects: None,
        now: fixtures::now(),
    })
    .unwrap()
}

/// Statements on an issued invoice that must fail, then ones that must pass (`$1`/`?` is the
/// issued invoice's id, `$2`/`?` in the last one a draft's).
const REFUSED: [&str; 5] = [
    "UPDATE invoices SET total = 0 WHERE id = ?",
    "UPDATE invoices SET line_items = '[]' WHERE id = ?",
    "UPDATE invoices SET corrects = NULL, requests = 99 WHERE id = ?",
    "UPDATE invoices SET status = 'draft' WHERE id = ?",
    "DELETE FROM invoices WHERE id = ?",
];

fn pg_sql(sql: &str) -> String {
    sql.replace('?', "$1")
}

#[tokio::test]
async fn postgres_freezes_issued_invoices() {
    let Some(db) = pg::fresh_db().await else {
        return;
    };
    let store = db.store.clone();
    let org = fixtures::org(&store).await;
    let issued = draft(org.id, "2026-01");
    store.put_draft_invoice(org.id, &issued).await.unwrap();
    store
        .set_invoice_status(org.id, issued.id, InvoiceState::Issued, fixtures::now())
        .await
        .unwrap();
    let open = draft(org.id, "2026-02");
    store.put_draft_invoice(org.id, &open).await.unwrap();
    let run = |sql: String, id: uuid::Uuid| {
        let pool = store.pool().clone();
        async move {
            let mut tx = pool.begin().await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SET LOCAL app.current_org_id = '{}'",
                org.id.as_uuid()
            )))
            .execute(&mut *tx)
            .await?;
            let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok::<u64, sqlx::Error>(done.rows_affected())
        }
    };
    for sql in REFUSED {
        let outcome = run(pg_sql(sql), issued.id.as_uuid()).await;
        assert!(outcome.is_err(), "`{sql}` passed: {outcome:?}");
    }
    assert_eq!(
        run(
            pg_sql("UPDATE invoices SET status = 'paid', paid_at = now() WHERE id = ?"),
            issued.id.as_uuid()
        )
        .await
        .unwrap(),
        1
    );
    assert_eq!(
        run(
            pg_sql("UPDATE invoices SET total = 7 WHERE id = ?"),
            open.id.as_uuid()
        )
        .await
        .unwrap(),
        1
    );
    let kept = store.get_invoice(org.id, issued.id).await.unwrap();
    assert_eq!((kept.total, kept.subtotal), (issued.total, issued.subtotal));
    assert_eq!(kept.status, InvoiceState::Paid);
}

#[tokio::test]
async fn sqlite_freezes_issued_invoices() {
    let scratch = stratai_testkit::Scratch::new();
    let url = format!("sqlite://{}", scratch.join("guard.db").display());
    let store = stratai_store::SqliteStore::connect(&url).await.unwrap();
    let org = fixtures::org(&store).await;
    let issued = draft(org.id, "2026-01");
    store.put_draft_invoice(org.id, &issued).await.unwrap();
    store
        .set_invoice_status(org.id, issued.id, InvoiceState::Issued, fixtures::now())
        .await
        .unwrap();
    let open = draft(org.id, "2026-02");
    store.put_draft_invoice(org.id, &open).await.unwrap();
    let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
    for sql in REFUSED {
        let outcome = sqlx::query(sql)
            .bind(issued.id.as_uuid())
            .execute(&raw)
            .await;
        assert!(outcome.is_err(), "`{sql}` passed");
    }
    let paid = sqlx::query("UPDATE invoices SET status = 'paid' WHERE id = ?")
        .bind(issued.id.as_uuid())
        .execute(&raw)
        .await
        .unwrap();
    assert_eq!(paid.rows_affected(), 1);
    let edited = sqlx::query("UPDATE invoices SET total = '7' WHERE id = ?")
        .bind(open.id.as_uuid())
        .execute(&raw)
        .await
        .unwrap();
    assert_eq!(edited.rows_affected(), 1);
    raw.close().await;
    let kept = store.get_invoice(org.id, issued.id).await.unwrap();
    assert_eq!((kept.total, kept.subtotal), (issued.total, issued.subtotal));
    store.close().await;
}
