//! The one configuration loader of StratAI's processes (`stratai-server` and `litellm-worker`):
//! where settings come from ([`Env`]: the process environment, or an explicit map in tests),
//! the one file shape both read ([`FileConfig`], TOML or JSON named by `STRATAI_CONFIG`,
//! unknown keys refused), the strict parsers every setting goes through (a value that does not
//! parse is an error naming its key, never a silent default), deprecated names that still work
//! with a warning ([`Lookup`]), and the two sections both processes share: the database
//! ([`DatabaseSettings`]) and the LiteLLM proxy with its key vault ([`LiteLlmSettings`]).
//!
//! Each binary builds its own validated config from these (the server's `config.rs`, the
//! worker's `config.rs`); this is the only module of the workspace's libraries that reads the
//! process environment ([`ProcessEnv`]).
//!
//! It lives here because stratai-litellm is the lowest crate both processes depend on that can
//! hold both shared sections: the vault key and the client settings are its own types, and
//! stratai-store (the database) must not depend on it.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use rust_decimal::Decimal;
use serde::Deserialize;
use stratai_core::ports::KeyVaultStore;

use crate::Secret;
use crate::vault::{EncryptedKeyVault, ForeignSecrets, VaultKey};

/// The environment variable naming the config file.
pub const CONFIG_FILE_KEY: &str = "STRATAI_CONFIG";

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
        /// Why, naming the offending value (never a secret's).
        reason: String,
    },
}

/// The error for an invalid setting `key`.
pub fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

/// Where settings come from: the process environment, or a map in tests.
pub trait Env {
    /// The value of `key`, if set and not blank.
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

impl Env for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        BTreeMap::get(self, key)
            .cloned()
            .filter(|v| !v.trim().is_empty())
    }
}

/// An [`Env`] that also answers for a key under its deprecated names (`(old, new)` pairs),
/// noting a warning for each old name used; the new name wins when both are set.
pub struct Lookup<'e, E: Env + ?Sized> {
    env: &'e E,
    aliases: &'static [(&'static str, &'static str)],
    warnings: RefCell<Vec<String>>,
}

impl<E: Env + ?Sized> std::fmt::Debug for Lookup<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookup")
            .field("aliases", &self.aliases)
            .finish_non_exhaustive()
    }
}

impl<'e, E: Env + ?Sized> Lookup<'e, E> {
    /// `env` with the deprecated names `aliases` (`(old, new)`).
    pub fn new(env: &'e E, aliases: &'static [(&'static str, &'static str)]) -> Self {
        Self {
            env,
            aliases,
            warnings: RefCell::new(Vec::new()),
        }
    }

    /// The warnings noted so far (one per deprecated name used).
    pub fn into_warnings(self) -> Vec<String> {
        self.warnings.into_inner()
    }
}

impl<E: Env + ?Sized> Env for Lookup<'_, E> {
    fn get(&self, key: &str) -> Option<String> {
        if let Some(value) = self.env.get(key) {
            return Some(value);
        }
        for (old, new) in self.aliases {
            if *new == key
                && let Some(value) = self.env.get(old)
            {
                let warning = format!("`{old}` is deprecated: set `{new}` instead");
                let mut warnings = self.warnings.borrow_mut();
                if !warnings.contains(&warning) {
                    warnings.push(warning);
                }
                return Some(value);
            }
        }
        None
    }
}

/// The optional config file, as written: one shape for the server and the worker (each
/// reads the keys it uses). Every key may also be set by its environment variable (named in
/// the field docs), which wins.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `DATABASE_URL`
    pub database_url: Option<String>,
    /// `STRATAI_DATABASE_OWNER_URL`
    pub database_owner_url: Option<Secret>,
    /// `STRATAI_ALLOW_MEMORY_DATABASE` (worker)
    pub allow_memory_database: Option<bool>,
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
    /// `STRATAI_DEV_ALLOW_REMOTE`
    pub dev_allow_remote: Option<bool>,
    /// `STRATAI_AUTH_CACHE_MS`
    pub auth_cache_ms: Option<u64>,
    /// `STRATAI_GATEWAY_CACHE_MS`
    pub gateway_cache_ms: Option<u64>,
    /// `STRATAI_BUDGET_LEASE_MS`
    pub budget_lease_ms: Option<u64>,
    /// `STRATAI_BUDGET_LEASE_BLOCK`
    pub budget_lease_block: Option<u32>,
    /// `STRATAI_USAGE_BATCH`
    pub usage_batch: Option<bool>,
    /// `STRATAI_USAGE_BATCH_LINGER_MS`
    pub usage_batch_linger_ms: Option<u64>,
    /// `STRATAI_HEARTBEAT_MS`
    pub heartbeat_ms: Option<u64>,
    /// `STRATAI_DEAD_AFTER_MS`
    pub dead_after_ms: Option<u64>,
    /// `STRATAI_USAGE_SPOOL`
    pub usage_spool: Option<PathBuf>,
    /// `STRATAI_REDIS_URL` (else `REDIS_URL`)
    pub redis_url: Option<Secret>,
    /// `STRATAI_ALERT_WEBHOOK_URL`
    pub alert_webhook_url: Option<String>,
    /// `STRATAI_DEMO_CHUNK_DELAY_MS`
    pub demo_chunk_delay_ms: Option<u64>,
    /// `STRATAI_LOG_FORMAT`: `text` or `json`
    pub log_format: Option<String>,
    /// `RUST_LOG`: the log filter
    pub log_filter: Option<String>,
    /// OIDC settings.
    #[serde(default)]
    pub oidc: FileOidc,
    /// LiteLLM settings.
    #[serde(default)]
    pub litellm: FileLiteLlm,
    /// Outgoing mail (invitations).
    #[serde(default)]
    pub mail: FileMail,
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
    /// `STRATAI_LITELLM_SYNC` (server): `in-process` (default) runs the outbox sync in the
    /// server; `worker` leaves it to `litellm-worker`
    pub sync: Option<String>,
    /// `STRATAI_LITELLM_CALLBACK_SECRET` (server): the bearer secret LiteLLM's logging
    /// callback must send to `POST /api/litellm/spend-callback` (the route answers 404
    /// without it)
    pub callback_secret: Option<Secret>,
    /// `STRATAI_LITELLM_SPEND_POLL_SECS`: how often LiteLLM's spend logs are polled and
    /// imported where the sync runs (default 60)
    pub spend_poll_secs: Option<u64>,
    /// `STRATAI_LITELLM_SPEND_WINDOW_SECS`: how far back each poll reads (default 3600)
    pub spend_window_secs: Option<u64>,
    /// `STRATAI_LITELLM_KEY_DURATION`: lifetime of a member's virtual key in LiteLLM's
    /// duration syntax (`365d`, `52w`, `12mo`, `24h`; default `365d`)
    pub key_duration: Option<String>,
    /// `STRATAI_LITELLM_KEY_ROTATE_BEFORE_SECS`: a key expiring within this is rotated
    /// (default 30 days)
    pub key_rotate_before_secs: Option<u64>,
    /// `STRATAI_LITELLM_KEY_GRACE_SECS`: how long a rotated key keeps working for calls
    /// already holding it before it is deleted (default 3600)
    pub key_grace_secs: Option<u64>,
}

/// The `[mail]` section of the config file: how invitation emails leave the server.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMail {
    /// `STRATAI_SMTP_URL`: the mail server, `smtp://host:port` (plain; `?tls=required` for
    /// STARTTLS) or `smtps://host:port` (TLS); credentials may be in the URL. Unset: mail
    /// is written to the mailbox folder instead.
    pub smtp_url: Option<Secret>,
    /// `STRATAI_SMTP_USERNAME`
    pub smtp_username: Option<String>,
    /// `STRATAI_SMTP_PASSWORD`
    pub smtp_password: Option<Secret>,
    /// `STRATAI_MAIL_FROM`: the sender address (default `StratAI <noreply@localhost>`)
    pub from: Option<String>,
    /// `STRATAI_MAILBOX_DIR`: where mail goes without SMTP, one `.eml` file per message
    /// (default `./.stratai/mailbox`)
    pub mailbox_dir: Option<PathBuf>,
}

/// The file named by `STRATAI_CONFIG` in `env`, or the empty file.
pub fn load_file(env: &(impl Env + ?Sized)) -> Result<FileConfig, ConfigError> {
    match env.get(CONFIG_FILE_KEY) {
        Some(path) => read_file(Path::new(&path)),
        None => Ok(FileConfig::default()),
    }
}

/// Reads a config file: JSON when its name ends in `.json`, else TOML.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
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

/// The number in `key` (environment first, then `file`); an error naming `key` when the
/// environment's text is not one.
pub fn number<T: FromStr>(
    env: &(impl Env + ?Sized),
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

/// A duration in whole seconds (`key` ends in `_SECS`), positive, `default` when unset.
pub fn secs(
    env: &(impl Env + ?Sized),
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

/// A duration in whole milliseconds (`key` ends in `_MS`; 0 allowed), `default` when unset.
pub fn millis(
    env: &(impl Env + ?Sized),
    key: &'static str,
    file: Option<u64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    Ok(number(env, key, file)?.map_or(default, Duration::from_millis))
}

/// A boolean setting (environment first, then `file`): `1`/`true`/`yes`/`on` or
/// `0`/`false`/`no`/`off`.
pub fn flag_setting(
    env: &(impl Env + ?Sized),
    key: &'static str,
    file: Option<bool>,
) -> Result<Option<bool>, ConfigError> {
    env.get(key).map_or(Ok(file), |v| flag(key, &v).map(Some))
}

/// A boolean value of `key`: `1`/`true`/`yes`/`on` or `0`/`false`/`no`/`off`.
pub fn flag(key: &'static str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(invalid(key, format!("`{other}` is not a boolean"))),
    }
}

/// An http(s) URL of `key`.
pub fn http_url(key: &'static str, text: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(text.trim()).map_err(|e| invalid(key, format!("`{text}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid(key, format!("`{text}` is not an http(s) url")));
    }
    Ok(url)
}

/// The database a process runs on.
#[derive(Clone, Debug)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`: `sqlite:` or `postgres:` (the app role).
    pub url: Secret,
    /// `STRATAI_DATABASE_OWNER_URL`: the PostgreSQL owner role, which runs the migrations.
    pub owner_url: Option<Secret>,
}

impl DatabaseSettings {
    /// `DATABASE_URL` (else `file`'s, else `default`; required when there is none) and
    /// `STRATAI_DATABASE_OWNER_URL`.
    pub fn load(
        env: &(impl Env + ?Sized),
        file: &FileConfig,
        default: Option<&str>,
    ) -> Result<Self, ConfigError> {
        let url = env
            .get("DATABASE_URL")
            .or_else(|| file.database_url.clone())
            .or_else(|| default.map(str::to_owned))
            .ok_or_else(|| {
                invalid(
                    "DATABASE_URL",
                    "required: `sqlite:PATH` or `postgres://...` (the app role)",
                )
            })?;
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            return Err(invalid(
                "DATABASE_URL",
                "expected a `sqlite:` or `postgres:` url",
            ));
        }
        let owner_url = env
            .get("STRATAI_DATABASE_OWNER_URL")
            .map(Secret::new)
            .or_else(|| file.database_owner_url.clone());
        Ok(Self {
            url: Secret::new(url),
            owner_url,
        })
    }

    /// Whether the database lives only as long as the process (`sqlite::memory:`,
    /// `mode=memory`).
    #[must_use]
    pub fn is_in_memory(&self) -> bool {
        let url = self.url.expose();
        url.starts_with("sqlite:") && (url.contains(":memory:") || url.contains("mode=memory"))
    }
}

/// The LiteLLM proxy and the vault sealing members' virtual keys.
#[derive(Clone, Debug)]
pub struct LiteLlmSettings {
    /// `LITELLM_URL`: base URL of the proxy.
    pub url: Url,
    /// `LITELLM_MASTER_KEY`: master key for management calls.
    pub master_key: Secret,
    /// `STRATAI_VAULT_KEY`: master key of the virtual-key vault. `None` only where an
    /// ephemeral key is allowed (see [`LiteLlmSettings::load`]).
    pub vault_key: Option<VaultKey>,
    /// `STRATAI_VAULT_REPLACE_FOREIGN`: replace members' keys sealed under another master
    /// key instead of refusing them.
    pub vault_replace_foreign: bool,
    /// `STRATAI_LITELLM_CALLBACK_SECRET`: the bearer secret of LiteLLM's logging callback.
    pub callback_secret: Option<Secret>,
    /// `STRATAI_LITELLM_SPEND_POLL_SECS`: spend-log poll interval.
    pub spend_poll: Duration,
    /// `STRATAI_LITELLM_SPEND_WINDOW_SECS`: how far back a poll reads.
    pub spend_window: Duration,
    /// `STRATAI_LITELLM_KEY_DURATION`: a virtual key's lifetime (LiteLLM duration syntax).
    pub key_duration: String,
    /// `STRATAI_LITELLM_KEY_ROTATE_BEFORE_SECS`: rotate a key expiring within this.
    pub key_rotate_before: Duration,
    /// `STRATAI_LITELLM_KEY_GRACE_SECS`: how long a rotated key keeps working.
    pub key_grace: Duration,
}

/// Whether `text` is a LiteLLM duration (`<n>s|m|h|d|w|mo`, n > 0), the syntax of key
/// lifetimes and budget periods.
pub fn is_litellm_duration(text: &str) -> bool {
    let digits = text.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &text[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u64>().is_ok_and(|n| n > 0)
        && matches!(unit, "s" | "m" | "h" | "d" | "w" | "mo")
}

impl LiteLlmSettings {
    /// `LITELLM_URL` and `LITELLM_MASTER_KEY` (both or neither: `None` when neither),
    /// `STRATAI_VAULT_KEY` (required unless `ephemeral_vault_ok`: an ephemeral key would make
    /// every restart regenerate every member's key) and `STRATAI_VAULT_REPLACE_FOREIGN`.
    pub fn load(
        env: &(impl Env + ?Sized),
        file: &FileLiteLlm,
        ephemeral_vault_ok: bool,
    ) -> Result<Option<Self>, ConfigError> {
        let url = env.get("LITELLM_URL").or_else(|| file.url.clone());
        let master_key = env
            .get("LITELLM_MASTER_KEY")
            .map(Secret::new)
            .or_else(|| file.master_key.clone());
        let (url, master_key) = match (url, master_key) {
            (None, None) => return Ok(None),
            (Some(url), Some(key)) => (http_url("LITELLM_URL", &url)?, key),
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
        let vault_key = match env
            .get(VaultKey::ENV)
            .map(Secret::new)
            .or_else(|| file.vault_key.clone())
        {
            Some(text) => Some(
                VaultKey::parse(text.expose())
                    .map_err(|e| invalid("STRATAI_VAULT_KEY", e.to_string()))?,
            ),
            None if ephemeral_vault_ok => None,
            None => {
                return Err(invalid(
                    "STRATAI_VAULT_KEY",
                    "required: the master key sealing members' virtual keys in the database \
                     (32 bytes, hex or base64, e.g. `openssl rand -base64 32`; the server and \
                     litellm-worker need the same)",
                ));
            }
        };
        let vault_replace_foreign = flag_setting(
            env,
            "STRATAI_VAULT_REPLACE_FOREIGN",
            file.vault_replace_foreign,
        )?
        .unwrap_or(false);
        let callback_secret = env
            .get("STRATAI_LITELLM_CALLBACK_SECRET")
            .map(Secret::new)
            .or_else(|| file.callback_secret.clone());
        if let Some(secret) = &callback_secret
            && secret.expose().trim().len() < 16
        {
            return Err(invalid(
                "STRATAI_LITELLM_CALLBACK_SECRET",
                "too short: use at least 16 characters (e.g. `openssl rand -hex 24`)",
            ));
        }
        let key_duration = env
            .get("STRATAI_LITELLM_KEY_DURATION")
            .or_else(|| file.key_duration.clone())
            .unwrap_or_else(|| "365d".to_owned());
        let key_duration = key_duration.trim().to_owned();
        if !is_litellm_duration(&key_duration) {
            return Err(invalid(
                "STRATAI_LITELLM_KEY_DURATION",
                format!("`{key_duration}`: expected LiteLLM's `<n>s|m|h|d|w|mo`, e.g. `365d`"),
            ));
        }
        Ok(Some(Self {
            url,
            master_key,
            vault_key,
            vault_replace_foreign,
            callback_secret,
            spend_poll: secs(
                env,
                "STRATAI_LITELLM_SPEND_POLL_SECS",
                file.spend_poll_secs,
                60,
            )?,
            spend_window: secs(
                env,
                "STRATAI_LITELLM_SPEND_WINDOW_SECS",
                file.spend_window_secs,
                3600,
            )?,
            key_duration,
            key_rotate_before: secs(
                env,
                "STRATAI_LITELLM_KEY_ROTATE_BEFORE_SECS",
                file.key_rotate_before_secs,
                30 * 86_400,
            )?,
            key_grace: secs(
                env,
                "STRATAI_LITELLM_KEY_GRACE_SECS",
                file.key_grace_secs,
                3600,
            )?,
        }))
    }

    /// The sync engine's settings: the defaults with this key lifetime and rotation.
    pub fn sync_config(&self) -> crate::sync::SyncConfig {
        crate::sync::SyncConfig {
            key_duration: Some(self.key_duration.clone()),
            rotate_before: self.key_rotate_before,
            key_grace: self.key_grace,
            ..crate::sync::SyncConfig::default()
        }
    }

    /// A client of the proxy with the master key.
    pub fn client(&self) -> Result<crate::LiteLlmClient, crate::LiteLlmError> {
        crate::LiteLlmClient::new(crate::ClientConfig::new(
            self.url.as_str().trim_end_matches('/'),
            self.master_key.clone(),
        ))
    }

    /// The vault over `store`, sealing with the configured master key, or with an ephemeral
    /// one when none is configured (then `ephemeral` is true: keys sealed under it die with
    /// the process, and a key sealed under another master key is replaced).
    pub fn key_vault(
        &self,
        store: Arc<dyn KeyVaultStore>,
    ) -> Result<KeyVaultChoice, crate::vault::VaultError> {
        let (key, ephemeral) = match &self.vault_key {
            Some(key) => (key.clone(), false),
            None => (VaultKey::generate()?, true),
        };
        let foreign = if ephemeral || self.vault_replace_foreign {
            ForeignSecrets::Replace
        } else {
            ForeignSecrets::Refuse
        };
        let key_id = key.id();
        Ok(KeyVaultChoice {
            vault: Arc::new(EncryptedKeyVault::new(store, key).with_foreign_secrets(foreign)),
            key_id,
            ephemeral,
        })
    }
}

/// The vault [`LiteLlmSettings::key_vault`] built, and what the start log should say of it.
#[derive(Debug)]
pub struct KeyVaultChoice {
    /// The vault.
    pub vault: Arc<EncryptedKeyVault<dyn KeyVaultStore>>,
    /// Its master key's id (names the key without revealing it).
    pub key_id: String,
    /// Whether the master key was generated for this process.
    pub ephemeral: bool,
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
    fn numbers_flags_and_durations_name_their_key_when_they_do_not_parse() {
        let e = env(&[("STRATAI_GATEWAY_CACHE_MS", "2s"), ("STRATAI_X", "maybe")]);
        let err = millis(&e, "STRATAI_GATEWAY_CACHE_MS", None, Duration::ZERO).unwrap_err();
        assert!(
            err.to_string().contains("STRATAI_GATEWAY_CACHE_MS"),
            "{err}"
        );
        assert!(err.to_string().contains("`2s`"), "{err}");
        let err = flag_setting(&e, "STRATAI_X", None).unwrap_err();
        assert!(err.to_string().contains("STRATAI_X"), "{err}");
        assert_eq!(
            millis(&env(&[]), "K", Some(7), Duration::ZERO).unwrap(),
            Duration::from_millis(7)
        );
        let e = env(&[("K", "0")]);
        assert!(secs(&e, "K", None, 3).is_err());
        assert_eq!(flag_setting(&e, "K", Some(true)).unwrap(), Some(false));
    }

    #[test]
    fn aliases_answer_with_a_warning_and_the_new_name_wins() {
        const ALIASES: &[(&str, &str)] = &[("OLD_URL", "NEW_URL")];
        let e = env(&[("OLD_URL", "old")]);
        let lookup = Lookup::new(&e, ALIASES);
        assert_eq!(lookup.get("NEW_URL").as_deref(), Some("old"));
        assert_eq!(lookup.get("NEW_URL").as_deref(), Some("old"));
        let warnings = lookup.into_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("`OLD_URL` is deprecated"),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("`NEW_URL`"), "{warnings:?}");

        let e = env(&[("OLD_URL", "old"), ("NEW_URL", "new")]);
        let lookup = Lookup::new(&e, ALIASES);
        assert_eq!(lookup.get("NEW_URL").as_deref(), Some("new"));
        assert!(lookup.into_warnings().is_empty());
    }

    #[test]
    fn database_settings_require_a_url_without_a_default_and_know_memory() {
        let file = FileConfig::default();
        let e = DatabaseSettings::load(&env(&[]), &file, None).unwrap_err();
        assert!(e.to_string().contains("DATABASE_URL"), "{e}");
        let d = DatabaseSettings::load(&env(&[]), &file, Some("sqlite::memory:")).unwrap();
        assert!(d.is_in_memory());
        let shared = [("DATABASE_URL", "sqlite://w.db?mode=memory&cache=shared")];
        assert!(
            DatabaseSettings::load(&env(&shared), &file, None)
                .unwrap()
                .is_in_memory()
        );
        let d = DatabaseSettings::load(
            &env(&[
                ("DATABASE_URL", "postgres://app@h/db"),
                ("STRATAI_DATABASE_OWNER_URL", "postgres://owner@h/db"),
            ]),
            &file,
            None,
        )
        .unwrap();
        assert!(!d.is_in_memory());
        assert_eq!(d.owner_url.unwrap().expose(), "postgres://owner@h/db");
        let e = DatabaseSettings::load(&env(&[("DATABASE_URL", "mysql://x")]), &file, None)
            .unwrap_err();
        assert!(e.to_string().contains("DATABASE_URL"), "{e}");
    }

    #[test]
    fn litellm_settings_are_both_or_neither_and_the_vault_key_is_required_unless_allowed() {
        let file = FileLiteLlm::default();
        assert!(
            LiteLlmSettings::load(&env(&[]), &file, false)
                .unwrap()
                .is_none()
        );
        let e =
            LiteLlmSettings::load(&env(&[("LITELLM_URL", "http://x")]), &file, true).unwrap_err();
        assert!(e.to_string().contains("LITELLM_MASTER_KEY"), "{e}");
        let proxy = [("LITELLM_URL", "http://x"), ("LITELLM_MASTER_KEY", "sk-m")];
        let e = LiteLlmSettings::load(&env(&proxy), &file, false).unwrap_err();
        assert!(e.to_string().contains("STRATAI_VAULT_KEY"), "{e}");
        let l = LiteLlmSettings::load(&env(&proxy), &file, true)
            .unwrap()
            .unwrap();
        assert!(l.vault_key.is_none());
        let mut bad = proxy.to_vec();
        bad.push(("STRATAI_VAULT_REPLACE_FOREIGN", "perhaps"));
        let e = LiteLlmSettings::load(&env(&bad), &file, true).unwrap_err();
        assert!(
            e.to_string().contains("STRATAI_VAULT_REPLACE_FOREIGN"),
            "{e}"
        );
    }

    #[test]
    fn spend_and_key_lifetime_settings_default_and_refuse_bad_values_by_name() {
        let file = FileLiteLlm::default();
        let proxy = [("LITELLM_URL", "http://x"), ("LITELLM_MASTER_KEY", "sk-m")];
        let l = LiteLlmSettings::load(&env(&proxy), &file, true)
            .unwrap()
            .unwrap();
        assert!(l.callback_secret.is_none());
        assert_eq!(l.spend_poll, Duration::from_secs(60));
        assert_eq!(l.spend_window, Duration::from_secs(3600));
        assert_eq!(l.key_duration, "365d");
        assert_eq!(l.key_rotate_before, Duration::from_secs(30 * 86_400));
        assert_eq!(l.key_grace, Duration::from_secs(3600));
        let mut set = proxy.to_vec();
        set.extend([
            ("STRATAI_LITELLM_CALLBACK_SECRET", "0123456789abcdef0123"),
            ("STRATAI_LITELLM_SPEND_POLL_SECS", "5"),
            ("STRATAI_LITELLM_KEY_DURATION", "12mo"),
            ("STRATAI_LITELLM_KEY_GRACE_SECS", "30"),
        ]);
        let l = LiteLlmSettings::load(&env(&set), &file, true)
            .unwrap()
            .unwrap();
        assert_eq!(
            l.callback_secret.as_ref().map(Secret::expose),
            Some("0123456789abcdef0123")
        );
        assert_eq!(l.spend_poll, Duration::from_secs(5));
        assert_eq!(l.key_duration, "12mo");
        assert_eq!(l.key_grace, Duration::from_secs(30));
        for (key, value) in [
            ("STRATAI_LITELLM_CALLBACK_SECRET", "short"),
            ("STRATAI_LITELLM_KEY_DURATION", "1y"),
            ("STRATAI_LITELLM_KEY_DURATION", "0d"),
            ("STRATAI_LITELLM_SPEND_POLL_SECS", "0"),
            ("STRATAI_LITELLM_KEY_ROTATE_BEFORE_SECS", "soon"),
        ] {
            let mut bad = proxy.to_vec();
            bad.push((key, value));
            let e = LiteLlmSettings::load(&env(&bad), &file, true).unwrap_err();
            assert!(e.to_string().contains(key), "{key}={value}: {e}");
        }
        assert!(is_litellm_duration("365d") && is_litellm_duration("2w"));
        assert!(!is_litellm_duration("d") && !is_litellm_duration("5 d"));
    }
}
