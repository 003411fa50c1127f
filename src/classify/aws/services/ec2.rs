//! EC2 (Query protocol). `Describe*` actions support no resource-level permissions (see the
//! unscoped allowlist); instance lifecycle actions are scoped to each `InstanceId.N`. Everything
//! else (RunInstances, CreateTags, security groups, …) touches several resource types and is
//! unclassified.

use super::super::arn::checked_name;
use super::{permission, unclassified, ClassifyError, Ctx, Input, Permission};

/// Operations on the instances listed in `InstanceId.N`.
const INSTANCE_OPS: &[&str] = &["StartInstances", "StopInstances", "RebootInstances", "TerminateInstances", "MonitorInstances", "UnmonitorInstances"];

pub(super) fn permissions(op: &str, input: &Input, ctx: &Ctx) -> Result<Option<Vec<Permission>>, ClassifyError> {
    if !INSTANCE_OPS.contains(&op) {
        return Ok(None);
    }
    let ids = input.strings("InstanceId")?;
    if ids.is_empty() {
        return Err(unclassified(format!("EC2 {op} without InstanceId.N")));
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let id = checked_name(id, "EC2 instance id", "-", 32)?;
        if !id.starts_with("i-") {
            return Err(unclassified(format!("{id:?} is not an instance id")));
        }
        out.push(permission(format!("ec2:{op}"), ctx.arn("ec2", &format!("instance/{id}"))));
    }
    Ok(Some(out))
}
