#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Tenant isolation enforced by PostgreSQL itself: the catalog, a table x operation x context
//! matrix, and a pool test with aborted transactions. Needs PostgreSQL (see `stratai_testkit::pg`).

use stratai_testkit::pg;

use std::collections::BTreeMap;

use chrono::{Duration, Utc};
use rand::Rng;
use rust_decimal::Decimal;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
use stratai_core::budget::{Budget, BudgetPeriod, BudgetScope};
use stratai_core::directory::{
    BillingPlan, Email, Group, GroupMembership, GroupRole, Invitation, InvitationStatus,
    Membership, OrgRole, OrgSettings, Organization, PlatformRole, Slug, User,
};
use stratai_core::ports::AuditStore;
use stratai_core::ports::{
    BudgetLedger, DirectoryStore, GuardrailStore, KeyVaultStore, ReserveOutcome, ReserveRequest,
    RuleAction, RuleRecord, RuleScope, SealedKey, TierStore, UsageStore,
};
use stratai_core::tiers::{ModelTier, TierSubscription};
use stratai_core::usage::{UsageQuery, UsageRecord};
use stratai_core::{
    BudgetId, InvitationId, ModelId, Money, OrgId, RequestId, RuleId, TierId, TierSlug,
};
use stratai_store::{PgOptions, PgStore};
use uuid::Uuid;

fn unique() -> String {
    Uuid::new_v4().simple().to_string()[..12].to_owned()
}

fn slug(s: &str) -> TierSlug {
    TierSlug::new(s).unwrap()
}

async fn tier(store: &PgStore) -> TierId {
    let tier = ModelTier {
        id: TierId::new(),
        slug: slug(&format!("t-{}", unique())),
        name: "Basic".into(),
        description: String::new(),
        best_use_case: String::new(),
        models: vec![ModelId::new(format!("model-{}", unique())).unwrap()],
        base_price: Money::ZERO,
        input_rate_per_million: Decimal::ONE,
        output_rate_per_million: Decimal::TWO,
        sort_order: 0,
        active: true,
        rate_schedule: Vec::new(),
    };
    store.upsert_tier(&tier).await.unwrap();
    tier.id
}

/// One organization with a row in every tenant table reachable through the ports.
async fn seed_org(store: &PgStore, tier: TierId) -> (OrgId, Vec<uuid::Uuid>) {
    let now = Utc::now();
    let settings = OrgSettings::new(vec![slug("basic")], slug("basic")).unwrap();
    let org = Organization::new(
        "Org",
        Slug::new(format!("org-{}", unique())).unwrap(),
        settings,
        BillingPlan::Trial,
        now,
    )
    .unwrap();
    store.create_org(&org).await.unwrap();
    let user = User::new(
        Email::new(format!("{}@example.com", unique())).unwrap(),
        None,
        PlatformRole::User,
        now,
    )
    .unwrap();
    store.create_user(&user).await.unwrap();
    store
        .add_member(
            org.id,
            &Membership::new(org.id, user.id, OrgRole::Member, now),
        )
        .await
        .unwrap();
    store
        .put_sealed_key(
            org.id,
            user.id,
            &SealedKey {
                key_id: unique(),
                sealed: vec![1; 64],
                sealed_at: now,
            },
        )
        .await
        .unwrap();
    let group = Group::new(org.id, &format!("group-{}", unique()), now).unwrap();
    store.create_group(org.id, &group).await.unwrap();
    store
        .put_group_member(
            org.id,
            &GroupMembership::new(org.id, group.id, user.id, GroupRole::Member, now),
        )
        .await
        .unwrap();
    store
        .put_subscription(
            org.id,
            &TierSubscription {
                org_id: org.id,
                tier_id: tier,
                enabled: true,
                monthly_budget: None,
                enabled_at: now,
            },
        )
        .await
        .unwrap();
    store
        .put_rule(
            org.id,
            &RuleRecord {
                id: RuleId::new(),
                name: "limit".into(),
                description: None,
                rule_type: "token_limit".into(),
                config: serde_json::json!({"max_input_tokens": 1000}),
                scope: RuleScope::Org { org_id: org.id },
                action: RuleAction::Block,
                priority: 0,
                active: true,
                created_at: now,
            },
        )
        .await
        .unwrap();
    store
        .append(org.id, &[usage(org.id, user.id, Some(group.id), now)])
        .await
        .unwrap();
    let budget = Budget {
        id: BudgetId::new(),
        org_id: org.id,
        scope: BudgetScope::Org,
        limit: Money::dollars(100),
        period: BudgetPeriod::Monthly,
        hard_limit: true,
        alert_threshold: Decimal::new(8, 1),
        created_at: now,
        updated_at: now,
    };
    store.create_budget(org.id, &budget).await.unwrap();
    let reserved = store
        .reserve(
            org.id,
            &ReserveRequest {
                request_id: RequestId::new(),
                budgets: vec![budget.id],
                amount: Money::dollars(1),
                now,
                expires_at: now + Duration::minutes(5),
                holder: None,
            },
        )
        .await
        .unwrap();
    assert!(matches!(reserved, ReserveOutcome::Reserved(_)));
    store
        .create_invitation(
            org.id,
            &Invitation {
                id: InvitationId::new(),
                email: Email::new(format!("{}@example.com", unique())).unwrap(),
                org_id: org.id,
                role: OrgRole::Member,
                group_ids: vec![group.id],
                profile_id: None,
                token_hash: unique(),
                status: InvitationStatus::Pending,
                expires_at: now + Duration::days(1),
                invited_by: None,
                accepted_at: None,
                created_at: now,
                delivery: stratai_core::directory::InvitationDelivery::queued(),
            },
        )
        .await
        .unwrap();
    (org.id, vec![user.id.as_uuid(), group.id.as_uuid()])
}

fn usage(
    org: OrgId,
    user: stratai_core::UserId,
    group: Option<stratai_core::GroupId>,
    at: chrono::DateTime<Utc>,
) -> UsageRecord {
    let record = stratai_testkit::usage_record(org, user)
        .model("gpt-4o")
        .tokens(10, 20)
        .cost("0.001")
        .billed("0.002")
        .at(at);
    match group {
        Some(group) => record.group(group),
        None => record,
    }
    .build()
}

/// Every table carrying a tenant column, with that column (`organizations` is keyed by `id`).
async fn tenant_tables(admin: &mut PgConnection) -> Vec<(String, &'static str)> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'organization_id'
              AND NOT a.attisdropped
         WHERE c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace
         ORDER BY 1",
    )
    .fetch_all(admin)
    .await
    .unwrap();
    let mut tables: Vec<(String, &'static str)> =
        names.into_iter().map(|n| (n, "organization_id")).collect();
    tables.push(("organizations".to_owned(), "id"));
    tables
}

#[tokio::test]
async fn catalog_every_tenant_table_has_forced_rls_and_the_app_role_is_unprivileged() {
    let Some(db) = pg::fresh_db().await else {
        return;
    };
    let mut admin = db.admin_connection().await;
    let tables = tenant_tables(&mut admin).await;
    assert!(tables.len() >= 15, "tenant tables: {tables:?}");
    for (table, column) in &tables {
        let row = sqlx::query(
            "SELECT c.relrowsecurity, c.relforcerowsecurity,
                    (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid
                       AND p.polname = 'tenant_isolation'
                       AND pg_get_expr(p.polqual, p.polrelid) LIKE '%current_setting(''app.current_org_id''::text, true)%'
                       AND pg_get_expr(p.polwithcheck, p.polrelid) LIKE '%current_setting(''app.current_org_id''::text, true)%'
                       AND p.polroles = '{0}') AS policies
             FROM pg_class c WHERE c.oid = $1::regclass",
        )
        .bind(table)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        let enabled: bool = row.get(0);
        let forced: bool = row.get(1);
        let policies: i64 = row.get(2);
        assert!(enabled, "RLS not enabled on {table}");
        assert!(forced, "RLS not forced on {table}");
        assert_eq!(policies, 1, "no tenant policy on {table}.{column}");
    }
    // Every other table is a documented platform table: a new tenant table without
    // organization_id fails here.
    let others: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
         WHERE c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace
           AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                           AND a.attname = 'organization_id' AND NOT a.attisdropped)
         ORDER BY 1",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        others,
        [
            "_sqlx_migrations",
            "model_tiers",
            "organizations",
            "runtime_instances",
            "tier_models",
            "user_profiles",
            "users"
        ]
    );
    // Policies that are not tenant_isolation are the documented platform ones.
    let extra: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT polname::text FROM pg_policy WHERE polname <> 'tenant_isolation' ORDER BY 1",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        extra,
        [
            "platform_chain",
            "platform_outbox",
            "platform_profile_clear",
            "platform_read",
            "platform_reclaim",
            "platform_rules_read",
            "platform_rules_write"
        ]
    );

    // The app role: no superuser, no BYPASSRLS, owns nothing, not a member of the owner.
    let row = sqlx::query(
        "SELECT r.rolsuper, r.rolbypassrls,
                (SELECT count(*) FROM pg_class c WHERE c.relowner = r.oid),
                (SELECT count(*) FROM pg_proc p WHERE p.proowner = r.oid),
                pg_has_role(r.oid, $2, 'MEMBER')
         FROM pg_roles r WHERE r.rolname = $1",
    )
    .bind(pg::APP_ROLE)
    .bind(pg::OWNER_ROLE)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(!row.get::<bool, _>(0), "app role is superuser");
    assert!(!row.get::<bool, _>(1), "app role has BYPASSRLS");
    assert_eq!(row.get::<i64, _>(2), 0, "app role owns relations");
    assert_eq!(row.get::<i64, _>(3), 0, "app role owns functions");
    assert!(!row.get::<bool, _>(4), "app role is a member of the owner");
    let privileges = db.store.role_privileges().await.unwrap();
    assert!(!privileges.is_privileged(), "{privileges:?}");

    // The security-definer functions (they run as the owner, past RLS) the app role may call
    // are exactly the platform functions marked for it (`stratai: serving role`, granted by
    // `stratai_grant_app_role` from the catalog); the owner-only ones (the grant functions,
    // trigger functions) stay the owner's.
    let callable: Vec<(String, bool)> = sqlx::query_as(
        "SELECT p.proname::text,
                coalesce(obj_description(p.oid, 'pg_proc') = 'stratai: serving role', false)
         FROM pg_proc p
         WHERE p.pronamespace = 'public'::regnamespace AND p.prosecdef
           AND has_function_privilege($1, p.oid, 'EXECUTE')
         ORDER BY 1",
    )
    .bind(pg::APP_ROLE)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(
        callable.iter().all(|(_, marked)| *marked),
        "callable without the marker: {callable:?}"
    );
    let names: Vec<&str> = callable.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "stratai_abandoned_leases",
            "stratai_audit_all",
            "stratai_count_people_in_orgs",
            "stratai_delete_platform_rule",
            "stratai_delete_profile",
            "stratai_find_invitation",
            "stratai_find_org_by_slug",
            "stratai_instance_beat",
            "stratai_instance_retire",
            "stratai_list_orgs",
            "stratai_locate_group",
            "stratai_memberships_of_user",
            "stratai_outbox_complete",
            "stratai_outbox_dead_letter",
            "stratai_outbox_dead_letters",
            "stratai_outbox_fail",
            "stratai_outbox_pending",
            "stratai_pending_invitations",
            "stratai_put_platform_rule",
            "stratai_reclaim_expired",
            "stratai_usage_totals_by_org",
        ]
    );
    let marked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
           AND obj_description(p.oid, 'pg_proc') = 'stratai: serving role'",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(marked, 21, "every marked function is granted");

    // The store refuses to serve as the owner or a superuser, unless told it is migrating.
    let refused = PgStore::connect(&db.owner_url).await.unwrap_err();
    assert!(
        refused.to_string().contains("refusing to serve"),
        "{refused}"
    );
    let refused = PgStore::connect(&db.admin_url).await.unwrap_err();
    assert!(
        refused.to_string().contains("refusing to serve"),
        "{refused}"
    );
    PgStore::connect_with(
        &db.owner_url,
        PgOptions {
            running_migrations: true,
            ..PgOptions::default()
        },
    )
    .await
    .unwrap();
}

/// Row counts per (table, organization) as the superuser sees them.
async fn census(admin: &mut PgConnection, tables: &[(String, &str)]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for (table, column) in tables {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {column}::text AS org, count(*) AS n FROM \"{table}\" GROUP BY 1"
        )))
        .fetch_all(&mut *admin)
        .await
        .unwrap();
        for row in rows {
            let org: Option<String> = row.get("org");
            out.insert(
                format!("{table}/{}", org.unwrap_or_else(|| "platform".into())),
                row.get("n"),
            );
        }
    }
    out
}

async fn begin_as(conn: &mut PgConnection, context: Option<&str>) {
    sqlx::query("BEGIN").execute(&mut *conn).await.unwrap();
    if let Some(value) = context {
        sqlx::query("SELECT set_config('app.current_org_id', $1, true)")
            .bind(value)
            .execute(&mut *conn)
            .await
            .unwrap();
    }
}

async fn rollback(conn: &mut PgConnection) {
    sqlx::query("ROLLBACK").execute(&mut *conn).await.unwrap();
}

fn is_refusal(err: &sqlx::Error) -> bool {
    // 42501: a row-level security policy (or a missing privilege) refused it.
    matches!(err, sqlx::Error::Database(e) if e.code().as_deref() == Some("42501"))
}

#[tokio::test]
async fn matrix_no_context_sees_or_changes_another_tenants_rows() {
    let Some(db) = pg::fresh_db().await else {
        return;
    };
    let store = &db.store;
    let tier = tier(store).await;
    let (org_a, _) = seed_org(store, tier).await;
    let (org_b, _) = seed_org(store, tier).await;
    // An audit entry in each organization's chain and one in the platform chain (no
    // organization, visible to every session of the app role, never another tenant's).
    let entry = stratai_core::audit::AuditDraft {
        at: Utc::now(),
        actor: None,
        request_id: None,
        action: "test.seed".into(),
        target: "test".into(),
        before: None,
        after: Some(serde_json::json!({"seeded": true})),
    };
    for org in [org_a, org_b] {
        store.append_audit(org, &entry).await.unwrap();
    }
    store.append_platform_audit(&entry).await.unwrap();
    store
        .put_platform_rule(&RuleRecord {
            id: RuleId::new(),
            name: "global".into(),
            description: None,
            rule_type: "token_limit".into(),
            config: serde_json::json!({}),
            scope: RuleScope::Global,
            action: RuleAction::Log,
            priority: 0,
            active: true,
            created_at: Utc::now(),
        })
        .await
        .unwrap();
    let mut admin = db.admin_connection().await;
    // an invoice of each, seeded directly (as the owner, past RLS).
    for org in [org_a, org_b] {
        sqlx::query(
            "INSERT INTO invoices (id, organization_id, month, timezone, period_start,
                 period_end, requests, subtotal, tax_rate, tax, total, line_items, status,
                 created_at)
             VALUES (gen_random_uuid(), $1, '2026-01', 'UTC', '2026-01-01', '2026-01-31', 1,
                 10, 0, 0, 10, '[]', 'draft', now())",
        )
        .bind(org.as_uuid())
        .execute(&mut admin)
        .await
        .unwrap();
    }
    let tables = tenant_tables(&mut admin).await;
    let before = census(&mut admin, &tables).await;
    for (table, _) in &tables {
        for org in [org_a, org_b] {
            assert!(
                before
                    .get(&format!("{table}/{org}"))
                    .is_some_and(|n| *n > 0),
                "the matrix needs a row of {org} in {table}: {before:?}"
            );
        }
    }

    let mut app = db.app_connection().await;
    let a = org_a.to_string();
    let b = org_b.to_string();
    let contexts: [(&str, Option<&str>, Option<&str>); 4] = [
        ("org A", Some(&a), Some(&a)),
        ("org B", Some(&b), Some(&b)),
        ("unset", None, None),
        ("empty", Some(""), None),
    ];
    for (table, column) in &tables {
        // A row of each organization, as JSON, to try inserting it from other contexts.
        let mut samples = BTreeMap::new();
        for org in [&a, &b] {
            let sample: serde_json::Value = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT to_jsonb(t) FROM \"{table}\" t WHERE {column}::text = $1 LIMIT 1"
            )))
            .bind(org)
            .fetch_one(&mut admin)
            .await
            .unwrap();
            samples.insert(org.clone(), sample);
        }
        for (label, setting, own) in &contexts {
            let own_uuid: Option<Uuid> = own.map(|o| o.parse().unwrap());
            // SELECT: nothing of another tenant (platform rows aside) is visible.
            begin_as(&mut app, *setting).await;
            let seen = sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!(
                "SELECT count(*) FROM \"{table}\"
                 WHERE {column} IS NOT NULL AND {column} IS DISTINCT FROM $1"
            )))
            .bind(own_uuid)
            .fetch_one(&mut app)
            .await;
            match seen {
                Ok(n) => assert_eq!(n, 0, "{label} sees {n} foreign rows of {table}"),
                Err(e) => assert!(is_refusal(&e), "{label} select {table}: {e}"),
            }
            rollback(&mut app).await;
            if own.is_some() && table != "outbox" {
                begin_as(&mut app, *setting).await;
                let mine: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
                    "SELECT count(*) FROM \"{table}\" WHERE {column} = $1"
                )))
                .bind(own_uuid)
                .fetch_one(&mut app)
                .await
                .unwrap();
                assert!(mine > 0, "{label} does not see its own rows of {table}");
                rollback(&mut app).await;
            }

            // UPDATE: every row not of the context (platform rows included) is untouched.
            begin_as(&mut app, *setting).await;
            let updated = sqlx::query(AssertSqlSafe(format!(
                "UPDATE \"{table}\" SET {column} = {column} WHERE {column} IS DISTINCT FROM $1"
            )))
            .bind(own_uuid)
            .execute(&mut app)
            .await;
            match updated {
                Ok(done) => assert_eq!(done.rows_affected(), 0, "{label} updated {table}"),
                Err(e) => assert!(is_refusal(&e), "{label} update {table}: {e}"),
            }
            rollback(&mut app).await;
            // ... and the context's own rows can not be moved to another organization.
            if let Some(own) = own {
                let other = if *own == a { &b } else { &a };
                begin_as(&mut app, *setting).await;
                let moved = sqlx::query(AssertSqlSafe(format!(
                    "UPDATE \"{table}\" SET {column} = $2::uuid WHERE {column} = $1"
                )))
                .bind(own_uuid)
                .bind(other)
                .execute(&mut app)
                .await;
                // An error (policy, privilege or foreign key) moved nothing either.
                if let Ok(done) = moved {
                    assert_eq!(done.rows_affected(), 0, "{label} moved {table} rows");
                }
                rollback(&mut app).await;
            }

            // DELETE: nothing outside the context.
            begin_as(&mut app, *setting).await;
            let deleted = sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM \"{table}\" WHERE {column} IS DISTINCT FROM $1"
            )))
            .bind(own_uuid)
            .execute(&mut app)
            .await;
            match deleted {
                Ok(done) => assert_eq!(done.rows_affected(), 0, "{label} deleted from {table}"),
                Err(e) => assert!(is_refusal(&e), "{label} delete {table}: {e}"),
            }
            rollback(&mut app).await;

            // INSERT: a row of another organization is refused by the policy.
            for (org, sample) in &samples {
                if own.is_some_and(|o| o == org) {
                    continue;
                }
                begin_as(&mut app, *setting).await;
                let inserted = if table == "outbox" {
                    sqlx::query(
                        "INSERT INTO outbox (organization_id, entity_kind, entity_id, version)
                         VALUES ($1::uuid, 'org', $1::uuid, 1)",
                    )
                    .bind(org)
                    .execute(&mut app)
                    .await
                } else {
                    sqlx::query(AssertSqlSafe(format!(
                        "INSERT INTO \"{table}\" SELECT * FROM jsonb_populate_record(NULL::\"{table}\", $1)"
                    )))
                    .bind(sample)
                    .execute(&mut app)
                    .await
                };
                match inserted {
                    Ok(_) => panic!("{label} inserted a row of {org} into {table}"),
                    Err(e) => assert!(is_refusal(&e), "{label} insert into {table}: {e}"),
                }
                rollback(&mut app).await;
            }
        }
    }
    app.close().await.unwrap();
    assert_eq!(census(&mut admin, &tables).await, before);
}

#[tokio::test]
async fn pool_of_two_never_serves_a_row_of_the_wrong_org() {
    let Some(db) = pg::fresh_db().await else {
        return;
    };
    let tier = tier(&db.store).await;
    let mut orgs = Vec::new();
    for _ in 0..6 {
        let (org, ids) = seed_org(&db.store, tier).await;
        orgs.push((org, stratai_core::UserId::from_uuid(ids[0])));
    }
    let store = db
        .connect(PgOptions {
            max_connections: 2,
            ..PgOptions::default()
        })
        .await;
    let orgs = std::sync::Arc::new(orgs);
    let mut tasks = Vec::new();
    for worker in 0..8u64 {
        let store = store.clone();
        let orgs = orgs.clone();
        tasks.push(tokio::spawn(async move {
            let mut checked = 0u64;
            for i in 0..300u64 {
                let ((org, user), action) = {
                    let mut rng = rand::rng();
                    (orgs[rng.random_range(0..orgs.len())], rng.random_range(0..7u8))
                };
                match action {
                    0 => {
                        for g in store.list_groups(org).await.unwrap() {
                            assert_eq!(g.org_id, org);
                            checked += 1;
                        }
                    }
                    1 => {
                        for m in store.list_members(org).await.unwrap() {
                            assert_eq!(m.org_id, org);
                            checked += 1;
                        }
                    }
                    2 => {
                        let q = UsageQuery::default();
                        for r in store.query(org, &q, 100).await.unwrap() {
                            assert_eq!(r.org_id, org);
                            checked += 1;
                        }
                    }
                    3 => {
                        // Aborted mid-transaction: context set, statement failed, dropped.
                        let mut tx = store.pool().begin().await.unwrap();
                        sqlx::query("SELECT set_config('app.current_org_id', $1, true)")
                            .bind(org.to_string())
                            .execute(&mut *tx)
                            .await
                            .unwrap();
                        let _ = sqlx::query("SELECT 1 / 0").execute(&mut *tx).await;
                        drop(tx);
                    }
                    4 => {
                        // Abandoned mid-transaction: context set, rows read, never committed.
                        let mut tx = store.pool().begin().await.unwrap();
                        sqlx::query("SELECT set_config('app.current_org_id', $1, true)")
                            .bind(org.to_string())
                            .execute(&mut *tx)
                            .await
                            .unwrap();
                        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM groups")
                            .fetch_one(&mut *tx)
                            .await
                            .unwrap();
                        assert!(n >= 1);
                        if (worker + i) % 2 == 0 {
                            tx.rollback().await.unwrap();
                        } else {
                            drop(tx);
                        }
                    }
                    5 => {
                        // A usage append (a tenant transaction of its own) leaves no
                        // context on the connection it returns to the pool.
                        let record = usage(org, user, None, Utc::now());
                        let outcome = store.append(org, std::slice::from_ref(&record)).await.unwrap();
                        assert_eq!(outcome.inserted, 1);
                        let stored = store.get(org, record.request_id).await.unwrap();
                        assert_eq!((stored.org_id, stored.user_id), (org, user));
                        checked += 1;
                    }
                    _ => {
                        // Without a context, a pooled connection sees no tenant row at all,
                        // whatever ran on it before.
                        let n: i64 = sqlx::query_scalar(
                            "SELECT (SELECT count(*) FROM groups) + (SELECT count(*) FROM usage_records)
                                  + (SELECT count(*) FROM org_memberships)",
                        )
                        .fetch_one(store.pool())
                        .await
                        .unwrap();
                        assert_eq!(n, 0, "a context leaked across pooled connections");
                        checked += 1;
                    }
                }
            }
            checked
        }));
    }
    let mut checked = 0;
    for task in tasks {
        checked += task.await.unwrap();
    }
    assert!(checked > 1000, "only {checked} rows checked");
}
