//! What happens to people beyond a single store write, over core's ports: joining at sign-in
//! (the seed's onboarding flows), who signs in (an identity provider's subject linked to a
//! user, see [`identity`]), what a profile gives a member (its tiers and default guardrails as
//! member rules), inviting people (one, or a CSV in bulk) and emailing their invitations
//! (through SMTP or a mailbox folder with the `mail` feature, see `mail`), and checking a
//! request's credentials (OIDC and dev tokens, the browser login, sessions: the `signin`
//! feature, see `signin`). Every service that manages people runs these, so they live here
//! rather than in one binary.

pub mod delivery;
pub mod identity;
pub mod invitations;
#[cfg(feature = "mail")]
pub mod mail;
pub mod onboarding;
pub mod profiles;
#[cfg(feature = "signin")]
pub mod signin;
