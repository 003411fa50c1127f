//! Injector configuration: defaults for everything the injector writes, read from YAML in two
//! steps (raw serde structs, then validation whose errors name the key path).

mod raw;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use thiserror::Error;

use crate::conventions;
use crate::names;
pub use raw::RawConfig;

/// How agent traffic reaches the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Agents get `HTTP(S)_PROXY` pointing at the broker's forward proxy.
    Proxy,
    /// An init container redirects outbound traffic to the broker with iptables.
    Transparent,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "proxy" => Ok(Mode::Proxy),
            "transparent" => Ok(Mode::Transparent),
            other => Err(format!("unknown mode {other:?}, expected proxy or transparent")),
        }
    }
}

/// A cpu / memory pair of Kubernetes quantities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuMemory {
    /// CPU quantity, e.g. `50m`.
    pub cpu: String,
    /// Memory quantity, e.g. `32Mi`.
    pub memory: String,
}

/// Settings of the injected broker container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerSettings {
    /// Image of the broker (and of the iptables init container).
    pub image: String,
    /// Optional `imagePullPolicy`; unset lets Kubernetes choose.
    pub image_pull_policy: Option<String>,
    /// Inject as a native sidecar (init container, `restartPolicy: Always`) rather than a plain
    /// container; plain containers keep Jobs from completing, so only old clusters want `false`.
    pub native_sidecar: bool,
    /// ConfigMap with the broker config when the pod's annotation names none.
    pub config_map: String,
    /// Resource requests.
    pub requests: CpuMemory,
    /// Resource limits.
    pub limits: CpuMemory,
}

/// The validated injector configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectorConfig {
    /// Broker container settings.
    pub broker: BrokerSettings,
    /// Mode for pods without a `credential-broker/mode` annotation.
    pub default_mode: Mode,
    /// Outbound TCP ports redirected to the broker in transparent mode.
    pub redirect_ports: Vec<u16>,
    /// Namespaces where ambient credentials are stripped (with a warning) instead of denied.
    pub strip_namespaces: BTreeSet<String>,
}

impl Default for InjectorConfig {
    fn default() -> Self {
        InjectorConfig {
            broker: BrokerSettings {
                image: conventions::DEFAULT_BROKER_IMAGE.to_owned(),
                image_pull_policy: None,
                native_sidecar: true,
                config_map: conventions::DEFAULT_BROKER_CONFIG_MAP.to_owned(),
                requests: default_requests(),
                limits: default_limits(),
            },
            default_mode: Mode::Proxy,
            redirect_ports: conventions::DEFAULT_REDIRECT_PORTS.to_vec(),
            strip_namespaces: BTreeSet::new(),
        }
    }
}

fn default_requests() -> CpuMemory {
    CpuMemory { cpu: "50m".to_owned(), memory: "32Mi".to_owned() }
}

fn default_limits() -> CpuMemory {
    CpuMemory { cpu: "500m".to_owned(), memory: "128Mi".to_owned() }
}

/// One problem in the config, with the key path it was found at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Dotted key path, e.g. `broker.resources.limits.cpu`.
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read injector config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML did not match the expected shape.
    #[error("injector config: {0}")]
    Parse(ConfigIssue),
    /// The values were well-formed but invalid; every issue is listed.
    #[error("injector config is invalid: {}", join_issues(.0))]
    Invalid(Vec<ConfigIssue>),
}

fn join_issues(issues: &[ConfigIssue]) -> String {
    issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl InjectorConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::from_yaml(&text)
    }

    /// Parses and validates config YAML; an empty document means all defaults.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        if text.trim().is_empty() {
            return Self::from_raw(RawConfig::default());
        }
        let deserializer = serde_norway::Deserializer::from_str(text);
        let raw: RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|err| {
            let path = err.path().to_string();
            ConfigError::Parse(ConfigIssue { path: if path == "." { "(top level)".to_owned() } else { path }, message: err.into_inner().to_string() })
        })?;
        Self::from_raw(raw)
    }

    /// Validates raw values, filling in defaults; collects every issue rather than the first.
    pub fn from_raw(raw: RawConfig) -> Result<Self, ConfigError> {
        let mut issues = Vec::new();
        let mut issue = |path: &str, message: String| issues.push(ConfigIssue { path: path.to_owned(), message });

        let image = raw.broker.image.unwrap_or_else(|| conventions::DEFAULT_BROKER_IMAGE.to_owned());
        if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
            issue("broker.image", format!("not an image reference: {image:?}"));
        }
        if let Some(policy) = &raw.broker.image_pull_policy {
            if !["Always", "IfNotPresent", "Never"].contains(&policy.as_str()) {
                issue("broker.image_pull_policy", format!("{policy:?} is not one of Always, IfNotPresent, Never"));
            }
        }
        let config_map = raw.broker.config_map.unwrap_or_else(|| conventions::DEFAULT_BROKER_CONFIG_MAP.to_owned());
        if !names::is_dns_subdomain(&config_map) {
            issue("broker.config_map", format!("{config_map:?} is not a valid ConfigMap name"));
        }

        let resources = &raw.broker.resources;
        let requests = CpuMemory {
            cpu: quantity_or(&resources.requests.cpu, &default_requests().cpu),
            memory: quantity_or(&resources.requests.memory, &default_requests().memory),
        };
        let limits = CpuMemory {
            cpu: quantity_or(&resources.limits.cpu, &default_limits().cpu),
            memory: quantity_or(&resources.limits.memory, &default_limits().memory),
        };
        for (path, value) in [
            ("broker.resources.requests.cpu", &requests.cpu),
            ("broker.resources.requests.memory", &requests.memory),
            ("broker.resources.limits.cpu", &limits.cpu),
            ("broker.resources.limits.memory", &limits.memory),
        ] {
            if !names::is_quantity(value) {
                issue(path, format!("not a Kubernetes quantity: {value:?}"));
            }
        }

        let default_mode = match raw.mode.as_deref().map(Mode::from_str) {
            None => Mode::Proxy,
            Some(Ok(mode)) => mode,
            Some(Err(message)) => {
                issue("mode", message);
                Mode::Proxy
            }
        };

        let redirect_ports = raw.transparent.redirect_ports.unwrap_or_else(|| conventions::DEFAULT_REDIRECT_PORTS.to_vec());
        if redirect_ports.is_empty() {
            issue("transparent.redirect_ports", "must not be empty".to_owned());
        }
        for (index, port) in redirect_ports.iter().enumerate() {
            let path = format!("transparent.redirect_ports[{index}]");
            if *port == 0 {
                issue(&path, "port 0 is not a port".to_owned());
            } else if broker_ports().contains(port) {
                // Redirecting a broker port would send agents' local calls to the broker
                // straight back into its transparent listener.
                issue(&path, format!("{port} is one of the broker's own ports"));
            }
        }

        let mut strip_namespaces = BTreeSet::new();
        for (index, namespace) in raw.credentials.strip_namespaces.into_iter().enumerate() {
            if !names::is_dns_label(&namespace) {
                issue(&format!("credentials.strip_namespaces[{index}]"), format!("{namespace:?} is not a valid namespace name"));
            }
            strip_namespaces.insert(namespace);
        }

        if !issues.is_empty() {
            return Err(ConfigError::Invalid(issues));
        }
        Ok(InjectorConfig {
            broker: BrokerSettings {
                image,
                image_pull_policy: raw.broker.image_pull_policy,
                native_sidecar: raw.broker.native_sidecar.unwrap_or(true),
                config_map,
                requests,
                limits,
            },
            default_mode,
            redirect_ports,
            strip_namespaces,
        })
    }
}

fn quantity_or(value: &Option<String>, default: &str) -> String {
    value.clone().unwrap_or_else(|| default.to_owned())
}

fn broker_ports() -> [u16; 5] {
    [conventions::ADMIN_PORT, conventions::HEALTH_PORT, conventions::PROXY_PORT, conventions::TRANSPARENT_PORT, conventions::POSTGRES_PORT]
}
