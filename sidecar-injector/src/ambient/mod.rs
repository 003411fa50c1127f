//! "No ambient credentials": finds secrets that an agent container would hold itself.
//!
//! Agents must reach every secret through the broker; a container that gets env from a Secret,
//! mounts a Secret, or carries a literal key defeats that. Findings point at the exact array
//! entry so the mutation can strip them in namespaces configured for stripping.

mod literal;
mod scan;

use std::fmt;

pub use literal::looks_like_credential;
pub use scan::{is_injected_container, scan_pod};

/// Which container array of the pod spec a container is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ContainerList {
    /// `spec.initContainers`
    InitContainers,
    /// `spec.containers`
    Containers,
}

impl ContainerList {
    /// The JSON key of the array in a pod spec.
    pub fn json_key(self) -> &'static str {
        match self {
            ContainerList::InitContainers => "initContainers",
            ContainerList::Containers => "containers",
        }
    }
}

/// One way a container holds a credential, with its position in the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// `env[i].valueFrom.secretKeyRef`.
    SecretKeyRef {
        /// Index in `env`.
        env_index: usize,
        /// Variable name.
        var: String,
        /// Secret name.
        secret: String,
    },
    /// `envFrom[i].secretRef`.
    EnvFromSecret {
        /// Index in `envFrom`.
        env_from_index: usize,
        /// Secret name.
        secret: String,
    },
    /// `env[i].value` that looks like a credential.
    LiteralCredential {
        /// Index in `env`.
        env_index: usize,
        /// Variable name.
        var: String,
        /// What it looks like (never the value: messages end up in events and logs).
        looks_like: &'static str,
    },
    /// `volumeMounts[i]` of a Secret volume, or of a projected volume with a Secret source.
    SecretVolume {
        /// Index in `volumeMounts`.
        mount_index: usize,
        /// Pod volume name.
        volume: String,
        /// Secret names the volume carries.
        secrets: Vec<String>,
        /// Mount path in the container.
        mount_path: String,
    },
}

/// A credential held by an agent container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Container array.
    pub list: ContainerList,
    /// Index of the container in that array.
    pub container_index: usize,
    /// Container name, for the message.
    pub container: String,
    /// What was found.
    pub finding: Finding,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let container = &self.container;
        match &self.finding {
            Finding::SecretKeyRef { var, secret, .. } => {
                write!(f, "container {container:?}: env {var:?} comes from secret {secret:?} (valueFrom.secretKeyRef)")
            }
            Finding::EnvFromSecret { env_from_index, secret } => {
                write!(f, "container {container:?}: envFrom[{env_from_index}] imports every key of secret {secret:?} (envFrom.secretRef)")
            }
            Finding::LiteralCredential { var, looks_like, .. } => {
                write!(f, "container {container:?}: env {var:?} has a literal value that looks like {looks_like}")
            }
            Finding::SecretVolume { volume, secrets, mount_path, .. } => write!(
                f,
                "container {container:?}: volume {volume:?} (secret {}) is mounted at {mount_path}",
                secrets.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

/// The message of a denial for `violations`: every violation, so one round trip fixes all.
pub fn denial_message(violations: &[Violation]) -> String {
    format!(
        "credential-broker: agent containers must not hold credentials (the broker fetches them on their behalf): {}",
        violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )
}

/// The admission warning for a violation that was stripped.
pub fn strip_warning(violation: &Violation) -> String {
    format!("credential-broker stripped an ambient credential: {violation}")
}
