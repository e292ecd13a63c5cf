//! Budgets and the atomic ledger over SQLite.
//!
//! Every ledger write runs in one `BEGIN IMMEDIATE` transaction: it holds SQLite's single
//! write lock from its first read, so the checks it makes (spent + reserved + amount within
//! every hard limit) still hold when it writes. Money is exact decimal text, added in Rust.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use sqlx::SqliteConnection;
use sqlx::sqlite::SqliteRow;
use stratai_core::budget::{
    Budget, BudgetOutcome, BudgetScope, BudgetState, PeriodWindow, evaluate_budgets,
    implied_budget, implied_budget_id,
};
use stratai_core::directory::OrgSettings;
use stratai_core::ports::{
    BudgetLedger, HeldReservation, ReserveOutcome, ReserveRequest, SettleOutcome,
};
use stratai_core::{
    BudgetId, GroupId, InstanceId, Money, OrgId, RequestId, StoreError, TierId, UserId,
};
use uuid::Uuid;

use super::audit::commit_change;
use super::{
    Col, SqliteStore, TIER_EXISTS, money, parse_ts, require_group, require_member, require_org,
    require_row, tenant, ts,
};
use crate::error::{corrupt, db};
use crate::shared::{self, enum_text, micros};

fn scope_columns(org: OrgId, scope: BudgetScope) -> (&'static str, Uuid) {
    match scope {
        BudgetScope::Org => ("org", org.as_uuid()),
        BudgetScope::Group(id) => ("group", id.as_uuid()),
        BudgetScope::User(id) => ("user", id.as_uuid()),
        BudgetScope::Tier(id) => ("tier", id.as_uuid()),
    }
}

fn budget_from_row(row: &SqliteRow) -> Result<Budget, StoreError> {
    let scope_id = row.uuid("scope_id")?;
    let scope = match row.text("scope_type")?.as_str() {
        "org" => BudgetScope::Org,
        "group" => BudgetScope::Group(GroupId::from_uuid(scope_id)),
        "user" => BudgetScope::User(UserId::from_uuid(scope_id)),
        "tier" => BudgetScope::Tier(TierId::from_uuid(scope_id)),
        other => return Err(corrupt("budget scope", format!("`{other}`"))),
    };
    let threshold = row.text("alert_threshold")?;
    Ok(Budget {
        id: BudgetId::from_uuid(row.uuid("id")?),
        org_id: OrgId::from_uuid(row.uuid("organization_id")?),
        scope,
        limit: row.money("limit_amount")?,
        period: row.variant("limit_period")?,
        hard_limit: row.flag("hard_limit")?,
        alert_threshold: threshold
            .parse()
            .map_err(|err| corrupt("alert_threshold", format!("`{threshold}`: {err}")))?,
        created_at: row.at("created_at")?,
        updated_at: row.at("updated_at")?,
    })
}

async fn load_budget(
    conn: &mut SqliteConnection,
    org: OrgId,
    budget: BudgetId,
) -> Result<Budget, StoreError> {
    let row = sqlx::query("SELECT * FROM budgets WHERE id = ? AND organization_id = ?")
        .bind(budget.as_uuid())
        .bind(org.as_uuid())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?
        .ok_or_else(|| StoreError::not_found("budget", budget))?;
    budget_from_row(&row)
}

/// The timezone an organization's budget periods are computed in (UTC when unset).
async fn org_tz(conn: &mut SqliteConnection, org: OrgId) -> Result<Tz, StoreError> {
    let settings: Option<String> =
        sqlx::query_scalar("SELECT settings FROM organizations WHERE id = ?")
            .bind(org.as_uuid())
            .fetch_optional(&mut *conn)
            .await
            .map_err(db)?;
    Ok(match settings {
        Some(text) => super::from_json::<OrgSettings>("settings", &text)?.tz(),
        None => chrono_tz::UTC,
    })
}

/// A budget's state in `window` (zero when the period has no row yet).
async fn load_state(
    conn: &mut SqliteConnection,
    budget: &Budget,
    window: PeriodWindow,
) -> Result<BudgetState, StoreError> {
    let row = sqlx::query(
        "SELECT spent, reserved, alert_sent FROM budget_periods
         WHERE budget_id = ? AND period_start = ?",
    )
    .bind(budget.id.as_uuid())
    .bind(ts(window.start))
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    Ok(BudgetState {
        budget: budget.clone(),
        period_start: window.start,
        period_end: window.end,
        spent: row.as_ref().map_or(Ok(Money::ZERO), |r| r.money("spent"))?,
        reserved: row
            .as_ref()
            .map_or(Ok(Money::ZERO), |r| r.money("reserved"))?,
        alert_sent: row.as_ref().map_or(Ok(false), |r| r.flag("alert_sent"))?,
    })
}

async fn save_state(conn: &mut SqliteConnection, state: &BudgetState) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO budget_periods (budget_id, organization_id, period_start, period_end, spent,
             reserved, alert_sent)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (budget_id, period_start) DO UPDATE SET spent = excluded.spent,
             reserved = excluded.reserved, alert_sent = excluded.alert_sent",
    )
    .bind(state.budget.id.as_uuid())
    .bind(state.budget.org_id.as_uuid())
    .bind(ts(state.period_start))
    .bind(ts(state.period_end))
    .bind(money(state.spent))
    .bind(money(state.reserved))
    .bind(state.alert_sent)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// The budgets (still existing) and periods a reservation draws on.
async fn reservation_items(
    conn: &mut SqliteConnection,
    org: OrgId,
    request: RequestId,
) -> Result<Vec<(Budget, PeriodWindow)>, StoreError> {
    let rows = sqlx::query(
        "SELECT b.*, i.period_start AS item_period_start, i.period_end AS item_period_end
         FROM budget_reservation_items i JOIN budgets b ON b.id = i.budget_id
         WHERE i.organization_id = ? AND i.request_id = ?
         ORDER BY b.id",
    )
    .bind(org.as_uuid())
    .bind(request.as_uuid())
    .fetch_all(&mut *conn)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|row| {
            let window = PeriodWindow {
                start: parse_ts(&row.text("item_period_start")?)?,
                end: parse_ts(&row.text("item_period_end")?)?,
            };
            Ok((budget_from_row(row)?, window))
        })
        .collect()
}

/// Subtracts an active reservation from its periods and marks it released.
async fn release_in(
    conn: &mut SqliteConnection,
    org: OrgId,
    request: RequestId,
    amount: Money,
) -> Result<(), StoreError> {
    for (budget, window) in reservation_items(conn, org, request).await? {
        let mut state = load_state(conn, &budget, window).await?;
        state.reserved = state.reserved.saturating_sub(amount);
        save_state(conn, &state).await?;
    }
    sqlx::query(
        "UPDATE budget_reservations SET status = 'released'
         WHERE organization_id = ? AND request_id = ?",
    )
    .bind(org.as_uuid())
    .bind(request.as_uuid())
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// `(status, amount, settled amount)` of a request's reservation.
async fn reservation(
    conn: &mut SqliteConnection,
    org: OrgId,
    request: RequestId,
) -> Result<Option<(String, Money, Money)>, StoreError> {
    let row = sqlx::query(
        "SELECT status, amount, settled_amount FROM budget_reservations
         WHERE organization_id = ? AND request_id = ?",
    )
    .bind(org.as_uuid())
    .bind(request.as_uuid())
    .fetch_optional(&mut *conn)
    .await
    .map_err(db)?;
    row.map(|row| {
        let settled = row.opt_money("settled_amount")?.unwrap_or(Money::ZERO);
        Ok((row.text("status")?, row.money("amount")?, settled))
    })
    .transpose()
}

async fn check_scope(
    conn: &mut SqliteConnection,
    org: OrgId,
    scope: BudgetScope,
) -> Result<(), StoreError> {
    match scope {
        BudgetScope::Org => Ok(()),
        BudgetScope::Group(group) => require_group(conn, org, group).await,
        BudgetScope::User(user) => require_member(conn, org, user).await,
        BudgetScope::Tier(tier) => require_row(conn, TIER_EXISTS, "tier", tier.as_uuid()).await,
    }
}

/// Keeps the budget a `monthly_budget` field implies in step with the field, in the caller's
/// transaction: created or its limit updated when `limit` is set, deleted (with its periods)
/// when it is cleared.
pub(super) async fn put_implied_budget(
    conn: &mut SqliteConnection,
    org: OrgId,
    scope: BudgetScope,
    limit: Option<Money>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let Some(limit) = limit else {
        sqlx::query("DELETE FROM budgets WHERE id = ? AND organization_id = ?")
            .bind(implied_budget_id(org, scope).as_uuid())
            .bind(org.as_uuid())
            .execute(&mut *conn)
            .await
            .map_err(db)?;
        return Ok(());
    };
    let budget = implied_budget(org, scope, limit, micros(now));
    let (scope_type, scope_id) = scope_columns(org, budget.scope);
    sqlx::query(
        "INSERT INTO budgets (id, scope_type, scope_id, organization_id, limit_amount,
             limit_period, alert_threshold, hard_limit, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (id) DO UPDATE SET limit_amount = excluded.limit_amount,
             updated_at = excluded.updated_at
         WHERE budgets.limit_amount <> excluded.limit_amount",
    )
    .bind(budget.id.as_uuid())
    .bind(scope_type)
    .bind(scope_id)
    .bind(org.as_uuid())
    .bind(money(budget.limit))
    .bind(enum_text(&budget.period)?)
    .bind(budget.alert_threshold.to_string())
    .bind(budget.hard_limit)
    .bind(ts(budget.created_at))
    .bind(ts(budget.updated_at))
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

impl SqliteStore {
    /// [`BudgetLedger::settle`], or with `total` [`BudgetLedger::settle_total`]: a settled
    /// reservation is charged what `actual` adds to its settlement.
    async fn settle_in(
        &self,
        org: OrgId,
        request_id: RequestId,
        budgets: &[BudgetId],
        actual: Money,
        now: DateTime<Utc>,
        total: bool,
    ) -> Result<SettleOutcome, StoreError> {
        let mut tx = self.write().await?;
        let (items, unreserve, charge) = match reservation(&mut tx, org, request_id).await? {
            Some((status, _, settled)) if status == "settled" => {
                if !total || actual <= settled {
                    return Ok(SettleOutcome::default());
                }
                (
                    reservation_items(&mut tx, org, request_id).await?,
                    Money::ZERO,
                    actual.saturating_sub(settled),
                )
            }
            Some((status, amount, _)) => {
                let unreserve = if status == "active" {
                    amount
                } else {
                    Money::ZERO
                };
                (
                    reservation_items(&mut tx, org, request_id).await?,
                    unreserve,
                    actual,
                )
            }
            None => {
                // The request happened without a reservation: record the spend in the period
                // current now, and a settled marker so settling again changes nothing.
                let tz = org_tz(&mut tx, org).await?;
                let ids: BTreeSet<BudgetId> = budgets.iter().copied().collect();
                let mut items = Vec::with_capacity(ids.len());
                for id in ids {
                    let budget = load_budget(&mut tx, org, id).await?;
                    let window = budget.period.window(now, tz);
                    items.push((budget, window));
                }
                sqlx::query(
                    "INSERT INTO budget_reservations (organization_id, request_id, amount, status,
                         expires_at, created_at)
                     VALUES (?, ?, '0', 'settled', ?, ?)",
                )
                .bind(org.as_uuid())
                .bind(request_id.as_uuid())
                .bind(ts(micros(now)))
                .bind(ts(micros(now)))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                for (budget, window) in &items {
                    sqlx::query(
                        "INSERT INTO budget_reservation_items (organization_id, request_id,
                             budget_id, period_start, period_end)
                         VALUES (?, ?, ?, ?, ?)",
                    )
                    .bind(org.as_uuid())
                    .bind(request_id.as_uuid())
                    .bind(budget.id.as_uuid())
                    .bind(ts(window.start))
                    .bind(ts(window.end))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
                (items, Money::ZERO, actual)
            }
        };
        let mut alerts = Vec::new();
        for (budget, window) in &items {
            let mut state = load_state(&mut tx, budget, *window).await?;
            state.reserved = state.reserved.saturating_sub(unreserve);
            state.spent = state.spent + charge;
            if shared::alert_due(budget, state.spent, state.alert_sent) {
                state.alert_sent = true;
                alerts.push(shared::alert(budget, window.start, state.spent));
            }
            save_state(&mut tx, &state).await?;
        }
        sqlx::query(
            "UPDATE budget_reservations SET status = 'settled', settled_amount = ?
             WHERE organization_id = ? AND request_id = ?",
        )
        .bind(money(actual))
        .bind(org.as_uuid())
        .bind(request_id.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(SettleOutcome {
            applied: true,
            alerts,
        })
    }
}

#[async_trait]
impl BudgetLedger for SqliteStore {
    async fn create_budget(&self, org: OrgId, budget: &Budget) -> Result<(), StoreError> {
        budget.validate()?;
        tenant(org, budget.org_id, "budget")?;
        let mut tx = self.write().await?;
        require_org(&mut tx, org).await?;
        check_scope(&mut tx, org, budget.scope).await?;
        let (scope_type, scope_id) = scope_columns(org, budget.scope);
        sqlx::query(
            "INSERT INTO budgets (id, scope_type, scope_id, organization_id, limit_amount,
                 limit_period, alert_threshold, hard_limit, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(budget.id.as_uuid())
        .bind(scope_type)
        .bind(scope_id)
        .bind(org.as_uuid())
        .bind(money(budget.limit))
        .bind(enum_text(&budget.period)?)
        .bind(budget.alert_threshold.to_string())
        .bind(budget.hard_limit)
        .bind(ts(micros(budget.created_at)))
        .bind(ts(micros(budget.updated_at)))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        commit_change(tx, None).await
    }

    async fn get_budget(&self, org: OrgId, budget: BudgetId) -> Result<Budget, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        load_budget(&mut conn, org, budget).await
    }

    async fn list_budgets(&self, org: OrgId) -> Result<Vec<Budget>, StoreError> {
        sqlx::query("SELECT * FROM budgets WHERE organization_id = ? ORDER BY id")
            .bind(org.as_uuid())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?
            .iter()
            .map(budget_from_row)
            .collect()
    }

    async fn update_budget(&self, org: OrgId, budget: &Budget) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        budget.validate()?;
        tenant(org, budget.org_id, "budget")?;
        // The scope and creation time are fixed; the rest is replaced.
        let done = sqlx::query(
            "UPDATE budgets SET limit_amount = ?, limit_period = ?, alert_threshold = ?,
                 hard_limit = ?, updated_at = ?
             WHERE id = ? AND organization_id = ?",
        )
        .bind(money(budget.limit))
        .bind(enum_text(&budget.period)?)
        .bind(budget.alert_threshold.to_string())
        .bind(budget.hard_limit)
        .bind(ts(micros(budget.updated_at)))
        .bind(budget.id.as_uuid())
        .bind(org.as_uuid())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::not_found("budget", budget.id));
        }
        commit_change(tx, None).await
    }

    async fn delete_budget(&self, org: OrgId, budget: BudgetId) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        // Its periods and reservation items go with it (on delete cascade).
        let done = sqlx::query("DELETE FROM budgets WHERE id = ? AND organization_id = ?")
            .bind(budget.as_uuid())
            .bind(org.as_uuid())
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
        // One read transaction: a consistent snapshot of every budget.
        let mut tx = self.pool.begin().await.map_err(db)?;
        let tz = org_tz(&mut tx, org).await?;
        let mut states = Vec::with_capacity(budgets.len());
        for id in budgets {
            let budget = load_budget(&mut tx, org, *id).await?;
            let window = budget.period.window(now, tz);
            states.push(load_state(&mut tx, &budget, window).await?);
        }
        tx.commit().await.map_err(db)?;
        Ok(states)
    }

    async fn reserve(
        &self,
        org: OrgId,
        request: &ReserveRequest,
    ) -> Result<ReserveOutcome, StoreError> {
        let mut tx = self.write().await?;
        if reservation(&mut tx, org, request.request_id)
            .await?
            .is_some()
        {
            let mut states = Vec::new();
            for (budget, window) in reservation_items(&mut tx, org, request.request_id).await? {
                states.push(load_state(&mut tx, &budget, window).await?);
            }
            return Ok(ReserveOutcome::Reserved(states));
        }
        let tz = org_tz(&mut tx, org).await?;
        let ids: BTreeSet<BudgetId> = request.budgets.iter().copied().collect();
        let mut states = Vec::with_capacity(ids.len());
        for id in ids {
            let budget = load_budget(&mut tx, org, id).await?;
            let window = budget.period.window(request.now, tz);
            states.push(load_state(&mut tx, &budget, window).await?);
        }
        if let BudgetOutcome::Deny { refusal } = evaluate_budgets(&states, request.amount).outcome {
            // Nothing was written; dropping the transaction rolls it back.
            return Ok(ReserveOutcome::Refused(refusal));
        }
        sqlx::query(
            "INSERT INTO budget_reservations (organization_id, request_id, amount, status,
                 expires_at, created_at, holder)
             VALUES (?, ?, ?, 'active', ?, ?, ?)",
        )
        .bind(org.as_uuid())
        .bind(request.request_id.as_uuid())
        .bind(money(request.amount))
        .bind(ts(micros(request.expires_at)))
        .bind(ts(micros(request.now)))
        .bind(request.holder.map(|h| h.as_uuid()))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        for state in &mut states {
            state.reserved = state.reserved + request.amount;
            save_state(&mut tx, state).await?;
            sqlx::query(
                "INSERT INTO budget_reservation_items (organization_id, request_id, budget_id,
                     period_start, period_end)
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(org.as_uuid())
            .bind(request.request_id.as_uuid())
            .bind(state.budget.id.as_uuid())
            .bind(ts(state.period_start))
            .bind(ts(state.period_end))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(ReserveOutcome::Reserved(states))
    }

    async fn settle(
        &self,
        org: OrgId,
        request_id: RequestId,
        budgets: &[BudgetId],
        actual: Money,
        now: DateTime<Utc>,
    ) -> Result<SettleOutcome, StoreError> {
        self.settle_in(org, request_id, budgets, actual, now, false)
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
        self.settle_in(org, request_id, budgets, total, now, true)
            .await
    }

    async fn beat(&self, instance: InstanceId, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO runtime_instances (id, beat_at) VALUES (?, ?)
             ON CONFLICT (id) DO UPDATE SET beat_at = excluded.beat_at",
        )
        .bind(instance.as_uuid())
        .bind(ts(micros(now)))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn retire_instance(&self, instance: InstanceId) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM runtime_instances WHERE id = ?")
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
        let rows = sqlx::query(
            "SELECT r.organization_id, r.request_id, r.holder, r.created_at,
                 group_concat(hex(i.budget_id)) AS budgets
             FROM budget_reservations r
             LEFT JOIN runtime_instances h ON h.id = r.holder
             LEFT JOIN budget_reservation_items i
               ON i.organization_id = r.organization_id AND i.request_id = r.request_id
             WHERE r.status = 'active' AND r.holder IS NOT NULL
               AND (h.id IS NULL OR h.beat_at < ?)
             GROUP BY r.organization_id, r.request_id
             ORDER BY r.created_at, r.request_id
             LIMIT ?",
        )
        .bind(ts(micros(dead_before)))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                let mut budgets = row
                    .opt_text("budgets")?
                    .unwrap_or_default()
                    .split(',')
                    .filter(|hex| !hex.is_empty())
                    .map(|hex| {
                        Uuid::try_parse(hex)
                            .map(BudgetId::from_uuid)
                            .map_err(|err| corrupt("budget_id", format!("`{hex}`: {err}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                budgets.sort_unstable();
                Ok(HeldReservation {
                    org: OrgId::from_uuid(row.uuid("organization_id")?),
                    request_id: RequestId::from_uuid(row.uuid("request_id")?),
                    budgets,
                    holder: InstanceId::from_uuid(row.uuid("holder")?),
                    created_at: row.at("created_at")?,
                })
            })
            .collect()
    }

    async fn release(&self, org: OrgId, request_id: RequestId) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        if let Some((status, amount, _)) = reservation(&mut tx, org, request_id).await?
            && status == "active"
        {
            release_in(&mut tx, org, request_id, amount).await?;
            tx.commit().await.map_err(db)?;
        }
        Ok(())
    }

    async fn reclaim_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let expired = sqlx::query(
            "SELECT organization_id, request_id, amount FROM budget_reservations
             WHERE status = 'active' AND expires_at <= ?",
        )
        .bind(ts(micros(now)))
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut reclaimed = 0;
        for row in &expired {
            let org = OrgId::from_uuid(row.uuid("organization_id")?);
            let request = RequestId::from_uuid(row.uuid("request_id")?);
            release_in(&mut tx, org, request, row.money("amount")?).await?;
            reclaimed += 1;
        }
        tx.commit().await.map_err(db)?;
        Ok(reclaimed)
    }
}
