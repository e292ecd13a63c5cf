//! The audit trail over HTTP on memory, SQLite and PostgreSQL: a change through the admin API
//! or the UI is an entry (who, when, which organization, what, before and after, the request
//! id); org admins read their organization's chain, operators every chain; listings page and
//! filter; verification finds an entry altered or removed directly in the database; the
//! export is JSON lines. (`tests/api_sweep.rs` checks that every mutating route writes one.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use axum::http::StatusCode;
use harness::*;
use serde_json::{Value, json};
use sqlx::Connection;
use stratai_core::audit::AuditEntry;

fn request_id(r: &Resp) -> String {
    r.headers
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

fn entries(page: &Value) -> Vec<AuditEntry> {
    serde_json::from_value(page["entries"].clone()).unwrap()
}

async fn changes_are_recorded_and_read_by_whom_they_concern(api: Api) {
    let w = org_fixture(&api.stores, "audited").await;
    let other = org_fixture(&api.stores, "elsewhere").await;
    let admin = api.token(w.admin.email.as_str()).await;
    // A plain member (the member below becomes an admin).
    let member = api.token(w.lead.email.as_str()).await;
    let outsider = api.token(other.admin.email.as_str()).await;
    let operator = api.token("admin@localhost").await;
    let audit = format!("/api/organizations/{}/audit", w.org);

    // A change by the org admin.
    let before = api
        .get(
            &format!("/api/organizations/{}/members/{}", w.org, w.member.id),
            &admin,
        )
        .await;
    let r = api
        .patch(
            &format!("/api/organizations/{}/members/{}", w.org, w.member.id),
            &admin,
            json!({"monthly_budget": "5", "role": "admin"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let rid = request_id(&r);
    let page = api.get(&format!("{audit}?request_id={rid}"), &admin).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    let found = entries(&page.json);
    assert_eq!(found.len(), 1, "{}", page.text);
    let e = &found[0];
    assert_eq!(e.action, "member.update");
    assert_eq!(e.target, format!("member/{}/{}", w.org, w.member.id));
    assert_eq!(e.org_id, Some(w.org));
    assert_eq!(e.actor, Some(w.admin.id));
    assert_eq!(e.request_id.as_deref(), Some(rid.as_str()));
    let (b, a) = (e.before.as_ref().unwrap(), e.after.as_ref().unwrap());
    assert_eq!(b["role"], before.json["role"]);
    assert_eq!(b["monthly_budget"], before.json["monthly_budget"]);
    assert_eq!(a["role"], "admin");
    assert_eq!(
        Some(a["monthly_budget"].clone()),
        Some(r.json["monthly_budget"].clone())
    );
    assert!((chrono::Utc::now() - e.at).num_seconds() < 60);

    // A deletion: the entity before, nothing after.
    let r = api
        .delete(&format!("/api/groups/{}", w.group), &admin)
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let page = api
        .get(&format!("{audit}?request_id={}", request_id(&r)), &admin)
        .await;
    let deleted = entries(&page.json);
    assert!(
        deleted
            .iter()
            .any(|e| e.action == "group.delete" && e.before.is_some() && e.after.is_none()),
        "{}",
        page.text
    );

    // A platform change by an operator goes to the platform chain.
    let r = api
        .patch(
            &format!("/api/users/{}", other.member.id),
            &operator,
            json!({"active": false}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let page = api
        .get(
            &format!("/api/audit?org_id=platform&request_id={}", request_id(&r)),
            &operator,
        )
        .await;
    let platform = entries(&page.json);
    assert_eq!(platform.len(), 1, "{}", page.text);
    assert_eq!(platform[0].action, "user.deactivate");
    assert_eq!(platform[0].org_id, None);
    assert_eq!(platform[0].before.as_ref().unwrap()["active"], true);
    assert_eq!(platform[0].after.as_ref().unwrap()["active"], false);

    // Who reads what: a member no, another organization's admin cannot tell it exists, the
    // operator reads every chain.
    assert_eq!(api.get(&audit, &member).await.status, StatusCode::FORBIDDEN);
    assert_eq!(
        api.get(&audit, &outsider).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        api.get("/api/audit", &admin).await.status,
        StatusCode::FORBIDDEN
    );
    let all = api.get("/api/audit?limit=500", &operator).await;
    let all = entries(&all.json);
    assert!(all.iter().any(|e| e.org_id == Some(w.org)));
    assert!(all.iter().any(|e| e.org_id.is_none()));
    let theirs = api
        .get(&format!("/api/audit?org_id={}", w.org), &operator)
        .await;
    assert!(
        entries(&theirs.json)
            .iter()
            .all(|e| e.org_id == Some(w.org))
    );

    // Filters and pages.
    let page = api
        .get(&format!("{audit}?action=group.&limit=500"), &admin)
        .await;
    assert!(
        entries(&page.json)
            .iter()
            .all(|e| e.action.starts_with("group."))
    );
    let page = api
        .get(&format!("{audit}?actor={}", w.admin.id), &admin)
        .await;
    let by_admin = entries(&page.json);
    assert!(by_admin.len() >= 2);
    let first = api.get(&format!("{audit}?limit=1"), &admin).await;
    let next = first.json["next"].as_str().unwrap().to_owned();
    let second = api
        .get(
            &format!("{audit}?limit=1&before={}", urlencode(&next)),
            &admin,
        )
        .await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text);
    let (one, two) = (&entries(&first.json)[0], &entries(&second.json)[0]);
    assert!(two.seq < one.seq, "newest first, no repeats");

    // Bad input names its field.
    for (query, field) in [
        ("limit=0", "limit"),
        ("before=nonsense", "before"),
        ("org_id=platform", "org_id"),
        (
            "since=2026-02-01T00:00:00Z&until=2026-01-01T00:00:00Z",
            "until",
        ),
    ] {
        let r = api.get(&format!("{audit}?{query}"), &admin).await;
        // 400 for a value that does not parse, 422 for one that parses and does not fit.
        assert!(
            r.status == StatusCode::BAD_REQUEST || r.status == StatusCode::UNPROCESSABLE_ENTITY,
            "{query}: {} {}",
            r.status,
            r.text
        );
        assert!(r.text.contains(field), "{query}: {}", r.text);
    }
    // An unknown parameter is refused by name, as every query of the API does.
    let r = api.get(&format!("{audit}?colour=red"), &admin).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("colour"), "{}", r.text);
    let r = api.get("/api/audit?org_id=nope", &operator).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("org_id"), "{}", r.text);

    // The chain verifies; the export is the chain, one entry per line, oldest first.
    let report = api.get(&format!("{audit}/verify"), &admin).await;
    assert_eq!(report.json["intact"], true, "{}", report.text);
    let export = api.get(&format!("{audit}/export"), &admin).await;
    assert_eq!(
        export.headers["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let lines: Vec<AuditEntry> = export
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, report.json["entries"].as_u64().unwrap());
    assert!(
        lines
            .windows(2)
            .all(|p| p[1].seq == p[0].seq + 1 && p[1].prev_hash == p[0].hash)
    );
    assert!(lines.iter().all(|e| e.computed_hash() == e.hash));
    // A chain longer than the export's page (500) streams whole, in order, across pages.
    for n in 0..1_100 {
        let draft = stratai_core::audit::AuditDraft {
            at: chrono::Utc::now(),
            actor: None,
            request_id: Some(format!("bulk-{n}")),
            action: "bulk.note".to_owned(),
            target: format!("note/{n}"),
            before: None,
            after: Some(serde_json::json!({ "n": n })),
        };
        api.stores.audit.append_audit(w.org, &draft).await.unwrap();
    }
    let export = api.get(&format!("{audit}/export"), &admin).await;
    let long: Vec<AuditEntry> = export
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(long.len(), lines.len() + 1_100);
    assert!(long.iter().enumerate().all(|(i, e)| e.seq == i as i64 + 1));
    assert!(long.windows(2).all(|p| p[1].prev_hash == p[0].hash));
    assert_eq!(long[..lines.len()], lines[..]);
    let platform = api.get("/api/audit/export", &operator).await;
    assert!(platform.text.lines().count() >= 1);
    let reports = api.get("/api/audit/verify", &operator).await;
    let reports = reports.json.as_array().unwrap();
    assert!(reports.iter().all(|r| r["intact"] == true), "{reports:?}");
    assert!(reports.iter().any(|r| r["chain"]["chain"] == "platform"));
}

fn urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("x", text)]).unwrap()[2..].to_owned()
}

on_every_backend!(changes_are_recorded_and_read_by_whom_they_concern);

/// Three changes in one organization's chain, through the API; returns the chain's path.
async fn three_changes(api: &Api) -> (OrgFixture, String, String) {
    let w = org_fixture(&api.stores, "tampered").await;
    let admin = api.token(w.admin.email.as_str()).await;
    for budget in ["5", "6", "7"] {
        let r = api
            .patch(
                &format!("/api/organizations/{}/members/{}", w.org, w.member.id),
                &admin,
                json!({"monthly_budget": budget}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let report = api
        .get(
            &format!("/api/organizations/{}/audit/verify", w.org),
            &admin,
        )
        .await;
    assert_eq!(report.json["intact"], true, "{}", report.text);
    assert_eq!(report.json["entries"], 3, "{}", report.text);
    let verify = format!("/api/organizations/{}/audit/verify", w.org);
    (w, admin, verify)
}

async fn assert_broken_at(api: &Api, path: &str, token: &str, seq: i64, fault: &str) {
    let report = api.get(path, token).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.text);
    assert_eq!(report.json["intact"], false, "{}", report.text);
    assert_eq!(report.json["first_break"]["seq"], seq, "{}", report.text);
    assert_eq!(
        report.json["first_break"]["fault"], fault,
        "{}",
        report.text
    );
}

#[tokio::test]
async fn sqlite_tampering_shows_in_verify() {
    let Some(api) = Api::start(Kind::Sqlite).await else {
        return;
    };
    let Guard::Folder(folder) = api.database() else {
        panic!("sqlite runs in a folder")
    };
    let url = format!("sqlite://{}", folder.join("server.db").display());
    let (w, admin, verify) = three_changes(&api).await;
    let raw = sqlx::SqlitePool::connect(&url).await.unwrap();
    // The application's own connection cannot: the triggers refuse.
    let refused = sqlx::query("UPDATE audit_log SET after_state = '{}' WHERE chain_id = ?")
        .bind(w.org.as_uuid())
        .execute(&raw)
        .await;
    assert!(refused.is_err());
    // Whoever holds the file drops the trigger and edits: verify shows where.
    sqlx::query("DROP TRIGGER audit_log_no_update")
        .execute(&raw)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE audit_log SET after_state = replace(after_state, '\"6', '\"600') \
         WHERE chain_id = ? AND seq = 2",
    )
    .bind(w.org.as_uuid())
    .execute(&raw)
    .await
    .unwrap();
    assert_broken_at(&api, &verify, &admin, 2, "altered").await;

    let (w, admin, verify) = three_changes(&api).await;
    sqlx::query("DROP TRIGGER audit_log_no_delete")
        .execute(&raw)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_log WHERE chain_id = ? AND seq = 1")
        .bind(w.org.as_uuid())
        .execute(&raw)
        .await
        .unwrap();
    assert_broken_at(&api, &verify, &admin, 1, "missing").await;
    raw.close().await;
}

#[tokio::test]
async fn postgres_tampering_shows_in_verify() {
    let Some(api) = Api::start(Kind::Postgres).await else {
        return;
    };
    let Guard::Pg(db) = api.database() else {
        panic!("postgres has a database")
    };
    let (w, admin, verify) = three_changes(&api).await;
    // The app role may not; the owner can, after switching the trigger off.
    let tenant = format!("SET LOCAL app.current_org_id = '{}'", w.org.as_uuid());
    let mut app = db.app_connection().await;
    let mut tx = app.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(tenant.clone()))
        .execute(&mut *tx)
        .await
        .unwrap();
    let refused = sqlx::query("DELETE FROM audit_log WHERE seq = 2")
        .execute(&mut *tx)
        .await;
    assert!(
        refused
            .unwrap_err()
            .to_string()
            .contains("permission denied")
    );
    drop(tx);
    let mut owner = sqlx::PgConnection::connect(&db.owner_url).await.unwrap();
    let mut tx = owner.begin().await.unwrap();
    sqlx::query("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(tenant))
        .execute(&mut *tx)
        .await
        .unwrap();
    let n = sqlx::query(
        "UPDATE audit_log SET actor_id = NULL WHERE seq = 3 AND organization_id IS NOT NULL",
    )
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(n.rows_affected(), 1);
    tx.commit().await.unwrap();
    assert_broken_at(&api, &verify, &admin, 3, "altered").await;

    let (w, admin, verify) = three_changes(&api).await;
    let mut tx = owner.begin().await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET LOCAL app.current_org_id = '{}'",
        w.org.as_uuid()
    )))
    .execute(&mut *tx)
    .await
    .unwrap();
    let n = sqlx::query("DELETE FROM audit_log WHERE seq = 3 AND organization_id IS NOT NULL")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n.rows_affected(), 1);
    tx.commit().await.unwrap();
    // The newest entry removed: the chain's head still names it.
    assert_broken_at(&api, &verify, &admin, 3, "head_mismatch").await;
}
