//! Starting the gateway from a configuration built from an explicit map (never the
//! developer's environment): outside dev mode without an LLM upstream the server refuses to
//! start instead of answering with the offline demo provider.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;

use stratai_server::config::Config;
use stratai_server::demo_provider::{DemoConfig, DemoProvider};
use stratai_server::gateway::setup::{GatewayOptions, build_state};
use stratai_server::server::Backends;
use stratai_server::stores::Stores;

fn config(pairs: &[(&str, &str)]) -> Config {
    let env: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Config::load(&env).unwrap()
}

async fn start(config: &Config, llm: bool) -> Result<&'static str, String> {
    let stores = Stores::memory();
    let backends = Backends::seeded(stores.clone(), config).await.unwrap();
    let auth = Arc::new(backends.auth(config).unwrap());
    let mut options = GatewayOptions::from_config(config);
    let scratch = stratai_testkit::Scratch::new();
    options.runtime.spool = Some(scratch.join("usage.spool"));
    if llm {
        options.llm = Some((Arc::new(DemoProvider::new(DemoConfig::default())), "given"));
    }
    // `scratch` (the spool's folder) lives until the gateway is built and dropped.
    build_state(config, auth, &stores, options)
        .await
        .map(|g| g.provider)
}

const OIDC: [(&str, &str); 2] = [
    ("OIDC_ISSUER", "https://idp.example/"),
    ("OIDC_AUDIENCE", "https://api.stratai.example"),
];

#[tokio::test]
async fn oidc_mode_without_an_llm_upstream_refuses_to_start() {
    let e = start(&config(&OIDC), false).await.unwrap_err();
    assert!(
        e.contains("LITELLM_URL") && e.contains("dev mode only"),
        "{e}"
    );
}

#[tokio::test]
async fn oidc_mode_with_an_upstream_and_dev_mode_without_one_start() {
    // The refusal is about the missing upstream, not OIDC.
    assert_eq!(start(&config(&OIDC), true).await.unwrap(), "given");
    // Dev mode answers with the demo provider (announced at start).
    assert_eq!(start(&config(&[]), false).await.unwrap(), "demo");
}
