//! `credential-broker explain`: the route, scope and policy decision for a request, without
//! minting anything. The answer to "why was my request denied?".

use serde_json::{json, Value};

use crate::classify;
use crate::config::{Config, Inject, ProviderConfig, Route, SigV4Inject};
use crate::inject::header::check_placeholder;
use crate::policy::{effective_ttl, PolicyEngine, RequestFacts};
use crate::providers::{oauth2, Identity};

pub struct ExplainRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub agent_id: Option<String>,
    pub tenant: Option<String>,
    /// The request body (JSON and Query protocol AWS requests name their resource in it).
    pub body: Option<Vec<u8>>,
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
    let inject = match &route.inject {
        Inject::Header(h) => h,
        Inject::SigV4(sigv4) => return explain_aws(config, req, &url, route, sigv4, &identity),
    };
    let mut headers = http::HeaderMap::new();
    for (k, v) in &req.headers {
        headers.append(http::HeaderName::from_bytes(k.as_bytes())?, http::HeaderValue::from_str(v)?);
    }
    // The same path and action the proxy would decide on: the canonical path, `http:UPGRADE`
    // for an upgrade.
    let refused = |reason: String| Ok(json!({"route": route.name, "scope": null, "decision": {"allow": false, "reason": reason}}));
    let path = match classify::path::canonical_path(url.path()) {
        Ok(p) => p,
        Err(e) => return refused(format!("request path {:?} refused: {e}", url.path())),
    };
    let upgrade = match crate::pipeline::upgrade_protocol(&headers) {
        Ok(u) => u,
        Err(e) => return refused(e.to_string()),
    };
    let action = if upgrade.is_some() { "UPGRADE" } else { method.as_str() };
    let scope = match classify::http::classify(action, url.scheme(), &host, &path) {
        Ok(s) => s,
        Err(e) => return refused(e.reason),
    };
    let policy = PolicyEngine::load(&config.policy.file, &config.policy.query)?;
    let facts = RequestFacts { id: "explain".into(), protocol: url.scheme().into(), method: method.clone(), host: host.clone(), path, upgrade };
    let mut decision = policy.decide(&identity, &facts, &scope);
    if decision.allow {
        if let Err(e) = check_placeholder(&headers, inject) {
            decision = crate::policy::Decision::deny(e.to_string());
        }
    }
    let provider = config.providers.get(&route.provider);
    let credential_scope = match provider {
        Some(ProviderConfig::OAuth2 { scopes, scopes_by_method, .. }) => oauth2::credential_scope(scopes, scopes_by_method, &method),
        Some(ProviderConfig::Env { variable, .. }) => format!("env:{variable}"),
        Some(ProviderConfig::GcpSecretManager(settings)) => crate::providers::gcp::secret_credential_scope(settings),
        Some(ProviderConfig::GcpAccessToken(s)) => oauth2::credential_scope(&s.scopes, &s.scopes_by_method, &method),
        Some(ProviderConfig::AwsSecretsManager(settings)) => crate::providers::aws_secrets_manager::credential_scope(settings),
        Some(ProviderConfig::AzureKeyVault(settings)) => crate::providers::azure::key_vault::credential_scope(settings),
        Some(ProviderConfig::AzureAccessToken(settings)) => settings.scope.clone(),
        Some(ProviderConfig::PostgresNative(s)) => crate::providers::postgres_native::credential_scope(&route.provider, &s.host, &s.database),
        Some(ProviderConfig::Vault(s)) => crate::providers::vault::credential_scope(&s.engine),
        Some(ProviderConfig::Sts(_)) | None => String::new(),
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
            "inject_header": inject.name.as_str(),
        })),
    }))
}

/// AWS routes: the endpoint, the IAM scope and the exact session policy STS would be asked for.
fn explain_aws(config: &Config, req: &ExplainRequest, url: &url::Url, route: &Route, cfg: &SigV4Inject, identity: &Identity) -> anyhow::Result<Value> {
    use crate::classify::aws::{classify, decide_endpoint, is_credential_vending, resolve_endpoint, AwsRequest, SignedFor};
    let authority = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_string(),
    };
    let method = http::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())?;
    let mut headers = http::HeaderMap::new();
    for (k, v) in &req.headers {
        headers.append(http::HeaderName::from_bytes(k.as_bytes())?, http::HeaderValue::from_str(v)?);
    }
    // With the agent's signature, decide as the pipeline does; without one, by the host alone.
    let endpoint = match crate::inject::sigv4::check_agent_signature(&headers, url.query(), &cfg.placeholder_access_key_id) {
        Ok(signed) => {
            decide_endpoint(&authority, &cfg.custom_endpoints, SignedFor { service: &signed.service, region: &signed.region }).map_err(|e| e.to_string())
        }
        Err(_) => resolve_endpoint(&authority, &cfg.custom_endpoints)
            .ok_or_else(|| format!("{authority} is not a known AWS endpoint (or serves every service: add the agent's Authorization header)")),
    };
    let endpoint = match endpoint {
        Ok(endpoint) => endpoint,
        Err(reason) => {
            return Ok(json!({"route": route.name, "scope": null, "decision": {"allow": false, "reason": format!("unclassified AWS request: {reason}")}}))
        }
    };
    let aws_request = AwsRequest { method: &method, path: url.path(), query: url.query(), headers: &headers, body: req.body.as_deref() };
    let scope = match classify(&aws_request, &endpoint, &cfg.account_id) {
        Ok(s) => s,
        Err(e) => {
            return Ok(json!({"route": route.name, "scope": null, "decision": {"allow": false, "reason": format!("unclassified AWS request: {}", e.reason)}}))
        }
    };
    let mut decision = if let Some(p) = scope.permissions.iter().find(|p| is_credential_vending(&p.action)) {
        crate::policy::Decision::deny(format!("{} vends credentials; agents may not obtain AWS credentials through the broker", p.action))
    } else {
        let policy = PolicyEngine::load(&config.policy.file, &config.policy.query)?;
        let facts = RequestFacts {
            id: "explain".into(),
            protocol: url.scheme().into(),
            method: method.to_string(),
            host: url.host_str().unwrap_or_default().into(),
            path: url.path().into(),
            upgrade: None,
        };
        policy.decide(identity, &facts, &scope)
    };
    if decision.allow {
        // `explain` is usually asked without the signing headers the SDK would add; then it
        // assumes the SDK signs with the placeholder. Any signature that is given is checked.
        match crate::inject::sigv4::check_agent_signature(&headers, url.query(), &cfg.placeholder_access_key_id) {
            Ok(_) | Err(crate::inject::sigv4::AgentSignatureError::Unsigned) => {}
            Err(e) => decision = crate::policy::Decision::deny(e.to_string()),
        }
    }
    let ttl = effective_ttl(&decision, config.credentials.default_ttl);
    let role = match config.providers.get(&route.provider) {
        Some(ProviderConfig::Sts(s)) => s.tenant_roles.get(&identity.tenant).unwrap_or(&s.role_arn).clone(),
        _ => String::new(),
    };
    let not_after = (ttl < std::time::Duration::from_secs(900)).then(|| std::time::SystemTime::now() + ttl);
    Ok(json!({
        "route": route.name,
        "agent": identity,
        "endpoint": {"service": endpoint.service, "region": endpoint.region},
        "scope": scope,
        "decision": decision,
        "credential": decision.allow.then(|| json!({
            "provider": route.provider,
            "kind": "sts",
            "role_arn": role,
            "duration_seconds": ttl.as_secs().max(900),
            "ttl_seconds": ttl.as_secs(),
            "session_policy": serde_json::from_str::<Value>(&crate::providers::sts::session_policy(&scope, not_after)).unwrap_or(Value::Null),
        })),
    }))
}
