use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
mode: dev
identity: {agent_id: agent-1, tenant: acme}
routes:
  - name: api
    hosts: ["api.example.test", "*.svc.example.test"]
    provider: dev
    inject: {header: {name: Authorization, format: "Bearer {secret}", placeholder: credential-broker-placeholder}}
providers:
  dev: {type: env, variable: DEV_TOKEN}
policy: {file: Cargo.toml}
audit: {path: /tmp/audit.jsonl}
"#;

fn load(yaml: &str) -> Result<Config, Vec<ConfigProblem>> {
    Config::from_yaml(yaml, Path::new(env!("CARGO_MANIFEST_DIR")), &|_| None)
}

#[test]
fn minimal_config_gets_sidecar_defaults() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.listeners.proxy.unwrap().to_string(), "127.0.0.1:15001");
    assert_eq!(c.listeners.admin.unwrap().to_string(), "127.0.0.1:15000");
    assert_eq!(c.credentials.retry.max_retries, 3);
    assert!(c.route_for_host("api.example.test").is_some());
    assert!(c.route_for_host("a.svc.example.test").is_some());
    assert!(c.route_for_host("svc.example.test").is_none());
    assert!(c.route_for_host("evilapi.example.test").is_none());
}

#[test]
fn every_problem_is_reported_with_its_key_path() {
    let yaml = MINIMAL
        .replace("mode: dev", "mode: production")
        .replace("provider: dev", "provider: nope")
        .replace("policy: {file: Cargo.toml}", "policy: {file: missing.rego}");
    let problems = load(&yaml).unwrap_err();
    let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    assert!(text.iter().any(|t| t.starts_with("providers.dev.type: the env provider is for dev/test only")), "{text:?}");
    assert!(text.iter().any(|t| t == "routes[0].provider: unknown provider \"nope\""), "{text:?}");
    assert!(text.iter().any(|t| t.starts_with("policy.file: ")), "{text:?}");
}

#[test]
fn unknown_keys_are_rejected_with_their_path() {
    let yaml = MINIMAL.replace("tenant: acme}", "tenant: acme, tennant: x}");
    let problems = load(&yaml).unwrap_err();
    assert_eq!(problems[0].path, "identity.tennant");
    assert!(problems[0].message.contains("unknown field `tennant`"), "{problems:?}");
}

#[test]
fn too_many_retries_is_refused() {
    let yaml = format!("{MINIMAL}credentials: {{retry: {{max_retries: 5}}}}\n");
    let problems = load(&yaml).unwrap_err();
    assert_eq!(problems[0].path, "credentials.retry.max_retries");
}

#[test]
fn oauth2_token_url_must_be_https() {
    let yaml = MINIMAL.replace(
        "dev: {type: env, variable: DEV_TOKEN}",
        "dev: {type: oauth2, token_url: 'http://idp.example.test/token', client_id: c, client_secret_file: s}",
    );
    let problems = load(&yaml).unwrap_err();
    assert_eq!(problems[0].path, "providers.dev.token_url");
}

#[test]
fn governance_keys_are_validated_with_their_paths() {
    let c = load(MINIMAL).unwrap();
    assert!(c.admin.token_file.is_none() && c.admin.metrics);
    assert!(c.alerts.webhook_url.is_none() && c.audit.max_file_bytes.is_none() && !c.audit.stdout);

    let yaml =
        format!("{MINIMAL}admin: {{token_file: /nonexistent/admin-token}}\nalerts: {{webhook_url: \"http://alertmanager.example:9093\", max_attempts: 0}}\n")
            .replace("audit: {path: /tmp/audit.jsonl}", "audit: {path: /tmp/audit.jsonl, max_file_bytes: 100}");
    let problems: Vec<String> = load(&yaml).unwrap_err().iter().map(|p| p.path.clone()).collect();
    for path in ["admin.token_file", "alerts.webhook_url", "alerts.max_attempts", "audit.max_file_bytes"] {
        assert!(problems.iter().any(|p| p == path), "{path} not reported in {problems:?}");
    }

    let ok = format!("{MINIMAL}alerts: {{webhook_url: \"http://127.0.0.1:9093\"}}\nadmin: {{metrics: false}}\n");
    let c = load(&ok).unwrap();
    assert_eq!(c.alerts.webhook_url.unwrap().as_str(), "http://127.0.0.1:9093/");
    assert!(!c.admin.metrics);
    let unknown = load(&format!("{MINIMAL}admin: {{token: x}}\n")).unwrap_err();
    assert!(unknown[0].path.starts_with("admin"), "{unknown:?}");
}

#[test]
fn an_endpoint_base_path_must_be_canonical_as_written() {
    let with_base =
        |url: &str| MINIMAL.replace("    provider: dev\n", &format!("    provider: dev\n    endpoint: {{listen: \"127.0.0.1:0\", upstream: \"{url}\"}}\n"));
    for ok in [
        "https://api.example.test",
        "https://api.example.test/",
        "https://api.example.test/v1",
        "https://api.example.test/v1/",
        "https://api.example.test/a%20b",
    ] {
        let c = load(&with_base(ok)).unwrap_or_else(|e| panic!("{ok}: {e:?}"));
        assert!(c.routes[0].endpoint.is_some(), "{ok}");
    }
    for (bad, says) in [
        ("https://api.example.test/v1/../admin", "write it as \"/admin\""),
        ("https://api.example.test/v1/%2e%2e/admin", "write it as \"/admin\""),
        ("https://api.example.test/v1//x", "write it as \"/v1/x\""),
        ("https://api.example.test/../x", "climbs above the root"),
        ("https://api.example.test/v1%2fx", "encoded /"),
        ("https://api.example.test/v1?x=1", "no query or fragment"),
    ] {
        let problems = load(&with_base(bad)).unwrap_err();
        let p = problems.iter().find(|p| p.path == "routes[0].endpoint.upstream").unwrap_or_else(|| panic!("{bad}: {problems:?}"));
        assert!(p.message.contains(says), "{bad}: {}", p.message);
    }
}

#[test]
fn ip_route_hosts_match_the_address_in_any_spelling() {
    let c = load(&MINIMAL.replace(r#""*.svc.example.test"]"#, r#""*.svc.example.test", "127.0.0.1", "[0:0::1]"]"#)).unwrap();
    assert!(c.route_for_host("127.0.0.1").is_some());
    assert!(c.route_for_host("::1").is_some());
    assert!(c.route_for_host("[::1]").is_some());
    assert!(c.route_for_host("127.0.0.2").is_none());
    assert_eq!(c.routes[0].hosts[3].dns_subtree(), "::1", "the CA gets the canonical address");
}

#[test]
fn host_patterns_that_no_certificate_could_serve_are_refused_with_their_path() {
    for (host, expected) in [
        ("*.0.0.1", "a wildcard cannot match IP addresses"),
        ("*.168.1.10", "a wildcard cannot match IP addresses"),
        ("10.1.2", "ends in a number"),
        ("host.0x7f", "ends in a number"),
        ("10.0.0.*", "is not a host name"),
    ] {
        let problems = load(&MINIMAL.replace("\"api.example.test\"", &format!("{host:?}"))).unwrap_err();
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(text.iter().any(|t| t.starts_with("routes[0].hosts[0]: ") && t.contains(expected)), "{host}: {text:?}");
    }
}

#[test]
fn passthrough_hosts_are_patterns_or_maps_with_a_per_host_opt_in() {
    let yaml =
        format!("{MINIMAL}passthrough_hosts:\n  - pypi.org\n  - {{host: localhost, allow_internal_addresses: true}}\n  - {{host: \"*.internal.test\"}}\n");
    let c = load(&yaml).unwrap();
    assert_eq!(c.passthrough("pypi.org"), Some(PassthroughAccess { allow_internal_addresses: false }));
    assert_eq!(c.passthrough("LOCALHOST"), Some(PassthroughAccess { allow_internal_addresses: true }));
    assert_eq!(c.passthrough("a.internal.test"), Some(PassthroughAccess { allow_internal_addresses: false }));
    assert_eq!(c.passthrough("example.org"), None);
}

#[test]
fn passthrough_entry_problems_name_their_key_path() {
    let typo = format!("{MINIMAL}passthrough_hosts:\n  - pypi.org\n  - {{host: localhost, allow_internal: true}}\n");
    let problems = load(&typo).unwrap_err();
    assert_eq!(problems[0].path, "passthrough_hosts[1].allow_internal", "{problems:?}");
    assert!(problems[0].message.contains("unknown field `allow_internal`"), "{problems:?}");

    let bad_host = format!("{MINIMAL}passthrough_hosts:\n  - \"bad host\"\n  - {{host: \"a/b\"}}\n");
    let text: Vec<String> = load(&bad_host).unwrap_err().iter().map(|p| p.to_string()).collect();
    assert!(text.iter().any(|t| t.starts_with("passthrough_hosts[0]: ")), "{text:?}");
    assert!(text.iter().any(|t| t.starts_with("passthrough_hosts[1].host: ")), "{text:?}");

    let zero = format!("{MINIMAL}limits: {{connect_timeout_ms: 0}}\n");
    assert_eq!(load(&zero).unwrap_err()[0].to_string(), "limits.connect_timeout_ms: must be at least 1");
}

#[test]
fn the_leaf_cache_size_is_validated() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.tls.leaf_cache_max_entries, 1000);
    let c = load(&format!("{MINIMAL}tls: {{leaf_cache_max_entries: 50}}\n")).unwrap();
    assert_eq!(c.tls.leaf_cache_max_entries, 50);
    let problems = load(&format!("{MINIMAL}tls: {{leaf_cache_max_entries: 0}}\n")).unwrap_err();
    assert!(problems.iter().any(|p| p.path == "tls.leaf_cache_max_entries"), "{problems:?}");
}

#[test]
fn the_per_peer_connection_quota_defaults_to_half_a_listener_and_is_validated() {
    let c = load(MINIMAL).unwrap();
    assert_eq!((c.limits.max_connections, c.limits.max_connections_per_peer), (1024, 512));
    let c = load(&format!("{MINIMAL}limits: {{max_connections: 100}}\n")).unwrap();
    assert_eq!(c.limits.max_connections_per_peer, 50);
    for bad in ["{max_connections: 100, max_connections_per_peer: 101}", "{max_connections_per_peer: 0}"] {
        let problems = load(&format!("{MINIMAL}limits: {bad}\n")).unwrap_err();
        assert!(problems.iter().any(|p| p.path == "limits.max_connections_per_peer" && p.message.contains("between 1 and")), "{bad}: {problems:?}");
    }
}
