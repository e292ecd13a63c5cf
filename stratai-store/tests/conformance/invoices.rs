//! InvoiceStore: drafts saved and replaced within their month, the life cycle, corrections,
//! tenancy.

use chrono::Duration;
use rust_decimal::Decimal;
use stratai_core::billing::{
    BillingMonth, InvoiceDraft, InvoiceState, MonthlyInvoice, draft_monthly_invoice,
};
use stratai_core::tiers::TierCatalog;
use stratai_core::usage::{Dimension, aggregate};
use stratai_core::{InvoiceId, OrgId};

use super::fixtures::*;

/// A draft of `org` for `month` over two records (billed 1.25 and 0.000001).
fn draft(org: OrgId, month: &str, corrects: Option<InvoiceId>) -> MonthlyInvoice {
    let user = stratai_core::UserId::new();
    let records = vec![
        record(org, user, now(), "1.25"),
        record(org, user, now(), "0.000001"),
    ];
    let rows = aggregate(&records, &[Dimension::Tier, Dimension::Model]);
    let catalog = TierCatalog::seed_default();
    draft_monthly_invoice(&InvoiceDraft {
        org_id: org,
        month: month.parse::<BillingMonth>().unwrap(),
        tz: chrono_tz::UTC,
        usage: &rows,
        catalog: &catalog,
        tax_rate: Decimal::new(2, 1),
        corrects,
        now: now() + Duration::nanoseconds(123_456_789),
    })
    .unwrap()
}

pub async fn invoice_draft_issue_pay_round_trip<S: Store>(store: S) {
    let o = org(&store).await;
    let d = draft(o.id, "2026-01", None);
    store.put_draft_invoice(o.id, &d).await.unwrap();
    let got = store.get_invoice(o.id, d.id).await.unwrap();
    // Amounts exact, lines intact, time to the microsecond.
    assert_eq!(got.subtotal, money("1.250001"));
    assert_eq!(got.tax, money("0.25"));
    assert_eq!(got.total, money("1.5"));
    assert_eq!(got.tax_rate, Decimal::new(2, 1));
    assert_eq!(got.lines, d.lines);
    assert_eq!(got.created_at, now() + Duration::microseconds(123_456));
    assert_eq!(got.month.to_string(), "2026-01");
    assert_eq!(got.timezone, "UTC");

    let issued_at = now() + Duration::hours(1);
    let issued = store
        .set_invoice_status(o.id, d.id, InvoiceState::Issued, issued_at)
        .await
        .unwrap();
    assert_eq!(issued.status, InvoiceState::Issued);
    assert_eq!(issued.issued_at, Some(issued_at));
    let paid = store
        .set_invoice_status(
            o.id,
            d.id,
            InvoiceState::Paid,
            issued_at + Duration::days(3),
        )
        .await
        .unwrap();
    assert_eq!(store.get_invoice(o.id, d.id).await.unwrap(), paid);
    // Everything but the status and its times is what was drafted.
    assert_eq!(
        MonthlyInvoice {
            status: InvoiceState::Draft,
            issued_at: None,
            paid_at: None,
            ..paid.clone()
        },
        got
    );
    let other = draft(o.id, "2026-02", None);
    store.put_draft_invoice(o.id, &other).await.unwrap();
    let listed: Vec<InvoiceId> = store
        .list_invoices(o.id)
        .await
        .unwrap()
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(listed, vec![other.id, d.id], "newest month first");
}

pub async fn invoice_drafts_replace_and_corrections<S: Store>(store: S) {
    let o = org(&store).await;
    let first = draft(o.id, "2026-01", None);
    store.put_draft_invoice(o.id, &first).await.unwrap();
    // A second draft of the month replaces the first.
    let second = draft(o.id, "2026-01", None);
    store.put_draft_invoice(o.id, &second).await.unwrap();
    assert_not_found(store.get_invoice(o.id, first.id).await);
    assert_eq!(store.list_invoices(o.id).await.unwrap().len(), 1);
    // Saving the same id twice is a conflict.
    assert_conflict(store.put_draft_invoice(o.id, &second).await);

    store
        .set_invoice_status(o.id, second.id, InvoiceState::Issued, now())
        .await
        .unwrap();
    // The month is invoiced: a new draft must name the invoice it corrects.
    assert_conflict(
        store
            .put_draft_invoice(o.id, &draft(o.id, "2026-01", None))
            .await,
    );
    assert_conflict(
        store
            .put_draft_invoice(o.id, &draft(o.id, "2026-01", Some(InvoiceId::new())))
            .await,
    );
    // A correction of another month's invoice is refused too.
    assert_conflict(
        store
            .put_draft_invoice(o.id, &draft(o.id, "2026-03", Some(second.id)))
            .await,
    );
    let correction = draft(o.id, "2026-01", Some(second.id));
    store.put_draft_invoice(o.id, &correction).await.unwrap();
    // The issued invoice is untouched by its correction.
    let kept = store.get_invoice(o.id, second.id).await.unwrap();
    assert_eq!(kept.status, InvoiceState::Issued);
    assert_eq!(kept.subtotal, second.subtotal);
    assert_eq!(
        store
            .get_invoice(o.id, correction.id)
            .await
            .unwrap()
            .corrects,
        Some(second.id)
    );
    // Only drafts are saved as new.
    let mut issued = draft(o.id, "2026-04", None);
    issued.status = InvoiceState::Issued;
    assert_invalid(store.put_draft_invoice(o.id, &issued).await);
}

pub async fn invoice_life_cycle_refusals<S: Store>(store: S) {
    let o = org(&store).await;
    let d = draft(o.id, "2026-01", None);
    store.put_draft_invoice(o.id, &d).await.unwrap();
    assert_conflict(
        store
            .set_invoice_status(o.id, d.id, InvoiceState::Paid, now())
            .await,
    );
    store
        .set_invoice_status(o.id, d.id, InvoiceState::Issued, now())
        .await
        .unwrap();
    assert_conflict(
        store
            .set_invoice_status(o.id, d.id, InvoiceState::Draft, now())
            .await,
    );
    store
        .set_invoice_status(o.id, d.id, InvoiceState::Void, now())
        .await
        .unwrap();
    for to in [
        InvoiceState::Draft,
        InvoiceState::Issued,
        InvoiceState::Paid,
        InvoiceState::Void,
    ] {
        assert_conflict(store.set_invoice_status(o.id, d.id, to, now()).await);
    }
    assert_not_found(
        store
            .set_invoice_status(o.id, InvoiceId::new(), InvoiceState::Issued, now())
            .await,
    );
    assert_not_found(
        store
            .put_draft_invoice(OrgId::new(), &draft(OrgId::new(), "2026-01", None))
            .await,
    );
}

pub async fn invoice_cross_tenant<S: Store>(store: S) {
    let a = org(&store).await;
    let b = org(&store).await;
    let d = draft(a.id, "2026-01", None);
    store.put_draft_invoice(a.id, &d).await.unwrap();
    assert_not_found(store.get_invoice(b.id, d.id).await);
    assert!(store.list_invoices(b.id).await.unwrap().is_empty());
    assert_not_found(
        store
            .set_invoice_status(b.id, d.id, InvoiceState::Issued, now())
            .await,
    );
    assert_tenant_mismatch(
        store
            .put_draft_invoice(b.id, &draft(a.id, "2026-02", None))
            .await,
    );
    assert_eq!(
        store.get_invoice(a.id, d.id).await.unwrap().status,
        InvoiceState::Draft
    );
}
