//! Policy: the embedded Rego engine (regorus), its input document and the [`Decision`].
//!
//! Input (stable, versioned by `input.version`):
//! `{version, agent:{id,tenant,labels}, request:{id,protocol,method,host,path,upgrade?},
//!   scope:{service,action,resource,region}, time}`
//! `request.path` is the canonical path (dot-segments resolved, see `classify::path`), the one
//! forwarded. `request.upgrade` is present only on a protocol upgrade (the lower-cased `Upgrade`
//! token, e.g. `"websocket"`); such a request's scope action is `http:UPGRADE`, not its method.
//! Output of the configured rule (default `data.credential_broker.decision`):
//! `{allow: bool, reason: string, ttl_seconds?: number}`.

mod reload;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::classify::{Permission, Scope};
use crate::providers::Identity;

pub use reload::spawn_reloader;

/// The input document's version; bumped on any incompatible change.
pub const INPUT_VERSION: u32 = 1;

/// What the policy decided for a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allow: bool,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

impl Decision {
    pub fn deny(reason: impl Into<String>) -> Self {
        Decision { allow: false, reason: reason.into(), ttl_seconds: None }
    }
}

/// The request facts the policy sees besides the scope.
#[derive(Debug, Clone, Serialize)]
pub struct RequestFacts {
    pub id: String,
    pub protocol: String,
    pub method: String,
    pub host: String,
    pub path: String,
    /// The protocol an upgrade asks for (`websocket`); absent on ordinary requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<String>,
}

#[derive(Serialize)]
struct Input<'a> {
    version: u32,
    agent: AgentInput<'a>,
    request: &'a RequestFacts,
    scope: ScopeInput<'a>,
    time: String,
}

#[derive(Serialize)]
struct AgentInput<'a> {
    id: &'a str,
    tenant: &'a str,
    labels: &'a std::collections::BTreeMap<String, String>,
}

#[derive(Serialize)]
struct ScopeInput<'a> {
    service: &'a str,
    action: &'a str,
    resource: &'a str,
    region: Option<&'a str>,
}

struct Loaded {
    compiled: regorus::CompiledPolicy,
    fingerprint: Fingerprint,
}

/// What identifies one version of the policy file (content hash, so a touch does not reload).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(String);

/// The embedded Rego engine with the current policy.
pub struct PolicyEngine {
    file: PathBuf,
    query: String,
    current: RwLock<Arc<Loaded>>,
}

#[derive(Debug, thiserror::Error)]
#[error("policy {file}: {reason}")]
pub struct PolicyError {
    pub file: String,
    pub reason: String,
}

impl PolicyEngine {
    /// Load and compile the policy; an error names the file and what is wrong with it.
    pub fn load(file: &Path, query: &str) -> Result<Self, PolicyError> {
        let loaded = compile(file, query)?;
        Ok(PolicyEngine { file: file.to_path_buf(), query: query.into(), current: RwLock::new(Arc::new(loaded)) })
    }

    /// Decide one request: the policy runs once per permission in the scope and the request is
    /// allowed only if every permission is. The shortest `ttl_seconds` wins.
    pub fn decide(&self, identity: &Identity, request: &RequestFacts, scope: &Scope) -> Decision {
        let loaded = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        let mut ttl: Option<u64> = None;
        let mut reasons = Vec::new();
        for permission in &scope.permissions {
            let d = evaluate(&loaded.compiled, identity, request, scope, permission);
            if !d.allow {
                return d;
            }
            ttl = match (ttl, d.ttl_seconds) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if !reasons.contains(&d.reason) {
                reasons.push(d.reason);
            }
        }
        if scope.permissions.is_empty() {
            return Decision::deny("request needs no permission that policy could check");
        }
        Decision { allow: true, reason: reasons.join("; "), ttl_seconds: ttl }
    }

    /// Reload if the file changed. A policy that fails to compile keeps the old one in force.
    pub fn reload_if_changed(&self) -> Result<bool, PolicyError> {
        let fingerprint = fingerprint(&self.file)?;
        if self.current.read().unwrap_or_else(|e| e.into_inner()).fingerprint == fingerprint {
            return Ok(false);
        }
        let loaded = compile(&self.file, &self.query)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(loaded);
        Ok(true)
    }

    pub fn file(&self) -> &Path {
        &self.file
    }
}

fn compile(file: &Path, query: &str) -> Result<Loaded, PolicyError> {
    let err = |reason: String| PolicyError { file: file.display().to_string(), reason };
    let fingerprint = fingerprint(file)?;
    let mut engine = regorus::Engine::new();
    engine.add_policy_from_file(file).map_err(|e| err(e.to_string()))?;
    let compiled = engine.compile_with_entrypoint(&regorus::Rc::from(query)).map_err(|e| err(e.to_string()))?;
    Ok(Loaded { compiled, fingerprint })
}

fn fingerprint(file: &Path) -> Result<Fingerprint, PolicyError> {
    use sha2::Digest;
    let bytes = std::fs::read(file).map_err(|e| PolicyError { file: file.display().to_string(), reason: e.to_string() })?;
    Ok(Fingerprint(hex::encode(sha2::Sha256::digest(&bytes))))
}

fn evaluate(compiled: &regorus::CompiledPolicy, identity: &Identity, request: &RequestFacts, scope: &Scope, permission: &Permission) -> Decision {
    let input = Input {
        version: INPUT_VERSION,
        agent: AgentInput { id: &identity.agent_id, tenant: &identity.tenant, labels: &identity.labels },
        request,
        scope: ScopeInput { service: &scope.service, action: &permission.action, resource: &permission.resource, region: scope.region.as_deref() },
        time: crate::audit::record::rfc3339(SystemTime::now()),
    };
    let input = match serde_json::to_value(&input) {
        Ok(v) => regorus::Value::from(v),
        Err(e) => return Decision::deny(format!("policy input could not be built: {e}")),
    };
    match compiled.eval_with_input(input) {
        Ok(value) => parse_decision(&value),
        // Fail closed: an evaluation error (e.g. conflicting rule values) is a deny.
        Err(e) => Decision::deny(format!("policy evaluation failed: {e}")),
    }
}

fn parse_decision(value: &regorus::Value) -> Decision {
    if *value == regorus::Value::Undefined {
        return Decision::deny("policy produced no decision");
    }
    let json = match serde_json::to_value(value) {
        Ok(j) => j,
        Err(e) => return Decision::deny(format!("policy decision is not JSON: {e}")),
    };
    let Some(allow) = json.get("allow").and_then(|a| a.as_bool()) else {
        return Decision::deny("policy decision has no boolean `allow`");
    };
    let reason = json.get("reason").and_then(|r| r.as_str()).unwrap_or(if allow { "allowed by policy" } else { "denied by policy" });
    let ttl_seconds = json.get("ttl_seconds").and_then(|t| t.as_u64());
    Decision { allow, reason: reason.to_string(), ttl_seconds }
}

/// How long to keep a credential: the policy's `ttl_seconds` if given, never above the default.
pub fn effective_ttl(decision: &Decision, default: Duration) -> Duration {
    decision.ttl_seconds.map(Duration::from_secs).map_or(default, |t| t.min(default))
}

#[cfg(test)]
mod tests;
