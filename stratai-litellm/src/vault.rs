//! The persistent, encrypted key vault: [`EncryptedKeyVault`] keeps the secrets of the
//! virtual keys the sync creates in any stratai-core [`KeyVaultStore`] (memory, SQLite,
//! PostgreSQL), sealed under a 256-bit master key ([`VaultKey`]) the store never sees.
//!
//! LiteLLM shows a key's secret only once, at `/key/generate`. Sealed in the database, it
//! survives restarts and is shared by every process that has the master key: keys the worker
//! creates are usable by the server, and a restart does not regenerate them.
//!
//! # Sealing
//!
//! XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`), a fresh random 192-bit nonce per
//! seal (large enough that random nonces never collide in practice). A sealed blob is
//! `version (1 byte) | master key id (8) | nonce (24) | ciphertext + tag (16)`. The
//! associated data binds the blob to its row: the version and key id above, the
//! organization, the user and LiteLLM's key id (token hash). A blob altered, or copied to
//! another member's row, or paired with another key id, fails to open ([`VaultError::Tampered`]).
//!
//! The master key id is the first 8 bytes of `SHA-256("stratai-litellm-vault-key-id" | key)`:
//! it names a key in errors and logs without revealing it, and tells "sealed under another
//! master key" ([`VaultError::OtherMasterKey`]) apart from tampering.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use chrono::Utc;
use sha2::{Digest, Sha256};
use stratai_core::StoreError;
use stratai_core::ids::{OrgId, UserId};
use stratai_core::ports::{KeyVaultStore, SealedKey};

use crate::Secret;
use crate::sync::KeyVault;

/// Format version of a sealed blob.
const VERSION: u8 = 1;
/// Length of a master key id.
const KEY_ID_LEN: usize = 8;
/// XChaCha20 nonce length.
const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
const TAG_LEN: usize = 16;
/// Version + key id + nonce.
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;
/// Domain separation of the associated data.
const AAD_LABEL: &[u8] = b"stratai-litellm-key-vault/v1";
/// Domain separation of the key id hash.
const KEY_ID_LABEL: &[u8] = b"stratai-litellm-vault-key-id";

/// What the vault can fail with. Messages name organizations, users and master key ids,
/// never a secret or a master key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VaultError {
    /// The configured master key is not 32 bytes in hex or base64.
    #[error("invalid vault master key: {0}")]
    InvalidKey(String),
    /// The operating system gave no randomness (nonce or key generation).
    #[error("no randomness available for the key vault: {0}")]
    Random(String),
    /// The secret could not be sealed.
    #[error("cannot seal the key of user `{user}` in organization `{org}`")]
    Seal {
        /// The organization.
        org: OrgId,
        /// The member.
        user: UserId,
    },
    /// The blob was sealed under another master key than the configured one.
    #[error(
        "the sealed key of user `{user}` in organization `{org}` was sealed with another vault \
         master key (id `{sealed_with}`; the configured key's id is `{configured}`): configure \
         the master key that sealed it, or let the sync replace the members' keys"
    )]
    OtherMasterKey {
        /// The organization.
        org: OrgId,
        /// The member.
        user: UserId,
        /// Id of the master key that sealed the blob.
        sealed_with: String,
        /// Id of the configured master key.
        configured: String,
    },
    /// The blob failed authentication under the right master key: it was altered, or copied
    /// from another row (another organization, member or key id).
    #[error(
        "the sealed key of user `{user}` in organization `{org}` failed authentication: it was \
         altered, or copied from another member's row"
    )]
    Tampered {
        /// The organization.
        org: OrgId,
        /// The member.
        user: UserId,
    },
    /// The blob is not a sealed key of a known format.
    #[error("the sealed key of user `{user}` in organization `{org}` is malformed: {reason}")]
    Malformed {
        /// The organization.
        org: OrgId,
        /// The member.
        user: UserId,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The vault's 256-bit master key. `Debug` shows only its id ([`VaultKey::id`]); there is no
/// `Display`, no serialization and no accessor of the key bytes.
#[derive(Clone)]
pub struct VaultKey {
    cipher: XChaCha20Poly1305,
    id: [u8; KEY_ID_LEN],
}

impl VaultKey {
    /// Environment variable the example binaries read the master key from.
    pub const ENV: &'static str = "STRATAI_VAULT_KEY";

    /// A master key from its 32 bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(KEY_ID_LABEL);
        hasher.update(bytes);
        let digest = hasher.finalize();
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Self {
            cipher: XChaCha20Poly1305::new(&Key::from(bytes)),
            id,
        }
    }

    /// Parses a master key written as 64 hex digits or as base64 (standard or URL-safe,
    /// padded or not) of 32 bytes, e.g. the output of `openssl rand -base64 32`. The error
    /// never repeats the text.
    pub fn parse(text: &str) -> Result<Self, VaultError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| VaultError::InvalidKey("bad hex".to_owned()))?
        } else {
            let engines = [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            engines
                .iter()
                .find_map(|engine| engine.decode(text).ok())
                .ok_or_else(|| {
                    VaultError::InvalidKey(
                        "expected 32 bytes as 64 hex digits or base64 (e.g. `openssl rand \
                         -base64 32`)"
                            .to_owned(),
                    )
                })?
        };
        let bytes: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            VaultError::InvalidKey(format!(
                "expected 32 bytes, got {} (64 hex digits or base64, e.g. `openssl rand -base64 32`)",
                bytes.len()
            ))
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// A random master key from the operating system: for an ephemeral vault (dev mode,
    /// tests), whose secrets no other process and no restart can open.
    pub fn generate() -> Result<Self, VaultError> {
        let key = Key::try_generate().map_err(|e| VaultError::Random(e.to_string()))?;
        Ok(Self::from_bytes(key.into()))
    }

    /// The key's id: 16 hex digits naming it in errors and logs without revealing it.
    #[must_use]
    pub fn id(&self) -> String {
        hex::encode(self.id)
    }

    /// Seals a member's key secret, bound to (organization, user, LiteLLM key id).
    pub fn seal(
        &self,
        org: OrgId,
        user: UserId,
        key_id: &str,
        secret: &Secret,
    ) -> Result<Vec<u8>, VaultError> {
        let nonce = XNonce::try_generate().map_err(|e| VaultError::Random(e.to_string()))?;
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.push(VERSION);
        header.extend_from_slice(&self.id);
        header.extend_from_slice(&nonce);
        let aad = associated_data(&header[..1 + KEY_ID_LEN], org, user, key_id);
        let sealed = self
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret.expose().as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Seal { org, user })?;
        header.extend_from_slice(&sealed);
        Ok(header)
    }

    /// Opens a blob [`seal`](Self::seal)ed for the same (organization, user, key id).
    pub fn open(
        &self,
        org: OrgId,
        user: UserId,
        key_id: &str,
        blob: &[u8],
    ) -> Result<Secret, VaultError> {
        let malformed = |reason| VaultError::Malformed { org, user, reason };
        if blob.len() < HEADER_LEN + TAG_LEN {
            return Err(malformed("too short"));
        }
        if blob[0] != VERSION {
            return Err(malformed("unknown format version"));
        }
        let sealed_with = &blob[1..1 + KEY_ID_LEN];
        if sealed_with != self.id {
            return Err(VaultError::OtherMasterKey {
                org,
                user,
                sealed_with: hex::encode(sealed_with),
                configured: self.id(),
            });
        }
        let nonce: [u8; NONCE_LEN] = blob[1 + KEY_ID_LEN..HEADER_LEN]
            .try_into()
            .map_err(|_| malformed("bad nonce"))?;
        let aad = associated_data(&blob[..1 + KEY_ID_LEN], org, user, key_id);
        let plain = self
            .cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &blob[HEADER_LEN..],
                    aad: &aad,
                },
            )
            .map_err(|_| VaultError::Tampered { org, user })?;
        let text = String::from_utf8(plain).map_err(|_| malformed("not text"))?;
        Ok(Secret::new(text))
    }
}

impl fmt::Debug for VaultKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultKey")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

/// What the blob is bound to: its version and master key id, the organization, the user and
/// LiteLLM's key id (last, so the variable length is unambiguous).
fn associated_data(header: &[u8], org: OrgId, user: UserId, key_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + header.len() + 32 + key_id.len());
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(header);
    aad.extend_from_slice(org.as_uuid().as_bytes());
    aad.extend_from_slice(user.as_uuid().as_bytes());
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

/// What [`EncryptedKeyVault`] does with a secret sealed under another master key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ForeignSecrets {
    /// Refuse with [`VaultError::OtherMasterKey`] (as a store error): a process configured
    /// with the wrong master key must not make the sync replace every member's key.
    #[default]
    Refuse,
    /// Report the member as having no secret, so the sync deletes their LiteLLM key and
    /// generates a new one sealed under this master key: for an ephemeral key (dev mode),
    /// or to recover after losing the master key. Tampered blobs are refused regardless.
    Replace,
}

/// A [`KeyVault`] sealing secrets into a [`KeyVaultStore`] (see the module docs). Errors of
/// the vault itself (a blob that does not open) are `StoreError::Backend` carrying the
/// [`VaultError`] message: the member's sync is retried, and the reason is kept in the
/// outbox's `last_error`.
pub struct EncryptedKeyVault<S: ?Sized> {
    store: Arc<S>,
    key: VaultKey,
    foreign: ForeignSecrets,
}

impl<S: ?Sized> EncryptedKeyVault<S> {
    /// A vault over `store` sealing with `key`, refusing secrets sealed under another key.
    pub fn new(store: Arc<S>, key: VaultKey) -> Self {
        Self {
            store,
            key,
            foreign: ForeignSecrets::Refuse,
        }
    }

    /// Sets what happens to secrets sealed under another master key.
    #[must_use]
    pub fn with_foreign_secrets(mut self, foreign: ForeignSecrets) -> Self {
        self.foreign = foreign;
        self
    }

    /// The master key's id.
    #[must_use]
    pub fn key_id(&self) -> String {
        self.key.id()
    }
}

impl<S: ?Sized> fmt::Debug for EncryptedKeyVault<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptedKeyVault")
            .field("key", &self.key)
            .field("foreign", &self.foreign)
            .finish_non_exhaustive()
    }
}

fn vault_error(error: &VaultError) -> StoreError {
    StoreError::Backend(format!("key vault: {error}"))
}

#[async_trait]
impl<S> KeyVault for EncryptedKeyVault<S>
where
    S: KeyVaultStore + ?Sized,
{
    async fn put(
        &self,
        org: OrgId,
        user: UserId,
        token: &str,
        key: &Secret,
    ) -> Result<(), StoreError> {
        let sealed = self
            .key
            .seal(org, user, token, key)
            .map_err(|e| vault_error(&e))?;
        let record = SealedKey {
            key_id: token.to_owned(),
            sealed,
            sealed_at: Utc::now(),
        };
        self.store.put_sealed_key(org, user, &record).await
    }

    async fn get(&self, org: OrgId, user: UserId) -> Result<Option<(String, Secret)>, StoreError> {
        let Some(found) = self.store.find_sealed_key(org, user).await? else {
            return Ok(None);
        };
        match self.key.open(org, user, &found.key_id, &found.sealed) {
            Ok(secret) => Ok(Some((found.key_id, secret))),
            Err(VaultError::OtherMasterKey { .. }) if self.foreign == ForeignSecrets::Replace => {
                Ok(None)
            }
            Err(e) => Err(vault_error(&e)),
        }
    }

    async fn remove(&self, org: OrgId, user: UserId) -> Result<(), StoreError> {
        self.store.delete_sealed_key(org, user).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tokio::sync::Mutex;

    use super::*;

    /// A [`KeyVaultStore`] that keeps bytes in a map, and lets tests tamper with them.
    #[derive(Default)]
    struct Rows(Mutex<HashMap<(OrgId, UserId), SealedKey>>);

    #[async_trait]
    impl KeyVaultStore for Rows {
        async fn put_sealed_key(
            &self,
            org: OrgId,
            user: UserId,
            key: &SealedKey,
        ) -> Result<(), StoreError> {
            self.0.lock().await.insert((org, user), key.clone());
            Ok(())
        }
        async fn find_sealed_key(
            &self,
            org: OrgId,
            user: UserId,
        ) -> Result<Option<SealedKey>, StoreError> {
            Ok(self.0.lock().await.get(&(org, user)).cloned())
        }
        async fn delete_sealed_key(&self, org: OrgId, user: UserId) -> Result<bool, StoreError> {
            Ok(self.0.lock().await.remove(&(org, user)).is_some())
        }
    }

    const SECRET: &str = "sk-very-secret-virtual-key-1234";

    fn key(byte: u8) -> VaultKey {
        VaultKey::from_bytes([byte; 32])
    }

    #[test]
    fn seal_then_open_roundtrips_with_a_fresh_nonce_each_time() {
        let (org, user) = (OrgId::new(), UserId::new());
        let k = key(7);
        let secret = Secret::new(SECRET);
        let a = k.seal(org, user, "hash-1", &secret).unwrap();
        let b = k.seal(org, user, "hash-1", &secret).unwrap();
        assert_ne!(a, b, "two seals of one secret must differ (random nonce)");
        assert_eq!(a.len(), HEADER_LEN + SECRET.len() + TAG_LEN);
        assert!(
            !a.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the secret is not in the blob in clear"
        );
        assert_eq!(k.open(org, user, "hash-1", &a).unwrap().expose(), SECRET);
        assert_eq!(k.open(org, user, "hash-1", &b).unwrap().expose(), SECRET);
        // The same bytes parsed from text give the same key.
        let hex_key = VaultKey::parse(&"07".repeat(32)).unwrap();
        assert_eq!(
            hex_key.open(org, user, "hash-1", &a).unwrap().expose(),
            SECRET
        );
    }

    #[test]
    fn a_wrong_master_key_fails_clearly_naming_both_key_ids() {
        let (org, user) = (OrgId::new(), UserId::new());
        let blob = key(1)
            .seal(org, user, "hash", &Secret::new(SECRET))
            .unwrap();
        let err = key(2).open(org, user, "hash", &blob).unwrap_err();
        match &err {
            VaultError::OtherMasterKey {
                sealed_with,
                configured,
                ..
            } => {
                assert_eq!(sealed_with, &key(1).id());
                assert_eq!(configured, &key(2).id());
            }
            other => panic!("expected OtherMasterKey, got {other:?}"),
        }
        let text = err.to_string();
        assert!(text.contains("another vault master key"), "{text}");
        assert!(text.contains(&user.to_string()), "{text}");
        assert!(!text.contains(SECRET));
    }

    #[test]
    fn an_altered_or_moved_blob_fails_authentication() {
        let (org, user) = (OrgId::new(), UserId::new());
        let k = key(3);
        let blob = k.seal(org, user, "hash", &Secret::new(SECRET)).unwrap();
        // Every single flipped bit after the version and key id is caught.
        for i in 1 + KEY_ID_LEN..blob.len() {
            let mut bad = blob.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(
                    k.open(org, user, "hash", &bad),
                    Err(VaultError::Tampered { .. })
                ),
                "byte {i}"
            );
        }
        // Copied to another member, another organization, or paired with another key id.
        let other = OrgId::new();
        for (o, u, id) in [
            (org, UserId::new(), "hash"),
            (other, user, "hash"),
            (org, user, "hash2"),
            (org, user, "has"),
        ] {
            let err = k.open(o, u, id, &blob).unwrap_err();
            assert!(matches!(err, VaultError::Tampered { .. }), "{err:?}");
            assert!(err.to_string().contains("failed authentication"), "{err}");
        }
        // Truncated, empty, or of an unknown version: malformed, not a panic.
        assert!(matches!(
            k.open(org, user, "hash", &blob[..HEADER_LEN + TAG_LEN - 1]),
            Err(VaultError::Malformed { .. })
        ));
        assert!(matches!(
            k.open(org, user, "hash", &[]),
            Err(VaultError::Malformed { .. })
        ));
        let mut future = blob.clone();
        future[0] = 2;
        assert!(matches!(
            k.open(org, user, "hash", &future),
            Err(VaultError::Malformed { .. })
        ));
    }

    #[test]
    fn master_keys_parse_from_hex_and_base64_and_never_echo_the_text() {
        let bytes: Vec<u8> = (0u8..32).collect();
        let reference = VaultKey::from_bytes(bytes.as_slice().try_into().unwrap()).id();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        for text in [
            hex::encode(&bytes),
            hex::encode_upper(&bytes),
            b64.clone(),
            b64.trim_end_matches('=').to_owned(),
            url,
            format!("  {b64}\n"),
        ] {
            assert_eq!(VaultKey::parse(&text).unwrap().id(), reference, "{text}");
        }
        let short = base64::engine::general_purpose::STANDARD.encode([9u8; 16]);
        for bad in [short.as_str(), "", "not a key at all!", &"ab".repeat(31)] {
            let err = VaultKey::parse(bad).unwrap_err();
            assert!(matches!(err, VaultError::InvalidKey(_)), "{err:?}");
            if !bad.is_empty() {
                assert!(!err.to_string().contains(bad), "{err}");
            }
        }
        assert!(
            VaultKey::parse(&short)
                .unwrap_err()
                .to_string()
                .contains("got 16")
        );
        // Generated keys are distinct.
        assert_ne!(
            VaultKey::generate().unwrap().id(),
            VaultKey::generate().unwrap().id()
        );
    }

    #[tokio::test]
    async fn debug_output_never_shows_a_secret_or_the_master_key() {
        let bytes = [0x5a; 32];
        let master = VaultKey::from_bytes(bytes);
        let rows = Arc::new(Rows::default());
        let vault = EncryptedKeyVault::new(rows.clone(), master.clone());
        let (org, user) = (OrgId::new(), UserId::new());
        vault
            .put(org, user, "hash", &Secret::new(SECRET))
            .await
            .unwrap();
        let sealed = rows.find_sealed_key(org, user).await.unwrap().unwrap();
        let (token, secret) = vault.get(org, user).await.unwrap().unwrap();
        let printed = format!("{master:?} {vault:?} {sealed:?} {secret:?} {secret} {token}");
        for leak in [
            SECRET.to_owned(),
            hex::encode(bytes),
            base64::engine::general_purpose::STANDARD.encode(bytes),
            format!("{:?}", &sealed.sealed[HEADER_LEN..]),
        ] {
            assert!(!printed.contains(&leak), "{printed} shows {leak}");
        }
        assert!(printed.contains(&master.id()), "{printed}");
    }

    #[tokio::test]
    async fn the_vault_roundtrips_through_its_store_and_refuses_what_it_cannot_open() {
        let rows = Arc::new(Rows::default());
        let vault = EncryptedKeyVault::new(rows.clone(), key(4));
        let (org, user, other) = (OrgId::new(), UserId::new(), UserId::new());
        assert!(vault.get(org, user).await.unwrap().is_none());
        vault
            .put(org, user, "hash-a", &Secret::new(SECRET))
            .await
            .unwrap();
        let stored = rows.find_sealed_key(org, user).await.unwrap().unwrap();
        assert_eq!(stored.key_id, "hash-a");
        let (token, secret) = vault.get(org, user).await.unwrap().unwrap();
        assert_eq!((token.as_str(), secret.expose()), ("hash-a", SECRET));

        // A second vault over the same rows (another process, a restart) opens it.
        let again = EncryptedKeyVault::new(rows.clone(), key(4));
        assert_eq!(
            again.get(org, user).await.unwrap().unwrap().1.expose(),
            SECRET
        );

        // Another master key: a clear error by default, "no secret" when replacing.
        let wrong = EncryptedKeyVault::new(rows.clone(), key(5));
        let err = wrong.get(org, user).await.unwrap_err();
        assert!(
            err.to_string().contains("another vault master key"),
            "{err}"
        );
        let replacing = EncryptedKeyVault::new(rows.clone(), key(5))
            .with_foreign_secrets(ForeignSecrets::Replace);
        assert!(replacing.get(org, user).await.unwrap().is_none());

        // A row moved to another member, or a key id rewritten: refused even when replacing.
        rows.put_sealed_key(org, other, &stored).await.unwrap();
        let err = vault.get(org, other).await.unwrap_err();
        assert!(err.to_string().contains("failed authentication"), "{err}");
        let mut renamed = stored.clone();
        renamed.key_id = "hash-b".to_owned();
        rows.put_sealed_key(org, user, &renamed).await.unwrap();
        assert!(vault.get(org, user).await.is_err());
        let replacing4 = EncryptedKeyVault::new(rows.clone(), key(4))
            .with_foreign_secrets(ForeignSecrets::Replace);
        assert!(replacing4.get(org, user).await.is_err());

        vault.remove(org, user).await.unwrap();
        assert!(vault.get(org, user).await.unwrap().is_none());
        vault.remove(org, user).await.unwrap();
    }
}
