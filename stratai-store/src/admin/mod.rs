//! The administration's services over core's ports: what the admin API does beyond deciding
//! who may ask (which stays with the HTTP layer). Each refuses with [`stratai_core::OpError`],
//! so an embedder running the same service gets the same refusals as the server.

pub mod audit;
pub mod billing;
pub mod budgets;
pub mod groups;
pub mod members;
pub mod orgs;
pub mod profiles;
pub mod tiers;
pub mod usage;
pub mod users;
