//! Governance end to end: the broker API (grants, revoke), metrics, the alert webhook and audit
//! rotation, against the real broker binary, a real HTTPS upstream, a real OAuth2 token endpoint
//! and an Alertmanager-shaped receiver, with curl and the broker's own CLI as clients.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::alert_receiver::AlertReceiver;
use support::broker::{cli, Broker};
use support::clients::{curl, curl_via_proxy, run_python, split_status};
use support::pki::TestCa;
use support::token_endpoint::{Mode, TokenEndpoint, CLIENT_SECRET};
use support::upstream::HttpsUpstream;

const HOST: &str = "api.github.test";
const PLACEHOLDER: &str = "credential-broker-placeholder";
const ADMIN_TOKEN: &str = "admin-token-4d1c9e7f2b8a6035";

const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "agents may read repositories"} if {
    input.scope.action == "http:GET"
    startswith(input.scope.resource, "https://api.github.test/repos/")
}
"#;

#[derive(Default)]
struct Options {
    admin_token: bool,
    webhook: Option<String>,
    audit_max_bytes: Option<u64>,
    audit_stdout: bool,
}

struct Setup {
    dir: tempfile::TempDir,
    _ca: TestCa,
    _upstream: HttpsUpstream,
    idp: TokenEndpoint,
    broker: Broker,
    /// Every answer a client saw, for the secret scan.
    seen: std::cell::RefCell<Vec<String>>,
}

impl Setup {
    async fn start(opts: Options) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path());
        let upstream = HttpsUpstream::start(&ca, &[HOST, "localhost"]).await;
        let idp = TokenEndpoint::start(&ca).await;
        std::fs::write(dir.path().join("client-secret"), CLIENT_SECRET).unwrap();
        std::fs::write(dir.path().join("admin-token"), format!("{ADMIN_TOKEN}\n")).unwrap();
        std::fs::write(dir.path().join("wrong-token"), "not-the-admin-token-at-all").unwrap();
        for f in ["client-secret", "admin-token"] {
            std::fs::set_permissions(dir.path().join(f), std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        }
        std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
        std::fs::create_dir(dir.path().join("audit")).unwrap();
        let d = dir.path().display();
        let admin = if opts.admin_token { format!("admin: {{token_file: {d}/admin-token}}") } else { String::new() };
        let alerts = opts.webhook.as_ref().map(|u| format!("alerts: {{webhook_url: \"{u}\", max_attempts: 3}}")).unwrap_or_default();
        let max = opts.audit_max_bytes.map(|n| format!(", max_file_bytes: {n}")).unwrap_or_default();
        let yaml = format!(
            r#"
identity: {{agent_id: agent-7, tenant: acme}}
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
credentials: {{retry: {{max_retries: 1, base_delay_ms: 10, max_delay_ms: 20}}}}
audit: {{path: {d}/audit/audit.jsonl, stdout: {stdout}{max}}}
{admin}
{alerts}
logging: {{format: json}}
"#,
            upstream_ca = ca.cert_path.display(),
            upstream = upstream.addr,
            token_url = idp.url(),
            stdout = opts.audit_stdout,
        );
        let broker = Broker::start(dir.path(), &yaml, &[]);
        Setup { dir, _ca: ca, _upstream: upstream, idp, broker, seen: Default::default() }
    }

    /// A request through the forward proxy, as an agent makes it.
    fn agent_get(&self, path: &str) -> (u16, String) {
        let auth = format!("Authorization: Bearer {PLACEHOLDER}");
        let (status, body) = curl_via_proxy(&self.broker.proxy_url(), self.broker.ca_cert(), &["-H", &auth], &format!("https://{HOST}{path}"));
        self.seen.borrow_mut().push(body.clone());
        (status, body)
    }

    /// A request to the admin listener with curl; `token` None sends no Authorization.
    fn admin(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, serde_json::Value) {
        let (status, text) = self.raw(&self.broker.admin_url(), method, path, token, body);
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("admin answer is not JSON ({e}): {text}")))
    }

    fn raw(&self, base: &str, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
        let auth = token.map(|t| format!("Authorization: Bearer {t}"));
        let url = format!("{base}{path}");
        let mut args = vec!["--noproxy", "*", "-X", method, "--write-out", "\n%{http_code}"];
        if let Some(a) = &auth {
            args.extend(["-H", a.as_str()]);
        }
        if let Some(b) = body {
            args.extend(["-H", "Content-Type: application/json", "--data", b]);
        }
        args.push(&url);
        let (status, text) = split_status(&curl(&args));
        self.seen.borrow_mut().push(text.clone());
        (status, text)
    }

    /// The broker's own CLI against its admin listener.
    fn grants_cli(&self, args: &[&str], token_file: &str) -> std::process::Output {
        let token = self.dir.path().join(token_file);
        let admin_url = self.broker.admin_url();
        let mut all = vec!["grants"];
        all.extend_from_slice(args);
        all.extend(["--admin-url", &admin_url, "--token-file", token.to_str().unwrap()]);
        let out = cli(&all);
        self.seen.borrow_mut().push(String::from_utf8_lossy(&out.stdout).into_owned());
        self.seen.borrow_mut().push(String::from_utf8_lossy(&out.stderr).into_owned());
        out
    }

    fn audit_dir(&self) -> PathBuf {
        self.dir.path().join("audit")
    }

    fn audit_records(&self) -> Vec<serde_json::Value> {
        audit_files(&self.audit_dir())
            .iter()
            .flat_map(|f| std::fs::read_to_string(f).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<serde_json::Value>>())
            .collect()
    }

    fn assert_no_secret(&self) {
        let mut all = self.broker.log();
        for f in audit_files(&self.audit_dir()) {
            all.push_str(&std::fs::read_to_string(f).unwrap_or_default());
        }
        all.push_str(&self.seen.borrow().join("\n"));
        let issued = self.idp.issued();
        assert!(!issued.is_empty());
        for token in issued {
            assert!(!all.contains(&token), "minted token {token} leaked into broker output or an API answer");
        }
        assert!(!all.contains(CLIENT_SECRET), "the oauth2 client secret leaked");
        assert!(!all.contains(ADMIN_TOKEN), "the admin token leaked");
    }
}

/// The audit files in chain order: `audit.jsonl.000001`, …, then `audit.jsonl`.
fn audit_files(dir: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<PathBuf> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e != "jsonl")).collect();
    rotated.sort();
    let current = dir.join("audit.jsonl");
    if current.exists() {
        rotated.push(current);
    }
    rotated
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "CLI failed: {}\n{}", String::from_utf8_lossy(&out.stderr), String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Parse `/metrics` with the reference parser (Python `prometheus_client`, OpenMetrics) and
/// return `{"name{labels}": value}` for every sample.
fn parse_metrics(text: &str) -> std::collections::BTreeMap<String, f64> {
    let code = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    let out = run_python(&format!("import sys\nsys.stdin = open({:?})\n{}", file.path().display().to_string(), code.trim_start()), &[]);
    assert!(out.status.success(), "the metrics do not parse as OpenMetrics: {}\n{text}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grants_are_listed_and_revoked_and_the_next_request_mints_afresh() {
    let s = Setup::start(Options { admin_token: true, ..Default::default() }).await;
    let (status, body) = s.agent_get("/repos/acme/widgets");
    assert_eq!(status, 200, "{body}\n{}", s.broker.log());
    assert_eq!(s.idp.calls(), 1);

    // grants list, through the CLI (JSON and table) and the API.
    let listed: serde_json::Value = serde_json::from_str(&stdout(&s.grants_cli(&["list", "--json"], "admin-token"))).unwrap();
    let grants = listed["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "{listed}");
    let g = &grants[0];
    let id = g["id"].as_str().unwrap().to_string();
    assert_eq!((g["agent_id"].as_str(), g["tenant"].as_str(), g["provider"].as_str()), (Some("agent-7"), Some("acme"), Some("idp")));
    assert_eq!(g["credential_scope"], "repo.read");
    assert_eq!(g["scope"]["permissions"][0]["action"], "http:GET");
    assert!(g["expires_in_seconds"].as_u64().unwrap() > 0);
    let table = stdout(&s.grants_cli(&["list"], "admin-token"));
    assert!(table.contains(&id) && table.contains("agent-7"), "{table}");

    // Without the token: 401; with a wrong one: 403; the grant survives both.
    let path = format!("/v1/grants/{id}/revoke");
    let (status, unauthenticated) = s.admin("POST", &path, None, None);
    assert_eq!((status, unauthenticated["error"].as_str()), (401, Some("unauthenticated")), "{unauthenticated}");
    assert!(unauthenticated["request_id"].is_string());
    let (status, forbidden) = s.admin("POST", &path, Some("not-the-admin-token-at-all"), None);
    assert_eq!((status, forbidden["error"].as_str()), (403, Some("forbidden")), "{forbidden}");
    let wrong = s.grants_cli(&["revoke", &id], "wrong-token");
    assert!(!wrong.status.success() && String::from_utf8_lossy(&wrong.stderr).contains("403"));
    // Each refusal is a deny record with the answer's request id, the endpoint and the peer; the
    // presented token is in neither the audit nor the log.
    let refusal = |answer: &serde_json::Value, code: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let found = s.audit_records().into_iter().find(|r| r["request_id"] == answer["request_id"]);
            match found {
                Some(r) => return r,
                None if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(25)),
                None => panic!("no audit record for the {code} answer {answer}"),
            }
        }
    };
    for (answer, code) in [(&unauthenticated, "admin_unauthorized"), (&forbidden, "admin_forbidden")] {
        let r = refusal(answer, code);
        assert_eq!((r["event"].as_str(), r["decision"].as_str(), r["details"]["code"].as_str()), (Some("deny"), Some("deny"), Some(code)), "{r}");
        assert_eq!((r["details"]["listener"].as_str(), r["details"]["target"].as_str()), (Some("admin"), Some(path.as_str())), "{r}");
        assert_eq!((r["route"].as_str(), r["details"]["peer"].as_str()), (Some("/v1/grants/{id}/revoke"), Some("127.0.0.1")), "{r}");
    }
    let audit: String = audit_files(&s.audit_dir()).iter().map(|f| std::fs::read_to_string(f).unwrap()).collect();
    assert!(!audit.contains("not-the-admin-token-at-all") && !s.broker.log().contains("not-the-admin-token-at-all"), "the wrong token was written");
    assert_eq!(s.admin("GET", "/v1/grants", Some(ADMIN_TOKEN), None).1["grants"].as_array().unwrap().len(), 1);

    // The agent-facing ports do not serve the admin API, token or not.
    let (status, body) = s.raw(&s.broker.proxy_url(), "GET", "/v1/grants", Some(ADMIN_TOKEN), None);
    assert!(status >= 400 && !body.contains(&id), "{status} {body}");
    let (status, body) = s.raw(&s.broker.endpoint_url("github"), "POST", &path, Some(ADMIN_TOKEN), None);
    assert!(status >= 400 && !body.contains("revoked"), "{status} {body}");
    assert_eq!(s.admin("GET", "/v1/grants", Some(ADMIN_TOKEN), None).1["grants"].as_array().unwrap().len(), 1);

    // Revoke by id: gone from the list, audited, and the next request mints a new token.
    let revoked: serde_json::Value = serde_json::from_str(&stdout(&s.grants_cli(&["revoke", &id], "admin-token"))).unwrap();
    assert_eq!(revoked["count"], 1, "{revoked}");
    assert_eq!(revoked["revoked"][0]["id"], id.as_str());
    assert_eq!(s.admin("GET", "/v1/grants", Some(ADMIN_TOKEN), None).1["grants"].as_array().unwrap().len(), 0);
    let records = s.audit_records();
    let rec = records.iter().find(|r| r["event"] == "revoke").expect("a revoke audit record");
    assert_eq!((rec["lease_id"].as_str(), rec["agent_id"].as_str(), rec["provider"].as_str()), (Some(id.as_str()), Some("agent-7"), Some("idp")));
    let (status, _) = s.agent_get("/repos/acme/widgets");
    assert_eq!(status, 200);
    assert_eq!(s.idp.calls(), 2, "the request after a revoke must mint a new credential");
    let (status, err) = s.admin("POST", &path, Some(ADMIN_TOKEN), None);
    assert_eq!((status, err["error"].as_str()), (404, Some("unknown_grant")));

    // The emergency button: an empty filter is refused, a tenant filter cuts everything of that tenant.
    let (status, err) = s.admin("POST", "/v1/grants/revoke", Some(ADMIN_TOKEN), Some("{}"));
    assert_eq!((status, err["error"].as_str()), (400, Some("bad_request")), "{err}");
    let (status, none) = s.admin("POST", "/v1/grants/revoke", Some(ADMIN_TOKEN), Some(r#"{"tenant": "other"}"#));
    assert_eq!((status, none["count"].as_u64()), (200, Some(0)));
    let bulk: serde_json::Value = serde_json::from_str(&stdout(&s.grants_cli(&["revoke", "--tenant", "acme", "--provider", "idp"], "admin-token"))).unwrap();
    assert_eq!(bulk["count"], 1, "{bulk}");
    let (status, _) = s.agent_get("/repos/acme/gears");
    assert_eq!(status, 200);
    assert_eq!(s.idp.calls(), 3);
    let (status, all) = s.admin("POST", "/v1/grants/revoke", Some(ADMIN_TOKEN), Some(r#"{"all": true}"#));
    assert_eq!((status, all["count"].as_u64()), (200, Some(1)));

    // Policy reload and rotate answer too (the oauth2 provider has nothing to rotate: a clear 422).
    let (status, reload) = s.admin("POST", "/v1/policy/reload", Some(ADMIN_TOKEN), None);
    assert_eq!((status, reload["reloaded"].as_bool()), (200, Some(false)), "{reload}");
    let (status, err) = s.admin("POST", "/v1/secrets/client-secret/rotate", Some(ADMIN_TOKEN), Some(r#"{"provider": "idp"}"#));
    assert_eq!((status, err["error"].as_str()), (422, Some("provider_refused")), "{err}");

    // Metrics moved: parsed by the reference OpenMetrics parser.
    let (status, text) = s.raw(&s.broker.admin_url(), "GET", "/metrics", None, None);
    assert_eq!(status, 200);
    let m = parse_metrics(&text);
    let get = |k: &str| *m.get(k).unwrap_or_else(|| panic!("no sample {k} in\n{text}"));
    assert_eq!(get(r#"credential_broker_requests_total{outcome="forwarded",route="github"}"#), 3.0);
    assert_eq!(get(r#"credential_broker_cache_lookups_total{result="miss"}"#), 3.0);
    assert_eq!(get(r#"credential_broker_policy_decisions_total{decision="allow"}"#), 3.0);
    assert_eq!(get(r#"credential_broker_mint_duration_seconds_count{provider="idp"}"#), 3.0);
    assert_eq!(get(r#"credential_broker_revocations_total{}"#), 3.0);
    assert_eq!(get(r#"credential_broker_active_leases{}"#), 0.0);
    assert!(get(r#"credential_broker_audit_write_duration_seconds_count{}"#) >= 6.0);
    assert!(get(r#"credential_broker_admin_requests_total{endpoint="/v1/grants/{id}/revoke",status="401"}"#) >= 1.0);
    let (_, cached) = s.agent_get("/repos/acme/gears");
    let (_, _) = s.agent_get("/repos/acme/gears");
    assert!(cached.contains("\"ok\":true"));
    let (_, text) = s.raw(&s.broker.admin_url(), "GET", "/metrics", None, None);
    let m = parse_metrics(&text);
    assert_eq!(m[r#"credential_broker_cache_lookups_total{result="hit"}"#], 1.0, "{text}");
    assert_eq!(m[r#"credential_broker_active_leases{}"#], 1.0);

    assert!(s.broker.wait_for_log("grant revoked", Duration::from_secs(1)));
    s.assert_no_secret();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn minting_failure_fires_one_alert_and_recovery_resolves_it() {
    let receiver = AlertReceiver::start().await;
    let s = Setup::start(Options { webhook: Some(receiver.url()), ..Default::default() }).await;

    // No admin token configured: the broker API is off, probes and metrics stay up.
    let (status, err) = s.admin("GET", "/v1/grants", Some(ADMIN_TOKEN), None);
    assert_eq!((status, err["error"].as_str()), (403, Some("admin_api_disabled")), "{err}");
    assert_eq!(s.admin("GET", "/healthz", None, None).0, 200);
    assert_eq!(s.raw(&s.broker.admin_url(), "GET", "/metrics", None, None).0, 200);

    s.idp.set_mode(Mode::ServerError);
    for _ in 0..3 {
        let (status, body) = s.agent_get("/repos/acme/widgets");
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("credential_minting_failed"), "{body}");
    }
    let alerts = receiver.wait_for(1, Duration::from_secs(10));
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let firing = &alerts[0];
    assert_eq!(firing["labels"]["alertname"], "Credential Minting Failure");
    assert_eq!(firing["labels"]["provider"], "idp");
    assert_eq!(firing["labels"]["severity"], "critical");
    assert!(firing["startsAt"].is_string() && firing.get("endsAt").is_none(), "{firing}");
    assert!(firing["annotations"]["description"].as_str().unwrap().contains("idp"));

    s.idp.set_mode(Mode::Ok);
    let (status, _) = s.agent_get("/repos/acme/widgets");
    assert_eq!(status, 200);
    let alerts = receiver.wait_for(2, Duration::from_secs(10));
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let resolved = &alerts[1];
    assert_eq!(resolved["labels"], firing["labels"], "a resolved alert must carry the firing one's labels");
    assert_eq!(resolved["startsAt"], firing["startsAt"]);
    assert!(resolved["endsAt"].is_string(), "{resolved}");

    // Nothing more arrives: one firing, one resolved.
    let (status, _) = s.agent_get("/repos/acme/gears");
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.alerts().len(), 2);
    let (_, text) = s.raw(&s.broker.admin_url(), "GET", "/metrics", None, None);
    let m = parse_metrics(&text);
    assert_eq!(m[r#"credential_broker_minting_failures_total{provider="idp"}"#], 3.0, "{text}");
    assert_eq!(m[r#"credential_broker_mint_retries_total{provider="idp"}"#], 3.0, "{text}");
    assert_eq!(m[r#"credential_broker_alert_webhook_deliveries_total{result="sent"}"#], 2.0, "{text}");
    s.assert_no_secret();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_alert_receiver_does_not_slow_the_request_path() {
    // A port that accepts nothing: bind, note the address, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let s = Setup::start(Options { webhook: Some(format!("http://{dead}")), ..Default::default() }).await;
    s.idp.set_mode(Mode::ServerError);
    let started = std::time::Instant::now();
    for _ in 0..3 {
        assert_eq!(s.agent_get("/repos/acme/widgets").0, 503);
    }
    // Three failing requests with one quick retry each: far under a second unless alerts block.
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(s.broker.wait_for_log("alert webhook delivery failed", Duration::from_secs(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotated_audit_files_verify_as_one_chain_and_a_removed_directory_fails_closed() {
    let s = Setup::start(Options { admin_token: true, audit_max_bytes: Some(4096), audit_stdout: true, ..Default::default() }).await;
    for i in 0..24 {
        let (status, body) = s.agent_get(&format!("/repos/acme/repo-{i}"));
        assert_eq!(status, 200, "{body}");
    }
    let files = audit_files(&s.audit_dir());
    assert!(files.len() >= 3, "expected at least 3 audit files, got {files:?}");
    let args =
        |fs: &[PathBuf]| -> Vec<String> { ["audit", "verify"].iter().map(|a| a.to_string()).chain(fs.iter().map(|f| f.display().to_string())).collect() };
    let run = |fs: &[PathBuf]| {
        let a = args(fs);
        cli(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let ok = run(&files);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains(&format!("{} record(s)", s.audit_records().len())));
    // Each new file starts with the previous file's last hash.
    let last_hash = |f: &PathBuf| -> String {
        let text = std::fs::read_to_string(f).unwrap();
        serde_json::from_str::<serde_json::Value>(text.lines().last().unwrap()).unwrap()["hash"].as_str().unwrap().to_string()
    };
    let first_prev = |f: &PathBuf| -> String {
        let text = std::fs::read_to_string(f).unwrap();
        serde_json::from_str::<serde_json::Value>(text.lines().next().unwrap()).unwrap()["prev_hash"].as_str().unwrap().to_string()
    };
    assert_eq!(first_prev(&files[1]), last_hash(&files[0]));

    // A middle file missing, files out of order, or one truncated: rejected.
    let mut missing = files.clone();
    missing.remove(1);
    let out = run(&missing);
    assert!(!out.status.success(), "verify accepted a set with a file missing");
    assert!(String::from_utf8_lossy(&out.stderr).contains(&files[2].display().to_string()), "{}", String::from_utf8_lossy(&out.stderr));
    let mut swapped = files.clone();
    swapped.swap(0, 1);
    assert!(!run(&swapped).status.success(), "verify accepted files out of order");
    let truncated = s.dir.path().join("truncated");
    std::fs::create_dir(&truncated).unwrap();
    let mut copies: Vec<PathBuf> = files.iter().map(|f| truncated.join(f.file_name().unwrap())).collect();
    for (f, c) in files.iter().zip(&copies) {
        std::fs::copy(f, c).unwrap();
    }
    let text = std::fs::read_to_string(&copies[0]).unwrap();
    let cut: Vec<&str> = text.lines().collect();
    std::fs::write(&copies[0], cut[..cut.len() - 1].iter().map(|l| format!("{l}\n")).collect::<String>()).unwrap();
    assert!(!run(&copies).status.success(), "verify accepted a file cut short");
    copies.clear();

    // The stdout copy: the records are in the broker's output too.
    let log = s.broker.log();
    assert!(log.lines().filter(|l| l.starts_with("{\"seq\":")).count() >= s.audit_records().len(), "records not copied to stdout");

    // The audit directory vanishes: no credential is issued while nothing can be recorded.
    s.admin("POST", "/v1/grants/revoke", Some(ADMIN_TOKEN), Some(r#"{"all": true}"#));
    std::fs::remove_dir_all(s.audit_dir()).unwrap();
    let calls = s.idp.calls();
    let (status, body) = s.agent_get("/repos/acme/after-removal");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("audit_unavailable") || body.contains("audit log"), "{body}");
    assert!(s.idp.calls() <= calls + 1);
    let (status, body) = s.agent_get("/repos/acme/after-removal");
    assert_eq!(status, 503, "{body}");
    // The directory comes back: the broker writes again, continuing the chain.
    std::fs::create_dir(s.audit_dir()).unwrap();
    let (status, body) = s.agent_get("/repos/acme/after-return");
    assert_eq!(status, 200, "{body}");
    let back = std::fs::read_to_string(s.audit_dir().join("audit.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(back.lines().next().unwrap()).unwrap();
    assert_ne!(first["seq"], 1, "the chain restarted instead of continuing");
}
