//! The broker's spine end to end: real HTTPS upstream, real OAuth2 token endpoint, the real broker
//! binary, and real clients (curl, Python `requests`) going through it.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use support::broker::{cli, Broker};
use support::clients::{curl_via_proxy, run_python, split_status};
use support::pki::TestCa;
use support::token_endpoint::{Mode, TokenEndpoint, CLIENT_SECRET};
use support::upstream::HttpsUpstream;

const HOST: &str = "api.github.test";
const PLACEHOLDER: &str = "credential-broker-placeholder";

const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "agents may read repositories", "ttl_seconds": 600} if {
    input.scope.action == "http:GET"
    startswith(input.scope.resource, "https://api.github.test/repos/")
    input.agent.tenant == "acme"
}

decision := {"allow": true, "reason": "the sandbox repository may be edited"} if {
    input.scope.action == "http:PATCH"
    input.scope.resource == "https://api.github.test/repos/acme/sandbox"
}

# A WebSocket is its own action (http:UPGRADE): allowing GET does not open a tunnel.
decision := {"allow": true, "reason": "websockets on the tenant's repositories"} if {
    input.scope.action == "http:UPGRADE"
    input.request.upgrade == "websocket"
    startswith(input.scope.resource, "https://api.github.test/repos/acme/")
}

decision := {"allow": false, "reason": "writes to repositories need a human"} if {
    input.scope.action in {"http:POST", "http:PUT", "http:DELETE"}
}
"#;

/// One scenario: its own directory, upstream CA, upstream, token endpoint and broker.
struct Spine {
    dir: tempfile::TempDir,
    ca: TestCa,
    upstream: HttpsUpstream,
    idp: Option<TokenEndpoint>,
    broker: Broker,
}

struct Options {
    expires_in: u64,
    refresh_before: u64,
    passthrough: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options { expires_in: 3600, refresh_before: 30, passthrough: false }
    }
}

impl Spine {
    async fn start(opts: Options) -> Spine {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path());
        let upstream = HttpsUpstream::start(&ca, &[HOST, "localhost"]).await;
        let idp = TokenEndpoint::start(&ca).await;
        idp.state.expires_in.store(opts.expires_in, std::sync::atomic::Ordering::SeqCst);
        let secret_file = dir.path().join("client-secret");
        std::fs::write(&secret_file, CLIENT_SECRET).unwrap();
        std::fs::set_permissions(&secret_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
        let yaml = config_yaml(dir.path(), &ca, &upstream, &idp, &opts);
        let broker = Broker::start(dir.path(), &yaml, &[]);
        Spine { dir, ca, upstream, idp: Some(idp), broker }
    }

    fn idp(&self) -> &TokenEndpoint {
        self.idp.as_ref().unwrap()
    }

    fn url(&self, path: &str) -> String {
        format!("https://{HOST}{path}")
    }

    fn curl(&self, extra: &[&str], path: &str) -> (u16, String) {
        curl_via_proxy(&self.broker.proxy_url(), self.broker.ca_cert(), extra, &self.url(path))
    }

    fn audit_path(&self) -> std::path::PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    fn audit_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.audit_path()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Everything the broker wrote that a person or a log shipper could read.
    fn everything_written(&self, bodies: &[String]) -> String {
        let mut all = self.broker.log();
        all.push_str(&std::fs::read_to_string(self.audit_path()).unwrap_or_default());
        for b in bodies {
            all.push_str(b);
        }
        all
    }

    fn assert_no_secret_in(&self, written: &str) {
        let issued = self.idp().issued();
        for token in &issued {
            assert!(!written.contains(token.as_str()), "minted token {token} leaked into broker output");
        }
        assert!(!written.contains(CLIENT_SECRET), "the oauth2 client secret leaked into broker output");
    }
}

fn config_yaml(dir: &Path, ca: &TestCa, upstream: &HttpsUpstream, idp: &TokenEndpoint, opts: &Options) -> String {
    let passthrough = if opts.passthrough { "passthrough_hosts: [{host: localhost, allow_internal_addresses: true}]" } else { "passthrough_hosts: []" };
    format!(
        r#"
identity: {{agent_id: agent-7, tenant: acme}}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0"}}
tls:
  ca_cert_path: {dir}/broker-ca.crt
  upstream_ca_file: {upstream_ca}
{passthrough}
routes:
  - name: github
    hosts: ["{HOST}"]
    connect_to: "{upstream}"
    endpoint: {{listen: "127.0.0.1:0", upstream: "https://{HOST}"}}
    provider: idp
    inject: {{header: {{name: Authorization, format: "Bearer {{secret}}", placeholder: {PLACEHOLDER}}}}}
providers:
  idp:
    type: oauth2
    token_url: "{token_url}"
    client_id: broker-client
    client_secret_file: {dir}/client-secret
    scopes: [repo.read]
    scopes_by_method: {{PATCH: [repo.write]}}
policy: {{file: {dir}/policy.rego, reload_interval_ms: 100}}
credentials:
  refresh_before_expiry_seconds: {refresh}
  retry: {{max_retries: 3, base_delay_ms: 20, max_delay_ms: 100}}
audit: {{path: {dir}/audit.jsonl}}
limits: {{header_read_timeout_ms: 1000, request_timeout_ms: 3000}}
logging: {{format: json}}
"#,
        dir = dir.display(),
        upstream_ca = ca.cert_path.display(),
        upstream = upstream.addr,
        token_url = idp.url(),
        refresh = opts.refresh_before,
    )
}

/// Raw bytes to a listener, for requests no well-behaved client would send.
fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Read until the JSON body is complete (the broker closes or the body ends with '}').
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)));
                    if len.is_some_and(|len| body.len() >= len) {
                        break;
                    }
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_body(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn curl_and_requests_hold_only_the_placeholder_and_the_upstream_gets_the_minted_token() {
    let s = Spine::start(Options::default()).await;
    let auth = format!("Authorization: Bearer {PLACEHOLDER}");

    // curl over HTTP/1.1 and HTTP/2, holding the placeholder.
    let (status, body) = s.curl(&["--http1.1", "-H", &auth], "/repos/acme/widgets");
    assert_eq!(status, 200, "{body}\n{}", s.broker.log());
    let (status, body2) = s.curl(&["--http2", "-H", &auth], "/repos/acme/gears?page=2");
    assert_eq!(status, 200, "{body2}");
    // No Authorization at all is fine too: the broker adds it.
    let (status, body3) = s.curl(&[], "/repos/acme/bolts");
    assert_eq!(status, 200, "{body3}");

    // Python requests through HTTPS_PROXY, trusting only the broker's CA.
    let code = format!(
        r#"
import requests
r = requests.get("https://{HOST}/repos/acme/py", headers={{"Authorization": "Bearer {PLACEHOLDER}"}})
print(r.status_code)
print(r.text)
"#
    );
    let out = run_python(&code, &[("HTTPS_PROXY", &s.broker.proxy_url()), ("REQUESTS_CA_BUNDLE", s.broker.ca_cert().to_str().unwrap())]);
    let py = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "python failed: {py}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(py.starts_with("200\n"), "{py}");

    // The upstream saw the minted token on every request, never the placeholder.
    let issued = s.idp().issued();
    assert_eq!(issued.len(), 1, "one scope (GET on repos) → one token, cached for the rest");
    let seen = s.upstream.requests();
    assert_eq!(seen.len(), 4);
    for r in &seen {
        assert_eq!(r.authorization.as_deref(), Some(format!("Bearer {}", issued[0]).as_str()), "{r:?}");
    }
    assert!(seen.iter().any(|r| r.version == http::Version::HTTP_2), "the broker speaks HTTP/2 upstream when offered");
    // The token endpoint was asked for the route's scope for this method.
    assert!(s.idp().state.forms.lock().unwrap()[0].contains("scope=repo.read"));

    // The client never saw it.
    for b in [&body, &body2, &body3, &py] {
        assert!(!b.contains(&issued[0]));
    }
    s.assert_no_secret_in(&s.everything_written(&[body, body2, body3, py]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_deny_is_403_with_the_reason_and_nothing_is_minted_or_forwarded() {
    let s = Spine::start(Options::default()).await;
    let (status, body) = s.curl(&["-X", "POST", "-d", "{}"], "/repos/acme/widgets/issues");
    assert_eq!(status, 403, "{body}");
    let v = json_body(&body);
    assert_eq!(v["error"], "policy_denied");
    assert!(v["message"].as_str().unwrap().contains("writes to repositories need a human"), "{v}");
    assert!(!v["request_id"].as_str().unwrap().is_empty());
    let (status, body) = s.curl(&[], "/orgs/acme/members");
    assert_eq!(status, 403);
    assert!(json_body(&body)["message"].as_str().unwrap().contains("no rule allows this request"));
    assert_eq!(s.idp().calls(), 0, "a denied request mints nothing");
    assert!(s.upstream.requests().is_empty(), "a denied request is not forwarded");

    let audit = s.audit_records();
    assert_eq!(audit.len(), 2);
    assert_eq!(audit[0]["decision"], "deny");
    assert_eq!(audit[0]["agent_id"], "agent-7");
    assert_eq!(audit[0]["tenant"], "acme");
    assert_eq!(audit[0]["request_id"], v["request_id"].as_str().map(|_| audit[0]["request_id"].clone()).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unrouted_hosts_are_refused_and_passthrough_hosts_are_tunnelled_without_credentials() {
    let s = Spine::start(Options { passthrough: true, ..Default::default() }).await;
    let proxy = s.broker.addresses.proxy.unwrap();

    // CONNECT to a host no route names: 403 naming the host and the request id.
    let answer = raw_exchange(proxy, b"CONNECT evil.example.test:443 HTTP/1.1\r\nHost: evil.example.test:443\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let body = json_body(answer.split_once("\r\n\r\n").unwrap().1);
    assert_eq!(body["error"], "unrouted_host");
    assert!(body["message"].as_str().unwrap().contains("evil.example.test"));
    assert!(!body["request_id"].as_str().unwrap().is_empty());

    // Plain-HTTP absolute-form to an unrouted host: the same.
    let out = support::clients::curl(&["--proxy", &s.broker.proxy_url(), "--write-out", "\n%{http_code}", "http://evil.example.test/x"]);
    let (status, body) = split_status(&out);
    assert_eq!(status, 403);
    assert!(body.contains("evil.example.test"));

    // curl sees the refused CONNECT too.
    let out = support::clients::curl(&["--proxy", &s.broker.proxy_url(), "--write-out", "%{http_connect}", "https://evil.example.test/"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "403");

    // A passthrough host is tunnelled opaquely: the client talks TLS to the real server (trusting
    // the upstream's own CA, not the broker's), and the broker adds nothing.
    let url = format!("https://localhost:{}/public", s.upstream.addr.port());
    let out = support::clients::curl(&[
        "--proxy",
        &s.broker.proxy_url(),
        "--cacert",
        s.ca.cert_path.to_str().unwrap(),
        "-H",
        &format!("Authorization: Bearer {PLACEHOLDER}"),
        "--write-out",
        "\n%{http_code}",
        &url,
    ]);
    let (status, body) = split_status(&out);
    assert_eq!(status, 200, "{body} {}", String::from_utf8_lossy(&out.stderr));
    let seen = s.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {PLACEHOLDER}").as_str()));
    assert_eq!(s.idp().calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oauth2_tokens_are_cached_until_near_expiry_then_minted_afresh() {
    let s = Spine::start(Options { expires_in: 3, refresh_before: 1, ..Default::default() }).await;
    for _ in 0..3 {
        assert_eq!(s.curl(&[], "/repos/acme/a").0, 200);
    }
    assert_eq!(s.idp().calls(), 1, "cached while fresh");
    // Another resource needing the same OAuth scope reuses the token: its power is the OAuth scope.
    assert_eq!(s.curl(&[], "/repos/acme/b").0, 200);
    assert_eq!(s.idp().calls(), 1);
    // PATCH needs `repo.write` as well: a different credential, minted separately.
    assert_eq!(s.curl(&["-X", "PATCH", "-d", "{}"], "/repos/acme/sandbox").0, 200);
    assert_eq!(s.idp().calls(), 2, "a wider OAuth scope is its own credential");
    assert!(s.idp().state.forms.lock().unwrap()[1].contains("scope=repo.read+repo.write"));
    // Within 1 s of the 3 s expiry the lease is no longer served.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(s.curl(&[], "/repos/acme/a").0, 200);
    assert_eq!(s.idp().calls(), 3, "re-minted near expiry");
    let issued = s.idp().issued();
    let seen = s.upstream.requests();
    assert_eq!(seen.last().unwrap().authorization.as_deref(), Some(format!("Bearer {}", issued[2]).as_str()));
    let issues: Vec<_> = s.audit_records().into_iter().filter(|r| r["event"] == "issue").collect();
    assert_eq!(issues.len(), 3, "every issuance is audited");
    for r in &issues {
        for key in ["timestamp", "agent_id", "tenant", "scope", "expiry", "request_id", "lease_id", "decision", "provider"] {
            assert!(!r[key].is_null(), "audit record lacks {key}: {r}");
        }
    }
    s.assert_no_secret_in(&s.everything_written(&[]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_token_endpoint_gets_three_retries_then_the_broker_fails_closed_and_alerts() {
    let mut s = Spine::start(Options::default()).await;
    s.idp().set_mode(Mode::ServerError);
    let (status, body) = s.curl(&[], "/repos/acme/a");
    assert_eq!(status, 503, "{body}");
    let v = json_body(&body);
    assert_eq!(v["error"], "credential_minting_failed");
    assert!(!v["request_id"].as_str().unwrap().is_empty());
    assert_eq!(s.idp().calls(), 4, "one try and exactly three retries");
    assert!(s.upstream.requests().is_empty(), "nothing is forwarded without a credential");
    assert!(s.broker.wait_for_log("Credential Minting Failure", Duration::from_secs(5)), "{}", s.broker.log());
    let alert = s.broker.log().lines().find(|l| l.contains("Credential Minting Failure")).unwrap().to_string();
    assert!(alert.contains("\"level\":\"ERROR\""), "{alert}");

    // A token endpoint that is gone entirely: same answer.
    s.idp = None;
    let (status, body) = s.curl(&[], "/repos/acme/b");
    assert_eq!(status, 503, "{body}");
    assert!(s.upstream.requests().is_empty());
    // And the broker keeps serving other requests (a deny still answers).
    assert_eq!(s.curl(&["-X", "DELETE"], "/repos/acme/b").0, 403);
    let audit = s.audit_records();
    assert!(audit.iter().any(|r| r["decision"] == "error"), "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_log_verifies_and_any_edit_breaks_it() {
    let s = Spine::start(Options::default()).await;
    assert_eq!(s.curl(&[], "/repos/acme/a").0, 200);
    assert_eq!(s.curl(&["-X", "POST"], "/repos/acme/a").0, 403);
    assert_eq!(s.curl(&[], "/repos/acme/b").0, 200);
    assert_eq!(s.curl(&[], "/orgs/acme").0, 403);
    let path = s.audit_path();
    let original = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = original.lines().collect();
    assert!(lines.len() >= 4, "{original}");

    let verify = |text: &str| {
        let f = s.dir.path().join("check.jsonl");
        std::fs::write(&f, text).unwrap();
        cli(&["audit", "verify", f.to_str().unwrap()])
    };
    let ok = cli(&["audit", "verify", path.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));

    // One byte changed in the second record (a deny turned into an issue would be the attack).
    let mut bytes = original.clone().into_bytes();
    let at = lines[0].len() + 1 + lines[1].find("acme").unwrap();
    bytes[at] = b'A';
    let out = verify(&String::from_utf8(bytes).unwrap());
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("line 2") || String::from_utf8_lossy(&out.stderr).contains("line 2"), "{out:?}");

    // A deleted line.
    let deleted: String = lines.iter().enumerate().filter(|(i, _)| *i != 1).map(|(_, l)| format!("{l}\n")).collect();
    assert!(!verify(&deleted).status.success());

    // Two lines swapped.
    let mut swapped = lines.clone();
    swapped.swap(1, 2);
    let swapped: String = swapped.iter().map(|l| format!("{l}\n")).collect();
    assert!(!verify(&swapped).status.success());

    // A truncated tail is caught when the head hash is known.
    let head = s.audit_records().last().unwrap()["hash"].as_str().unwrap().to_string();
    let truncated: String = lines[..lines.len() - 1].iter().map(|l| format!("{l}\n")).collect();
    let f = s.dir.path().join("truncated.jsonl");
    std::fs::write(&f, truncated).unwrap();
    assert!(!cli(&["audit", "verify", f.to_str().unwrap(), "--expect-head", &head]).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_real_looking_credential_from_the_agent_is_refused_not_overwritten() {
    let s = Spine::start(Options::default()).await;
    let (status, body) = s.curl(&["-H", "Authorization: Bearer ghp_16C7e42F292c6912E7710c838347Ae178B4a"], "/repos/acme/a");
    assert_eq!(status, 403, "{body}");
    assert_eq!(json_body(&body)["error"], "real_credential_refused");
    assert!(!body.contains("ghp_16C7e42F292c6912E7710c838347Ae178B4a"), "the refused value is not echoed");
    assert!(s.upstream.requests().is_empty());
    assert!(!s.broker.log().contains("ghp_16C7e42F292c6912E7710c838347Ae178B4a"), "nor logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_endpoint_listener_needs_no_proxy_and_no_ca() {
    let s = Spine::start(Options::default()).await;
    let url = format!("{}/repos/acme/a", s.broker.endpoint_url("github"));
    let out = support::clients::curl(&["--noproxy", "*", "--write-out", "\n%{http_code}", &url]);
    let (status, body) = split_status(&out);
    assert_eq!(status, 200, "{body}");
    let seen = s.upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {}", s.idp().issued()[0]).as_str()));
    // Policy applies to the upstream's resource here too.
    let out = support::clients::curl(&["--noproxy", "*", "-X", "PUT", "--write-out", "\n%{http_code}", &url]);
    assert_eq!(split_status(&out).0, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_gets_a_clear_4xx_and_the_broker_keeps_serving() {
    let s = Spine::start(Options::default()).await;
    let proxy = s.broker.addresses.proxy.unwrap();

    let answer = raw_exchange(proxy, b"CONNECT not-a-target HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("bad_connect_target"), "{answer}");

    // Request smuggling: Content-Length and Transfer-Encoding together. hyper applies RFC 9112
    // §6.3: Transfer-Encoding wins, Content-Length is dropped and the connection is closed after the
    // answer, so the request hidden behind the chunked body never reaches the upstream.
    let endpoint = s.broker.addresses.endpoints["github"];
    let smuggled = b"GET /repos/acme/a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 48\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /repos/acme/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let answer = raw_exchange(endpoint, smuggled);
    assert!(answer.contains("connection: close"), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "one request answered, none smuggled: {answer}");
    assert!(!s.upstream.requests().iter().any(|r| r.path.contains("smuggled")));
    // Credentials never go out over cleartext: an absolute-form http:// request to a routed host.
    let answer = raw_exchange(proxy, b"GET http://api.github.test/repos/acme/a HTTP/1.1\r\nHost: api.github.test\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 403") && answer.contains("plaintext_refused"), "{answer}");

    let huge = format!("GET http://api.github.test/repos/a HTTP/1.1\r\nHost: api.github.test\r\nX-Big: {}\r\n\r\n", "a".repeat(128 * 1024));
    let answer = raw_exchange(proxy, huge.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 431"), "oversized headers: {}", &answer[..answer.len().min(200)]);

    let answer = raw_exchange(proxy, b"GET /relative HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "origin-form on the proxy port: {answer}");

    let answer = raw_exchange(proxy, b"\x16\x03\x01garbage that is not http\r\n\r\n");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer}");

    // Still serving.
    assert_eq!(s.curl(&[], "/repos/acme/a").0, 200);
    let reached: Vec<String> = s.upstream.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(reached, ["/repos/acme/a", "/repos/acme/a"], "only the two well-formed requests reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_policy_applies_without_restart_and_a_broken_one_keeps_the_old() {
    let s = Spine::start(Options::default()).await;
    assert_eq!(s.curl(&[], "/orgs/acme").0, 403);
    let policy = s.dir.path().join("policy.rego");
    std::fs::write(&policy, POLICY.replace("https://api.github.test/repos/", "https://api.github.test/")).unwrap();
    assert!(s.broker.wait_for_log("policy reloaded", Duration::from_secs(10)), "{}", s.broker.log());
    assert_eq!(s.curl(&[], "/orgs/acme").0, 200);

    std::fs::write(&policy, "package credential_broker\nthis is not rego").unwrap();
    assert!(s.broker.wait_for_log("new policy rejected", Duration::from_secs(10)), "{}", s.broker.log());
    assert_eq!(s.curl(&[], "/orgs/acme").0, 200, "the previous policy stays in force");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn health_readiness_and_graceful_shutdown() {
    let mut s = Spine::start(Options::default()).await;
    for path in ["/healthz", "/readyz"] {
        let out = support::clients::curl(&["--noproxy", "*", "--write-out", "\n%{http_code}", &format!("{}{path}", s.broker.admin_url())]);
        assert_eq!(split_status(&out).0, 200, "{path}");
    }
    // The agent-facing proxy port does not answer admin paths.
    let answer = raw_exchange(s.broker.addresses.proxy.unwrap(), b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let status = s.broker.terminate(Duration::from_secs(15)).expect("broker exits on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(s.broker.log().contains("draining"));
}

#[test]
fn the_log_carries_the_request_id_on_every_request_line() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    rt.block_on(async {
        let s = Spine::start(Options::default()).await;
        let (_, body) = s.curl(&["-X", "POST"], "/repos/acme/a");
        let denied_id = json_body(&body)["request_id"].as_str().unwrap().to_string();
        let (status, headers) = s.curl(&["--dump-header", "-", "--output", "/dev/null"], "/repos/acme/a");
        assert_eq!(status, 200);
        let allowed_id =
            headers.lines().find_map(|l| l.strip_prefix("x-credential-broker-request-id: ")).expect("the response carries the request id").trim().to_string();
        let log = s.broker.log();
        for id in [&denied_id, &allowed_id] {
            assert!(log.lines().any(|l| l.contains(id.as_str())), "no log line carries request id {id}");
        }
        // Every line logged inside a request carries its id.
        for l in log.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"));
            if v.get("method").is_some() || v["span"]["name"] == "request" {
                assert!(v["span"]["request_id"].is_string(), "request log line without request id: {l}");
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_sent_events_stream_through_without_buffering() {
    let s = Spine::start(Options::default()).await;
    // The upstream sends the second event 3 s after the first; curl gives up after 2 s, so it
    // can only have the first event if the broker passed it on at once.
    let out = support::clients::curl(&[
        "--proxy",
        &s.broker.proxy_url(),
        "--cacert",
        s.broker.ca_cert().to_str().unwrap(),
        "--no-buffer",
        "--max-time",
        "2",
        &s.url("/repos/acme/events"),
    ]);
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(got.contains("data: first"), "stdout={got:?} stderr={}", String::from_utf8_lossy(&out.stderr));
    assert!(!got.contains("data: second"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_upgrades_pass_through_with_the_credential() {
    let s = Spine::start(Options::default()).await;
    let endpoint = s.broker.addresses.endpoints["github"];
    let mut conn = TcpStream::connect(endpoint).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    conn.write_all(
        b"GET /repos/acme/ws HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(conn.read(&mut byte).unwrap(), 1, "connection closed during the handshake: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    conn.write_all(b"hello through the tunnel").unwrap();
    let mut echo = [0u8; 24];
    conn.read_exact(&mut echo).unwrap();
    assert_eq!(&echo, b"hello through the tunnel");
    let seen = s.upstream.requests();
    assert_eq!(seen[0].authorization.as_deref(), Some(format!("Bearer {}", s.idp().issued()[0]).as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_and_slow_upstreams_are_cut_off_by_the_configured_timeouts() {
    let s = Spine::start(Options::default()).await;
    // A client that never finishes its headers (slowloris) is disconnected after
    // header_read_timeout (1 s here) instead of holding a connection slot forever.
    let proxy = s.broker.addresses.proxy.unwrap();
    let started = std::time::Instant::now();
    let mut conn = TcpStream::connect(proxy).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    conn.write_all(b"GET http://api.github.test/repos/acme/a HTTP/1.1\r\nHost: api.github.test\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = conn.read_to_end(&mut buf);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "closed after {waited:?}");
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");

    // An upstream that does not answer within request_timeout (3 s here): 504 with a JSON body.
    let (status, body) = s.curl(&[], "/repos/acme/slow");
    assert_eq!(status, 504, "{body}");
    assert_eq!(json_body(&body)["error"], "upstream_timeout");
    // And the broker still serves.
    assert_eq!(s.curl(&[], "/repos/acme/a").0, 200);
}
