//! IAM (Query protocol): users, roles, groups and policies from `UserName`, `RoleName`,
//! `GroupName`, `PolicyArn`, `PolicyName`, `InstanceProfileName`.
//!
//! IAM ARNs include the entity's path (`role/service-role/NAME`), which a request naming the role
//! by name does not carry; the classifier writes `role/NAME`. For entities with a path the minted
//! credential will not match and AWS refuses the call: that fails closed.

use super::super::arn::checked_name;
use super::{one, ClassifyError, Ctx, Input, Permission};

/// The parameter that names the resource an IAM operation is authorized on.
#[derive(Clone, Copy)]
enum By {
    User,
    Role,
    Group,
    PolicyArn,
    PolicyName,
    InstanceProfile,
}

const OPS: &[(&str, By)] = &[
    ("GetUser", By::User),
    ("CreateUser", By::User),
    ("DeleteUser", By::User),
    ("UpdateUser", By::User),
    ("TagUser", By::User),
    ("UntagUser", By::User),
    ("ListUserTags", By::User),
    ("ListUserPolicies", By::User),
    ("ListAttachedUserPolicies", By::User),
    ("GetUserPolicy", By::User),
    ("PutUserPolicy", By::User),
    ("DeleteUserPolicy", By::User),
    ("AttachUserPolicy", By::User),
    ("DetachUserPolicy", By::User),
    ("ListGroupsForUser", By::User),
    ("ListAccessKeys", By::User),
    ("CreateAccessKey", By::User),
    ("DeleteAccessKey", By::User),
    ("UpdateAccessKey", By::User),
    ("GetLoginProfile", By::User),
    ("CreateLoginProfile", By::User),
    ("UpdateLoginProfile", By::User),
    ("DeleteLoginProfile", By::User),
    ("CreateServiceSpecificCredential", By::User),
    ("ResetServiceSpecificCredential", By::User),
    ("ListServiceSpecificCredentials", By::User),
    ("UploadSSHPublicKey", By::User),
    ("UploadSigningCertificate", By::User),
    ("ListMFADevices", By::User),
    ("GetRole", By::Role),
    ("CreateRole", By::Role),
    ("DeleteRole", By::Role),
    ("UpdateRole", By::Role),
    ("UpdateRoleDescription", By::Role),
    ("UpdateAssumeRolePolicy", By::Role),
    ("TagRole", By::Role),
    ("UntagRole", By::Role),
    ("ListRoleTags", By::Role),
    ("ListRolePolicies", By::Role),
    ("ListAttachedRolePolicies", By::Role),
    ("GetRolePolicy", By::Role),
    ("PutRolePolicy", By::Role),
    ("DeleteRolePolicy", By::Role),
    ("AttachRolePolicy", By::Role),
    ("DetachRolePolicy", By::Role),
    ("ListInstanceProfilesForRole", By::Role),
    ("PutRolePermissionsBoundary", By::Role),
    ("GetGroup", By::Group),
    ("CreateGroup", By::Group),
    ("DeleteGroup", By::Group),
    ("AddUserToGroup", By::Group),
    ("RemoveUserFromGroup", By::Group),
    ("ListGroupPolicies", By::Group),
    ("ListAttachedGroupPolicies", By::Group),
    ("AttachGroupPolicy", By::Group),
    ("DetachGroupPolicy", By::Group),
    ("GetPolicy", By::PolicyArn),
    ("DeletePolicy", By::PolicyArn),
    ("GetPolicyVersion", By::PolicyArn),
    ("ListPolicyVersions", By::PolicyArn),
    ("CreatePolicyVersion", By::PolicyArn),
    ("DeletePolicyVersion", By::PolicyArn),
    ("SetDefaultPolicyVersion", By::PolicyArn),
    ("ListEntitiesForPolicy", By::PolicyArn),
    ("CreatePolicy", By::PolicyName),
    ("GetInstanceProfile", By::InstanceProfile),
    ("CreateInstanceProfile", By::InstanceProfile),
    ("DeleteInstanceProfile", By::InstanceProfile),
    ("AddRoleToInstanceProfile", By::InstanceProfile),
    ("RemoveRoleFromInstanceProfile", By::InstanceProfile),
];

/// IAM entity name characters besides ASCII alphanumerics.
const NAME_CHARS: &str = "+=,.@_-";

pub(super) fn permissions(op: &str, input: &Input, ctx: &Ctx) -> Result<Option<Vec<Permission>>, ClassifyError> {
    let Some((_, by)) = OPS.iter().find(|(name, _)| *name == op) else {
        return Ok(None);
    };
    let named = |param: &str, kind: &str, max: usize| -> Result<String, ClassifyError> {
        let name = checked_name(input.required(op, param)?, kind, NAME_CHARS, max)?;
        Ok(ctx.global_arn("iam", &format!("{kind}/{name}")))
    };
    let arn = match by {
        By::User => named("UserName", "user", 64)?,
        By::Role => named("RoleName", "role", 64)?,
        By::Group => named("GroupName", "group", 128)?,
        By::PolicyName => named("PolicyName", "policy", 128)?,
        By::InstanceProfile => named("InstanceProfileName", "instance-profile", 128)?,
        By::PolicyArn => ctx.checked_arn(input.required(op, "PolicyArn")?, "iam", "policy/", false)?,
    };
    Ok(one("iam", op, arn))
}
