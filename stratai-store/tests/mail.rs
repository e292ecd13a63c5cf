#![cfg(feature = "mail")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The mail transports of `stratai_store::people::mail` (feature `mail`): the mailbox writes
//! one RFC 5322 file per message in its folder, and both refuse addresses they cannot use.
//! Sending through a real SMTP server is the server's invitation test (scripts/smtp-sink.sh).

use stratai_core::directory::Email;
use stratai_core::mail::{MailError, MailMessage, Mailer};
use stratai_store::people::mail::{MailboxMailer, SmtpMailer};
use stratai_testkit::Scratch;

fn message(to: &str) -> MailMessage {
    MailMessage {
        to: Email::new(to).unwrap(),
        subject: "You are invited to Acme".to_owned(),
        body: "Accept at https://ai.acme.test/invitations/abc".to_owned(),
    }
}

#[tokio::test]
async fn the_mailbox_writes_one_eml_file_per_message() {
    let scratch = Scratch::new();
    let dir = scratch.path();
    let mailer =
        MailboxMailer::new(dir.join("inbox"), "StratAI <noreply@acme.test>", false).unwrap();
    assert_eq!(mailer.dir(), dir.join("inbox"));
    assert!(mailer.describe().contains("inbox"));

    // The folder is created at the first message.
    mailer.send(&message("ann@example.test")).await.unwrap();
    mailer.send(&message("bob@example.test")).await.unwrap();
    let mut files: Vec<_> = std::fs::read_dir(dir.join("inbox"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2);
    assert!(
        files
            .iter()
            .all(|f| f.extension().is_some_and(|e| e == "eml"))
    );
    let first = std::fs::read_to_string(&files[0]).unwrap();
    assert!(first.contains("To: ann@example.test"), "{first}");
    assert!(
        first.contains("From: StratAI <noreply@acme.test>"),
        "{first}"
    );
    assert!(
        first.contains("Subject: You are invited to Acme"),
        "{first}"
    );
    assert!(
        first.contains("https://ai.acme.test/invitations/abc"),
        "{first}"
    );
}

#[tokio::test]
async fn an_unusable_folder_is_a_transport_failure_worth_retrying() {
    let scratch = Scratch::new();
    let file = scratch.join("not-a-dir");
    std::fs::write(&file, "").unwrap();
    let mailer = MailboxMailer::new(file, "noreply@acme.test", false).unwrap();
    let refused = mailer.send(&message("ann@example.test")).await.unwrap_err();
    assert!(matches!(refused, MailError::Transport(_)), "{refused:?}");
}

#[test]
fn a_sender_that_is_no_address_is_refused() {
    let scratch = Scratch::new();
    assert!(matches!(
        MailboxMailer::new(scratch.join("inbox"), "not an address", false),
        Err(MailError::Message(_))
    ));
    assert!(matches!(
        SmtpMailer::new("smtp://mail.acme.test:2525", None, "not an address"),
        Err(MailError::Message(_))
    ));
}

#[tokio::test]
async fn smtp_describes_its_server_without_the_credentials() {
    let mailer = SmtpMailer::new(
        "smtp://ann:s3cret@mail.acme.test:2525",
        None,
        "noreply@acme.test",
    )
    .unwrap();
    assert_eq!(mailer.describe(), "SMTP server smtp://mail.acme.test:2525");
    assert!(matches!(
        SmtpMailer::new("not a url", None, "noreply@acme.test"),
        Err(MailError::Message(_))
    ));
}
