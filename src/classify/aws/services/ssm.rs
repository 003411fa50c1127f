//! Systems Manager Parameter Store (`AmazonSSM.*`): parameters from `Name` / `Names` / `Path`.
//!
//! `arn:…:ssm:REGION:ACCOUNT:parameter/a/b` names `/a/b` (and `a`, without a leading slash, is
//! `parameter/a`). A version or label selector (`/a/b:3`) is not part of the ARN.

use super::super::arn::checked_name;
use super::{one, permission, ClassifyError, Ctx, Input, Permission};

/// Operations on the one parameter in `Name`.
const NAME_OPS: &[&str] = &["GetParameter", "PutParameter", "DeleteParameter", "GetParameterHistory", "LabelParameterVersion", "UnlabelParameterVersion"];

/// Operations on every parameter in `Names`.
const NAMES_OPS: &[&str] = &["GetParameters", "DeleteParameters"];

pub(super) fn permissions(op: &str, input: &Input, ctx: &Ctx) -> Result<Option<Vec<Permission>>, ClassifyError> {
    if NAME_OPS.contains(&op) {
        return Ok(one("ssm", op, parameter_arn(input.required(op, "Name")?, ctx)?));
    }
    if NAMES_OPS.contains(&op) {
        let names = input.strings("Names")?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            out.push(permission(format!("ssm:{op}"), parameter_arn(name, ctx)?));
        }
        return Ok((!out.is_empty()).then_some(out));
    }
    match op {
        // Authorized on the path itself (`parameter/app/prod`), and it returns what lies below.
        "GetParametersByPath" => {
            let path = input.required(op, "Path")?;
            Ok(one("ssm", op, parameter_arn(path.trim_end_matches('/'), ctx)?))
        }
        _ => Ok(None),
    }
}

fn parameter_arn(name: &str, ctx: &Ctx) -> Result<String, ClassifyError> {
    if name.starts_with("arn:") {
        return ctx.checked_arn(name, "ssm", "parameter/", true);
    }
    // `NAME:selector` asks for a version or label of NAME.
    let name = name.split_once(':').map_or(name, |(n, _)| n);
    let name = checked_name(name, "SSM parameter", "/_.-", 2048)?;
    let name = name.strip_prefix('/').unwrap_or(name);
    Ok(ctx.arn("ssm", &format!("parameter/{name}")))
}
