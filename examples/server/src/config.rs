//! Server configuration: environment variables over an optional TOML or JSON file.
//!
//! The loader, the file shape ([`FileConfig`], unknown fields refused), the strict parsers
//! and the sections the server shares with `litellm-worker` (database, LiteLLM proxy and key
//! vault) are `stratai_litellm::config`'s; [`Config::load`] builds the server's validated view
//! from them once, so a [`Config`] value is always usable and nothing else in the server
//! reads the environment. Secrets are [`Secret`]s, whose `Debug` never prints the value.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use stratai_core::ids::ModelId;
use stratai_core::pricing::{PriceTable, ProviderPrice};
use stratai_guardrails::runtime::liveness::{self, Liveness};
pub use stratai_litellm::Secret;
pub use stratai_litellm::config::{
    ConfigError, Env, FileConfig, FileLiteLlm, FileMail, FileOidc, FileProviderPrice, ProcessEnv,
};
use stratai_litellm::config::{
    DatabaseSettings, LiteLlmSettings, flag_setting, http_url, invalid, load_file, millis, number,
    secs,
};
pub use stratai_store::people::signin::OidcSettings;
pub use stratai_store::people::signin::oidc::LoginClient;
use url::Url;

/// Default database: a SQLite file, so the server runs with nothing installed.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./.stratai/stratai.db?mode=rwc";
/// Default listen address.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// Default platform super admin.
pub const DEFAULT_SUPER_ADMIN_EMAIL: &str = "admin@localhost";
/// Default usage spool file.
pub const DEFAULT_USAGE_SPOOL: &str = "./.stratai/usage.spool";
/// Default mailbox folder (mail without SMTP).
pub const DEFAULT_MAILBOX_DIR: &str = "./.stratai/mailbox";
/// Default sender of invitation emails.
pub const DEFAULT_MAIL_FROM: &str = "StratAI <noreply@localhost>";
/// The longest `STRATAI_AUTH_CACHE_MS` accepted: how long, at worst, another instance keeps
/// admitting a deactivated user's bearer token (the instance that deactivated them forgets
/// them at once).
pub const MAX_AUTH_CACHE: Duration = Duration::from_secs(60);
/// Default `STRATAI_AUTH_CACHE_MS`: verified bearer tokens reused for 2 s (part of the fast
/// path: a steady caller's request reads nothing from the database).
pub const DEFAULT_AUTH_CACHE: Duration = Duration::from_millis(2000);
/// Default `STRATAI_BUDGET_LEASE_MS`: budget reserved in leases of at most 1 s (the fast
/// path; `0` turns leases off, the strict mode).
pub const DEFAULT_BUDGET_LEASE_MS: u64 = 1000;

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The database (`DATABASE_URL`, `STRATAI_DATABASE_OWNER_URL`).
    pub database: DatabaseSettings,
    /// Listen address.
    pub bind: SocketAddr,
    /// Where browsers reach this server; used for the CSRF origin check of cookie sessions.
    pub public_url: Url,
    /// Email of the platform super admin created at first start.
    pub super_admin_email: String,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// Time limit of one request (headers to response start).
    pub request_timeout: Duration,
    /// Lifetime of a browser session.
    pub session_ttl: Duration,
    /// Lifetime of a dev-mode token.
    pub dev_token_ttl: Duration,
    /// Dev mode may listen on a non-loopback address.
    pub dev_allow_remote: bool,
    /// How long a bearer token's verified claims and its user are reused (0: not at all;
    /// default [`DEFAULT_AUTH_CACHE`]).
    pub auth_cache: Duration,
    /// Logging.
    pub log: LogConfig,
    /// The gateway's runtime settings.
    pub gateway: GatewayConfig,
    /// OIDC; `None` means dev mode.
    pub oidc: Option<OidcSettings>,
    /// LiteLLM proxy; `None` means the built-in offline provider.
    pub litellm: Option<LiteLlmConfig>,
    /// Provider prices: the built-in list prices ([`PriceTable::seed_defaults`]) with the
    /// configured ones on top. They give usage records their provider cost (what the spend
    /// reconciler compares with LiteLLM's spend) and worst-case estimates their output cap.
    pub prices: PriceTable,
    /// Outgoing mail (invitation emails).
    pub mail: MailConfig,
}

/// How invitation emails leave the server.
#[derive(Clone, Debug)]
pub struct MailConfig {
    /// The sender (`Name <address>` or an address).
    pub from: String,
    /// SMTP, or the local mailbox folder.
    pub transport: MailTransportConfig,
}

/// Where mail goes.
#[derive(Clone, Debug)]
pub enum MailTransportConfig {
    /// A mail server (`STRATAI_SMTP_URL`).
    Smtp {
        /// `smtp://` or `smtps://` URL (it may hold credentials, hence a secret).
        url: Secret,
        /// User name, when not in the URL.
        username: Option<String>,
        /// Password, when not in the URL.
        password: Option<Secret>,
    },
    /// No mail server: one `.eml` file per message in this folder, and a log line.
    Mailbox(PathBuf),
}

/// LiteLLM proxy settings.
#[derive(Clone, Debug)]
pub struct LiteLlmConfig {
    /// The proxy and the key vault (shared with `litellm-worker`). Its vault key is `None`
    /// only in dev mode without `STRATAI_VAULT_KEY`: an ephemeral key is generated at start,
    /// said so.
    pub proxy: LiteLlmSettings,
    /// Whether the server consumes the outbox itself (`false`: `litellm-worker` does).
    pub sync_in_process: bool,
}

/// Logging settings.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// `RUST_LOG`: the filter (default `info`).
    pub filter: String,
    /// `STRATAI_LOG_FORMAT=json`: JSON lines instead of text.
    pub json: bool,
}

/// The gateway's runtime settings (see `gateway/setup.rs`).
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// `STRATAI_USAGE_SPOOL`: the durable spool of usage writes that failed.
    pub usage_spool: PathBuf,
    /// `STRATAI_ALERT_WEBHOOK_URL`: where budget alerts are POSTed (`None`: log only).
    pub alert_webhook: Option<Url>,
    /// `STRATAI_DEMO_CHUNK_DELAY_MS`: pause between the demo provider's stream chunks.
    pub demo_chunk_delay: Duration,
    /// `STRATAI_GATEWAY_CACHE_MS`: how long a caller's view is reused (0: never).
    pub view_cache_ttl: Duration,
    /// `STRATAI_BUDGET_LEASE_MS` (default [`DEFAULT_BUDGET_LEASE_MS`]; 0: off, a reservation
    /// per request, the strict mode) and `STRATAI_BUDGET_LEASE_BLOCK`.
    pub budget_lease: Option<BudgetLeaseConfig>,
    /// `STRATAI_USAGE_BATCH` (default on; off: each record written before the answer, the
    /// strict mode): usage records written in batches off the response path.
    pub usage_batch: bool,
    /// `STRATAI_USAGE_BATCH_LINGER_MS`: how long a batch collects after its first record.
    pub usage_batch_linger: Duration,
    /// `STRATAI_HEARTBEAT_MS` (default 2000; 0: off) and `STRATAI_DEAD_AFTER_MS` (default
    /// 15000, more than the heartbeat): this instance's heartbeat in the database, and how
    /// old another instance's is when its budget leases are settled from their records.
    pub liveness: Option<Liveness>,
    /// `STRATAI_REDIS_URL` (else `REDIS_URL`): rate limits shared through this Redis.
    pub redis_url: Option<Secret>,
}

/// Budget leases: blocks of budget reserved at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetLeaseConfig {
    /// How long a lease admits requests.
    pub max_age: Duration,
    /// A lease's size, in worst cases of the request that opens it.
    pub block_requests: u32,
}

impl Config {
    /// Loads the configuration: the file named by `STRATAI_CONFIG` (if any), then the
    /// environment on top.
    pub fn load(env: &impl Env) -> Result<Self, ConfigError> {
        Self::from_parts(load_file(env)?, env)
    }

    /// Merges a parsed file with the environment and validates the result.
    pub fn from_parts(file: FileConfig, env: &impl Env) -> Result<Self, ConfigError> {
        let database = DatabaseSettings::load(env, &file, Some(DEFAULT_DATABASE_URL))?;
        let dev_allow_remote =
            flag_setting(env, "STRATAI_DEV_ALLOW_REMOTE", file.dev_allow_remote)?.unwrap_or(false);
        let auth_cache = millis(
            env,
            "STRATAI_AUTH_CACHE_MS",
            file.auth_cache_ms,
            DEFAULT_AUTH_CACHE,
        )?;
        if auth_cache > MAX_AUTH_CACHE {
            return Err(invalid(
                "STRATAI_AUTH_CACHE_MS",
                format!(
                    "`{}` is above {} (a deactivated user's token would be admitted that long)",
                    auth_cache.as_millis(),
                    MAX_AUTH_CACHE.as_millis()
                ),
            ));
        }
        let log = log_config(env, &file)?;
        let gateway = gateway_config(env, &file)?;

        let bind_text = env
            .get("STRATAI_BIND")
            .or(file.bind)
            .unwrap_or_else(|| DEFAULT_BIND.to_owned());
        let bind = SocketAddr::from_str(&bind_text)
            .map_err(|_| invalid("STRATAI_BIND", format!("`{bind_text}` is not host:port")))?;

        let public_url_text = env
            .get("STRATAI_PUBLIC_URL")
            .or(file.public_url)
            .unwrap_or_else(|| format!("http://{bind}"));
        let public_url = http_url("STRATAI_PUBLIC_URL", &public_url_text)?;

        let super_admin_email = env
            .get("STRATAI_SUPER_ADMIN_EMAIL")
            .or(file.super_admin_email)
            .unwrap_or_else(|| DEFAULT_SUPER_ADMIN_EMAIL.to_owned())
            .trim()
            .to_ascii_lowercase();
        if !looks_like_email(&super_admin_email) {
            return Err(invalid(
                "STRATAI_SUPER_ADMIN_EMAIL",
                format!("`{super_admin_email}` is not an email address"),
            ));
        }

        let body_limit_bytes =
            number(env, "STRATAI_BODY_LIMIT_BYTES", file.body_limit_bytes)?.unwrap_or(1024 * 1024);
        if body_limit_bytes == 0 {
            return Err(invalid("STRATAI_BODY_LIMIT_BYTES", "must be positive"));
        }
        let request_timeout = secs(
            env,
            "STRATAI_REQUEST_TIMEOUT_SECS",
            file.request_timeout_secs,
            30,
        )?;
        let session_ttl = secs(
            env,
            "STRATAI_SESSION_TTL_SECS",
            file.session_ttl_secs,
            8 * 3600,
        )?;
        let dev_token_ttl = secs(
            env,
            "STRATAI_DEV_TOKEN_TTL_SECS",
            file.dev_token_ttl_secs,
            3600,
        )?;

        let oidc = oidc_config(file.oidc, env)?;

        let litellm = match LiteLlmSettings::load(env, &file.litellm, oidc.is_none())? {
            None => None,
            Some(proxy) => Some(LiteLlmConfig {
                proxy,
                sync_in_process: match env
                    .get("STRATAI_LITELLM_SYNC")
                    .or(file.litellm.sync)
                    .as_deref()
                    .map(str::trim)
                {
                    None | Some("in-process") => true,
                    Some("worker") => false,
                    Some(other) => {
                        return Err(invalid(
                            "STRATAI_LITELLM_SYNC",
                            format!("`{other}`: expected `in-process` or `worker`"),
                        ));
                    }
                },
            }),
        };

        let prices = match env.get("STRATAI_PROVIDER_PRICES") {
            Some(json) => {
                let de = &mut serde_json::Deserializer::from_str(&json);
                let parsed: BTreeMap<String, FileProviderPrice> =
                    serde_path_to_error::deserialize(de).map_err(|e| {
                        invalid(
                            "STRATAI_PROVIDER_PRICES",
                            format!("at `{}`: {}", e.path(), e.inner()),
                        )
                    })?;
                price_table(Some(parsed), "STRATAI_PROVIDER_PRICES")?
            }
            None => price_table(file.provider_prices, "provider_prices")?,
        };

        let mail = mail_config(env, file.mail)?;

        Ok(Self {
            database,
            bind,
            public_url,
            super_admin_email,
            body_limit_bytes,
            request_timeout,
            session_ttl,
            dev_token_ttl,
            dev_allow_remote,
            auth_cache,
            log,
            gateway,
            oidc,
            litellm,
            prices,
            mail,
        })
    }

    /// Dev mode: no OIDC issuer configured; `POST /auth/dev/token` exists.
    #[must_use]
    pub fn dev_mode(&self) -> bool {
        self.oidc.is_none()
    }

    /// The effective configuration as the operators' settings page shows it, masked here at
    /// the source: a secret is only "set" or "not set", a URL keeps no password, no vault or
    /// master key appears at all. Nothing in the answer can reveal a credential.
    #[must_use]
    pub fn summary(&self) -> Vec<SettingLine> {
        let ms = |d: Duration| format!("{} ms", d.as_millis());
        let yes = |b: bool| if b { "yes" } else { "no" }.to_owned();
        let or = |value: Option<String>, absent: &str| value.unwrap_or_else(|| absent.to_owned());
        let mut out = Vec::new();
        let mut section = |section: &'static str, lines: Vec<(&'static str, String)>| {
            out.extend(lines.into_iter().map(|(name, value)| SettingLine {
                section,
                name,
                value,
            }));
        };
        section(
            "Server",
            vec![
                ("STRATAI_BIND", self.bind.to_string()),
                ("STRATAI_PUBLIC_URL", masked_url(self.public_url.as_str())),
                ("STRATAI_SUPER_ADMIN_EMAIL", self.super_admin_email.clone()),
                (
                    "STRATAI_BODY_LIMIT_BYTES",
                    self.body_limit_bytes.to_string(),
                ),
                ("STRATAI_REQUEST_TIMEOUT_SECS", ms(self.request_timeout)),
                ("RUST_LOG", self.log.filter.clone()),
                (
                    "STRATAI_LOG_FORMAT",
                    (if self.log.json { "json" } else { "text" }).into(),
                ),
            ],
        );
        let owner_url = self.database.owner_url.as_ref();
        section(
            "Database",
            vec![
                ("DATABASE_URL", masked_url(self.database.url.expose())),
                (
                    "STRATAI_DATABASE_OWNER_URL",
                    or(owner_url.map(|u| masked_url(u.expose())), "not set"),
                ),
            ],
        );
        let mode = if self.dev_mode() {
            "dev (sign-in by email; never for production)"
        } else {
            "OIDC"
        };
        let mut sign_in = vec![
            ("Mode", mode.to_owned()),
            ("STRATAI_SESSION_TTL_SECS", ms(self.session_ttl)),
            ("STRATAI_DEV_TOKEN_TTL_SECS", ms(self.dev_token_ttl)),
            ("STRATAI_DEV_ALLOW_REMOTE", yes(self.dev_allow_remote)),
            ("STRATAI_AUTH_CACHE_MS", ms(self.auth_cache)),
        ];
        if let Some(oidc) = &self.oidc {
            let jwks = oidc.jwks_url.as_ref().map(|u| masked_url(u.as_str()));
            sign_in.extend([
                ("OIDC_ISSUER", oidc.issuer.clone()),
                ("OIDC_AUDIENCE", oidc.audience.clone()),
                ("OIDC_JWKS_URL", or(jwks, "from the discovery document")),
                ("OIDC_EMAIL_CLAIM", oidc.email_claim.clone()),
            ]);
            match &oidc.login {
                Some(login) => sign_in.extend([
                    ("OIDC_CLIENT_ID", login.client_id.clone()),
                    (
                        "OIDC_CLIENT_SECRET",
                        secret_state(login.client_secret.as_ref()),
                    ),
                    ("OIDC_REDIRECT_URL", masked_url(login.redirect_url.as_str())),
                    ("Secure cookies", yes(login.secure_cookies)),
                ]),
                None => sign_in.push(("Browser login", "off (bearer tokens only)".into())),
            }
        }
        section("Sign-in", sign_in);
        let g = &self.gateway;
        let lease = g.budget_lease.map(|l| {
            let blocks = l.block_requests;
            format!("{} (blocks of {blocks} requests)", ms(l.max_age))
        });
        let heartbeat = g
            .liveness
            .map(|l| format!("{} (dead after {})", ms(l.heartbeat), ms(l.dead_after)));
        section(
            "Gateway",
            vec![
                ("STRATAI_USAGE_SPOOL", g.usage_spool.display().to_string()),
                (
                    "STRATAI_ALERT_WEBHOOK_URL",
                    or(
                        g.alert_webhook.as_ref().map(|u| masked_url(u.as_str())),
                        "not set (alerts are logged)",
                    ),
                ),
                ("STRATAI_GATEWAY_CACHE_MS", ms(g.view_cache_ttl)),
                ("STRATAI_BUDGET_LEASE_MS", or(lease, "off")),
                ("STRATAI_USAGE_BATCH", yes(g.usage_batch)),
                ("STRATAI_USAGE_BATCH_LINGER_MS", ms(g.usage_batch_linger)),
                (
                    "STRATAI_HEARTBEAT_MS",
                    or(heartbeat, "off (leases of a dead instance expire)"),
                ),
                (
                    "STRATAI_REDIS_URL",
                    or(
                        g.redis_url.as_ref().map(|u| masked_url(u.expose())),
                        "not set (rate limits per instance)",
                    ),
                ),
            ],
        );
        let litellm = match &self.litellm {
            Some(l) => {
                let vault = if l.proxy.vault_key.is_some() {
                    "set (hidden)"
                } else {
                    "not set (an ephemeral key, dev mode)"
                };
                let sync = if l.sync_in_process {
                    "in this server"
                } else {
                    "litellm-worker"
                };
                vec![
                    ("LITELLM_URL", masked_url(l.proxy.url.as_str())),
                    (
                        "LITELLM_MASTER_KEY",
                        secret_state(Some(&l.proxy.master_key)),
                    ),
                    ("STRATAI_VAULT_KEY", vault.to_owned()),
                    (
                        "STRATAI_LITELLM_CALLBACK_SECRET",
                        secret_state(l.proxy.callback_secret.as_ref()),
                    ),
                    ("Key sync", sync.to_owned()),
                    ("STRATAI_LITELLM_KEY_DURATION", l.proxy.key_duration.clone()),
                ]
            }
            None => vec![(
                "LITELLM_URL",
                "not set (the built-in offline provider answers)".to_owned(),
            )],
        };
        section("LiteLLM", litellm);
        let mut mail = vec![("STRATAI_MAIL_FROM", self.mail.from.clone())];
        match &self.mail.transport {
            MailTransportConfig::Smtp {
                url,
                username,
                password,
            } => mail.extend([
                ("STRATAI_SMTP_URL", masked_url(url.expose())),
                ("STRATAI_SMTP_USERNAME", or(username.clone(), "not set")),
                ("STRATAI_SMTP_PASSWORD", secret_state(password.as_ref())),
            ]),
            MailTransportConfig::Mailbox(dir) => mail.push((
                "STRATAI_MAILBOX_DIR",
                format!("{} (no mail server: one file per message)", dir.display()),
            )),
        }
        section("Mail", mail);
        let prices = self.prices.iter().map(|(model, price)| {
            let (input, output) = (price.input_per_million, price.output_per_million);
            let cap = price.max_output_tokens;
            let line =
                format!("{model}: ${input} in, ${output} out per 1M tokens; output cap {cap}");
            ("STRATAI_PROVIDER_PRICES", line)
        });
        section("Provider prices", prices.collect());
        out
    }
}

/// One line of [`Config::summary`]: already masked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettingLine {
    /// The group it is shown in.
    pub section: &'static str,
    /// The variable (or what it is).
    pub name: &'static str,
    /// The effective value, masked.
    pub value: String,
}

/// "set (hidden)" or "not set": a secret's only visible property.
fn secret_state(secret: Option<&Secret>) -> String {
    match secret {
        Some(s) if !s.is_empty() => "set (hidden)".to_owned(),
        _ => "not set".to_owned(),
    }
}

/// A URL without its password (and without a query, which may carry tokens); text that is
/// not a URL is hidden whole.
fn masked_url(text: &str) -> String {
    match Url::parse(text) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("hidden"));
            }
            if url.query().is_some() {
                url.set_query(Some("hidden"));
            }
            url.fragment().is_some().then(|| url.set_fragment(None));
            url.to_string()
        }
        Err(_) if text.starts_with("sqlite:") => text.to_owned(),
        Err(_) => "set (hidden: not a URL)".to_owned(),
    }
}

/// `RUST_LOG` and `STRATAI_LOG_FORMAT`.
fn log_config(env: &impl Env, file: &FileConfig) -> Result<LogConfig, ConfigError> {
    let filter = env
        .get("RUST_LOG")
        .or_else(|| file.log_filter.clone())
        .unwrap_or_else(|| "info".to_owned());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&filter) {
        return Err(invalid("RUST_LOG", format!("`{filter}`: {e}")));
    }
    let json = match env
        .get("STRATAI_LOG_FORMAT")
        .or_else(|| file.log_format.clone())
        .map(|f| f.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            return Err(invalid(
                "STRATAI_LOG_FORMAT",
                format!("`{other}`: expected `text` or `json`"),
            ));
        }
    };
    Ok(LogConfig { filter, json })
}

/// The gateway's runtime settings.
fn gateway_config(env: &impl Env, file: &FileConfig) -> Result<GatewayConfig, ConfigError> {
    let usage_spool = env
        .get("STRATAI_USAGE_SPOOL")
        .map(PathBuf::from)
        .or_else(|| file.usage_spool.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_USAGE_SPOOL));
    let alert_webhook = env
        .get("STRATAI_ALERT_WEBHOOK_URL")
        .or_else(|| file.alert_webhook_url.clone())
        .map(|u| http_url("STRATAI_ALERT_WEBHOOK_URL", &u))
        .transpose()?;
    let lease_ms = number(env, "STRATAI_BUDGET_LEASE_MS", file.budget_lease_ms)?
        .unwrap_or(DEFAULT_BUDGET_LEASE_MS);
    let block = number(env, "STRATAI_BUDGET_LEASE_BLOCK", file.budget_lease_block)?.unwrap_or(32);
    if block == 0 {
        return Err(invalid("STRATAI_BUDGET_LEASE_BLOCK", "must be positive"));
    }
    let heartbeat = millis(
        env,
        "STRATAI_HEARTBEAT_MS",
        file.heartbeat_ms,
        liveness::DEFAULT_HEARTBEAT,
    )?;
    let dead_after = millis(
        env,
        "STRATAI_DEAD_AFTER_MS",
        file.dead_after_ms,
        liveness::DEFAULT_DEAD_AFTER,
    )?;
    if !heartbeat.is_zero() && dead_after <= heartbeat {
        return Err(invalid(
            "STRATAI_DEAD_AFTER_MS",
            "must be more than `STRATAI_HEARTBEAT_MS` (a live instance would be taken for dead)",
        ));
    }
    let liveness = (!heartbeat.is_zero()).then_some(Liveness {
        heartbeat,
        dead_after,
    });
    let redis_url = env
        .get("STRATAI_REDIS_URL")
        .or_else(|| env.get("REDIS_URL"))
        .map(Secret::new)
        .or_else(|| file.redis_url.clone());
    if let Some(url) = &redis_url
        && !(url.expose().starts_with("redis://") || url.expose().starts_with("rediss://"))
    {
        return Err(invalid(
            "STRATAI_REDIS_URL",
            "expected a `redis://` or `rediss://` url",
        ));
    }
    Ok(GatewayConfig {
        usage_spool,
        alert_webhook,
        demo_chunk_delay: millis(
            env,
            "STRATAI_DEMO_CHUNK_DELAY_MS",
            file.demo_chunk_delay_ms,
            Duration::ZERO,
        )?,
        view_cache_ttl: millis(
            env,
            "STRATAI_GATEWAY_CACHE_MS",
            file.gateway_cache_ms,
            Duration::from_millis(2000),
        )?,
        budget_lease: (lease_ms > 0).then_some(BudgetLeaseConfig {
            max_age: Duration::from_millis(lease_ms),
            block_requests: block,
        }),
        usage_batch: flag_setting(env, "STRATAI_USAGE_BATCH", file.usage_batch)?.unwrap_or(true),
        usage_batch_linger: millis(
            env,
            "STRATAI_USAGE_BATCH_LINGER_MS",
            file.usage_batch_linger_ms,
            crate::gateway::batch::DEFAULT_LINGER,
        )?,
        liveness,
        redis_url,
    })
}

/// The built-in list prices with `configured` on top, each entry validated.
fn price_table(
    configured: Option<BTreeMap<String, FileProviderPrice>>,
    key: &'static str,
) -> Result<PriceTable, ConfigError> {
    let mut table = PriceTable::seed_defaults();
    for (model, p) in configured.unwrap_or_default() {
        let id = ModelId::new(model.clone())
            .map_err(|e| invalid(key, format!("model `{model}`: {e}")))?;
        let price = ProviderPrice::new(
            p.input_per_million,
            p.output_per_million,
            p.max_output_tokens
                .unwrap_or(stratai_core::pricing::FALLBACK_OUTPUT_CAP),
        )
        .map_err(|e| invalid(key, format!("model `{model}`: {e}")))?;
        table
            .set(id, price)
            .map_err(|e| invalid(key, format!("model `{model}`: {e}")))?;
    }
    Ok(table)
}

fn oidc_config(file: FileOidc, env: &impl Env) -> Result<Option<OidcSettings>, ConfigError> {
    let issuer = env
        .get("OIDC_ISSUER")
        .or_else(|| env.get("AUTH0_DOMAIN").map(|d| auth0_issuer(&d)))
        .or(file.issuer);
    let client_id = env
        .get("OIDC_CLIENT_ID")
        .or_else(|| env.get("AUTH0_CLIENT_ID"))
        .or(file.client_id);
    let client_secret = env
        .get("OIDC_CLIENT_SECRET")
        .or_else(|| env.get("AUTH0_CLIENT_SECRET"))
        .map(Secret::new)
        .or(file.client_secret);
    let redirect_url = env
        .get("OIDC_REDIRECT_URL")
        .or_else(|| env.get("AUTH0_CALLBACK_URL"))
        .or(file.redirect_url);

    let Some(issuer) = issuer else {
        if client_id.is_some() || redirect_url.is_some() || env.get("OIDC_AUDIENCE").is_some() {
            return Err(invalid(
                "OIDC_ISSUER",
                "required when other OIDC settings are given (unset them all for dev mode)",
            ));
        }
        return Ok(None);
    };
    let issuer_url = http_url("OIDC_ISSUER", &issuer)?;
    require_https_or_loopback("OIDC_ISSUER", &issuer_url)?;

    let audience = env
        .get("OIDC_AUDIENCE")
        .or(file.audience)
        .or_else(|| client_id.clone())
        .ok_or_else(|| invalid("OIDC_AUDIENCE", "required (or set OIDC_CLIENT_ID)"))?;

    let algorithms = match env.get("OIDC_ALGORITHMS") {
        Some(list) => list.split(',').map(|s| s.trim().to_owned()).collect(),
        None => file.algorithms.unwrap_or_else(|| vec!["RS256".to_owned()]),
    };
    let algorithms = parse_algorithms(&algorithms)?;

    let jwks_url = match env.get("OIDC_JWKS_URL").or(file.jwks_url) {
        Some(u) => {
            let url = http_url("OIDC_JWKS_URL", &u)?;
            require_https_or_loopback("OIDC_JWKS_URL", &url)?;
            Some(url)
        }
        None => None,
    };

    let leeway = secs(env, "OIDC_LEEWAY_SECS", file.leeway_secs, 30)?;
    if leeway > Duration::from_secs(300) {
        return Err(invalid("OIDC_LEEWAY_SECS", "at most 300 seconds"));
    }
    let jwks_min_refresh = secs(
        env,
        "OIDC_JWKS_MIN_REFRESH_SECS",
        file.jwks_min_refresh_secs,
        60,
    )?;
    let jwks_max_age = secs(env, "OIDC_JWKS_MAX_AGE_SECS", file.jwks_max_age_secs, 3600)?;
    let email_claim = env
        .get("OIDC_EMAIL_CLAIM")
        .or(file.email_claim)
        .unwrap_or_else(|| "email".to_owned());

    let login = match (client_id, redirect_url) {
        (Some(client_id), Some(redirect)) => {
            let redirect_url = http_url("OIDC_REDIRECT_URL", &redirect)?;
            require_https_or_loopback("OIDC_REDIRECT_URL", &redirect_url)?;
            let secure_cookies = !(redirect_url.scheme() == "http" && is_loopback(&redirect_url));
            let post_logout_url = env
                .get("OIDC_POST_LOGOUT_URL")
                .or(file.post_logout_url)
                .map(|u| http_url("OIDC_POST_LOGOUT_URL", &u))
                .transpose()?;
            let post_login_url = env
                .get("OIDC_POST_LOGIN_URL")
                .or(file.post_login_url)
                .unwrap_or_else(|| "/".to_owned());
            if !post_login_url.starts_with('/') || post_login_url.starts_with("//") {
                return Err(invalid(
                    "OIDC_POST_LOGIN_URL",
                    "must be a path on this server, starting with `/`",
                ));
            }
            Some(LoginClient {
                client_id,
                client_secret,
                redirect_url,
                post_login_url,
                post_logout_url,
                scopes: env
                    .get("OIDC_SCOPES")
                    .or(file.scopes)
                    .unwrap_or_else(|| "openid profile email".to_owned()),
                secure_cookies,
            })
        }
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                "OIDC_REDIRECT_URL",
                "required when OIDC_CLIENT_ID is set",
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "OIDC_CLIENT_ID",
                "required when OIDC_REDIRECT_URL is set",
            ));
        }
    };
    if let Some(login) = &login
        && !login.scopes.split_whitespace().any(|s| s == "openid")
    {
        return Err(invalid("OIDC_SCOPES", "must include `openid`"));
    }

    Ok(Some(OidcSettings {
        issuer,
        audience,
        algorithms,
        jwks_url,
        leeway,
        jwks_min_refresh,
        jwks_max_age,
        email_claim,
        login,
    }))
}

/// Auth0's issuer for a tenant domain: `https://<domain>/` (the trailing slash matters).
fn auth0_issuer(domain: &str) -> String {
    let d = domain
        .trim()
        .trim_start_matches("https://")
        .trim_end_matches('/');
    format!("https://{d}/")
}

fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, ConfigError> {
    let mut out = Vec::new();
    for name in names {
        let alg = Algorithm::from_str(name)
            .map_err(|_| invalid("OIDC_ALGORITHMS", format!("unknown algorithm `{name}`")))?;
        // Symmetric algorithms would make the provider's public key a shared secret.
        if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
            return Err(invalid(
                "OIDC_ALGORITHMS",
                format!("`{name}` is symmetric; only asymmetric algorithms are accepted"),
            ));
        }
        if !out.contains(&alg) {
            out.push(alg);
        }
    }
    if out.is_empty() {
        return Err(invalid(
            "OIDC_ALGORITHMS",
            "at least one algorithm is required",
        ));
    }
    Ok(out)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn require_https_or_loopback(key: &'static str, url: &Url) -> Result<(), ConfigError> {
    if url.scheme() == "https" || is_loopback(url) {
        Ok(())
    } else {
        Err(invalid(
            key,
            format!("`{url}` must use https (plain http is allowed on loopback only)"),
        ))
    }
}

/// The `[mail]` settings: SMTP when `STRATAI_SMTP_URL` is set, else the mailbox folder.
fn mail_config(env: &impl Env, file: FileMail) -> Result<MailConfig, ConfigError> {
    let from = env
        .get("STRATAI_MAIL_FROM")
        .or(file.from)
        .unwrap_or_else(|| DEFAULT_MAIL_FROM.to_owned())
        .trim()
        .to_owned();
    // `Name <address>` or a bare address; lettre parses it again when a mail is built.
    let address = from
        .rsplit_once('<')
        .map_or(from.as_str(), |(_, rest)| rest.trim_end_matches('>'));
    if !looks_like_email(&address.to_ascii_lowercase()) || from.chars().any(char::is_control) {
        return Err(invalid(
            "STRATAI_MAIL_FROM",
            format!("`{from}` is not an address or `Name <address>`"),
        ));
    }
    let url = env
        .get("STRATAI_SMTP_URL")
        .map(Secret::new)
        .or(file.smtp_url);
    let username = env.get("STRATAI_SMTP_USERNAME").or(file.smtp_username);
    let password = env
        .get("STRATAI_SMTP_PASSWORD")
        .map(Secret::new)
        .or(file.smtp_password);
    let transport = match url {
        Some(url) => {
            let parsed = Url::parse(url.expose().trim())
                .map_err(|e| invalid("STRATAI_SMTP_URL", format!("not a URL ({e})")))?;
            if !matches!(parsed.scheme(), "smtp" | "smtps") || parsed.host_str().is_none() {
                return Err(invalid(
                    "STRATAI_SMTP_URL",
                    "expected smtp://host[:port] or smtps://host[:port]",
                ));
            }
            if username.is_some() != password.is_some() {
                return Err(invalid(
                    "STRATAI_SMTP_USERNAME",
                    "set both STRATAI_SMTP_USERNAME and STRATAI_SMTP_PASSWORD, or neither",
                ));
            }
            MailTransportConfig::Smtp {
                url,
                username,
                password,
            }
        }
        None => {
            if username.is_some() || password.is_some() {
                return Err(invalid(
                    "STRATAI_SMTP_URL",
                    "SMTP credentials are set but no STRATAI_SMTP_URL",
                ));
            }
            MailTransportConfig::Mailbox(
                env.get("STRATAI_MAILBOX_DIR")
                    .map(PathBuf::from)
                    .or(file.mailbox_dir)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_MAILBOX_DIR)),
            )
        }
    };
    Ok(MailConfig { from, transport })
}

/// A light syntactic check: one `@`, something on both sides, no spaces or control characters.
#[must_use]
pub fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && s.len() <= 254
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}
