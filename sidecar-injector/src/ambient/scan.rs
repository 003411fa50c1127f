//! Walks a pod's agent containers and reports every credential they would hold.

use k8s_openapi::api::core::v1::{Container, Pod, Volume};

use super::{literal::looks_like_credential, ContainerList, Finding, Violation};
use crate::conventions::{BROKER_CONTAINER_NAME, IPTABLES_INIT_CONTAINER_NAME};

/// Whether a container is one the injector put there (and so is no agent).
pub fn is_injected_container(name: &str) -> bool {
    name == BROKER_CONTAINER_NAME || name == IPTABLES_INIT_CONTAINER_NAME
}

/// Every ambient credential in the pod's containers (init containers first).
pub fn scan_pod(pod: &Pod) -> Vec<Violation> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let lists = [(ContainerList::InitContainers, spec.init_containers.as_deref().unwrap_or_default()), (ContainerList::Containers, spec.containers.as_slice())];
    let mut violations = Vec::new();
    for (list, containers) in lists {
        // Every container is checked, the injector's own included: what it injects holds no
        // secret, and exempting them by name would let any container called
        // "credential-broker" carry credentials past the check.
        for (container_index, container) in containers.iter().enumerate() {
            violations.extend(scan_container(container, volumes).into_iter().map(|finding| Violation {
                list,
                container_index,
                container: container.name.clone(),
                finding,
            }));
        }
    }
    violations
}

fn scan_container(container: &Container, volumes: &[Volume]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (env_index, var) in container.env.iter().flatten().enumerate() {
        let secret_ref = var.value_from.as_ref().and_then(|from| from.secret_key_ref.as_ref());
        if let Some(secret_ref) = secret_ref {
            findings.push(Finding::SecretKeyRef { env_index, var: var.name.clone(), secret: secret_ref.name.clone() });
        } else if let Some(looks_like) = var.value.as_deref().and_then(|value| looks_like_credential(&var.name, value)) {
            findings.push(Finding::LiteralCredential { env_index, var: var.name.clone(), looks_like });
        }
    }
    for (env_from_index, source) in container.env_from.iter().flatten().enumerate() {
        if let Some(secret_ref) = &source.secret_ref {
            findings.push(Finding::EnvFromSecret { env_from_index, secret: secret_ref.name.clone() });
        }
    }
    for (mount_index, mount) in container.volume_mounts.iter().flatten().enumerate() {
        let secrets = volumes.iter().find(|volume| volume.name == mount.name).map(secrets_of_volume).unwrap_or_default();
        if !secrets.is_empty() {
            findings.push(Finding::SecretVolume { mount_index, volume: mount.name.clone(), secrets, mount_path: mount.mount_path.clone() });
        }
    }
    findings
}

/// Names of the Secrets a volume exposes, directly or as projected sources.
fn secrets_of_volume(volume: &Volume) -> Vec<String> {
    let direct = volume.secret.as_ref().map(|secret| secret.secret_name.clone().unwrap_or_default());
    let projected = volume
        .projected
        .iter()
        .flat_map(|projected| projected.sources.iter().flatten())
        .filter_map(|source| source.secret.as_ref())
        .map(|secret| secret.name.clone());
    direct.into_iter().chain(projected).collect()
}

#[cfg(test)]
mod tests;
