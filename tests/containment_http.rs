//! Containment on the HTTP side, attacked the way an agent that wants out would attack it: dot
//! segments and their encodings, protocol upgrades and CONNECT inside intercepted connections,
//! domain fronting and request smuggling. Real curl (`--path-as-is`), raw sockets and TLS/HTTP/2
//! clients go through the real broker to a recording HTTPS upstream; each case asserts what the
//! client saw, what reached the upstream (nothing, or exactly the canonical request) and the audit.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use support::broker::Broker;
use support::clients::{curl, curl_via_proxy, split_status};
use support::pki::TestCa;
use support::token_endpoint::{TokenEndpoint, CLIENT_SECRET};
use support::upstream::HttpsUpstream;

const HOST: &str = "api.demo.test";
/// A second routed host on the same upstream: what a fronting attempt names instead of HOST.
const OTHER: &str = "other.demo.test";
const S3: &str = "s3.us-east-1.amazonaws.com";
const PLACEHOLDER: &str = "credential-broker-placeholder";

/// Reads of repositories only, on HOST (the endpoint's base path is /v1). OTHER is allowed nothing.
const GET_ONLY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "reads of repositories"} if {
    input.scope.action == "http:GET"
    some prefix in {"https://api.demo.test/repos/", "https://api.demo.test/v1/repos/"}
    startswith(input.scope.resource, prefix)
}
"#;

/// The rule that opens WebSockets on one path.
const UPGRADE_RULE: &str = r#"
decision := {"allow": true, "reason": "the demo websocket"} if {
    input.scope.action == "http:UPGRADE"
    input.request.upgrade == "websocket"
    input.scope.resource in {"https://api.demo.test/repos/demo/ws", "https://api.demo.test/v1/repos/demo/ws"}
}
"#;

struct Harness {
    dir: tempfile::TempDir,
    _ca: TestCa,
    upstream: HttpsUpstream,
    idp: TokenEndpoint,
    broker: Broker,
}

impl Harness {
    async fn start(policy: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path());
        let upstream = HttpsUpstream::start(&ca, &[HOST, OTHER, "localhost"]).await;
        let idp = TokenEndpoint::start(&ca).await;
        let secret_file = dir.path().join("client-secret");
        std::fs::write(&secret_file, CLIENT_SECRET).unwrap();
        std::fs::set_permissions(&secret_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        std::fs::write(dir.path().join("policy.rego"), policy).unwrap();
        let yaml = format!(
            r#"
identity: {{agent_id: agent-7, tenant: demo}}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0"}}
tls:
  ca_cert_path: {dir}/broker-ca.crt
  upstream_ca_file: {upstream_ca}
routes:
  - name: demo
    hosts: ["{HOST}"]
    connect_to: "{upstream}"
    endpoint: {{listen: "127.0.0.1:0", upstream: "https://{HOST}/v1"}}
    provider: idp
    inject: {{header: {{name: Authorization, format: "Bearer {{secret}}", placeholder: {PLACEHOLDER}}}}}
  - name: other
    hosts: ["{OTHER}"]
    connect_to: "{upstream}"
    provider: idp
    inject: {{header: {{name: Authorization, format: "Bearer {{secret}}", placeholder: {PLACEHOLDER}}}}}
  - name: aws
    hosts: ["*.amazonaws.com"]
    provider: sts
    inject: {{sigv4: {{account_id: "123456789012", placeholder_access_key_id: {PLACEHOLDER}}}}}
providers:
  idp:
    type: oauth2
    token_url: "{token_url}"
    client_id: broker-client
    client_secret_file: {dir}/client-secret
    scopes: [repo.read]
  sts: {{type: sts, role_arn: "arn:aws:iam::123456789012:role/agent", region: us-east-1}}
policy: {{file: {dir}/policy.rego, reload_interval_ms: 100}}
audit: {{path: {dir}/audit.jsonl}}
limits: {{header_read_timeout_ms: 1000, request_timeout_ms: 5000, drain_grace_ms: 2000}}
logging: {{format: json}}
"#,
            dir = dir.path().display(),
            upstream_ca = ca.cert_path.display(),
            upstream = upstream.addr,
            token_url = idp.url(),
        );
        let env = [("AWS_ACCESS_KEY_ID", "AKIDBROKERBASE"), ("AWS_SECRET_ACCESS_KEY", "broker-base-secret"), ("AWS_EC2_METADATA_DISABLED", "true")];
        let broker = Broker::start(dir.path(), &yaml, &env);
        Harness { dir, _ca: ca, upstream, idp, broker }
    }

    /// curl through the forward proxy (CONNECT + interception), the path sent exactly as written.
    fn via_proxy(&self, path: &str) -> (u16, String) {
        curl_via_proxy(&self.broker.proxy_url(), self.broker.ca_cert(), &["--path-as-is"], &format!("https://{HOST}{path}"))
    }

    /// curl to the endpoint listener (base URL https://api.demo.test/v1), the path as written.
    fn via_endpoint(&self, path: &str) -> (u16, String) {
        let url = format!("{}{path}", self.broker.endpoint_url("demo"));
        split_status(&curl(&["--noproxy", "*", "--path-as-is", "--write-out", "\n%{http_code}", &url]))
    }

    fn audit(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// The one audit record of a request, found by the id its answer carried. A deny is durable
    /// before the answer; an allow record rides the next fsync batch, so it is waited for.
    fn audit_of(&self, request_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let records: Vec<Value> = self.audit().into_iter().filter(|r| r["request_id"] == request_id && r["event"] != "issue").collect();
            if !records.is_empty() || Instant::now() > deadline {
                assert_eq!(records.len(), 1, "one record for request {request_id}: {records:?}");
                return records.into_iter().next().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn endpoint_addr(&self) -> std::net::SocketAddr {
        self.broker.addresses.endpoints["demo"]
    }

    /// A TLS connection to `host` through the proxy's CONNECT, offering `alpn`.
    async fn tunnel(&self, host: &str, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut tcp = TcpStream::connect(self.broker.addresses.proxy.unwrap()).await.unwrap();
        tcp.write_all(format!("CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n").as_bytes()).await.unwrap();
        let head = read_head(&mut tcp).await;
        assert!(head.starts_with("HTTP/1.1 200"), "CONNECT {host}: {head}");
        let connector = tls_connector(self.broker.ca_cert(), alpn);
        connector.connect(ServerName::try_from(host.to_string()).unwrap(), tcp).await.unwrap()
    }

    /// Replace the policy and wait until the broker has loaded it.
    fn set_policy(&self, text: &str) {
        let reloads = self.broker.log().matches("policy reloaded").count();
        std::fs::write(self.dir.path().join("policy.rego"), text).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.broker.log().matches("policy reloaded").count() == reloads {
            assert!(Instant::now() < deadline, "the policy was not reloaded: {}", self.broker.log());
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn upstream_paths(&self) -> Vec<String> {
        self.upstream.requests().iter().map(|r| r.path.clone()).collect()
    }

    fn assert_no_token_in(&self, written: &str) {
        for token in self.idp.issued() {
            assert!(!written.contains(token.as_str()), "minted token leaked");
        }
        assert!(!written.contains(CLIENT_SECRET));
    }
}

fn tls_connector(ca: &Path, alpn: &[u8]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// Read one response head (up to the blank line), byte by byte so nothing after it is consumed.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            other => panic!("connection ended during a response head ({other:?}): {}", String::from_utf8_lossy(&head)),
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Send `request` and read everything the broker answers until it closes the connection.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, request: &[u8]) -> String {
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the broker kept the connection open: {}", String::from_utf8_lossy(&out));
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON body of a complete answer.
fn body_json(answer: &str) -> Value {
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"))
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn permission(record: &Value) -> (String, String) {
    let p = &record["scope"]["permissions"][0];
    (p["action"].as_str().unwrap_or_default().to_string(), p["resource"].as_str().unwrap_or_default().to_string())
}

// ---------------------------------------------------------------------------------------------
// Dot segments
// ---------------------------------------------------------------------------------------------

/// What the broker must make of an escape attempt.
enum Expect {
    /// Resolved to this canonical path (under the request root), which the policy then denies.
    DeniedAs(&'static str),
    /// Refused with 400 `unsafe_path`, the reason naming this.
    Refused(&'static str),
}

const ESCAPES: &[(&str, Expect)] = &[
    ("/repos/../admin", Expect::DeniedAs("/admin")),
    ("/repos/demo/../../admin", Expect::DeniedAs("/admin")),
    ("/repos/%2e%2e/admin", Expect::DeniedAs("/admin")),
    ("/repos/.%2e/admin", Expect::DeniedAs("/admin")),
    ("/repos/%2E%2E/admin", Expect::DeniedAs("/admin")),
    ("/repos/./../admin", Expect::DeniedAs("/admin")),
    // nginx merges slashes before resolving dots: /repos//../admin is /admin there.
    ("/repos//../admin", Expect::DeniedAs("/admin")),
    ("/repos/%2fadmin", Expect::Refused("encoded /")),
    ("/repos/..%2Fadmin", Expect::Refused("encoded /")),
    ("/repos/..%5cadmin", Expect::Refused("encoded /")),
    ("/repos/..;/admin", Expect::Refused("path parameters")),
    ("/../admin", Expect::Refused("climbs above the root")),
    ("/repos/../../admin", Expect::Refused("climbs above the root")),
    ("/repos/%00/admin", Expect::Refused("NUL")),
    ("/repos/%252e%252e/admin", Expect::Refused("double percent-encoding")),
    ("/repos/%c0%ae%c0%ae/admin", Expect::Refused("not UTF-8")),
    ("/repos/%zz/admin", Expect::Refused("malformed percent-encoding")),
];

/// Check one escape attempt's answer and audit record. `base` is the endpoint's base path.
fn check_escape(h: &Harness, how: &str, path: &str, expect: &Expect, base: &str, (status, body): (u16, String)) {
    let v = json(&body);
    let id = v["request_id"].as_str().unwrap_or_else(|| panic!("{how} {path}: no request id in {body}"));
    let record = h.audit_of(id);
    assert_eq!(record["event"], "deny", "{how} {path}: {record}");
    match expect {
        Expect::DeniedAs(canonical) => {
            assert_eq!(status, 403, "{how} {path}: {body}");
            assert_eq!(v["error"], "policy_denied", "{how} {path}: {body}");
            let resource = format!("https://{HOST}{base}{canonical}");
            assert_eq!(permission(&record), ("http:GET".to_string(), resource), "{how} {path}: the policy decided on the canonical path");
            assert_eq!(record["reason"], "no rule allows this request");
        }
        Expect::Refused(why) => {
            assert_eq!(status, 400, "{how} {path}: {body}");
            assert_eq!(v["error"], "unsafe_path", "{how} {path}: {body}");
            assert!(v["message"].as_str().unwrap().contains(why), "{how} {path}: {body}");
            assert!(record["scope"].is_null(), "{how} {path}: nothing was classified: {record}");
            assert_eq!(record["details"]["code"], "unsafe_path");
            assert!(record["reason"].as_str().unwrap().contains(why), "{record}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dot_segment_escapes_through_the_proxy_and_the_endpoint_never_reach_the_upstream() {
    let h = Harness::start(GET_ONLY).await;
    let mut bodies = Vec::new();
    for (path, expect) in ESCAPES {
        let answer = h.via_proxy(path);
        bodies.push(answer.1.clone());
        check_escape(&h, "proxy", path, expect, "", answer);
        // The endpoint prepends its base path /v1 to the canonical path: `..` cannot climb out of it.
        let answer = h.via_endpoint(path);
        bodies.push(answer.1.clone());
        check_escape(&h, "endpoint", path, expect, "/v1", answer);
    }
    // A literal backslash (IIS reads it as /): curl rewrites it, so it goes on a raw socket.
    let mut raw = TcpStream::connect(h.endpoint_addr()).await.unwrap();
    let answer = exchange(&mut raw, b"GET /repos\\..\\admin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let v = body_json(&answer);
    assert_eq!(v["error"], "unsafe_path", "{answer}");
    let record = h.audit_of(v["request_id"].as_str().unwrap());
    assert_eq!((record["event"].as_str(), record["details"]["code"].as_str()), (Some("deny"), Some("unsafe_path")), "{record}");

    assert!(h.upstream.requests().is_empty(), "an escape reached the upstream: {:?}", h.upstream_paths());
    assert_eq!(h.idp.calls(), 0, "nothing was minted for a refused request");
    bodies.push(h.broker.log());
    h.assert_no_token_in(&bodies.concat());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn legitimate_paths_are_served_and_exactly_the_canonical_path_goes_upstream() {
    let h = Harness::start(GET_ONLY).await;
    // (sent, canonical path, query)
    let cases = [
        ("/repos/demo/widgets", "/repos/demo/widgets", None),
        ("/repos/demo/widgets/", "/repos/demo/widgets/", None),
        ("/repos/demo/a%20b.txt?x=1&y=%2F&z=..", "/repos/demo/a%20b.txt", Some("x=1&y=%2F&z=..")),
        ("/repos/demo/%e2%82%ac", "/repos/demo/%E2%82%AC", None),
        ("/repos/demo/.github/x..y", "/repos/demo/.github/x..y", None),
        ("/repos/demo/%7Euser/%61", "/repos/demo/~user/a", None),
        ("/repos/demo/./x/../widgets", "/repos/demo/widgets", None),
        ("/repos/demo/x;v=1", "/repos/demo/x;v=1", None),
    ];
    for (how, base) in [("proxy", ""), ("endpoint", "/v1")] {
        for (sent, canonical, query) in cases {
            let before = h.upstream.requests().len();
            let (status, body) = if how == "proxy" { h.via_proxy(sent) } else { h.via_endpoint(sent) };
            assert_eq!(status, 200, "{how} {sent}: {body}");
            let reached = h.upstream.requests();
            assert_eq!(reached.len(), before + 1, "{how} {sent}");
            let got = &reached[before];
            assert_eq!(got.path, format!("{base}{canonical}"), "{how} {sent}: the upstream got exactly the canonical path");
            assert_eq!(got.query.as_deref(), query, "{how} {sent}: the query goes as sent");
            assert_eq!(got.authorization.as_deref(), Some(format!("Bearer {}", h.idp.issued()[0]).as_str()));
        }
    }
    // Each allowed request was audited with the canonical resource.
    let deadline = Instant::now() + Duration::from_secs(10);
    let allowed = loop {
        // Allow records ride the next fsync batch: wait for all of them.
        let allowed: Vec<String> = h.audit().iter().filter(|r| r["event"] == "allow").map(|r| permission(r).1).collect();
        if allowed.len() >= 2 * cases.len() || Instant::now() > deadline {
            break allowed;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(allowed.len(), 2 * cases.len(), "{allowed:?}");
    assert!(allowed.contains(&format!("https://{HOST}/repos/demo/widgets")), "{allowed:?}");
    assert!(allowed.contains(&format!("https://{HOST}/v1/repos/demo/~user/a")), "{allowed:?}");
    assert!(!allowed.iter().any(|r| r.contains("/./") || r.contains("/../") || r.contains("%7E")), "{allowed:?}");
}

// ---------------------------------------------------------------------------------------------
// Upgrades and CONNECT inside
// ---------------------------------------------------------------------------------------------

fn upgrade_request(path: &str, protocol: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: {protocol}\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_websocket_is_its_own_action_denied_by_a_get_only_policy_and_allowed_by_an_upgrade_rule() {
    let h = Harness::start(GET_ONLY).await;

    // GET is allowed on /repos/…, but a tunnel is not a GET.
    let mut tls = h.tunnel(HOST, b"http/1.1").await;
    let answer = exchange(&mut tls, upgrade_request("/repos/demo/ws", "websocket").replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    let v = body_json(&answer);
    assert_eq!(v["error"], "policy_denied");
    let record = h.audit_of(v["request_id"].as_str().unwrap());
    assert_eq!(record["event"], "deny");
    assert_eq!(permission(&record), ("http:UPGRADE".into(), format!("https://{HOST}/repos/demo/ws")));
    assert_eq!(record["details"]["upgrade"], "websocket");

    // Offering two protocols lets the upstream choose one the policy did not see: refused.
    let mut tls = h.tunnel(HOST, b"http/1.1").await;
    let answer = exchange(&mut tls, upgrade_request("/repos/demo/ws", "websocket, h2c").replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(body_json(&answer)["message"].as_str().unwrap().contains("exactly one protocol"), "{answer}");
    assert!(h.upstream.requests().is_empty(), "no upgrade reached the upstream: {:?}", h.upstream_paths());
    assert_eq!(h.idp.calls(), 0);

    // With a rule for http:UPGRADE: 101, and the tunnel carries bytes both ways.
    h.set_policy(&format!("{GET_ONLY}{UPGRADE_RULE}"));
    let mut tls = h.tunnel(HOST, b"http/1.1").await;
    tls.write_all(upgrade_request("/repos/demo/ws", "websocket").as_bytes()).await.unwrap();
    let head = read_head(&mut tls).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    let id = head.lines().find_map(|l| l.strip_prefix("x-credential-broker-request-id: ")).unwrap().trim().to_string();
    tls.write_all(b"ping through the tunnel").await.unwrap();
    let mut echo = [0u8; 23];
    tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut echo)).await.unwrap().unwrap();
    assert_eq!(&echo, b"ping through the tunnel");

    let reached = h.upstream.requests();
    assert_eq!(reached.len(), 1, "{reached:?}");
    assert_eq!(reached[0].path, "/repos/demo/ws");
    assert_eq!(reached[0].authorization.as_deref(), Some(format!("Bearer {}", h.idp.issued()[0]).as_str()));
    let record = h.audit_of(&id);
    assert_eq!(record["event"], "allow");
    assert_eq!(permission(&record), ("http:UPGRADE".into(), format!("https://{HOST}/repos/demo/ws")));
    assert_eq!(record["details"]["upgrade"], "websocket");
    assert_eq!(record["reason"], "the demo websocket");

    // The rule names one path: a tunnel anywhere else is still denied.
    let mut tls = h.tunnel(HOST, b"http/1.1").await;
    let answer = exchange(&mut tls, upgrade_request("/repos/other/ws", "websocket").replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(h.upstream.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connect_inside_an_intercepted_connection_or_on_an_endpoint_is_refused_never_forwarded() {
    let h = Harness::start(GET_ONLY).await;
    let connect = format!("CONNECT {OTHER}:443 HTTP/1.1\r\nHost: {OTHER}:443\r\n\r\n");

    // HTTP/1.1 CONNECT inside the TLS connection of an accepted CONNECT.
    let mut tls = h.tunnel(HOST, b"http/1.1").await;
    let answer = exchange(&mut tls, connect.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    let v = body_json(&answer);
    assert_eq!(v["error"], "tunnel_refused");
    let record = h.audit_of(v["request_id"].as_str().unwrap());
    assert_eq!((record["event"].as_str(), record["details"]["code"].as_str()), (Some("deny"), Some("tunnel_refused")), "{record}");

    // On the endpoint listener.
    let mut raw = TcpStream::connect(h.endpoint_addr()).await.unwrap();
    let answer = exchange(&mut raw, connect.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(body_json(&answer)["error"], "tunnel_refused");

    // HTTP/2 CONNECT (RFC 9113 §8.5) inside an intercepted connection.
    let tls = h.tunnel(HOST, b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder().method(http::Method::CONNECT).uri(format!("{OTHER}:443")).body(Empty::<Bytes>::new()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(json(&String::from_utf8_lossy(&body))["error"], "tunnel_refused");

    // Extended CONNECT (RFC 8441, WebSockets over HTTP/2): the broker does not offer it; if a
    // client sends it anyway it is refused, never tunnelled.
    let mut req = http::Request::builder().method(http::Method::CONNECT).uri(format!("https://{HOST}/repos/demo/ws")).body(Empty::<Bytes>::new()).unwrap();
    req.extensions_mut().insert(hyper::ext::Protocol::from_static("websocket"));
    if let Ok(resp) = sender.send_request(req).await {
        assert!(resp.status().is_client_error(), "extended CONNECT answered {}", resp.status());
    }

    assert!(h.upstream.requests().is_empty(), "{:?}", h.upstream_paths());
    assert_eq!(h.idp.calls(), 0);
}

/// A request signed by the placeholder key as an AWS SDK would sign it.
fn placeholder_signed_s3_get(path: &str) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    let identity = aws_credential_types::Credentials::new(PLACEHOLDER, PLACEHOLDER, None, None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let headers = [("host", S3), ("x-amz-content-sha256", "UNSIGNED-PAYLOAD")];
    let signable = SignableRequest::new("GET", format!("https://{S3}{path}"), headers.into_iter(), SignableBody::UnsignedPayload).unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut out: Vec<(String, String)> = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    out.extend(instructions.headers().map(|(k, v)| (k.to_string(), v.to_string())));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_on_an_aws_route_is_refused_with_a_clear_error_not_stripped() {
    let h = Harness::start(GET_ONLY).await;
    let mut request = "GET /bucket/ws HTTP/1.1\r\n".to_string();
    for (k, v) in placeholder_signed_s3_get("/bucket/ws") {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let mut tls = h.tunnel(S3, b"http/1.1").await;
    tls.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut tls).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let len: usize = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap())).unwrap();
    let mut body = vec![0u8; len];
    tls.read_exact(&mut body).await.unwrap();
    // Answered as S3 answers, so the SDK shows the reason.
    let body = String::from_utf8_lossy(&body).into_owned();
    assert!(head.to_ascii_lowercase().contains("content-type: application/xml"), "{head}");
    let element = |tag: &str| body.split(&format!("<{tag}>")).nth(1).and_then(|rest| rest.split(&format!("</{tag}>")).next()).unwrap_or_default().to_string();
    assert_eq!(element("Code"), "InvalidRequest", "{body}");
    let request_id = element("RequestId");
    let message = element("Message");
    assert!(message.contains("AWS routes") && message.ends_with(&format!("(credential-broker tunnel_refused, request id {request_id})")), "{body}");
    let record = h.audit_of(&request_id);
    assert_eq!(record["route"], "aws");
    assert_eq!(record["details"]["code"], "tunnel_refused");
    assert!(!h.broker.log().contains("credential issued"), "nothing was minted");
}

// ---------------------------------------------------------------------------------------------
// Domain fronting
// ---------------------------------------------------------------------------------------------

/// The request reached the upstream for HOST, and the audit names HOST, whatever else it named.
fn assert_went_to_host(h: &Harness, request_id: &str, path: &str) {
    let reached = h.upstream.requests();
    let got = reached.iter().find(|r| r.path == path).unwrap_or_else(|| panic!("{path} did not reach the upstream: {reached:?}"));
    assert_eq!(got.host.as_deref(), Some(HOST), "{got:?}");
    let record = h.audit_of(request_id);
    assert_eq!(record["event"], "allow");
    assert_eq!(record["route"], "demo");
    assert_eq!(permission(&record), ("http:GET".into(), format!("https://{HOST}{path}")));
}

fn request_id_of(answer: &str) -> String {
    answer.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("x-credential-broker-request-id: ").map(|v| v.trim().to_string())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn domain_fronting_cannot_move_a_request_to_another_host() {
    let h = Harness::start(GET_ONLY).await;

    // Inner Host ≠ the CONNECT / SNI host (OTHER is routed too, and the policy allows it nothing).
    let mut tls = h.tunnel(HOST, b"http/1.1").await;
    let answer = exchange(&mut tls, format!("GET /repos/demo/host-header HTTP/1.1\r\nHost: {OTHER}\r\nConnection: close\r\n\r\n").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_went_to_host(&h, &request_id_of(&answer), "/repos/demo/host-header");

    // Absolute-form naming OTHER inside the connection intercepted for HOST.
    let mut tls = h.tunnel(HOST, b"http/1.1").await;
    let answer = exchange(&mut tls, format!("GET https://{OTHER}/repos/demo/absolute HTTP/1.1\r\nHost: {OTHER}\r\nConnection: close\r\n\r\n").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_went_to_host(&h, &request_id_of(&answer), "/repos/demo/absolute");

    // Absolute-form to the proxy port itself: the URI's host decides, not the Host header.
    let mut raw = TcpStream::connect(h.broker.addresses.proxy.unwrap()).await.unwrap();
    let answer = exchange(&mut raw, format!("GET https://{HOST}/repos/demo/uri-host HTTP/1.1\r\nHost: {OTHER}\r\nConnection: close\r\n\r\n").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_went_to_host(&h, &request_id_of(&answer), "/repos/demo/uri-host");

    // HTTP/2 with :authority ≠ SNI.
    let tls = h.tunnel(HOST, b"h2").await;
    let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder().uri(format!("https://{OTHER}/repos/demo/authority")).body(Empty::<Bytes>::new()).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-credential-broker-request-id"].to_str().unwrap().to_string();
    assert_went_to_host(&h, &id, "/repos/demo/authority");

    // The endpoint listener: its upstream is fixed, the Host header is only a header.
    let mut raw = TcpStream::connect(h.endpoint_addr()).await.unwrap();
    let answer = exchange(&mut raw, format!("GET /repos/demo/endpoint HTTP/1.1\r\nHost: {OTHER}\r\nConnection: close\r\n\r\n").as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let reached = h.upstream.requests();
    assert_eq!(reached.last().unwrap().path, "/v1/repos/demo/endpoint");
    assert_eq!(reached.last().unwrap().host.as_deref(), Some(HOST));

    assert!(!h.audit().iter().any(|r| r["route"] == "other"), "no request was decided for {OTHER}");
    assert!(reached.iter().all(|r| r.host.as_deref() == Some(HOST)), "{reached:?}");
}

// ---------------------------------------------------------------------------------------------
// Request smuggling
// ---------------------------------------------------------------------------------------------

const SMUGGLED: &str = "GET /repos/demo/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

/// Framing tricks, each hiding SMUGGLED where one reading of the head sees body and another a
/// second request. `{len}` is the length of everything after the head.
fn smuggling_variants() -> Vec<(&'static str, String)> {
    let chunked_then_smuggled = format!("0\r\n\r\n{SMUGGLED}");
    let with_len = |head: &str, body: &str| format!("{}{body}", head.replace("{len}", &body.len().to_string()));
    vec![
        ("CL+TE", with_len("GET /repos/demo/a HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nTransfer-Encoding: chunked\r\n\r\n", &chunked_then_smuggled)),
        ("TE+CL", with_len("GET /repos/demo/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: {len}\r\n\r\n", &chunked_then_smuggled)),
        ("two Content-Lengths", format!("GET /repos/demo/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{SMUGGLED}", SMUGGLED.len())),
        ("Content-Length list", format!("GET /repos/demo/a HTTP/1.1\r\nHost: x\r\nContent-Length: 0, {}\r\n\r\n{SMUGGLED}", SMUGGLED.len())),
        (
            "TE 'chunked ' + CL",
            with_len("GET /repos/demo/a HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nTransfer-Encoding: chunked \r\n\r\n", &chunked_then_smuggled),
        ),
        (
            "TE xchunked + CL",
            with_len("GET /repos/demo/a HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nTransfer-Encoding: xchunked\r\n\r\n", &chunked_then_smuggled),
        ),
        ("TE 'chunked, identity'", format!("GET /repos/demo/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n{chunked_then_smuggled}")),
        (
            "TE twice",
            format!("GET /repos/demo/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n{chunked_then_smuggled}"),
        ),
        (
            "TE obs-fold",
            with_len("GET /repos/demo/a HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", &chunked_then_smuggled),
        ),
        (
            "folded TE line",
            with_len("GET /repos/demo/a HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n Transfer-Encoding: chunked\r\n\r\n", &chunked_then_smuggled),
        ),
        (
            "TE with a tab",
            with_len("GET /repos/demo/a HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\nTransfer-Encoding:\tchunked\r\n\r\n", &chunked_then_smuggled),
        ),
        ("bare LF before CL", with_len("GET /repos/demo/a HTTP/1.1\r\nHost: x\r\nX-Pad: y\nContent-Length: {len}\r\n\r\n", SMUGGLED)),
        ("bare LF everywhere", with_len("GET /repos/demo/a HTTP/1.1\nHost: x\nContent-Length: {len}\n\n", SMUGGLED)),
        ("space before colon", with_len("GET /repos/demo/a HTTP/1.1\r\nHost: x\r\nContent-Length : {len}\r\n\r\n", SMUGGLED)),
        ("CL with a sign", with_len("GET /repos/demo/a HTTP/1.1\r\nHost: x\r\nContent-Length: +{len}\r\n\r\n", SMUGGLED)),
    ]
}

/// What a smuggling attempt may result in: a 400, or exactly one request (the first) reaching
/// the upstream, framed as the broker read it. Never the smuggled one.
fn check_smuggling(h: &Harness, how: &str, name: &str, answer: &str, before: usize) {
    let reached = h.upstream.requests();
    let new: Vec<_> = reached[before..].to_vec();
    assert!(!new.iter().any(|r| r.path.contains("smuggled")), "{how} {name}: a smuggled request reached the upstream: {new:?}");
    let statuses: Vec<&str> = answer.match_indices("HTTP/1.1 ").map(|(i, _)| &answer[i + 9..i + 12]).collect();
    match statuses.as_slice() {
        ["400"] => assert!(new.is_empty(), "{how} {name}: refused, yet forwarded: {new:?}"),
        ["200"] => {
            assert_eq!(new.len(), 1, "{how} {name}: {new:?}");
            assert_eq!(new[0].path, format!("{}/repos/demo/a", if how == "endpoint" { "/v1" } else { "" }));
            // Either the hidden request was read as this request's body and forwarded as body…
            // or the body ended before it, and then the connection must not go on to serve it.
            match new[0].body_len {
                n if n == SMUGGLED.len() => {}
                0 => assert!(answer.contains("connection: close"), "{how} {name}: leftover bytes on a kept-alive connection: {answer}"),
                n => panic!("{how} {name}: forwarded a {n}-byte body"),
            }
        }
        other => panic!("{how} {name}: expected one answer, 400 or 200, got {other:?}: {answer}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn request_smuggling_variants_are_refused_or_reach_the_upstream_as_exactly_one_request() {
    let h = Harness::start(GET_ONLY).await;
    let mut outcomes = Vec::new();
    for (name, attack) in smuggling_variants() {
        let before = h.upstream.requests().len();
        let mut raw = TcpStream::connect(h.endpoint_addr()).await.unwrap();
        let answer = exchange(&mut raw, attack.as_bytes()).await;
        check_smuggling(&h, "endpoint", name, &answer, before);

        let before = h.upstream.requests().len();
        let mut tls = h.tunnel(HOST, b"http/1.1").await;
        let answer = exchange(&mut tls, attack.as_bytes()).await;
        check_smuggling(&h, "proxy", name, &answer, before);
        outcomes.push(format!("{name}: {}", &answer[9..12]));
    }
    // The outcomes seen (hyper 1.x): CL+TE, TE+CL, "chunked " and a tab before chunked are read
    // as chunked and the connection closed; bare LF is a line end, so the hidden request is body;
    // the rest are refused with 400.
    eprintln!("smuggling outcomes: {outcomes:?}");
}

// ---------------------------------------------------------------------------------------------
// Drain
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_websocket_is_kept_through_the_drain_grace_period_then_closed() {
    let mut h = Harness::start(&format!("{GET_ONLY}{UPGRADE_RULE}")).await;
    let mut ws = TcpStream::connect(h.endpoint_addr()).await.unwrap();
    ws.write_all(upgrade_request("/repos/demo/ws", "websocket").as_bytes()).await.unwrap();
    let head = read_head(&mut ws).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");

    let pid = h.broker.pid().to_string();
    let signalled = Instant::now();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert!(h.broker.wait_for_log("draining", Duration::from_secs(5)));
    // Within the grace period (2 s) the tunnel still carries bytes.
    ws.write_all(b"still open").await.unwrap();
    let mut echo = [0u8; 10];
    tokio::time::timeout(Duration::from_secs(5), ws.read_exact(&mut echo)).await.unwrap().unwrap();
    assert_eq!(&echo, b"still open");
    // Then the broker closes it and exits.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), ws.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the tunnel was not closed after the grace period");
    let waited = signalled.elapsed();
    assert!(waited >= Duration::from_millis(1500), "closed after {waited:?}, before the grace period was over");
    let status = h.broker.terminate(Duration::from_secs(10)).expect("the broker exits after the grace period");
    assert!(status.success(), "{status}");
    assert!(h.broker.log().contains("closing an upgraded connection"), "{}", h.broker.log());
}
