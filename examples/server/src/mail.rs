//! Outgoing mail: core's [`Mailer`] port over SMTP (lettre) and over a local mailbox folder,
//! and the [`Postman`] that turns an invitation into an email and records how it went.
//!
//! An invitation is stored before its email is attempted, so a mail server that is down loses
//! nothing: the delivery is recorded as failed on the invitation (the admin API shows it) and
//! [`Postman::deliver_due`] retries it, with a fresh link, on a back-off
//! ([`InvitationDelivery::retry_due`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use stratai_core::StoreError;
use stratai_core::directory::{Invitation, InvitationStatus, InvitationToken};
use stratai_core::mail::{MailError, MailMessage, Mailer, invitation_message};
use stratai_core::ports::DirectoryStore;
use url::Url;

use crate::config::{MailConfig, MailTransportConfig};

/// Longest wait for one SMTP exchange: a request that sends a mail never hangs on it.
const SMTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the RFC 5322 message of `message` from `from`.
fn build(from: &Mailbox, message: &MailMessage) -> Result<Message, MailError> {
    let to: Mailbox = message
        .to
        .as_str()
        .parse()
        .map_err(|e| MailError::Message(format!("recipient `{}`: {e}", message.to)))?;
    Message::builder()
        .from(from.clone())
        .to(to)
        .subject(message.subject.clone())
        .header(ContentType::TEXT_PLAIN)
        .body(message.body.clone())
        .map_err(|e| MailError::Message(e.to_string()))
}

/// Mail through an SMTP server.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    server: String,
}

impl SmtpMailer {
    /// A mailer for `url` (`smtp://` plain or `?tls=required`, `smtps://`), with credentials
    /// from the URL or given apart.
    pub fn new(
        url: &str,
        credentials: Option<(String, String)>,
        from: &str,
    ) -> Result<Self, MailError> {
        let parsed = Url::parse(url).map_err(|e| MailError::Message(format!("smtp url: {e}")))?;
        // Never the credentials: this is for logs.
        let server = format!(
            "{}://{}:{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or(""),
            parsed
                .port()
                .map_or_else(|| "default".to_owned(), |p| p.to_string())
        );
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| MailError::Message(format!("smtp url: {e}")))?
            .timeout(Some(SMTP_TIMEOUT));
        if let Some((user, password)) = credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        let from = from
            .parse()
            .map_err(|e| MailError::Message(format!("sender `{from}`: {e}")))?;
        Ok(Self {
            transport: builder.build(),
            from,
            server,
        })
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    async fn send(&self, message: &MailMessage) -> Result<(), MailError> {
        let built = build(&self.from, message)?;
        self.transport
            .send(built)
            .await
            .map(|_| ())
            .map_err(|e| MailError::Transport(e.to_string()))
    }

    fn describe(&self) -> String {
        format!("SMTP server {}", self.server)
    }
}

/// Mail written to a folder, one `.eml` file per message (RFC 5322, readable by any mail
/// client), and announced in the log: dev mode's mailbox, and every server without SMTP.
pub struct MailboxMailer {
    dir: PathBuf,
    from: Mailbox,
    log_bodies: bool,
}

impl MailboxMailer {
    /// A mailbox in `dir` (created at the first message). `log_bodies`: also log each
    /// message's text, links included (dev mode only: a link is a capability).
    pub fn new(dir: PathBuf, from: &str, log_bodies: bool) -> Result<Self, MailError> {
        let from = from
            .parse()
            .map_err(|e| MailError::Message(format!("sender `{from}`: {e}")))?;
        Ok(Self {
            dir,
            from,
            log_bodies,
        })
    }

    /// The folder.
    #[must_use]
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
}

#[async_trait]
impl Mailer for MailboxMailer {
    async fn send(&self, message: &MailMessage) -> Result<(), MailError> {
        let built = build(&self.from, message)?;
        let name = format!(
            "{}-{}.eml",
            Utc::now().format("%Y%m%dT%H%M%S%.6fZ"),
            uuid::Uuid::now_v7().simple()
        );
        let path = self.dir.join(name);
        let io = |e: std::io::Error| {
            MailError::Transport(format!("mailbox {}: {e}", self.dir.display()))
        };
        tokio::fs::create_dir_all(&self.dir).await.map_err(io)?;
        tokio::fs::write(&path, built.formatted())
            .await
            .map_err(io)?;
        if self.log_bodies {
            tracing::info!(
                to = %message.to,
                subject = %message.subject,
                file = %path.display(),
                "mail written to the dev mailbox:\n{}",
                message.body
            );
        } else {
            tracing::info!(to = %message.to, file = %path.display(), "mail written to the mailbox");
        }
        Ok(())
    }

    fn describe(&self) -> String {
        format!("the mailbox folder {}", self.dir.display())
    }
}

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

    /// The configured transport: SMTP, or the mailbox folder (its bodies logged in dev mode).
    pub fn from_config(
        mail: &MailConfig,
        public_url: &Url,
        dev_mode: bool,
    ) -> Result<Self, MailError> {
        let mailer: Arc<dyn Mailer> = match &mail.transport {
            MailTransportConfig::Smtp {
                url,
                username,
                password,
            } => Arc::new(SmtpMailer::new(
                url.expose().trim(),
                username
                    .clone()
                    .zip(password.as_ref().map(|p| p.expose().to_owned())),
                &mail.from,
            )?),
            MailTransportConfig::Mailbox(dir) => {
                Arc::new(MailboxMailer::new(dir.clone(), &mail.from, dev_mode)?)
            }
        };
        Ok(Self::new(mailer, public_url.clone()))
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

    /// Runs [`deliver_due`](Self::deliver_due) every `every`, for the server's lifetime.
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
