//! [`BudgetLedger`] on PostgreSQL.
//!
//! Locking discipline (why hard limits hold under any concurrency, without deadlocks):
//! every ledger transaction first takes the request's reservation row (insert or
//! `FOR UPDATE`), then the budget-period rows it touches, one at a time in budget id order.
//! A reservation increments `reserved` with a conditional upsert that refuses when
//! `spent + reserved + amount` would pass a hard limit; the condition is evaluated on the
//! locked, latest row version, so two reservations can never both pass on a stale total.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use stratai_core::budget::{
    Budget, BudgetOutcome, BudgetScope, BudgetState, PeriodWindow, evaluate_budgets,
    implied_budget, implied_budget_id,
};
use stratai_core::ports::{
    BudgetLedger, HeldReservation, ReserveOutcome, ReserveRequest, SettleOutcome,
};
use stratai_core::{BudgetId, InstanceId, Money, OrgId, RequestId, StoreError};
use uuid::Uuid;

use super::audit::commit_change;
use super::rows::{self, get, money};
use super::{PgStore, same_tenant};
use crate::error::db;
use crate::shared::{self, enum_text, micros};

/// A budget-period row as read.
struct PeriodRow {
    end: DateTime<Utc>,
    spent: Money,
    reserved: Money,
    alert_sent: bool,
}

fn state(budget: &Budget, window: PeriodWindow, period: Option<&PeriodRow>) -> BudgetState {
    BudgetState {
        budget: budget.clone(),
        period_start: window.start,
        period_end: period.map_or(window.end, |p| p.end),
        spent: period.map_or(Money::ZERO, |p| p.spent),
        reserved: period.map_or(Money::ZERO, |p| p.reserved),
        alert_sent: period.is_some_and(|p| p.alert_sent),
    }
}

fn period_row(row: &sqlx::postgres::PgRow) -> Result<PeriodRow, StoreError> {
    Ok(PeriodRow {
        end: get(row, "period_end")?,
        spent: money(row, "spent")?,
        reserved: money(row, "reserved")?,
        alert_sent: get(row, "alert_sent")?,
    })
}

/// The budgets with these ids visible in the tenant context.
async fn load_budgets(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<HashMap<BudgetId, Budget>, StoreError> {
    let found = sqlx::query(concat!(
        "SELECT ",
        budget_columns!(),
        " FROM budgets WHERE id = ANY($1)"
    ))
    .bind(ids)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    found
        .iter()
        .map(|row| rows::budget(row).map(|b| (b.id, b)))
        .collect()
}

/// Every id resolved to its budget, in the given order; not found for the first missing.
fn resolve(
    budgets: &HashMap<BudgetId, Budget>,
    ids: impl IntoIterator<Item = BudgetId>,
) -> Result<Vec<Budget>, StoreError> {
    ids.into_iter()
        .map(|id| {
            budgets
                .get(&id)
                .cloned()
                .ok_or_else(|| StoreError::not_found("budget", id))
        })
        .collect()
}

/// The period rows of `(budget, start)` pairs that exist.
async fn load_periods(
    conn: &mut PgConnection,
    keys: &[(BudgetId, DateTime<Utc>)],
) -> Result<HashMap<(BudgetId, DateTime<Utc>), PeriodRow>, StoreError> {
    let ids: Vec<Uuid> = keys.iter().map(|(b, _)| b.as_uuid()).collect();
    let starts: Vec<DateTime<Utc>> = keys.iter().map(|(_, s)| *s).collect();
    let found = sqlx::query(
        "SELECT p.budget_id, p.period_start, p.period_end, p.spent, p.reserved, p.alert_sent
         FROM budget_periods p
         JOIN unnest($1::uuid[], $2::timestamptz[]) AS k(budget_id, period_start)
           ON p.budget_id = k.budget_id AND p.period_start = k.period_start",
    )
    .bind(&ids)
    .bind(&starts)
    .fetch_all(conn)
    .await
    .map_err(db)?;
    found
        .iter()
        .map(|row| {
            let id: Uuid = get(row, "budget_id")?;
            let start: DateTime<Utc> = get(row, "period_start")?;
            Ok(((BudgetId::from_uuid(id), start), period_row(row)?))
        })
        .collect()
}

/// The states of a recorded reservation's budgets, in budget id order.
async fn reservation_states(
    conn: &mut PgConnection,
    org: OrgId,
    request: RequestId,
) -> Result<Vec<BudgetState>, StoreError> {
    let items = reservation_items(conn, org, request).await?;
    let ids: Vec<Uuid> = items.iter().map(|(b, _)| b.as_uuid()).collect();
    let budgets = load_budgets(conn, &ids).await?;
    let keys: Vec<(BudgetId, DateTime<Utc>)> = items.iter().map(|(b, w)| (*b, w.start)).collect();
    let periods = load_periods(conn, &keys).await?;
    Ok(items
        .iter()
        .filter_map(|key| {
            budgets
                .get(&key.0)
                .map(|b| state(b, key.1, periods.get(&(key.0, key.1.start))))
        })
        .collect())
}

async fn reservation_items(
    conn: &mut PgConnection,
    org: OrgId,
    request: RequestId,
) -> Result<Vec<(BudgetId, PeriodWindow)>, StoreError> {
    let found = sqlx::query(
        "SELECT i.budget_id, p.period_start, p.period_end
         FROM budget_reservation_items i
         JOIN budget_periods p ON p.budget_id = i.budget_id AND p.period_start = i.period_start
         WHERE i.organization_id = $1 AND i.request_id = $2 ORDER BY i.budget_id",
    )
    .bind(org.as_uuid())
    .bind(request.as_uuid())
    .fetch_all(conn)
    .await
    .map_err(db)?;
    found
        .iter()
        .map(|row| {
            let id: Uuid = get(row, "budget_id")?;
            let window = PeriodWindow {
                start: get(row, "period_start")?,
                end: get(row, "period_end")?,
            };
            Ok((BudgetId::from_uuid(id), window))
        })
        .collect()
}

async fn insert_items(
    conn: &mut PgConnection,
    org: OrgId,
    request: RequestId,
    items: &[(BudgetId, PeriodWindow)],
) -> Result<(), StoreError> {
    let ids: Vec<Uuid> = items.iter().map(|(b, _)| b.as_uuid()).collect();
    let starts: Vec<DateTime<Utc>> = items.iter().map(|(_, w)| w.start).collect();
    sqlx::query(
        "INSERT INTO budget_reservation_items (organization_id, request_id, budget_id, period_start)
         SELECT $1, $2, k.budget_id, k.period_start
         FROM unnest($3::uuid[], $4::timestamptz[]) AS k(budget_id, period_start)",
    )
    .bind(org.as_uuid())
    .bind(request.as_uuid())
    .bind(&ids)
    .bind(&starts)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// The reservation row of a request, locked: `(amount, status, settled amount)`.
async fn lock_reservation(
    conn: &mut PgConnection,
    org: OrgId,
    request: RequestId,
) -> Result<Option<(Money, String, Money)>, StoreError> {
    let row = sqlx::query(
        "SELECT amount, status, coalesce(settled_amount, 0) AS settled FROM budget_reservations
         WHERE organization_id = $1 AND request_id = $2 FOR UPDATE",
    )
    .bind(org.as_uuid())
    .bind(request.as_uuid())
    .fetch_optional(conn)
    .await
    .map_err(db)?;
    row.map(|row| {
        Ok((
            money(&row, "amount")?,
            get(&row, "status")?,
            money(&row, "settled")?,
        ))
    })
    .transpose()
}

/// The organization's timezone for budget periods (UTC when unset).
async fn org_tz(conn: &mut PgConnection, org: OrgId) -> Result<chrono_tz::Tz, StoreError> {
    let name: Option<Option<String>> =
        sqlx::query_scalar("SELECT settings->>'timezone' FROM organizations WHERE id = $1")
            .bind(org.as_uuid())
            .fetch_optional(conn)
            .await
            .map_err(db)?;
    Ok(name
        .flatten()
        .and_then(|n| n.parse().ok())
        .unwrap_or(chrono_tz::UTC))
}

/// Checks what a budget's scope names exists in the tenant.
async fn check_scope(
    conn: &mut PgConnection,
    org: OrgId,
    budget: &Budget,
) -> Result<(), StoreError> {
    let row = sqlx::query(
        "SELECT EXISTS (SELECT 1 FROM organizations WHERE id = $1) AS org,
                ($2::uuid IS NULL OR EXISTS (SELECT 1 FROM groups WHERE id = $2)) AS grp,
                ($3::uuid IS NULL OR EXISTS (SELECT 1 FROM org_memberships WHERE user_id = $3)) AS mem,
                ($4::uuid IS NULL OR EXISTS (SELECT 1 FROM model_tiers WHERE id = $4)) AS tier",
    )
    .bind(org.as_uuid())
    .bind(match budget.scope {
        BudgetScope::Group(g) => Some(g.as_uuid()),
        _ => None,
    })
    .bind(match budget.scope {
        BudgetScope::User(u) => Some(u.as_uuid()),
        _ => None,
    })
    .bind(match budget.scope {
        BudgetScope::Tier(t) => Some(t.as_uuid()),
        _ => None,
    })
    .fetch_one(conn)
    .await
    .map_err(db)?;
    if !get::<bool>(&row, "org")? {
        return Err(StoreError::not_found("organization", org));
    }
    match budget.scope {
        BudgetScope::Group(g) if !get::<bool>(&row, "grp")? => {
            Err(StoreError::not_found("group", g))
        }
        BudgetScope::User(u) if !get::<bool>(&row, "mem")? => {
            Err(StoreError::not_found("membership", u))
        }
        BudgetScope::Tier(t) if !get::<bool>(&row, "tier")? => {
            Err(StoreError::not_found("tier", t))
        }
        _ => Ok(()),
    }
}

impl PgStore {
    async fn try_reserve(
        &self,
        org: OrgId,
        request: &ReserveRequest,
    ) -> Result<ReserveOutcome, StoreError> {
        let mut tx = self.tenant(org).await?;
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM budget_reservations
                            WHERE organization_id = $1 AND request_id = $2)",
        )
        .bind(org.as_uuid())
        .bind(request.request_id.as_uuid())
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        if exists {
            let states = reservation_states(&mut tx, org, request.request_id).await?;
            tx.commit().await.map_err(db)?;
            return Ok(ReserveOutcome::Reserved(states));
        }
        // Fixed order (by id), no duplicates: the order every ledger transaction locks in.
        let ids: BTreeSet<BudgetId> = request.budgets.iter().copied().collect();
        let uuids: Vec<Uuid> = ids.iter().map(|b| b.as_uuid()).collect();
        let budgets = resolve(&load_budgets(&mut tx, &uuids).await?, ids.iter().copied())?;
        let tz = org_tz(&mut tx, org).await?;
        // The reservation row first: a concurrent reservation of the same request waits here
        // and then sees this one.
        let inserted = sqlx::query(
            "INSERT INTO budget_reservations
                 (organization_id, request_id, amount, status, expires_at, holder)
             VALUES ($1, $2, $3, 'active', $4, $5)
             ON CONFLICT (organization_id, request_id) DO NOTHING",
        )
        .bind(org.as_uuid())
        .bind(request.request_id.as_uuid())
        .bind(request.amount.amount())
        .bind(micros(request.expires_at))
        .bind(request.holder.map(|h| h.as_uuid()))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if inserted.rows_affected() == 0 {
            let states = reservation_states(&mut tx, org, request.request_id).await?;
            tx.commit().await.map_err(db)?;
            return Ok(ReserveOutcome::Reserved(states));
        }
        let mut states = Vec::with_capacity(budgets.len());
        let mut items = Vec::with_capacity(budgets.len());
        for budget in &budgets {
            let window = budget.period.window(request.now, tz);
            let row = sqlx::query(
                "INSERT INTO budget_periods
                     (organization_id, budget_id, period_start, period_end, reserved)
                 SELECT $1::uuid, $2::uuid, $3::timestamptz, $4::timestamptz, $5::numeric
                 WHERE NOT $6::bool OR $5::numeric <= $7::numeric
                 ON CONFLICT (budget_id, period_start) DO UPDATE
                     SET reserved = budget_periods.reserved + EXCLUDED.reserved
                     WHERE NOT $6::bool
                        OR budget_periods.spent + budget_periods.reserved + EXCLUDED.reserved
                           <= $7::numeric
                 RETURNING period_end, spent, reserved, alert_sent",
            )
            .bind(org.as_uuid())
            .bind(budget.id.as_uuid())
            .bind(window.start)
            .bind(window.end)
            .bind(request.amount.amount())
            .bind(budget.hard_limit)
            .bind(budget.limit.amount())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            match row {
                Some(row) => {
                    let period = period_row(&row)?;
                    states.push(state(budget, window, Some(&period)));
                    items.push((budget.id, window));
                }
                None => {
                    tx.rollback().await.map_err(db)?;
                    return self.refusal(org, &ids, budget, request).await;
                }
            }
        }
        insert_items(&mut tx, org, request.request_id, &items).await?;
        tx.commit().await.map_err(db)?;
        Ok(ReserveOutcome::Reserved(states))
    }

    /// The refusal of a reservation that a hard budget refused: the budgets' states are read
    /// afresh and core's decider names the refusing budget (the one with the least room), as
    /// every backend does; should room have appeared meanwhile, the budget that refused is
    /// reported with its current state.
    async fn refusal(
        &self,
        org: OrgId,
        ids: &BTreeSet<BudgetId>,
        refused: &Budget,
        request: &ReserveRequest,
    ) -> Result<ReserveOutcome, StoreError> {
        let ids: Vec<BudgetId> = ids.iter().copied().collect();
        let states = self.states(org, &ids, request.now).await?;
        if let BudgetOutcome::Deny { refusal } = evaluate_budgets(&states, request.amount).outcome {
            return Ok(ReserveOutcome::Refused(refusal));
        }
        let (spent, reserved) = states
            .iter()
            .find(|s| s.budget.id == refused.id)
            .map_or((Money::ZERO, Money::ZERO), |s| (s.spent, s.reserved));
        Ok(ReserveOutcome::Refused(
            stratai_core::budget::BudgetRefusal {
                budget_id: refused.id,
                scope: refused.scope,
                limit: refused.limit,
                remaining: refused.limit.saturating_sub(spent + reserved),
                requested: request.amount,
            },
        ))
    }

    /// One attempt of [`BudgetLedger::settle`], or with `total` of
    /// [`BudgetLedger::settle_total`] (a settled reservation is charged what `actual` adds
    /// to its settlement); `None` when a concurrent first write of the request won.
    async fn try_settle(
        &self,
        org: OrgId,
        request_id: RequestId,
        budgets: &[BudgetId],
        actual: Money,
        now: DateTime<Utc>,
        total: bool,
    ) -> Result<Option<SettleOutcome>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let mut charge = actual;
        let (items, unreserve, record_items) =
            match lock_reservation(&mut tx, org, request_id).await? {
                Some((_, status, settled)) if status == "settled" => {
                    if !total || actual <= settled {
                        tx.commit().await.map_err(db)?;
                        return Ok(Some(SettleOutcome::default()));
                    }
                    // Records the first settlement did not see: charged after the fact.
                    charge = actual.saturating_sub(settled);
                    sqlx::query(
                        "UPDATE budget_reservations SET settled_amount = $3
                         WHERE organization_id = $1 AND request_id = $2",
                    )
                    .bind(org.as_uuid())
                    .bind(request_id.as_uuid())
                    .bind(actual.amount())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                    (
                        reservation_items(&mut tx, org, request_id).await?,
                        Money::ZERO,
                        false,
                    )
                }
                Some((amount, status, _)) => {
                    sqlx::query(
                        "UPDATE budget_reservations SET status = 'settled', settled_amount = $3
                     WHERE organization_id = $1 AND request_id = $2",
                    )
                    .bind(org.as_uuid())
                    .bind(request_id.as_uuid())
                    .bind(actual.amount())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                    let unreserve = if status == "active" {
                        amount
                    } else {
                        Money::ZERO
                    };
                    (
                        reservation_items(&mut tx, org, request_id).await?,
                        unreserve,
                        false,
                    )
                }
                None => {
                    let ids: BTreeSet<BudgetId> = budgets.iter().copied().collect();
                    let uuids: Vec<Uuid> = ids.iter().map(|b| b.as_uuid()).collect();
                    let found = resolve(&load_budgets(&mut tx, &uuids).await?, ids)?;
                    let tz = org_tz(&mut tx, org).await?;
                    // The settlement record (no reservation: amount 0), the idempotency key.
                    let inserted = sqlx::query(
                        "INSERT INTO budget_reservations
                         (organization_id, request_id, amount, status, expires_at, settled_amount)
                     VALUES ($1, $2, 0, 'settled', $3, $4)
                     ON CONFLICT (organization_id, request_id) DO NOTHING",
                    )
                    .bind(org.as_uuid())
                    .bind(request_id.as_uuid())
                    .bind(micros(now))
                    .bind(actual.amount())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                    if inserted.rows_affected() == 0 {
                        // A concurrent reserve or settle of this request won: start over.
                        tx.rollback().await.map_err(db)?;
                        return Ok(None);
                    }
                    let items = found
                        .iter()
                        .map(|b| (b.id, b.period.window(now, tz)))
                        .collect();
                    (items, Money::ZERO, true)
                }
            };
        let ids: Vec<Uuid> = items.iter().map(|(b, _)| b.as_uuid()).collect();
        let defs = load_budgets(&mut tx, &ids).await?;
        let mut alerts = Vec::new();
        for (budget_id, window) in &items {
            // A budget deleted since the reservation has nothing left to charge.
            let Some(budget) = defs.get(budget_id) else {
                continue;
            };
            // Creates the period when missing and locks it either way.
            let row = sqlx::query(
                "INSERT INTO budget_periods (organization_id, budget_id, period_start, period_end)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (budget_id, period_start) DO UPDATE SET spent = budget_periods.spent
                 RETURNING period_end, spent, reserved, alert_sent",
            )
            .bind(org.as_uuid())
            .bind(budget_id.as_uuid())
            .bind(window.start)
            .bind(window.end)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?;
            let period = period_row(&row)?;
            let spent = period.spent + charge;
            let reserved = period.reserved.saturating_sub(unreserve);
            let due = shared::alert_due(budget, spent, period.alert_sent);
            sqlx::query(
                "UPDATE budget_periods SET spent = $3, reserved = $4,
                     alert_sent = alert_sent OR $5,
                     alert_sent_at = CASE WHEN $5 THEN now() ELSE alert_sent_at END
                 WHERE budget_id = $1 AND period_start = $2",
            )
            .bind(budget_id.as_uuid())
            .bind(window.start)
            .bind(spent.amount())
            .bind(reserved.amount())
            .bind(due)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            if due {
                alerts.push(shared::alert(budget, window.start, spent));
            }
        }
        if record_items {
            // Without a reservation the settlement records its items once the periods exist.
            insert_items(&mut tx, org, request_id, &items).await?;
        }
        tx.commit().await.map_err(db)?;
        Ok(Some(SettleOutcome {
            applied: true,
            alerts,
        }))
    }
}

impl PgStore {
    /// [`PgStore::try_settle`] until no concurrent first write of the request interferes
    /// (at most a few rounds: only such a write restarts it).
    async fn settle_rounds(
        &self,
        org: OrgId,
        request_id: RequestId,
        budgets: &[BudgetId],
        actual: Money,
        now: DateTime<Utc>,
        total: bool,
    ) -> Result<SettleOutcome, StoreError> {
        for _ in 0..5 {
            if let Some(outcome) = self
                .try_settle(org, request_id, budgets, actual, now, total)
                .await?
            {
                return Ok(outcome);
            }
        }
        Err(StoreError::Conflict(format!(
            "request `{request_id}` is being settled concurrently"
        )))
    }
}

/// Keeps the budget a `monthly_budget` field implies in step with the field, in the caller's
/// transaction: created or its limit updated when `limit` is set, deleted (with its periods)
/// when it is cleared.
pub(super) async fn put_implied_budget(
    conn: &mut PgConnection,
    org: OrgId,
    scope: BudgetScope,
    limit: Option<Money>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let Some(limit) = limit else {
        sqlx::query("DELETE FROM budgets WHERE organization_id = $1 AND id = $2")
            .bind(org.as_uuid())
            .bind(implied_budget_id(org, scope).as_uuid())
            .execute(conn)
            .await
            .map_err(db)?;
        return Ok(());
    };
    let budget = implied_budget(org, scope, limit, micros(now));
    let (scope_type, scope_id) = rows::budget_scope_columns(org, &budget.scope);
    sqlx::query(concat!(
        "INSERT INTO budgets (",
        budget_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (id) DO UPDATE SET limit_amount = EXCLUDED.limit_amount,
             updated_at = EXCLUDED.updated_at
         WHERE budgets.limit_amount <> EXCLUDED.limit_amount"
    ))
    .bind(budget.id.as_uuid())
    .bind(org.as_uuid())
    .bind(scope_type)
    .bind(scope_id)
    .bind(budget.limit.amount())
    .bind(enum_text(&budget.period)?)
    .bind(budget.alert_threshold)
    .bind(budget.hard_limit)
    .bind(budget.created_at)
    .bind(budget.updated_at)
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

#[async_trait]
impl BudgetLedger for PgStore {
    async fn create_budget(&self, org: OrgId, budget: &Budget) -> Result<(), StoreError> {
        budget.validate()?;
        same_tenant(org, budget.org_id, "budget")?;
        let mut tx = self.tenant(org).await?;
        check_scope(&mut tx, org, budget).await?;
        let (scope_type, scope_id) = rows::budget_scope_columns(org, &budget.scope);
        sqlx::query(concat!(
            "INSERT INTO budgets (",
            budget_columns!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ))
        .bind(budget.id.as_uuid())
        .bind(org.as_uuid())
        .bind(scope_type)
        .bind(scope_id)
        .bind(budget.limit.amount())
        .bind(enum_text(&budget.period)?)
        .bind(budget.alert_threshold)
        .bind(budget.hard_limit)
        .bind(micros(budget.created_at))
        .bind(micros(budget.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        commit_change(tx, None).await
    }

    async fn get_budget(&self, org: OrgId, budget: BudgetId) -> Result<Budget, StoreError> {
        let mut tx = self.tenant(org).await?;
        let row = sqlx::query(concat!(
            "SELECT ",
            budget_columns!(),
            " FROM budgets WHERE organization_id = $1 AND id = $2"
        ))
        .bind(org.as_uuid())
        .bind(budget.as_uuid())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::not_found("budget", budget))?;
        tx.commit().await.map_err(db)?;
        rows::budget(&row)
    }

    async fn list_budgets(&self, org: OrgId) -> Result<Vec<Budget>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let found = sqlx::query(concat!(
            "SELECT ",
            budget_columns!(),
            " FROM budgets WHERE organization_id = $1 ORDER BY id"
        ))
        .bind(org.as_uuid())
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        found.iter().map(rows::budget).collect()
    }

    async fn update_budget(&self, org: OrgId, budget: &Budget) -> Result<(), StoreError> {
        budget.validate()?;
        same_tenant(org, budget.org_id, "budget")?;
        let mut tx = self.tenant(org).await?;
        // The scope and creation time are fixed; the rest is replaced.
        let done = sqlx::query(
            "UPDATE budgets SET limit_amount = $3, limit_period = $4, alert_threshold = $5,
                 hard_limit = $6, updated_at = $7
             WHERE organization_id = $1 AND id = $2",
        )
        .bind(org.as_uuid())
        .bind(budget.id.as_uuid())
        .bind(budget.limit.amount())
        .bind(enum_text(&budget.period)?)
        .bind(budget.alert_threshold)
        .bind(budget.hard_limit)
        .bind(micros(budget.updated_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("budget", budget.id));
        }
        commit_change(tx, None).await
    }

    async fn delete_budget(&self, org: OrgId, budget: BudgetId) -> Result<(), StoreError> {
        let mut tx = self.tenant(org).await?;
        // Periods and reservation items go with it (ON DELETE CASCADE).
        let done = sqlx::query("DELETE FROM budgets WHERE organization_id = $1 AND id = $2")
            .bind(org.as_uuid())
            .bind(budget.as_uuid())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("budget", budget));
        }
        commit_change(tx, None).await
    }

    async fn states(
        &self,
        org: OrgId,
        budgets: &[BudgetId],
        now: DateTime<Utc>,
    ) -> Result<Vec<BudgetState>, StoreError> {
        let mut tx = self.tenant(org).await?;
        let uuids: Vec<Uuid> = budgets.iter().map(|b| b.as_uuid()).collect();
        let found = resolve(
            &load_budgets(&mut tx, &uuids).await?,
            budgets.iter().copied(),
        )?;
        let tz = org_tz(&mut tx, org).await?;
        let windows: Vec<PeriodWindow> = found.iter().map(|b| b.period.window(now, tz)).collect();
        let keys: Vec<(BudgetId, DateTime<Utc>)> = found
            .iter()
            .zip(&windows)
            .map(|(b, w)| (b.id, w.start))
            .collect();
        let periods = load_periods(&mut tx, &keys).await?;
        tx.commit().await.map_err(db)?;
        Ok(found
            .iter()
            .zip(windows)
            .map(|(b, w)| state(b, w, periods.get(&(b.id, w.start))))
            .collect())
    }

    async fn reserve(
        &self,
        org: OrgId,
        request: &ReserveRequest,
    ) -> Result<ReserveOutcome, StoreError> {
        self.try_reserve(org, request).await
    }

    async fn settle(
        &self,
        org: OrgId,
        request_id: RequestId,
        budgets: &[BudgetId],
        actual: Money,
        now: DateTime<Utc>,
    ) -> Result<SettleOutcome, StoreError> {
        self.settle_rounds(org, request_id, budgets, actual, now, false)
            .await
    }

    async fn settle_total(
        &self,
        org: OrgId,
        request_id: RequestId,
        budgets: &[BudgetId],
        total: Money,
        now: DateTime<Utc>,
    ) -> Result<SettleOutcome, StoreError> {
        self.settle_rounds(org, request_id, budgets, total, now, true)
            .await
    }

    async fn beat(&self, instance: InstanceId, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query("SELECT stratai_instance_beat($1, $2)")
            .bind(instance.as_uuid())
            .bind(micros(now))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn retire_instance(&self, instance: InstanceId) -> Result<(), StoreError> {
        sqlx::query("SELECT stratai_instance_retire($1)")
            .bind(instance.as_uuid())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn abandoned_leases(
        &self,
        dead_before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<HeldReservation>, StoreError> {
        let found = sqlx::query("SELECT * FROM stratai_abandoned_leases($1, $2)")
            .bind(dead_before)
            .bind(i32::try_from(limit).unwrap_or(i32::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        found
            .iter()
            .map(|row| {
                let budgets: Vec<Uuid> = get(row, "o_budgets")?;
                Ok(HeldReservation {
                    org: get::<Uuid>(row, "o_org")?.into(),
                    request_id: get::<Uuid>(row, "o_request")?.into(),
                    budgets: budgets.into_iter().map(BudgetId::from_uuid).collect(),
                    holder: get::<Uuid>(row, "o_holder")?.into(),
                    created_at: get(row, "o_created")?,
                })
            })
            .collect()
    }

    async fn release(&self, org: OrgId, request_id: RequestId) -> Result<(), StoreError> {
        let mut tx = self.tenant(org).await?;
        let Some((amount, status, _)) = lock_reservation(&mut tx, org, request_id).await? else {
            return tx.commit().await.map_err(db);
        };
        if status != "active" {
            return tx.commit().await.map_err(db);
        }
        sqlx::query(
            "UPDATE budget_reservations SET status = 'released'
             WHERE organization_id = $1 AND request_id = $2",
        )
        .bind(org.as_uuid())
        .bind(request_id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        for (budget_id, window) in reservation_items(&mut tx, org, request_id).await? {
            sqlx::query(
                "UPDATE budget_periods SET reserved = GREATEST(reserved - $3, 0)
                 WHERE budget_id = $1 AND period_start = $2",
            )
            .bind(budget_id.as_uuid())
            .bind(window.start)
            .bind(amount.amount())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn reclaim_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let reclaimed: i64 = sqlx::query_scalar("SELECT stratai_reclaim_expired($1)")
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(u64::try_from(reclaimed).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_period_reads_as_zero_in_its_window() {
        let budget = Budget {
            id: BudgetId::new(),
            org_id: OrgId::new(),
            scope: BudgetScope::Org,
            limit: Money::dollars(10),
            period: stratai_core::budget::BudgetPeriod::Monthly,
            hard_limit: true,
            alert_threshold: rust_decimal::Decimal::new(8, 1),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let start: DateTime<Utc> = "2026-02-01T00:00:00Z".parse().unwrap();
        let s = state(&budget, budget.period.window(start, chrono_tz::UTC), None);
        assert_eq!(s.spent, Money::ZERO);
        assert_eq!(s.reserved, Money::ZERO);
        assert_eq!(
            s.period_end,
            "2026-03-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }
}
