//! OIDC provider metadata (discovery) and the browser login: authorization code flow with
//! PKCE (S256), `state` bound to the browser by a cookie, and a `nonce` checked in the id
//! token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use url::Url;

use super::AuthError;
use super::keys::read_limited;
use stratai_core::secret::Secret;

/// How long a started login may take before its callback.
pub const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Started logins kept at most (a flood of /auth/login cannot exhaust memory).
const MAX_PENDING: usize = 10_000;
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;

/// The OIDC client this service is at the provider.
#[derive(Clone, Debug)]
pub struct LoginClient {
    /// Client id; also the `aud` of id tokens.
    pub client_id: String,
    /// Client secret (confidential client); `None` for a public client (PKCE only).
    pub client_secret: Option<Secret>,
    /// This service's callback URL as registered at the provider.
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

/// The parts of the provider's discovery document the server uses.
#[derive(Clone, Debug, Deserialize)]
pub struct ProviderMetadata {
    /// Must equal the configured issuer exactly.
    pub issuer: String,
    /// Where the browser is sent to log in.
    pub authorization_endpoint: Url,
    /// Where codes are exchanged.
    pub token_endpoint: Url,
    /// The signing keys.
    pub jwks_uri: Url,
    /// RP-initiated logout, if the provider supports it.
    #[serde(default)]
    pub end_session_endpoint: Option<Url>,
}

/// Fetches and caches the discovery document of one issuer.
pub struct Discovery {
    issuer: String,
    http: reqwest::Client,
    cached: tokio::sync::RwLock<Option<Arc<ProviderMetadata>>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Discovery")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// Discovery for `issuer`.
    #[must_use]
    pub fn new(issuer: String, http: reqwest::Client) -> Self {
        Self {
            issuer,
            http,
            cached: tokio::sync::RwLock::new(None),
        }
    }

    /// The metadata, fetched on first use and then cached.
    pub async fn get(&self) -> Result<Arc<ProviderMetadata>, AuthError> {
        if let Some(m) = self.cached.read().await.as_ref() {
            return Ok(m.clone());
        }
        let mut slot = self.cached.write().await;
        if let Some(m) = slot.as_ref() {
            return Ok(m.clone());
        }
        let metadata = Arc::new(self.fetch().await?);
        *slot = Some(metadata.clone());
        Ok(metadata)
    }

    async fn fetch(&self) -> Result<ProviderMetadata, AuthError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let response =
            self.http.get(&url).send().await.map_err(|e| {
                AuthError::KeysUnavailable(format!("discovery request failed: {e}"))
            })?;
        if !response.status().is_success() {
            return Err(AuthError::KeysUnavailable(format!(
                "discovery answered {}",
                response.status()
            )));
        }
        let body = read_limited(response, MAX_DOCUMENT_BYTES).await?;
        let metadata: ProviderMetadata = serde_json::from_slice(&body)
            .map_err(|e| AuthError::KeysUnavailable(format!("discovery document invalid: {e}")))?;
        // OIDC Discovery 1.0 §4.3: the document's issuer must be the one we asked for,
        // or a provider could pose as another (mix-up).
        if metadata.issuer != self.issuer {
            return Err(AuthError::KeysUnavailable(format!(
                "discovery issuer `{}` differs from the configured `{}`",
                metadata.issuer, self.issuer
            )));
        }
        Ok(metadata)
    }
}

#[derive(Clone, Debug)]
struct PendingLogin {
    nonce: String,
    verifier: String,
    started: Instant,
}

/// A started login: where to send the browser, and the state to bind to it by cookie.
#[derive(Clone, Debug)]
pub struct LoginStart {
    /// The provider's authorization URL with all parameters.
    pub redirect: Url,
    /// The `state` value (also set as an HttpOnly cookie).
    pub state: String,
}

/// The browser login flow.
pub struct OidcLogin {
    config: LoginClient,
    discovery: Arc<Discovery>,
    http: reqwest::Client,
    pending: Mutex<HashMap<String, PendingLogin>>,
}

impl std::fmt::Debug for OidcLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcLogin")
            .field("client_id", &self.config.client_id)
            .field("redirect_url", &self.config.redirect_url.as_str())
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    id_token: Option<String>,
}

/// Random 256 bits, base64url.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE S256 challenge of `verifier` (RFC 7636 §4.2).
#[must_use]
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

impl OidcLogin {
    /// A login flow for the configured client.
    #[must_use]
    pub fn new(config: LoginClient, discovery: Arc<Discovery>, http: reqwest::Client) -> Self {
        Self {
            config,
            discovery,
            http,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// The client settings.
    #[must_use]
    pub fn config(&self) -> &LoginClient {
        &self.config
    }

    /// The provider metadata.
    pub async fn metadata(&self) -> Result<Arc<ProviderMetadata>, AuthError> {
        self.discovery.get().await
    }

    /// Starts a login: fresh state, nonce and PKCE verifier; the verifier and nonce stay on
    /// the server, keyed by state.
    pub async fn begin(&self) -> Result<LoginStart, AuthError> {
        let metadata = self.discovery.get().await?;
        let state = random_token();
        let nonce = random_token();
        let verifier = random_token();
        let challenge = pkce_challenge(&verifier);
        {
            let mut pending = self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if pending.len() >= MAX_PENDING {
                pending.retain(|_, p| p.started.elapsed() < LOGIN_TTL);
            }
            if pending.len() >= MAX_PENDING {
                return Err(AuthError::KeysUnavailable(
                    "too many logins in progress".to_owned(),
                ));
            }
            pending.insert(
                state.clone(),
                PendingLogin {
                    nonce: nonce.clone(),
                    verifier,
                    started: Instant::now(),
                },
            );
        }
        let mut redirect = metadata.authorization_endpoint.clone();
        redirect
            .query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", self.config.redirect_url.as_str())
            .append_pair("scope", &self.config.scopes)
            .append_pair("state", &state)
            .append_pair("nonce", &nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok(LoginStart { redirect, state })
    }

    /// Completes a login: `state` from the query must equal the browser's state cookie and
    /// name a pending login (each is usable once); the code is exchanged with the PKCE
    /// verifier. Returns the id token and the nonce it must carry.
    pub async fn exchange(
        &self,
        query_state: &str,
        cookie_state: Option<&str>,
        code: &str,
    ) -> Result<(String, String), AuthError> {
        let Some(cookie_state) = cookie_state else {
            return Err(AuthError::LoginFailed("no login state cookie".to_owned()));
        };
        if !constant_time_eq(query_state.as_bytes(), cookie_state.as_bytes()) {
            return Err(AuthError::LoginFailed(
                "state does not match the browser".to_owned(),
            ));
        }
        let pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(query_state)
            .ok_or_else(|| AuthError::LoginFailed("unknown or used state".to_owned()))?;
        if pending.started.elapsed() >= LOGIN_TTL {
            return Err(AuthError::LoginFailed("login took too long".to_owned()));
        }
        let metadata = self.discovery.get().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", self.config.redirect_url.as_str()),
            ("client_id", self.config.client_id.as_str()),
            ("code_verifier", pending.verifier.as_str()),
        ];
        if let Some(secret) = &self.config.client_secret {
            form.push(("client_secret", secret.expose()));
        }
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&form)
            .finish();
        let response = self
            .http
            .post(metadata.token_endpoint.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body)
            .send()
            .await
            .map_err(|e| AuthError::LoginFailed(format!("token endpoint unreachable: {e}")))?;
        let status = response.status();
        let body = read_limited(response, MAX_DOCUMENT_BYTES)
            .await
            .map_err(|e| AuthError::LoginFailed(e.to_string()))?;
        if !status.is_success() {
            return Err(AuthError::LoginFailed(format!(
                "token endpoint answered {status}"
            )));
        }
        let tokens: TokenResponse = serde_json::from_slice(&body)
            .map_err(|e| AuthError::LoginFailed(format!("token response invalid: {e}")))?;
        let id_token = tokens
            .id_token
            .ok_or_else(|| AuthError::LoginFailed("token response has no id_token".to_owned()))?;
        Ok((id_token, pending.nonce))
    }

    /// Where to send the browser after the local session is gone.
    pub async fn logout_redirect(&self) -> String {
        let fallback = self
            .config
            .post_logout_url
            .as_ref()
            .map_or_else(|| "/".to_owned(), Url::to_string);
        match self.discovery.get().await {
            Ok(m) => match &m.end_session_endpoint {
                Some(end) => {
                    let mut url = end.clone();
                    url.query_pairs_mut()
                        .append_pair("client_id", &self.config.client_id);
                    if let Some(after) = &self.config.post_logout_url {
                        url.query_pairs_mut()
                            .append_pair("post_logout_redirect_uri", after.as_str());
                    }
                    url.to_string()
                }
                None => fallback,
            },
            Err(_) => fallback,
        }
    }
}

/// Equality without an early exit on the first differing byte.
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
