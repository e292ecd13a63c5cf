//! The LiteLLM-backed [`LlmGateway`]: every call goes through the member's own virtual key,
//! with attribution headers, so LiteLLM's spend logs and budgets see the person, not the
//! server.
//!
//! Where the key comes from is a [`VirtualKeys`] source. [`SyncedKeys`] (the default) reads
//! it from the stratai-litellm sync engine's [`KeyVault`](stratai_litellm::sync::KeyVault),
//! the same instance the engine fills while it consumes the outbox: [`key_vault`], secrets
//! sealed in the database, so keys survive restarts and those `litellm-worker` creates are
//! usable here. When the vault has no key for the member yet (the outbox has not reached
//! them), it asks the engine to push the member now. The gateway never creates, replaces or deletes keys itself:
//! the sync engine is the only code path that does, so the two never fight over a member's
//! key (alias `stratai:<org>:<user>`).

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use stratai_core::gateway::{
    CallContext, ChatChoice, ChatChunk, ChatDelta, ChatMessage, ChatRequest, ChatResponse,
    ChunkChoice, GatewayError, TokenUsage,
};
use stratai_core::ids::{OrgId, UserId};
use stratai_core::ports::LlmGateway;
use stratai_litellm::sync::{KeyVault, SyncEngine};
use stratai_litellm::vault::{EncryptedKeyVault, ForeignSecrets, VaultKey};
use stratai_litellm::{Attribution, LiteLlmClient, LiteLlmError, Secret};

use crate::config::LiteLlmConfig;
use crate::stores::Stores;

/// Where members' virtual keys come from.
#[async_trait]
pub trait VirtualKeys: Send + Sync {
    /// The secret of the member's key in the organization, provisioning it if needed.
    async fn key_for(&self, org: OrgId, user: UserId) -> Result<Secret, GatewayError>;
    /// The proxy refused `key` (deleted or rotated elsewhere): the next
    /// [`key_for`](Self::key_for) must not return it again.
    async fn refused(&self, org: OrgId, user: UserId, key: &Secret);
}

/// The alias of a member's key, as the sync engine names it.
#[must_use]
pub fn key_alias(org: OrgId, user: UserId) -> String {
    stratai_litellm::sync::key_alias(org, user)
}

/// The sync engine's key vault: members' secrets sealed in the database
/// ([`EncryptedKeyVault`]) under the configured master key (`STRATAI_VAULT_KEY`), shared with
/// `litellm-worker` and kept across restarts. In dev mode without a configured key, an
/// ephemeral one is generated and the start log says so plainly: keys sealed under it are
/// replaced after a restart, and a separate worker cannot read them.
pub fn key_vault(config: &LiteLlmConfig, stores: &Stores) -> Result<Arc<dyn KeyVault>, String> {
    let (key, foreign) = match &config.vault_key {
        Some(key) => {
            tracing::info!(
                vault_key_id = %key.id(),
                replace_foreign = config.vault_replace_foreign,
                "members' LiteLLM virtual keys are sealed in the database with the configured vault master key"
            );
            let foreign = if config.vault_replace_foreign {
                ForeignSecrets::Replace
            } else {
                ForeignSecrets::Refuse
            };
            (key.clone(), foreign)
        }
        None => {
            let key = VaultKey::generate().map_err(|e| e.to_string())?;
            tracing::warn!(
                vault_key_id = %key.id(),
                "STRATAI_VAULT_KEY is not set (dev mode): members' LiteLLM virtual keys are sealed with an EPHEMERAL master key that dies with this process, so every key is regenerated after a restart and litellm-worker cannot read them; set STRATAI_VAULT_KEY (32 bytes, e.g. `openssl rand -base64 32`) to keep them"
            );
            (key, ForeignSecrets::Replace)
        }
    };
    Ok(Arc::new(
        EncryptedKeyVault::new(stores.key_vault.clone(), key).with_foreign_secrets(foreign),
    ))
}

/// Keys from the sync engine's vault, provisioned on demand by the engine (see the module
/// docs).
#[derive(Debug, Clone)]
pub struct SyncedKeys {
    engine: Arc<SyncEngine>,
}

impl SyncedKeys {
    /// A source reading `engine`'s vault.
    #[must_use]
    pub fn new(engine: Arc<SyncEngine>) -> Self {
        Self { engine }
    }
}

#[async_trait]
impl VirtualKeys for SyncedKeys {
    async fn key_for(&self, org: OrgId, user: UserId) -> Result<Secret, GatewayError> {
        // The common case: one read of the shared vault.
        match self.engine.member_key(org, user).await {
            Ok(Some(key)) => return Ok(key),
            Ok(None) => {}
            Err(e) => return Err(GatewayError::Unavailable(format!("key vault: {e}"))),
        }
        match self.engine.provision_member(org, user, None).await {
            Ok(Some(key)) => Ok(key),
            Ok(None) => Err(GatewayError::NotProvisioned(format!(
                "no LiteLLM key for user `{user}` in organization `{org}`"
            ))),
            Err(e) => Err(GatewayError::NotProvisioned(format!(
                "cannot provision the member's virtual key: {e}"
            ))),
        }
    }

    async fn refused(&self, org: OrgId, user: UserId, key: &Secret) {
        if let Err(e) = self.engine.provision_member(org, user, Some(key)).await {
            tracing::warn!(%org, %user, error = %e, "re-provisioning a refused virtual key failed; the next call retries");
        }
    }
}

/// The LiteLLM provider. See the module docs.
pub struct LiteLlmProvider {
    client: LiteLlmClient,
    keys: Box<dyn VirtualKeys>,
}

impl std::fmt::Debug for LiteLlmProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiteLlmProvider").finish_non_exhaustive()
    }
}

impl LiteLlmProvider {
    /// A provider calling through `client` with keys from `keys`.
    pub fn new(client: LiteLlmClient, keys: Box<dyn VirtualKeys>) -> Self {
        Self { client, keys }
    }

    /// A provider reading members' keys from `engine`'s vault ([`SyncedKeys`]).
    #[must_use]
    pub fn with_sync_engine(engine: Arc<SyncEngine>) -> Self {
        let client = engine.client().clone();
        Self {
            client,
            keys: Box::new(SyncedKeys::new(engine)),
        }
    }

    async fn key(&self, ctx: &CallContext) -> Result<Secret, GatewayError> {
        self.keys.key_for(ctx.org_id, ctx.user_id).await
    }

    async fn on_error(&self, ctx: &CallContext, key: &Secret, e: LiteLlmError) -> GatewayError {
        if matches!(e, LiteLlmError::Unauthorized(_)) {
            self.keys.refused(ctx.org_id, ctx.user_id, key).await;
        }
        map_error(e)
    }
}

fn attribution(ctx: &CallContext) -> Attribution {
    Attribution {
        end_user_id: Some(ctx.user_id.to_string()),
        user_id: Some(ctx.user_id.to_string()),
        org_id: Some(ctx.org_id.to_string()),
        request_id: Some(ctx.request_id.to_string()),
    }
}

fn to_litellm(request: &ChatRequest) -> stratai_litellm::ChatRequest {
    let mut extra = serde_json::Map::new();
    if let Some(user) = &request.user {
        extra.insert("user".to_owned(), user.clone().into());
    }
    stratai_litellm::ChatRequest {
        model: request.model.clone(),
        messages: request
            .messages
            .iter()
            .map(|m| stratai_litellm::ChatMessage {
                role: m.role.clone(),
                content: m.content.clone(),
            })
            .collect(),
        max_tokens: request.max_tokens,
        temperature: request.temperature,
        extra,
    }
}

fn usage_of(u: Option<&stratai_litellm::Usage>) -> Option<TokenUsage> {
    u.map(|u| {
        let p = u32::try_from(u.prompt_tokens).unwrap_or(u32::MAX);
        let c = u32::try_from(u.completion_tokens).unwrap_or(u32::MAX);
        TokenUsage {
            prompt_tokens: p,
            completion_tokens: c,
            total_tokens: u32::try_from(u.total_tokens).unwrap_or(p.saturating_add(c)),
        }
    })
}

/// Maps the client's error to the port's.
#[must_use]
pub fn map_error(e: LiteLlmError) -> GatewayError {
    match e {
        LiteLlmError::KeyModelDenied(_)
        | LiteLlmError::TeamModelDenied(_)
        | LiteLlmError::Forbidden(_)
        | LiteLlmError::EnterpriseOnly(_)
        | LiteLlmError::Unauthorized(_) => GatewayError::Refused(e.to_string()),
        LiteLlmError::BudgetExceeded(_) => GatewayError::BudgetExceeded(e.to_string()),
        LiteLlmError::RateLimited { retry_after, .. } => GatewayError::RateLimited {
            retry_after_secs: retry_after.map(|d| d.as_secs().max(1)),
        },
        LiteLlmError::BadRequest(_) | LiteLlmError::InvalidInput(_) => {
            GatewayError::BadRequest(e.to_string())
        }
        other => GatewayError::Unavailable(other.to_string()),
    }
}

#[async_trait]
impl LlmGateway for LiteLlmProvider {
    async fn chat(
        &self,
        ctx: &CallContext,
        request: &ChatRequest,
    ) -> Result<ChatResponse, GatewayError> {
        let key = self.key(ctx).await?;
        let started = Instant::now();
        let result = self
            .client
            .chat(&key, &attribution(ctx), &to_litellm(request))
            .await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        crate::metrics::record_upstream_latency("litellm", outcome, started.elapsed());
        let answer = match result {
            Ok(a) => a,
            Err(e) => return Err(self.on_error(ctx, &key, e).await),
        };
        let c = answer.completion;
        Ok(ChatResponse {
            id: c.id,
            object: "chat.completion".to_owned(),
            created: c.created.unwrap_or_else(|| chrono::Utc::now().timestamp()),
            model: c.model.unwrap_or_else(|| request.model.clone()),
            choices: c
                .choices
                .into_iter()
                .map(|ch| ChatChoice {
                    index: ch.index,
                    message: ChatMessage {
                        role: ch.message.role.unwrap_or_else(|| "assistant".to_owned()),
                        content: ch.message.content.unwrap_or_default(),
                    },
                    finish_reason: ch.finish_reason,
                })
                .collect(),
            usage: usage_of(c.usage.as_ref()).unwrap_or_default(),
        })
    }

    async fn chat_stream(
        &self,
        ctx: &CallContext,
        request: &ChatRequest,
    ) -> Result<BoxStream<'static, Result<ChatChunk, GatewayError>>, GatewayError> {
        let key = self.key(ctx).await?;
        let started = Instant::now();
        let stream = match self
            .client
            .chat_stream(&key, &attribution(ctx), &to_litellm(request))
            .await
        {
            Ok(s) => s,
            Err(e) => {
                crate::metrics::record_upstream_latency("litellm", "error", started.elapsed());
                return Err(self.on_error(ctx, &key, e).await);
            }
        };
        crate::metrics::record_upstream_latency("litellm", "first_byte", started.elapsed());
        let model = request.model.clone();
        Ok(stream
            .map(move |item| {
                item.map_err(map_error).map(|c| ChatChunk {
                    id: c.id,
                    object: "chat.completion.chunk".to_owned(),
                    created: chrono::Utc::now().timestamp(),
                    model: c.model.unwrap_or_else(|| model.clone()),
                    choices: c
                        .choices
                        .into_iter()
                        .map(|ch| ChunkChoice {
                            index: ch.index,
                            delta: ChatDelta {
                                role: ch.delta.role,
                                content: ch.delta.content,
                            },
                            finish_reason: ch.finish_reason,
                        })
                        .collect(),
                    usage: usage_of(c.usage.as_ref()),
                })
            })
            .boxed())
    }
}
