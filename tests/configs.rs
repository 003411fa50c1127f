//! Every configuration and policy file shipped in `config/` and `examples/` is valid, and the CLI's
//! read-only commands (`check-config`, `explain`, `--version`, `--help`) behave as documented.

mod support;

use std::path::{Path, PathBuf};

use support::broker::binary;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The environment a pod would give the broker (the downward API) plus the quickstart's values.
fn pod_env(cmd: &mut std::process::Command) -> &mut std::process::Command {
    let dir = std::env::temp_dir();
    cmd.env("CB_AGENT_ID", "agent-7")
        .env("CB_TENANT", "acme")
        .env("CB_POD_NAME", "agent-7-abc")
        .env("CB_POD_NAMESPACE", "agents")
        .env("CB_SERVICE_ACCOUNT", "agent")
        .env("DEMO_DIR", &dir)
        .env("DEMO_UPSTREAM_CA", repo().join("Cargo.toml")) // any existing file: only existence is checked
        .env("CB_KUBE_CA_FILE", repo().join("Cargo.toml")) // config/multi-agent.yaml; likewise
        .env("CB_AWS_GATEWAY_CA_FILE", repo().join("Cargo.toml")) // config/aws-endpoints.yaml; likewise
        .env("DEMO_API_ADDR", "127.0.0.1:8443")
        .env("DEMO_MOTO_ADDR", "127.0.0.1:5000")
        .env("DEMO_TOKEN_URL", "https://localhost:8444/oauth/token")
        .env("DEMO_CLIENT_SECRET_FILE", dir.join("client-secret"))
        .env("DEMO_PG_ADDR", "127.0.0.1:5432")
        .env("DEMO_VAULT_ADDR", "http://127.0.0.1:8200")
        .env("DEMO_VAULT_TOKEN_FILE", repo().join("Cargo.toml")) // only existence is checked
}

fn shipped_files(ext: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, ext, out);
            } else if path.extension().is_some_and(|e| e == ext) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo().join("config"), ext, &mut out);
    walk(&repo().join("examples"), ext, &mut out);
    out.sort();
    out
}

/// Broker configs are YAML files with `routes:`; other YAML (e.g. Kubernetes manifests) is
/// checked by the sidecar-injector's own tests.
fn is_broker_config(path: &Path) -> bool {
    std::fs::read_to_string(path).unwrap().lines().any(|l| l.starts_with("routes:"))
}

#[test]
fn every_shipped_broker_config_passes_check_config() {
    let configs: Vec<PathBuf> = shipped_files("yaml").into_iter().filter(|p| is_broker_config(p)).collect();
    assert!(configs.len() >= 2, "expected config/broker.yaml and the quickstart's config, found {configs:?}");
    for path in configs {
        let out = pod_env(&mut std::process::Command::new(binary())).arg("check-config").arg(&path).output().unwrap();
        assert!(out.status.success(), "{} is invalid:\n{}{}", path.display(), String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn every_shipped_policy_compiles() {
    let policies = shipped_files("rego");
    assert!(policies.len() >= 2, "{policies:?}");
    for path in policies {
        credential_broker::policy::PolicyEngine::load(&path, "data.credential_broker.decision")
            .unwrap_or_else(|e| panic!("{} does not compile: {e}", path.display()));
    }
}

#[test]
fn check_config_lists_every_problem_with_its_key_path_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        r#"
identity: {agent_id: a, tenant: t}
listeners: {proxy: "0.0.0.0:99999"}
routes:
  - name: api
    hosts: ["api.example.test"]
    provider: missing
    inject: {header: {name: Authorization, placeholder: short}}
    extra_key: 1
providers:
  dev: {type: env, variable: TOKEN}
policy: {file: nowhere.rego}
audit: {path: /tmp/a.jsonl}
credentials: {retry: {max_retries: 9}}
"#,
    )
    .unwrap();
    let out = std::process::Command::new(binary()).arg("check-config").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // Unknown keys stop parsing first: that one problem is named with its path.
    assert!(text.contains("routes[0].extra_key") || text.contains("routes[0]: unknown field `extra_key`"), "{text}");

    std::fs::write(&bad, std::fs::read_to_string(&bad).unwrap().replace("    extra_key: 1\n", "")).unwrap();
    let out = std::process::Command::new(binary()).arg("check-config").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    for expected in
        ["listeners.proxy", "routes[0].provider", "routes[0].inject.header.placeholder", "providers.dev.type", "policy.file", "credentials.retry.max_retries"]
    {
        assert!(text.contains(expected), "missing a problem at {expected}:\n{text}");
    }
}

#[test]
fn a_bad_aws_custom_endpoint_is_named_by_its_key_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(dir.path().join("p.rego"), "package credential_broker\ndefault decision := {\"allow\": false}\n").unwrap();
    std::fs::write(
        &bad,
        r#"
identity: {agent_id: a, tenant: t}
routes:
  - name: emulator
    endpoint: {listen: "127.0.0.1:0", upstream: "http://127.0.0.1:4566"}
    allow_plaintext_upstream: true
    provider: sts
    inject:
      sigv4:
        account_id: "123456789012"
        placeholder_access_key_id: credential-broker-placeholder
        custom_endpoints:
          - {host: "127.0.0.1:4566"}
          - {host: "gw.internal", service: s4, region: mars-1}
          - {host: "https://gw.internal/"}
providers:
  sts: {type: sts, role_arn: "arn:aws:iam::123456789012:role/r", region: us-east-1}
policy: {file: p.rego}
audit: {path: /tmp/a.jsonl}
"#,
    )
    .unwrap();
    let out = std::process::Command::new(binary()).arg("check-config").arg(&bad).output().unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    for expected in [
        "routes[0].inject.sigv4.custom_endpoints[1].service: \"s4\" is not an AWS service",
        "routes[0].inject.sigv4.custom_endpoints[1].region: \"mars-1\" is not an AWS region",
        "routes[0].inject.sigv4.custom_endpoints[2].host",
    ] {
        assert!(text.contains(expected), "missing {expected}:\n{text}");
    }
    assert!(!text.contains("custom_endpoints[0]"), "an entry without service and region is valid:\n{text}");
}

#[test]
fn explain_shows_route_scope_and_decision_without_minting() {
    let run = |args: &[&str]| {
        let out = pod_env(&mut std::process::Command::new(binary()))
            .args(["explain", "--config"])
            .arg(repo().join("config/broker.yaml"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let v = run(&["--method", "GET", "--url", "https://api.github.com/repos/acme/widgets/pulls"]);
    assert_eq!(v["route"], "github");
    assert_eq!(v["scope"]["permissions"][0]["action"], "http:GET");
    assert_eq!(v["scope"]["permissions"][0]["resource"], "https://api.github.com/repos/acme/widgets/pulls");
    assert_eq!(v["decision"]["allow"], true);
    assert_eq!(v["credential"]["credential_scope"], "repo:read");

    // Another tenant's repositories: denied, with the policy's reason.
    let v = run(&["--method", "GET", "--url", "https://api.github.com/repos/globex/x", "--tenant", "globex-not"]);
    assert_eq!(v["decision"]["allow"], false);
    assert_eq!(v["decision"]["reason"], "no rule allows this request");

    let v = run(&["--method", "POST", "--url", "https://api.github.com/repos/acme/w/issues/3/comments"]);
    assert_eq!(v["decision"]["allow"], true);
    assert_eq!(v["credential"]["credential_scope"], "repo:read repo:write");

    // A real-looking token in the header is called out.
    let v = run(&["--url", "https://api.github.com/repos/acme/w", "-H", "Authorization: Bearer ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]);
    assert_eq!(v["decision"]["allow"], false);
    assert!(v["decision"]["reason"].as_str().unwrap().contains("not the configured placeholder"));

    let v = run(&["--url", "https://example.org/"]);
    assert!(v["route"].is_null());
    assert!(v["decision"]["reason"].as_str().unwrap().contains("no route"));
    let v = run(&["--url", "https://pypi.org/simple/"]);
    assert!(v["decision"]["reason"].as_str().unwrap().contains("passthrough"));
}

#[test]
fn explain_shows_the_aws_scope_and_the_exact_session_policy() {
    let run = |args: &[&str]| {
        let out =
            pod_env(&mut std::process::Command::new(binary())).args(["explain", "--config"]).arg(repo().join("config/aws.yaml")).args(args).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let v = run(&["--method", "GET", "--url", "https://acme-agent-data.s3.us-east-1.amazonaws.com/reports/q3.csv"]);
    assert_eq!(v["endpoint"]["service"], "s3");
    assert_eq!(v["scope"]["permissions"][0]["action"], "s3:GetObject");
    assert_eq!(v["scope"]["permissions"][0]["resource"], "arn:aws:s3:::acme-agent-data/reports/q3.csv");
    assert_eq!(v["decision"]["allow"], true, "{v}");
    let credential = &v["credential"];
    assert_eq!(credential["role_arn"], "arn:aws:iam::123456789012:role/agent-acme", "the tenant's own role");
    assert_eq!(credential["duration_seconds"], 900);
    let statement = &credential["session_policy"]["Statement"][0];
    assert_eq!(statement["Action"], "s3:GetObject");
    assert_eq!(statement["Resource"], "arn:aws:s3:::acme-agent-data/reports/q3.csv");
    assert!(statement["Condition"]["DateLessThan"]["aws:CurrentTime"].is_string(), "300 s < STS minimum: a time bound");

    // JSON protocol: the resource comes from the body.
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.json");
    std::fs::write(&body, r#"{"TableName": "acme-tasks", "Item": {"id": {"S": "1"}}}"#).unwrap();
    let v = run(&[
        "--method",
        "POST",
        "--url",
        "https://dynamodb.us-east-1.amazonaws.com/",
        "-H",
        "X-Amz-Target: DynamoDB_20120810.PutItem",
        "-H",
        "Content-Type: application/x-amz-json-1.0",
        "--body",
        body.to_str().unwrap(),
    ]);
    assert_eq!(v["scope"]["permissions"][0]["action"], "dynamodb:PutItem");
    assert_eq!(v["scope"]["permissions"][0]["resource"], "arn:aws:dynamodb:us-east-1:123456789012:table/acme-tasks");
    assert_eq!(v["decision"]["allow"], true, "{v}");

    // Credential vending is refused before the policy is asked.
    let v = run(&["--method", "POST", "--url", "https://sts.amazonaws.com/?Action=GetSessionToken&Version=2011-06-15"]);
    assert_eq!(v["decision"]["allow"], false);
    assert!(v["decision"]["reason"].as_str().unwrap().contains("vends credentials"), "{v}");
    // Another tenant's bucket.
    let v = run(&["--url", "https://globex-agent-data.s3.amazonaws.com/x"]);
    assert_eq!(v["decision"]["allow"], false);
}

#[test]
fn version_and_help() {
    let out = std::process::Command::new(binary()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("credential-broker {}", env!("CARGO_PKG_VERSION")));
    let out = std::process::Command::new(binary()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for cmd in ["run", "check-config", "explain", "audit"] {
        assert!(help.contains(cmd), "--help does not mention {cmd}:\n{help}");
    }
}

#[test]
fn the_broker_refuses_to_start_on_a_bad_config_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, "routes: []\npolicy: {file: x.rego}\n").unwrap();
    let out = std::process::Command::new(binary()).args(["run", "--config"]).arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("audit") && err.contains("policy.file"), "{err}");
}
