//! Role-based access control: one pure function decides whether an actor may perform an action
//! on a resource.
//!
//! The rules (issue 2):
//!
//! | who                         | may                                                               |
//! |-----------------------------|-------------------------------------------------------------------|
//! | platform `super_admin`      | everything below, plus managing organizations, tiers, profiles, people (deactivation, super admin grants) and platform guardrails; it may also set an organization's owners (to hand a new organization over) |
//! | org `owner`                 | everything an admin may, plus changing owners                     |
//! | org `admin`                 | manage members, groups, budgets, guardrails, org settings; view org usage and billing; view any member's or group's usage |
//! | group `lead`                | view their own group's usage                                      |
//! | org `member` (any role)     | view the organization; view their own usage and accessible models; use models as themselves |
//!
//! Nobody may do anything in an organization they are not a member of (super admins excepted),
//! an inactive user may do nothing, and nobody, not even a super admin, uses models as someone
//! else. Handlers call [`authorize`] first and stay thin.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::directory::{GroupMembership, GroupRole, Membership, OrgRole, PlatformRole, User};
use crate::ids::{GroupId, OrgId, UserId};

/// A person's role in one organization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrgGrant {
    /// The organization.
    pub org_id: OrgId,
    /// Their role there.
    pub role: OrgRole,
}

/// A person's role in one group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupGrant {
    /// The group's organization.
    pub org_id: OrgId,
    /// The group.
    pub group_id: GroupId,
    /// Their role there.
    pub role: GroupRole,
}

/// Who is acting: everything the access decision needs to know about them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// The user.
    pub user_id: UserId,
    /// Platform role.
    pub platform_role: PlatformRole,
    /// Inactive users are refused everything.
    pub active: bool,
    /// Their organizations and roles.
    pub orgs: Vec<OrgGrant>,
    /// Their groups and roles.
    pub groups: Vec<GroupGrant>,
}

impl Actor {
    /// The actor for `user`, from their memberships and group memberships (entries of other
    /// users are ignored).
    #[must_use]
    pub fn new(user: &User, memberships: &[Membership], groups: &[GroupMembership]) -> Self {
        Self {
            user_id: user.id,
            platform_role: user.platform_role,
            active: user.active,
            orgs: memberships
                .iter()
                .filter(|m| m.user_id == user.id)
                .map(|m| OrgGrant {
                    org_id: m.org_id,
                    role: m.role,
                })
                .collect(),
            groups: groups
                .iter()
                .filter(|g| g.user_id == user.id)
                .map(|g| GroupGrant {
                    org_id: g.org_id,
                    group_id: g.group_id,
                    role: g.role,
                })
                .collect(),
        }
    }

    /// The actor's role in `org`, if a member. With several entries the strongest counts.
    #[must_use]
    pub fn org_role(&self, org: OrgId) -> Option<OrgRole> {
        // `OrgRole` orders Owner < Admin < Member, so the minimum is the strongest.
        self.orgs
            .iter()
            .filter(|g| g.org_id == org)
            .map(|g| g.role)
            .min()
    }

    /// Whether the actor leads `group` of `org`.
    #[must_use]
    pub fn leads(&self, org: OrgId, group: GroupId) -> bool {
        self.groups
            .iter()
            .any(|g| g.org_id == org && g.group_id == group && g.role == GroupRole::Lead)
    }

    fn is_super_admin(&self) -> bool {
        self.platform_role == PlatformRole::SuperAdmin
    }
}

/// What an actor wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Create, list, deactivate organizations, change their billing plan (platform or org).
    ManageOrgs,
    /// Manage the tier catalog (platform) and organizations' tier subscriptions (org).
    ManageTiers,
    /// Manage user profiles (platform).
    ManageProfiles,
    /// List, search, deactivate and reactivate people, grant and revoke super admin
    /// (platform).
    ManageUsers,
    /// Manage global and platform tier guardrails (platform).
    ManagePlatformGuardrails,
    /// Read an organization and its settings (org).
    ViewOrg,
    /// Change an organization's settings (org).
    UpdateOrgSettings,
    /// Invite, remove and edit members, their tiers, budgets and profiles (org or member).
    /// Granting the owner role or changing an owner's membership is [`Action::ChangeOwners`].
    ManageMembers,
    /// Grant or revoke the owner role (org or member).
    ChangeOwners,
    /// Create, edit, delete groups and their membership and tiers (org or group).
    ManageGroups,
    /// Create and edit budgets (org, group or member).
    ManageBudgets,
    /// Manage the organization's guardrails (org, group or member).
    ManageGuardrails,
    /// View the whole organization's usage (org).
    ViewOrgUsage,
    /// View billing: invoices, pricing reports (org).
    ViewBilling,
    /// Read the audit trail: an organization's chain (org), every chain (platform).
    ViewAudit,
    /// View one group's usage (group).
    ViewGroupUsage,
    /// View one member's usage (member).
    ViewMemberUsage,
    /// View the models one member may use (member).
    ViewAccessibleModels,
    /// Call models as this member (member): only oneself.
    UseModels,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 19] = [
        Action::ManageOrgs,
        Action::ManageTiers,
        Action::ManageProfiles,
        Action::ManageUsers,
        Action::ManagePlatformGuardrails,
        Action::ViewOrg,
        Action::UpdateOrgSettings,
        Action::ManageMembers,
        Action::ChangeOwners,
        Action::ManageGroups,
        Action::ManageBudgets,
        Action::ManageGuardrails,
        Action::ViewOrgUsage,
        Action::ViewBilling,
        Action::ViewAudit,
        Action::ViewGroupUsage,
        Action::ViewMemberUsage,
        Action::ViewAccessibleModels,
        Action::UseModels,
    ];

    /// The action's snake_case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ManageOrgs => "manage_orgs",
            Action::ManageTiers => "manage_tiers",
            Action::ManageProfiles => "manage_profiles",
            Action::ManageUsers => "manage_users",
            Action::ManagePlatformGuardrails => "manage_platform_guardrails",
            Action::ViewOrg => "view_org",
            Action::UpdateOrgSettings => "update_org_settings",
            Action::ManageMembers => "manage_members",
            Action::ChangeOwners => "change_owners",
            Action::ManageGroups => "manage_groups",
            Action::ManageBudgets => "manage_budgets",
            Action::ManageGuardrails => "manage_guardrails",
            Action::ViewOrgUsage => "view_org_usage",
            Action::ViewBilling => "view_billing",
            Action::ViewAudit => "view_audit",
            Action::ViewGroupUsage => "view_group_usage",
            Action::ViewMemberUsage => "view_member_usage",
            Action::ViewAccessibleModels => "view_accessible_models",
            Action::UseModels => "use_models",
        }
    }

    /// Whether only org owners/admins (or super admins) may ever do this: what a plain member
    /// or group lead must never be granted.
    #[must_use]
    pub fn is_admin_action(self) -> bool {
        !matches!(
            self,
            Action::ViewOrg
                | Action::ViewGroupUsage
                | Action::ViewMemberUsage
                | Action::ViewAccessibleModels
                | Action::UseModels
        )
    }

    fn accepts(self, resource: &Resource) -> bool {
        use Resource as R;
        match self {
            Action::ManageOrgs | Action::ManageTiers | Action::ViewAudit => {
                matches!(resource, R::Platform | R::Org(_))
            }
            Action::ManageProfiles | Action::ManageUsers | Action::ManagePlatformGuardrails => {
                matches!(resource, R::Platform)
            }
            Action::ViewOrg
            | Action::UpdateOrgSettings
            | Action::ViewOrgUsage
            | Action::ViewBilling => matches!(resource, R::Org(_)),
            Action::ManageMembers | Action::ChangeOwners => {
                matches!(resource, R::Org(_) | R::Member { .. })
            }
            Action::ManageGroups => matches!(resource, R::Org(_) | R::Group { .. }),
            Action::ManageBudgets | Action::ManageGuardrails => !matches!(resource, R::Platform),
            Action::ViewGroupUsage => matches!(resource, R::Group { .. }),
            Action::ViewMemberUsage | Action::ViewAccessibleModels | Action::UseModels => {
                matches!(resource, R::Member { .. })
            }
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an action is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// The platform itself (catalog, organization list, profiles, platform guardrails).
    Platform,
    /// An organization.
    Org(OrgId),
    /// A group of an organization.
    Group {
        /// Its organization.
        org_id: OrgId,
        /// The group.
        group_id: GroupId,
    },
    /// A member of an organization.
    Member {
        /// The organization.
        org_id: OrgId,
        /// The member.
        user_id: UserId,
    },
}

impl Resource {
    /// The organization the resource belongs to (none for the platform).
    #[must_use]
    pub fn org_id(&self) -> Option<OrgId> {
        match *self {
            Resource::Platform => None,
            Resource::Org(org_id)
            | Resource::Group { org_id, .. }
            | Resource::Member { org_id, .. } => Some(org_id),
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Platform => f.write_str("the platform"),
            Resource::Org(org) => write!(f, "organization `{org}`"),
            Resource::Group { org_id, group_id } => {
                write!(f, "group `{group_id}` of organization `{org_id}`")
            }
            Resource::Member { org_id, user_id } => {
                write!(f, "member `{user_id}` of organization `{org_id}`")
            }
        }
    }
}

/// Why an action was denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum DenyReason {
    /// The actor's account is inactive.
    InactiveUser,
    /// The action does not apply to this kind of resource (a caller bug).
    WrongResource,
    /// Only platform super admins may do this.
    RequiresSuperAdmin,
    /// The actor is not a member of the resource's organization.
    NotAMember,
    /// The actor's role in the organization is too weak.
    RequiresOrgAdmin {
        /// The role they have.
        role: OrgRole,
    },
    /// Only owners may do this.
    RequiresOwner {
        /// The role they have.
        role: OrgRole,
    },
    /// Only the member themself (or an org admin) may do this.
    NotSelf,
    /// Only the group's lead (or an org admin) may do this.
    NotGroupLead,
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::InactiveUser => f.write_str("the account is inactive"),
            DenyReason::WrongResource => f.write_str("the action does not apply to this resource"),
            DenyReason::RequiresSuperAdmin => {
                f.write_str("only a platform super admin may do this")
            }
            DenyReason::NotAMember => f.write_str("not a member of the organization"),
            DenyReason::RequiresOrgAdmin { role } => {
                write!(
                    f,
                    "requires an organization owner or admin (role: {})",
                    role.as_str()
                )
            }
            DenyReason::RequiresOwner { role } => {
                write!(
                    f,
                    "requires an organization owner (role: {})",
                    role.as_str()
                )
            }
            DenyReason::NotSelf => f.write_str("only the member themself or an admin may do this"),
            DenyReason::NotGroupLead => {
                f.write_str("only the group's lead or an admin may do this")
            }
        }
    }
}

/// A denied access decision: what was asked, on what, and why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("`{action}` on {resource} denied: {reason}")]
pub struct Denied {
    /// The action.
    pub action: Action,
    /// The resource.
    pub resource: Resource,
    /// Why.
    pub reason: DenyReason,
}

/// Decides whether `actor` may do `action` on `resource`. Pure: everything it needs is passed in.
pub fn authorize(actor: &Actor, action: Action, resource: &Resource) -> Result<(), Denied> {
    decide(actor, action, resource).map_err(|reason| Denied {
        action,
        resource: *resource,
        reason,
    })
}

fn decide(actor: &Actor, action: Action, resource: &Resource) -> Result<(), DenyReason> {
    if !actor.active {
        return Err(DenyReason::InactiveUser);
    }
    if !action.accepts(resource) {
        return Err(DenyReason::WrongResource);
    }
    if action == Action::UseModels {
        // Nobody, not even a super admin, spends as someone else.
        return match resource {
            Resource::Member { org_id, user_id } if *user_id == actor.user_id => actor
                .org_role(*org_id)
                .map(|_| ())
                .ok_or(DenyReason::NotAMember),
            _ => Err(DenyReason::NotSelf),
        };
    }
    if actor.is_super_admin() {
        return Ok(());
    }
    let Some(org) = resource.org_id() else {
        // Every platform action is the super admin's.
        return Err(DenyReason::RequiresSuperAdmin);
    };
    if matches!(
        action,
        Action::ManageOrgs
            | Action::ManageTiers
            | Action::ManageProfiles
            | Action::ManageUsers
            | Action::ManagePlatformGuardrails
    ) {
        return Err(DenyReason::RequiresSuperAdmin);
    }
    let role = actor.org_role(org).ok_or(DenyReason::NotAMember)?;
    let is_admin = matches!(role, OrgRole::Owner | OrgRole::Admin);
    match action {
        Action::ViewOrg => Ok(()),
        Action::ChangeOwners => {
            if role == OrgRole::Owner {
                Ok(())
            } else {
                Err(DenyReason::RequiresOwner { role })
            }
        }
        Action::ViewGroupUsage => match resource {
            _ if is_admin => Ok(()),
            Resource::Group { group_id, .. } if actor.leads(org, *group_id) => Ok(()),
            _ => Err(DenyReason::NotGroupLead),
        },
        Action::ViewMemberUsage | Action::ViewAccessibleModels => match resource {
            _ if is_admin => Ok(()),
            Resource::Member { user_id, .. } if *user_id == actor.user_id => Ok(()),
            _ => Err(DenyReason::NotSelf),
        },
        _ if is_admin => Ok(()),
        _ => Err(DenyReason::RequiresOrgAdmin { role }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    struct World {
        org: OrgId,
        other_org: OrgId,
        group: GroupId,
        other_group: GroupId,
        target: UserId,
    }

    fn world() -> World {
        World {
            org: OrgId::new(),
            other_org: OrgId::new(),
            group: GroupId::new(),
            other_group: GroupId::new(),
            target: UserId::new(),
        }
    }

    fn actor(w: &World, who: &str) -> Actor {
        let mut a = Actor {
            user_id: UserId::new(),
            platform_role: PlatformRole::User,
            active: true,
            orgs: vec![],
            groups: vec![],
        };
        let grant = |role| OrgGrant {
            org_id: w.org,
            role,
        };
        match who {
            "super" => a.platform_role = PlatformRole::SuperAdmin,
            "owner" => a.orgs.push(grant(OrgRole::Owner)),
            "admin" => a.orgs.push(grant(OrgRole::Admin)),
            "member" => a.orgs.push(grant(OrgRole::Member)),
            "lead" => {
                a.orgs.push(grant(OrgRole::Member));
                a.groups.push(GroupGrant {
                    org_id: w.org,
                    group_id: w.group,
                    role: GroupRole::Lead,
                });
            }
            "outsider" => a.orgs.push(OrgGrant {
                org_id: w.other_org,
                role: OrgRole::Owner,
            }),
            _ => unreachable!("unknown actor {who}"),
        }
        a
    }

    /// Every (role, action) pair. Columns: super admin, owner, admin, member, group lead (a
    /// member leading `group`), outsider (owner of another organization). Resources: `platform`,
    /// `org`, `group` (the lead's group), `other-group`, `member` (someone else), `self`.
    const TABLE: &str = "
        action                      resource     super owner admin member lead outsider
        manage_orgs                 platform     Y     .     .     .      .    .
        manage_orgs                 org          Y     .     .     .      .    .
        manage_tiers                platform     Y     .     .     .      .    .
        manage_tiers                org          Y     .     .     .      .    .
        manage_profiles             platform     Y     .     .     .      .    .
        manage_users                platform     Y     .     .     .      .    .
        manage_platform_guardrails  platform     Y     .     .     .      .    .
        view_org                    org          Y     Y     Y     Y      Y    .
        update_org_settings         org          Y     Y     Y     .      .    .
        manage_members              org          Y     Y     Y     .      .    .
        manage_members              member       Y     Y     Y     .      .    .
        manage_members              self         Y     Y     Y     .      .    .
        change_owners               org          Y     Y     .     .      .    .
        change_owners               member       Y     Y     .     .      .    .
        manage_groups               org          Y     Y     Y     .      .    .
        manage_groups               group        Y     Y     Y     .      .    .
        manage_budgets              org          Y     Y     Y     .      .    .
        manage_budgets              group        Y     Y     Y     .      .    .
        manage_budgets              member       Y     Y     Y     .      .    .
        manage_guardrails           org          Y     Y     Y     .      .    .
        manage_guardrails           group        Y     Y     Y     .      .    .
        manage_guardrails           self         Y     Y     Y     .      .    .
        view_org_usage              org          Y     Y     Y     .      .    .
        view_billing                org          Y     Y     Y     .      .    .
        view_audit                  platform     Y     .     .     .      .    .
        view_audit                  org          Y     Y     Y     .      .    .
        view_group_usage            group        Y     Y     Y     .      Y    .
        view_group_usage            other-group  Y     Y     Y     .      .    .
        view_member_usage           member       Y     Y     Y     .      .    .
        view_member_usage           self         Y     Y     Y     Y      Y    .
        view_accessible_models      member       Y     Y     Y     .      .    .
        view_accessible_models      self         Y     Y     Y     Y      Y    .
        use_models                  member       .     .     .     .      .    .
        use_models                  self         .     Y     Y     Y      Y    .
    ";

    #[test]
    fn every_role_and_action_pair_is_decided_as_the_table_says() {
        let w = world();
        let roles = ["super", "owner", "admin", "member", "lead", "outsider"];
        let mut covered = std::collections::BTreeSet::new();
        for line in TABLE
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .skip(1)
        {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let action = *Action::ALL
                .iter()
                .find(|a| a.as_str() == cols[0])
                .unwrap_or_else(|| panic!("unknown action {}", cols[0]));
            covered.insert(action);
            for (i, who) in roles.iter().enumerate() {
                let a = actor(&w, who);
                let resource = match cols[1] {
                    "platform" => Resource::Platform,
                    "org" => Resource::Org(w.org),
                    "group" => Resource::Group {
                        org_id: w.org,
                        group_id: w.group,
                    },
                    "other-group" => Resource::Group {
                        org_id: w.org,
                        group_id: w.other_group,
                    },
                    "member" => Resource::Member {
                        org_id: w.org,
                        user_id: w.target,
                    },
                    "self" => Resource::Member {
                        org_id: w.org,
                        user_id: a.user_id,
                    },
                    other => panic!("unknown resource {other}"),
                };
                let expected = cols[2 + i] == "Y";
                let got = authorize(&a, action, &resource);
                assert_eq!(got.is_ok(), expected, "{who} {action} {}: {got:?}", cols[1]);
            }
        }
        assert_eq!(
            covered.len(),
            Action::ALL.len(),
            "every action is in the table"
        );
    }

    #[test]
    fn wrong_resource_and_inactive_are_denied_with_reasons() {
        let w = world();
        let mut a = actor(&w, "super");
        let err = authorize(&a, Action::ViewGroupUsage, &Resource::Org(w.org)).unwrap_err();
        assert_eq!(err.reason, DenyReason::WrongResource);
        a.active = false;
        let err = authorize(&a, Action::ManageOrgs, &Resource::Platform).unwrap_err();
        assert_eq!(err.reason, DenyReason::InactiveUser);

        let m = actor(&w, "member");
        let err = authorize(&m, Action::ManageBudgets, &Resource::Org(w.org)).unwrap_err();
        assert_eq!(
            err.reason,
            DenyReason::RequiresOrgAdmin {
                role: OrgRole::Member
            }
        );
        assert!(
            err.to_string()
                .starts_with("`manage_budgets` on organization"),
            "{err}"
        );
        let admin = actor(&w, "admin");
        let err = authorize(&admin, Action::ChangeOwners, &Resource::Org(w.org)).unwrap_err();
        assert_eq!(
            err.reason,
            DenyReason::RequiresOwner {
                role: OrgRole::Admin
            }
        );
    }

    #[test]
    fn actor_from_directory_rows_ignores_other_users() {
        let now = chrono::Utc::now();
        let user = User::new(
            crate::directory::Email::new("a@example.com").unwrap(),
            None,
            PlatformRole::User,
            now,
        )
        .unwrap();
        let org = OrgId::new();
        let group = GroupId::new();
        let rows = [
            Membership::new(org, user.id, OrgRole::Admin, now),
            Membership::new(OrgId::new(), UserId::new(), OrgRole::Owner, now),
        ];
        let groups = [GroupMembership::new(
            org,
            group,
            user.id,
            GroupRole::Lead,
            now,
        )];
        let a = Actor::new(&user, &rows, &groups);
        assert_eq!(a.orgs.len(), 1);
        assert_eq!(a.org_role(org), Some(OrgRole::Admin));
        assert!(a.leads(org, group));
    }

    fn arb_org_role() -> impl Strategy<Value = OrgRole> {
        prop_oneof![
            Just(OrgRole::Owner),
            Just(OrgRole::Admin),
            Just(OrgRole::Member)
        ]
    }

    fn arb_group_role() -> impl Strategy<Value = GroupRole> {
        prop_oneof![Just(GroupRole::Lead), Just(GroupRole::Member)]
    }

    /// Resources over a small universe of orgs, groups and users (index 0 is the actor's user).
    fn arb_resource(
        orgs: Vec<OrgId>,
        groups: Vec<GroupId>,
        users: Vec<UserId>,
    ) -> impl Strategy<Value = Resource> {
        let o1 = orgs.clone();
        let o2 = orgs.clone();
        prop_oneof![
            Just(Resource::Platform),
            prop::sample::select(orgs).prop_map(Resource::Org),
            (prop::sample::select(o1), prop::sample::select(groups))
                .prop_map(|(org_id, group_id)| Resource::Group { org_id, group_id }),
            (prop::sample::select(o2), prop::sample::select(users))
                .prop_map(|(org_id, user_id)| Resource::Member { org_id, user_id }),
        ]
    }

    fn universe() -> (Vec<OrgId>, Vec<GroupId>, Vec<UserId>) {
        (
            (0..3)
                .map(|i| OrgId::from_uuid(uuid::Uuid::from_u128(i + 1)))
                .collect(),
            (0..3)
                .map(|i| GroupId::from_uuid(uuid::Uuid::from_u128(i + 100)))
                .collect(),
            (0..3)
                .map(|i| UserId::from_uuid(uuid::Uuid::from_u128(i + 1000)))
                .collect(),
        )
    }

    prop_compose! {
        /// A non-super-admin actor (user 0) with any memberships and group roles in the universe.
        fn arb_actor()(
            orgs in prop::collection::vec((0..3usize, arb_org_role()), 0..4),
            groups in prop::collection::vec((0..3usize, 0..3usize, arb_group_role()), 0..4),
        ) -> Actor {
            let (o, g, u) = universe();
            Actor {
                user_id: u[0],
                platform_role: PlatformRole::User,
                active: true,
                orgs: orgs.into_iter().map(|(i, role)| OrgGrant { org_id: o[i], role }).collect(),
                groups: groups.into_iter().map(|(i, j, role)| GroupGrant { org_id: o[i], group_id: g[j], role }).collect(),
            }
        }
    }

    proptest! {
        #[test]
        fn member_level_actors_never_get_admin_actions(
            mut a in arb_actor(),
            action in prop::sample::select(Action::ALL.to_vec()),
            resource in { let (o, g, u) = universe(); arb_resource(o, g, u) },
        ) {
            // Demote every org role to member: group leads and members only.
            for grant in &mut a.orgs { grant.role = OrgRole::Member; }
            if action.is_admin_action() {
                prop_assert!(authorize(&a, action, &resource).is_err());
            }
        }

        #[test]
        fn nobody_gets_anything_in_an_org_they_do_not_belong_to(
            a in arb_actor(),
            action in prop::sample::select(Action::ALL.to_vec()),
            resource in { let (o, g, u) = universe(); arb_resource(o, g, u) },
        ) {
            if let Some(org) = resource.org_id()
                && a.org_role(org).is_none()
            {
                prop_assert!(authorize(&a, action, &resource).is_err());
            }
        }

        #[test]
        fn only_super_admins_act_on_the_platform(
            a in arb_actor(),
            action in prop::sample::select(Action::ALL.to_vec()),
        ) {
            prop_assert!(authorize(&a, action, &Resource::Platform).is_err());
        }
    }
}
