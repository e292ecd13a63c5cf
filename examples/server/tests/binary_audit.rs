//! The audit trail in the deployed binary: the server process (`stratai-server`, dev mode)
//! records an admin change made over HTTP, with its author and request id, on SQLite and on
//! PostgreSQL. (The router-level tests build the state the way the binary does; this one runs
//! the binary itself, which once served unaudited stores while the tests passed.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use harness::{Backing, Db, on_both, start_process};
use serde_json::{Value, json};

async fn admin_changes_are_audited_by_the_binary(db: Db) {
    let Some(backing) = Backing::new(db).await else {
        return;
    };
    let server = start_process(&backing, &backing.dir.join("usage.log"), &[]).await;
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{}/auth/dev/token", server.base))
        .json(&json!({ "email": "admin@localhost" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap();
    let orgs: Value = http
        .get(format!("{}/api/organizations", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = orgs.get("items").unwrap_or(&orgs);
    let org = list[0]["id"].as_str().unwrap().to_owned();
    let hostile = "<script>alert(1)</script> Co";
    let changed = http
        .patch(format!("{}/api/organizations/{org}", server.base))
        .bearer_auth(token)
        .header("x-request-id", "binary-audit-1")
        .json(&json!({ "name": hostile }))
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200, "{}", changed.text().await.unwrap());
    let page: Value = http
        .get(format!("{}/api/organizations/{org}/audit", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let entries = page["entries"].as_array().unwrap();
    let entry = entries
        .iter()
        .find(|e| e["action"] == "organization.update")
        .unwrap_or_else(|| panic!("no organization.update entry: {page}"));
    assert_eq!(entry["request_id"], "binary-audit-1");
    assert_eq!(entry["after"]["name"], hostile);
    assert!(entry["actor"].is_string(), "{entry}");
    let verify: Value = http
        .get(format!(
            "{}/api/organizations/{org}/audit/verify",
            server.base
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(verify["intact"], true, "{verify}");
}

on_both!(admin_changes_are_audited_by_the_binary);
