//! `credential-broker explain`: the route, scope and policy decision for a request, without
//! minting anything. The answer to "why was my request denied?".

use serde_json::{json, Value};

use crate::classify;
use crate::config::{Config, ProviderConfig};
use crate::inject::header::check_placeholder;
use crate::policy::{effective_ttl, PolicyEngine, RequestFacts};
use crate::providers::{oauth2, Identity};

pub struct ExplainRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub agent_id: Option<String>,
    pub tenant: Option<String>,
}

pub fn explain(config: &Config, req: &ExplainRequest) -> anyhow::Result<Value> {
    let url = url::Url::parse(&req.url).map_err(|e| anyhow::anyhow!("--url {:?}: {e}", req.url))?;
    let host = url.host_str().ok_or_else(|| anyhow::anyhow!("--url has no host"))?.to_ascii_lowercase();
    let method = req.method.to_ascii_uppercase();
    let identity = Identity {
        agent_id: req.agent_id.clone().unwrap_or_else(|| config.identity.agent_id.clone()),
        tenant: req.tenant.clone().unwrap_or_else(|| config.identity.tenant.clone()),
        labels: config.identity.labels.clone(),
    };
    let endpoint_route = config.routes.iter().find(|r| {
        r.endpoint.as_ref().is_some_and(|e| e.upstream.host_str() == Some(host.as_str()) && url.path().starts_with(e.upstream.path().trim_end_matches('/')))
    });
    let Some(route) = config.route_for_host(&host).or(endpoint_route) else {
        let reason = if config.is_passthrough(&host) {
            "host is on the passthrough list: tunnelled without interception or credentials"
        } else {
            "no route for this host: the broker refuses it (403)"
        };
        return Ok(json!({"route": null, "host": host, "decision": {"allow": false, "reason": reason}}));
    };
    let scope = match classify::http::classify(&method, url.scheme(), &host, url.path()) {
        Ok(s) => s,
        Err(e) => return Ok(json!({"route": route.name, "scope": null, "decision": {"allow": false, "reason": e.reason}})),
    };
    let policy = PolicyEngine::load(&config.policy.file, &config.policy.query)?;
    let facts = RequestFacts { id: "explain".into(), protocol: url.scheme().into(), method: method.clone(), host: host.clone(), path: url.path().into() };
    let mut decision = policy.decide(&identity, &facts, &scope);
    let mut headers = http::HeaderMap::new();
    for (k, v) in &req.headers {
        headers.append(http::HeaderName::from_bytes(k.as_bytes())?, http::HeaderValue::from_str(v)?);
    }
    if decision.allow {
        if let Err(e) = check_placeholder(&headers, &route.inject) {
            decision = crate::policy::Decision::deny(e.to_string());
        }
    }
    let provider = config.providers.get(&route.provider);
    let credential_scope = match provider {
        Some(ProviderConfig::OAuth2 { scopes, scopes_by_method, .. }) => oauth2::credential_scope(scopes, scopes_by_method, &method),
        Some(ProviderConfig::Env { variable, .. }) => format!("env:{variable}"),
        None => String::new(),
    };
    Ok(json!({
        "route": route.name,
        "agent": identity,
        "scope": scope,
        "decision": decision,
        "credential": decision.allow.then(|| json!({
            "provider": route.provider,
            "kind": provider.map(ProviderConfig::kind),
            "credential_scope": credential_scope,
            "ttl_seconds": effective_ttl(&decision, config.credentials.default_ttl).as_secs(),
            "inject_header": route.inject.name.as_str(),
        })),
    }))
}
