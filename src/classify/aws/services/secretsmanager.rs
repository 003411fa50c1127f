//! Secrets Manager (`secretsmanager.*`): the secret from `SecretId` (name or ARN).
//!
//! Every secret ARN ends in `-` and six random characters that the caller rarely knows, so a
//! secret named by name becomes `secret:NAME-??????`, the form AWS documents for exactly one
//! secret of that name (the `?` are the only wildcards the classifier ever emits on purpose).

use super::super::arn::checked_name;
use super::{one, ClassifyError, Ctx, Input, Permission};

/// Operations on the secret in `SecretId`.
const SECRET_OPS: &[&str] = &[
    "GetSecretValue",
    "DescribeSecret",
    "PutSecretValue",
    "UpdateSecret",
    "DeleteSecret",
    "RestoreSecret",
    "RotateSecret",
    "CancelRotateSecret",
    "TagResource",
    "UntagResource",
    "GetResourcePolicy",
    "PutResourcePolicy",
    "DeleteResourcePolicy",
    "ValidateResourcePolicy",
    "ListSecretVersionIds",
    "UpdateSecretVersionStage",
    "ReplicateSecretToRegions",
    "RemoveRegionsFromReplication",
    "StopReplicationToReplica",
];

/// Characters Secrets Manager allows in a secret name besides ASCII alphanumerics.
const NAME_CHARS: &str = "/_+=.@-";

pub(super) fn permissions(op: &str, input: &Input, ctx: &Ctx) -> Result<Option<Vec<Permission>>, ClassifyError> {
    if SECRET_OPS.contains(&op) {
        let id = input.required(op, "SecretId")?;
        return Ok(one("secretsmanager", op, secret_arn(id, ctx)?));
    }
    match op {
        "CreateSecret" => {
            let name = checked_name(input.required(op, "Name")?, "secret", NAME_CHARS, 512)?;
            Ok(one("secretsmanager", op, by_name(name, ctx)))
        }
        _ => Ok(None),
    }
}

fn secret_arn(id: &str, ctx: &Ctx) -> Result<String, ClassifyError> {
    if id.starts_with("arn:") {
        return ctx.checked_arn(id, "secretsmanager", "secret:", true);
    }
    let name = checked_name(id, "secret", NAME_CHARS, 512)?;
    Ok(by_name(name, ctx))
}

fn by_name(name: &str, ctx: &Ctx) -> String {
    ctx.arn("secretsmanager", &format!("secret:{name}-??????"))
}
