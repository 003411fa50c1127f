//! Offline injection: the webhook's mutation applied to manifests on disk, for people who
//! deploy with plain manifests or GitOps.
//!
//! Every pod template in Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs,
//! CronJobs (and `kind: List` items) goes through [`crate::mutate::mutate`] with the same
//! checks; other objects pass through unchanged. Output is all-or-nothing: if any object is
//! denied nothing is printed, so `... | kubectl apply -f -` never applies half a set.

mod order;
#[cfg(test)]
mod tests;

use serde::Deserialize;
use serde_json::{json, Value};
use thiserror::Error;

use crate::config::InjectorConfig;
use crate::mutate::{mutate, Denial, NamespaceInfo};

/// What offline injection knows about the target namespace (the webhook learns it from the
/// API server).
#[derive(Debug, Clone, Default)]
pub struct OfflineOptions {
    /// Namespace for objects that name none (default `default`).
    pub namespace: Option<String>,
    /// Treat the namespace as labelled `credential-broker/inject=enabled`.
    pub namespace_label: bool,
}

/// Why a manifest stream could not be injected.
#[derive(Debug, Error)]
pub enum OfflineError {
    /// A document is not YAML, or cannot be represented as JSON.
    #[error("document {document}: {message}")]
    Yaml {
        /// 1-based document number.
        document: usize,
        /// Parser message.
        message: String,
    },
    /// An object is laid out in a way the injector cannot read.
    #[error("document {document} ({object}): {message}")]
    Shape {
        /// 1-based document number.
        document: usize,
        /// `Kind "name"`.
        object: String,
        /// What is wrong.
        message: String,
    },
    /// Objects the webhook would deny, with the webhook's messages.
    #[error("{}", .0.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Denied(Vec<DeniedObject>),
}

/// One denied object.
#[derive(Debug, Clone)]
pub struct DeniedObject {
    /// 1-based document number.
    pub document: usize,
    /// `Kind "name"`.
    pub object: String,
    /// The webhook's denial.
    pub denial: Denial,
}

impl std::fmt::Display for DeniedObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "document {} ({}) denied: {}", self.document, self.object, self.denial)
    }
}

/// Injected manifests and the warnings the webhook would have returned.
#[derive(Debug, Clone, Default)]
pub struct Injected {
    /// The manifests, as multi-document YAML.
    pub yaml: String,
    /// Admission warnings, prefixed with their object.
    pub warnings: Vec<String>,
}

/// Injects every pod template in a (multi-document) YAML stream.
pub fn inject_manifests(text: &str, config: &InjectorConfig, options: &OfflineOptions) -> Result<Injected, OfflineError> {
    let mut outputs = Vec::new();
    let mut warnings = Vec::new();
    let mut denied = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(text).enumerate() {
        let number = index + 1;
        let yaml_error = |message: String| OfflineError::Yaml { document: number, message };
        let original = serde_norway::Value::deserialize(document).map_err(|err| yaml_error(err.to_string()))?;
        if original.is_null() {
            continue; // an empty document, e.g. after a trailing `---`
        }
        let mut object: Value = serde_json::to_value(&original).map_err(|err| yaml_error(err.to_string()))?;
        match inject_object(&mut object, config, options, number) {
            Ok(object_warnings) => warnings.extend(object_warnings),
            Err(ObjectError::Denied(mut list)) => denied.append(&mut list),
            Err(ObjectError::Fatal(err)) => return Err(err),
        }
        let ordered = order::like(Some(&original), &object);
        outputs.push(serde_norway::to_string(&ordered).map_err(|err| yaml_error(err.to_string()))?);
    }
    if !denied.is_empty() {
        return Err(OfflineError::Denied(denied));
    }
    Ok(Injected { yaml: outputs.join("---\n"), warnings })
}

enum ObjectError {
    Denied(Vec<DeniedObject>),
    Fatal(OfflineError),
}

/// Where the pod template sits in each workload kind.
fn template_pointer(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController" => Some("/spec/template"),
        "CronJob" => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

fn describe(object: &Value) -> String {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("object");
    let name = object.pointer("/metadata/name").or_else(|| object.pointer("/metadata/generateName")).and_then(Value::as_str).unwrap_or("");
    format!("{kind} {name:?}")
}

fn inject_object(object: &mut Value, config: &InjectorConfig, options: &OfflineOptions, document: usize) -> Result<Vec<String>, ObjectError> {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("").to_owned();
    let namespace = NamespaceInfo {
        name: object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| options.namespace.clone())
            .unwrap_or_else(|| "default".to_owned()),
        inject_enabled: options.namespace_label,
    };
    let described = describe(object);
    let with_object = |warning: String| format!("{described}: {warning}");
    let deny = |denial: Denial| ObjectError::Denied(vec![DeniedObject { document, object: described.clone(), denial }]);

    if kind == "List" {
        return inject_list(object, config, options, document);
    }
    if kind == "Pod" {
        let mutation = mutate(object, config, &namespace).map_err(deny)?;
        apply(object, &mutation.patch, document, &described)?;
        return Ok(mutation.warnings.into_iter().map(with_object).collect());
    }
    let Some(pointer) = template_pointer(&kind) else {
        return Ok(Vec::new());
    };
    let shape = |message: &str| ObjectError::Fatal(OfflineError::Shape { document, object: described.clone(), message: message.to_owned() });
    let template = object.pointer_mut(pointer).filter(|t| t.is_object()).ok_or_else(|| shape(&format!("no pod template at {pointer}")))?;
    // The template is judged as the pod the controller will create from it.
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": template.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": template.get("spec").cloned().unwrap_or(Value::Null),
    });
    let mutation = mutate(&pod, config, &namespace).map_err(deny)?;
    apply(&mut pod, &mutation.patch, document, &described)?;
    if let (Some(template), Some(pod)) = (template.as_object_mut(), pod.as_object_mut()) {
        for key in ["metadata", "spec"] {
            if let Some(value) = pod.remove(key) {
                template.insert(key.to_owned(), value);
            }
        }
    }
    Ok(mutation.warnings.into_iter().map(with_object).collect())
}

fn inject_list(list: &mut Value, config: &InjectorConfig, options: &OfflineOptions, document: usize) -> Result<Vec<String>, ObjectError> {
    let mut warnings = Vec::new();
    let mut denied = Vec::new();
    for item in list.get_mut("items").and_then(Value::as_array_mut).into_iter().flatten() {
        match inject_object(item, config, options, document) {
            Ok(item_warnings) => warnings.extend(item_warnings),
            Err(ObjectError::Denied(mut list)) => denied.append(&mut list),
            Err(fatal) => return Err(fatal),
        }
    }
    if denied.is_empty() {
        Ok(warnings)
    } else {
        Err(ObjectError::Denied(denied))
    }
}

fn apply(object: &mut Value, patch: &json_patch::Patch, document: usize, described: &str) -> Result<(), ObjectError> {
    json_patch::patch(object, patch)
        .map_err(|err| ObjectError::Fatal(OfflineError::Shape { document, object: described.to_owned(), message: format!("patch does not apply: {err}") }))
}
