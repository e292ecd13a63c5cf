//! The authenticated caller. Who a verified identity is (linking, creating and onboarding
//! users at sign-in) is [`stratai_store::people::identity::Identities`]'s.

use stratai_core::directory::{PlatformRole, User};
use uuid::Uuid;

/// The authenticated caller, as the rest of the server sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// StratAI user id.
    pub user_id: Uuid,
    /// The user's email (lowercase).
    pub email: String,
    /// Platform super admin.
    pub super_admin: bool,
    /// Deactivated users are refused at authentication.
    pub active: bool,
}

impl From<&User> for Principal {
    fn from(user: &User) -> Self {
        Self {
            user_id: user.id.as_uuid(),
            email: user.email.as_str().to_owned(),
            super_admin: user.platform_role == PlatformRole::SuperAdmin,
            active: user.active,
        }
    }
}
