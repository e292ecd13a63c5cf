#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! StratAI organizations as LiteLLM Enterprise organizations, and the detection of whether
//! the proxy has them.
//!
//! The kit's proxy has no Enterprise license, so the organizations path runs here against
//! `common::fake_litellm`, a stateful fake whose request handling and answer shapes are taken
//! from LiteLLM 1.108.7's own source and the kit's recorded samples (see that file). It is
//! verified against that fake only, never against a licensed proxy. The fallback (no
//! license) runs on the same fake with sample 01's 403, and on the real proxy in
//! `tests/sync_real.rs`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::fake::{FakeDirectory, basic, premium};
use common::fake_litellm::{self, Shared, calls, organization_calls};
use rust_decimal_macros::dec;
use serde_json::{Value, json};
use stratai_core::ids::OrgId;
use stratai_core::ports::{OutboxEntity, OutboxEvent};
use stratai_litellm::sync::{
    Applied, DriftKind, MemoryKeyVault, NO_MODELS, OrgMapping, Organizations, SyncConfig,
    SyncEngine,
};
use stratai_litellm::*;
use wiremock::MockServer;

fn engine(
    server: &MockServer,
    dir: &Arc<FakeDirectory>,
    organizations: Organizations,
) -> SyncEngine {
    let mut config = ClientConfig::new(server.uri(), Secret::new("sk-master-test"));
    config.retry = RetryPolicy {
        max_retries: 0,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
    };
    config.request_timeout = Duration::from_secs(5);
    let client = LiteLlmClient::new(config).unwrap();
    let sync = SyncConfig {
        max_attempts: 3,
        backoff: RetryPolicy {
            max_retries: 0,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(20),
        },
        organizations,
        ..SyncConfig::default()
    };
    SyncEngine::new(
        client,
        dir.clone(),
        dir.clone(),
        Arc::new(MemoryKeyVault::new()),
        sync,
    )
}

/// Runs passes until the outbox is empty; returns the reports.
async fn drain(engine: &SyncEngine, dir: &FakeDirectory) -> Vec<sync::PassReport> {
    let mut reports = Vec::new();
    for _ in 0..20 {
        if dir.undelivered() == 0 {
            return reports;
        }
        reports.push(engine.run_once().await.unwrap());
        dir.make_all_available();
    }
    panic!(
        "the outbox did not drain: {} undelivered, dead letters {:?}",
        dir.undelivered(),
        dir.dead()
    );
}

fn org_of(state: &Shared, org: OrgId) -> Option<Value> {
    state.lock().unwrap().orgs.get(&org.to_string()).cloned()
}

fn team(state: &Shared, id: impl ToString) -> Value {
    state.lock().unwrap().teams[&id.to_string()].clone()
}

fn kinds(report: &sync::DriftReport) -> Vec<DriftKind> {
    report.drifts.iter().map(|d| d.kind).collect()
}

#[tokio::test]
async fn auto_detects_enterprise_and_maps_each_org_to_a_litellm_organization() {
    let (server, state) = fake_litellm::start(true).await;
    let dir = Arc::new(FakeDirectory::new());
    let org = dir.add_org("acme");
    dir.set_org_budget(org, Some(dec!(100)));
    let eng = dir.add_group(org, "eng", Some(vec![basic(), premium()]), Some(dec!(10)));
    // no tier at all (the sentinel model) and a budget above the organization's
    let ops = dir.add_group(org, "ops", Some(vec![]), Some(dec!(500)));
    let alice = dir.add_member(org, "alice@acme.test", None, Some(dec!(1)), &[eng]);
    let bob = dir.add_member(org, "bob@acme.test", None, None, &[]);
    let engine = engine(&server, &dir, Organizations::Auto);
    assert_eq!(engine.org_mapping(), None, "not probed before it is needed");

    let reports = drain(&engine, &dir).await;
    assert!(dir.dead().is_empty(), "{:?}", dir.dead());
    assert_eq!(reports[0].org_mapping, Some(OrgMapping::Organizations));
    assert_eq!(engine.org_mapping(), Some(OrgMapping::Organizations));
    assert_eq!(calls(&server, "POST", "/organization/new").await, 1);

    // The organization: our id, the slug, its tiers' models (+ the sentinel), its budget.
    let o = org_of(&state, org).expect("a LiteLLM organization");
    assert_eq!(o["organization_alias"], json!("acme"));
    assert_eq!(
        o["models"],
        json!(["mock-gpt", "mock-gpt-premium", NO_MODELS])
    );
    assert_eq!(o["litellm_budget_table"]["max_budget"], json!(100));
    assert_eq!(o["litellm_budget_table"]["budget_duration"], json!("1mo"));
    assert_eq!(o["metadata"]["managed_by"], json!("stratai"));
    assert_eq!(o["metadata"]["stratai_org_id"], json!(org.to_string()));

    // Its teams and keys belong to it; a team budget is capped at the organization's.
    let org_text = org.to_string();
    assert_eq!(team(&state, eng)["organization_id"], json!(org_text));
    assert_eq!(team(&state, eng)["max_budget"], json!(10));
    assert_eq!(team(&state, ops)["organization_id"], json!(org_text));
    assert_eq!(team(&state, ops)["models"], json!([NO_MODELS]));
    assert_eq!(team(&state, ops)["max_budget"], json!(100));
    for user in [alice, bob] {
        let s = state.lock().unwrap();
        let keys = s.keys_of(&org_text, &user.to_string());
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["organization_id"], json!(org_text), "{user}");
    }
    let clean = engine.reconcile(false).await.unwrap();
    assert!(clean.is_clean(), "{:?}", clean.drifts);
    assert_eq!(clean.org_mapping, Some(OrgMapping::Organizations));

    // A tier unsubscribed: the organization loses its models, then its teams and keys.
    dir.set_subscription(org, &premium(), false);
    drain(&engine, &dir).await;
    assert!(dir.dead().is_empty(), "{:?}", dir.dead());
    assert_eq!(
        org_of(&state, org).unwrap()["models"],
        json!(["mock-gpt", NO_MODELS])
    );
    assert_eq!(team(&state, eng)["models"], json!(["mock-gpt"]));
    // ... and back: the organization gains it first (LiteLLM would refuse the team otherwise).
    dir.set_subscription(org, &premium(), true);
    drain(&engine, &dir).await;
    assert!(dir.dead().is_empty(), "{:?}", dir.dead());
    assert_eq!(
        team(&state, eng)["models"],
        json!(["mock-gpt", "mock-gpt-premium"])
    );

    // The org budget drops below a team's (budgets emit no outbox event): the reconciler
    // finds it and repairs the organization, then caps the team.
    dir.set_org_budget(org, Some(dec!(5)));
    let drift = engine.reconcile(false).await.unwrap();
    let found = kinds(&drift);
    assert!(
        found.contains(&DriftKind::OrgBudget) && found.contains(&DriftKind::TeamBudget),
        "{found:?}"
    );
    engine.reconcile(true).await.unwrap();
    assert_eq!(
        org_of(&state, org).unwrap()["litellm_budget_table"]["max_budget"],
        json!(5)
    );
    assert_eq!(team(&state, eng)["max_budget"], json!(5));
    // No org budget any more: LiteLLM's is removed.
    dir.set_org_budget(org, None);
    engine.reconcile(true).await.unwrap();
    assert_eq!(
        org_of(&state, org).unwrap()["litellm_budget_table"]["max_budget"],
        Value::Null
    );
    assert_eq!(team(&state, eng)["max_budget"], json!(10));
    assert!(engine.reconcile(false).await.unwrap().is_clean());

    // Hand-made drift: a team and a key taken out of the organization, its models changed.
    {
        let mut s = state.lock().unwrap();
        s.teams.get_mut(&eng.to_string()).unwrap()["organization_id"] = Value::Null;
        let token = s.keys_of(&org_text, &bob.to_string())[0]["token"]
            .as_str()
            .unwrap()
            .to_owned();
        s.keys.get_mut(&token).unwrap()["organization_id"] = Value::Null;
        s.orgs.get_mut(&org_text).unwrap()["models"] = json!(["mock-gpt"]);
    }
    let drift = engine.reconcile(true).await.unwrap();
    let found = kinds(&drift);
    for kind in [DriftKind::TeamOrg, DriftKind::KeyOrg, DriftKind::OrgModels] {
        assert!(found.contains(&kind), "{kind:?} not in {found:?}");
    }
    assert!(engine.reconcile(false).await.unwrap().is_clean());
    assert_eq!(team(&state, eng)["organization_id"], json!(org_text));

    // A stale org event (older than the version LiteLLM records) writes nothing.
    assert!(dir.org_version(org) > 1);
    let stale = OutboxEvent {
        seq: 0,
        org_id: org,
        entity: OutboxEntity::Org(org),
        deleted: false,
        version: 1,
        attempts: 0,
        last_error: None,
        available_at: Utc::now(),
        created_at: Utc::now(),
    };
    let updates = calls(&server, "PATCH", "/organization/update").await;
    assert_eq!(engine.apply(&stale).await.unwrap(), Applied::Stale);
    assert_eq!(
        calls(&server, "PATCH", "/organization/update").await,
        updates
    );

    // Deactivated: no tier is usable, so the organization, its teams and keys keep only
    // the sentinel model; reactivated: back.
    dir.set_org_active(org, false);
    drain(&engine, &dir).await;
    assert!(dir.dead().is_empty(), "{:?}", dir.dead());
    assert_eq!(org_of(&state, org).unwrap()["models"], json!([NO_MODELS]));
    assert_eq!(team(&state, eng)["models"], json!([NO_MODELS]));
    {
        let s = state.lock().unwrap();
        assert_eq!(
            s.keys_of(&org_text, &alice.to_string())[0]["models"],
            json!([NO_MODELS])
        );
    }
    dir.set_org_active(org, true);
    drain(&engine, &dir).await;
    assert_eq!(
        team(&state, eng)["models"],
        json!(["mock-gpt", "mock-gpt-premium"])
    );

    // Deleted: the organization goes, with its teams and keys.
    dir.delete_org(org);
    drain(&engine, &dir).await;
    assert!(dir.dead().is_empty(), "{:?}", dir.dead());
    assert!(org_of(&state, org).is_none());
    {
        let s = state.lock().unwrap();
        assert!(s.teams_of(&org_text).is_empty());
        assert!(
            s.keys
                .values()
                .all(|k| k["metadata"]["stratai_org_id"] != json!(org_text))
        );
    }
    assert_eq!(calls(&server, "DELETE", "/organization/delete").await, 1);
    // Probed once for all the passes, and once per reconcile pass (7 of them), by design.
    assert_eq!(probes(&server).await, 1 + 7);
}

/// Requests of the availability probe (`/organization/info` for the empty id).
async fn probes(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| {
            r.url.path() == "/organization/info"
                && r.url
                    .query_pairs()
                    .any(|(k, v)| k == "organization_id" && v.is_empty())
        })
        .count()
}

#[tokio::test]
async fn auto_falls_back_to_metadata_on_the_enterprise_403_and_notices_a_license_later() {
    let (server, state) = fake_litellm::start(false).await;
    let dir = Arc::new(FakeDirectory::new());
    let org = dir.add_org("globex");
    dir.set_org_budget(org, Some(dec!(100)));
    let eng = dir.add_group(org, "eng", Some(vec![basic()]), Some(dec!(10)));
    let carol = dir.add_member(org, "carol@globex.test", None, Some(dec!(1)), &[eng]);
    let engine = engine(&server, &dir, Organizations::Auto);

    let mut reports = drain(&engine, &dir).await;
    // more passes, with org, group and member events
    dir.set_subscription(org, &premium(), false);
    dir.set_member_budget(org, carol, Some(dec!(2)));
    reports.extend(drain(&engine, &dir).await);
    assert!(reports.len() > 1, "several passes");
    assert!(dir.dead().is_empty(), "{:?}", dir.dead());
    assert!(
        reports
            .iter()
            .all(|r| r.org_mapping == Some(OrgMapping::Metadata))
    );
    // One probe answered 403 (sample 01's body); never retried, never asked again.
    assert_eq!(organization_calls(&server).await, 1);
    let org_text = org.to_string();
    {
        let s = state.lock().unwrap();
        assert!(s.orgs.is_empty());
        let t = &s.teams[&eng.to_string()];
        assert_eq!(t["organization_id"], Value::Null);
        assert_eq!(t["metadata"]["stratai_org_id"], json!(org_text));
        let keys = s.keys_of(&org_text, &carol.to_string());
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0]["organization_id"], Value::Null);
    }
    let clean = engine.reconcile(false).await.unwrap();
    assert!(clean.is_clean(), "{:?}", clean.drifts);
    assert_eq!(clean.org_mapping, Some(OrgMapping::Metadata));
    assert_eq!(
        organization_calls(&server).await,
        2,
        "reconcile probes again"
    );

    // A license is installed: the next reconcile notices, reports and repairs.
    state.lock().unwrap().enterprise = true;
    let drift = engine.reconcile(false).await.unwrap();
    assert_eq!(drift.org_mapping, Some(OrgMapping::Organizations));
    let found = kinds(&drift);
    for kind in [DriftKind::MissingOrg, DriftKind::TeamOrg, DriftKind::KeyOrg] {
        assert!(found.contains(&kind), "{kind:?} not in {found:?}");
    }
    engine.reconcile(true).await.unwrap();
    assert!(engine.reconcile(false).await.unwrap().is_clean());
    assert!(org_of(&state, org).is_some());
    assert_eq!(team(&state, eng)["organization_id"], json!(org_text));

    // And removed again: the first 403 switches back to metadata, without an error.
    state.lock().unwrap().enterprise = false;
    dir.set_group_budget(org, eng, Some(dec!(20)));
    drain(&engine, &dir).await;
    assert!(dir.dead().is_empty(), "{:?}", dir.dead());
    assert_eq!(engine.org_mapping(), Some(OrgMapping::Metadata));
    assert_eq!(team(&state, eng)["max_budget"], json!(20));
}

#[tokio::test]
async fn off_never_asks_and_on_without_a_license_dead_letters_with_the_reason() {
    let (server, _) = fake_litellm::start(true).await;
    let dir = Arc::new(FakeDirectory::new());
    let org = dir.add_org("initech");
    dir.add_group(org, "eng", Some(vec![basic()]), None);
    let off = engine(&server, &dir, Organizations::Off);
    let reports = drain(&off, &dir).await;
    assert_eq!(reports[0].org_mapping, Some(OrgMapping::Metadata));
    assert!(off.reconcile(false).await.unwrap().is_clean());
    assert_eq!(organization_calls(&server).await, 0);

    let (server, _) = fake_litellm::start(false).await;
    let dir = Arc::new(FakeDirectory::new());
    let org = dir.add_org("umbrella");
    dir.add_group(org, "eng", Some(vec![basic()]), None);
    let on = engine(&server, &dir, Organizations::On);
    drain(&on, &dir).await;
    let dead = dir.dead();
    assert_eq!(dead.len(), 2, "the org and the group event: {dead:?}");
    for event in &dead {
        let reason = event.last_error.as_deref().unwrap();
        assert!(reason.contains("gave up after 3 attempts"), "{reason}");
        assert!(reason.contains("enterprise"), "{reason}");
    }
}

#[tokio::test]
async fn the_probe_reads_the_license_gate_and_nothing_else() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, ResponseTemplate};
    // (status, body, answer): Some(bool) = available or not, None = an error
    let cases: [(u16, Value, Option<bool>); 6] = [
        // sample 04-organization-info.json
        (
            403,
            json!({"detail": {"error": fake_litellm::ENTERPRISE_ONLY}}),
            Some(false),
        ),
        // a licensed proxy: `info_organization` raises 404 for an unknown id
        (
            404,
            json!({"detail": {"error": "Organization not found"}}),
            Some(true),
        ),
        // the route exists past the license gate but refuses the empty id
        (
            422,
            json!({"detail": [{"type": "missing", "loc": ["query", "organization_id"], "msg": "Field required"}]}),
            Some(true),
        ),
        // no such route (not LiteLLM, or a version without organizations)
        (404, json!({"detail": "Not Found"}), Some(false)),
        // says nothing about the license
        (
            401,
            json!({"error": {"message": "Authentication Error, Invalid proxy server token passed.", "type": "auth_error", "param": "None", "code": "401"}}),
            None,
        ),
        (
            503,
            json!({"error": {"message": "maintenance", "type": "None", "param": "None", "code": "503"}}),
            None,
        ),
    ];
    for (status, body, expected) in cases {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/organization/info"))
            .respond_with(ResponseTemplate::new(status).set_body_json(body.clone()))
            .mount(&server)
            .await;
        let client =
            LiteLlmClient::new(ClientConfig::new(server.uri(), Secret::new("sk-m"))).unwrap();
        let answer = client.organizations_available().await;
        match expected {
            Some(want) => assert_eq!(answer.unwrap(), want, "{status} {body}"),
            None => assert!(answer.is_err(), "{status} {body}: {answer:?}"),
        }
    }
}
