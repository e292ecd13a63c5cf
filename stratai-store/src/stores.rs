//! [`Stores`]: every port of core behind a trait object, opened from one database URL, so a
//! process (the server, `litellm-worker`, an embedding service) runs on memory, SQLite or
//! PostgreSQL without naming the backend type.

use std::sync::Arc;

use stratai_core::StoreError;
use stratai_core::ports::{
    AuditStore, BudgetLedger, DirectoryStore, GuardrailStore, InvoiceStore, KeyVaultStore,
    OutboxStore, TierStore, UsageStore,
};

/// Every port, behind trait objects so one process runs on memory, SQLite or PostgreSQL.
#[derive(Clone)]
pub struct Stores {
    /// Organizations, users, memberships, groups, profiles, invitations.
    pub directory: Arc<dyn DirectoryStore>,
    /// Tier catalog and subscriptions.
    pub tiers: Arc<dyn TierStore>,
    /// Budgets and the ledger.
    pub budgets: Arc<dyn BudgetLedger>,
    /// Usage records.
    pub usage: Arc<dyn UsageStore>,
    /// Guardrail rules.
    pub guardrails: Arc<dyn GuardrailStore>,
    /// The LiteLLM sync outbox.
    pub outbox: Arc<dyn OutboxStore>,
    /// Sealed LiteLLM virtual-key secrets (the sync's encrypted key vault).
    pub key_vault: Arc<dyn KeyVaultStore>,
    /// Invoices.
    pub invoices: Arc<dyn InvoiceStore>,
    /// The audit trail (append-only hash chains).
    pub audit: Arc<dyn AuditStore>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").finish_non_exhaustive()
    }
}

impl Stores {
    /// All ports from one backend value (cloning it shares its pool).
    pub fn from_backend<T>(backend: T) -> Self
    where
        T: DirectoryStore
            + TierStore
            + BudgetLedger
            + UsageStore
            + GuardrailStore
            + OutboxStore
            + KeyVaultStore
            + InvoiceStore
            + AuditStore
            + Clone
            + 'static,
    {
        Self {
            directory: Arc::new(backend.clone()),
            tiers: Arc::new(backend.clone()),
            budgets: Arc::new(backend.clone()),
            usage: Arc::new(backend.clone()),
            guardrails: Arc::new(backend.clone()),
            outbox: Arc::new(backend.clone()),
            key_vault: Arc::new(backend.clone()),
            invoices: Arc::new(backend.clone()),
            audit: Arc::new(backend),
        }
    }

    /// In-memory ports (tests, demos that need no file).
    #[must_use]
    pub fn memory() -> Self {
        Self::from_backend(crate::MemoryStore::new())
    }

    /// Opens the database named by `url`: `sqlite:` (its directory created, the file created
    /// and migrated if missing) or `postgres:`/`postgresql:` (migrated first with `owner_url`
    /// when given; served as the app role, which must not be able to bypass row-level
    /// security). Any other scheme is refused.
    pub async fn open(url: &str, owner_url: Option<&str>) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            if let Some(dir) = sqlite_parent_dir(url) {
                std::fs::create_dir_all(&dir).map_err(|e| {
                    StoreError::Backend(format!("cannot create `{}`: {e}", dir.display()))
                })?;
            }
            let store = crate::SqliteStore::connect(url).await?;
            Ok(Self::from_backend(store))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            if let Some(owner) = owner_url {
                crate::PgStore::migrate(owner).await?;
            }
            let store = crate::PgStore::connect(url).await?;
            Ok(Self::from_backend(store))
        } else {
            Err(StoreError::Backend(
                "a database url starts with `sqlite:` or `postgres:`".to_owned(),
            ))
        }
    }
}

/// The directory of a `sqlite://dir/file.db?...` url, to create before connecting.
fn sqlite_parent_dir(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    if path.is_empty() || path.contains(":memory:") {
        return None;
    }
    std::path::Path::new(path)
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(std::path::Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_dirs() {
        assert_eq!(
            sqlite_parent_dir("sqlite://./.stratai/stratai.db?mode=rwc"),
            Some(std::path::PathBuf::from("./.stratai"))
        );
        assert_eq!(sqlite_parent_dir("sqlite::memory:"), None);
        assert_eq!(sqlite_parent_dir("sqlite:file.db"), None);
    }

    #[tokio::test]
    async fn open_makes_the_sqlite_directory_and_refuses_unknown_schemes() {
        let dir = stratai_testkit::Scratch::new();
        let url = format!("sqlite://{}/nested/s.db?mode=rwc", dir.path().display());
        let stores = Stores::open(&url, None).await.unwrap();
        assert!(stores.tiers.list_tiers().await.unwrap().is_empty());
        assert!(dir.join("nested").is_dir());
        let e = Stores::open("mysql://x", None).await.unwrap_err();
        assert!(e.to_string().contains("sqlite:"), "{e}");
    }
}
