//! Outgoing mail: the message an invitation sends and the port that delivers it.
//!
//! stratai-store implements [`Mailer`] over SMTP (lettre) and over a local mailbox folder
//! (its `mail` feature); an embedder may plug in its own. What a mail says is decided here, once, so every
//! transport sends the same words.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::directory::Email;

/// One plain-text message to one recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailMessage {
    /// Recipient.
    pub to: Email,
    /// Subject line (one line, no control characters).
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// Why a message was not delivered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// The mail server or mailbox refused or could not be reached; worth retrying.
    #[error("mail not delivered: {0}")]
    Transport(String),
    /// The message cannot be sent as built (e.g. an address the transport refuses).
    #[error("mail cannot be built: {0}")]
    Message(String),
}

/// Delivers mail.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Sends `message`. `Ok` means the transport accepted it (not that it was read).
    async fn send(&self, message: &MailMessage) -> Result<(), MailError>;
    /// Where mail goes, for the start-up log (never a secret).
    fn describe(&self) -> String;
}

/// The invitation email: who invites to which organization, the link to the accept page and
/// its expiry. `link` carries the token; it is the only place the token travels.
#[must_use]
pub fn invitation_message(
    to: &Email,
    organization: &str,
    link: &str,
    expires_at: DateTime<Utc>,
) -> MailMessage {
    // A name with line breaks must not forge headers or lines of the message.
    let org: String = organization
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    MailMessage {
        to: to.clone(),
        subject: format!("You are invited to {org} on StratAI"),
        body: format!(
            "You have been invited to join {org} on StratAI.\n\
             \n\
             Open this link to accept the invitation (sign in with {to}):\n\
             \n\
             {link}\n\
             \n\
             The link works once and expires at {} UTC. If you did not expect this \
             invitation, ignore this message.\n",
            expires_at.format("%Y-%m-%d %H:%M"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_invitation_names_the_org_the_link_and_cannot_forge_headers() {
        let to = Email::new("ann@example.com").unwrap();
        let m = invitation_message(
            &to,
            "Acme\r\nBcc: eve@example.com",
            "https://s.example/invitations/abc",
            Utc::now(),
        );
        assert!(!m.subject.contains('\n') && !m.subject.contains('\r'));
        assert!(m.subject.contains("Acme"));
        assert!(m.body.contains("https://s.example/invitations/abc"));
        assert!(m.body.contains("ann@example.com"));
        assert!(!m.body.contains("\r\nBcc"));
    }
}
