//! Group administration over the stores: a new group's first members checked before the group
//! and its members are written in one step.

use stratai_core::directory::{Group, GroupMembership, GroupRole, NewGroupMember};
use stratai_core::ports::DirectoryStore;
use stratai_core::{OpError, StoreError, ValidationError};

/// Checks `group`'s first members (each a member of its organization, listed once, no more
/// than the organization allows per group), naming every offending `members[i].user_id`, and
/// returns their group memberships. The store checks the capacity again in the transaction
/// that writes the group (`create_group_with_members`).
pub async fn first_members(
    directory: &dyn DirectoryStore,
    group: &Group,
    members: &[NewGroupMember],
) -> Result<Vec<GroupMembership>, OpError> {
    let org_id = group.org_id;
    let org = directory.get_org(org_id).await?;
    let mut errors = Vec::new();
    let max = org.settings.max_users_per_group as usize;
    if members.len() > max {
        errors.push(ValidationError::new(
            "members",
            format!(
                "`{}` members, the organization's `max_users_per_group` is {max}",
                members.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(members.len());
    for (i, m) in members.iter().enumerate() {
        if members[..i].iter().any(|o| o.user_id == m.user_id) {
            errors.push(ValidationError::new(
                format!("members[{i}].user_id"),
                format!("`{}` is listed twice", m.user_id),
            ));
            continue;
        }
        match directory.get_member(org_id, m.user_id).await {
            Ok(_) => {}
            Err(StoreError::NotFound { .. }) => {
                errors.push(ValidationError::new(
                    format!("members[{i}].user_id"),
                    format!("`{}` is not a member of the organization", m.user_id),
                ));
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        out.push(GroupMembership {
            org_id,
            group_id: group.id,
            user_id: m.user_id,
            role: m.role.unwrap_or(GroupRole::Member),
            joined_at: group.created_at,
        });
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(OpError::Invalid(errors))
    }
}
