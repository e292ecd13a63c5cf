//! Browser sessions. The cookie holds 256 random bits; the store keeps only their SHA-256,
//! so a leaked store cannot be replayed as cookies.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The session store failed; the message is for logs.
#[derive(Debug, thiserror::Error)]
#[error("session store: {0}")]
pub struct SessionError(pub String);

/// SHA-256 of a session id: the store's key.
pub type SessionKey = [u8; 32];

/// A logged-in browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The user.
    pub user_id: Uuid,
    /// When the session ends.
    pub expires_at: SystemTime,
    /// Whether the sign-in that opened it used more than one factor (the id token's
    /// `amr`/`acr`), for organizations that require it.
    pub mfa: bool,
}

/// Where sessions live. The in-memory store serves one process; a shared store (database)
/// is needed behind a load balancer without sticky sessions.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a session.
    async fn insert(&self, key: SessionKey, session: Session) -> Result<(), SessionError>;
    /// The unexpired session under `key`.
    async fn get(&self, key: &SessionKey) -> Result<Option<Session>, SessionError>;
    /// Ends a session.
    async fn remove(&self, key: &SessionKey) -> Result<(), SessionError>;
}

/// A fresh random session id (base64url, 43 characters) and its store key.
#[must_use]
pub fn new_session_id() -> (String, SessionKey) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let id = URL_SAFE_NO_PAD.encode(bytes);
    let key = hash_session_id(&id);
    (id, key)
}

/// The store key of a session id.
#[must_use]
pub fn hash_session_id(id: &str) -> SessionKey {
    Sha256::digest(id.as_bytes()).into()
}

/// In-memory sessions with a size cap; expired ones are pruned on insert.
#[derive(Debug)]
pub struct MemorySessionStore {
    sessions: Mutex<HashMap<SessionKey, Session>>,
    max_sessions: usize,
}

impl MemorySessionStore {
    /// A store holding at most `max_sessions` live sessions.
    #[must_use]
    pub fn new(max_sessions: usize) -> Self {
        Self {
            sessions: Mutex::new(HashMap::new()),
            max_sessions,
        }
    }
}

impl Default for MemorySessionStore {
    fn default() -> Self {
        Self::new(100_000)
    }
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn insert(&self, key: SessionKey, session: Session) -> Result<(), SessionError> {
        let mut map = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= self.max_sessions {
            let now = SystemTime::now();
            map.retain(|_, s| s.expires_at > now);
        }
        if map.len() >= self.max_sessions {
            return Err(SessionError("full".to_owned()));
        }
        map.insert(key, session);
        Ok(())
    }

    async fn get(&self, key: &SessionKey) -> Result<Option<Session>, SessionError> {
        let mut map = self
            .sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(key) {
            Some(s) if s.expires_at > SystemTime::now() => Ok(Some(s.clone())),
            Some(_) => {
                map.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn remove(&self, key: &SessionKey) -> Result<(), SessionError> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
        Ok(())
    }
}

/// Session expiry `ttl` from now.
#[must_use]
pub fn expiry(ttl: Duration) -> SystemTime {
    SystemTime::now() + ttl
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn expired_sessions_are_not_returned_and_cap_holds() {
        let store = MemorySessionStore::new(2);
        let (_, k1) = new_session_id();
        let (_, k2) = new_session_id();
        let (_, k3) = new_session_id();
        let user = Uuid::now_v7();
        store
            .insert(
                k1,
                Session {
                    user_id: user,
                    expires_at: SystemTime::now() - Duration::from_secs(1),
                    mfa: false,
                },
            )
            .await
            .unwrap();
        assert_eq!(store.get(&k1).await.unwrap(), None);
        store
            .insert(
                k2,
                Session {
                    user_id: user,
                    expires_at: expiry(Duration::from_secs(60)),
                    mfa: false,
                },
            )
            .await
            .unwrap();
        store
            .insert(
                k3,
                Session {
                    user_id: user,
                    expires_at: expiry(Duration::from_secs(60)),
                    mfa: false,
                },
            )
            .await
            .unwrap();
        let (_, k4) = new_session_id();
        assert!(
            store
                .insert(
                    k4,
                    Session {
                        user_id: user,
                        expires_at: expiry(Duration::from_secs(60)),
                        mfa: false,
                    }
                )
                .await
                .is_err()
        );
        assert!(store.get(&k2).await.unwrap().is_some());
        store.remove(&k2).await.unwrap();
        assert_eq!(store.get(&k2).await.unwrap(), None);
    }

    #[test]
    fn ids_are_random_and_hashed() {
        let (a, ka) = new_session_id();
        let (b, kb) = new_session_id();
        assert_ne!(a, b);
        assert_ne!(ka, kb);
        assert_eq!(a.len(), 43);
        assert_eq!(hash_session_id(&a), ka);
    }
}
