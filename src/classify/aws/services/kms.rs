//! KMS (`TrentService.*`): the key from `KeyId` (key id, `alias/NAME`, key ARN or alias ARN).
//!
//! AWS authorizes cryptographic operations against the *key*; a request that names the key only
//! through an alias gets the alias ARN here (the broker cannot resolve aliases without calling
//! KMS), so a session policy built from it will be refused by AWS unless policy maps the alias:
//! that fails closed. `Decrypt` without `KeyId` (symmetric ciphertext carries its key) cannot be
//! scoped and is unclassified.

use super::super::arn::checked_name;
use super::{one, permission, ClassifyError, Ctx, Input, Permission};

/// Operations on the key in `KeyId`.
const KEY_OPS: &[&str] = &[
    "Encrypt",
    "Decrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair",
    "GenerateDataKeyPairWithoutPlaintext",
    "GenerateMac",
    "VerifyMac",
    "Sign",
    "Verify",
    "GetPublicKey",
    "DescribeKey",
    "GetKeyPolicy",
    "PutKeyPolicy",
    "ListKeyPolicies",
    "GetKeyRotationStatus",
    "EnableKeyRotation",
    "DisableKeyRotation",
    "EnableKey",
    "DisableKey",
    "ScheduleKeyDeletion",
    "CancelKeyDeletion",
    "ListResourceTags",
    "TagResource",
    "UntagResource",
    "ListGrants",
    "CreateGrant",
];

pub(super) fn permissions(op: &str, input: &Input, ctx: &Ctx) -> Result<Option<Vec<Permission>>, ClassifyError> {
    if KEY_OPS.contains(&op) {
        let key = key_arn(input.required(op, "KeyId")?, ctx)?;
        return Ok(one("kms", op, key));
    }
    match op {
        // ReEncrypt is two permissions: decrypt under the source key, encrypt under the target.
        "ReEncrypt" => Ok(Some(vec![
            permission("kms:ReEncryptFrom", key_arn(input.required(op, "SourceKeyId")?, ctx)?),
            permission("kms:ReEncryptTo", key_arn(input.required(op, "DestinationKeyId")?, ctx)?),
        ])),
        _ => Ok(None),
    }
}

/// A key id (`1234abcd-…`, `mrk-…`), `alias/NAME`, or a key / alias ARN → its ARN.
fn key_arn(key_id: &str, ctx: &Ctx) -> Result<String, ClassifyError> {
    if key_id.starts_with("arn:") {
        return ctx.checked_arn(key_id, "kms", "key/", true).or_else(|_| ctx.checked_arn(key_id, "kms", "alias/", true));
    }
    if let Some(alias) = key_id.strip_prefix("alias/") {
        let alias = checked_name(alias, "KMS alias", "/_-", 250)?;
        return Ok(ctx.arn("kms", &format!("alias/{alias}")));
    }
    let id = checked_name(key_id, "KMS key id", "-", 128)?;
    Ok(ctx.arn("kms", &format!("key/{id}")))
}
