//! Invitations that reach people (the seed's onboarding flows A, B and C), over HTTP on
//! memory, SQLite and PostgreSQL:
//! - emails go through a real SMTP server process (aiosmtpd, installed by
//!   `scripts/smtp-sink.sh`); the test reads the delivered message, follows its link to the
//!   accept page and joins, by first sign-in and by the page's form (CSRF token from the HTML);
//! - a mail server that is down loses nothing: the delivery is recorded as failed and retried;
//! - one pending invitation per address (case-insensitive): inviting again resends it; revoke;
//!   the list and the accept page show pending, accepted, expired and revoked;
//! - the seed's 50-person pilot as a bulk CSV with role, groups and profile columns: one bad
//!   row is named with its line and nothing is written, then all 50 are;
//! - self-signup domains (onboarding B), off unless the platform sets them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::Utc;
use harness::*;
use serde_json::{Value, json};
use stratai_core::directory::{
    DeliveryStatus, Invitation, InvitationRequest, OrgRole, ProfileAvailability, UserProfile,
};
use stratai_testkit::Scratch;

const PUBLIC_URL: &str = "http://stratai.test";

// ---------------------------------------------------------------------------------------------
// A real SMTP server
// ---------------------------------------------------------------------------------------------

/// aiosmtpd listening on a free local port, storing what it receives in a Maildir.
struct SmtpSink {
    child: Child,
    port: u16,
    maildir: PathBuf,
    _scratch: Scratch,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The cargo target directory this test binary was built in (`<target>/debug/deps/<bin>`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// The virtualenv python with aiosmtpd, or why there is none (skipped; a failure under CI).
fn smtp_python() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/smtp-sink.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(target_dir())
        .stdin(Stdio::null())
        .output();
    let reason = match out {
        Ok(o) if o.status.success() => {
            return Some(PathBuf::from(String::from_utf8(o.stdout).unwrap().trim()));
        }
        Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
        Err(e) => format!("bash could not run {}: {e}", script.display()),
    };
    assert!(
        !under_ci(),
        "a real SMTP server is required under CI=true but unavailable: {reason}"
    );
    eprintln!("SKIPPED: no SMTP server for this test: {reason}");
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl SmtpSink {
    fn start(python: &Path, port: u16) -> Self {
        let scratch = Scratch::new();
        let maildir = scratch.join("maildir");
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut sink = Self {
            child,
            port,
            maildir,
            _scratch: scratch,
        };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return sink;
            }
            if let Some(status) = sink.child.try_wait().unwrap() {
                panic!("aiosmtpd exited: {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("aiosmtpd did not listen on {port}");
    }

    /// Every message received, as text, oldest first.
    fn messages(&self) -> Vec<String> {
        read_all(&self.maildir.join("new"), |_| true)
    }
}

/// The contents of the files in `dir` (sorted by name) that pass `keep`.
fn read_all(dir: &Path, keep: impl Fn(&Path) -> bool) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| keep(p))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect()
}

/// The server's dev mailbox (`STRATAI_MAILBOX_DIR`, in the test's scratch space).
fn dev_mailbox(api: &Api) -> Vec<String> {
    read_all(&api.scratch.join("mailbox"), |p| {
        p.extension().is_some_and(|e| e == "eml")
    })
}

/// A message's text with quoted-printable soft breaks and escapes undone (lettre picks that
/// encoding for the long link line).
fn decoded(message: &str) -> String {
    let joined = message.replace("=\r\n", "").replace("=\n", "");
    let mut out = String::new();
    let mut chars = joined.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '=' {
            let hex: String = chars.clone().take(2).collect();
            if hex.len() == 2
                && let Ok(b) = u8::from_str_radix(&hex, 16)
            {
                out.push(char::from(b));
                chars.next();
                chars.next();
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The accept page path of the one link in `message` (`/invitations/<64 hex>`), checking the
/// link is on the public URL.
fn link_in(message: &str) -> String {
    let text = decoded(message);
    let start = text
        .find(&format!("{PUBLIC_URL}/invitations/"))
        .unwrap_or_else(|| panic!("no link in:\n{text}"));
    let link: String = text[start + PUBLIC_URL.len()..]
        .chars()
        .take("/invitations/".len() + 64)
        .collect();
    assert!(
        link["/invitations/".len()..]
            .chars()
            .all(|c| c.is_ascii_hexdigit()),
        "{link}"
    );
    link
}

fn token_of(path: &str) -> &str {
    path.trim_start_matches("/invitations/")
}

// ---------------------------------------------------------------------------------------------
// Browser helpers: a session cookie, the page's CSRF token, a form post from this origin
// ---------------------------------------------------------------------------------------------

async fn session_cookie(api: &Api, email: &str) -> String {
    let user = api
        .state
        .auth()
        .signin()
        .identities()
        .find_by_email(email)
        .await
        .unwrap()
        .unwrap();
    let principal = stratai_server::auth::Principal::from(&user);
    let cookie = stratai_server::auth::routes::start_session(api.state.auth(), &principal, false)
        .await
        .unwrap();
    cookie
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

async fn page(api: &Api, path: &str, cookie: Option<&str>) -> Resp {
    let mut req = Request::get(path);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    api.raw(req.body(Body::empty()).unwrap()).await
}

fn csrf_in(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .unwrap_or_else(|| panic!("no CSRF field in:\n{html}"));
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

async fn post_form(api: &Api, path: &str, cookie: &str, csrf: &str) -> Resp {
    let body = serde_urlencoded::to_string([("csrf", csrf)]).unwrap();
    api.raw(
        Request::post(path)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", PUBLIC_URL)
            .header("cookie", cookie)
            .body(Body::from(body))
            .unwrap(),
    )
    .await
}

fn status_of<'a>(list: &'a Value, email: &str) -> &'a Value {
    let found = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["email"] == email)
        .unwrap_or_else(|| panic!("{email} not listed: {list}"));
    &found["status"]
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Flow A over real SMTP: the admin invites, the message arrives with a link to the accept
/// page, the page shows the organization and asks to sign in, the invitee's first sign-in
/// joins them; a second person (who already has an account) accepts on the page's form.
async fn emailed_invitation_is_joined_at_first_sign_in(kind: Kind) {
    let Some(python) = smtp_python() else { return };
    let sink = SmtpSink::start(&python, free_port());
    let Some(api) = Api::start_with(
        kind,
        &[
            (
                "STRATAI_SMTP_URL",
                format!("smtp://127.0.0.1:{}", sink.port),
            ),
            ("STRATAI_PUBLIC_URL", PUBLIC_URL.to_owned()),
            ("STRATAI_MAIL_FROM", "Acme AI <ai@acme.test>".to_owned()),
        ],
    )
    .await
    else {
        return;
    };
    let a = org_fixture(&api.stores, "acme").await;
    let org_name = api.stores.directory.get_org(a.org).await.unwrap().name;
    let admin = api.token(a.admin.email.as_str()).await;
    let n = unique();
    let invitee = format!("newcomer-{n}@acme.test");

    let r = api
        .post(
            "/api/invitations",
            &admin,
            json!({"org_id": a.org, "email": invitee.to_uppercase(), "group_ids": [a.group]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        r.json["invitation"]["delivery"]["status"], "sent",
        "{}",
        r.text
    );
    assert_eq!(r.json["invitation"]["delivery"]["attempts"], 1);

    let messages = sink.messages();
    assert_eq!(messages.len(), 1, "one message delivered");
    let message = &messages[0];
    assert!(
        message.contains(&format!("X-RcptTo: {invitee}")),
        "{message}"
    );
    assert!(message.contains("ai@acme.test"), "{message}");
    assert!(decoded(message).contains(&org_name), "{message}");
    let link = link_in(message);
    assert_eq!(token_of(&link), r.json["token"].as_str().unwrap());

    // The accept page: the organization, and a sign-in for the signed-out visitor.
    let p = page(&api, &link, None).await;
    assert_eq!(p.status, StatusCode::OK, "{}", p.text);
    assert!(
        p.text.contains(&org_name) && p.text.contains(&invitee),
        "{}",
        p.text
    );
    assert!(p.text.contains(r#"href="/signin""#), "{}", p.text);
    assert!(p.text.contains(r#"data-status="pending""#));

    // First sign-in with the verified address (dev mode's sign-in) joins the organization.
    assert!(
        api.stores
            .directory
            .find_user_by_email(&stratai_core::directory::Email::new(&invitee).unwrap())
            .await
            .unwrap()
            .is_none(),
        "no account before the first sign-in"
    );
    let token = api.token(&invitee).await;
    let me = api.get("/api/me", &token).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text);
    let members = api
        .get(&format!("/api/organizations/{}/members", a.org), &admin)
        .await;
    assert!(members.text.contains(&invitee), "joined: {}", members.text);
    let group = api
        .get(&format!("/api/groups/{}/members", a.group), &admin)
        .await;
    let user = api
        .stores
        .directory
        .find_user_by_email(&stratai_core::directory::Email::new(&invitee).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert!(
        group.text.contains(&user.id.to_string()),
        "joined the group: {}",
        group.text
    );

    // The link is used now: the page says so, the list shows it accepted.
    let p = page(&api, &link, None).await;
    assert!(p.text.contains("already used"), "{}", p.text);
    let list = api
        .get(&format!("/api/organizations/{}/invitations", a.org), &admin)
        .await;
    assert_eq!(status_of(&list.json, &invitee), "accepted");

    // Someone with an account already (org A's plain member is invited to org B): the
    // email's link, the page's form with the CSRF token from the HTML, joined once.
    let b = org_fixture(&api.stores, "globex").await;
    let b_admin = api.token(b.admin.email.as_str()).await;
    let r = api
        .post(
            "/api/invitations",
            &b_admin,
            json!({"org_id": b.org, "email": a.member.email.as_str()}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let messages = sink.messages();
    assert_eq!(messages.len(), 2);
    // The sink's file names do not sort by arrival within a second: found by recipient.
    let rcpt = format!("X-RcptTo: {}", a.member.email.as_str());
    let link = link_in(
        messages
            .iter()
            .find(|m| m.contains(&rcpt))
            .unwrap_or_else(|| panic!("no message to {rcpt}: {messages:?}")),
    );
    let cookie = session_cookie(&api, a.member.email.as_str()).await;
    let p = page(&api, &link, Some(&cookie)).await;
    assert_eq!(p.status, StatusCode::OK);
    assert!(
        p.text.contains(r#"method="post""#) && p.text.contains("Accept"),
        "{}",
        p.text
    );
    let csrf = csrf_in(&p.text);
    // Without the token, or from another site, the form is refused and nothing happens.
    let forged = post_form(&api, &link, &cookie, "forged").await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.text);
    assert!(
        api.stores
            .directory
            .get_member(b.org, a.member.id)
            .await
            .is_err()
    );
    let joined = post_form(&api, &link, &cookie, &csrf).await;
    assert_eq!(joined.status, StatusCode::OK, "{}", joined.text);
    assert!(joined.text.contains("You joined"), "{}", joined.text);
    api.stores
        .directory
        .get_member(b.org, a.member.id)
        .await
        .unwrap();
    let again = post_form(&api, &link, &cookie, &csrf).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert!(again.text.contains("already used"), "{}", again.text);
}
on_every_kind!(emailed_invitation_is_joined_at_first_sign_in);

/// A mail server that is down loses nothing: the invitation exists with a failed delivery
/// (shown by the API), and the retry, once the server is up, mails a fresh link that works
/// (the undelivered one no longer does).
async fn undelivered_invitations_are_kept_and_retried(kind: Kind) {
    let Some(python) = smtp_python() else { return };
    let port = free_port();
    let Some(api) = Api::start_with(
        kind,
        &[
            ("STRATAI_SMTP_URL", format!("smtp://127.0.0.1:{port}")),
            ("STRATAI_PUBLIC_URL", PUBLIC_URL.to_owned()),
        ],
    )
    .await
    else {
        return;
    };
    let a = org_fixture(&api.stores, "acme").await;
    let admin = api.token(a.admin.email.as_str()).await;
    let invitee = format!("later-{}@acme.test", unique());
    let r = api
        .post(
            "/api/invitations",
            &admin,
            json!({"org_id": a.org, "email": invitee}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        r.json["invitation"]["delivery"]["status"], "failed",
        "{}",
        r.text
    );
    assert!(
        r.json["invitation"]["delivery"]["last_error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );
    let first_token = r.json["token"].as_str().unwrap().to_owned();
    let list = api
        .get(&format!("/api/organizations/{}/invitations", a.org), &admin)
        .await;
    let listed = list
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["email"] == invitee.as_str())
        .unwrap();
    assert_eq!(listed["status"], "pending");
    assert_eq!(listed["delivery"]["status"], "failed");

    // Not due yet: this invitation is not attempted again (the fixture's own invitation,
    // queued, may be).
    let postman = api.state.mail().clone();
    let directory = api.stores.directory.clone();
    let mine = |list: Vec<Invitation>| {
        list.into_iter()
            .find(|i| i.email.as_str() == invitee)
            .unwrap()
    };
    postman
        .deliver_due(directory.as_ref(), Utc::now())
        .await
        .unwrap();
    let stored = mine(directory.list_invitations(a.org).await.unwrap());
    assert_eq!(stored.delivery.attempts, 1);
    assert_eq!(stored.delivery.status, DeliveryStatus::Failed);

    let sink = SmtpSink::start(&python, port);
    let later = Utc::now() + chrono::Duration::minutes(2);
    assert!(
        postman
            .deliver_due(directory.as_ref(), later)
            .await
            .unwrap()
            >= 1
    );
    let for_invitee = |messages: Vec<String>| -> Vec<String> {
        messages
            .into_iter()
            .filter(|m| m.contains(&invitee))
            .collect()
    };
    let received = for_invitee(sink.messages());
    assert_eq!(received.len(), 1, "{received:?}");
    let link = link_in(&received[0]);
    assert_ne!(token_of(&link), first_token, "a retry mails a fresh link");
    let old = api
        .send(
            Method::GET,
            &format!("/api/invitations/{first_token}"),
            None,
            None,
        )
        .await;
    assert_eq!(old.status, StatusCode::NOT_FOUND);
    let list = api
        .get(&format!("/api/organizations/{}/invitations", a.org), &admin)
        .await;
    let listed = list
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["email"] == invitee.as_str())
        .unwrap();
    assert_eq!(listed["delivery"]["status"], "sent");
    postman
        .deliver_due(directory.as_ref(), later + chrono::Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(for_invitee(sink.messages()).len(), 1, "sent once");
    let p = page(&api, &link, None).await;
    assert_eq!(p.status, StatusCode::OK, "the mailed link works");
    let token = api.token(&invitee).await;
    assert_eq!(api.get("/api/me", &token).await.status, StatusCode::OK);
    api.stores
        .directory
        .get_member(
            a.org,
            api.stores
                .directory
                .find_user_by_email(&stratai_core::directory::Email::new(&invitee).unwrap())
                .await
                .unwrap()
                .unwrap()
                .id,
        )
        .await
        .unwrap();
}
on_every_kind!(undelivered_invitations_are_kept_and_retried);

/// One pending invitation per address and organization, whatever the case: inviting again
/// resends it (same invitation, new link and expiry, a new mail); revoke; the list and the
/// accept page show pending, accepted, expired and revoked.
async fn reinvite_resends_revoke_and_statuses(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let admin = api.token(a.admin.email.as_str()).await;
    let n = unique();
    let ann = format!("ann-{n}@acme.test");
    let first = api
        .post(
            &format!("/api/organizations/{}/members", a.org),
            &admin,
            json!({"email": ann.to_uppercase(), "valid_for_days": 1}),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text);
    assert_eq!(first.json["resent"], false);
    assert_eq!(first.json["invitation"]["delivery"]["status"], "sent");
    let again = api
        .post(
            "/api/invitations",
            &admin,
            json!({"org_id": a.org, "email": ann, "role": "admin", "valid_for_days": 7}),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.json["resent"], true);
    assert_eq!(
        again.json["invitation"]["id"],
        first.json["invitation"]["id"]
    );
    assert_eq!(again.json["invitation"]["role"], "admin");
    let (e1, e2) = (
        first.json["invitation"]["expires_at"].as_str().unwrap(),
        again.json["invitation"]["expires_at"].as_str().unwrap(),
    );
    assert!(e2 > e1, "expiry extended: {e1} -> {e2}");
    let old_token = first.json["token"].as_str().unwrap();
    let new_token = again.json["token"].as_str().unwrap();
    assert_ne!(old_token, new_token);
    let old = page(&api, &format!("/invitations/{old_token}"), None).await;
    assert_eq!(old.status, StatusCode::NOT_FOUND, "the old link is dead");
    let mails: Vec<String> = dev_mailbox(&api)
        .into_iter()
        .filter(|m| m.contains(&ann))
        .collect();
    assert_eq!(mails.len(), 2, "each invitation is mailed");
    assert!(decoded(&mails[1]).contains(&format!("/invitations/{new_token}")));
    let list = api
        .get(&format!("/api/organizations/{}/invitations", a.org), &admin)
        .await;
    let anns: Vec<&Value> = list
        .json
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["email"] == ann.as_str())
        .collect();
    assert_eq!(anns.len(), 1, "one invitation per address: {}", list.text);
    assert_eq!(anns[0]["status"], "pending");

    // Revoke: the list and the page say so; the link accepts nothing.
    let id = again.json["invitation"]["id"].as_str().unwrap();
    let member = api.token(a.member.email.as_str()).await;
    let r = api
        .delete(
            &format!("/api/organizations/{}/invitations/{id}", a.org),
            &member,
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "a member may not revoke");
    let r = api
        .delete(
            &format!("/api/organizations/{}/invitations/{id}", a.org),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    let r = api
        .delete(
            &format!("/api/organizations/{}/invitations/{id}", a.org),
            &admin,
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "revoked once: {}", r.text);
    let list = api
        .get(&format!("/api/organizations/{}/invitations", a.org), &admin)
        .await;
    assert_eq!(status_of(&list.json, &ann), "revoked");
    let p = page(&api, &format!("/invitations/{new_token}"), None).await;
    assert!(p.text.contains("was revoked"), "{}", p.text);
    let accepted = api
        .send(
            Method::POST,
            &format!("/api/invitations/{new_token}/accept"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(accepted.status, StatusCode::CONFLICT);

    // After a revocation, inviting again makes a new invitation.
    let third = api
        .post(
            "/api/invitations",
            &admin,
            json!({"org_id": a.org, "email": ann}),
        )
        .await;
    assert_eq!(third.status, StatusCode::CREATED, "{}", third.text);
    assert_ne!(
        third.json["invitation"]["id"],
        again.json["invitation"]["id"]
    );

    // Expired: overdue pending invitations show as expired, on the list and on the page.
    let bob = stratai_core::directory::Email::new(format!("bob-{n}@acme.test")).unwrap();
    let (invitation, token) = Invitation::issue(
        InvitationRequest {
            email: bob.clone(),
            org_id: a.org,
            role: OrgRole::Member,
            group_ids: vec![],
            profile_id: None,
            invited_by: None,
            valid_for: chrono::Duration::days(1),
        },
        Utc::now() - chrono::Duration::days(2),
    )
    .unwrap();
    api.stores
        .directory
        .create_invitation(a.org, &invitation)
        .await
        .unwrap();
    let list = api
        .get(&format!("/api/organizations/{}/invitations", a.org), &admin)
        .await;
    assert_eq!(status_of(&list.json, bob.as_str()), "expired");
    let p = page(&api, &format!("/invitations/{}", token.expose()), None).await;
    assert!(p.text.contains("expired"), "{}", p.text);
    // An expired invitation is not joined at sign-in (and gives no account).
    let r = api
        .send(
            Method::POST,
            "/auth/dev/token",
            None,
            Some(json!({"email": bob.as_str()})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    // Inviting the address again renews the overdue invitation rather than duplicating it.
    let renewed = api
        .post(
            "/api/invitations",
            &admin,
            json!({"org_id": a.org, "email": bob.as_str()}),
        )
        .await;
    assert_eq!(renewed.status, StatusCode::OK, "{}", renewed.text);
    assert_eq!(renewed.json["invitation"]["id"], invitation.id.to_string());
    assert_eq!(renewed.json["invitation"]["status"], "pending");

    // An unknown token: the page answers like the API (404).
    let p = page(&api, &format!("/invitations/{}", "0".repeat(64)), None).await;
    assert_eq!(p.status, StatusCode::NOT_FOUND);
    // Someone already a member is not invited.
    let r = api
        .post(
            "/api/invitations",
            &admin,
            json!({"org_id": a.org, "email": a.member.email.as_str()}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert!(r.text.contains("`email`"), "{}", r.text);
}
on_every_backend!(reinvite_resends_revoke_and_statuses);

/// The seed's internal pilot: 50 people in one CSV with role, groups and profile columns.
/// One bad row is named with its row and line and nothing is written; fixed, all 50 are
/// invited and mailed, with their groups and profile.
async fn fifty_person_pilot_is_all_or_nothing(api: Api) {
    let a = org_fixture(&api.stores, "pilot").await;
    let admin = api.token(a.admin.email.as_str()).await;
    let profile = UserProfile::new(
        &format!("Internal {}", unique()),
        vec![stratai_core::TierSlug::new("standard").unwrap()],
        ProfileAvailability::All,
        Utc::now(),
    )
    .unwrap();
    api.stores.directory.create_profile(&profile).await.unwrap();
    let group_name = api
        .stores
        .directory
        .get_group(a.org, a.group)
        .await
        .unwrap()
        .name;
    let n = unique();
    let rows = |bad: bool| {
        let mut text = "email,role,groups,profile\n".to_owned();
        for i in 1..=50 {
            let role = if i <= 2 { "admin" } else { "member" };
            let groups = if bad && i == 37 {
                "No Such Team".to_owned()
            } else {
                group_name.to_lowercase()
            };
            let profile = if i % 2 == 0 {
                profile.name.clone()
            } else {
                String::new()
            };
            text.push_str(&format!(
                "pilot{i}-{n}@acme.test,{role},{groups},{profile}\n"
            ));
        }
        text
    };
    let csv = |body: String| {
        Request::post(format!("/api/organizations/{}/members", a.org))
            .header("authorization", format!("Bearer {admin}"))
            .header("content-type", "text/csv")
            .body(Body::from(body))
            .unwrap()
    };
    let before = api
        .stores
        .directory
        .list_invitations(a.org)
        .await
        .unwrap()
        .len();
    let r = api.raw(csv(rows(true))).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    let fields = r.json["error"]["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 1, "{}", r.text);
    assert_eq!(fields[0]["path"], "rows[37].groups");
    assert!(
        fields[0]["message"]
            .as_str()
            .unwrap()
            .starts_with("line 38:"),
        "{}",
        r.text
    );
    assert_eq!(
        api.stores
            .directory
            .list_invitations(a.org)
            .await
            .unwrap()
            .len(),
        before,
        "nothing half-applied"
    );
    assert!(dev_mailbox(&api).is_empty(), "nothing mailed");

    let r = api.raw(csv(rows(false))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["created"], 50);
    assert_eq!(r.json["rows"].as_array().unwrap().len(), 50);
    assert_eq!(r.json["rows"][36]["line"], 38);
    let invitations = api.stores.directory.list_invitations(a.org).await.unwrap();
    assert_eq!(invitations.len(), before + 50);
    let pilots: Vec<&Invitation> = invitations
        .iter()
        .filter(|i| i.email.as_str().ends_with(&format!("-{n}@acme.test")))
        .collect();
    assert_eq!(pilots.len(), 50);
    assert!(pilots.iter().all(|i| i.group_ids == vec![a.group]));
    assert_eq!(
        pilots.iter().filter(|i| i.role == OrgRole::Admin).count(),
        2
    );
    assert_eq!(
        pilots
            .iter()
            .filter(|i| i.profile_id == Some(profile.id))
            .count(),
        25
    );
    assert_eq!(dev_mailbox(&api).len(), 50, "every pilot is mailed");

    // Uploading the same file again resends (renews) every pending invitation, writing no
    // second invitation for anyone.
    let r = api.raw(csv(rows(false))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["resent"], 50);
    assert_eq!(r.json["created"], 0);
    assert_eq!(
        api.stores
            .directory
            .list_invitations(a.org)
            .await
            .unwrap()
            .len(),
        before + 50
    );
    // A bad profile and an unknown column are named too.
    let r = api
        .raw(csv(format!("email,profile\nx-{n}@acme.test,Nobody\n")))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.json["error"]["fields"][0]["path"], "rows[1].profile");
    let r = api
        .raw(csv(format!("email,team\nx-{n}@acme.test,a\n")))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text.contains("unknown column"), "{}", r.text);
}
on_every_backend!(fifty_person_pilot_is_all_or_nothing);

/// Onboarding B: off unless the platform names a domain; then verified people of that domain
/// join at first sign-in as members with the default tier. An org admin cannot set it.
async fn self_signup_domains_take_people_in(api: Api) {
    let a = org_fixture(&api.stores, "acme").await;
    let n = unique();
    let domain = format!("signup-{n}.test");
    let person = format!("walk-in@{domain}");
    let dev = |email: &str| {
        api.send(
            Method::POST,
            "/auth/dev/token",
            None,
            Some(json!({"email": email})),
        )
    };
    assert_eq!(
        dev(&person).await.status,
        StatusCode::NOT_FOUND,
        "off by default"
    );

    let org = api.stores.directory.get_org(a.org).await.unwrap();
    let mut settings = serde_json::to_value(&org.settings).unwrap();
    settings["signup_domains"] = json!([domain]);
    let admin = api.token(a.admin.email.as_str()).await;
    let r = api
        .patch(
            &format!("/api/organizations/{}", a.org),
            &admin,
            json!({"settings": settings}),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert!(r.text.contains("signup_domains"), "{}", r.text);
    let root = api.token("admin@localhost").await;
    let mut bad = settings.clone();
    bad["signup_domains"] = json!(["*.example.com"]);
    let r = api
        .patch(
            &format!("/api/organizations/{}", a.org),
            &root,
            json!({"settings": bad}),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert!(r.text.contains("settings.signup_domains[0]"), "{}", r.text);
    let r = api
        .patch(
            &format!("/api/organizations/{}", a.org),
            &root,
            json!({"settings": settings}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let r = dev(&person.to_uppercase()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let user = api
        .stores
        .directory
        .find_user_by_email(&stratai_core::directory::Email::new(&person).unwrap())
        .await
        .unwrap()
        .unwrap();
    let membership = api
        .stores
        .directory
        .get_member(a.org, user.id)
        .await
        .unwrap();
    assert_eq!(membership.role, OrgRole::Member);
    assert_eq!(
        membership.allowed_tiers,
        Some(vec![org.settings.default_tier.clone()])
    );
    // Another domain, and a subdomain, still need an invitation.
    assert_eq!(
        dev(&format!("x@other-{n}.test")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        dev(&format!("x@eu.{domain}")).await.status,
        StatusCode::NOT_FOUND
    );
}
on_every_backend!(self_signup_domains_take_people_in);

/// Flow A with an identity provider: the first bearer token of a verified email joins the
/// pending invitation; an unverified one neither creates the user nor joins.
async fn oidc_first_sign_in_with_a_verified_email_joins(kind: Kind) {
    let Some((stores, _guard)) = stores(kind).await else {
        return;
    };
    let issuer = harness::TestIssuer::start().await;
    let scratch = Scratch::new();
    let env: std::collections::HashMap<String, String> = [
        ("OIDC_ISSUER", issuer.issuer.clone()),
        ("OIDC_AUDIENCE", harness::AUDIENCE.to_owned()),
        (
            "STRATAI_MAILBOX_DIR",
            scratch.join("mailbox").display().to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let config = stratai_server::config::Config::from_parts(
        stratai_server::config::FileConfig::default(),
        &env,
    )
    .unwrap();
    let backends = stratai_server::server::Backends::seeded(stores.clone(), &config)
        .await
        .unwrap();
    let state = stratai_server::server::build_state(&config, backends).unwrap();
    let app = stratai_server::app::router(state.clone(), stratai_server::server::limits(&config));
    let a = org_fixture(&stores, "acme").await;
    let n = unique();
    let invitee = format!("oidc-{n}@acme.test");
    let (invitation, _token) = Invitation::issue(
        InvitationRequest {
            email: stratai_core::directory::Email::new(&invitee).unwrap(),
            org_id: a.org,
            role: OrgRole::Member,
            group_ids: vec![a.group],
            profile_id: None,
            invited_by: Some(a.admin.id),
            valid_for: chrono::Duration::days(7),
        },
        Utc::now(),
    )
    .unwrap();
    stores
        .directory
        .create_invitation(a.org, &invitation)
        .await
        .unwrap();

    let unverified = issuer.mint(&issuer.claims(
        &format!("auth0|spoof-{n}"),
        json!({"email": invitee, "email_verified": false}),
    ));
    let r = harness::get_me(&app, &unverified).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let email = stratai_core::directory::Email::new(&invitee).unwrap();
    assert!(
        stores
            .directory
            .find_user_by_email(&email)
            .await
            .unwrap()
            .is_none()
    );

    let verified = issuer.mint(&issuer.claims(
        &format!("auth0|real-{n}"),
        json!({"email": invitee.to_uppercase(), "email_verified": true}),
    ));
    let r = harness::get_me(&app, &verified).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let user = stores
        .directory
        .find_user_by_email(&email)
        .await
        .unwrap()
        .unwrap();
    let membership = stores.directory.get_member(a.org, user.id).await.unwrap();
    assert_eq!(membership.role, OrgRole::Member);
    assert!(
        stores
            .directory
            .groups_of_member(a.org, user.id)
            .await
            .unwrap()
            .iter()
            .any(|(g, _)| g.id == a.group)
    );
    let stored = stores
        .directory
        .list_invitations(a.org)
        .await
        .unwrap()
        .into_iter()
        .find(|i| i.id == invitation.id)
        .unwrap();
    assert_eq!(
        stored.status,
        stratai_core::directory::InvitationStatus::Accepted
    );
}
on_every_kind!(oidc_first_sign_in_with_a_verified_email_joins);
