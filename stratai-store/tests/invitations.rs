#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The invitation service of `stratai_store::people` on the memory store, without HTTP: its
//! refusals name the field (with the bulk CSV's row and line), inviting an address again
//! renews its pending invitation, a bulk CSV is all or nothing, the accept is single use,
//! and an undelivered email is kept and retried with a fresh link.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{Duration, Utc};
use stratai_core::OpError;
use stratai_core::directory::{
    DeliveryStatus, Email, Group, InvitationStatus, Membership, OrgRole, PlatformRole, User,
};
use stratai_core::mail::{MailError, MailMessage, Mailer};
use stratai_core::{GroupId, OrgId, ProfileId};
use stratai_store::Stores;
use stratai_store::people::delivery::Postman;
use stratai_store::people::invitations::{self, Invite, Inviter};

/// A mailer keeping every message, or refusing all while `down`.
#[derive(Default)]
struct Outbox {
    sent: Mutex<Vec<MailMessage>>,
    down: Mutex<bool>,
}

#[async_trait]
impl Mailer for Outbox {
    async fn send(&self, message: &MailMessage) -> Result<(), MailError> {
        if *self.down.lock().unwrap() {
            return Err(MailError::Transport("connection refused".to_owned()));
        }
        self.sent.lock().unwrap().push(message.clone());
        Ok(())
    }

    fn describe(&self) -> String {
        "a test outbox".to_owned()
    }
}

impl Outbox {
    fn count(&self) -> usize {
        self.sent.lock().unwrap().len()
    }

    fn last_body(&self) -> String {
        self.sent.lock().unwrap().last().unwrap().body.clone()
    }
}

struct World {
    stores: Stores,
    outbox: Arc<Outbox>,
    postman: Postman,
    org: OrgId,
    group: GroupId,
    admin: Inviter,
}

/// The seeded memory store (the internal pilot, its owner the super admin) with one group.
async fn world() -> World {
    let stores = Stores::memory();
    let seeded = stratai_store::seed::seed(&stores, "admin@acme.test")
        .await
        .unwrap();
    let org = seeded.internal_org.id;
    let group = Group::new(org, "Research", Utc::now()).unwrap();
    stores.directory.create_group(org, &group).await.unwrap();
    let outbox = Arc::new(Outbox::default());
    let postman = Postman::new(outbox.clone(), "https://ai.acme.test/".parse().unwrap());
    World {
        stores,
        outbox,
        postman,
        org,
        group: group.id,
        admin: Inviter {
            id: seeded.super_admin.id,
            may_invite_owners: false,
        },
    }
}

fn invite(email: &str) -> Invite {
    Invite {
        email: email.to_owned(),
        ..Invite::default()
    }
}

/// The invalid fields of a refusal, as `(path, reason)`.
fn fields(e: OpError) -> Vec<(String, String)> {
    match e {
        OpError::Invalid(fields) => fields.into_iter().map(|f| (f.field, f.reason)).collect(),
        other => panic!("expected invalid fields, got {other:?}"),
    }
}

fn paths(fields: &[(String, String)]) -> Vec<&str> {
    fields.iter().map(|(p, _)| p.as_str()).collect()
}

#[tokio::test]
async fn every_invalid_field_is_named_under_its_prefix() {
    let w = world().await;
    let spec = Invite {
        email: "not an address".to_owned(),
        role: Some(OrgRole::Owner),
        group_ids: vec![w.group, GroupId::new()],
        profile_id: Some(ProfileId::new()),
        valid_for_days: Some(31),
    };
    let errors = invitations::validate(
        w.stores.directory.as_ref(),
        w.admin,
        w.org,
        &spec,
        "rows[3].",
    )
    .await
    .unwrap_err();
    let got: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        got,
        [
            "rows[3].email",
            "rows[3].role",
            "rows[3].group_ids[1]",
            "rows[3].profile_id",
            "rows[3].valid_for_days"
        ]
    );
    assert!(errors[1].reason.contains("only an owner may invite owners"));

    // An owner may invite owners; the request carries the defaults and the inviter.
    let owner = Inviter {
        may_invite_owners: true,
        ..w.admin
    };
    let ok = Invite {
        email: "Ann@Acme.test".to_owned(),
        role: Some(OrgRole::Owner),
        ..Invite::default()
    };
    let request = invitations::validate(w.stores.directory.as_ref(), owner, w.org, &ok, "")
        .await
        .unwrap();
    assert_eq!(
        request.valid_for,
        Duration::days(invitations::DEFAULT_VALID_DAYS)
    );
    assert_eq!(request.invited_by, Some(owner.id));

    // The service refuses with the same paths, without a prefix, and writes nothing.
    let refused = invitations::invite(
        w.stores.directory.as_ref(),
        &w.postman,
        w.admin,
        w.org,
        &spec,
    )
    .await
    .unwrap_err();
    assert_eq!(
        paths(&fields(refused)),
        [
            "email",
            "role",
            "group_ids[1]",
            "profile_id",
            "valid_for_days"
        ]
    );
    assert!(
        w.stores
            .directory
            .list_invitations(w.org)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(w.outbox.count(), 0);
}

#[tokio::test]
async fn inviting_again_renews_the_pending_invitation() {
    let w = world().await;
    let dir = w.stores.directory.as_ref();
    let first = invitations::invite(dir, &w.postman, w.admin, w.org, &invite("ann@acme.test"))
        .await
        .unwrap();
    assert!(!first.renewed);
    assert_eq!(first.invitation.delivery.status, DeliveryStatus::Sent);
    assert!(w.outbox.last_body().contains(&format!(
        "https://ai.acme.test/invitations/{}",
        first.token.expose()
    )));

    let again = Invite {
        email: "ANN@acme.test".to_owned(),
        role: Some(OrgRole::Admin),
        ..Invite::default()
    };
    let second = invitations::invite(dir, &w.postman, w.admin, w.org, &again)
        .await
        .unwrap();
    assert!(second.renewed, "the pending invitation is renewed");
    assert_eq!(second.invitation.id, first.invitation.id);
    assert_eq!(second.invitation.role, OrgRole::Admin);
    assert_ne!(second.token, first.token, "a renewal has a fresh link");
    assert_eq!(w.outbox.count(), 2, "each invitation is mailed");
    let listed = dir.list_invitations(w.org).await.unwrap();
    assert_eq!(listed.len(), 1, "no duplicate: {listed:?}");

    // The old link is dead, the new one joins once; a member is not invited again.
    assert!(matches!(
        invitations::find(dir, first.token.expose()).await,
        Err(OpError::NotFound(_))
    ));
    assert!(matches!(
        invitations::find(dir, "not-a-token").await,
        Err(OpError::NotFound(_))
    ));
    let ann = User::new(
        Email::new("ann@acme.test").unwrap(),
        None,
        PlatformRole::User,
        Utc::now(),
    )
    .unwrap();
    dir.create_user(&ann).await.unwrap();
    let guardrails = w.stores.guardrails.as_ref();
    let joined = invitations::accept(dir, guardrails, second.token.expose(), &ann, Utc::now())
        .await
        .unwrap();
    assert_eq!((joined.org_id, joined.role), (w.org, OrgRole::Admin));
    assert!(matches!(
        invitations::accept(dir, guardrails, second.token.expose(), &ann, Utc::now()).await,
        Err(OpError::Conflict(_))
    ));
    let (shown, org) = invitations::lookup(dir, second.token.expose(), Utc::now())
        .await
        .unwrap();
    assert_eq!((shown.status, org.id), (InvitationStatus::Accepted, w.org));
    let refused = invitations::invite(dir, &w.postman, w.admin, w.org, &invite("ann@acme.test"))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, OpError::Conflict(m) if m.contains("already exists")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_bulk_csv_with_a_bad_row_writes_nothing_and_names_each_row() {
    let w = world().await;
    let dir = w.stores.directory.as_ref();
    let csv = "email,role,groups\n\
               ok@acme.test,member,Research\n\
               bad@acme.test,boss,\n\
               far@acme.test,,Nowhere\n\
               not-an-email,,\n\
               ok@acme.test,,\n";
    let refused = invitations::bulk_invite(dir, &w.postman, w.admin, w.org, csv, &|_, _| {})
        .await
        .unwrap_err();
    let fields = fields(refused);
    assert_eq!(
        paths(&fields),
        [
            "rows[2].role",
            "rows[3].groups",
            "rows[4].email",
            "rows[5].email"
        ]
    );
    assert!(
        fields[0].1.starts_with("line 3: unknown role `boss`"),
        "{fields:?}"
    );
    assert!(
        fields[1].1.starts_with("line 4: unknown group `Nowhere`"),
        "{fields:?}"
    );
    assert!(fields[2].1.starts_with("line 5: "), "{fields:?}");
    assert!(fields[3].1.contains("appears twice"), "{fields:?}");
    assert!(
        dir.list_invitations(w.org).await.unwrap().is_empty(),
        "nothing written"
    );
    assert_eq!(w.outbox.count(), 0, "nothing mailed");

    // The file as a whole: an unknown column, no email column, no rows.
    for (text, why) in [
        ("email,team\na@acme.test,x\n", "unknown column `team`"),
        ("role\nmember\n", "`email` column"),
        ("email\n", "no data rows"),
    ] {
        let fields = refused_fields(
            invitations::bulk_invite(dir, &w.postman, w.admin, w.org, text, &|_, _| {}).await,
        );
        assert_eq!(paths(&fields), ["csv"], "{text:?}");
        assert!(fields[0].1.contains(why), "{text:?}: {fields:?}");
    }
}

fn refused_fields<T: std::fmt::Debug>(result: Result<T, OpError>) -> Vec<(String, String)> {
    fields(result.unwrap_err())
}

#[tokio::test]
async fn a_bulk_csv_creates_renews_and_skips_members() {
    let w = world().await;
    let dir = w.stores.directory.as_ref();
    // bea has a pending invitation; cid is already a member.
    let bea = invitations::invite(dir, &w.postman, w.admin, w.org, &invite("bea@acme.test"))
        .await
        .unwrap();
    let cid = User::new(
        Email::new("cid@acme.test").unwrap(),
        None,
        PlatformRole::User,
        Utc::now(),
    )
    .unwrap();
    dir.create_user(&cid).await.unwrap();
    dir.add_member(
        w.org,
        &Membership::new(w.org, cid.id, OrgRole::Member, Utc::now()),
    )
    .await
    .unwrap();

    let csv = "Email,Groups,Profile\n\
               ann@acme.test,research,External Contractor\n\
               bea@acme.test,,\n\
               cid@acme.test,,\n";
    let seen = Mutex::new(Vec::new());
    let outcome = invitations::bulk_invite(dir, &w.postman, w.admin, w.org, csv, &|done, total| {
        seen.lock().unwrap().push((done, total));
    })
    .await
    .unwrap();
    assert_eq!(
        (outcome.created, outcome.resent, outcome.already_member),
        (1, 1, 1)
    );
    let statuses: Vec<&str> = outcome.rows.iter().map(|r| r.status()).collect();
    assert_eq!(statuses, ["created", "resent", "already_member"]);
    assert_eq!(
        outcome
            .rows
            .iter()
            .map(|r| (r.row, r.line))
            .collect::<Vec<_>>(),
        [(1, 2), (2, 3), (3, 4)]
    );
    let ann = outcome.rows[0].invited.as_ref().unwrap();
    assert_eq!(ann.invitation.group_ids, [w.group]);
    assert!(ann.invitation.profile_id.is_some());
    let renewed = outcome.rows[1].invited.as_ref().unwrap();
    assert_eq!(renewed.invitation.id, bea.invitation.id);
    assert_eq!(*seen.lock().unwrap(), [(1, 3), (2, 3), (3, 3)]);
    assert_eq!(
        w.outbox.count(),
        3,
        "bea's first mail, then ann's and bea's"
    );
    assert_eq!(dir.list_invitations(w.org).await.unwrap().len(), 2);
}

#[tokio::test]
async fn an_undelivered_invitation_is_kept_and_retried_with_a_fresh_link() {
    let w = world().await;
    let dir = w.stores.directory.as_ref();
    *w.outbox.down.lock().unwrap() = true;
    let issued = invitations::invite(dir, &w.postman, w.admin, w.org, &invite("dan@acme.test"))
        .await
        .unwrap();
    assert_eq!(issued.invitation.delivery.status, DeliveryStatus::Failed);
    assert!(issued.invitation.delivery.last_error.is_some());
    let stored = &dir.list_invitations(w.org).await.unwrap()[0];
    assert_eq!(
        (stored.delivery.status, stored.delivery.attempts),
        (DeliveryStatus::Failed, 1),
        "the failure is recorded"
    );

    *w.outbox.down.lock().unwrap() = false;
    let later = Utc::now() + Duration::hours(2);
    assert_eq!(w.postman.deliver_due(dir, later).await.unwrap(), 1);
    let body = w.outbox.last_body();
    assert!(
        !body.contains(issued.token.expose()),
        "a retry mails a fresh link"
    );
    let token = body
        .split("/invitations/")
        .nth(1)
        .unwrap()
        .chars()
        .take(64)
        .collect::<String>();
    assert_eq!(
        invitations::find(dir, &token).await.unwrap().id,
        issued.invitation.id
    );
    assert_eq!(
        w.postman.deliver_due(dir, later).await.unwrap(),
        0,
        "delivered now"
    );
}
