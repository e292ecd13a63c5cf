//! Invitation emails: the [`Postman`] turns an invitation into core's invitation message,
//! hands it to a [`Mailer`] (SMTP, a mailbox folder, an embedder's own transport) and records
//! how it went on the invitation.
//!
//! An invitation is stored before its email is attempted, so a mail server that is down loses
//! nothing: the delivery is recorded as failed on the invitation (the admin API shows it) and
//! [`Postman::deliver_due`] retries it, with a fresh link, on a back-off
//! ([`InvitationDelivery::retry_due`](stratai_core::directory::InvitationDelivery::retry_due)).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use stratai_core::StoreError;
use stratai_core::directory::{Invitation, InvitationStatus, InvitationToken};
use stratai_core::mail::{Mailer, invitation_message};
use stratai_core::ports::DirectoryStore;
use url::Url;

/// Sends invitation emails and records their delivery on the invitation.
pub struct Postman {
    mailer: Arc<dyn Mailer>,
    public_url: Url,
}

impl std::fmt::Debug for Postman {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postman")
            .field("mailer", &self.mailer.describe())
            .field("public_url", &self.public_url.as_str())
            .finish()
    }
}

impl Postman {
    /// A postman over `mailer`; links point at `public_url`.
    #[must_use]
    pub fn new(mailer: Arc<dyn Mailer>, public_url: Url) -> Self {
        Self { mailer, public_url }
    }

    /// Where mail goes, for the start-up announcement.
    #[must_use]
    pub fn describe(&self) -> String {
        self.mailer.describe()
    }

    /// The accept page of `token`: `{public_url}/invitations/{token}`.
    #[must_use]
    pub fn invitation_link(&self, token: &InvitationToken) -> String {
        let base = self.public_url.as_str().trim_end_matches('/');
        format!("{base}/invitations/{}", token.expose())
    }

    /// Emails `invitation` (whose current token is `token`) and stores the outcome on it.
    /// A failed delivery is recorded, not returned: the invitation exists either way and the
    /// retry loop picks it up. Errors are the store's only.
    pub async fn deliver(
        &self,
        directory: &dyn DirectoryStore,
        organization: &str,
        invitation: &mut Invitation,
        token: &InvitationToken,
    ) -> Result<(), StoreError> {
        let link = self.invitation_link(token);
        let message = invitation_message(
            &invitation.email,
            organization,
            &link,
            invitation.expires_at,
        );
        let outcome = self.mailer.send(&message).await.map_err(|e| e.to_string());
        if let Err(e) = &outcome {
            tracing::warn!(
                invitation_id = %invitation.id,
                org_id = %invitation.org_id,
                error = %e,
                "invitation email not delivered; it will be retried"
            );
        }
        invitation.delivery.record(outcome, Utc::now());
        match directory
            .save_invitations(invitation.org_id, std::slice::from_ref(invitation))
            .await
        {
            // Accepted or revoked meanwhile: nothing left to record.
            Err(StoreError::Conflict(_)) => Ok(()),
            other => other,
        }
    }

    /// Retries every pending, unexpired invitation whose email is queued or failed and due
    /// at `now` (each with a fresh link: the token of an undelivered mail was never stored).
    /// Returns how many were attempted.
    pub async fn deliver_due(
        &self,
        directory: &dyn DirectoryStore,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let mut attempted = 0;
        for org in directory.list_orgs().await? {
            for mut invitation in directory.list_invitations(org.id).await? {
                if invitation.status != InvitationStatus::Pending
                    || invitation.expires_at <= now
                    || !invitation.delivery.retry_due(now)
                {
                    continue;
                }
                let token = invitation.rotate_token();
                match directory
                    .save_invitations(org.id, std::slice::from_ref(&invitation))
                    .await
                {
                    Err(StoreError::Conflict(_)) => continue,
                    other => other?,
                }
                self.deliver(directory, &org.name, &mut invitation, &token)
                    .await?;
                attempted += 1;
            }
        }
        Ok(attempted)
    }

    /// Runs [`deliver_due`](Self::deliver_due) every `every`, until the task is aborted.
    pub fn spawn_retries(
        self: Arc<Self>,
        directory: Arc<dyn DirectoryStore>,
        every: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match self.deliver_due(directory.as_ref(), Utc::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(attempted = n, "invitation emails retried"),
                    Err(e) => tracing::warn!(error = %e, "invitation email retry pass failed"),
                }
            }
        })
    }
}
