//! Per-connection agent identity on the Postgres listener: one broker serves several agents'
//! database sessions, each with its own minted user, policy decisions, audit identity and grant.
//! jwt mode: the real `psql` passes the agent's JWT as `PGPASSWORD` (verified against a JWKS
//! file like a `Proxy-Authorization` token); mtls mode: `psql` with `sslcert`/`sslkey`, the agent
//! named by the certificate's SPIFFE ID. Refusals are FATAL 28000, audited, and mint nothing.

mod support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::SanType;
use support::broker::Broker;
use support::clients::{text, wait_output};
use support::jwt::{TestIssuer, AUDIENCE, ISSUER};
use support::pki::TestCa;
use support::postgres::{psql_command, Postgres, DATABASE, SUPERUSER};

/// Statements that touch no table are anyone's; only agent-a reads orders.
const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "agents may open sessions on shop"} if {
    input.scope.action == "postgres:CONNECT"
}

decision := {"allow": true, "reason": "statements without tables"} if {
    input.scope.action == "postgres:SELECT"
    input.scope.resource == "postgres://127.0.0.1/shop"
}

decision := {"allow": true, "reason": "agent-a reads orders"} if {
    endswith(input.agent.id, "agent-a")
    input.scope.action == "postgres:SELECT"
    input.scope.resource == "postgres://127.0.0.1/shop/public.orders"
}

decision := {"allow": false, "reason": sprintf("%s of %s may not read orders", [input.agent.id, input.agent.tenant])} if {
    not endswith(input.agent.id, "agent-a")
    input.scope.action == "postgres:SELECT"
    input.scope.resource == "postgres://127.0.0.1/shop/public.orders"
}
"#;

const ADMIN_TOKEN: &str = "admin-token-5d1f0a7c93e2b846";

struct Setup {
    dir: tempfile::TempDir,
    pg: Postgres,
    broker: Broker,
    issuer: TestIssuer,
    ca: TestCa,
}

impl Setup {
    /// `identity` is the whole `identity:` block, given the directory and the test CA.
    fn start(identity: impl FnOnce(&Path, &TestCa) -> String) -> Setup {
        let pg = Postgres::start();
        pg.admin_sql("CREATE TABLE orders (id int primary key, item text); INSERT INTO orders VALUES (1, 'book'), (2, 'lamp')");
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path());
        let issuer = TestIssuer::new("cluster");
        let d = dir.path();
        std::fs::write(d.join("jwks.json"), issuer.jwks().to_string()).unwrap();
        std::fs::write(d.join("admin-password"), &pg.password).unwrap();
        std::fs::write(d.join("policy.rego"), POLICY).unwrap();
        std::fs::write(d.join("admin-token"), ADMIN_TOKEN).unwrap();
        let yaml = format!(
            r#"
{identity}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0"}}
tls: {{ca_cert_path: {dir}/broker-ca.crt}}
routes: []
providers:
  pg:
    type: postgres_native
    host: 127.0.0.1
    port: {port}
    database: {DATABASE}
    admin_user: {SUPERUSER}
    admin_password_file: {dir}/admin-password
    sslmode: disable
    grants: ["SELECT ON ALL TABLES IN SCHEMA public"]
    ttl_seconds: 600
databases:
  - name: shop
    listen: "127.0.0.1:0"
    upstream: "127.0.0.1:{port}"
    database: {DATABASE}
    provider: pg
    sslmode: disable
policy: {{file: {dir}/policy.rego}}
audit: {{path: {dir}/audit.jsonl}}
admin: {{token_file: {dir}/admin-token}}
logging: {{format: json}}
"#,
            identity = identity(d, &ca),
            dir = d.display(),
            port = pg.port(),
        );
        let broker = Broker::start(d, &yaml, &[]);
        Setup { dir, pg, broker, issuer, ca }
    }

    fn jwt() -> Setup {
        Setup::start(|d, _| {
            format!(
                "identity:\n  mode: jwt\n  tenant: fallback\n  jwt: {{jwks_file: {}/jwks.json, issuer: \"{ISSUER}\", audience: {AUDIENCE}, tenant_claim: tenant}}",
                d.display()
            )
        })
    }

    fn token(&self, sub: &str, tenant: &str) -> String {
        let mut claims = TestIssuer::claims(sub);
        claims["tenant"] = tenant.into();
        self.issuer.sign("ES256", &claims)
    }

    fn port(&self) -> u16 {
        self.broker.addresses.databases["shop"].port()
    }

    /// `psql -f script` through the broker's listener, with `env` (e.g. `PGPASSWORD`).
    fn psql(&self, env: &[(&str, &str)], script: &str) -> Output {
        let file = self.dir.path().join(format!("script-{}.sql", uuid::Uuid::new_v4().simple()));
        std::fs::write(&file, script).unwrap();
        let mut cmd = psql_command();
        cmd.args(["-v", "ON_ERROR_STOP=0", "-h", "127.0.0.1", "-p", &self.port().to_string(), "-U", "agent", "-d", DATABASE, "-f"]).arg(&file);
        cmd.envs(env.iter().copied());
        cmd.output().expect("running psql")
    }

    /// `psql -c sql` in the background.
    fn spawn_psql(&self, env: &[(&str, &str)], sql: &str) -> Child {
        let mut cmd = psql_command();
        cmd.args(["-h", "127.0.0.1", "-p", &self.port().to_string(), "-U", "agent", "-d", DATABASE, "-c", sql]);
        cmd.envs(env.iter().copied());
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
    }

    fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let url = format!("{}{path}", self.broker.admin_url());
        let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
        let mut args = vec!["--noproxy", "*", "-X", method, "--write-out", "\n%{http_code}", "-H", auth.as_str()];
        if let Some(b) = body {
            args.extend(["-H", "Content-Type: application/json", "--data", b]);
        }
        args.push(&url);
        let (status, text) = support::clients::split_status(&support::clients::curl(&args));
        (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
    }

    fn audit_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Identity refusals are queued without waiting for their fsync: wait for `n` of them.
    fn identity_refusals(&self, n: usize) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let refusals: Vec<_> = self.audit_records().into_iter().filter(|r| r["event"] == "deny" && r["agent_id"] == "unidentified").collect();
            if refusals.len() >= n || Instant::now() > deadline {
                return refusals;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The minted users once they are gone, or what is left after 10 s.
    fn minted_roles_after_revoke(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let roles = self.minted_roles();
            if roles.is_empty() || Instant::now() > deadline {
                return roles;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn minted_roles(&self) -> String {
        self.pg.admin_sql("SELECT coalesce(string_agg(rolname, ','), '') FROM pg_roles WHERE rolname LIKE 'cb\\_%'")
    }

    /// The server's sessions running `sql`.
    fn wait_active(&self, sql: &str, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.pg.admin_sql(&format!("SELECT count(*) FROM pg_stat_activity WHERE query = '{sql}' AND state = 'active'")) != n.to_string() {
            assert!(Instant::now() < deadline, "{sql} never ran {n} times:\n{}", self.broker.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A raw client: startup, answer the password request with `password`, and return the
/// `FATAL`'s (SQLSTATE, message), which psql does not show for connection errors.
fn login_error(port: u16, password: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let params = format!("user\0agent\0database\0{DATABASE}\0\0");
    let mut startup = ((params.len() + 8) as i32).to_be_bytes().to_vec();
    startup.extend_from_slice(&196_608i32.to_be_bytes());
    startup.extend_from_slice(params.as_bytes());
    s.write_all(&startup).unwrap();
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).unwrap();
        let mut body = vec![0u8; i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize - 4];
        s.read_exact(&mut body).unwrap();
        match head[0] {
            b'R' => {
                assert_eq!(body, 3i32.to_be_bytes(), "the listener asks for a cleartext password");
                let mut p = vec![b'p'];
                p.extend_from_slice(&(password.len() as i32 + 5).to_be_bytes());
                p.extend_from_slice(password.as_bytes());
                p.push(0);
                s.write_all(&p).unwrap();
            }
            b'E' => {
                let fields: Vec<(u8, String)> =
                    body.split(|b| *b == 0).filter(|f| !f.is_empty()).map(|f| (f[0], String::from_utf8_lossy(&f[1..]).into_owned())).collect();
                let get = |t: u8| fields.iter().find(|(f, _)| *f == t).map(|(_, v)| v.clone()).unwrap_or_default();
                assert_eq!(get(b'S'), "FATAL");
                return (get(b'C'), get(b'M'));
            }
            other => panic!("unexpected message {:?}", other as char),
        }
    }
}

/// The `issue` records' (agent_id, tenant, role).
fn issued(records: &[serde_json::Value]) -> Vec<(String, String, String)> {
    records
        .iter()
        .filter(|r| r["event"] == "issue")
        .map(|r| (r["agent_id"].as_str().unwrap().into(), r["tenant"].as_str().unwrap().into(), r["details"]["role"].as_str().unwrap().into()))
        .collect()
}

#[test]
fn two_agents_through_one_broker_get_their_own_users_and_policy_decisions() {
    let s = Setup::jwt();
    let (token_a, token_b) = (s.token("agent-a", "acme"), s.token("agent-b", "globex"));
    let script = "SELECT current_user;\nSELECT item FROM orders ORDER BY id;\n";
    let a = s.psql(&[("PGPASSWORD", &token_a)], script);
    let b = s.psql(&[("PGPASSWORD", &token_b)], script);
    let ((a_out, a_err), (b_out, b_err)) = (text(&a), text(&b));
    let a_lines: Vec<&str> = a_out.lines().collect();
    assert_eq!(a_lines.len(), 3, "stdout: {a_out}\nstderr: {a_err}\nbroker log:\n{}", s.broker.log());
    assert!(a_lines[0].starts_with("cb_agent_a_"), "{a_out}");
    assert_eq!(&a_lines[1..], ["book", "lamp"], "{a_out}\n{a_err}");
    let b_user = b_out.trim();
    assert!(b_user.starts_with("cb_agent_b_"), "stdout: {b_out}\nstderr: {b_err}");
    assert!(b_err.contains("permission denied by credential-broker: agent-b of globex may not read orders"), "{b_err}");

    let records = s.audit_records();
    let issued = issued(&records);
    assert_eq!(issued.len(), 2, "{records:#?}");
    assert_eq!((issued[0].0.as_str(), issued[0].1.as_str(), issued[0].2.as_str()), ("agent-a", "acme", a_lines[0]), "{issued:?}");
    assert_eq!((issued[1].0.as_str(), issued[1].1.as_str(), issued[1].2.as_str()), ("agent-b", "globex", b_user), "{issued:?}");
    let denied: Vec<_> = records.iter().filter(|r| r["event"] == "deny").collect();
    assert_eq!(denied.len(), 1, "{denied:#?}");
    assert_eq!(
        (denied[0]["agent_id"].as_str(), denied[0]["tenant"].as_str(), denied[0]["route"].as_str()),
        (Some("agent-b"), Some("globex"), Some("database:shop"))
    );
    // The tokens are nowhere in the broker's log.
    let log = s.broker.log();
    assert!(!log.contains(&token_a) && !log.contains(&token_b), "a token was logged");
}

#[test]
fn missing_invalid_or_expired_tokens_are_refused_before_any_user_is_minted() {
    let s = Setup::jwt();
    // psql with no password at all hangs up when asked for one (-w: it would otherwise prompt,
    // and with no terminal try again with an empty one).
    let out = psql_command().args(["-w", "-h", "127.0.0.1", "-p", &s.port().to_string(), "-U", "agent", "-d", DATABASE, "-c", "SELECT 1"]).output().unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains("no password supplied"), "{stderr}");

    let mut expired = TestIssuer::claims("agent-a");
    expired["exp"] = (expired["iat"].as_u64().unwrap() - 3600).into();
    let expired = s.issuer.sign("ES256", &expired);
    let stranger = TestIssuer::new("elsewhere").sign("ES256", &TestIssuer::claims("agent-a"));
    let cases = [
        ("not-a-jwt", "identity token rejected: malformed token"),
        (expired.as_str(), "identity token rejected: token expired"),
        (stranger.as_str(), "identity token rejected: token is signed with a key that is not in the trusted JWKS"),
        ("", "this listener requires the agent's identity token (JWT) as the password"),
    ];
    for (token, reason) in cases {
        let (code, message) = login_error(s.port(), token);
        assert_eq!(code, "28000", "{message}");
        assert!(message.contains(reason), "{message}");
        if !token.is_empty() {
            assert!(!message.contains(token), "the refusal echoes the token");
            let out = s.psql(&[("PGPASSWORD", token)], "SELECT 1;\n");
            let (_, stderr) = text(&out);
            assert!(!out.status.success() && stderr.contains("FATAL:  credential-broker: ") && stderr.contains(reason), "{stderr}");
        }
    }

    // Every refusal is audited under no agent, with its reason; nothing was minted, and the
    // server saw no login of a minted user.
    let refusals = s.identity_refusals(8);
    assert_eq!(refusals.len(), 8, "{refusals:#?}");
    assert!(refusals.iter().all(|r| r["route"] == "database:shop" && r["decision"] == "deny"), "{refusals:#?}");
    assert_eq!(refusals.iter().filter(|r| r["details"]["code"] == "identity_required").count(), 2, "{refusals:#?}");
    assert!(refusals.iter().any(|r| r["reason"].as_str().unwrap().contains("token expired")), "{refusals:#?}");
    let records = s.audit_records();
    assert!(issued(&records).is_empty(), "{records:#?}");
    assert_eq!(s.minted_roles(), "");
    let server_log = s.pg.log();
    assert!(!server_log.contains("user=cb_"), "a minted user logged in:\n{server_log}");
    let log = s.broker.log();
    assert!(!log.contains(&expired) && !log.contains(&stranger), "a token was logged");
}

#[test]
fn grants_list_each_session_under_its_agent_and_revoking_one_agent_spares_the_other() {
    let s = Setup::jwt();
    let (token_a, token_b) = (s.token("agent-a", "acme"), s.token("agent-b", "globex"));
    let sql = "SELECT pg_sleep(30)";
    let a = s.spawn_psql(&[("PGPASSWORD", &token_a)], sql);
    let mut b = s.spawn_psql(&[("PGPASSWORD", &token_b)], sql);
    s.wait_active(sql, 2);

    let (status, body) = s.api("GET", "/v1/grants", None);
    assert_eq!(status, 200, "{body:#}");
    let mut grants: Vec<(String, String, String, String)> = body["grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let f = |k: &str| g[k].as_str().unwrap_or_default().to_string();
            (f("agent_id"), f("tenant"), f("kind"), f("database"))
        })
        .collect();
    grants.sort();
    let want = |agent: &str, tenant: &str| (agent.to_string(), tenant.to_string(), "database_session".to_string(), "shop".to_string());
    assert_eq!(grants, vec![want("agent-a", "acme"), want("agent-b", "globex")], "{body:#}");

    let (status, body) = s.api("POST", "/v1/grants/revoke", Some(r#"{"agent_id": "agent-a"}"#));
    assert_eq!((status, &body["count"]), (200, &serde_json::json!(1)), "{body:#}");
    let out = wait_output(a, Duration::from_secs(10));
    let (_, stderr) = text(&out);
    assert!(stderr.contains("the broker revoked the session's database credential"), "{stderr}");
    assert!(b.try_wait().unwrap().is_none(), "agent-b's session ended too");
    let (_, body) = s.api("GET", "/v1/grants", None);
    let left: Vec<_> = body["grants"].as_array().unwrap().iter().map(|g| g["agent_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(left, ["agent-b"], "{body:#}");
    let revokes: Vec<_> = s.audit_records().into_iter().filter(|r| r["event"] == "revoke").collect();
    assert_eq!(revokes.len(), 1, "{revokes:#?}");
    assert_eq!((revokes[0]["agent_id"].as_str(), revokes[0]["tenant"].as_str()), (Some("agent-a"), Some("acme")), "{revokes:#?}");

    let (status, body) = s.api("POST", "/v1/grants/revoke", Some(r#"{"agent_id": "agent-b"}"#));
    assert_eq!((status, &body["count"]), (200, &serde_json::json!(1)), "{body:#}");
    wait_output(b, Duration::from_secs(10));
}

/// A broker whose listener takes agents by client certificate (SPIFFE IDs in `cluster.local`,
/// the tenant from the ID's first path segment), presenting a certificate for 127.0.0.1.
fn mtls_setup() -> Setup {
    Setup::start(|d, ca| {
        let (crt, key) = ca.leaf_files(d, "listener", vec![SanType::IpAddress("127.0.0.1".parse().unwrap())], false);
        format!(
            "identity:\n  mode: mtls\n  mtls: {{client_ca_file: {}, cert_file: {}, key_file: {}, trust_domain: cluster.local, tenant_path_segment: 1}}",
            ca.cert_path.display(),
            crt.display(),
            key.display()
        )
    })
}

/// mtls mode: `psql` with a client certificate is named by its SPIFFE ID; without one, or in
/// cleartext, it gets FATAL 28000 and nothing is minted.
#[test]
fn mtls_agents_are_named_by_their_client_certificate() {
    let s = mtls_setup();
    let d = s.dir.path();
    let client = |name: &str| -> (PathBuf, PathBuf) {
        let spiffe = format!("spiffe://cluster.local/ns/acme/sa/{name}");
        let (crt, key) = s.ca.leaf_files(d, name, vec![SanType::URI(spiffe.as_str().try_into().unwrap())], true);
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        (crt, key)
    };
    let root = s.ca.cert_path.display().to_string();
    let run = |cert: Option<&(PathBuf, PathBuf)>, sslmode: &str| {
        let mut env = vec![("PGSSLMODE", sslmode.to_string()), ("PGSSLROOTCERT", root.clone())];
        if let Some((crt, key)) = cert {
            env.extend([("PGSSLCERT", crt.display().to_string()), ("PGSSLKEY", key.display().to_string())]);
        }
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        s.psql(&env, "SELECT current_user;\nSELECT item FROM orders ORDER BY id;\n")
    };
    let (a, b) = (client("agent-a"), client("agent-b"));
    let (a_out, a_err) = text(&run(Some(&a), "verify-ca"));
    let a_lines: Vec<&str> = a_out.lines().collect();
    assert_eq!(a_lines.len(), 3, "stdout: {a_out}\nstderr: {a_err}\nbroker log:\n{}", s.broker.log());
    assert_eq!(&a_lines[1..], ["book", "lamp"]);
    let (b_out, b_err) = text(&run(Some(&b), "verify-ca"));
    assert!(b_out.trim().starts_with("cb_spiffe_") && b_out.trim() != a_lines[0], "stdout: {b_out}\nstderr: {b_err}");
    assert!(b_err.contains("spiffe://cluster.local/ns/acme/sa/agent-b of acme may not read orders"), "{b_err}");
    let records = s.audit_records();
    let agents: Vec<String> = issued(&records).into_iter().map(|(agent, tenant, _)| format!("{agent} {tenant}")).collect();
    assert_eq!(agents, ["spiffe://cluster.local/ns/acme/sa/agent-a acme", "spiffe://cluster.local/ns/acme/sa/agent-b acme"], "{records:#?}");

    let out = run(None, "require");
    let (_, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains("FATAL:  credential-broker: this listener requires a client certificate naming the agent"), "{stderr}");
    let out = run(None, "disable");
    let (_, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains("FATAL:  credential-broker: this listener requires TLS with a client certificate"), "{stderr}");
    // A certificate of the trusted CA that names no agent (no SPIFFE ID).
    let (crt, key) = s.ca.leaf_files(d, "nameless", vec![SanType::DnsName("agent.test".try_into().unwrap())], true);
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = run(Some(&(crt, key)), "verify-ca");
    let (_, stderr) = text(&out);
    assert!(
        !out.status.success() && stderr.contains("FATAL:  credential-broker: client certificate refused: client certificate must carry exactly one SPIFFE ID"),
        "{stderr}"
    );
    // A certificate from another CA fails the TLS handshake itself.
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = TestCa::new(other_dir.path());
    let spiffe = "spiffe://cluster.local/ns/acme/sa/agent-a";
    let (crt, key) = other_ca.leaf_files(other_dir.path(), "stranger", vec![SanType::URI(spiffe.try_into().unwrap())], true);
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let out = run(Some(&(crt, key)), "verify-ca");
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success() && stdout.is_empty(), "{stdout}\n{stderr}");
    let refusals = s.identity_refusals(4);
    assert_eq!(refusals.len(), 4, "{refusals:#?}");
    assert!(refusals.iter().all(|r| r["route"] == "database:shop"), "{refusals:#?}");
    let codes: Vec<&str> = refusals.iter().map(|r| r["details"]["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["identity_required", "identity_required", "identity_invalid", "identity_invalid"], "{refusals:#?}");
    assert!(refusals[3]["reason"].as_str().unwrap().contains("TLS handshake failed"), "{refusals:#?}");
    assert_eq!(issued(&s.audit_records()).len(), 2, "the refused connections minted nothing");

    // Every connection being TLS with a verified client certificate, an mtls listener may face
    // the pod network (sidecar and jwt listeners must stay on loopback).
    let yaml = std::fs::read_to_string(&s.broker.config_path).unwrap();
    let exposed = yaml.replace("    listen: \"127.0.0.1:0\"\n    upstream", "    listen: \"0.0.0.0:0\"\n    upstream");
    assert_ne!(exposed, yaml);
    let path = d.join("exposed.yaml");
    std::fs::write(&path, exposed).unwrap();
    let out = support::broker::cli(&["check-config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Seconds since the epoch, now.
fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A `psql -c "SELECT pg_sleep(60)"` session ends when `proof_ends` (epoch seconds) passes,
/// within a few seconds, with `message`; its user is dropped and its grant is gone.
fn assert_session_ends_with_its_proof(s: &Setup, child: Child, sql: &str, proof_ends: f64, message: &str) {
    let out = wait_output(child, Duration::from_secs(40));
    let ended = unix_now();
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success() && stderr.contains(message), "stdout: {stdout}\nstderr: {stderr}\nbroker log:\n{}", s.broker.log());
    assert!(ended >= proof_ends - 0.1, "the session ended {:.1} s before its agent's proof did", proof_ends - ended);
    assert!(ended < proof_ends + 5.0, "the session ended {:.1} s after its agent's proof did", ended - proof_ends);
    assert_eq!(s.minted_roles_after_revoke(), "", "the session's user was not dropped");
    assert_eq!(s.pg.admin_sql(&format!("SELECT count(*) FROM pg_stat_activity WHERE query = '{sql}'")), "0");
    let (status, body) = s.api("GET", "/v1/grants", None);
    assert_eq!((status, body["grants"].as_array().map(Vec::len)), (200, Some(0)), "{body:#}");
}

/// jwt mode: a session does not outlive its agent's JWT. It ends at `exp` plus the verifier's
/// leeway (1 s here; the HTTP side accepts the token no longer), like an expiry.
#[test]
fn a_session_ends_when_its_agents_token_expires() {
    let s = Setup::start(|d, _| {
        format!(
            "identity:\n  mode: jwt\n  tenant: fallback\n  jwt: {{jwks_file: {}/jwks.json, issuer: \"{ISSUER}\", audience: {AUDIENCE}, tenant_claim: tenant, leeway_seconds: 1}}",
            d.display()
        )
    });
    let mut claims = TestIssuer::claims("agent-a");
    claims["tenant"] = "acme".into();
    let exp = claims["iat"].as_u64().unwrap() + 6;
    claims["exp"] = exp.into();
    let token = s.issuer.sign("ES256", &claims);
    let sql = "SELECT pg_sleep(60)";
    let child = s.spawn_psql(&[("PGPASSWORD", &token)], sql);
    s.wait_active(sql, 1);
    assert_ne!(s.minted_roles(), "");
    assert!(unix_now() < exp as f64, "the session started too late for this test");
    assert_session_ends_with_its_proof(
        &s,
        child,
        sql,
        exp as f64 + 1.0,
        "FATAL:  credential-broker: the agent's identity token expired; reconnect with a fresh one",
    );
}

/// mtls mode: a session does not outlive its agent's client certificate (`notAfter`).
#[test]
fn a_session_ends_when_its_agents_client_certificate_expires() {
    let s = mtls_setup();
    let d = s.dir.path();
    let not_after = (unix_now() as i64) + 8;
    let spiffe = "spiffe://cluster.local/ns/acme/sa/agent-a";
    let until = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
    let (crt, key) = s.ca.leaf_files_until(d, "short-lived", vec![SanType::URI(spiffe.try_into().unwrap())], true, Some(until));
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let root = s.ca.cert_path.display().to_string();
    let (crt, key) = (crt.display().to_string(), key.display().to_string());
    let env = [("PGSSLMODE", "verify-ca"), ("PGSSLROOTCERT", root.as_str()), ("PGSSLCERT", crt.as_str()), ("PGSSLKEY", key.as_str())];
    let sql = "SELECT pg_sleep(60)";
    let child = s.spawn_psql(&env, sql);
    s.wait_active(sql, 1);
    assert_ne!(s.minted_roles(), "");
    assert!(unix_now() < not_after as f64, "the session started too late for this test");
    assert_session_ends_with_its_proof(
        &s,
        child,
        sql,
        not_after as f64,
        "FATAL:  credential-broker: the agent's client certificate expired; reconnect with a fresh one",
    );
}
