//! Containment at the forward proxy, attacked as an agent would: passthrough tunnels into the
//! broker's own listeners, loopback, link-local and cloud metadata addresses; IMDS through the
//! proxy; requests that are not proxy requests; floods of refusals; tunnels left idle. Each case
//! asserts the refusal curl (or a raw socket) saw, what reached the destination (nothing), and the
//! audit record, whose request id is the answer's.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::broker::Broker;
use support::clients::{curl, split_status};
use support::pki::TestCa;
use support::upstream::HttpsUpstream;

const AGENT: &str = "agent-7";
const ROUTED: &str = "api.github.test";

/// One broker with the given `passthrough_hosts` and `limits`, its own directory and audit log.
struct Setup {
    dir: tempfile::TempDir,
    broker: Broker,
}

impl Setup {
    fn start(passthrough: &str, limits: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("policy.rego"),
            "package credential_broker\nimport rego.v1\ndefault decision := {\"allow\": false, \"reason\": \"no rule allows this\"}\n",
        )
        .unwrap();
        let yaml = config_yaml(dir.path(), passthrough, limits);
        let broker = Broker::start(dir.path(), &yaml, &[("GITHUB_TOKEN", "ghs_containment_env_token")]);
        Setup { dir, broker }
    }

    fn proxy(&self) -> SocketAddr {
        self.broker.addresses.proxy.unwrap()
    }

    fn admin(&self) -> SocketAddr {
        self.broker.addresses.admin.unwrap()
    }

    fn audit_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// The audit record with `request_id` (refusals are written in the background: wait for it).
    fn audit_record(&self, request_id: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self.audit_records().into_iter().find(|r| r["request_id"] == request_id) {
                return r;
            }
            assert!(Instant::now() < deadline, "no audit record for {request_id}: {:?}", self.audit_records());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The admin listener's own count of the requests it served, by endpoint (from /metrics).
    fn admin_requests_seen(&self) -> String {
        let out = curl(&["--noproxy", "*", &format!("http://{}/metrics", self.admin())]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().filter(|l| l.starts_with("credential_broker_admin_requests")).collect::<Vec<_>>().join("\n")
    }
}

fn config_yaml(dir: &Path, passthrough: &str, limits: &str) -> String {
    format!(
        r#"
mode: dev
identity: {{agent_id: {AGENT}, tenant: acme}}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0"}}
tls: {{ca_cert_path: {dir}/broker-ca.crt}}
passthrough_hosts: {passthrough}
routes:
  - name: github
    hosts: ["{ROUTED}"]
    provider: github-env
    inject: {{header: {{name: Authorization, format: "Bearer {{secret}}", placeholder: credential-broker-placeholder}}}}
providers:
  github-env: {{type: env, variable: GITHUB_TOKEN}}
policy: {{file: {dir}/policy.rego}}
audit: {{path: {dir}/audit.jsonl}}
limits: {{header_read_timeout_ms: 2000, request_timeout_ms: 5000, connect_timeout_ms: 2000{limits}}}
logging: {{format: json}}
"#,
        dir = dir.display(),
    )
}

/// A loopback TCP server that counts the connections it accepts, answers any HTTP request with
/// 200 `loopback-secret`, and otherwise keeps the connection open until the peer closes it.
struct Canary {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    received: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Canary {
    fn start() -> Canary {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, seen) = (accepted.clone(), received.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                count.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let mut head = Vec::new();
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        head.extend_from_slice(&buf[..n]);
                        if head.windows(4).any(|w| w == b"\r\n\r\n") {
                            seen.lock().unwrap().push(String::from_utf8_lossy(&head).into_owned());
                            head.clear();
                            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 15\r\n\r\nloopback-secret");
                        }
                    }
                });
            }
        });
        Canary { addr, accepted, received }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Raw bytes to the proxy; the answer's head and JSON body (the connection is then dropped).
fn exchange(addr: SocketAddr, request: &str) -> (String, serde_json::Value) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&out);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap()));
                    if len.is_some_and(|len| body.len() >= len) {
                        break;
                    }
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (head.to_string(), json)
}

fn connect_request(target: &str) -> String {
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")
}

/// A refusal the agent saw, and its audit record: same request id, the code, the target, the
/// peer, the listener, and the agent that proved itself before being refused.
fn assert_refused_and_audited(s: &Setup, head: &str, body: &serde_json::Value, status: u16, code: &str, target: Option<&str>) -> serde_json::Value {
    assert!(head.starts_with(&format!("HTTP/1.1 {status}")), "{head}\n{body}");
    assert_eq!(body["error"], code, "{body}");
    let request_id = body["request_id"].as_str().unwrap();
    let record = s.audit_record(request_id);
    assert_eq!(record["event"], "deny", "{record}");
    assert_eq!(record["details"]["code"], code, "{record}");
    assert_eq!(record["details"].get("target").and_then(|t| t.as_str()), target, "{record}");
    assert_eq!(record["details"]["peer"], "127.0.0.1", "{record}");
    assert_eq!(record["details"]["listener"], "proxy", "{record}");
    assert_eq!(record["agent_id"], AGENT, "{record}");
    assert_eq!(record["reason"], body["message"], "{record}");
    record
}

#[test]
fn connect_to_loopback_passthrough_hosts_is_refused_and_audited() {
    let s = Setup::start("[localhost, 127.0.0.1]", "");
    let canary = Canary::start();
    let admin_port = s.admin().port();

    // The reproduced escape: the broker API through a passthrough tunnel.
    for host in ["localhost", "127.0.0.1"] {
        let target = format!("{host}:{admin_port}");
        let (head, body) = exchange(s.proxy(), &connect_request(&target));
        assert_refused_and_audited(&s, &head, &body, 403, "passthrough_refused", Some(&target));
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(host), "{message}");
        assert!(message.contains("loopback") || message.contains("the broker's own listeners"), "{message}");
    }
    // curl, asked to tunnel to the admin port, sees the 403 on its CONNECT and sends nothing.
    let out = curl(&["--proxy", &s.broker.proxy_url(), "--proxytunnel", "--write-out", "%{http_connect}", &format!("http://localhost:{admin_port}/healthz")]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "403");
    assert_eq!(s.admin_requests_seen(), "", "the admin API served nothing but this /metrics");

    // Any other loopback port is refused as loopback, and nothing connects to it.
    let target = format!("127.0.0.1:{}", canary.addr.port());
    let (head, body) = exchange(s.proxy(), &connect_request(&target));
    assert_refused_and_audited(&s, &head, &body, 403, "passthrough_refused", Some(&target));
    assert!(body["message"].as_str().unwrap().contains("a loopback address"), "{body}");
    assert!(body["message"].as_str().unwrap().contains("allow_internal_addresses"), "the operator's way out is named: {body}");
    // The same through absolute-form cleartext HTTP (curl without --proxytunnel).
    let out = curl(&["--proxy", &s.broker.proxy_url(), "--write-out", "\n%{http_code}", &format!("http://localhost:{}/secret", canary.addr.port())]);
    let (status, body) = split_status(&out);
    assert_eq!(status, 403, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "passthrough_refused");
    s.audit_record(body["request_id"].as_str().unwrap());
    assert_eq!(canary.accepted(), 0, "nothing reached the loopback server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_opt_in_reaches_a_loopback_server_but_never_the_brokers_own_listeners() {
    let passthrough = "[{host: localhost, allow_internal_addresses: true}, {host: 127.0.0.1, allow_internal_addresses: true}, {host: 0.0.0.0, allow_internal_addresses: true}]";
    let s = Setup::start(passthrough, "");
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let upstream = HttpsUpstream::start(&ca, &["localhost"]).await;
    let canary = Canary::start();

    // Opted in: an HTTPS server on loopback is reached through an opaque tunnel; the client
    // trusts the server's own CA (no interception) and the broker adds nothing.
    let url = format!("https://localhost:{}/public", upstream.addr.port());
    let out = curl(&["--proxy", &s.broker.proxy_url(), "--cacert", ca.cert_path.to_str().unwrap(), "--write-out", "\n%{http_code}", &url]);
    let (status, body) = split_status(&out);
    assert_eq!(status, 200, "{body} {}\n{}", String::from_utf8_lossy(&out.stderr), s.broker.log());
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authorization, None);
    // And cleartext absolute-form to a loopback server: forwarded as origin-form, Host as checked.
    let out = curl(&[
        "--proxy",
        &s.broker.proxy_url(),
        "-H",
        "Host: evil.test",
        "--write-out",
        "\n%{http_code}",
        &format!("http://127.0.0.1:{}/x?y=1", canary.addr.port()),
    ]);
    assert_eq!(split_status(&out), (200, "loopback-secret".to_string()));
    let heads = canary.received.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(heads[0].starts_with("GET /x?y=1 HTTP/1.1\r\n"), "{}", heads[0]);
    assert!(heads[0].to_ascii_lowercase().contains(&format!("host: 127.0.0.1:{}\r\n", canary.addr.port())), "{}", heads[0]);

    // The broker's own listeners stay out of reach, whatever the spelling.
    let (proxy_port, admin_port) = (s.proxy().port(), s.admin().port());
    for target in [format!("localhost:{admin_port}"), format!("127.0.0.1:{admin_port}"), format!("127.0.0.1:{proxy_port}"), format!("0.0.0.0:{admin_port}")] {
        let (head, body) = exchange(s.proxy(), &connect_request(&target));
        assert_refused_and_audited(&s, &head, &body, 403, "passthrough_refused", Some(&target));
        assert!(body["message"].as_str().unwrap().contains("never reachable through a tunnel"), "{body}");
    }
    let out = curl(&["--proxy", &s.broker.proxy_url(), "--write-out", "\n%{http_code}", &format!("http://127.0.0.1:{admin_port}/healthz")]);
    let (status, body) = split_status(&out);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("the broker's own listeners"), "{body}");
    assert_eq!(s.admin_requests_seen(), "", "the admin API served nothing but this /metrics");
}

#[test]
fn metadata_and_link_local_passthrough_destinations_are_refused() {
    // IP-literal patterns stand in for names that resolve there (no /etc/hosts edits here).
    let s = Setup::start("[169.254.170.2, 169.254.7.7]", "");
    for (target, what) in [("169.254.170.2:80", "a cloud metadata address"), ("169.254.7.7:443", "a link-local address")] {
        let (head, body) = exchange(s.proxy(), &connect_request(target));
        assert_refused_and_audited(&s, &head, &body, 403, "passthrough_refused", Some(target));
        assert!(body["message"].as_str().unwrap().contains(what), "{body}");
    }
    let out = curl(&["--proxy", &s.broker.proxy_url(), "--write-out", "\n%{http_code}", "http://169.254.170.2/v2/credentials/abc"]);
    let (status, body) = split_status(&out);
    assert_eq!(status, 403, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "passthrough_refused");
    assert_eq!(s.audit_record(body["request_id"].as_str().unwrap())["details"]["target"], "169.254.170.2:80");
}

#[test]
fn imds_through_the_proxy_is_unrouted_and_audited() {
    let s = Setup::start("[]", "");
    let out = curl(&["--proxy", &s.broker.proxy_url(), "--write-out", "\n%{http_code}", "http://169.254.169.254/latest/meta-data/iam/security-credentials/"]);
    let (status, body) = split_status(&out);
    assert_eq!(status, 403, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "unrouted_host");
    let record = s.audit_record(body["request_id"].as_str().unwrap());
    assert_eq!(record["details"]["code"], "unrouted_host");
    assert_eq!(record["details"]["target"], "169.254.169.254:80");
    assert_eq!(record["details"]["peer"], "127.0.0.1");

    let (head, body) = exchange(s.proxy(), &connect_request("169.254.169.254:80"));
    assert_refused_and_audited(&s, &head, &body, 403, "unrouted_host", Some("169.254.169.254:80"));
    // Refused on the name alone: the broker never dialled it.
    assert!(!s.broker.log().contains("tunnelling passthrough"), "{}", s.broker.log());
}

#[test]
fn requests_that_are_not_proxy_requests_and_bad_targets_are_refused_and_audited() {
    let s = Setup::start("[]", "");
    let (head, body) = exchange(s.proxy(), "GET /latest/meta-data/ HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n");
    // The record has no target to name: the field is absent, not invented.
    assert_refused_and_audited(&s, &head, &body, 400, "not_a_proxy_request", None);

    // A CONNECT target without a port, with a password in its userinfo: refused, and the
    // password is in neither the answer nor the audit log.
    let (head, body) = exchange(s.proxy(), "CONNECT agent:hunter2-secret@internal.test HTTP/1.1\r\nHost: internal.test\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 400"), "{head} {body}");
    assert_eq!(body["error"], "bad_connect_target");
    let record = s.audit_record(body["request_id"].as_str().unwrap());
    assert_eq!(record["details"]["code"], "bad_connect_target");
    let everything = format!("{body}{}{}", std::fs::read_to_string(s.dir.path().join("audit.jsonl")).unwrap(), s.broker.log());
    assert!(!everything.contains("hunter2"), "{everything}");

    // Cleartext to a routed host: the credential would travel in the clear, so refused.
    let out = curl(&["--proxy", &s.broker.proxy_url(), "--write-out", "\n%{http_code}", &format!("http://{ROUTED}/repos")]);
    let (status, body) = split_status(&out);
    assert_eq!(status, 403, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "plaintext_refused");
    assert_eq!(s.audit_record(body["request_id"].as_str().unwrap())["details"]["target"], format!("{ROUTED}:80"));
}

#[test]
fn a_flood_of_unrouted_connects_is_audited_as_a_burst_and_one_aggregate() {
    // Its own broker, so the refusal window opens with the flood.
    let s = Setup::start("[]", "");
    let started = Instant::now();
    for i in 0..200 {
        let (head, body) = exchange(s.proxy(), &connect_request(&format!("flood-{i}.evil.test:443")));
        assert!(head.starts_with("HTTP/1.1 403") && body["error"] == "unrouted_host", "{head} {body}");
    }
    // The refusal window is 10 s (audit::refusals::WINDOW): the aggregate is written when the
    // window is closed, by the next refusal of its kind or the periodic flush. Wait for it.
    let deadline = started + Duration::from_secs(30);
    let aggregate = loop {
        let records = s.audit_records();
        if let Some(a) = records.iter().find(|r| r["details"]["aggregate"] == "true") {
            break a.clone();
        }
        assert!(Instant::now() < deadline, "no aggregate record within 30 s: {} records", records.len());
        std::thread::sleep(Duration::from_millis(200));
    };
    let singles: Vec<_> = s.audit_records().into_iter().filter(|r| r["details"]["code"] == "unrouted_host" && r["details"]["aggregate"].is_null()).collect();
    assert_eq!(singles.len(), 20, "the burst is written one by one");
    assert_eq!(aggregate["details"]["code"], "unrouted_host");
    assert_eq!(aggregate["details"]["listener"], "proxy");
    assert_eq!(aggregate["details"]["suppressed"], "180", "{aggregate}");
    assert_eq!(aggregate["details"]["peers"], "127.0.0.1", "{aggregate}");
    assert!(s.broker.log().matches("\"refused\"").count() <= 22, "refusals are logged rate-limited too");
}

#[test]
fn an_idle_passthrough_tunnel_is_closed_at_both_ends() {
    let s = Setup::start("[{host: 127.0.0.1, allow_internal_addresses: true}]", ", idle_timeout_ms: 1000");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let target = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());

    let mut agent = TcpStream::connect(s.proxy()).unwrap();
    agent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    agent.write_all(connect_request(&target).as_bytes()).unwrap();
    let mut buf = [0u8; 1024];
    let n = agent.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let (mut upstream, _) = silent.accept().unwrap();
    upstream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();

    // The tunnel carries bytes, then nobody says anything.
    agent.write_all(b"hello").unwrap();
    let mut got = [0u8; 5];
    upstream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hello");
    let quiet_since = Instant::now();
    assert_eq!(agent.read(&mut buf).unwrap(), 0, "the agent's side is closed");
    assert_eq!(upstream.read(&mut buf).unwrap(), 0, "the upstream's side is closed");
    let waited = quiet_since.elapsed();
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_secs(5), "closed after {waited:?}");
}

#[test]
fn a_passthrough_destination_that_never_accepts_times_out_at_the_connect_timeout() {
    let s = Setup::start("[{host: 127.0.0.1, allow_internal_addresses: true}]", "");
    // A listener that never accepts, its queue filled: further SYNs are dropped, so a connect
    // hangs instead of failing.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    socket.listen(0).unwrap();
    let stuck = socket.local_addr().unwrap().as_socket().unwrap();
    let _fillers: Vec<_> = (0..4).filter_map(|_| TcpStream::connect_timeout(&stuck, Duration::from_millis(200)).ok()).collect();

    let started = Instant::now();
    let (head, body) = exchange(s.proxy(), &connect_request(&stuck.to_string()));
    let waited = started.elapsed();
    assert!(head.starts_with("HTTP/1.1 504"), "{head} {body}");
    assert_eq!(body["error"], "upstream_timeout");
    // limits.connect_timeout_ms is 2000 in these tests.
    assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_secs(6), "answered after {waited:?}");
}
