//! The storage ports the server runs on ([`Stores`], opened from `DATABASE_URL` by
//! `stratai-store`) and the readiness probe over them (the first-start seed is
//! `stratai_store::seed`, sign-in's view of the people `stratai_store::people::identity`).

use async_trait::async_trait;
pub use stratai_store::Stores;

use crate::app::Readiness;

/// Readiness: the database answers a cheap query.
#[derive(Clone)]
pub struct StoreReadiness(pub Stores);

#[async_trait]
impl Readiness for StoreReadiness {
    async fn check(&self) -> Result<(), String> {
        self.0
            .tiers
            .list_tiers()
            .await
            .map(|_| ())
            .map_err(|e| format!("database: {e}"))
    }
}
