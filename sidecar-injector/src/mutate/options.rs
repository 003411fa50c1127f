//! Reads the per-pod choices (annotations) and the opt-in decision.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::Denial;
use crate::config::{InjectorConfig, Mode};
use crate::conventions::{
    ANNOTATION_AGENT_ID, ANNOTATION_CONFIG, ANNOTATION_INJECT, ANNOTATION_MODE, ANNOTATION_POLICY, ANNOTATION_STATUS, ANNOTATION_TENANT, BROKER_CONTAINER_NAME,
    STATUS_INJECTED,
};
use crate::names;

/// What the webhook knows about the pod's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Namespace name.
    pub name: String,
    /// Whether the namespace carries `credential-broker/inject=enabled`.
    pub inject_enabled: bool,
}

/// The pod's own say, from the `credential-broker/inject` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodOptIn {
    /// `"true"`.
    In,
    /// `"false"`.
    Out,
    /// Absent: the namespace decides.
    Unset,
}

fn annotations(pod: &Pod) -> Option<&BTreeMap<String, String>> {
    pod.metadata.annotations.as_ref()
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    annotations(pod).and_then(|a| a.get(key)).map(String::as_str)
}

/// The pod's `credential-broker/inject` annotation.
pub fn pod_opt_in(pod: &Pod) -> Result<PodOptIn, Denial> {
    match annotation(pod, ANNOTATION_INJECT) {
        None => Ok(PodOptIn::Unset),
        Some("true") => Ok(PodOptIn::In),
        Some("false") => Ok(PodOptIn::Out),
        Some(other) => Err(Denial::BadAnnotation { annotation: ANNOTATION_INJECT, message: format!("{other:?} is neither \"true\" nor \"false\"") }),
    }
}

/// Whether the pod already carries the broker (by annotation or by container name).
pub fn is_injected(pod: &Pod) -> bool {
    let annotated = annotation(pod, ANNOTATION_STATUS) == Some(STATUS_INJECTED);
    let has_broker =
        pod.spec.as_ref().is_some_and(|spec| spec.containers.iter().chain(spec.init_containers.iter().flatten()).any(|c| c.name == BROKER_CONTAINER_NAME));
    annotated || has_broker
}

/// Per-pod injection choices, with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOptions {
    /// Proxy or transparent.
    pub mode: Mode,
    /// ConfigMap holding the broker config.
    pub config_map: String,
    /// Agent id reported to policy and audit.
    pub agent_id: String,
    /// Tenant every credential is bound to.
    pub tenant: String,
    /// Policy bundle, when the pod names one.
    pub policy: Option<String>,
}

impl PodOptions {
    /// Reads the annotations of `pod`, defaulting from `config` and the namespace.
    pub fn from_pod(pod: &Pod, config: &InjectorConfig, namespace: &NamespaceInfo) -> Result<Self, Denial> {
        let mode = match annotation(pod, ANNOTATION_MODE) {
            None => config.default_mode,
            Some(value) => value.parse().map_err(|message| Denial::BadAnnotation { annotation: ANNOTATION_MODE, message })?,
        };
        let config_map = annotation(pod, ANNOTATION_CONFIG).unwrap_or(&config.broker.config_map).to_owned();
        if !names::is_dns_subdomain(&config_map) {
            return Err(Denial::BadAnnotation { annotation: ANNOTATION_CONFIG, message: format!("{config_map:?} is not a valid ConfigMap name") });
        }
        let service_account = pod.spec.as_ref().and_then(|spec| spec.service_account_name.as_deref()).filter(|name| !name.is_empty()).unwrap_or("default");
        let agent_id = non_empty(pod, ANNOTATION_AGENT_ID)?.unwrap_or_else(|| format!("{}/{service_account}", namespace.name));
        let tenant = non_empty(pod, ANNOTATION_TENANT)?.unwrap_or_else(|| namespace.name.clone());
        let policy = non_empty(pod, ANNOTATION_POLICY)?;
        Ok(PodOptions { mode, config_map, agent_id, tenant, policy })
    }
}

/// An annotation's value when present; present but blank is a mistake worth refusing, since a
/// blank agent id or tenant would silently share one identity across pods.
fn non_empty(pod: &Pod, key: &'static str) -> Result<Option<String>, Denial> {
    match annotation(pod, key) {
        None => Ok(None),
        Some(value) if value.trim().is_empty() => Err(Denial::BadAnnotation { annotation: key, message: "must not be empty".to_owned() }),
        Some(value) => Ok(Some(value.to_owned())),
    }
}
