//! The `vault` provider against a real OpenBao dev server (`bao server -dev`), a real PostgreSQL,
//! the real broker binary and the real `psql`: Vault makes a database user per session (`v-…`),
//! the broker never shows its password, Vault's revocation ends it, renew extends it up to the
//! role's `max_ttl`, each login method works, a KV v2 field feeds an HTTP header route, and
//! OpenBao down means 1 + 3 attempts, the alert, and no connection to Postgres.
//!
//! `kubernetes` login is not tested here: it needs a Kubernetes API server for the TokenReview.
//! It is the `jwt` code path (`POST auth/<mount>/login {role, jwt}`), which is tested below.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use credential_broker::classify::Scope;
use credential_broker::config::{RetryConfig, VaultAuth, VaultEngine, VaultSettings};
use credential_broker::providers::retry::with_retries;
use credential_broker::providers::vault::VaultProvider;
use credential_broker::providers::{Credential, CredentialProvider, Identity, Lease, MintRequest};
use support::broker::Broker;
use support::clients::{text, wait_output};
use support::jwt::TestIssuer;
use support::openbao::{ec_jwk_to_pem, has_hex_run_of, OpenBao, BROKER_POLICY, PASSWORD_HEX_LEN};
use support::postgres::{psql_command, Postgres, DATABASE};

const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "agents may open sessions on shop"} if {
    input.scope.action == "postgres:CONNECT"
}

decision := {"allow": true, "reason": "agents may read orders"} if {
    input.scope.action == "postgres:SELECT"
}

decision := {"allow": false, "reason": "deleting orders needs a human"} if {
    input.scope.action == "postgres:DELETE"
}

decision := {"allow": true, "reason": "agents may read the api"} if {
    input.scope.action == "http:GET"
}
"#;

const SUBJECT: &str = "system:serviceaccount:agents:credential-broker";

/// PostgreSQL with an `orders` table, OpenBao with the database engine (role `readonly`) and the
/// broker's policy, and a directory for files.
struct Stack {
    dir: tempfile::TempDir,
    pg: Postgres,
    bao: OpenBao,
}

impl Stack {
    fn start(default_ttl: &str, max_ttl: &str) -> Stack {
        let pg = Postgres::start();
        pg.admin_sql("CREATE TABLE orders (id int primary key, item text); INSERT INTO orders VALUES (1, 'book'), (2, 'lamp')");
        let bao = OpenBao::start();
        bao.database_engine(&pg, "readonly", default_ttl, max_ttl);
        bao.broker_policy();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
        Stack { dir, pg, bao }
    }

    fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    fn settings(&self, auth: VaultAuth, engine: VaultEngine) -> VaultSettings {
        VaultSettings { address: url::Url::parse(&self.bao.address()).unwrap(), ca_file: None, namespace: None, timeout: Duration::from_secs(5), auth, engine }
    }

    fn token_auth(&self) -> VaultAuth {
        VaultAuth::Token { token_file: self.file("vault-token", &self.bao.broker_token("1h")) }
    }

    fn database(&self, role: &str) -> VaultEngine {
        VaultEngine::Database { mount: "database".into(), role: role.into() }
    }

    fn provider(&self, auth: VaultAuth) -> VaultProvider {
        VaultProvider::new("vault", &self.settings(auth, self.database("readonly"))).unwrap()
    }

    /// Roles Vault made that still exist.
    fn vault_users(&self) -> String {
        self.pg.admin_sql("SELECT coalesce(string_agg(rolname, ',' ORDER BY rolname), '') FROM pg_roles WHERE rolname LIKE 'v-%'")
    }

    fn wait_until_no_vault_users(&self, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.vault_users().is_empty() {
            assert!(Instant::now() < deadline, "vault's users outlived their sessions: {}", self.vault_users());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn request(agent: &str) -> MintRequest {
    MintRequest {
        identity: Identity { agent_id: agent.into(), tenant: "acme".into(), labels: BTreeMap::new() },
        scope: Scope { service: "postgres".into(), region: None, permissions: vec![] },
        credential_scope: "vault:database/creds/readonly".into(),
        ttl: Duration::from_secs(600),
        request_id: "req-1".into(),
    }
}

fn login(lease: &Lease) -> (String, String) {
    match &lease.credential {
        Credential::Password { username, password } => (username.clone(), password.expose().to_string()),
        other => panic!("expected a password credential, got {other:?}"),
    }
}

/// The user reads orders directly (no broker) with the minted password.
fn assert_logs_in(pg: &Postgres, lease: &Lease) -> String {
    let (user, password) = login(lease);
    let out = pg.psql_as(&user, &password, DATABASE, "SELECT current_user, count(*) FROM orders GROUP BY 1");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{user} could not log in: {stderr}");
    assert_eq!(stdout.trim(), format!("{user}|2"));
    user
}

fn retry() -> RetryConfig {
    RetryConfig { max_retries: 3, base_delay: Duration::from_millis(10), max_delay: Duration::from_millis(50) }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_approle_and_jwt_logins_each_mint_a_working_database_user() {
    let stack = Stack::start("5m", "1h");

    // token
    let provider = stack.provider(stack.token_auth());
    let lease = provider.mint(&request("agent-7")).await.unwrap();
    let user = assert_logs_in(&stack.pg, &lease);
    assert!(user.starts_with("v-"), "{user}");
    assert!(lease.id.starts_with("database/creds/readonly/"), "the lease id is Vault's: {}", lease.id);
    assert_eq!(lease.details["vault_lease_id"], lease.id);
    assert_eq!(lease.details["username"], user);
    assert_eq!(lease.details["vault_role"], "readonly");
    let left = lease.expires_at.duration_since(SystemTime::now()).unwrap();
    assert!(left <= Duration::from_secs(300) && left > Duration::from_secs(280), "the role's default_ttl: {left:?}");
    let other = provider.mint(&request("agent-8")).await.unwrap();
    assert_ne!(login(&other).0, user, "each mint is a new user");

    // approle
    let (role_id, secret_id) = stack.bao.approle();
    let approle =
        |secret_id: &str, name: &str| VaultAuth::AppRole { mount: "approle".into(), role_id: role_id.clone(), secret_id_file: stack.file(name, secret_id) };
    let provider = stack.provider(approle(&secret_id, "secret-id"));
    let approle_lease = provider.mint(&request("agent-7")).await.unwrap();
    let approle_user = assert_logs_in(&stack.pg, &approle_lease);
    assert!(approle_user.starts_with("v-approle-"), "vault names the user after the login: {approle_user}");

    // A bad secret id is a permanent error: one attempt, not four.
    let bad = stack.provider(approle("00000000-0000-0000-0000-000000000000", "bad-secret-id"));
    let mut attempts = 0;
    let req = request("agent-7");
    let failure = with_retries(&retry(), |_| {
        attempts += 1;
        bad.mint(&req)
    })
    .await
    .unwrap_err();
    assert_eq!((failure.attempts, attempts), (1, 1), "{failure}");
    assert!(!failure.last_error.retryable);
    assert!(failure.last_error.message.contains("approle login at auth/approle: vault answered 400"), "{}", failure.last_error.message);
    assert!(!failure.last_error.message.contains(&secret_id), "{}", failure.last_error.message);

    // jwt: a token signed by a key OpenBao trusts (a projected service-account token in a pod)
    let issuer = TestIssuer::new("vault");
    let pem = ec_jwk_to_pem(&issuer.jwks()["keys"][0]);
    stack.bao.jwt_auth(&pem, support::jwt::ISSUER, support::jwt::AUDIENCE, SUBJECT);
    let jwt_file = stack.file("sa-token", &issuer.sign("ES256", &TestIssuer::claims(SUBJECT)));
    let provider = stack.provider(VaultAuth::Jwt { mount: "jwt".into(), role: "broker".into(), jwt_file: jwt_file.clone() });
    let jwt_lease = provider.mint(&request("agent-7")).await.unwrap();
    assert_logs_in(&stack.pg, &jwt_lease);
    // A token for another subject is refused by the role: permanent, with the role in the message.
    std::fs::write(&jwt_file, issuer.sign("ES256", &TestIssuer::claims("system:serviceaccount:other:intruder"))).unwrap();
    let refused = stack.provider(VaultAuth::Jwt { mount: "jwt".into(), role: "broker".into(), jwt_file }).mint(&request("agent-7")).await.unwrap_err();
    assert!(!refused.retryable && refused.message.contains("jwt login at auth/jwt as role broker"), "{refused:?}");
    assert!(!refused.message.contains("eyJ"), "{}", refused.message);

    for lease in [&lease, &other, &approle_lease, &jwt_lease] {
        for part in lease.credential.secret_parts() {
            assert!(!format!("{lease:?}").contains(part.expose()), "Debug shows the password");
        }
    }
}

/// Vault revoked the broker's token (or it expired early): the 403 makes the provider log in
/// again, re-reading the token file, and the mint succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_403_logs_in_again_with_a_fresh_token_file() {
    let stack = Stack::start("5m", "1h");
    let first = stack.bao.broker_token("1h");
    let token_file = stack.file("vault-token", &first);
    let provider = stack.provider(VaultAuth::Token { token_file: token_file.clone() });
    provider.mint(&request("agent-7")).await.unwrap();
    stack.bao.bao(&["token", "revoke", &first]);
    std::fs::write(&token_file, stack.bao.broker_token("1h")).unwrap();
    let lease = provider.mint(&request("agent-7")).await.unwrap();
    assert_logs_in(&stack.pg, &lease);
    // The cached token is revoked and the file now holds a token without the broker's policy:
    // 403, a fresh login, 403 again — a denial, permanent.
    stack.bao.bao(&["token", "revoke", std::fs::read_to_string(&token_file).unwrap().trim()]);
    std::fs::write(&token_file, stack.bao.bao(&["token", "create", "-policy=default", "-field=token"])).unwrap();
    let denied = provider.mint(&request("agent-7")).await.unwrap_err();
    assert!(!denied.retryable && denied.message.contains("vault answered 403"), "{denied:?}");
}

/// A 403 for a token that can still look itself up is the broker's Vault policy saying no:
/// permanent, and no new login (an AppRole login spends a `secret_id` use and mints a token), so
/// the token and the users minted under it live on. A token revoked at Vault still makes the
/// provider log in again, once. The secret id serves two logins: a third would fail with 400.
#[tokio::test(flavor = "multi_thread")]
async fn a_403_for_a_valid_token_is_a_denial_and_no_new_login() {
    let stack = Stack::start("5m", "1h");
    let (role_id, secret_id) = stack.bao.approle_for(BROKER_POLICY, "10m", "1h", 2);
    let auth = VaultAuth::AppRole { mount: "approle".into(), role_id, secret_id_file: stack.file("secret-id", &secret_id) };
    let provider = stack.provider(auth.clone());
    let tokens = || serde_json::from_str::<Vec<String>>(&stack.bao.bao(&["list", "-format=json", "auth/token/accessors"])).unwrap().len();
    let lease = provider.mint(&request("agent-7")).await.unwrap();
    let tokens_after_login = tokens();

    // The operator takes the creds path out of the broker's policy (it applies to live tokens).
    stack.bao.bao_stdin(&["policy", "write", BROKER_POLICY, "-"], "path \"sys/leases/revoke\" { capabilities = [\"update\"] }\n");
    for _ in 0..3 {
        let denied = provider.mint(&request("agent-8")).await.unwrap_err();
        assert!(!denied.retryable, "{denied:?}");
        assert!(denied.message.contains("reading database/creds/readonly: vault answered 403"), "{denied:?}");
        assert!(denied.message.contains("check the broker's Vault policy"), "{denied:?}");
        assert!(!denied.message.contains("approle login"), "a denial made the provider log in again: {denied:?}");
    }
    assert_eq!(tokens(), tokens_after_login, "a denial minted a new vault token");
    // The token still serves (its lease renews, in Vault's default policy) and its user lives on.
    assert!(provider.renew(&lease).await.unwrap().is_some());
    assert_logs_in(&stack.pg, &lease);
    stack.bao.broker_policy();
    let second = provider.mint(&request("agent-8")).await.unwrap();
    assert_logs_in(&stack.pg, &second);
    assert_eq!(tokens(), tokens_after_login, "minting again took a new vault token");

    // Revoked at Vault: the token can no longer look itself up, so one fresh login (the secret
    // id's second and last use), and minting goes on.
    stack.bao.bao(&["token", "revoke", "-mode=path", "auth/approle/login"]);
    let third = provider.mint(&request("agent-7")).await.unwrap();
    assert_logs_in(&stack.pg, &third);
    provider.revoke(&third).await.unwrap();
    // The secret id is used up: the provider logged in exactly twice.
    let fresh = stack.provider(auth).mint(&request("agent-7")).await.unwrap_err();
    assert!(fresh.message.contains("approle login at auth/approle: vault answered 400"), "{fresh:?}");
}

/// A token file briefly empty (Vault Agent rewriting it) or gone does not throw away the token in
/// hand: when the renewal re-reads the file, the provider keeps the token, renews it, and minting
/// goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_file_briefly_empty_keeps_the_current_token() {
    let stack = Stack::start("5m", "1h");
    let token = stack.bao.broker_token("15s");
    let token_file = stack.file("vault-token", &token);
    let provider = stack.provider(VaultAuth::Token { token_file: token_file.clone() });
    let started = Instant::now();
    provider.mint(&request("agent-7")).await.unwrap();
    std::fs::write(&token_file, "").unwrap();
    // Past 80% of the token's life (12 s): the renewal found the file empty.
    tokio::time::sleep((started + Duration::from_secs(13)).saturating_duration_since(Instant::now())).await;
    let lease = provider.mint(&request("agent-7")).await.expect("an empty token file threw away a valid token");
    assert_logs_in(&stack.pg, &lease);
    let lookup: serde_json::Value = serde_json::from_str(&stack.bao.bao(&["token", "lookup", "-format=json", &token])).unwrap();
    assert!(lookup["data"]["ttl"].as_u64().unwrap() > 5, "the kept token was not renewed: {lookup}");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_ends_the_users_sessions_and_it_can_no_longer_log_in() {
    let stack = Stack::start("5m", "1h");
    let provider = stack.provider(stack.token_auth());
    let lease = provider.mint(&request("agent-7")).await.unwrap();
    let (user, password) = login(&lease);

    let mut session = psql_command();
    session
        .args(["-h", "127.0.0.1", "-p", &stack.pg.port().to_string(), "-U", &user, "-d", DATABASE, "-c", "SELECT pg_sleep(60)"])
        .env("PGPASSWORD", &password);
    let session = session.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while stack.pg.admin_sql(&format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}'")) != "1" {
        assert!(Instant::now() < deadline, "the user's session never showed up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    provider.revoke(&lease).await.unwrap();
    let out = tokio::task::spawn_blocking(move || session.wait_with_output()).await.unwrap().unwrap();
    assert!(!out.status.success(), "the open session survived the revoke");
    assert_eq!(stack.pg.admin_sql(&format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}'")), "0");
    assert_eq!(stack.pg.admin_sql(&format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user}'")), "0", "the user was not dropped");
    let out = stack.pg.psql_as(&user, &password, DATABASE, "SELECT 1");
    assert!(!out.status.success(), "the revoked user still logs in");
    // Vault knows the lease is gone: renewing it fails, permanently.
    let renew = provider.renew(&lease).await.unwrap_err();
    assert!(!renew.retryable, "{renew:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_extends_the_lease_until_the_roles_max_ttl() {
    let stack = Stack::start("6s", "14s");
    let provider = stack.provider(stack.token_auth());
    let started = SystemTime::now();
    let lease = provider.mint(&request("agent-7")).await.unwrap();
    // Vault counts max_ttl from the lease's creation, which is before the mint returned: bounds
    // from here hold however slow the mint was.
    let minted = SystemTime::now();
    assert_logs_in(&stack.pg, &lease);
    let first = lease.expires_at;
    assert!(first <= started + Duration::from_secs(7), "{first:?}");

    tokio::time::sleep(Duration::from_secs(3)).await;
    let renewed = provider.renew(&lease).await.unwrap().expect("a vault database lease is renewable");
    assert!(renewed > first + Duration::from_secs(2), "renew did not extend the lease: {first:?} → {renewed:?}");
    // Past the old expiry, the user still logs in: Vault moved VALID UNTIL too.
    tokio::time::sleep(first.duration_since(SystemTime::now()).unwrap_or_default() + Duration::from_secs(1)).await;
    assert_logs_in(&stack.pg, &lease);
    let later = provider.renew(&lease).await.unwrap().unwrap();
    assert!(later > renewed, "{renewed:?} → {later:?}");

    // Within one increment (6 s) of max_ttl (14 s), Vault stops extending: the expiry it returns
    // is max_ttl, less than the increment away, and stays there.
    tokio::time::sleep((minted + Duration::from_secs(10)).duration_since(SystemTime::now()).unwrap_or_default()).await;
    let max = minted + Duration::from_secs(14);
    for _ in 0..2 {
        let capped = provider.renew(&lease).await.unwrap().unwrap();
        let now = SystemTime::now();
        assert!(capped <= max + Duration::from_millis(1500), "renewed beyond max_ttl: {:?} after the mint", capped.duration_since(minted).unwrap());
        assert!(capped.duration_since(now).unwrap_or_default() < Duration::from_secs(5), "renewed by a full increment near max_ttl");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    provider.revoke(&lease).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kv_field_is_a_token_and_a_missing_one_is_a_permanent_error() {
    let stack = Stack::start("5m", "1h");
    stack.bao.kv_put("agents/api", "token", "kv-secret-value-0123456789");
    let kv = |field: &str| VaultEngine::Kv { mount: "secret".into(), path: "agents/api".into(), field: field.into(), ttl: Duration::from_secs(120) };
    let provider = VaultProvider::new("kv", &stack.settings(stack.token_auth(), kv("token"))).unwrap();
    let lease = provider.mint(&request("agent-7")).await.unwrap();
    match &lease.credential {
        Credential::Token(t) => assert_eq!(t.expose(), "kv-secret-value-0123456789"),
        other => panic!("{other:?}"),
    }
    let left = lease.expires_at.duration_since(SystemTime::now()).unwrap();
    assert!(left <= Duration::from_secs(120) && left > Duration::from_secs(100), "{left:?}");
    assert_eq!(provider.renew(&lease).await.unwrap(), None, "a static secret is not renewed");
    let missing = VaultProvider::new("kv", &stack.settings(stack.token_auth(), kv("nope"))).unwrap().mint(&request("a")).await.unwrap_err();
    assert!(!missing.retryable && missing.message.contains("no field \"nope\""), "{missing:?}");
    // Outside the broker's policy (secret/data/agents/*): 403, a denial.
    stack.bao.kv_put("admin/root", "token", "x");
    let engine = VaultEngine::Kv { mount: "secret".into(), path: "admin/root".into(), field: "token".into(), ttl: Duration::from_secs(60) };
    let denied = VaultProvider::new("kv", &stack.settings(stack.token_auth(), engine)).unwrap().mint(&request("a")).await.unwrap_err();
    assert!(!denied.retryable && denied.message.contains("403"), "{denied:?}");
}

// ---- the real broker binary ----

fn broker_yaml(dir: &Path, bao_address: &str, pg: &Postgres, extra: &str) -> String {
    format!(
        r#"
identity: {{agent_id: agent-7, tenant: acme}}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0"}}
tls: {{ca_cert_path: {dir}/broker-ca.crt}}
providers:
  vault:
    type: vault
    address: "{bao_address}"
    timeout_seconds: 2
    auth: {{token: {{token_file: {dir}/vault-token}}}}
    database: {{mount: database, role: readonly}}
databases:
  - name: shop
    listen: "127.0.0.1:0"
    upstream: "127.0.0.1:{port}"
    database: {DATABASE}
    provider: vault
    sslmode: disable
policy: {{file: {dir}/policy.rego}}
credentials:
  retry: {{max_retries: 3, base_delay_ms: 20, max_delay_ms: 100}}
audit: {{path: {dir}/audit.jsonl}}
logging: {{format: json}}
{extra}
"#,
        dir = dir.display(),
        port = pg.port(),
    )
}

fn psql_via(broker: &Broker, dir: &Path, script: &str) -> std::process::Output {
    let addr = broker.addresses.databases["shop"];
    let file = dir.join(format!("script-{}.sql", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, script).unwrap();
    let mut cmd = psql_command();
    cmd.args(["-v", "ON_ERROR_STOP=0", "-h", "127.0.0.1", "-p", &addr.port().to_string(), "-U", "agent", "-d", DATABASE, "-f"]).arg(&file);
    cmd.output().expect("running psql")
}

fn audit_records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn psql_through_the_broker_runs_as_a_vault_made_user_per_session() {
    let stack = Stack::start("5m", "1h");
    let token = stack.bao.broker_token("1h");
    stack.file("vault-token", &token);
    let broker = Broker::start(stack.dir.path(), &broker_yaml(stack.dir.path(), &stack.bao.address(), &stack.pg, ""), &[]);

    let out = psql_via(&broker, stack.dir.path(), "\\set VERBOSITY verbose\nSELECT current_user;\nDELETE FROM orders;\nSELECT item FROM orders ORDER BY id;\n");
    let (stdout, stderr) = text(&out);
    let mut lines = stdout.lines();
    let first_user = lines.next().unwrap_or_default().to_string();
    assert!(first_user.starts_with("v-"), "not a vault-made user: {stdout}\n{stderr}\nbroker log:\n{}", broker.log());
    assert_eq!(lines.collect::<Vec<_>>(), ["book", "lamp"], "{stderr}");
    assert!(stderr.contains("ERROR:  42501: permission denied by credential-broker: deleting orders needs a human"), "{stderr}");
    assert_eq!(stack.pg.admin_sql("SELECT count(*) FROM orders"), "2");

    let out = psql_via(&broker, stack.dir.path(), "SELECT current_user;\n");
    let second_user = text(&out).0.trim().to_string();
    assert!(second_user.starts_with("v-") && second_user != first_user, "{first_user} then {second_user}");

    // Each session's issuance is audited with Vault's lease id; the sessions' users are revoked at Vault when they end.
    let records = audit_records(stack.dir.path());
    let issued: Vec<_> = records.iter().filter(|r| r["event"] == "issue").collect();
    assert_eq!(issued.len(), 2, "{records:?}");
    for (record, user) in issued.iter().zip([&first_user, &second_user]) {
        assert_eq!(record["provider"], "vault");
        assert!(record["lease_id"].as_str().unwrap().starts_with("database/creds/readonly/"), "{record}");
        assert_eq!(record["details"]["username"], user.as_str());
        assert_eq!(record["credential_scope"], "vault:database/creds/readonly");
    }
    stack.wait_until_no_vault_users(Duration::from_secs(15));

    // No minted password (48 hex digits) and not the broker's Vault token, anywhere the broker writes.
    let audit = std::fs::read_to_string(stack.dir.path().join("audit.jsonl")).unwrap();
    for (name, text) in [("broker log", broker.log()), ("audit", audit)] {
        assert!(!has_hex_run_of(&text, PASSWORD_HEX_LEN), "a password-like value in the {name}:\n{text}");
        assert!(!text.contains(&token), "the broker's vault token is in the {name}");
    }
    assert!(!has_hex_run_of(&stack.pg.log(), PASSWORD_HEX_LEN), "a password in the server's statement log:\n{}", stack.pg.log());
}

/// pgbench with prepared statements (extended protocol: every statement a `Parse`) and no password:
/// each of its connections runs as its own Vault-made user, reads go through, and a `DELETE` is
/// refused at `Parse` with 42501 before it reaches the server.
#[test]
fn pgbench_with_prepared_statements_runs_on_vault_users_and_is_checked_at_parse() {
    let stack = Stack::start("5m", "1h");
    stack.file("vault-token", &stack.bao.broker_token("1h"));
    let broker = Broker::start(stack.dir.path(), &broker_yaml(stack.dir.path(), &stack.bao.address(), &stack.pg, ""), &[]);
    let port = broker.addresses.databases["shop"].port().to_string();
    let pgbench = |script: &str| {
        let file = stack.file(&format!("bench-{}.sql", uuid::Uuid::new_v4().simple()), script);
        let mut cmd = std::process::Command::new(support::postgres::program("pgbench"));
        // No password anywhere: a clean environment, as psql_command has it.
        cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).env("PGPASSFILE", "/dev/null").env("PGSSLMODE", "disable");
        cmd.args(["-n", "-M", "prepared", "-t", "25", "-c", "4", "-j", "2", "-h", "127.0.0.1", "-p", &port, "-U", "agent", "-d", DATABASE, "-f"]).arg(&file);
        cmd.output().expect("running pgbench")
    };

    let out = pgbench("SELECT item FROM orders WHERE id = 1;\n");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}\nbroker log:\n{}", broker.log());
    assert!(stdout.contains("number of transactions actually processed: 100/100"), "{stdout}");
    let issued: Vec<String> = audit_records(stack.dir.path())
        .into_iter()
        .filter(|r| r["event"] == "issue")
        .map(|r| r["details"]["username"].as_str().unwrap_or_default().to_string())
        .collect();
    // pgbench's 4 client connections, plus the one it opens first to look at the server.
    assert_eq!(issued.len(), 5, "one user per pgbench connection: {issued:?}");
    assert!(issued.iter().all(|u| u.starts_with("v-")), "{issued:?}");
    let distinct: std::collections::BTreeSet<_> = issued.iter().collect();
    assert_eq!(distinct.len(), issued.len(), "{issued:?}");
    let server_log = stack.pg.log();
    assert!(issued.iter().all(|u| server_log.contains(&format!("user={u}"))), "the server did not see the vault users log in:\n{server_log}");

    let out = pgbench("DELETE FROM orders WHERE id = 1;\n");
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("permission denied by credential-broker: deleting orders needs a human"), "{stderr}");
    assert_eq!(stack.pg.admin_sql("SELECT count(*) FROM orders"), "2");
    assert!(!stack.pg.log().contains("DELETE FROM orders"), "the denied statement reached the server");
    // Each connection's user is revoked at Vault when its session ends.
    stack.wait_until_no_vault_users(Duration::from_secs(15));
    drop(broker);
}

#[tokio::test(flavor = "multi_thread")]
async fn openbao_down_means_four_attempts_an_alert_and_no_connection_to_postgres() {
    let mut stack = Stack::start("5m", "1h");
    stack.file("vault-token", &stack.bao.broker_token("1h"));
    let alerts = support::alert_receiver::AlertReceiver::start().await;
    let address = stack.bao.address();
    stack.bao.stop();
    let extra = format!("alerts: {{webhook_url: \"{}\"}}", alerts.url());
    let yaml = broker_yaml(stack.dir.path(), &address, &stack.pg, &extra);
    let dir = stack.dir.path().to_path_buf();
    let broker = tokio::task::spawn_blocking(move || Broker::start(&dir, &yaml, &[])).await.unwrap();

    let dir = stack.dir.path().to_path_buf();
    let started = Instant::now();
    let (out, broker) = tokio::task::spawn_blocking(move || (psql_via(&broker, &dir, "SELECT 1;\n"), broker)).await.unwrap();
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success() && stdout.trim().is_empty(), "{stdout}");
    assert!(stderr.contains("credential-broker: no database credential after 4 attempts"), "{stderr}\nbroker log:\n{}", broker.log());
    assert!(
        stderr.contains("reading database/creds/readonly: error sending request") && stderr.contains("Connection refused"),
        "the error says what failed: {stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    let retried = broker.log().matches("credential mint attempt failed; retrying").count();
    assert_eq!(retried, 3, "1 attempt + 3 retries:\n{}", broker.log());

    let received = tokio::task::spawn_blocking(move || alerts.wait_for(1, Duration::from_secs(10))).await.unwrap();
    assert!(!received.is_empty(), "no alert reached the receiver:\n{}", broker.log());
    assert_eq!(received[0]["labels"]["alertname"], "Credential Minting Failure", "{received:?}");
    assert_eq!(received[0]["labels"]["provider"], "vault", "{received:?}");

    let server_log = stack.pg.log();
    assert!(!server_log.contains("user=v-") && !server_log.contains("user=agent"), "a session reached postgres without a credential:\n{server_log}");
    assert_eq!(stack.pg.admin_sql("SELECT count(*) FROM pg_stat_activity WHERE usename LIKE 'v-%'"), "0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_header_route_injects_a_kv_secret_upstream() {
    const HOST: &str = "api.vault-kv.test";
    const PLACEHOLDER: &str = "credential-broker-placeholder";
    const SECRET: &str = "kv-api-token-0123456789abcdefghij";
    let stack = Stack::start("5m", "1h");
    stack.bao.kv_put("agents/api", "token", SECRET);
    let token = stack.bao.broker_token("1h");
    stack.file("vault-token", &token);
    let ca = support::pki::TestCa::new(stack.dir.path());
    let upstream = support::upstream::HttpsUpstream::start(&ca, &[HOST]).await;
    let yaml = format!(
        r#"
identity: {{agent_id: agent-7, tenant: acme}}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0"}}
tls: {{ca_cert_path: {dir}/broker-ca.crt, upstream_ca_file: {upstream_ca}}}
routes:
  - name: api
    hosts: ["{HOST}"]
    connect_to: "{upstream}"
    endpoint: {{listen: "127.0.0.1:0", upstream: "https://{HOST}"}}
    provider: kv
    inject: {{header: {{name: Authorization, format: "Bearer {{secret}}", placeholder: {PLACEHOLDER}}}}}
providers:
  kv:
    type: vault
    address: "{address}"
    auth: {{token: {{token_file: {dir}/vault-token}}}}
    kv: {{mount: secret, path: agents/api, field: token, ttl_seconds: 120}}
policy: {{file: {dir}/policy.rego}}
audit: {{path: {dir}/audit.jsonl}}
logging: {{format: json}}
"#,
        dir = stack.dir.path().display(),
        upstream_ca = ca.cert_path.display(),
        upstream = upstream.addr,
        address = stack.bao.address(),
    );
    let dir = stack.dir.path().to_path_buf();
    let broker = tokio::task::spawn_blocking(move || Broker::start(&dir, &yaml, &[])).await.unwrap();
    let url = format!("{}/repos/acme/widgets", broker.endpoint_url("api"));
    let auth = format!("Authorization: Bearer {PLACEHOLDER}");
    let out = tokio::task::spawn_blocking(move || support::clients::curl(&["--write-out", "\n%{http_code}", "-H", &auth, &url])).await.unwrap();
    let (status, body) = support::clients::split_status(&out);
    assert_eq!(status, 200, "{body}\nbroker log:\n{}", broker.log());
    let received = upstream.requests();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].authorization.as_deref(), Some(format!("Bearer {SECRET}").as_str()));
    let audit = std::fs::read_to_string(stack.dir.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("vault:secret/data/agents/api#token"), "{audit}");
    for (name, text) in [("broker log", broker.log()), ("audit", audit)] {
        assert!(!text.contains(SECRET) && !text.contains(&token), "a secret in the {name}:\n{text}");
    }
}

const ADMIN_TOKEN: &str = "admin-token-5b1f0c9e7a2d4836";

/// The broker API with curl: (status, JSON answer).
fn api(broker: &Broker, method: &str, path: &str) -> (u16, serde_json::Value) {
    let url = format!("{}{path}", broker.admin_url());
    let auth = format!("Authorization: Bearer {ADMIN_TOKEN}");
    let out = support::clients::curl(&["--noproxy", "*", "-X", method, "--write-out", "\n%{http_code}", "-H", &auth, &url]);
    let (status, text) = support::clients::split_status(&out);
    (status, serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
}

fn spawn_psql(broker: &Broker, sql: &str) -> std::process::Child {
    let addr = broker.addresses.databases["shop"];
    let mut cmd = psql_command();
    cmd.args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "-U", "agent", "-d", DATABASE, "-c", sql]);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
}

fn wait_active(stack: &Stack, broker: &Broker, sql: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while stack.pg.admin_sql(&format!("SELECT count(*) FROM pg_stat_activity WHERE query = '{sql}' AND state = 'active'")) != "1" {
        assert!(Instant::now() < deadline, "{sql} never started:\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_broker_with_api(stack: &Stack) -> Broker {
    stack.file("vault-token", &stack.bao.broker_token("1h"));
    stack.file("admin-token", ADMIN_TOKEN);
    let extra = format!("admin: {{token_file: {}/admin-token}}", stack.dir.path().display());
    Broker::start(stack.dir.path(), &broker_yaml(stack.dir.path(), &stack.bao.address(), &stack.pg, &extra), &[])
}

/// A session's Vault lease is a grant: `GET /v1/grants` lists it under Vault's lease id, and
/// `POST /v1/grants/{id}/revoke` ends the session and revokes the lease at Vault, whose
/// revocation statements end the user's backends and drop it.
#[test]
fn revoking_the_grant_through_the_broker_api_ends_the_session_and_the_vault_lease() {
    let stack = Stack::start("5m", "1h");
    let broker = start_broker_with_api(&stack);
    let child = spawn_psql(&broker, "SELECT pg_sleep(30)");
    wait_active(&stack, &broker, "SELECT pg_sleep(30)");
    let user = stack.vault_users();
    assert!(user.starts_with("v-") && !user.contains(','), "{user}");

    let (status, body) = api(&broker, "GET", "/v1/grants");
    assert_eq!(status, 200, "{body:#}");
    let grants = body["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "{body:#}");
    let lease_id = grants[0]["id"].as_str().unwrap().to_string();
    assert!(lease_id.starts_with("database/creds/readonly/"), "{body:#}");
    assert_eq!((grants[0]["kind"].as_str(), grants[0]["provider"].as_str()), (Some("database_session"), Some("vault")), "{body:#}");
    stack.bao.bao(&["lease", "lookup", &lease_id]);

    // Vault's lease id has slashes: percent-encoded in the path, as `grants revoke` does it.
    let encoded: String = url::form_urlencoded::byte_serialize(lease_id.as_bytes()).collect();
    let (status, body) = api(&broker, "POST", &format!("/v1/grants/{encoded}/revoke"));
    assert_eq!(status, 200, "{body:#}\n{}", broker.log());
    assert_eq!(body["revoked"][0]["provider_revoked"], true, "{body:#}");
    let out = wait_output(child, Duration::from_secs(10));
    assert!(!out.status.success());
    assert!(text(&out).1.contains("the broker revoked the session's database credential"), "{:?}", text(&out));
    assert_eq!(stack.vault_users(), "", "vault's revocation statements did not drop the user");
    assert_eq!(stack.pg.admin_sql(&format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}'")), "0");
    let lookup = stack.bao.try_bao(&["lease", "lookup", &lease_id], "");
    assert!(!lookup.status.success(), "the lease is still known to OpenBao: {}", String::from_utf8_lossy(&lookup.stdout));
    let revokes: Vec<_> = audit_records(stack.dir.path()).into_iter().filter(|r| r["event"] == "revoke").collect();
    assert_eq!(revokes.len(), 1, "{revokes:?}");
    assert_eq!(revokes[0]["lease_id"], lease_id.as_str());
}

/// A session outlives the role's default_ttl (6 s) because the broker renews the Vault lease,
/// and ends at max_ttl (16 s), where Vault stops extending it.
#[test]
fn a_session_is_renewed_at_vault_until_max_ttl_then_ends() {
    let stack = Stack::start("6s", "16s");
    let broker = start_broker_with_api(&stack);
    let started = Instant::now();
    let child = spawn_psql(&broker, "SELECT pg_sleep(60)");
    let out = wait_output(child, Duration::from_secs(40));
    let elapsed = started.elapsed();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("the session's database credential expired"), "{stderr}\n{}", broker.log());
    assert!(elapsed > Duration::from_secs(12) && elapsed < Duration::from_secs(25), "ended after {elapsed:?}, not at max_ttl\n{}", broker.log());
    let renewals = audit_records(stack.dir.path()).into_iter().filter(|r| r["event"] == "renew").count();
    assert!(renewals >= 2, "{renewals} renewals\n{}", broker.log());
    stack.wait_until_no_vault_users(Duration::from_secs(10));
}

/// An HTTPS OpenBao whose certificate is signed by its own CA: trusted through `ca_file` only.
#[tokio::test(flavor = "multi_thread")]
async fn an_https_openbao_is_trusted_through_ca_file() {
    let bao = OpenBao::start_tls();
    bao.broker_policy();
    bao.kv_put("agents/api", "token", "kv-over-tls-0123456789");
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("vault-token");
    std::fs::write(&token_file, bao.broker_token("1h")).unwrap();
    let settings = |ca_file: Option<PathBuf>| VaultSettings {
        address: url::Url::parse(&bao.address()).unwrap(),
        ca_file,
        namespace: None,
        timeout: Duration::from_secs(5),
        auth: VaultAuth::Token { token_file: token_file.clone() },
        engine: VaultEngine::Kv { mount: "secret".into(), path: "agents/api".into(), field: "token".into(), ttl: Duration::from_secs(60) },
    };
    assert!(bao.address().starts_with("https://"));
    let lease = VaultProvider::new("kv", &settings(bao.ca_file.clone())).unwrap().mint(&request("agent-7")).await.unwrap();
    match &lease.credential {
        Credential::Token(t) => assert_eq!(t.expose(), "kv-over-tls-0123456789"),
        other => panic!("{other:?}"),
    }
    // Without the CA the server's certificate is not trusted: nothing is read.
    let refused = VaultProvider::new("kv", &settings(None)).unwrap().mint(&request("agent-7")).await.unwrap_err();
    assert!(refused.message.contains("reading secret/data/agents/api"), "{refused:?}");
    // A missing ca_file stops the provider from being built, naming the key.
    let missing = VaultProvider::new("kv", &settings(Some(dir.path().join("nope.pem")))).err().expect("a missing ca_file is refused");
    assert!(missing.message.starts_with("ca_file "), "{missing:?}");
}

/// Vault revokes a token's leases when the token expires: the provider keeps its token alive
/// (renew-self at 80% of its life, between mints too), so a user outlives the token's first TTL;
/// at the token's max TTL it logs in again and minting goes on.
#[tokio::test(flavor = "multi_thread")]
async fn the_brokers_token_is_renewed_so_its_leases_live_on_and_replaced_at_its_max_ttl() {
    let stack = Stack::start("5m", "1h");
    // A 10 s token is renewed at 8 s: 2 s of room for a busy machine.
    let (role_id, secret_id) = stack.bao.approle_with("10s", "25s");
    let auth = VaultAuth::AppRole { mount: "approle".into(), role_id, secret_id_file: stack.file("secret-id", &secret_id) };
    let provider = stack.provider(auth);
    let started = Instant::now();
    let lease = provider.mint(&request("agent-7")).await.unwrap();
    let user = assert_logs_in(&stack.pg, &lease);
    // Well past the token's 10 s TTL (counted from the login, after `started`), with no call in
    // between: the user is still there.
    tokio::time::sleep((started + Duration::from_secs(14)).saturating_duration_since(Instant::now())).await;
    assert_logs_in(&stack.pg, &lease);
    assert!(provider.renew(&lease).await.unwrap().is_some());
    // Past the token's 25 s max TTL: Vault revoked the old token and its lease (the user is
    // dropped), and the provider minted under a fresh login.
    tokio::time::sleep((started + Duration::from_secs(26)).saturating_duration_since(Instant::now())).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while stack.pg.admin_sql(&format!("SELECT count(*) FROM pg_roles WHERE rolname = '{user}'")) != "0" {
        assert!(Instant::now() < deadline, "the old token's lease outlived the token");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fresh = provider.mint(&request("agent-7")).await.unwrap();
    assert_logs_in(&stack.pg, &fresh);
}
