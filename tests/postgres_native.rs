//! The `postgres_native` provider against a real PostgreSQL server: a minted role logs in with the
//! configured grants and nothing more, stops working at its expiry, and revoke ends its sessions
//! and drops it. The password never reaches the server's statement log.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use credential_broker::classify::Scope;
use credential_broker::config::{Config, ConfigProblem, PostgresTls, ProviderConfig};
use credential_broker::providers::postgres_native::{PostgresNativeProvider, PostgresNativeSettings};
use credential_broker::providers::{Credential, CredentialProvider, Identity, Lease, MintRequest, Secret};
use support::postgres::{Postgres, DATABASE, SUPERUSER};

fn provider(pg: &Postgres, ttl: Duration) -> PostgresNativeProvider {
    PostgresNativeProvider::new("pg", settings(pg, ttl)).unwrap()
}

fn settings(pg: &Postgres, ttl: Duration) -> PostgresNativeSettings {
    PostgresNativeSettings {
        host: "127.0.0.1".into(),
        port: pg.port(),
        tls: PostgresTls::disabled(),
        database: DATABASE.into(),
        admin_user: SUPERUSER.into(),
        admin_password: Secret::new(pg.password.clone()),
        grants: vec!["SELECT ON public.orders".into()],
        member_of: vec![],
        ttl,
        timeout: Duration::from_secs(10),
    }
}

fn with_orders(pg: &Postgres) {
    pg.admin_sql("CREATE TABLE orders (id int primary key, item text); INSERT INTO orders VALUES (1, 'book'), (2, 'lamp'); CREATE TABLE customers (id int)");
}

fn request(agent: &str, ttl: Duration) -> MintRequest {
    MintRequest {
        identity: Identity { agent_id: agent.into(), tenant: "acme".into(), labels: BTreeMap::new() },
        scope: Scope { service: "postgres".into(), region: None, permissions: vec![] },
        credential_scope: "postgres_native:pg".into(),
        ttl,
        request_id: "req-1".into(),
    }
}

fn login(lease: &Lease) -> (String, String) {
    match &lease.credential {
        Credential::Password { username, password } => (username.clone(), password.expose().to_string()),
        other => panic!("expected a password credential, got {other:?}"),
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn role_exists(pg: &Postgres, role: &str) -> bool {
    pg.admin_sql(&format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'")) == "1"
}

#[tokio::test(flavor = "multi_thread")]
async fn a_minted_role_logs_in_with_exactly_its_grants() {
    let pg = Postgres::start();
    with_orders(&pg);
    let provider = provider(&pg, Duration::from_secs(300));
    let lease = provider.mint(&request("agent-7", Duration::from_secs(120))).await.unwrap();
    let (user, password) = login(&lease);
    assert!(user.starts_with("cb_agent_7_"), "{user}");
    assert_eq!(lease.details["role"], user);
    let left = lease.expires_at.duration_since(std::time::SystemTime::now()).unwrap();
    assert!(left <= Duration::from_secs(120) && left > Duration::from_secs(100), "the shorter of provider and request ttl: {left:?}");

    let out = pg.psql_as(&user, &password, DATABASE, "SELECT current_user, count(*) FROM orders GROUP BY 1");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("{user}|2"));

    let out = pg.psql_as(&user, &password, DATABASE, "DELETE FROM orders");
    assert!(!out.status.success() && stderr(&out).contains("permission denied"), "{}", stderr(&out));
    let out = pg.psql_as(&user, &password, DATABASE, "SELECT * FROM customers");
    assert!(!out.status.success() && stderr(&out).contains("permission denied"), "{}", stderr(&out));
    let out = pg.psql_as(&user, "wrong", DATABASE, "SELECT 1");
    assert!(!out.status.success() && stderr(&out).contains("password authentication failed"), "{}", stderr(&out));

    // The role has an expiry at the server, and two agents get two different roles.
    assert_eq!(
        pg.admin_sql(&format!("SELECT rolvaliduntil IS NOT NULL AND rolvaliduntil < now() + interval '121 seconds' FROM pg_roles WHERE rolname = '{user}'")),
        "t"
    );
    let other = provider.mint(&request("agent-8", Duration::from_secs(120))).await.unwrap();
    assert_ne!(login(&other).0, user);

    // Only a SCRAM verifier went over the admin connection: the statement log has no password.
    let log = pg.log();
    assert!(log.contains("CREATE ROLE"), "log_statement=all should show the CREATE ROLE:\n{log}");
    assert!(!log.contains(&password) && !log.contains(&login(&other).1), "a minted password is in the server log");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoke_ends_the_roles_sessions_and_drops_it() {
    let pg = Postgres::start();
    with_orders(&pg);
    let provider = provider(&pg, Duration::from_secs(300));
    let lease = provider.mint(&request("agent-7", Duration::from_secs(300))).await.unwrap();
    let (user, password) = login(&lease);

    // A live session of the role, busy for far longer than the test.
    let mut session = support::postgres::psql_command();
    session.args(["-h", "127.0.0.1", "-p", &pg.port().to_string(), "-U", &user, "-d", DATABASE, "-c", "SELECT pg_sleep(60)"]).env("PGPASSWORD", &password);
    let session = session.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pg.admin_sql(&format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}'")) != "1" {
        assert!(Instant::now() < deadline, "the role's session never showed up in pg_stat_activity");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    provider.revoke(&lease).await.unwrap();
    let out = tokio::task::spawn_blocking(move || session.wait_with_output()).await.unwrap().unwrap();
    assert!(!out.status.success(), "the open session survived the revoke");
    assert!(stderr(&out).contains("terminat"), "{}", stderr(&out));
    assert!(!role_exists(&pg, &user));
    let out = pg.psql_as(&user, &password, DATABASE, "SELECT 1");
    assert!(!out.status.success(), "the revoked role still logs in");
    // Revoking again is not an error: the role is already gone.
    provider.revoke(&lease).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_role_stops_working_at_its_expiry_and_is_swept() {
    let pg = Postgres::start();
    with_orders(&pg);
    let provider = provider(&pg, Duration::from_secs(2));
    let lease = provider.mint(&request("agent-7", Duration::from_secs(300))).await.unwrap();
    let (user, password) = login(&lease);
    let out = pg.psql_as(&user, &password, DATABASE, "SELECT 1");
    assert!(out.status.success(), "{}", stderr(&out));

    // Wait out the expiry the server enforces (VALID UNTIL), polling rather than guessing.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = pg.psql_as(&user, &password, DATABASE, "SELECT 1");
        if !out.status.success() {
            assert!(stderr(&out).contains("password authentication failed"), "{}", stderr(&out));
            break;
        }
        assert!(Instant::now() < deadline, "the role still logs in 30 s after a 2 s expiry");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(role_exists(&pg, &user));
    // An operator's own expired role that merely starts with cb_ is not the provider's to drop.
    pg.admin_sql("CREATE ROLE cb_ops VALID UNTIL '2000-01-01'");
    let swept = provider.sweep_expired().await.unwrap();
    assert_eq!(swept, vec![user.clone()]);
    assert!(!role_exists(&pg, &user));
    assert!(role_exists(&pg, "cb_ops"));
}

/// Concurrent mints (and drops) with grants on the same tables do not collide on their ACLs.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_mints_and_revokes_all_succeed() {
    let pg = Postgres::start();
    with_orders(&pg);
    let mut s = settings(&pg, Duration::from_secs(300));
    s.grants = vec!["SELECT, INSERT ON ALL TABLES IN SCHEMA public".into()];
    let p = PostgresNativeProvider::new("pg", s).unwrap();
    let requests: Vec<MintRequest> = (0..12).map(|i| request(&format!("agent-{i}"), Duration::from_secs(300))).collect();
    let leases = futures::future::join_all(requests.iter().map(|r| p.mint(r))).await;
    let leases: Vec<Lease> = leases.into_iter().collect::<Result<_, _>>().unwrap();
    let results = futures::future::join_all(leases.iter().map(|l| p.revoke(l))).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(pg.admin_sql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'cb\\_agent%'"), "0");
}

const CONFIG: &str = r#"
mode: dev
identity: {agent_id: agent-1, tenant: acme}
routes: []
providers:
  pg:
    type: postgres_native
    host: 127.0.0.1
    port: PORT
    database: shop
    admin_user: broker_admin
    admin_password_file: PASSWORD_FILE
    sslmode: disable
    grants: ["SELECT ON public.orders"]
    ttl_seconds: 600
policy: {file: Cargo.toml}
audit: {path: /tmp/audit.jsonl}
"#;

fn config(yaml: &str) -> Result<Config, Vec<ConfigProblem>> {
    Config::from_yaml(yaml, std::path::Path::new(env!("CARGO_MANIFEST_DIR")), &|_| None)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_provider_is_built_from_config_and_mints() {
    let pg = Postgres::start();
    with_orders(&pg);
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("admin-password");
    std::fs::write(&password_file, format!("{}\n", pg.password)).unwrap();
    let yaml = CONFIG.replace("PORT", &pg.port().to_string()).replace("PASSWORD_FILE", password_file.to_str().unwrap());
    let config = config(&yaml).unwrap_or_else(|problems| panic!("{problems:?}"));
    let ProviderConfig::PostgresNative(settings) = &config.providers["pg"] else { panic!("not a postgres_native provider") };
    assert_eq!(settings.ttl, Duration::from_secs(600));
    let provider = PostgresNativeProvider::from_config("pg", settings).unwrap();
    let lease = provider.mint(&request("agent-1", Duration::from_secs(60))).await.unwrap();
    let (user, password) = login(&lease);
    let out = pg.psql_as(&user, &password, DATABASE, "SELECT item FROM orders ORDER BY id");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "book\nlamp");
}

#[test]
fn config_problems_name_their_key_path() {
    let base = CONFIG.replace("PORT", "5432").replace("PASSWORD_FILE", "/nonexistent");
    let unknown = base.replace("ttl_seconds: 600", "ttl_seconds: 600\n    colour: blue");
    let text = format!("{:?}", config(&unknown).unwrap_err());
    assert!(text.contains("providers.pg") && text.contains("colour"), "{text}");

    let bad = base
        .replace("host: 127.0.0.1", "host: db.example.com")
        .replace("\"SELECT ON public.orders\"", "\"SELECT ON t; DROP TABLE t\"")
        .replace("ttl_seconds: 600", "ttl_seconds: 5");
    let paths: Vec<String> = config(&bad).unwrap_err().into_iter().map(|p| p.path).collect();
    for path in ["providers.pg.host", "providers.pg.grants[0]", "providers.pg.ttl_seconds"] {
        assert!(paths.iter().any(|p| p == path), "{path} not in {paths:?}");
    }
}

/// A TLS sslmode without rustls settings (not what config loading builds, but a struct literal
/// can) fails closed: an error, never the admin password in cleartext.
#[tokio::test(flavor = "multi_thread")]
async fn a_tls_sslmode_without_tls_settings_never_falls_back_to_cleartext() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    for sslmode in [credential_broker::config::SslMode::Require, credential_broker::config::SslMode::VerifyFull] {
        let settings = PostgresNativeSettings {
            host: "127.0.0.1".into(),
            port,
            tls: PostgresTls { sslmode, sslrootcert: None, client: None },
            database: DATABASE.into(),
            admin_user: SUPERUSER.into(),
            admin_password: Secret::new("admin-password"),
            grants: vec![],
            member_of: vec![],
            ttl: Duration::from_secs(60),
            timeout: Duration::from_secs(2),
        };
        let provider = PostgresNativeProvider::new("pg", settings).unwrap();
        let e = provider.mint(&request("agent-7", Duration::from_secs(60))).await.unwrap_err();
        assert!(e.message.contains(&format!("sslmode {sslmode} but no TLS settings; refusing to continue in cleartext")), "{e:?}");
        assert!(!e.retryable, "{e:?}");
        // Not even a connection was made.
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "{sslmode}: the provider connected");
    }
}
