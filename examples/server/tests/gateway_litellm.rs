//! The gateway against the real LiteLLM proxy (started by `scripts/test.sh` from
//! `../shared/litellm`, which exports `STRATAI_LITELLM_URL` and `STRATAI_LITELLM_MASTER_KEY`):
//! a member's chat goes through their own virtual key, the usage record matches the row of
//! LiteLLM's spend log, and the spend reconciler finds no gap between the gateway's records
//! and LiteLLM's spend logs (and does find one when a record is withheld or altered). The
//! server is configured with the kit's prices for its models (`STRATAI_PROVIDER_PRICES`), so
//! its provider cost is what LiteLLM charges. Without the proxy the test says it was
//! skipped; under `CI=true` that is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use harness::{KIT_PRICES, MockMember, Proxy, app, litellm_proxy, mock_gpt_member};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use stratai_core::ids::RequestId;
use stratai_core::money::Money;
use stratai_core::usage::{UsageQuery, UsageStatus};
use stratai_litellm::sync::key_alias;
use stratai_litellm::sync::{CoreDirectory, MemoryKeyVault, SyncConfig, SyncEngine};
use stratai_litellm::{ClientConfig, KeyListQuery, KeyRef, LiteLlmClient, Secret, SpendLogsFilter};
use stratai_server::config::Config;
use stratai_server::gateway::setup::GatewayOptions;
use stratai_server::stores::Stores;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_chat_goes_through_their_virtual_key_and_matches_the_spend_log() {
    let Some(Proxy {
        url: proxy_url,
        master,
    }) = litellm_proxy()
    else {
        return;
    };
    let dir = stratai_testkit::Scratch::new();
    let sqlite_url = format!("sqlite://{}/gw.db?mode=rwc", dir.path().display());
    let env: HashMap<String, String> = [
        ("DATABASE_URL".to_owned(), sqlite_url.clone()),
        ("LITELLM_URL".to_owned(), proxy_url.clone()),
        ("LITELLM_MASTER_KEY".to_owned(), master.clone()),
        ("STRATAI_PROVIDER_PRICES".to_owned(), KIT_PRICES.to_owned()),
    ]
    .into();
    let config = Config::load(&env).unwrap();
    let stores = Stores::open(&sqlite_url, None).await.unwrap();
    let mut options = GatewayOptions::from_config(&config);
    options.runtime.spool = Some(dir.join("usage.spool"));
    let (app, gateway) = app(&config, &stores, stores.clone(), options).await;
    assert_eq!(gateway.provider, "litellm");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // A tier holding the proxy's `mock-gpt`, an org subscribed to it, one member.
    let MockMember {
        org,
        user,
        email,
        tag,
    } = mock_gpt_member(&stores, "Proxy Co", (Decimal::ONE, Decimal::TWO), None).await;
    let http = reqwest::Client::new();
    let token: Value = http
        .post(format!("{base}/auth/dev/token"))
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    // Readiness reports the real proxy as reachable.
    let ready: Value = http
        .get(format!("{base}/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["llm_upstream"], "ok", "{ready}");
    let client = LiteLlmClient::new(ClientConfig::new(
        proxy_url.trim_end_matches('/'),
        Secret::new(master),
    ))
    .unwrap();
    // The proxy charges what KIT_PRICES says (per token there, per million tokens here).
    let info = client.model_info().await.unwrap();
    let mock = info
        .iter()
        .find(|m| m.model_name == "mock-gpt")
        .expect("the kit serves mock-gpt");
    let per_token = |d: Option<Decimal>| d.map(|d| (d * Decimal::from(1_000_000)).normalize());
    assert_eq!(
        (
            per_token(mock.model_info.input_cost_per_token),
            per_token(mock.model_info.output_cost_per_token)
        ),
        (Some(Decimal::from(1000)), Some(Decimal::from(2000))),
        "the kit's mock-gpt prices changed; update KIT_PRICES"
    );
    let started = Utc::now();

    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({
            "model": "mock-gpt",
            "messages": [{"role": "user", "content": "hello through the proxy"}],
            "max_tokens": 8
        }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let rid: RequestId = headers["x-stratai-request-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The default configuration batches usage writes (the usage log has the record at once;
    // the store within the batch's linger), so the record is awaited, not assumed.
    let mut record = None;
    for _ in 0..100 {
        if let Ok(r) = stores.usage.get(org, rid).await {
            record = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let record = record.expect("the usage record is stored within five seconds");
    assert_eq!(record.status, UsageStatus::Success);
    let upstream_id = record.litellm_request_id.clone().unwrap();
    assert_eq!(body["id"], upstream_id.as_str());

    // The call was made with the member's own key (alias and owner are theirs), and the
    // in-process sync, which has meanwhile consumed the outbox events of the org and member,
    // kept that one key instead of replacing it: the gateway and the sync share one vault.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let keys = client
        .key_list(&KeyListQuery {
            key_alias: Some(key_alias(org, user)),
            ..KeyListQuery::default()
        })
        .await
        .unwrap();
    let mine: Vec<_> = keys
        .iter()
        .filter(|k| k.key_alias.as_deref() == Some(key_alias(org, user).as_str()))
        .collect();
    assert_eq!(mine.len(), 1, "exactly one key for the member: {mine:?}");
    let key = mine[0];
    let again = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({
            "model": "mock-gpt",
            "messages": [{"role": "user", "content": "again, same key"}],
            "max_tokens": 8
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200, "{}", again.text().await.unwrap());
    assert_eq!(key.user_id.as_deref(), Some(user.to_string().as_str()));

    // LiteLLM's spend log has the same call with the same token counts.
    let mut row = None;
    for _ in 0..60 {
        let rows = client
            .spend_logs(&SpendLogsFilter::User(user.to_string()))
            .await
            .unwrap_or_default();
        if let Some(r) = rows.into_iter().find(|r| r.request_id == upstream_id) {
            row = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let row = row.expect("the call never reached LiteLLM's spend log");
    assert_eq!(row.prompt_tokens, u64::from(record.input_tokens));
    assert_eq!(row.completion_tokens, u64::from(record.output_tokens));
    if let Some(token) = key.token.as_deref() {
        assert_eq!(row.api_key.as_deref(), Some(token));
    }
    // The configured price gives the record LiteLLM's cost: $1 per 1k prompt tokens, $2 per
    // 1k completion tokens.
    assert_eq!(
        record.provider_cost.amount(),
        Decimal::new(i64::from(record.input_tokens), 3)
            + Decimal::new(2 * i64::from(record.output_tokens), 3),
        "the usage record is not priced with the configured provider prices \
         (`Config::prices` must reach the Gatekeeper's `GatekeeperConfig::prices`)"
    );

    // The spend reconciler over the gateway's records of this test's window: no gap.
    let third = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({
            "model": "mock-gpt",
            "messages": [{"role": "user", "content": "a third call, for the reconciler"}],
            "max_tokens": 6
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 200, "{}", third.text().await.unwrap());
    let from = started - chrono::Duration::minutes(1);
    let to = Utc::now() + chrono::Duration::minutes(1);
    // Awaited as above: the third record reaches the store within the batch's linger.
    let mut records = Vec::new();
    for _ in 0..100 {
        records = stores
            .usage
            .query(
                org,
                &UsageQuery {
                    from: Some(from),
                    to: Some(to),
                    ..UsageQuery::default()
                },
                1_000,
            )
            .await
            .unwrap();
        if records.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(records.len(), 3, "{records:#?}");
    assert!(records.iter().all(|r| r.provider_cost > Money::ZERO));
    let reconciler = SyncEngine::new(
        client.clone(),
        Arc::new(CoreDirectory::new(
            stores.directory.clone(),
            stores.tiers.clone(),
        )),
        stores.outbox.clone(),
        Arc::new(MemoryKeyVault::new()),
        SyncConfig::default(),
    );
    let tolerance = Decimal::new(1, 6);
    let mut clean = None;
    let mut last = None;
    for _ in 0..60 {
        let report = reconciler
            .reconcile_spend(&records, from, to, tolerance)
            .await
            .unwrap();
        if report.is_clean() && report.matched == records.len() {
            clean = Some(report);
            break;
        }
        last = Some(report);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let report = clean.unwrap_or_else(|| panic!("the spend reconciler found a gap: {last:#?}"));
    assert_eq!(report.matched, 3);
    assert!(
        (report.stratai_total - report.litellm_total).abs() <= tolerance * Decimal::from(3),
        "{report:?}"
    );
    assert!(report.litellm_total > Decimal::ZERO, "{report:?}");

    // A withheld record is a gap: LiteLLM's row for it has no StratAI record.
    let withheld = records[0].litellm_request_id.clone().unwrap();
    let gap = reconciler
        .reconcile_spend(&records[1..], from, to, tolerance)
        .await
        .unwrap();
    assert!(!gap.is_clean());
    assert_eq!(gap.missing_in_stratai, [withheld], "{gap:#?}");
    assert!(gap.missing_in_litellm.is_empty(), "{gap:#?}");
    assert!(gap.cost_mismatches.is_empty(), "{gap:#?}");
    // An altered record is a gap too: its cost no longer matches LiteLLM's spend.
    let mut altered = records.clone();
    altered[1].provider_cost =
        Money::new(altered[1].provider_cost.amount() + Decimal::new(1, 3)).unwrap();
    let gap = reconciler
        .reconcile_spend(&altered, from, to, tolerance)
        .await
        .unwrap();
    assert!(!gap.is_clean());
    assert_eq!(gap.cost_mismatches.len(), 1, "{gap:#?}");
    assert_eq!(
        Some(gap.cost_mismatches[0].litellm_request_id.as_str()),
        altered[1].litellm_request_id.as_deref()
    );
    assert!(gap.missing_in_stratai.is_empty() && gap.missing_in_litellm.is_empty());
    // And a record LiteLLM never saw (an id it does not know) is missing on LiteLLM's side.
    let mut ghost = records.clone();
    ghost[2].litellm_request_id = Some(format!("chatcmpl-ghost-{tag}"));
    let gap = reconciler
        .reconcile_spend(&ghost, from, to, tolerance)
        .await
        .unwrap();
    assert_eq!(gap.missing_in_litellm, [format!("chatcmpl-ghost-{tag}")]);
    assert_eq!(
        gap.missing_in_stratai,
        [records[2].litellm_request_id.clone().unwrap()]
    );

    if let Some(token) = key.token.clone() {
        client.key_delete(&[KeyRef::Token(token)]).await.unwrap();
    }
    server.abort();
}
