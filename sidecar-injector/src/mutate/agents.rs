//! Edits to the agent containers: broker env, the CA mount, and no default token.

use serde_json::{json, Value};

use super::patch_builder::{child, pointer, PatchBuilder};
use super::Denial;
use crate::ambient::{is_injected_container, ContainerList};
use crate::conventions::{agent_env, CA_DIR, CA_VOLUME_NAME, DEFAULT_TOKEN_MOUNT_PATH};
use crate::mutate::broker::agent_ca_mount;

/// Gives every agent container (regular init containers and containers, never the broker)
/// the broker's env and the read-only CA mount, and takes away the default token mount.
pub fn configure_agents(builder: &mut PatchBuilder, transparent: bool) -> Result<(), Denial> {
    for list in [ContainerList::InitContainers, ContainerList::Containers] {
        let array = pointer(["spec", list.json_key()]);
        let count = builder.get(&array).and_then(Value::as_array).map_or(0, Vec::len);
        for index in 0..count {
            let container = child(&array, &index.to_string());
            let name = builder.get(&child(&container, "name")).and_then(Value::as_str).unwrap_or_default();
            if is_injected_container(name) {
                continue;
            }
            configure_agent(builder, &container, transparent)?;
        }
    }
    Ok(())
}

fn configure_agent(builder: &mut PatchBuilder, container: &json_patch::jsonptr::PointerBuf, transparent: bool) -> Result<(), Denial> {
    let env = child(container, "env");
    for (name, value) in agent_env(transparent) {
        // An existing variable of the same name is replaced in place: the broker's value must
        // win (a real AWS key id or a different proxy would bypass it); other variables stay.
        builder.upsert(&env, "name", json!({"name": name, "value": value}))?;
    }

    let mounts = child(container, "volumeMounts");
    // Mounts the injector takes away, highest index first so earlier indices stay valid: the
    // default service-account token (agents must not call the Kubernetes API as the pod), and
    // anything else a container put at the CA directory (it would hide the broker's CA).
    let doomed: Vec<usize> = builder
        .get(&mounts)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .enumerate()
                .filter(|(_, m)| {
                    let path = m.get("mountPath").and_then(Value::as_str);
                    let name = m.get("name").and_then(Value::as_str);
                    path == Some(DEFAULT_TOKEN_MOUNT_PATH) || (path == Some(CA_DIR) && name != Some(CA_VOLUME_NAME))
                })
                .map(|(index, _)| index)
                .collect()
        })
        .unwrap_or_default();
    for index in doomed.into_iter().rev() {
        builder.remove(child(&mounts, &index.to_string()))?;
    }
    let ca_mount = serde_json::to_value(agent_ca_mount()).map_err(|err| Denial::Internal(format!("cannot serialize the CA mount: {err}")))?;
    builder.upsert(&mounts, "name", ca_mount)
}

/// Removes the volumes the service-account admission plugin added for the default token
/// (`kube-api-access-*`) once no container mounts them any more.
///
/// That plugin runs before admission webhooks, so setting `automountServiceAccountToken:
/// false` alone would leave the already-added token mounted into every agent.
pub fn remove_unused_default_token_volumes(builder: &mut PatchBuilder) -> Result<(), Denial> {
    let volumes = pointer(["spec", "volumes"]);
    let mounted = mounted_volume_names(builder.doc());
    let unused: Vec<usize> = builder
        .get(&volumes)
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .enumerate()
                .filter(|(_, v)| is_default_token_volume(v))
                .filter(|(_, v)| {
                    let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
                    !mounted.iter().any(|m| m == name)
                })
                .map(|(index, _)| index)
                .collect()
        })
        .unwrap_or_default();
    for index in unused.into_iter().rev() {
        builder.remove(child(&volumes, &index.to_string()))?;
    }
    Ok(())
}

fn is_default_token_volume(volume: &Value) -> bool {
    let named = volume.get("name").and_then(Value::as_str).is_some_and(|n| n.starts_with("kube-api-access-"));
    let has_token =
        volume.pointer("/projected/sources").and_then(Value::as_array).is_some_and(|sources| sources.iter().any(|s| s.get("serviceAccountToken").is_some()));
    named && has_token
}

fn mounted_volume_names(pod: &Value) -> Vec<String> {
    ["/spec/initContainers", "/spec/containers"]
        .iter()
        .filter_map(|list| pod.pointer(list).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c.get("volumeMounts").and_then(Value::as_array))
        .flatten()
        .filter_map(|m| m.get("name").and_then(Value::as_str).map(str::to_owned))
        .collect()
}
