//! What happens to people beyond a single store write, over core's ports: joining at sign-in
//! (the seed's onboarding flows), what a profile gives a member (its tiers and default
//! guardrails as member rules), inviting people (one, or a CSV in bulk) and emailing their
//! invitations. Every service that manages people runs these, so they live here rather than
//! in one binary.

pub mod delivery;
pub mod invitations;
pub mod onboarding;
pub mod profiles;
