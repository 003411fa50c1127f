//! Per-connection agent identity end to end: JWTs in `Proxy-Authorization` (signed here, verified
//! by the real broker binary against a JWKS file) and mTLS client certificates with SPIFFE IDs,
//! with curl as the agent, a real HTTPS upstream and a real OAuth2 token endpoint.

mod support;

use std::path::Path;

use rcgen::SanType;
use support::broker::Broker;
use support::clients::{curl, split_status};
use support::jwt::{TestIssuer, AUDIENCE, ISSUER};
use support::pki::TestCa;
use support::token_endpoint::{TokenEndpoint, CLIENT_SECRET};
use support::upstream::HttpsUpstream;

const HOST: &str = "api.github.test";
const PLACEHOLDER: &str = "credential-broker-placeholder";

/// Every tenant may read repositories; only acme may read /repos/acme/*. The reason names the
/// agent and tenant the policy saw, so the audit shows what it was given.
const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": sprintf("policy saw agent %s of tenant %s", [input.agent.id, input.agent.tenant])} if {
    input.scope.action == "http:GET"
    startswith(input.scope.resource, "https://api.github.test/repos/public/")
}

decision := {"allow": true, "reason": "acme reads its own repositories"} if {
    input.agent.tenant == "acme"
    input.scope.action == "http:GET"
    startswith(input.scope.resource, "https://api.github.test/repos/acme/")
}
"#;

struct Setup {
    dir: tempfile::TempDir,
    ca: TestCa,
    upstream: HttpsUpstream,
    idp: TokenEndpoint,
    issuer: TestIssuer,
    broker: Broker,
}

impl Setup {
    /// `identity_yaml` is the whole `identity:` block.
    async fn start(identity_yaml: impl FnOnce(&Path, &TestCa) -> String) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path());
        let upstream = HttpsUpstream::start(&ca, &[HOST, "localhost"]).await;
        let idp = TokenEndpoint::start(&ca).await;
        let issuer = TestIssuer::new("cluster");
        std::fs::write(dir.path().join("jwks.json"), issuer.jwks().to_string()).unwrap();
        std::fs::write(dir.path().join("client-secret"), CLIENT_SECRET).unwrap();
        std::fs::set_permissions(dir.path().join("client-secret"), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
        let d = dir.path().display();
        let yaml = format!(
            r#"
{identity}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0"}}
tls: {{ca_cert_path: {d}/broker-ca.crt, upstream_ca_file: {upstream_ca}}}
routes:
  - name: github
    hosts: ["{HOST}"]
    connect_to: "{upstream}"
    endpoint: {{listen: "127.0.0.1:0", upstream: "https://{HOST}"}}
    provider: idp
    inject: {{header: {{name: Authorization, format: "Bearer {{secret}}", placeholder: {PLACEHOLDER}}}}}
providers:
  idp: {{type: oauth2, token_url: "{token_url}", client_id: broker-client, client_secret_file: {d}/client-secret, scopes: [repo.read]}}
policy: {{file: {d}/policy.rego}}
audit: {{path: {d}/audit.jsonl}}
logging: {{format: json}}
"#,
            identity = identity_yaml(dir.path(), &ca),
            upstream_ca = ca.cert_path.display(),
            upstream = upstream.addr,
            token_url = idp.url(),
        );
        let broker = Broker::start(dir.path(), &yaml, &[]);
        Setup { dir, ca, upstream, idp, issuer, broker }
    }

    async fn jwt() -> Setup {
        Setup::start(|d, _| {
            format!(
                "identity:\n  mode: jwt\n  labels: {{pod: agent-pod}}\n  jwt: {{jwks_file: {}/jwks.json, issuer: \"{ISSUER}\", audience: {AUDIENCE}, tenant_claim: tenant}}",
                d.display()
            )
        })
        .await
    }

    fn token(&self, sub: &str, tenant: &str) -> String {
        let mut claims = TestIssuer::claims(sub);
        claims["tenant"] = tenant.into();
        self.issuer.sign("ES256", &claims)
    }

    /// An HTTPS request through the proxy (CONNECT), with `token` on the CONNECT.
    /// Returns (CONNECT status, final status, body).
    fn connect_get(&self, token: Option<&str>, path: &str) -> (u16, u16, String) {
        let mut args = vec!["--noproxy".to_string(), String::new(), "--proxy".into(), self.broker.proxy_url(), "--cacert".into()];
        args.push(self.broker.ca_cert().display().to_string());
        if let Some(t) = token {
            args.extend(["--proxy-header".into(), format!("Proxy-Authorization: Bearer {t}")]);
        }
        args.extend(["-H".into(), format!("Authorization: Bearer {PLACEHOLDER}")]);
        args.extend(["--write-out".into(), "\n%{http_connect} %{http_code}".into(), format!("https://{HOST}{path}")]);
        let out = curl(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, codes) = text.rsplit_once('\n').unwrap_or(("", &text));
        let mut codes = codes.split_whitespace().map(|c| c.parse::<u16>().unwrap());
        (codes.next().unwrap(), codes.next().unwrap(), body.to_string())
    }

    /// An absolute-form request to the proxy (its answer comes back whole, body and headers).
    fn absolute_form(&self, token: Option<&str>) -> (u16, String, serde_json::Value) {
        let mut args = vec!["--noproxy".to_string(), String::new(), "--proxy".into(), self.broker.proxy_url(), "-D".into(), "-".into()];
        if let Some(t) = token {
            args.extend(["--proxy-header".into(), format!("Proxy-Authorization: Bearer {t}")]);
        }
        args.extend(["--write-out".into(), "\n%{http_code}".into(), format!("http://{HOST}/repos/public/x")]);
        let (status, text) = split_status(&curl(&args.iter().map(String::as_str).collect::<Vec<_>>()));
        let (headers, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no headers in {text:?}"));
        (status, headers.to_ascii_lowercase(), serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}")))
    }

    fn audit_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn upstream_tokens(&self) -> Vec<String> {
        self.upstream.requests().iter().filter_map(|r| r.authorization.clone()).collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_tenants_through_one_broker_never_share_a_credential() {
    let s = Setup::jwt().await;
    let (a_acme, a_globex, b_globex) = (s.token("agent-a", "acme"), s.token("agent-a", "globex"), s.token("agent-b", "globex"));

    for token in [&a_acme, &a_acme, &a_globex, &b_globex, &a_globex] {
        let (connect, status, body) = s.connect_get(Some(token), "/repos/public/x");
        assert_eq!((connect, status), (200, 200), "{body}");
    }
    // One mint per (agent, tenant); the repeats are served from the cache.
    assert_eq!(s.idp.calls(), 3, "one mint for each of three agent identities");
    let seen = s.upstream_tokens();
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[0], seen[1], "agent-a of acme reuses its credential");
    assert_eq!(seen[2], seen[4], "agent-a of globex reuses its credential");
    assert_ne!(seen[0], seen[2], "the same agent id in another tenant gets another credential");
    assert_ne!(seen[2], seen[3], "another agent of the same tenant gets another credential");
    assert_ne!(seen[0], seen[3]);

    // The policy sees each tenant: only acme may read acme's repositories.
    assert_eq!(s.connect_get(Some(&a_acme), "/repos/acme/secrets").1, 200);
    let (_, status, body) = s.connect_get(Some(&a_globex), "/repos/acme/secrets");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("policy_denied"), "{body}");

    // The audit carries each agent and tenant, and the policy's view of them.
    let records = s.audit_records();
    let issued: Vec<(String, String)> =
        records.iter().filter(|r| r["event"] == "issue").map(|r| (r["agent_id"].as_str().unwrap().into(), r["tenant"].as_str().unwrap().into())).collect();
    assert_eq!(issued, [("agent-a".into(), "acme".into()), ("agent-a".into(), "globex".into()), ("agent-b".into(), "globex".into())]);
    for (agent, tenant) in [("agent-a", "acme"), ("agent-a", "globex"), ("agent-b", "globex")] {
        let reason = format!("policy saw agent {agent} of tenant {tenant}");
        assert!(records.iter().any(|r| r["event"] == "allow" && r["agent_id"] == agent && r["tenant"] == tenant && r["reason"] == reason.as_str()), "{reason}");
    }
    assert!(records.iter().any(|r| r["event"] == "deny" && r["agent_id"] == "agent-a" && r["tenant"] == "globex"));

    // A token on each request works on the endpoint listener too.
    let header = format!("Proxy-Authorization: Bearer {}", s.token("agent-c", "acme"));
    let url = format!("{}/repos/public/y", s.broker.endpoint_url("github"));
    let auth = format!("Authorization: Bearer {PLACEHOLDER}");
    let (status, body) = split_status(&curl(&["--noproxy", "*", "-H", &header, "-H", &auth, "--write-out", "\n%{http_code}", &url]));
    assert_eq!(status, 200, "{body}");
    assert!(s.audit_records().iter().any(|r| r["event"] == "issue" && r["agent_id"] == "agent-c"));

    // No identity token, minted credential or client secret reaches the log or the audit.
    let written = format!("{}{}", s.broker.log(), std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap());
    for secret in [a_acme.as_str(), a_globex.as_str(), b_globex.as_str(), CLIENT_SECRET].into_iter().chain(s.idp.issued().iter().map(String::as_str)) {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!written.contains(signature), "a secret or token leaked into the log or audit");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_invalid_tokens_are_refused_with_a_clear_reason() {
    let s = Setup::jwt().await;

    // Nothing presented: 407 with a Bearer challenge, on CONNECT and on absolute-form.
    assert_eq!(s.connect_get(None, "/repos/public/x").0, 407);
    let (status, headers, body) = s.absolute_form(None);
    assert_eq!(status, 407);
    assert!(headers.contains("proxy-authenticate: bearer"), "{headers}");
    assert_eq!(body["error"], "identity_required");
    assert!(body["request_id"].is_string() && body["message"].as_str().unwrap().contains("Proxy-Authorization: Bearer"), "{body}");

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let claims = |k: &str, v: serde_json::Value| {
        let mut c = TestIssuer::claims("agent-a");
        c["tenant"] = "acme".into();
        c[k] = v;
        c
    };
    let impostor = TestIssuer::new("cluster");
    let cases = [
        ("expired", s.issuer.sign("ES256", &claims("exp", (now - 600).into())), "token expired"),
        ("wrong issuer", s.issuer.sign("RS256", &claims("iss", "https://evil.example".into())), "wrong issuer"),
        ("wrong audience", s.issuer.sign("ES256", &claims("aud", "another-service".into())), "wrong audience"),
        ("bad signature", impostor.sign("ES256", &claims("sub", "agent-a".into())), "bad token signature"),
        ("alg none", TestIssuer::unsigned(&claims("sub", "agent-a".into())), "alg none"),
        ("no tenant", s.issuer.sign("ES256", &TestIssuer::claims("agent-a")), "tenant claim"),
    ];
    for (what, token, reason) in &cases {
        assert_eq!(s.connect_get(Some(token), "/repos/public/x").0, 403, "{what}: CONNECT");
        let (status, _, body) = s.absolute_form(Some(token));
        assert_eq!(status, 403, "{what}");
        assert_eq!(body["error"], "identity_invalid", "{what}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(reason), "{what}: {message}");
        assert!(!message.contains(token.as_str()) && !message.contains(token.split('.').nth(1).unwrap()), "{what}: the token is echoed");
    }
    assert_eq!(s.idp.calls(), 0, "nothing was minted for an unproven agent");
    assert!(s.upstream.requests().is_empty(), "nothing reached the upstream");
    let log = s.broker.log();
    for (_, token, _) in &cases {
        assert!(!log.contains(token.split('.').nth(1).unwrap()), "a token reached the log");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_agents_are_named_by_their_spiffe_id() {
    let s = Setup::start(|d, ca| {
        let (crt, key) = ca.leaf_files(d, "proxy", vec![SanType::IpAddress("127.0.0.1".parse().unwrap())], false);
        format!(
            "identity:\n  mode: mtls\n  mtls: {{client_ca_file: {}, cert_file: {}, key_file: {}, trust_domain: cluster.local, tenant_path_segment: 1}}",
            ca.cert_path.display(),
            crt.display(),
            key.display()
        )
    })
    .await;
    let d = s.dir.path();
    let spiffe = "spiffe://cluster.local/ns/acme/sa/agent-m";
    let (crt, key) = s.ca.leaf_files(d, "agent", vec![SanType::URI(spiffe.try_into().unwrap())], true);
    let proxy = format!("https://{}", s.broker.addresses.proxy.unwrap());
    let base = |cert: Option<(&Path, &Path)>| {
        let mut args =
            vec!["--noproxy".to_string(), String::new(), "--proxy".into(), proxy.clone(), "--proxy-cacert".into(), s.ca.cert_path.display().to_string()];
        if let Some((c, k)) = cert {
            args.extend(["--proxy-cert".into(), c.display().to_string(), "--proxy-key".into(), k.display().to_string()]);
        }
        args.extend(["--cacert".into(), s.broker.ca_cert().display().to_string(), "-H".into(), format!("Authorization: Bearer {PLACEHOLDER}")]);
        args.extend(["--write-out".into(), "\n%{http_code}".into(), format!("https://{HOST}/repos/acme/x")]);
        split_status(&curl(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };

    let (status, body) = base(Some((&crt, &key)));
    assert_eq!(status, 200, "{body}");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(d.join("audit.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(records.iter().any(|r| r["event"] == "issue" && r["agent_id"] == spiffe && r["tenant"] == "acme"), "{records:?}");

    // No client certificate, or one from another CA: the connection is refused.
    assert_eq!(base(None).0, 0, "a connection without a client certificate must fail");
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = TestCa::new(other_dir.path());
    let (other_crt, other_key) = other_ca.leaf_files(d, "stranger", vec![SanType::URI(spiffe.try_into().unwrap())], true);
    assert_eq!(base(Some((&other_crt, &other_key))).0, 0, "a certificate from another CA must fail");
    assert_eq!(s.upstream.requests().len(), 1, "only the certified agent reached the upstream");
    assert!(s.broker.wait_for_log("without a valid client certificate", std::time::Duration::from_secs(5)));
}
