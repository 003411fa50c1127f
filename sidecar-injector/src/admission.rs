//! AdmissionReview in, AdmissionReview out: the webhook's protocol around [`crate::mutate`].
//!
//! A body that is not an AdmissionReview at all gets an HTTP 400 naming the problem. A
//! well-formed review whose object cannot be used gets a proper AdmissionReview answer with
//! `allowed: false`, so the API server shows the reason to whoever created the pod.

use base64::Engine as _;
use kube_core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube_core::{DynamicObject, TypeMeta};
use serde_json::Value;
use thiserror::Error;

use crate::config::InjectorConfig;
use crate::mutate::{mutate, NamespaceInfo};

/// The only AdmissionReview version the webhook speaks (the webhook config asks for it).
pub const ADMISSION_API_VERSION: &str = "admission.k8s.io/v1";
/// Kind of the review document.
pub const ADMISSION_KIND: &str = "AdmissionReview";

/// Why a body could not be treated as an AdmissionReview (answered with HTTP 400).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ReviewError {
    /// Not JSON.
    #[error("request body is not JSON: {0}")]
    NotJson(String),
    /// JSON, but some other document.
    #[error("expected apiVersion {ADMISSION_API_VERSION} kind {ADMISSION_KIND}, got apiVersion {api_version:?} kind {kind:?}")]
    WrongKind {
        /// `apiVersion` found (empty when missing).
        api_version: String,
        /// `kind` found (empty when missing).
        kind: String,
    },
    /// An AdmissionReview without `request`.
    #[error("AdmissionReview has no request")]
    NoRequest,
    /// `request` lacks fields every review has (uid, kind, operation, ...).
    #[error("AdmissionReview request is malformed: {0}")]
    MalformedRequest(String),
}

/// How the namespace of the reviewed pod relates to opt-in, which the webhook learns from the
/// path it is called on (each webhook entry's namespaceSelector decides which path is called;
/// the webhook itself has no access to the Kubernetes API to read namespace labels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NamespaceOptIn {
    /// Called for namespaces labelled `credential-broker/inject=enabled` (`/mutate`).
    Labelled,
    /// Called for other namespaces; only pods annotated `"true"` are touched (`/mutate/annotated`).
    Unlabelled,
}

/// Answers one AdmissionReview body with the AdmissionReview response document.
pub fn review(body: &[u8], config: &InjectorConfig, opt_in: NamespaceOptIn) -> Result<Value, ReviewError> {
    let document: Value = serde_json::from_slice(body).map_err(|err| ReviewError::NotJson(err.to_string()))?;
    let field = |key: &str| document.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version != ADMISSION_API_VERSION || kind != ADMISSION_KIND {
        return Err(ReviewError::WrongKind { api_version, kind });
    }
    let mut request_value = match document.get("request") {
        Some(request @ Value::Object(_)) => request.clone(),
        _ => return Err(ReviewError::NoRequest),
    };
    // The object is judged separately: a bad object deserves a denial the user sees, not a
    // transport error the API server turns into "failed calling webhook".
    let object = request_value
        .as_object_mut()
        .and_then(|map| {
            map.remove("oldObject");
            map.remove("object")
        })
        .unwrap_or(Value::Null);
    let mut request: AdmissionRequest<DynamicObject> = serde_json::from_value(request_value).map_err(|err| ReviewError::MalformedRequest(err.to_string()))?;
    request.types = TypeMeta { api_version: ADMISSION_API_VERSION.to_owned(), kind: ADMISSION_KIND.to_owned() };
    let response = respond(&request, &object, config, opt_in);
    Ok(encode_response(response))
}

fn respond(request: &AdmissionRequest<DynamicObject>, object: &Value, config: &InjectorConfig, opt_in: NamespaceOptIn) -> AdmissionResponse {
    let allowed = AdmissionResponse::from(request);
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    // Only creation is mutated: a pod's containers cannot change after it exists, and the
    // webhook config sends only CREATE anyway; anything else is let through untouched.
    if !matches!(request.operation, Operation::Create) || !is_pod {
        return allowed;
    }
    if !object.is_object() {
        return deny(allowed, "credential-broker: admission request has no object");
    }
    let namespace = NamespaceInfo {
        name: request
            .namespace
            .clone()
            .or_else(|| object.pointer("/metadata/namespace").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or_else(|| "default".to_owned()),
        inject_enabled: opt_in == NamespaceOptIn::Labelled,
    };
    match mutate(object, config, &namespace) {
        Ok(mutation) => {
            tracing::info!(
                uid = %request.uid,
                namespace = %namespace.name,
                pod = %pod_name(object),
                operations = mutation.patch.0.len(),
                warnings = mutation.warnings.len(),
                "admitted"
            );
            let warnings = mutation.warnings.clone();
            let mut response = if mutation.is_empty() {
                allowed
            } else {
                match allowed.clone().with_patch(mutation.patch) {
                    Ok(response) => response,
                    Err(err) => return deny(allowed, format!("credential-broker: internal error: {err}")),
                }
            };
            if !warnings.is_empty() {
                response.warnings = Some(warnings);
            }
            response
        }
        Err(denial) => {
            tracing::info!(
                uid = %request.uid,
                namespace = %namespace.name,
                pod = %pod_name(object),
                reason = %denial,
                "denied"
            );
            deny(allowed, denial)
        }
    }
}

fn deny(response: AdmissionResponse, message: impl ToString) -> AdmissionResponse {
    let mut response = response.deny(message);
    response.result.code = 403;
    response.result.reason = "Forbidden".to_owned();
    response
}

/// A pod's name for logs: `name`, else `generateName` (pods from controllers have only that).
fn pod_name(object: &Value) -> &str {
    ["/metadata/name", "/metadata/generateName"].iter().find_map(|p| object.pointer(p).and_then(Value::as_str)).unwrap_or("")
}

/// Serializes the review; the patch goes out base64-encoded, as `[]byte` is in Kubernetes JSON
/// (kube-core would write it as an array of numbers).
fn encode_response(response: AdmissionResponse) -> Value {
    let mut review = serde_json::to_value(response.into_review()).unwrap_or_else(|err| {
        serde_json::json!({
            "apiVersion": ADMISSION_API_VERSION,
            "kind": ADMISSION_KIND,
            "response": {"allowed": false, "status": {"message": format!("credential-broker: internal error: {err}")}},
        })
    });
    if let Some(patch) = review.pointer_mut("/response/patch") {
        let bytes: Vec<u8> =
            patch.as_array().map(|items| items.iter().filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok())).collect()).unwrap_or_default();
        *patch = Value::String(base64::engine::general_purpose::STANDARD.encode(bytes));
    }
    review
}

#[cfg(test)]
mod tests;
