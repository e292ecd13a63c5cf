//! The real LiteLLM proxy for the tests that need one (`eval "$(scripts/litellm-up.sh)"`,
//! which exports its address, master key and the spend callback's address and secret): found
//! in the environment, or the test says it skipped (under `CI=true` it fails instead).

/// What the kit's proxy charges (dollars per million tokens), as `STRATAI_PROVIDER_PRICES`,
/// so the gateway's provider cost is LiteLLM's.
pub const KIT_PRICES: &str = r#"{
    "mock-gpt": {"input_per_million": "1000", "output_per_million": "2000"},
    "mock-gpt-premium": {"input_per_million": "10000", "output_per_million": "20000"},
    "mock-inline": {"input_per_million": "0", "output_per_million": "0"}
}"#;

/// The proxy.
pub struct Proxy {
    /// `STRATAI_LITELLM_URL`.
    pub url: String,
    /// `STRATAI_LITELLM_MASTER_KEY`.
    pub master: String,
}

/// Where the proxy's `generic_api` logging callback posts, and with which bearer secret.
pub struct Callback {
    /// `STRATAI_LITELLM_CALLBACK_ADDR`: the address the server under test must listen on.
    pub addr: String,
    /// `STRATAI_LITELLM_CALLBACK_SECRET`.
    pub secret: String,
}

fn var(key: &str) -> Option<String> {
    std::env::var(key).ok().filter(|v| !v.is_empty())
}

fn skipped<T>(needs: &str) -> Option<T> {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{needs} are required under CI=true (eval \"$(scripts/litellm-up.sh)\")"
    );
    eprintln!("SKIPPED: no LiteLLM proxy ({needs} unset): eval \"$(scripts/litellm-up.sh)\"");
    None
}

/// The proxy, or `None` (the test skips) without one.
pub fn litellm_proxy() -> Option<Proxy> {
    match (
        var("STRATAI_LITELLM_URL"),
        var("STRATAI_LITELLM_MASTER_KEY"),
    ) {
        (Some(url), Some(master)) => Some(Proxy { url, master }),
        _ => skipped("STRATAI_LITELLM_URL / STRATAI_LITELLM_MASTER_KEY"),
    }
}

/// The proxy with StratAI's spend callback configured, or `None` (the test skips).
pub fn litellm_proxy_with_callback() -> Option<(Proxy, Callback)> {
    match (
        litellm_proxy(),
        var("STRATAI_LITELLM_CALLBACK_ADDR"),
        var("STRATAI_LITELLM_CALLBACK_SECRET"),
    ) {
        (Some(proxy), Some(addr), Some(secret)) => Some((proxy, Callback { addr, secret })),
        (None, _, _) => None,
        _ => skipped("STRATAI_LITELLM_CALLBACK_ADDR / STRATAI_LITELLM_CALLBACK_SECRET"),
    }
}
