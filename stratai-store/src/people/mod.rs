//! What happens to people beyond a single store write, over core's ports: joining at sign-in
//! (the seed's onboarding flows) and what a profile gives a member (its tiers and default
//! guardrails as member rules). Every service that manages people runs these, so they live
//! here rather than in one binary.

pub mod onboarding;
pub mod profiles;
