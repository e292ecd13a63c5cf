//! Shared harness of the tests against a real LiteLLM proxy.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use stratai_litellm::{ClientConfig, LiteLlmClient, RetryPolicy, Secret};

/// How to get a proxy: `eval "$(scripts/litellm-up.sh)"` from the repository root.
pub const HOW: &str = "start one with `eval \"$(scripts/litellm-up.sh)\"` from the repository root \
(mock upstream on 127.0.0.1:18080 + the LiteLLM kit), which exports STRATAI_LITELLM_URL and \
STRATAI_LITELLM_MASTER_KEY";

/// The proxy from env `STRATAI_LITELLM_URL` + `STRATAI_LITELLM_MASTER_KEY`. Without them the
/// test fails under `CI=true` and is skipped (saying so) otherwise.
pub fn proxy(test: &str) -> Option<(LiteLlmClient, ClientConfig)> {
    let url = std::env::var("STRATAI_LITELLM_URL")
        .ok()
        .filter(|v| !v.is_empty());
    let key = std::env::var("STRATAI_LITELLM_MASTER_KEY")
        .ok()
        .filter(|v| !v.is_empty());
    match (url, key) {
        (Some(url), Some(key)) => {
            let mut config = ClientConfig::new(url, Secret::new(key));
            config.request_timeout = Duration::from_secs(30);
            config.retry = RetryPolicy {
                max_retries: 2,
                min_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(500),
            };
            let client = LiteLlmClient::new(config.clone()).expect("client");
            Some((client, config))
        }
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "{test}: no LiteLLM proxy configured and CI=true, so this test may not skip: {HOW}"
                );
            }
            eprintln!(
                "SKIPPED {test}: STRATAI_LITELLM_URL / STRATAI_LITELLM_MASTER_KEY are not set; {HOW}"
            );
            None
        }
    }
}

/// A short id unique to this test run, so reruns against the same proxy database work.
pub fn run_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

/// Polls `probe` every 500 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub mod fake;
pub mod fake_litellm;
