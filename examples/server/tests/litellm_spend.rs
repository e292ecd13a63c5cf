//! LiteLLM's spend in StratAI's books, against the real proxy (`scripts/litellm-up.sh`, which
//! configures the proxy's `generic_api` logging callback to post to
//! `STRATAI_LITELLM_CALLBACK_ADDR` with `STRATAI_LITELLM_CALLBACK_SECRET` and exports both),
//! on SQLite and PostgreSQL:
//!
//! - a member's key used directly against the proxy is reported by the callback in real
//!   time, recorded as their usage (endpoint `litellm:direct`), charged to their budget and
//!   alerted (`usage.outside_stratai` on the webhook);
//! - a call through StratAI's gateway is matched with its usage record: no second record,
//!   no second charge;
//! - a repeated delivery records and charges nothing; a wrong secret is refused;
//! - with the callback endpoint down (the server stopped), a direct call is lost by the
//!   callback and imported by the server's in-process spend-log poll once it runs again,
//!   without importing the first call twice.
//!
//! The server must listen on the callback address, so the two backends' tests take turns.
//! Without the proxy the tests say they were skipped; under `CI=true` that is a failure.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::routing::post;
use chrono::Utc;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use stratai_core::budget::{BudgetScope, implied_budget_id};
use stratai_core::ids::{OrgId, UserId};
use stratai_core::money::Money;
use stratai_core::usage::{UsageQuery, UsageRecord};
use stratai_litellm::spend::DIRECT_ENDPOINT;
use stratai_litellm::sync::{CoreDirectory, SyncEngine};
use stratai_litellm::{Attribution, ChatMessage, ChatRequest, ClientConfig, LiteLlmClient, Secret};
use stratai_server::config::Config;
use stratai_server::gateway::setup::GatewayOptions;
use stratai_server::stores::Stores;
use tokio::task::JoinHandle;

use harness::{
    Backing, Callback, Db, KIT_PRICES, Proxy, app, litellm_proxy_with_callback, mock_gpt_member,
};

/// The callback address is one port: the backends' tests take turns.
static CALLBACK_ADDR_TAKEN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const VAULT_KEY: &str = "q2Xv1m3b8Jc0ZCk5mP0wV9y4Rz7LhT2sN6aE1uQ8dFo=";

fn config(proxy: &Proxy, callback: &Callback, poll_secs: u64, webhook: &str) -> Config {
    let env: HashMap<String, String> = [
        ("DATABASE_URL", "sqlite::memory:"),
        ("LITELLM_URL", proxy.url.as_str()),
        ("LITELLM_MASTER_KEY", proxy.master.as_str()),
        ("STRATAI_VAULT_KEY", VAULT_KEY),
        ("STRATAI_LITELLM_CALLBACK_SECRET", callback.secret.as_str()),
        ("STRATAI_LITELLM_SPEND_POLL_SECS", &poll_secs.to_string()),
        ("STRATAI_PROVIDER_PRICES", KIT_PRICES),
        ("STRATAI_ALERT_WEBHOOK_URL", webhook),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    Config::load(&env).unwrap()
}

/// The server over `stores` on the callback address.
async fn serve(
    backing: &Backing,
    stores: &Stores,
    config: &Config,
    addr: &str,
) -> (JoinHandle<()>, String) {
    let mut options = GatewayOptions::from_config(config);
    options.runtime.spool = Some(
        backing
            .dir
            .join(format!("usage-{}.spool", uuid::Uuid::new_v4())),
    );
    let (app, gateway) = app(config, stores, stores.clone(), options).await;
    assert!(gateway.litellm_spend.is_some());
    let mut listener = None;
    for _ in 0..50 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let listener =
        listener.unwrap_or_else(|| panic!("cannot listen on the callback address {addr}"));
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (server, format!("http://{addr}"))
}

/// A webhook receiver: the alerts the server posts.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let sink = seen.clone();
    let app = axum::Router::new().route(
        "/alerts",
        post(move |Json(body): Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// A tier of the proxy's `mock-gpt` billed at twice the provider's price, an organization
/// subscribed to it, and a member with a $100 monthly budget.
async fn seed(stores: &Stores) -> (OrgId, UserId, String) {
    let m = mock_gpt_member(
        stores,
        "Spend Co",
        (Decimal::from(2000), Decimal::from(4000)),
        Some(Money::new(Decimal::from(100)).unwrap()),
    )
    .await;
    (m.org, m.user, m.email)
}

async fn records(stores: &Stores, org: OrgId, user: UserId) -> Vec<UsageRecord> {
    stores
        .usage
        .query(
            org,
            &UsageQuery {
                user_id: Some(user),
                ..UsageQuery::default()
            },
            1_000,
        )
        .await
        .unwrap()
}

async fn spent(stores: &Stores, org: OrgId, user: UserId) -> Decimal {
    let id = implied_budget_id(org, BudgetScope::User(user));
    let states = stores.budgets.states(org, &[id], Utc::now()).await.unwrap();
    states[0].spent.amount()
}

/// Waits (up to `limit`) for the direct record of LiteLLM request `id`.
async fn direct_record(
    stores: &Stores,
    org: OrgId,
    user: UserId,
    id: &str,
    limit: Duration,
) -> Option<UsageRecord> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let found = records(stores, org, user)
            .await
            .into_iter()
            .find(|r| r.endpoint == DIRECT_ENDPOINT && r.litellm_request_id.as_deref() == Some(id));
        if found.is_some() || tokio::time::Instant::now() >= deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn direct_chat(client: &LiteLlmClient, key: &Secret, text: &str) -> String {
    let answer = client
        .chat(
            key,
            &Attribution::default(),
            &ChatRequest::new("mock-gpt", vec![ChatMessage::user(text)], 6),
        )
        .await
        .unwrap();
    answer.completion.id
}

async fn spend_reaches_the_books_by_callback_and_by_poll(db: Db) {
    let Some((proxy, callback)) = litellm_proxy_with_callback() else {
        return;
    };
    let Some(backing) = Backing::new(db).await else {
        return;
    };
    let _turn = CALLBACK_ADDR_TAKEN.lock().await;
    let stores = backing.open().await;
    let (org, user, email) = seed(&stores).await;
    let (hook, alerts) = webhook().await;
    let client = LiteLlmClient::new(ClientConfig::new(
        proxy.url.trim_end_matches('/'),
        Secret::new(proxy.master.clone()),
    ))
    .unwrap();

    // The member's key, from an engine over the same store and vault key as the server's.
    let quiet = config(&proxy, &callback, 3600, &hook);
    let litellm = quiet.litellm.as_ref().unwrap();
    let engine = SyncEngine::new(
        client.clone(),
        Arc::new(CoreDirectory::new(
            stores.directory.clone(),
            stores.tiers.clone(),
        )),
        stores.outbox.clone(),
        litellm
            .proxy
            .key_vault(stores.key_vault.clone())
            .unwrap()
            .vault,
        litellm.proxy.sync_config(),
    );
    let key = engine
        .provision_member(org, user, None)
        .await
        .unwrap()
        .expect("the member's key");

    // Server A: the callback is served; its spend-log poll runs once at start, then not for an
    // hour, so whatever is imported after that came through the callback.
    let (server_a, base) = serve(&backing, &stores, &quiet, &callback.addr).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let http = reqwest::Client::new();

    // 1. A direct call with the member's key: the callback records and charges it.
    let first = direct_chat(&client, &key, "a notebook calling the proxy directly").await;
    let record = direct_record(&stores, org, user, &first, Duration::from_secs(40))
        .await
        .expect("the callback never recorded the direct call");
    assert!(record.provider_cost > Money::ZERO);
    // Billed at the tier's rates ($2 / $4 per 1k tokens, twice the provider's price); the
    // provider cost is LiteLLM's, without its floating-point tail.
    let (input, output) = (
        i64::from(record.input_tokens),
        i64::from(record.output_tokens),
    );
    assert_eq!(
        record.billed_amount.amount(),
        Decimal::new(2 * input + 4 * output, 3),
        "{record:?}"
    );
    assert_eq!(
        record.provider_cost.amount(),
        Decimal::new(input + 2 * output, 3),
        "{record:?}"
    );
    assert_eq!(
        spent(&stores, org, user).await,
        record.billed_amount.amount()
    );
    let alert = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found = alerts
                .lock()
                .unwrap()
                .iter()
                .find(|a| a["event"] == "usage.outside_stratai")
                .cloned();
            if found.is_some() || tokio::time::Instant::now() >= deadline {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    .expect("no `usage.outside_stratai` alert reached the webhook");
    assert_eq!(alert["litellm_request_id"], first.as_str());
    assert_eq!(alert["user_id"], user.to_string().as_str());

    // 2. A call through StratAI's gateway: LiteLLM reports it too, and it is matched with
    // the gateway's record, not recorded again.
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
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&json!({
            "model": "mock-gpt",
            "messages": [{"role": "user", "content": "through StratAI"}],
            "max_tokens": 6
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let operator: Value = http
        .post(format!("{base}/auth/dev/token"))
        .json(&json!({ "email": quiet.super_admin_email }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operator = operator["token"].as_str().unwrap().to_owned();
    let status = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        loop {
            let status: Value = http
                .get(format!("{base}/api/litellm/spend"))
                .bearer_auth(&operator)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if status["gateway"].as_u64() >= Some(1) || tokio::time::Instant::now() >= deadline {
                break status;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    assert!(status["gateway"].as_u64() >= Some(1), "{status}");
    assert_eq!(status["cost_mismatches"], 0, "{status}");
    assert_eq!(status["token_mismatches"], 0, "{status}");
    let mine = records(&stores, org, user).await;
    assert_eq!(
        mine.len(),
        2,
        "one direct and one gateway record: {mine:#?}"
    );
    assert_eq!(
        mine.iter()
            .filter(|r| r.endpoint == DIRECT_ENDPOINT)
            .count(),
        1
    );
    let gateway_billed = mine
        .iter()
        .find(|r| r.endpoint != DIRECT_ENDPOINT)
        .unwrap()
        .billed_amount
        .amount();
    let charged = spent(&stores, org, user).await;
    assert_eq!(charged, record.billed_amount.amount() + gateway_billed);
    // A member may not read the operators' report.
    let refused = http
        .get(format!("{base}/api/litellm/spend"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    // 3. The same call delivered again (LiteLLM retrying, a replayed batch): nothing new.
    let again = json!([{
        "id": first,
        // LiteLLM sends the cost as a JSON number: the decimal's digits, as it would
        "response_cost": serde_json::from_str::<serde_json::Value>(&record.provider_cost.amount().to_string()).unwrap(),
        "status": "success",
        "prompt_tokens": record.input_tokens,
        "completion_tokens": record.output_tokens,
        "startTime": record.created_at.timestamp() as f64,
        "model_group": "mock-gpt",
        "metadata": {
            "user_api_key_alias": format!("stratai:{org}:{user}"),
            "user_api_key_user_id": user.to_string(),
        }
    }]);
    let outcome: Value = http
        .post(format!("{base}/api/litellm/spend-callback"))
        .bearer_auth(&callback.secret)
        .json(&again)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(outcome["received"], 1, "{outcome}");
    assert_eq!(outcome["repeated"], 1, "{outcome}");
    assert_eq!(outcome["recorded"], 0, "{outcome}");
    assert_eq!(records(&stores, org, user).await.len(), 2);
    assert_eq!(spent(&stores, org, user).await, charged);
    let wrong = http
        .post(format!("{base}/api/litellm/spend-callback"))
        .bearer_auth("not-the-secret-at-all")
        .json(&again)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let garbage = http
        .post(format!("{base}/api/litellm/spend-callback"))
        .bearer_auth(&callback.secret)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);

    // 4. The callback endpoint goes down (server A stops); a direct call meanwhile is lost
    // by the callback (LiteLLM drops a batch it cannot deliver).
    server_a.abort();
    let _ = server_a.await;
    let second = direct_chat(&client, &key, "while StratAI is down").await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(
        direct_record(&stores, org, user, &second, Duration::ZERO)
            .await
            .is_none(),
        "recorded while no server was up?"
    );

    // Server B polls LiteLLM's spend logs every 2 s: the lost call is imported, the first is
    // not imported twice, and the member's budget is charged exactly once for each.
    let polling = config(&proxy, &callback, 2, &hook);
    let (server_b, base) = serve(&backing, &stores, &polling, &callback.addr).await;
    let lost = direct_record(&stores, org, user, &second, Duration::from_secs(90))
        .await
        .expect("the spend-log poll never imported the call the callback lost");
    let mine = records(&stores, org, user).await;
    assert_eq!(mine.len(), 3, "{mine:#?}");
    assert_eq!(
        spent(&stores, org, user).await,
        charged + lost.billed_amount.amount()
    );
    // Polls keep reading the same rows: still nothing twice.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(records(&stores, org, user).await.len(), 3);
    assert_eq!(
        spent(&stores, org, user).await,
        charged + lost.billed_amount.amount()
    );
    let operator: Value = http
        .post(format!("{base}/auth/dev/token"))
        .json(&json!({ "email": polling.super_admin_email }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let status: Value = http
        .get(format!("{base}/api/litellm/spend"))
        .bearer_auth(operator["token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(status["last_poll"]["rows"].as_u64() >= Some(3), "{status}");
    assert!(status["direct_recorded"].as_u64() >= Some(1), "{status}");
    server_b.abort();
    let _ = server_b.await;
    client
        .key_delete(&[stratai_litellm::KeyRef::Secret(key)])
        .await
        .unwrap();
}

harness::on_both!(spend_reaches_the_books_by_callback_and_by_poll);
