#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub,
    dead_code
)]
//! The audit trail's stores: the same behaviour on memory, SQLite and PostgreSQL (chains per
//! organization and for the platform, filters and pages, concurrent appends never fork a
//! chain), and, below the stores, the database's own guards: the app role cannot change or
//! remove an entry (triggers; on PostgreSQL also no UPDATE/DELETE/TRUNCATE privilege), an
//! entry altered or removed by the database owner is found by verification, and row-level
//! security keeps one organization's chain from another's sessions.

use stratai_testkit::pg;

#[path = "conformance/fixtures.rs"]
mod fixtures;

use std::sync::Arc;

use serde_json::json;
use sqlx::Connection;
use stratai_core::audit::{
    AuditChain, AuditCursor, AuditDraft, AuditQuery, ChainFault, verify_chain,
};
use stratai_core::ports::AuditStore;
use stratai_core::{OrgId, UserId};

fn draft(n: usize, actor: UserId) -> AuditDraft {
    AuditDraft {
        at: fixtures::now() + chrono::Duration::seconds(i64::try_from(n).unwrap()),
        actor: Some(actor),
        request_id: Some(format!("req-{n}")),
        action: if n.is_multiple_of(2) {
            "member.update"
        } else {
            "group.create"
        }
        .to_owned(),
        target: format!("thing/{n}"),
        before: n
            .is_multiple_of(2)
            .then(|| json!({"monthly_budget": "5.00", "n": n})),
        after: Some(json!({"monthly_budget": "7.25", "z": [1, {"b": 2, "a": 1}], "n": n})),
    }
}

fn all(limit: u32) -> AuditQuery {
    AuditQuery {
        limit,
        ..AuditQuery::default()
    }
}

/// Two organizations and the platform: appended, listed, paged, filtered, verified.
async fn chains_list_and_verify<S: fixtures::Store + AuditStore>(store: S) {
    let a = fixtures::org(&store).await.id;
    let b = fixtures::org(&store).await.id;
    let actor = UserId::new();
    let other = UserId::new();
    for n in 0..6 {
        let e = store.append_audit(a, &draft(n, actor)).await.unwrap();
        assert_eq!(e.seq, i64::try_from(n).unwrap() + 1);
        assert_eq!(e.org_id, Some(a));
    }
    store.append_audit(b, &draft(10, other)).await.unwrap();
    let p = store
        .append_platform_audit(&draft(11, actor))
        .await
        .unwrap();
    assert_eq!((p.seq, p.org_id), (1, None));

    let listed = store.list_audit(a, &all(100)).await.unwrap();
    assert_eq!(listed.len(), 6);
    assert!(listed.iter().all(|e| e.org_id == Some(a)));
    assert_eq!(listed[0].seq, 6, "newest first");
    // What comes back is what was hashed: JSON and times survive the round trip.
    assert_eq!(listed[5].after, draft(0, actor).after);
    assert_eq!(listed[5].computed_hash(), listed[5].hash);

    // Pages by cursor.
    let first = store.list_audit(a, &all(4)).await.unwrap();
    let rest = store
        .list_audit(
            a,
            &AuditQuery {
                before: Some(AuditCursor::of(first.last().unwrap())),
                ..all(4)
            },
        )
        .await
        .unwrap();
    assert_eq!(
        first.iter().chain(&rest).map(|e| e.seq).collect::<Vec<_>>(),
        vec![6, 5, 4, 3, 2, 1]
    );

    // Filters.
    let updates = store
        .list_audit(
            a,
            &AuditQuery {
                action: Some("member.".to_owned()),
                ..all(100)
            },
        )
        .await
        .unwrap();
    assert_eq!(updates.len(), 3);
    let by_request = store
        .list_all_audit(&AuditQuery {
            request_id: Some("req-10".to_owned()),
            ..all(100)
        })
        .await
        .unwrap();
    assert_eq!(by_request.len(), 1);
    assert_eq!(by_request[0].org_id, Some(b));
    let by_actor = store
        .list_all_audit(&AuditQuery {
            actor: Some(other),
            ..all(100)
        })
        .await
        .unwrap();
    assert_eq!(by_actor.len(), 1);
    let window = store
        .list_audit(
            a,
            &AuditQuery {
                since: Some(draft(2, actor).at),
                until: Some(draft(4, actor).at),
                ..all(100)
            },
        )
        .await
        .unwrap();
    assert_eq!(window.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4, 3]);

    // Every chain, newest first, in pages that neither skip nor repeat.
    let mut seen = Vec::new();
    let mut query = all(3);
    loop {
        let page = store.list_all_audit(&query).await.unwrap();
        seen.extend(page.iter().map(|e| (e.org_id, e.seq)));
        if page.len() < 3 {
            break;
        }
        query.before = Some(AuditCursor::of(page.last().unwrap()));
    }
    assert_eq!(seen.len(), 8, "{seen:?}");
    assert_eq!(seen[0], (None, 1), "the platform entry is the newest");
    let platform = store.list_platform_audit(&all(100)).await.unwrap();
    assert_eq!(platform.len(), 1);

    for chain in [AuditChain::Org(a), AuditChain::Org(b), AuditChain::Platform] {
        let stored = match chain {
            AuditChain::Org(o) => store.audit_chain(o).await.unwrap(),
            AuditChain::Platform => store.platform_audit_chain().await.unwrap(),
        };
        let report = verify_chain(chain, &stored);
        assert!(report.intact, "{report:?}");
    }
    assert_eq!(store.audit_chain(a).await.unwrap().head.unwrap().seq, 6);
    // An unknown organization has no chain to append to.
    assert!(
        store
            .append_audit(OrgId::new(), &draft(1, actor))
            .await
            .is_err()
    );
}

/// Concurrent appends to one chain serialize: no fork, no gap.
async fn concurrent_appends_never_fork<S: fixtures::Store + AuditStore>(store: S) {
    let org = fixtures::org(&store).await.id;
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for n in 0..24 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .append_audit(org, &draft(n, UserId::new()))
                .await
                .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let chain = store.audit_chain(org).await.unwrap();
    assert_eq!(chain.entries.len(), 24);
    let report = verify_chain(AuditChain::Org(org), &chain);
    assert!(report.intact, "{report:?}");
}

/// Opens `$backend` (SQLite in a scratch folder, a fresh PostgreSQL database) and runs the body
/// on its store.
macro_rules! on_store {
    (memory, $body:path) => {
        $body(stratai_store::MemoryStore::new()).await
    };
    (sqlite, $body:path) => {
        let scratch = stratai_testkit::Scratch::new();
        let url = format!("sqlite://{}", scratch.join("audit.db").display());
        let store = stratai_store::SqliteStore::connect(&url).await.unwrap();
        $body(store.clone()).await;
        store.close().await;
    };
    (postgres, $body:path) => {
        let Some(db) = crate::pg::fresh_db().await else {
            return;
        };
        $body(db.store.clone()).await;
    };
}

/// The chain read page by page, oldest first: pages join without gaps or repeats, each
/// chain's own, and reading past the end gives nothing.
async fn pages_read_the_chain_in_order<S: fixtures::Store + AuditStore>(store: S) {
    let a = fixtures::org(&store).await.id;
    let b = fixtures::org(&store).await.id;
    for n in 0..7 {
        store
            .append_audit(a, &draft(n, UserId::new()))
            .await
            .unwrap();
    }
    store
        .append_audit(b, &draft(9, UserId::new()))
        .await
        .unwrap();
    store
        .append_platform_audit(&draft(10, UserId::new()))
        .await
        .unwrap();
    let mut read = Vec::new();
    let mut after = 0;
    loop {
        let page = store.audit_page(a, after, 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        after = last.seq;
        read.extend(page);
    }
    assert_eq!(read, store.audit_chain(a).await.unwrap().entries);
    assert_eq!(read.len(), 7);
    assert!(store.audit_page(a, 7, 3).await.unwrap().is_empty());
    let platform = store.platform_audit_page(0, 10).await.unwrap();
    assert_eq!(platform.len(), 1);
    assert_eq!(platform[0].org_id, None);
}

stratai_testkit::backend_matrix!(on_store, [memory, sqlite, postgres], threads = 4:
    chains_list_and_verify,
    concurrent_appends_never_fork,
    pages_read_the_chain_in_order
);

async fn three_entries<S: fixtures::Store + AuditStore>(store: &S) -> OrgId {
    let org = fixtures::org(store).await.id;
    for n in 0..3 {
        store
            .append_audit(org, &draft(n, UserId::new()))
            .await
            .unwrap();
    }
    org
}

#[tokio::test]
async fn sqlite_entries_cannot_be_changed_and_tampering_is_found() {
    let scratch = stratai_testkit::Scratch::new();
    let url = format!("sqlite://{}", scratch.join("tamper.db").display());
    let store = stratai_store::SqliteStore::connect(&url).await.unwrap();
    let org = three_entries(&store).await;
    let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
    for sql in [
        "UPDATE audit_log SET after_state = '{}' WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = 2",
        "DELETE FROM audit_heads",
        "UPDATE audit_heads SET seq = 1",
    ] {
        let outcome = sqlx::query(sql).execute(&raw).await;
        assert!(outcome.is_err(), "`{sql}` passed");
    }
    assert!(verify_chain(AuditChain::Org(org), &store.audit_chain(org).await.unwrap()).intact);

    // Whoever holds the file can drop the triggers; verification still finds the change.
    sqlx::query("DROP TRIGGER audit_log_no_update")
        .execute(&raw)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE audit_log SET after_state = '{\"monthly_budget\":\"5000.00\"}' WHERE seq = 2",
    )
    .execute(&raw)
    .await
    .unwrap();
    let report = verify_chain(AuditChain::Org(org), &store.audit_chain(org).await.unwrap());
    let found = report.first_break.unwrap();
    assert_eq!((found.seq, found.fault), (2, ChainFault::Altered));

    let other = three_entries(&store).await;
    sqlx::query("DROP TRIGGER audit_log_no_delete")
        .execute(&raw)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_log WHERE chain_id = ? AND seq = 2")
        .bind(other.as_uuid())
        .execute(&raw)
        .await
        .unwrap();
    let report = verify_chain(
        AuditChain::Org(other),
        &store.audit_chain(other).await.unwrap(),
    );
    let found = report.first_break.unwrap();
    assert_eq!((found.seq, found.fault), (2, ChainFault::Missing));
    // The newest entry removed: the head still names it.
    sqlx::query("DELETE FROM audit_log WHERE chain_id = ? AND seq = 3")
        .bind(other.as_uuid())
        .execute(&raw)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_log WHERE chain_id = ? AND seq = 3")
        .bind(org.as_uuid())
        .execute(&raw)
        .await
        .unwrap();
    let report = verify_chain(AuditChain::Org(org), &store.audit_chain(org).await.unwrap());
    assert_eq!(
        report.first_break.unwrap().seq,
        2,
        "the first fault is reported"
    );
    raw.close().await;
    store.close().await;
}

/// As the app role inside the organization's own tenant context, every change is refused.
#[tokio::test]
async fn postgres_app_role_cannot_change_entries_and_tampering_is_found() {
    let Some(db) = pg::fresh_db().await else {
        return;
    };
    let store = db.store.clone();
    let org = three_entries(&store).await;
    let tenant = format!("SET LOCAL app.current_org_id = '{}'", org.as_uuid());
    for sql in [
        "UPDATE audit_log SET after_state = '{}' WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = 2",
        "TRUNCATE audit_log",
        "DELETE FROM audit_heads",
        "UPDATE audit_heads SET seq = 1, hash = 'x'",
    ] {
        let mut conn = db.app_connection().await;
        let mut tx = conn.begin().await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(tenant.clone()))
            .execute(&mut *tx)
            .await
            .unwrap();
        let outcome = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *tx)
            .await;
        let error = outcome.expect_err(sql).to_string();
        assert!(
            error.contains("permission denied")
                || error.contains("append-only")
                || error.contains("forward"),
            "`{sql}`: {error}"
        );
    }
    // The catalog agrees: no UPDATE, DELETE or TRUNCATE privilege on the entries.
    let mut admin = db.admin_connection().await;
    let privileges: (bool, bool, bool, bool, bool) = sqlx::query_as(
        "SELECT has_table_privilege($1, 'audit_log', 'SELECT'),
                has_table_privilege($1, 'audit_log', 'INSERT'),
                has_table_privilege($1, 'audit_log', 'UPDATE'),
                has_table_privilege($1, 'audit_log', 'DELETE'),
                has_table_privilege($1, 'audit_log', 'TRUNCATE')",
    )
    .bind(pg::APP_ROLE)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(privileges, (true, true, false, false, false));
    assert!(verify_chain(AuditChain::Org(org), &store.audit_chain(org).await.unwrap()).intact);

    // The owner can switch the trigger off and edit a row: verification finds it.
    let mut owner = sqlx::PgConnection::connect(&db.owner_url).await.unwrap();
    let mut tx = owner.begin().await.unwrap();
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(tenant.clone()))
        .execute(&mut *tx)
        .await
        .unwrap();
    let altered = sqlx::query(
        "UPDATE audit_log SET after_state = '{\"monthly_budget\":\"5000.00\"}' WHERE seq = 2",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(altered.rows_affected(), 1);
    tx.commit().await.unwrap();
    let report = verify_chain(AuditChain::Org(org), &store.audit_chain(org).await.unwrap());
    let found = report.first_break.unwrap();
    assert_eq!((found.seq, found.fault), (2, ChainFault::Altered));

    let other = three_entries(&store).await;
    let mut tx = owner.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL app.current_org_id = '{}'",
        other.as_uuid()
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    let removed = sqlx::query("DELETE FROM audit_log WHERE seq = 2")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(removed.rows_affected(), 1);
    tx.commit().await.unwrap();
    let report = verify_chain(
        AuditChain::Org(other),
        &store.audit_chain(other).await.unwrap(),
    );
    let found = report.first_break.unwrap();
    assert_eq!((found.seq, found.fault), (2, ChainFault::Missing));
}

/// Row-level security: a session acting for one organization neither sees nor writes another
/// organization's entries; without a tenant context only the platform chain is visible.
#[tokio::test]
async fn postgres_rls_keeps_chains_apart() {
    let Some(db) = pg::fresh_db().await else {
        return;
    };
    let store = db.store.clone();
    let a = three_entries(&store).await;
    let b = three_entries(&store).await;
    store
        .append_platform_audit(&draft(9, UserId::new()))
        .await
        .unwrap();
    let mut conn = db.app_connection().await;
    let db = &db;
    let count = |org: Option<OrgId>| {
        let set = org.map(|o| format!("SET LOCAL app.current_org_id = '{}'", o.as_uuid()));
        async move {
            let mut c = db.app_connection().await;
            let mut tx = c.begin().await.unwrap();
            if let Some(set) = set {
                sqlx::query(sqlx::AssertSqlSafe(set))
                    .execute(&mut *tx)
                    .await
                    .unwrap();
            }
            let rows: Vec<(Option<uuid::Uuid>,)> =
                sqlx::query_as("SELECT organization_id FROM audit_log")
                    .fetch_all(&mut *tx)
                    .await
                    .unwrap();
            rows.into_iter().map(|r| r.0).collect::<Vec<_>>()
        }
    };
    let seen_by_a = count(Some(a)).await;
    assert_eq!(seen_by_a.len(), 4, "a's three and the platform's one");
    assert!(
        seen_by_a
            .iter()
            .all(|o| *o == Some(a.as_uuid()) || o.is_none())
    );
    let seen_by_none = count(None).await;
    assert_eq!(seen_by_none, vec![None]);
    // Writing into b's chain while acting for a is refused by the policy.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL app.current_org_id = '{}'",
        a.as_uuid()
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    let forged = sqlx::query(
        "INSERT INTO audit_log (chain_id, organization_id, seq, at, action, target, prev_hash, hash)
         VALUES ($1, $1, 99, now(), 'x', 'x', 'x', 'x')",
    )
    .bind(b.as_uuid())
    .execute(&mut *tx)
    .await;
    assert!(
        forged
            .unwrap_err()
            .to_string()
            .contains("row-level security"),
        "the insert into another tenant's chain passed"
    );
    drop(tx);
    // The store's own reads agree, and the operators' function sees every chain.
    assert_eq!(store.list_audit(a, &all(100)).await.unwrap().len(), 3);
    assert_eq!(store.list_all_audit(&all(100)).await.unwrap().len(), 7);
    let _ = b;
}

/// Turns the injected fault on (every new audit entry refused by a trigger) or off.
type Fault<'a> = &'a (dyn Fn(bool) -> futures::future::BoxFuture<'a, ()> + Sync);

/// A change and its entry are one transaction ([`stratai_store::audited`]). With the entry's
/// append made to fail inside the database (a trigger refusing new entries: the fault a crash
/// between two transactions would be), each kind of write fails whole: an organization's
/// change, a platform change whose after-state is the write's result, a rule, a budget, the
/// tier catalog. Once the fault is gone, the same writes are made and each has its entry, in
/// the chain it belongs to, verified intact; a write that changes nothing has none.
async fn change_and_entry_commit_together<S>(backend: S, fault: Fault<'_>)
where
    S: fixtures::Store + AuditStore + Clone + 'static,
{
    use stratai_core::budget::BudgetScope;
    use stratai_core::ports::RuleScope;
    use stratai_store::audited::{audited, in_request, note_actor};

    let org = fixtures::org(&backend).await;
    let person = fixtures::user(&backend).await;
    let raw = stratai_store::Stores::from_backend(backend);
    let stores = audited(raw.clone());
    let admin = UserId::new();
    let renamed = stratai_core::directory::Organization {
        name: "Renamed".to_owned(),
        ..org.clone()
    };
    let rule = fixtures::rule(RuleScope::Org { org_id: org.id }, 5);
    let budget = fixtures::new_budget(org.id, BudgetScope::Org, "10.00", true);
    let tier = fixtures::new_tier(77);

    let writes = || async {
        in_request(Some("req-atomic".to_owned()), async {
            note_actor(admin);
            [
                stores.directory.update_org(&renamed).await.err(),
                stores
                    .directory
                    .set_user_active(person.id, false)
                    .await
                    .err(),
                stores.guardrails.put_rule(org.id, &rule).await.err(),
                stores.budgets.create_budget(org.id, &budget).await.err(),
                stores.tiers.upsert_tier(&tier).await.err(),
            ]
        })
        .await
    };

    fault(true).await;
    let failed = writes().await;
    assert!(failed.iter().all(Option::is_some), "{failed:?}");
    assert_eq!(raw.directory.get_org(org.id).await.unwrap().name, org.name);
    assert!(raw.directory.get_user(person.id).await.unwrap().active);
    assert!(raw.guardrails.get_rule(org.id, rule.id).await.is_err());
    assert!(raw.budgets.get_budget(org.id, budget.id).await.is_err());
    assert!(raw.tiers.get_tier(tier.id).await.is_err());
    assert!(
        raw.audit
            .list_audit(org.id, &all(100))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        raw.audit
            .list_platform_audit(&all(100))
            .await
            .unwrap()
            .is_empty()
    );

    fault(false).await;
    let made = writes().await;
    assert!(made.iter().all(Option::is_none), "{made:?}");
    assert_eq!(raw.directory.get_org(org.id).await.unwrap().name, "Renamed");
    let entries = raw.audit.list_audit(org.id, &all(100)).await.unwrap();
    let mut actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    actions.sort_unstable();
    assert_eq!(
        actions,
        ["budget.create", "organization.update", "rule.put"]
    );
    assert!(
        entries
            .iter()
            .all(|e| e.actor == Some(admin) && e.request_id.as_deref() == Some("req-atomic"))
    );
    let platform = raw.audit.list_platform_audit(&all(100)).await.unwrap();
    let deactivated = platform
        .iter()
        .find(|e| e.action == "user.deactivate")
        .unwrap();
    assert_eq!(deactivated.before.as_ref().unwrap()["active"], true);
    assert_eq!(deactivated.after.as_ref().unwrap()["active"], false);
    assert!(platform.iter().any(|e| e.action == "tier.upsert"));
    assert_eq!(platform.len(), 2);
    let chain = raw.audit.audit_chain(org.id).await.unwrap();
    assert!(verify_chain(AuditChain::Org(org.id), &chain).intact);

    // Deactivating the inactive person again changes nothing and records nothing; a write
    // outside a request (no caller) is not an admin change.
    in_request(None, async {
        note_actor(admin);
        stores
            .directory
            .set_user_active(person.id, false)
            .await
            .unwrap();
    })
    .await;
    stores
        .directory
        .set_user_active(person.id, true)
        .await
        .unwrap();
    assert_eq!(
        raw.audit
            .list_platform_audit(&all(100))
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn sqlite_change_and_entry_commit_together() {
    let scratch = stratai_testkit::Scratch::new();
    let url = format!("sqlite://{}", scratch.join("atomic.db").display());
    let store = stratai_store::SqliteStore::connect(&url).await.unwrap();
    let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
    let fault = |on: bool| {
        let raw = raw.clone();
        Box::pin(async move {
            let sql = if on {
                "CREATE TRIGGER injected_fault BEFORE INSERT ON audit_log \
                 BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            } else {
                "DROP TRIGGER injected_fault"
            };
            sqlx::query(sql).execute(&raw).await.unwrap();
        }) as futures::future::BoxFuture<'_, ()>
    };
    change_and_entry_commit_together(store.clone(), &fault).await;
    raw.close().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_change_and_entry_commit_together() {
    let Some(db) = pg::fresh_db().await else {
        return;
    };
    let owner_url = db.owner_url.clone();
    let fault = |on: bool| {
        let owner_url = owner_url.clone();
        Box::pin(async move {
            let mut owner = sqlx::PgConnection::connect(&owner_url).await.unwrap();
            let sql = if on {
                "CREATE FUNCTION injected_fault() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'injected fault'; END $$; \
                 CREATE TRIGGER injected_fault BEFORE INSERT ON audit_log \
                 FOR EACH ROW EXECUTE FUNCTION injected_fault()"
            } else {
                "DROP TRIGGER injected_fault ON audit_log; DROP FUNCTION injected_fault()"
            };
            sqlx::raw_sql(sql).execute(&mut owner).await.unwrap();
        }) as futures::future::BoxFuture<'_, ()>
    };
    change_and_entry_commit_together(db.store.clone(), &fault).await;
}
