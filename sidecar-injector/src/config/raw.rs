//! The injector config as written in YAML: serde structs that reject unknown keys.
//!
//! Nothing here is validated beyond its type; [`super::InjectorConfig::from_raw`] does that.

use serde::Deserialize;

/// Top level of the injector config file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Settings of the injected broker container.
    #[serde(default)]
    pub broker: RawBroker,
    /// `proxy` (default) or `transparent`; a pod's `credential-broker/mode` annotation wins.
    pub mode: Option<String>,
    /// Transparent-mode settings.
    #[serde(default)]
    pub transparent: RawTransparent,
    /// No-ambient-credentials settings.
    #[serde(default)]
    pub credentials: RawCredentials,
}

/// `broker:` section.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBroker {
    pub image: Option<String>,
    pub image_pull_policy: Option<String>,
    /// `true` (default): an init container with `restartPolicy: Always` (Kubernetes 1.29+).
    pub native_sidecar: Option<bool>,
    pub config_map: Option<String>,
    #[serde(default)]
    pub resources: RawResources,
}

/// `broker.resources:` section.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawResources {
    #[serde(default)]
    pub requests: RawCpuMemory,
    #[serde(default)]
    pub limits: RawCpuMemory,
}

/// A `cpu` / `memory` pair of quantities.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCpuMemory {
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

/// `transparent:` section.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTransparent {
    pub redirect_ports: Option<Vec<u16>>,
}

/// `credentials:` section.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCredentials {
    /// Namespaces where ambient credentials are stripped with a warning instead of denied.
    #[serde(default)]
    pub strip_namespaces: Vec<String>,
}
