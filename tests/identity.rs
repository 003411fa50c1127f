//! Per-connection agent identity end to end: JWTs in `Proxy-Authorization` (signed here, verified
//! by the real broker binary against a JWKS file or a JWKS served over HTTPS) and mTLS client certificates with SPIFFE IDs,
//! with curl as the agent, a real HTTPS upstream and a real OAuth2 token endpoint.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
        let proxy_headers: Vec<String> = token.map(|t| format!("Proxy-Authorization: Bearer {t}")).into_iter().collect();
        self.connect_get_with(&proxy_headers, &[], path)
    }

    /// Like [`Setup::connect_get`], with `proxy_headers` on the CONNECT and `headers` on the request.
    fn connect_get_with(&self, proxy_headers: &[String], headers: &[String], path: &str) -> (u16, u16, String) {
        let mut args = vec!["--noproxy".to_string(), String::new(), "--proxy".into(), self.broker.proxy_url(), "--cacert".into()];
        args.push(self.broker.ca_cert().display().to_string());
        for h in proxy_headers {
            args.extend(["--proxy-header".into(), h.clone()]);
        }
        for h in headers {
            args.extend(["-H".into(), h.clone()]);
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

    /// The audit records once `ready` holds (refusals are recorded without waiting for fsync).
    fn wait_for_audit(&self, ready: impl Fn(&[serde_json::Value]) -> bool) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let records = self.audit_records();
            if ready(&records) || Instant::now() > deadline {
                return records;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
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

/// An agent whose verified token says tenant acme cannot act as globex: not with a token signed by
/// a key the broker does not trust, not with a tenant claim of the wrong shape, not by naming
/// globex in headers, the query or a second `Proxy-Authorization`. The policy input, the lease
/// (one per verified agent and tenant: compared by what the upstream received) and the audit
/// carry only the verified tenant.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_of_one_tenant_cannot_act_as_another() {
    let s = Setup::jwt().await;
    let acme = s.token("agent-a", "acme");
    let claims_with = |tenant: serde_json::Value| {
        let mut c = TestIssuer::claims("agent-a");
        c["tenant"] = tenant;
        c
    };

    // Tokens claiming globex that the broker did not get from its issuer, or whose tenant claim is
    // not one string: refused (403) before anything is minted or forwarded.
    let impostor = TestIssuer::new("cluster");
    let forged = [
        ("untrusted key", impostor.sign("ES256", &claims_with("globex".into()))),
        ("alg none", TestIssuer::unsigned(&claims_with("globex".into()))),
        ("tenant array", s.issuer.sign("ES256", &claims_with(serde_json::json!(["acme", "globex"])))),
        ("tenant number", s.issuer.sign("ES256", &claims_with(7.into()))),
        ("tenant object", s.issuer.sign("ES256", &claims_with(serde_json::json!({"name": "globex"})))),
        ("tenant empty", s.issuer.sign("ES256", &claims_with("".into()))),
    ];
    for (what, token) in &forged {
        assert_eq!(s.connect_get(Some(token), "/repos/acme/x").0, 403, "{what}: CONNECT");
        let (status, _, body) = s.absolute_form(Some(token));
        assert_eq!((status, body["error"].as_str()), (403, Some("identity_invalid")), "{what}: {body}");
    }
    // Two Proxy-Authorization headers, acme's first: ambiguous, so refused too.
    let globex_forged = &forged[0].1;
    let two = [format!("Proxy-Authorization: Bearer {acme}"), format!("Proxy-Authorization: Bearer {globex_forged}")];
    assert_eq!(s.connect_get_with(&two, &[], "/repos/acme/x").0, 403, "two Proxy-Authorization headers");
    assert_eq!(s.idp.calls(), 0, "nothing was minted for a forged identity");
    assert!(s.upstream.requests().is_empty(), "nothing reached the upstream");

    // acme's valid token with globex named everywhere else: served as acme, with acme's lease.
    let spoof_headers = ["X-Tenant: globex".to_string(), "X-Agent-Id: agent-b".into(), "X-Credential-Broker-Tenant: globex".into()];
    let spoof_proxy_headers = [format!("Proxy-Authorization: Bearer {acme}"), "X-Tenant: globex".into(), "X-Agent-Tenant: globex".into()];
    for (proxy_headers, headers, path) in [
        (&spoof_proxy_headers[..1], &[][..], "/repos/acme/x"),
        (&spoof_proxy_headers[..], &spoof_headers[..], "/repos/acme/x"),
        (&spoof_proxy_headers[..1], &[][..], "/repos/acme/x?tenant=globex&agent_id=agent-b"),
    ] {
        let (connect, status, body) = s.connect_get_with(proxy_headers, headers, path);
        assert_eq!((connect, status), (200, 200), "{headers:?} {path}: {body}");
    }
    // A real globex agent: a lease of its own, and the policy's acme-only rule does not apply.
    let globex = s.token("agent-a", "globex");
    assert_eq!(s.connect_get(Some(&globex), "/repos/public/x").1, 200);
    assert_eq!(s.connect_get(Some(&globex), "/repos/acme/x").1, 403, "globex may not read acme's repositories");

    assert_eq!(s.idp.calls(), 2, "one lease for agent-a of acme, one for agent-a of globex");
    let issued = s.idp.issued();
    let seen = s.upstream_tokens();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen[..3].iter().all(|t| *t == seen[0]), "every acme request, spoofed or not, used acme's lease");
    assert_ne!(seen[3], seen[0], "globex's request did not get acme's lease");
    assert_eq!(seen[0], format!("Bearer {}", issued[0]));
    assert_eq!(seen[3], format!("Bearer {}", issued[1]));

    // The policy saw, and the audit records, only the verified tenant of each request.
    let records = s.audit_records();
    let allows: Vec<&serde_json::Value> = records.iter().filter(|r| r["event"] == "allow").collect();
    assert_eq!(allows.len(), 4, "{allows:#?}");
    for a in &allows[..3] {
        assert_eq!((a["agent_id"].as_str(), a["tenant"].as_str()), (Some("agent-a"), Some("acme")), "{a}");
        assert_eq!(a["reason"], "acme reads its own repositories", "{a}");
    }
    assert_eq!(allows[3]["reason"], "policy saw agent agent-a of tenant globex");
    let issues: Vec<(&str, &str)> =
        records.iter().filter(|r| r["event"] == "issue").map(|r| (r["agent_id"].as_str().unwrap(), r["tenant"].as_str().unwrap())).collect();
    assert_eq!(issues, [("agent-a", "acme"), ("agent-a", "globex")]);
    let globex_records: Vec<&serde_json::Value> = records.iter().filter(|r| r["tenant"] == "globex").collect();
    assert!(globex_records.iter().all(|r| r["agent_id"] == "agent-a"), "{globex_records:#?}");
    assert_eq!(globex_records.len(), 3, "only the real globex token's requests (allow, issue; deny) are globex's: {globex_records:#?}");
    assert!(!records.iter().any(|r| r["agent_id"] == "agent-b"), "a header named agent-b and it reached the audit");
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

    // No token on the endpoint listener either: 407, recorded against its route.
    let url = format!("{}/repos/public/x", s.broker.endpoint_url("github"));
    let (status, body) = split_status(&curl(&["--noproxy", "*", "--write-out", "\n%{http_code}", &url]));
    assert_eq!(status, 407, "{body}");

    // Every refusal is a `deny` in the audit: no agent id is known, the reason is, the token is not.
    let expected = 2 + 2 * cases.len() + 1;
    let records = s.wait_for_audit(|r| r.iter().filter(|r| r["event"] == "deny").count() >= expected);
    let denies: Vec<&serde_json::Value> = records.iter().filter(|r| r["event"] == "deny").collect();
    assert_eq!(denies.len(), expected, "{denies:#?}");
    for d in &denies {
        assert_eq!(d["agent_id"], "unidentified", "{d}");
        assert_eq!(d["decision"], "deny", "{d}");
    }
    let reasons = |code: &str| denies.iter().filter(|d| d["details"]["code"] == code).map(|d| d["reason"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let required = reasons("identity_required");
    assert_eq!(required.len(), 3, "{denies:#?}");
    assert!(required.iter().all(|r| r.contains("Proxy-Authorization: Bearer")), "{required:?}");
    assert!(denies.iter().any(|d| d["details"]["code"] == "identity_required" && d["route"] == "github"), "the endpoint refusal names its route");
    let invalid = reasons("identity_invalid");
    for (what, _, reason) in &cases {
        assert_eq!(invalid.iter().filter(|r| r.contains(reason)).count(), 2, "{what}: one deny for the CONNECT and one for absolute-form: {invalid:?}");
    }
    let audit = std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap();
    for (what, token, _) in &cases {
        for part in token.split('.').filter(|p| p.len() > 8) {
            assert!(!audit.contains(part), "{what}: part of the token reached the audit");
        }
    }
    assert!(support::broker::cli(&["audit", "verify", &s.dir.path().join("audit.jsonl").display().to_string()]).status.success());
}

/// A JWKS served over HTTPS (certificate from the test CA), whose document a test can swap.
struct JwksServer {
    addr: SocketAddr,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    /// Listens on `addr` (port 0 for any); callable from synchronous code inside the runtime.
    fn start(ca: &TestCa, addr: SocketAddr, document: serde_json::Value) -> JwksServer {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&["localhost"]));
        let (document, fetches) = (Arc::new(Mutex::new(document.to_string())), Arc::new(AtomicU32::new(0)));
        let (doc, count) = (document.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (acceptor, doc, count) = (acceptor.clone(), doc.clone(), count.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (doc, count) = (doc.clone(), count.clone());
                        async move {
                            let (status, body) = if req.uri().path() == "/openid/v1/jwks" {
                                count.fetch_add(1, Ordering::SeqCst);
                                (200, doc.lock().unwrap().clone())
                            } else {
                                (404, "{}".to_string())
                            };
                            let resp = http::Response::builder().status(status).header("content-type", "application/json");
                            Ok::<_, std::convert::Infallible>(resp.body(http_body_util::Full::new(bytes::Bytes::from(body))).unwrap())
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        JwksServer { addr, document, fetches, task }
    }

    fn set(&self, document: serde_json::Value) {
        *self.document.lock().unwrap() = document.to_string();
    }

    fn fetches(&self) -> u32 {
        self.fetches.load(Ordering::SeqCst)
    }
}

/// The `identity:` block for a JWKS at `https://127.0.0.1:{port}`, trusted through `tls.upstream_ca_file`.
fn jwks_url_identity(addr: SocketAddr) -> String {
    format!(
        "identity:\n  mode: jwt\n  jwt: {{jwks_url: \"https://127.0.0.1:{}/openid/v1/jwks\", issuer: \"{ISSUER}\", audience: {AUDIENCE}, tenant_claim: tenant}}",
        addr.port()
    )
}

fn signed(issuer: &TestIssuer, sub: &str) -> String {
    let mut claims = TestIssuer::claims(sub);
    claims["tenant"] = "acme".into();
    issuer.sign("ES256", &claims)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_url_is_fetched_over_https_and_reread_when_the_issuer_rotates_its_key() {
    let (key_a, key_b, stranger) = (TestIssuer::new("key-a"), TestIssuer::new("key-b"), TestIssuer::new("stranger"));
    let mut server = None;
    let s = Setup::start(|_, ca| {
        let started = JwksServer::start(ca, "127.0.0.1:0".parse().unwrap(), key_a.jwks());
        let identity = jwks_url_identity(started.addr);
        server = Some(started);
        identity
    })
    .await;
    let server = server.unwrap();
    assert_eq!(server.fetches(), 1, "the keys are read once at start");

    let (connect, status, body) = s.connect_get(Some(&signed(&key_a, "agent-a")), "/repos/public/x");
    assert_eq!((connect, status), (200, 200), "a token signed with the served key: {body}");
    assert_eq!(server.fetches(), 1, "a known key id needs no re-read");

    // The issuer rotates: only key B is served now, and tokens name B's key id.
    server.set(key_b.jwks());
    let (connect, status, body) = s.connect_get(Some(&signed(&key_b, "agent-b")), "/repos/public/x");
    assert_eq!((connect, status), (200, 200), "a token signed with the rotated key: {body}");
    assert_eq!(server.fetches(), 2, "the unknown key id made the broker re-read the JWKS");
    assert!(s.audit_records().iter().any(|r| r["event"] == "issue" && r["agent_id"] == "agent-b"));

    // A key id in neither set: refused, and the re-read is rate-limited (no fetch per forged kid).
    for token in [signed(&stranger, "agent-x"), signed(&key_a, "agent-a")] {
        let (status, _, body) = s.absolute_form(Some(&token));
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"], "identity_invalid");
        assert!(body["message"].as_str().unwrap().contains("not in the trusted JWKS"), "{body}");
    }
    assert_eq!(server.fetches(), 2, "unknown key ids within the refresh interval cause no fetch");
    assert_eq!(s.upstream.requests().len(), 2, "only the two verified agents reached the upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_refused_with_a_reason_until_the_jwks_url_answers() {
    let issuer = TestIssuer::new("late");
    // A free port on which nothing listens yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let s = Setup::start(|_, _| jwks_url_identity(addr)).await;
    assert!(s.broker.wait_for_log("cannot load the JWKS yet", Duration::from_secs(5)), "{}", s.broker.log());

    let token = signed(&issuer, "agent-late");
    for _ in 0..2 {
        let (status, _, body) = s.absolute_form(Some(&token));
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["error"], "identity_invalid");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("cannot load the trusted JWKS yet") && message.contains("127.0.0.1"), "{message}");
    }
    assert_eq!(s.connect_get(Some(&token), "/repos/public/x").0, 403);

    // The issuer comes up: within a few seconds the same token is accepted, by the same process.
    let server = JwksServer::start(&s.ca, addr, issuer.jwks());
    let pid = s.broker.pid();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (connect, status, body) = loop {
        let answer = s.connect_get(Some(&token), "/repos/public/x");
        if answer.0 == 200 || Instant::now() > deadline {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!((connect, status), (200, 200), "{body}\n{}", s.broker.log());
    assert!(server.fetches() >= 1);
    assert_eq!(s.broker.pid(), pid);
    assert!(s.audit_records().iter().any(|r| r["event"] == "issue" && r["agent_id"] == "agent-late"));
    assert!(s
        .audit_records()
        .iter()
        .any(|r| r["event"] == "deny" && r["agent_id"] == "unidentified" && r["reason"].as_str().unwrap().contains("cannot load the trusted JWKS yet")));
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
