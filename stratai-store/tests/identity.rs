#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Sign-in's view of the people (`stratai_store::people::identity`) on the memory store: a
//! first login creates the user and links the provider's subject, a second finds it, an email
//! linked to another subject is refused, pending invitations are joined at the first sign-in
//! and at later ones, and an organization requiring MFA is named.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use stratai_core::OrgId;
use stratai_core::directory::{Email, PlatformRole, User};
use stratai_core::mail::{MailError, MailMessage, Mailer};
use stratai_store::Stores;
use stratai_store::people::delivery::Postman;
use stratai_store::people::identity::{Identities, IdentityError, LoginIdentity};
use stratai_store::people::invitations::{self, Invite, Inviter};

/// A mailer that accepts every message and keeps none.
struct Discard;

#[async_trait]
impl Mailer for Discard {
    async fn send(&self, _message: &MailMessage) -> Result<(), MailError> {
        Ok(())
    }

    fn describe(&self) -> String {
        "nowhere".to_owned()
    }
}

struct World {
    stores: Stores,
    identities: Identities,
    /// The seeded internal organization.
    org: OrgId,
    /// Its owner, the super admin.
    admin: User,
}

async fn world() -> World {
    let stores = Stores::memory();
    let seeded = stratai_store::seed::seed(&stores, "admin@acme.test")
        .await
        .unwrap();
    World {
        identities: Identities::over(&stores),
        stores,
        org: seeded.internal_org.id,
        admin: seeded.super_admin,
    }
}

impl World {
    async fn invite(&self, email: &str) {
        let postman = Postman::new(Arc::new(Discard), "https://ai.acme.test/".parse().unwrap());
        let inviter = Inviter {
            id: self.admin.id,
            may_invite_owners: false,
        };
        let invite = Invite {
            email: email.to_owned(),
            ..Invite::default()
        };
        invitations::invite(
            self.stores.directory.as_ref(),
            &postman,
            inviter,
            self.org,
            &invite,
        )
        .await
        .unwrap();
    }

    async fn is_member(&self, user: &User) -> bool {
        self.stores
            .directory
            .memberships_of_user(user.id)
            .await
            .unwrap()
            .iter()
            .any(|m| m.org_id == self.org)
    }
}

fn identity(subject: &str, email: &str) -> LoginIdentity {
    LoginIdentity {
        subject: subject.to_owned(),
        email: email.to_owned(),
        name: Some("Ann Example".to_owned()),
    }
}

#[tokio::test]
async fn a_first_login_creates_the_user_and_a_second_finds_it() {
    let w = world().await;
    let ann = identity("auth0|ann", "ann@example.test");
    assert!(
        w.identities
            .find_by_subject("auth0|ann")
            .await
            .unwrap()
            .is_none()
    );

    let first = w.identities.login(&ann, Utc::now()).await.unwrap();
    assert_eq!(first.email.as_str(), "ann@example.test");
    assert_eq!(first.oidc_subject.as_deref(), Some("auth0|ann"));
    assert_eq!(first.platform_role, PlatformRole::User);
    assert!(first.active && first.last_login_at.is_some());
    assert!(!w.is_member(&first).await, "nobody invited ann");

    let second = w.identities.login(&ann, Utc::now()).await.unwrap();
    assert_eq!(second.id, first.id);
    let by_subject = w.identities.find_by_subject("auth0|ann").await;
    assert_eq!(by_subject.unwrap().unwrap().id, first.id);
    let by_email = w.identities.find_by_email("ann@example.test").await;
    assert_eq!(by_email.unwrap().unwrap().id, first.id);
    assert_eq!(
        w.identities.find_by_id(first.id).await.unwrap().unwrap().id,
        first.id
    );
    assert!(
        w.identities
            .find_by_email("not an address")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_existing_user_is_linked_once_and_another_subject_is_refused() {
    let w = world().await;
    // The seeded super admin has no subject yet: their first login links it.
    let admin = identity("auth0|admin", "admin@acme.test");
    let linked = w.identities.login(&admin, Utc::now()).await.unwrap();
    assert_eq!(linked.id, w.admin.id);
    assert_eq!(linked.platform_role, PlatformRole::SuperAdmin);

    let intruder = identity("other|admin", "admin@acme.test");
    let refused = w.identities.login(&intruder, Utc::now()).await.unwrap_err();
    assert!(
        matches!(&refused, IdentityError::Conflict(m) if m.contains("linked to another identity")),
        "{refused:?}"
    );
    assert!(
        w.identities
            .find_by_subject("other|admin")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn an_invitation_is_joined_at_the_first_sign_in() {
    let w = world().await;
    assert!(
        !w.identities
            .is_invited("bob@example.test", Utc::now())
            .await
            .unwrap()
    );
    w.invite("bob@example.test").await;
    assert!(
        w.identities
            .is_invited("bob@example.test", Utc::now())
            .await
            .unwrap()
    );

    let bob = w
        .identities
        .login(&identity("auth0|bob", "bob@example.test"), Utc::now())
        .await
        .unwrap();
    assert!(w.is_member(&bob).await);
}

#[tokio::test]
async fn an_invitation_sent_later_is_joined_at_the_next_sign_in() {
    let w = world().await;
    let cy = w
        .identities
        .login(&identity("auth0|cy", "cy@example.test"), Utc::now())
        .await
        .unwrap();
    w.invite("cy@example.test").await;
    assert!(!w.is_member(&cy).await);

    w.identities.signed_in(cy.id, Utc::now()).await.unwrap();
    assert!(w.is_member(&cy).await);

    // A deactivated person's sign-in joins nothing and records nothing.
    let mut dee = User::new(
        Email::new("dee@example.test").unwrap(),
        None,
        PlatformRole::User,
        Utc::now(),
    )
    .unwrap();
    dee.active = false;
    w.stores.directory.create_user(&dee).await.unwrap();
    w.invite("dee@example.test").await;
    w.identities.signed_in(dee.id, Utc::now()).await.unwrap();
    assert!(!w.is_member(&dee).await);
}

#[tokio::test]
async fn an_organization_requiring_mfa_is_named() {
    let w = world().await;
    assert_eq!(
        w.identities.mfa_required_by(w.admin.id).await.unwrap(),
        None
    );

    let mut org = w.stores.directory.get_org(w.org).await.unwrap();
    org.settings.require_mfa = true;
    w.stores.directory.update_org(&org).await.unwrap();
    assert_eq!(
        w.identities.mfa_required_by(w.admin.id).await.unwrap(),
        Some(org.name.clone())
    );

    // Not while the organization is deactivated.
    org.active = false;
    w.stores.directory.update_org(&org).await.unwrap();
    assert_eq!(
        w.identities.mfa_required_by(w.admin.id).await.unwrap(),
        None
    );
}
