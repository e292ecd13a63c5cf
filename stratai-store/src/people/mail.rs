//! Outgoing mail: core's [`Mailer`] port over an SMTP server ([`SmtpMailer`], lettre) and
//! over a local folder of `.eml` files ([`MailboxMailer`], for development and for servers
//! without a mail server). Either goes under the [`super::delivery::Postman`], which emails
//! invitations, records their delivery and retries undelivered ones.
//!
//! Behind the `mail` feature (it brings lettre).

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use stratai_core::mail::{MailError, MailMessage, Mailer};
use url::Url;

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
