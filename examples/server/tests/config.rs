//! The typed configuration (`stratai_server::config`): every key parsed strictly, a value that
//! does not parse is an error naming its key, the file and the environment agree, and the
//! settings summary never shows a credential. Pure: nothing here reads the process
//! environment (each test passes its own map).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use rust_decimal::Decimal;
use stratai_core::ids::ModelId;
use stratai_core::pricing::PriceTable;
use stratai_guardrails::runtime::liveness::Liveness;
use url::Url;

use stratai_server::config::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The settings page's summary names every section and never a credential: secrets are
/// "set (hidden)", URLs lose their password and query.
#[test]
fn the_summary_masks_every_secret() {
    let secrets = [
        "dbpass-1",
        "ownerpass-2",
        "sk-master-3",
        "0011223344556677889900aabbccddeeff00112233445566778899aabbccddee",
        "cb-secret-4-long-enough",
        "smtp-pass-5",
        "redispass-6",
        "hooktoken-7",
    ];
    let c = Config::load(&env(&[
        ("DATABASE_URL", "postgres://app:dbpass-1@127.0.0.1/s"),
        (
            "STRATAI_DATABASE_OWNER_URL",
            "postgres://owner:ownerpass-2@127.0.0.1/s",
        ),
        ("LITELLM_URL", "http://127.0.0.1:4000"),
        ("LITELLM_MASTER_KEY", "sk-master-3"),
        (
            "STRATAI_VAULT_KEY",
            "0011223344556677889900aabbccddeeff00112233445566778899aabbccddee",
        ),
        ("STRATAI_LITELLM_CALLBACK_SECRET", "cb-secret-4-long-enough"),
        ("STRATAI_SMTP_URL", "smtp://mail.acme.test:2525"),
        ("STRATAI_SMTP_USERNAME", "mailer"),
        ("STRATAI_SMTP_PASSWORD", "smtp-pass-5"),
        ("STRATAI_REDIS_URL", "redis://:redispass-6@127.0.0.1:6379"),
        (
            "STRATAI_ALERT_WEBHOOK_URL",
            "https://hooks.acme.test/budget?token=hooktoken-7",
        ),
    ]))
    .unwrap();
    let lines = c.summary();
    for line in &lines {
        for secret in secrets {
            assert!(
                !line.value.contains(secret),
                "{} shows a secret: {}",
                line.name,
                line.value
            );
        }
    }
    let value = |name: &str| {
        lines
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.clone())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(value("DATABASE_URL"), "postgres://app:hidden@127.0.0.1/s");
    assert_eq!(value("LITELLM_MASTER_KEY"), "set (hidden)");
    assert_eq!(value("STRATAI_VAULT_KEY"), "set (hidden)");
    assert_eq!(value("STRATAI_SMTP_PASSWORD"), "set (hidden)");
    assert_eq!(value("STRATAI_SMTP_USERNAME"), "mailer");
    assert_eq!(
        value("STRATAI_ALERT_WEBHOOK_URL"),
        "https://hooks.acme.test/budget?hidden"
    );
    for section in [
        "Server", "Database", "Sign-in", "Gateway", "LiteLLM", "Mail",
    ] {
        assert!(lines.iter().any(|l| l.section == section), "{section}");
    }
    // Dev defaults: no secret set, said so.
    let dev = Config::load(&env(&[])).unwrap().summary();
    assert!(dev.iter().any(|l| l.value.starts_with("dev (")));
}

#[test]
fn defaults_are_dev_mode_on_sqlite() {
    let c = Config::load(&env(&[])).unwrap();
    assert!(c.dev_mode());
    assert_eq!(c.database.url.expose(), DEFAULT_DATABASE_URL);
    assert_eq!(c.bind.to_string(), DEFAULT_BIND);
    assert_eq!(c.super_admin_email, DEFAULT_SUPER_ADMIN_EMAIL);
    assert!(c.litellm.is_none());
}

#[test]
fn mail_goes_to_the_mailbox_without_smtp_and_smtp_settings_are_checked() {
    let c = Config::load(&env(&[])).unwrap();
    assert_eq!(c.mail.from, DEFAULT_MAIL_FROM);
    assert!(matches!(
        &c.mail.transport,
        MailTransportConfig::Mailbox(dir) if dir == &PathBuf::from(DEFAULT_MAILBOX_DIR)
    ));
    let c = Config::load(&env(&[
        ("STRATAI_SMTP_URL", "smtp://mail.example:2525"),
        ("STRATAI_SMTP_USERNAME", "bot"),
        ("STRATAI_SMTP_PASSWORD", "hunter2"),
        ("STRATAI_MAIL_FROM", "Acme AI <ai@acme.example>"),
    ]))
    .unwrap();
    assert_eq!(c.mail.from, "Acme AI <ai@acme.example>");
    let MailTransportConfig::Smtp { url, username, .. } = &c.mail.transport else {
        panic!("smtp expected")
    };
    assert_eq!(url.expose(), "smtp://mail.example:2525");
    assert_eq!(username.as_deref(), Some("bot"));
    assert!(!format!("{c:?}").contains("hunter2"));
    for (pairs, key) in [
        (
            vec![("STRATAI_SMTP_URL", "http://mail.example")],
            "STRATAI_SMTP_URL",
        ),
        (vec![("STRATAI_SMTP_URL", "not a url")], "STRATAI_SMTP_URL"),
        (vec![("STRATAI_SMTP_PASSWORD", "x")], "STRATAI_SMTP_URL"),
        (
            vec![
                ("STRATAI_SMTP_URL", "smtp://h"),
                ("STRATAI_SMTP_USERNAME", "u"),
            ],
            "STRATAI_SMTP_USERNAME",
        ),
        (vec![("STRATAI_MAIL_FROM", "nobody")], "STRATAI_MAIL_FROM"),
    ] {
        let e = Config::load(&env(&pairs)).unwrap_err();
        assert!(e.to_string().contains(key), "{pairs:?}: {e}");
    }
}

#[test]
fn auth0_domain_becomes_issuer_with_trailing_slash() {
    let c = Config::load(&env(&[
        ("AUTH0_DOMAIN", "acme.eu.auth0.com"),
        ("OIDC_AUDIENCE", "https://api.stratai.example"),
    ]))
    .unwrap();
    let oidc = c.oidc.unwrap();
    assert_eq!(oidc.issuer, "https://acme.eu.auth0.com/");
    assert_eq!(oidc.algorithms, vec![Algorithm::RS256]);
    assert!(oidc.login.is_none());
}

#[test]
fn symmetric_algorithms_and_plain_http_issuers_are_refused() {
    let e = Config::load(&env(&[
        ("OIDC_ISSUER", "https://idp.example/"),
        ("OIDC_AUDIENCE", "api"),
        ("OIDC_ALGORITHMS", "RS256,HS256"),
    ]))
    .unwrap_err();
    assert!(e.to_string().contains("symmetric"), "{e}");
    let e = Config::load(&env(&[
        ("OIDC_ISSUER", "http://idp.example/"),
        ("OIDC_AUDIENCE", "api"),
    ]))
    .unwrap_err();
    assert!(e.to_string().contains("https"), "{e}");
}

#[test]
fn half_configured_oidc_is_an_error_not_dev_mode() {
    let e = Config::load(&env(&[("OIDC_CLIENT_ID", "abc")])).unwrap_err();
    assert!(e.to_string().contains("OIDC_ISSUER"), "{e}");
}

#[test]
fn loopback_http_redirect_turns_secure_cookies_off() {
    let c = Config::load(&env(&[
        ("OIDC_ISSUER", "http://127.0.0.1:9999/"),
        ("OIDC_CLIENT_ID", "cid"),
        ("OIDC_REDIRECT_URL", "http://localhost:8080/auth/callback"),
    ]))
    .unwrap();
    let login = c.oidc.unwrap().login.unwrap();
    assert!(!login.secure_cookies);
    let c = Config::load(&env(&[
        ("OIDC_ISSUER", "https://idp.example/"),
        ("OIDC_CLIENT_ID", "cid"),
        ("OIDC_REDIRECT_URL", "https://stratai.example/auth/callback"),
    ]))
    .unwrap();
    assert!(c.oidc.unwrap().login.unwrap().secure_cookies);
}

#[test]
fn unknown_file_keys_are_refused() {
    let dir = stratai_testkit::Scratch::new();
    let path = dir.join("c.toml");
    std::fs::write(&path, "bind = \"127.0.0.1:9\"\n[oidc]\nissuerr = \"x\"\n").unwrap();
    let e = Config::load(&env(&[("STRATAI_CONFIG", path.to_str().unwrap())])).unwrap_err();
    assert!(e.to_string().contains("issuerr"), "{e}");
    let json = dir.join("c.json");
    std::fs::write(&json, r#"{"litellm": {"url": "http://x", "extra": 1}}"#).unwrap();
    let e = Config::load(&env(&[("STRATAI_CONFIG", json.to_str().unwrap())])).unwrap_err();
    assert!(e.to_string().contains("litellm"), "{e}");
}

#[test]
fn provider_prices_extend_the_list_prices_from_file_or_env() {
    let mock = ModelId::new("mock-gpt").unwrap();
    let defaults = Config::load(&env(&[])).unwrap();
    assert!(defaults.prices.get(&mock).is_none());
    assert_eq!(defaults.prices, PriceTable::seed_defaults());

    let dir = stratai_testkit::Scratch::new();
    let path = dir.join("c.toml");
    std::fs::write(
        &path,
        "[provider_prices.\"mock-gpt\"]\ninput_per_million = \"1000\"\noutput_per_million = 2000\n\n[provider_prices.\"gpt-4o-mini\"]\ninput_per_million = \"0.2\"\noutput_per_million = \"0.8\"\nmax_output_tokens = 100\n",
    )
    .unwrap();
    let c = Config::load(&env(&[("STRATAI_CONFIG", path.to_str().unwrap())])).unwrap();
    let p = c.prices.get(&mock).unwrap();
    assert_eq!(p.input_per_million, Decimal::from(1000));
    assert_eq!(p.output_per_million, Decimal::from(2000));
    assert_eq!(
        p.max_output_tokens,
        stratai_core::pricing::FALLBACK_OUTPUT_CAP
    );
    // 10 prompt + 7 completion tokens: LiteLLM's $0.024 for the kit's mock-gpt.
    assert_eq!(
        c.prices.provider_cost(&mock, 10, 7).unwrap().amount(),
        Decimal::new(24, 3)
    );
    let mini = c.prices.get(&ModelId::new("gpt-4o-mini").unwrap()).unwrap();
    assert_eq!(mini.input_per_million, Decimal::new(2, 1));
    assert_eq!(mini.max_output_tokens, 100);
    // The other list prices stay.
    assert!(c.prices.get(&ModelId::new("gpt-4o").unwrap()).is_some());

    // The environment (a JSON object) wins over the file.
    let c = Config::load(&env(&[
        ("STRATAI_CONFIG", path.to_str().unwrap()),
        (
            "STRATAI_PROVIDER_PRICES",
            r#"{"mock-gpt": {"input_per_million": "1", "output_per_million": "2", "max_output_tokens": 64}}"#,
        ),
    ]))
    .unwrap();
    assert_eq!(c.prices.get(&mock).unwrap().input_per_million, Decimal::ONE);
    assert_eq!(c.prices.get(&mock).unwrap().max_output_tokens, 64);
}

#[test]
fn bad_provider_prices_are_refused_naming_the_model() {
    for (json, needle) in [
        (
            r#"{"m": {"input_per_million": 0.5, "output_per_million": "1"}}"#,
            "never a float",
        ),
        (
            r#"{"m": {"input_per_million": "-1", "output_per_million": "1"}}"#,
            "negative",
        ),
        (
            r#"{"m": {"input_per_million": "x", "output_per_million": "1"}}"#,
            "not a decimal",
        ),
        (
            r#"{"m": {"input_per_million": "1", "output_per_million": "1", "max_output_tokens": 0}}"#,
            "positive",
        ),
        (
            r#"{"m": {"input_per_million": "1", "output_per_million": "1", "cached": "1"}}"#,
            "cached",
        ),
        (
            r#"{"": {"input_per_million": "1", "output_per_million": "1"}}"#,
            "model ``",
        ),
    ] {
        let e = Config::load(&env(&[("STRATAI_PROVIDER_PRICES", json)])).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("STRATAI_PROVIDER_PRICES"), "{text}");
        assert!(text.contains(needle), "{json}: {text}");
    }
}

#[test]
fn env_wins_over_file_and_secrets_do_not_print() {
    let file = FileConfig {
        bind: Some("127.0.0.1:1".into()),
        litellm: FileLiteLlm {
            url: Some("http://127.0.0.1:4000".into()),
            master_key: Some(Secret::new("sk-file")),
            ..FileLiteLlm::default()
        },
        ..FileConfig::default()
    };
    let c = Config::from_parts(
        file,
        &env(&[
            ("STRATAI_BIND", "127.0.0.1:2"),
            ("LITELLM_MASTER_KEY", "sk-env"),
        ]),
    )
    .unwrap();
    assert_eq!(c.bind.port(), 2);
    let l = &c.litellm.as_ref().unwrap().proxy;
    assert_eq!(l.master_key.expose(), "sk-env");
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("sk-env"), "{dbg}");
}

#[test]
fn the_vault_key_is_parsed_required_outside_dev_mode_and_never_printed() {
    let litellm = [
        ("LITELLM_URL", "http://127.0.0.1:4000"),
        ("LITELLM_MASTER_KEY", "sk-master"),
    ];
    let key_hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    // Dev mode without a key: an ephemeral one is made at start.
    let c = Config::load(&env(&litellm)).unwrap();
    let l = c.litellm.as_ref().unwrap();
    assert!(l.proxy.vault_key.is_none());
    assert!(!l.proxy.vault_replace_foreign);
    assert!(l.sync_in_process);
    // Given: parsed once; Debug shows its id, not the key.
    let mut with_key = litellm.to_vec();
    with_key.push(("STRATAI_VAULT_KEY", key_hex));
    with_key.push(("STRATAI_VAULT_REPLACE_FOREIGN", "true"));
    with_key.push(("STRATAI_LITELLM_SYNC", "worker"));
    let c = Config::load(&env(&with_key)).unwrap();
    let l = c.litellm.as_ref().unwrap();
    let vault = l.proxy.vault_key.as_ref().unwrap();
    assert_eq!(
        vault.id(),
        stratai_litellm::vault::VaultKey::parse(key_hex)
            .unwrap()
            .id()
    );
    assert!(l.proxy.vault_replace_foreign);
    assert!(!l.sync_in_process);
    let dbg = format!("{c:?}");
    assert!(!dbg.contains(key_hex), "{dbg}");
    assert!(dbg.contains(&vault.id()), "{dbg}");
    // Malformed: refused, without echoing it.
    let mut bad = litellm.to_vec();
    bad.push(("STRATAI_VAULT_KEY", "too-short-secret"));
    let e = Config::load(&env(&bad)).unwrap_err().to_string();
    assert!(e.contains("STRATAI_VAULT_KEY"), "{e}");
    assert!(!e.contains("too-short-secret"), "{e}");
    let mut bad = litellm.to_vec();
    bad.push(("STRATAI_LITELLM_SYNC", "sometimes"));
    assert!(Config::load(&env(&bad)).is_err());
    // Outside dev mode (OIDC configured) the key is required.
    let mut prod = litellm.to_vec();
    prod.push(("OIDC_ISSUER", "https://idp.example/"));
    prod.push(("OIDC_AUDIENCE", "api"));
    let e = Config::load(&env(&prod)).unwrap_err().to_string();
    assert!(
        e.contains("STRATAI_VAULT_KEY") && e.contains("required"),
        "{e}"
    );
    prod.push(("STRATAI_VAULT_KEY", key_hex));
    assert!(
        Config::load(&env(&prod))
            .unwrap()
            .litellm
            .unwrap()
            .proxy
            .vault_key
            .is_some()
    );
}

/// Every setting, by its environment variable and by its file key: the same values.
#[test]
fn every_key_parses_from_the_environment_and_from_the_file() {
    let vars = [
        ("DATABASE_URL", "postgres://app@127.0.0.1/s"),
        ("STRATAI_DATABASE_OWNER_URL", "postgres://owner@127.0.0.1/s"),
        ("STRATAI_BIND", "127.0.0.1:9090"),
        ("STRATAI_PUBLIC_URL", "https://stratai.example"),
        ("STRATAI_SUPER_ADMIN_EMAIL", "root@acme.test"),
        ("STRATAI_BODY_LIMIT_BYTES", "2048"),
        ("STRATAI_REQUEST_TIMEOUT_SECS", "7"),
        ("STRATAI_SESSION_TTL_SECS", "60"),
        ("STRATAI_DEV_TOKEN_TTL_SECS", "61"),
        ("STRATAI_DEV_ALLOW_REMOTE", "true"),
        ("STRATAI_AUTH_CACHE_MS", "1500"),
        ("STRATAI_GATEWAY_CACHE_MS", "0"),
        ("STRATAI_BUDGET_LEASE_MS", "1000"),
        ("STRATAI_BUDGET_LEASE_BLOCK", "8"),
        ("STRATAI_USAGE_BATCH", "on"),
        ("STRATAI_USAGE_BATCH_LINGER_MS", "9"),
        ("STRATAI_HEARTBEAT_MS", "500"),
        ("STRATAI_DEAD_AFTER_MS", "4000"),
        ("STRATAI_USAGE_SPOOL", "/var/lib/stratai/usage.spool"),
        ("STRATAI_REDIS_URL", "redis://127.0.0.1:6379"),
        (
            "STRATAI_ALERT_WEBHOOK_URL",
            "https://hooks.acme.test/budget",
        ),
        ("STRATAI_DEMO_CHUNK_DELAY_MS", "3"),
        ("RUST_LOG", "debug,hyper=warn"),
        ("STRATAI_LOG_FORMAT", "json"),
    ];
    let file = r#"
        database_url = "postgres://app@127.0.0.1/s"
        database_owner_url = "postgres://owner@127.0.0.1/s"
        bind = "127.0.0.1:9090"
        public_url = "https://stratai.example"
        super_admin_email = "root@acme.test"
        body_limit_bytes = 2048
        request_timeout_secs = 7
        session_ttl_secs = 60
        dev_token_ttl_secs = 61
        dev_allow_remote = true
        auth_cache_ms = 1500
        gateway_cache_ms = 0
        budget_lease_ms = 1000
        budget_lease_block = 8
        usage_batch = true
        usage_batch_linger_ms = 9
        heartbeat_ms = 500
        dead_after_ms = 4000
        usage_spool = "/var/lib/stratai/usage.spool"
        redis_url = "redis://127.0.0.1:6379"
        alert_webhook_url = "https://hooks.acme.test/budget"
        demo_chunk_delay_ms = 3
        log_filter = "debug,hyper=warn"
        log_format = "json"
    "#;
    let dir = stratai_testkit::Scratch::new();
    let path = dir.join("all.toml");
    std::fs::write(&path, file).unwrap();
    let from_env = Config::load(&env(&vars)).unwrap();
    let from_file = Config::load(&env(&[("STRATAI_CONFIG", path.to_str().unwrap())])).unwrap();
    for c in [from_env, from_file] {
        assert_eq!(c.database.url.expose(), "postgres://app@127.0.0.1/s");
        assert_eq!(
            c.database.owner_url.as_ref().map(Secret::expose),
            Some("postgres://owner@127.0.0.1/s")
        );
        assert_eq!(c.bind.port(), 9090);
        assert_eq!(c.public_url.as_str(), "https://stratai.example/");
        assert_eq!(c.super_admin_email, "root@acme.test");
        assert_eq!(c.body_limit_bytes, 2048);
        assert_eq!(c.request_timeout, Duration::from_secs(7));
        assert_eq!(c.session_ttl, Duration::from_secs(60));
        assert_eq!(c.dev_token_ttl, Duration::from_secs(61));
        assert!(c.dev_allow_remote);
        assert_eq!(c.auth_cache, Duration::from_millis(1500));
        let g = &c.gateway;
        assert_eq!(g.view_cache_ttl, Duration::ZERO);
        assert_eq!(
            g.budget_lease,
            Some(BudgetLeaseConfig {
                max_age: Duration::from_secs(1),
                block_requests: 8
            })
        );
        assert!(g.usage_batch);
        assert_eq!(g.usage_batch_linger, Duration::from_millis(9));
        assert_eq!(
            g.liveness,
            Some(Liveness {
                heartbeat: Duration::from_millis(500),
                dead_after: Duration::from_secs(4),
            })
        );
        assert_eq!(g.usage_spool, PathBuf::from("/var/lib/stratai/usage.spool"));
        assert_eq!(
            g.redis_url.as_ref().map(Secret::expose),
            Some("redis://127.0.0.1:6379")
        );
        assert_eq!(
            g.alert_webhook.as_ref().map(Url::as_str),
            Some("https://hooks.acme.test/budget")
        );
        assert_eq!(g.demo_chunk_delay, Duration::from_millis(3));
        assert_eq!(c.log.filter, "debug,hyper=warn");
        assert!(c.log.json);
    }
    // And the defaults of what was not set.
    let d = Config::load(&env(&[])).unwrap();
    assert!(!d.dev_allow_remote);
    // The fast path by default: cached bearer tokens and views, budget leases, batched
    // usage writes.
    assert_eq!(d.auth_cache, DEFAULT_AUTH_CACHE);
    assert_eq!(d.gateway.view_cache_ttl, Duration::from_millis(2000));
    assert_eq!(
        d.gateway.budget_lease,
        Some(BudgetLeaseConfig {
            max_age: Duration::from_millis(DEFAULT_BUDGET_LEASE_MS),
            block_requests: 32,
        })
    );
    assert!(d.gateway.usage_batch);
    assert_eq!(d.gateway.liveness, Some(Liveness::default()));
    let off = Config::load(&env(&[("STRATAI_HEARTBEAT_MS", "0")])).unwrap();
    assert_eq!(off.gateway.liveness, None);
    // Strict stays a setting.
    let strict = Config::load(&env(&[
        ("STRATAI_BUDGET_LEASE_MS", "0"),
        ("STRATAI_USAGE_BATCH", "false"),
        ("STRATAI_AUTH_CACHE_MS", "0"),
    ]))
    .unwrap();
    assert_eq!(strict.gateway.budget_lease, None);
    assert!(!strict.gateway.usage_batch);
    assert_eq!(strict.auth_cache, Duration::ZERO);
    assert_eq!(
        d.gateway.usage_batch_linger,
        stratai_server::gateway::batch::DEFAULT_LINGER
    );
    assert_eq!(d.gateway.usage_spool, PathBuf::from(DEFAULT_USAGE_SPOOL));
    assert!(d.gateway.redis_url.is_none() && d.gateway.alert_webhook.is_none());
    assert_eq!(d.log.filter, "info");
    assert!(!d.log.json);
    // `REDIS_URL` is the fallback name of `STRATAI_REDIS_URL`.
    let c = Config::load(&env(&[("REDIS_URL", "redis://r:6379")])).unwrap();
    assert_eq!(
        c.gateway.redis_url.as_ref().map(Secret::expose),
        Some("redis://r:6379")
    );
}

/// A value that does not parse stops the start with an error naming its key; none falls
/// back to a default (`STRATAI_GATEWAY_CACHE_MS=2s` used to become 2000 ms).
#[test]
fn a_value_that_does_not_parse_names_its_key() {
    for (key, value) in [
        ("STRATAI_GATEWAY_CACHE_MS", "2s"),
        ("STRATAI_AUTH_CACHE_MS", "soon"),
        // past the bound a deactivation must take effect within
        ("STRATAI_AUTH_CACHE_MS", "60001"),
        ("STRATAI_BUDGET_LEASE_MS", "1s"),
        ("STRATAI_BUDGET_LEASE_BLOCK", "0"),
        ("STRATAI_BUDGET_LEASE_BLOCK", "many"),
        ("STRATAI_USAGE_BATCH", "maybe"),
        ("STRATAI_USAGE_BATCH_LINGER_MS", "-1"),
        ("STRATAI_HEARTBEAT_MS", "2s"),
        // not more than the default heartbeat
        ("STRATAI_DEAD_AFTER_MS", "2000"),
        ("STRATAI_DEMO_CHUNK_DELAY_MS", "0.5"),
        ("STRATAI_ALERT_WEBHOOK_URL", "ftp://hooks.acme.test"),
        ("STRATAI_ALERT_WEBHOOK_URL", "not a url"),
        ("STRATAI_REDIS_URL", "http://127.0.0.1:6379"),
        ("STRATAI_LOG_FORMAT", "xml"),
        ("RUST_LOG", "stratai=loud"),
        ("STRATAI_DEV_ALLOW_REMOTE", "2"),
        ("STRATAI_BODY_LIMIT_BYTES", "1MB"),
        ("STRATAI_REQUEST_TIMEOUT_SECS", "30s"),
        ("STRATAI_SESSION_TTL_SECS", "0"),
        ("STRATAI_DEV_TOKEN_TTL_SECS", "1h"),
        ("STRATAI_BIND", "localhost"),
        ("STRATAI_PUBLIC_URL", "stratai.example"),
        ("DATABASE_URL", "mysql://x"),
        ("STRATAI_VAULT_REPLACE_FOREIGN", "y"),
    ] {
        let mut pairs = vec![
            ("LITELLM_URL", "http://127.0.0.1:4000"),
            ("LITELLM_MASTER_KEY", "sk-m"),
        ];
        pairs.push((key, value));
        let e = Config::load(&env(&pairs)).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("invalid setting {key}:")),
            "{key}={value}: {e}"
        );
    }
    // In the file, the parser names the key.
    let dir = stratai_testkit::Scratch::new();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "gateway_cache_ms = \"2s\"\n").unwrap();
    let e = Config::load(&env(&[("STRATAI_CONFIG", path.to_str().unwrap())]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("gateway_cache_ms"), "{e}");
}
