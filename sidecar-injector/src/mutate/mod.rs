//! The mutation: a pure function from a pod (and its namespace) to a JSON Patch, or a denial.
//!
//! The webhook and offline injection both call [`mutate`], so a manifest injected offline is
//! exactly what the webhook would have made of it, and is refused for exactly the same reasons.

mod agents;
mod broker;
mod options;
mod patch_builder;
mod strip;
#[cfg(test)]
mod tests;

use json_patch::Patch;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{json, Value};
use thiserror::Error;

use crate::ambient::{denial_message, scan_pod};
use crate::config::{InjectorConfig, Mode};
use crate::conventions::{ANNOTATION_STATUS, STATUS_INJECTED};
pub use options::{is_injected, NamespaceInfo, PodOptIn, PodOptions};
use patch_builder::{child, pointer, PatchBuilder};

/// Why a pod is refused. The message goes back to whoever created the pod.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Denial {
    /// An agent container holds credentials (message names container and variable).
    #[error("{0}")]
    AmbientCredentials(String),
    /// The object is not a pod the injector can read.
    #[error("credential-broker: object is not a valid pod: {0}")]
    InvalidPod(String),
    /// A `credential-broker/*` annotation has a value the injector cannot use.
    #[error("credential-broker: annotation {annotation}: {message}")]
    BadAnnotation {
        /// Annotation key.
        annotation: &'static str,
        /// What is wrong with its value.
        message: String,
    },
    /// The broker's ports (and transparent mode's iptables rules) would be the node's.
    #[error("credential-broker: cannot inject into a hostNetwork pod: the broker's ports and rules would be the node's")]
    HostNetwork,
    /// A bug: the injector built a patch that does not apply.
    #[error("credential-broker: internal error: {0}")]
    Internal(String),
}

/// The outcome for an admitted pod: a patch (possibly empty) and warnings for the client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mutation {
    /// Operations to apply to the pod, in order.
    pub patch: Patch,
    /// Admission warnings, e.g. for stripped credentials.
    pub warnings: Vec<String>,
}

impl Mutation {
    /// Whether the pod is left as it is.
    pub fn is_empty(&self) -> bool {
        self.patch.0.is_empty()
    }
}

/// Decides what to do with `pod` (its JSON as the API server sent it) created in `namespace`.
///
/// Pods in an opted-in namespace, or opted in by annotation, are checked for ambient
/// credentials (denied, or stripped where configured) — even when opted out of injection or
/// already injected. They are then injected unless opted out or already injected.
pub fn mutate(pod: &Value, config: &InjectorConfig, namespace: &NamespaceInfo) -> Result<Mutation, Denial> {
    let typed: Pod = serde_json::from_value(pod.clone()).map_err(|err| Denial::InvalidPod(err.to_string()))?;
    if typed.spec.is_none() {
        return Err(Denial::InvalidPod("it has no spec".to_owned()));
    }
    let opt_in = options::pod_opt_in(&typed)?;
    if !namespace.inject_enabled && opt_in != PodOptIn::In {
        return Ok(Mutation::default());
    }

    let mut builder = PatchBuilder::new(pod.clone());
    let mut warnings = Vec::new();
    let violations = scan_pod(&typed);
    if !violations.is_empty() {
        if !config.strip_namespaces.contains(&namespace.name) {
            return Err(Denial::AmbientCredentials(denial_message(&violations)));
        }
        warnings = strip::strip_violations(&mut builder, &violations)?;
    }

    if opt_in != PodOptIn::Out && !is_injected(&typed) {
        let options = PodOptions::from_pod(&typed, config, namespace)?;
        if typed.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            return Err(Denial::HostNetwork);
        }
        inject(&mut builder, config, &options)?;
    }
    Ok(Mutation { patch: builder.into_patch(), warnings })
}

fn inject(builder: &mut PatchBuilder, config: &InjectorConfig, options: &PodOptions) -> Result<(), Denial> {
    let transparent = options.mode == Mode::Transparent;
    let annotations = pointer(["metadata", "annotations"]);
    builder.ensure(&pointer(["metadata"]), json!({}))?;
    builder.ensure(&annotations, json!({}))?;
    builder.add(child(&annotations, ANNOTATION_STATUS), json!(STATUS_INJECTED))?;
    // Agents must not hold the pod's Kubernetes token: with it they could read Secrets or act
    // as the pod. Only the broker gets a token, projected with its own audience.
    builder.add(pointer(["spec", "automountServiceAccountToken"]), json!(false))?;

    agents::configure_agents(builder, transparent)?;
    agents::remove_unused_default_token_volumes(builder)?;

    let volumes = pointer(["spec", "volumes"]);
    for volume in broker::broker_volumes(options) {
        builder.upsert(&volumes, "name", to_value(&volume)?)?;
    }

    let native = config.broker.native_sidecar;
    let broker = to_value(&broker::broker_container(config, options, native))?;
    let mut init = Vec::new();
    if transparent {
        // Before the broker, so the redirect is in place before any agent can open a socket.
        init.push(to_value(&broker::iptables_init_container(config))?);
    }
    if native {
        init.push(broker);
    } else {
        builder.prepend(&pointer(["spec", "containers"]), vec![broker])?;
    }
    if !init.is_empty() {
        builder.prepend(&pointer(["spec", "initContainers"]), init)?;
    }
    Ok(())
}

fn to_value(container: &impl serde::Serialize) -> Result<Value, Denial> {
    serde_json::to_value(container).map_err(|err| Denial::Internal(format!("cannot serialize an injected object: {err}")))
}

/// Names of the injected containers, for callers that want to find them.
pub fn injected_container(pod: &Pod) -> Option<&Container> {
    let spec = pod.spec.as_ref()?;
    spec.init_containers.iter().flatten().chain(spec.containers.iter()).find(|c| c.name == crate::conventions::BROKER_CONTAINER_NAME)
}
