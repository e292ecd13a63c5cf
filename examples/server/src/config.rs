//! Server configuration: environment variables over an optional TOML or JSON file.
//!
//! The raw file shape ([`FileConfig`]) refuses unknown fields; [`Config::load`] merges it
//! with the environment and validates everything once, so a [`Config`] value is always
//! usable. Secrets are wrapped in [`Secret`], whose `Debug` never prints the value.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use rust_decimal::Decimal;
use serde::Deserialize;
use stratai_core::ids::ModelId;
use stratai_core::pricing::{PriceTable, ProviderPrice};
use url::Url;

/// Default database: a SQLite file, so the server runs with nothing installed.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./.stratai/stratai.db?mode=rwc";
/// Default listen address.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// Default platform super admin.
pub const DEFAULT_SUPER_ADMIN_EMAIL: &str = "admin@localhost";

/// A configuration problem, reported at start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file `{path}`: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML/JSON of the expected shape.
    #[error("invalid config file `{path}`: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Parser message (includes the offending key).
        reason: String,
    },
    /// One setting is invalid.
    #[error("invalid setting {key}: {reason}")]
    Invalid {
        /// Environment variable (or file key) name.
        key: &'static str,
        /// Why, naming the offending value.
        reason: String,
    },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// A secret string: `Debug` and `Display` print `[redacted]`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is sent, never where it is logged.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The optional config file, as written. Every key may also be set by its environment
/// variable (named in the field docs), which wins.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `DATABASE_URL`
    pub database_url: Option<String>,
    /// `STRATAI_BIND`
    pub bind: Option<String>,
    /// `STRATAI_PUBLIC_URL`
    pub public_url: Option<String>,
    /// `STRATAI_SUPER_ADMIN_EMAIL`
    pub super_admin_email: Option<String>,
    /// `STRATAI_BODY_LIMIT_BYTES`
    pub body_limit_bytes: Option<usize>,
    /// `STRATAI_REQUEST_TIMEOUT_SECS`
    pub request_timeout_secs: Option<u64>,
    /// `STRATAI_SESSION_TTL_SECS`
    pub session_ttl_secs: Option<u64>,
    /// `STRATAI_DEV_TOKEN_TTL_SECS`
    pub dev_token_ttl_secs: Option<u64>,
    /// OIDC settings.
    #[serde(default)]
    pub oidc: FileOidc,
    /// LiteLLM settings.
    #[serde(default)]
    pub litellm: FileLiteLlm,
    /// `STRATAI_PROVIDER_PRICES` (a JSON object in the environment): provider prices by
    /// model, added to (or replacing entries of) the built-in list prices.
    pub provider_prices: Option<BTreeMap<String, FileProviderPrice>>,
}

/// One model's provider price in the config file (`[provider_prices."<model>"]`).
///
/// Rates are dollars per million tokens, written as decimal strings (`"0.15"`) or integers;
/// floating-point numbers are refused so no price passes through `f64`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileProviderPrice {
    /// $ per 1M input (prompt) tokens.
    #[serde(deserialize_with = "decimal_text")]
    pub input_per_million: Decimal,
    /// $ per 1M output (completion) tokens.
    #[serde(deserialize_with = "decimal_text")]
    pub output_per_million: Decimal,
    /// The model's largest answer, assumed for a request without `max_tokens` (default 4096).
    pub max_output_tokens: Option<u32>,
}

/// A decimal from a string or an integer, never from a float.
fn decimal_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Int(i64),
        Other(serde::de::IgnoredAny),
    }
    match Raw::deserialize(d)? {
        Raw::Text(t) => Decimal::from_str(t.trim())
            .map_err(|e| serde::de::Error::custom(format!("`{t}` is not a decimal: {e}"))),
        Raw::Int(i) => Ok(Decimal::from(i)),
        Raw::Other(_) => Err(serde::de::Error::custom(
            "a price is a decimal string (e.g. \"0.15\") or an integer, never a float",
        )),
    }
}

/// The `[oidc]` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOidc {
    /// `OIDC_ISSUER` (or `AUTH0_DOMAIN`, which becomes `https://<domain>/`)
    pub issuer: Option<String>,
    /// `OIDC_AUDIENCE`
    pub audience: Option<String>,
    /// `OIDC_CLIENT_ID` (or `AUTH0_CLIENT_ID`)
    pub client_id: Option<String>,
    /// `OIDC_CLIENT_SECRET` (or `AUTH0_CLIENT_SECRET`)
    pub client_secret: Option<Secret>,
    /// `OIDC_REDIRECT_URL` (or `AUTH0_CALLBACK_URL`)
    pub redirect_url: Option<String>,
    /// `OIDC_POST_LOGIN_URL`
    pub post_login_url: Option<String>,
    /// `OIDC_POST_LOGOUT_URL`
    pub post_logout_url: Option<String>,
    /// `OIDC_ALGORITHMS`, comma separated in the environment
    pub algorithms: Option<Vec<String>>,
    /// `OIDC_JWKS_URL`
    pub jwks_url: Option<String>,
    /// `OIDC_LEEWAY_SECS`
    pub leeway_secs: Option<u64>,
    /// `OIDC_JWKS_MIN_REFRESH_SECS`
    pub jwks_min_refresh_secs: Option<u64>,
    /// `OIDC_JWKS_MAX_AGE_SECS`
    pub jwks_max_age_secs: Option<u64>,
    /// `OIDC_EMAIL_CLAIM`
    pub email_claim: Option<String>,
    /// `OIDC_SCOPES`, space separated in the environment
    pub scopes: Option<String>,
}

/// The `[litellm]` section of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLiteLlm {
    /// `LITELLM_URL`
    pub url: Option<String>,
    /// `LITELLM_MASTER_KEY`
    pub master_key: Option<Secret>,
    /// `STRATAI_VAULT_KEY`: master key of the virtual-key vault, 32 bytes as 64 hex digits or
    /// base64 (`openssl rand -base64 32`); the same in the server and `litellm-worker`
    pub vault_key: Option<Secret>,
    /// `STRATAI_VAULT_REPLACE_FOREIGN`: replace members' keys sealed under another master key
    /// (after losing it) instead of refusing them
    pub vault_replace_foreign: Option<bool>,
    /// `STRATAI_LITELLM_SYNC`: `in-process` (default) runs the outbox sync in the server;
    /// `worker` leaves it to `litellm-worker`
    pub sync: Option<String>,
}

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Database connection string (`sqlite:` or `postgres:`).
    pub database_url: Secret,
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
    /// OIDC; `None` means dev mode.
    pub oidc: Option<OidcConfig>,
    /// LiteLLM proxy; `None` means the built-in offline provider.
    pub litellm: Option<LiteLlmConfig>,
    /// Provider prices: the built-in list prices ([`PriceTable::seed_defaults`]) with the
    /// configured ones on top. They give usage records their provider cost (what the spend
    /// reconciler compares with LiteLLM's spend) and worst-case estimates their output cap.
    pub prices: PriceTable,
}

/// OIDC provider settings (Auth0 first; any OIDC provider with discovery works).
#[derive(Clone, Debug)]
pub struct OidcConfig {
    /// Issuer exactly as it appears in `iss` (Auth0: `https://<tenant>.auth0.com/`).
    pub issuer: String,
    /// Expected `aud` of bearer access tokens (Auth0: the API identifier).
    pub audience: String,
    /// Accepted signing algorithms; a key's algorithm must be one of these.
    pub algorithms: Vec<Algorithm>,
    /// JWKS location; `None` means "from the discovery document".
    pub jwks_url: Option<Url>,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// An unknown `kid` triggers at most one JWKS refetch per this interval.
    pub jwks_min_refresh: Duration,
    /// Keys older than this are refreshed (if the endpoint answers) on next use.
    pub jwks_max_age: Duration,
    /// Claim carrying the email (Auth0 access tokens need a namespaced custom claim).
    pub email_claim: String,
    /// Browser login; `None` means bearer tokens only.
    pub login: Option<OidcLoginConfig>,
}

/// Settings of the browser login (authorization code + PKCE).
#[derive(Clone, Debug)]
pub struct OidcLoginConfig {
    /// Client id; also the `aud` of id tokens.
    pub client_id: String,
    /// Client secret (confidential client); `None` for a public client (PKCE only).
    pub client_secret: Option<Secret>,
    /// This server's `/auth/callback` URL as registered at the provider.
    pub redirect_url: Url,
    /// Where the browser goes after a successful login.
    pub post_login_url: String,
    /// Where the provider sends the browser after logout.
    pub post_logout_url: Option<Url>,
    /// Requested scopes.
    pub scopes: String,
    /// Whether cookies carry `Secure` (false only for plain-http loopback development).
    pub secure_cookies: bool,
}

/// LiteLLM proxy settings.
#[derive(Clone, Debug)]
pub struct LiteLlmConfig {
    /// Base URL of the proxy.
    pub url: Url,
    /// Master key for management calls.
    pub master_key: Secret,
    /// Master key of the virtual-key vault (secrets sealed in the database). `None` only in
    /// dev mode without `STRATAI_VAULT_KEY`: an ephemeral key is generated at start, said so.
    pub vault_key: Option<stratai_litellm::vault::VaultKey>,
    /// Replace members' keys sealed under another master key instead of refusing them.
    pub vault_replace_foreign: bool,
    /// Whether the server consumes the outbox itself (`false`: `litellm-worker` does).
    pub sync_in_process: bool,
}

/// Where settings come from: the process environment, or a map in tests.
pub trait Env {
    /// The value of `key`, if set and not empty.
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.trim().is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key)
            .cloned()
            .filter(|v| !v.trim().is_empty())
    }
}

impl Config {
    /// Loads the configuration: the file named by `STRATAI_CONFIG` (if any), then the
    /// environment on top.
    pub fn load(env: &impl Env) -> Result<Self, ConfigError> {
        let file = match env.get("STRATAI_CONFIG") {
            Some(path) => read_file(Path::new(&path))?,
            None => FileConfig::default(),
        };
        Self::from_parts(file, env)
    }

    /// Merges a parsed file with the environment and validates the result.
    pub fn from_parts(file: FileConfig, env: &impl Env) -> Result<Self, ConfigError> {
        let database_url = env
            .get("DATABASE_URL")
            .or(file.database_url)
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres:")
            || database_url.starts_with("postgresql:"))
        {
            return Err(invalid(
                "DATABASE_URL",
                "expected a `sqlite:` or `postgres:` url",
            ));
        }

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
        let public_url = parse_url("STRATAI_PUBLIC_URL", &public_url_text)?;

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

        let litellm_url = env.get("LITELLM_URL").or(file.litellm.url);
        let litellm_key = env
            .get("LITELLM_MASTER_KEY")
            .map(Secret::new)
            .or(file.litellm.master_key);
        let litellm = match (litellm_url, litellm_key) {
            (None, None) => None,
            (Some(url), Some(master_key)) => Some(LiteLlmConfig {
                url: parse_url("LITELLM_URL", &url)?,
                master_key,
                vault_key: vault_key(
                    env.get("STRATAI_VAULT_KEY")
                        .map(Secret::new)
                        .or(file.litellm.vault_key),
                    oidc.is_none(),
                )?,
                vault_replace_foreign: match env.get("STRATAI_VAULT_REPLACE_FOREIGN") {
                    Some(v) => flag("STRATAI_VAULT_REPLACE_FOREIGN", &v)?,
                    None => file.litellm.vault_replace_foreign.unwrap_or(false),
                },
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
            (Some(_), None) => {
                return Err(invalid(
                    "LITELLM_MASTER_KEY",
                    "required when LITELLM_URL is set",
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "LITELLM_URL",
                    "required when LITELLM_MASTER_KEY is set",
                ));
            }
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

        Ok(Self {
            database_url: Secret::new(database_url),
            bind,
            public_url,
            super_admin_email,
            body_limit_bytes,
            request_timeout,
            session_ttl,
            dev_token_ttl,
            oidc,
            litellm,
            prices,
        })
    }

    /// Dev mode: no OIDC issuer configured; `POST /auth/dev/token` exists.
    #[must_use]
    pub fn dev_mode(&self) -> bool {
        self.oidc.is_none()
    }
}

/// The vault master key: parsed when given; required outside dev mode (an ephemeral key
/// would make every restart regenerate every member's virtual key).
fn vault_key(
    text: Option<Secret>,
    dev_mode: bool,
) -> Result<Option<stratai_litellm::vault::VaultKey>, ConfigError> {
    match text {
        Some(text) => stratai_litellm::vault::VaultKey::parse(text.expose())
            .map(Some)
            .map_err(|e| invalid("STRATAI_VAULT_KEY", e.to_string())),
        None if dev_mode => Ok(None),
        None => Err(invalid(
            "STRATAI_VAULT_KEY",
            "required when LITELLM_URL is set outside dev mode: the master key sealing \
             members' virtual keys in the database (32 bytes, hex or base64, e.g. `openssl \
             rand -base64 32`; litellm-worker needs the same)",
        )),
    }
}

/// A boolean setting: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`.
fn flag(key: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(invalid(key, format!("`{other}` is not a boolean"))),
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let parse_err = |reason: String| ConfigError::Parse {
        path: path.to_owned(),
        reason,
    };
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        let de = &mut serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(de)
            .map_err(|e| parse_err(format!("at `{}`: {}", e.path(), e.inner())))
    } else {
        toml::from_str(&text).map_err(|e| parse_err(e.to_string()))
    }
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

fn oidc_config(file: FileOidc, env: &impl Env) -> Result<Option<OidcConfig>, ConfigError> {
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
    let issuer_url = parse_url("OIDC_ISSUER", &issuer)?;
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
            let url = parse_url("OIDC_JWKS_URL", &u)?;
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
            let redirect_url = parse_url("OIDC_REDIRECT_URL", &redirect)?;
            require_https_or_loopback("OIDC_REDIRECT_URL", &redirect_url)?;
            let secure_cookies = !(redirect_url.scheme() == "http" && is_loopback(&redirect_url));
            let post_logout_url = env
                .get("OIDC_POST_LOGOUT_URL")
                .or(file.post_logout_url)
                .map(|u| parse_url("OIDC_POST_LOGOUT_URL", &u))
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
            Some(OidcLoginConfig {
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

    Ok(Some(OidcConfig {
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

fn parse_url(key: &'static str, text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text).map_err(|e| invalid(key, format!("`{text}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(key, format!("`{text}` is not an http(s) url")));
    }
    Ok(url)
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

fn number<T: FromStr>(
    env: &impl Env,
    key: &'static str,
    file: Option<T>,
) -> Result<Option<T>, ConfigError> {
    match env.get(key) {
        Some(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| invalid(key, format!("`{text}` is not a non-negative integer"))),
        None => Ok(file),
    }
}

fn secs(
    env: &impl Env,
    key: &'static str,
    file: Option<u64>,
    default: u64,
) -> Result<Duration, ConfigError> {
    let n = number(env, key, file)?.unwrap_or(default);
    if n == 0 {
        return Err(invalid(key, "must be positive"));
    }
    Ok(Duration::from_secs(n))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_are_dev_mode_on_sqlite() {
        let c = Config::load(&env(&[])).unwrap();
        assert!(c.dev_mode());
        assert_eq!(c.database_url.expose(), DEFAULT_DATABASE_URL);
        assert_eq!(c.bind.to_string(), DEFAULT_BIND);
        assert_eq!(c.super_admin_email, DEFAULT_SUPER_ADMIN_EMAIL);
        assert!(c.litellm.is_none());
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
        let l = c.litellm.as_ref().unwrap();
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
        assert!(l.vault_key.is_none());
        assert!(!l.vault_replace_foreign);
        assert!(l.sync_in_process);
        // Given: parsed once; Debug shows its id, not the key.
        let mut with_key = litellm.to_vec();
        with_key.push(("STRATAI_VAULT_KEY", key_hex));
        with_key.push(("STRATAI_VAULT_REPLACE_FOREIGN", "true"));
        with_key.push(("STRATAI_LITELLM_SYNC", "worker"));
        let c = Config::load(&env(&with_key)).unwrap();
        let l = c.litellm.as_ref().unwrap();
        let vault = l.vault_key.as_ref().unwrap();
        assert_eq!(
            vault.id(),
            stratai_litellm::vault::VaultKey::parse(key_hex)
                .unwrap()
                .id()
        );
        assert!(l.vault_replace_foreign);
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
                .vault_key
                .is_some()
        );
    }
}
