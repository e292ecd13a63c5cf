#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The sync engine against a faulty fake LiteLLM (wiremock): permanent errors are
//! dead-lettered after `max_attempts` with the reason kept; transient ones are retried with
//! backoff and not dead-lettered early.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fake::{FakeDirectory, basic};
use serde_json::json;
use stratai_core::ports::OutboxStore;
use stratai_litellm::sync::{MemoryKeyVault, SyncConfig, SyncEngine};
use stratai_litellm::*;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn engine(
    base: &str,
    dir: &Arc<FakeDirectory>,
    max_attempts: u32,
    max_transient_attempts: u32,
) -> SyncEngine {
    let mut config = ClientConfig::new(base, Secret::new("sk-master-test"));
    config.retry = RetryPolicy {
        max_retries: 0,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(2),
    };
    config.request_timeout = Duration::from_secs(2);
    let client = LiteLlmClient::new(config).unwrap();
    let sync = SyncConfig {
        max_attempts,
        max_transient_attempts,
        backoff: RetryPolicy {
            max_retries: 0,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(2),
        },
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

#[tokio::test]
async fn permanent_errors_are_dead_lettered_with_their_reason() {
    let server = MockServer::start().await;
    Mock::given(method("GET")).and(path("/team/info"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {"message": "Team not found", "type": "auth_error", "param": "None", "code": "404"}})))
        .mount(&server).await;
    Mock::given(method("POST")).and(path("/team/new"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {"message": "invalid team payload", "type": "bad_request_error", "param": null, "code": "400"}})))
        .mount(&server).await;
    let dir = Arc::new(FakeDirectory::new());
    let org = dir.add_org("permanent-org");
    dir.add_group(org, "eng", Some(vec![basic()]), None);
    let engine = engine(&server.uri(), &dir, 3, 100);

    let first = engine.run_once().await.unwrap();
    assert_eq!(first.failed, 2, "{first:?}");
    // Backoff: nothing is due right away.
    assert_eq!(engine.run_once().await.unwrap().events, 0);
    for _ in 0..2 {
        dir.make_all_available();
        engine.run_once().await.unwrap();
    }
    assert_eq!(dir.undelivered(), 0);
    let dead = dir.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 2, "the org and the group event");
    for event in &dead {
        let reason = event.last_error.as_deref().unwrap();
        assert!(reason.contains("gave up after 3 attempts"), "{reason}");
        assert!(reason.contains("invalid team payload"), "{reason}");
        assert!(!reason.contains("sk-master-test"));
    }
}

#[tokio::test]
async fn transient_errors_are_retried_not_dead_lettered_and_recover() {
    let server = MockServer::start().await;
    // LiteLLM answers 503 three times, then works.
    Mock::given(method("GET"))
        .and(path("/team/info"))
        .respond_with(ResponseTemplate::new(503).set_body_string("maintenance"))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("GET")).and(path("/team/info"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"error": {"message": "Team not found", "type": "auth_error", "param": "None", "code": "404"}})))
        .mount(&server).await;
    Mock::given(method("POST"))
        .and(path("/team/new"))
        .respond_with(ResponseTemplate::new(200).set_body_json(
            json!({"team_id": "x", "models": ["mock-gpt"], "members_with_roles": []}),
        ))
        .mount(&server)
        .await;
    let dir = Arc::new(FakeDirectory::new());
    let org = dir.add_org("transient-org");
    let group = dir.add_group(org, "eng", Some(vec![basic()]), None);
    // max_attempts 1 would dead-letter a permanent error at once; transient ones have 10.
    let engine = engine(&server.uri(), &dir, 1, 10);
    let mut passes = 0;
    while dir.undelivered() > 0 && passes < 10 {
        engine.run_once().await.unwrap();
        dir.make_all_available();
        passes += 1;
    }
    assert_eq!(dir.undelivered(), 0);
    assert!(dir.dead().is_empty(), "{:?}", dir.dead());
    assert!(passes >= 2, "the outage needed retries");
    let created: Vec<_> = server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == "/team/new")
        .collect();
    let body: serde_json::Value = created.last().unwrap().body_json().unwrap();
    assert_eq!(body["team_id"], json!(group.to_string()));
    assert_eq!(body["team_alias"], json!("transient-org/eng"));
    assert_eq!(body["models"], json!(["mock-gpt"]));
    assert_eq!(body["metadata"]["managed_by"], json!("stratai"));
}
