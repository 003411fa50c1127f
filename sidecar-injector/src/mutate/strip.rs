//! Removes ambient credentials from agent containers, for namespaces configured to strip.

use super::patch_builder::{pointer, PatchBuilder};
use super::Denial;
use crate::ambient::{strip_warning, Finding, Violation};

/// Removes every violation's array entry and returns one warning per violation.
///
/// Only the container's reference goes (env entry, envFrom entry, volume mount); a Secret
/// volume no container mounts any more is left in the pod spec, where no process can read it.
pub fn strip_violations(builder: &mut PatchBuilder, violations: &[Violation]) -> Result<Vec<String>, Denial> {
    let mut removals: Vec<(&'static str, usize, &'static str, usize)> = violations
        .iter()
        .map(|v| {
            let (array, index) = match &v.finding {
                Finding::SecretKeyRef { env_index, .. } | Finding::LiteralCredential { env_index, .. } => ("env", *env_index),
                Finding::EnvFromSecret { env_from_index, .. } => ("envFrom", *env_from_index),
                Finding::SecretVolume { mount_index, .. } => ("volumeMounts", *mount_index),
            };
            (v.list.json_key(), v.container_index, array, index)
        })
        .collect();
    // Highest index first within each array, so the indices still to remove stay valid.
    removals.sort_unstable_by(|a, b| b.cmp(a));
    removals.dedup();
    for (list, container_index, array, index) in removals {
        let container_index = container_index.to_string();
        let index = index.to_string();
        builder.remove(pointer(["spec", list, &container_index, array, &index]))?;
    }
    Ok(violations.iter().map(strip_warning).collect())
}
