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

/// A member of an organization whose one tier is the proxy's `mock-gpt`.
pub struct MockMember {
    pub org: stratai_core::OrgId,
    pub user: stratai_core::UserId,
    /// Their email (for a dev token).
    pub email: String,
    /// Unique to this call: in the organization's slug and the email.
    pub tag: String,
}

/// A tier `mock` of the proxy's `mock-gpt` billed at `rates` (input and output dollars per
/// million tokens), an organization `name` subscribed to it, and a member with `budget` as
/// their monthly budget.
pub async fn mock_gpt_member(
    stores: &stratai_server::stores::Stores,
    name: &str,
    rates: (rust_decimal::Decimal, rust_decimal::Decimal),
    budget: Option<stratai_core::money::Money>,
) -> MockMember {
    use stratai_core::directory::{
        BillingPlan, Email, Membership, OrgRole, OrgSettings, Organization, PlatformRole, Slug,
        User,
    };
    use stratai_core::tiers::{ModelTier, TierSubscription};
    use stratai_core::{ModelId, TierId, TierSlug};

    let now = chrono::Utc::now();
    let tag = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
    let prefix = name
        .split_whitespace()
        .next()
        .unwrap_or(name)
        .to_lowercase();
    let tier = ModelTier {
        id: TierId::new(),
        slug: TierSlug::new("mock").unwrap(),
        name: "Mock".to_owned(),
        description: "the proxy's mock model".to_owned(),
        best_use_case: "tests".to_owned(),
        models: vec![ModelId::new("mock-gpt").unwrap()],
        base_price: stratai_core::money::Money::ZERO,
        input_rate_per_million: rates.0,
        output_rate_per_million: rates.1,
        sort_order: 10,
        active: true,
        rate_schedule: Vec::new(),
    };
    stores.tiers.upsert_tier(&tier).await.unwrap();
    let org = Organization::new(
        name,
        Slug::new(format!("{prefix}-{tag}")).unwrap(),
        OrgSettings::new(vec![tier.slug.clone()], tier.slug.clone()).unwrap(),
        BillingPlan::Business,
        now,
    )
    .unwrap();
    stores.directory.create_org(&org).await.unwrap();
    let subscription = TierSubscription {
        org_id: org.id,
        tier_id: tier.id,
        enabled: true,
        monthly_budget: None,
        enabled_at: now,
    };
    stores
        .tiers
        .put_subscription(org.id, &subscription)
        .await
        .unwrap();
    let email = format!("{prefix}-{tag}@proxy.test");
    let user = User::new(Email::new(&email).unwrap(), None, PlatformRole::User, now).unwrap();
    stores.directory.create_user(&user).await.unwrap();
    let mut membership = Membership::new(org.id, user.id, OrgRole::Member, now);
    if let Some(budget) = budget {
        membership = membership.with_monthly_budget(budget);
    }
    stores
        .directory
        .add_member(org.id, &membership)
        .await
        .unwrap();
    MockMember {
        org: org.id,
        user: user.id,
        email,
        tag,
    }
}
