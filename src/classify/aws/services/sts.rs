//! STS (Query protocol). Everything that mints credentials is classified here so `explain` can
//! show it, and is then denied by default (see `is_credential_vending`).

use super::super::arn::checked_name;
use super::{one, ClassifyError, Ctx, Input, Permission};

pub(super) fn permissions(op: &str, input: &Input, ctx: &Ctx) -> Result<Option<Vec<Permission>>, ClassifyError> {
    match op {
        "AssumeRole" | "AssumeRoleWithWebIdentity" | "AssumeRoleWithSAML" => {
            let role = input.required(op, "RoleArn")?;
            Ok(one("sts", op, ctx.checked_arn(role, "iam", "role/", false)?))
        }
        "GetFederationToken" => {
            let name = checked_name(input.required(op, "Name")?, "federated user", "+=,.@-", 32)?;
            Ok(one("sts", op, ctx.global_arn("sts", &format!("federated-user/{name}"))))
        }
        // GetCallerIdentity, GetSessionToken, … have no resource: see the unscoped allowlist.
        _ => Ok(None),
    }
}
