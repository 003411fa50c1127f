//! TLS to the Postgres server (`sslmode`, `sslrootcert`) against a real PostgreSQL with `ssl = on`
//! that takes TCP logins over TLS only: through the broker's listener with the real `psql`
//! (which talks cleartext to the broker on loopback; the broker talks TLS to the server), and for
//! the `postgres_native` provider's admin connection.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use credential_broker::classify::Scope;
use credential_broker::config::{Config, ConfigProblem, PostgresTls, SslMode};
use credential_broker::providers::postgres_native::{PostgresNativeProvider, PostgresNativeSettings};
use credential_broker::providers::{Credential, CredentialProvider, Identity, MintRequest, Secret};
use support::broker::Broker;
use support::pki::TestCa;
use support::postgres::{psql_command, Postgres, StartOptions, DATABASE, SUPERUSER};

const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": true, "reason": "TLS tests allow every statement"}
"#;

const SSL_QUERY: &str = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

/// A server with TLS (certificate for 127.0.0.1 and localhost, also listening on 127.0.0.2, which
/// the certificate does not name), one without, the server's CA and a CA that did not sign it.
struct Servers {
    dir: tempfile::TempDir,
    tls: Postgres,
    plain: Postgres,
    ca: Arc<TestCa>,
    other_ca: TestCa,
    /// Takes TCP connections (the kernel completes them) and never answers a byte.
    silent: std::net::TcpListener,
}

impl Servers {
    fn start() -> Servers {
        let dir = tempfile::tempdir().unwrap();
        let ca = Arc::new(TestCa::new(dir.path()));
        let other_dir = dir.path().join("other");
        std::fs::create_dir(&other_dir).unwrap();
        let other_ca = TestCa::new(&other_dir);
        let tls = Postgres::start_with(StartOptions { extra: vec!["127.0.0.2".parse().unwrap()], clients: vec![], tls: Some(ca.clone()) });
        let plain = Postgres::start();
        for pg in [&tls, &plain] {
            pg.admin_sql("CREATE TABLE orders (id int primary key, item text); INSERT INTO orders VALUES (1, 'book'), (2, 'lamp')");
        }
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Servers { dir, tls, plain, ca, other_ca, silent }
    }

    /// The server really refuses cleartext logins, so a session that works went over TLS.
    fn assert_tls_only(&self) {
        let mut cmd = psql_command();
        cmd.args(["-h", "127.0.0.1", "-p", &self.tls.port().to_string(), "-U", SUPERUSER, "-d", DATABASE, "-c", "SELECT 1"])
            .env("PGPASSWORD", &self.tls.password);
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "the TLS server took a cleartext login");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no encryption"), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

fn broker_config(s: &Servers) -> String {
    let dir = s.dir.path().display();
    let (tls, plain) = (s.tls.port(), s.plain.port());
    let ca = s.ca.cert_path.display();
    let other = s.other_ca.cert_path.display();
    let db = |name: &str, upstream: &str, provider: &str, tls: &str| {
        format!("  - {{name: {name}, listen: \"127.0.0.1:0\", upstream: \"{upstream}\", database: {DATABASE}, provider: {provider}{tls}}}\n")
    };
    let mut databases = String::new();
    databases += &db("verified", &format!("127.0.0.1:{tls}"), "pg_tls", &format!(", sslmode: verify-full, sslrootcert: {ca}"));
    // No sslmode: verify-full; no sslrootcert: the roots of HTTPS upstreams (tls.upstream_ca_file).
    databases += &db("default_roots", &format!("localhost:{tls}"), "pg_tls", "");
    databases += &db("encrypted", &format!("127.0.0.1:{tls}"), "pg_tls", ", sslmode: require");
    databases += &db("wrong_ca", &format!("127.0.0.1:{tls}"), "pg_tls", &format!(", sslmode: verify-full, sslrootcert: {other}"));
    databases += &db("wrong_name", &format!("127.0.0.2:{tls}"), "pg_tls", &format!(", sslmode: verify-full, sslrootcert: {ca}"));
    databases += &db("no_tls", &format!("127.0.0.1:{plain}"), "pg_plain", ", sslmode: require");
    databases += &db("cleartext", &format!("127.0.0.1:{plain}"), "pg_plain", ", sslmode: disable");
    databases += &db("silent", &s.silent.local_addr().unwrap().to_string(), "pg_plain", ", sslmode: disable");
    // Never connected to (TEST-NET-1): only the start-up warning for cleartext off loopback.
    databases += &db("remote_cleartext", "192.0.2.1:5432", "pg_plain", ", sslmode: disable");
    format!(
        r#"
identity: {{agent_id: agent-7, tenant: acme}}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0"}}
tls: {{ca_cert_path: {dir}/broker-ca.crt, upstream_ca_file: {ca}}}
routes: []
providers:
  pg_tls:
    type: postgres_native
    host: 127.0.0.1
    port: {tls}
    sslmode: verify-full
    sslrootcert: {ca}
    database: {DATABASE}
    admin_user: {SUPERUSER}
    admin_password_file: {dir}/tls-admin-password
    grants: ["SELECT ON ALL TABLES IN SCHEMA public"]
    ttl_seconds: 600
  pg_plain:
    type: postgres_native
    host: 127.0.0.1
    port: {plain}
    sslmode: disable
    database: {DATABASE}
    admin_user: {SUPERUSER}
    admin_password_file: {dir}/plain-admin-password
    grants: ["SELECT ON ALL TABLES IN SCHEMA public"]
    ttl_seconds: 600
databases:
{databases}policy: {{file: {dir}/policy.rego}}
credentials:
  retry: {{max_retries: 1, base_delay_ms: 20, max_delay_ms: 100}}
audit: {{path: {dir}/audit.jsonl}}
logging: {{format: json}}
"#
    )
}

fn psql(broker: &Broker, database: &str, sql: &str) -> (bool, String, String) {
    let addr = broker.addresses.databases[database];
    let mut cmd = psql_command();
    cmd.args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "-U", "agent", "-d", DATABASE, "-c", sql]);
    let out = cmd.output().expect("running psql");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).trim().to_string(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn audit_records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The roles minted for sessions of `database`.
fn roles_for(dir: &Path, database: &str) -> Vec<String> {
    audit_records(dir)
        .iter()
        .filter(|r| r["event"] == "issue" && r["route"] == format!("database:{database}"))
        .filter_map(|r| r["details"]["role"].as_str().map(String::from))
        .collect()
}

#[test]
fn the_listener_speaks_tls_to_the_server_as_sslmode_says() {
    let servers = Servers::start();
    servers.assert_tls_only();
    let dir = servers.dir.path();
    std::fs::write(dir.join("tls-admin-password"), &servers.tls.password).unwrap();
    std::fs::write(dir.join("plain-admin-password"), &servers.plain.password).unwrap();
    std::fs::write(dir.join("policy.rego"), POLICY).unwrap();
    let broker = Broker::start(dir, &broker_config(&servers), &[]);

    // verify-full with the server's CA, with the broker's upstream roots, and require without
    // any CA: TLS to the server, though psql talks cleartext to the broker.
    for database in ["verified", "default_roots", "encrypted"] {
        let (ok, stdout, stderr) = psql(&broker, database, SSL_QUERY);
        assert!(ok && stdout == "t", "{database}: stdout {stdout:?}\nstderr: {stderr}\nbroker log:\n{}", broker.log());
        let (ok, stdout, stderr) = psql(&broker, database, "SELECT item FROM orders ORDER BY id");
        assert!(ok && stdout == "book\nlamp", "{database}: {stdout:?} {stderr}");
    }
    let roles = roles_for(dir, "verified");
    let log = servers.tls.log();
    assert!(
        log.lines().any(|l| l.contains(&format!("connection authorized: user={}", roles[0])) && l.contains("SSL enabled")),
        "the minted user's session was not over TLS:\n{log}"
    );

    // The listeners' start-up warned about cleartext off loopback (by now their tasks have run).
    let log = broker.log();
    let warned: Vec<&str> = log.lines().filter(|l| l.contains("sslmode is disable for a database that is not on loopback")).collect();
    assert!(warned.len() == 1 && warned[0].contains("remote_cleartext") && warned[0].contains("WARN"), "{log}");

    // disable: cleartext to a server without TLS.
    let (ok, stdout, stderr) = psql(&broker, "cleartext", SSL_QUERY);
    assert!(ok && stdout == "f", "cleartext: {stdout:?} {stderr}");

    // The wrong CA, or a name the certificate does not carry: the agent gets a FATAL naming the
    // problem, and the minted user never logged in.
    let refusals = [
        ("wrong_ca", &servers.tls, "invalid peer certificate"),
        ("wrong_name", &servers.tls, "not valid for name"),
        ("no_tls", &servers.plain, "does not offer TLS but sslmode is require"),
    ];
    for (database, minted_on, expected) in refusals {
        let (ok, stdout, stderr) = psql(&broker, database, SSL_QUERY);
        assert!(!ok && stdout.is_empty(), "{database}: {stdout:?}");
        assert!(stderr.contains("FATAL:  credential-broker: ") && stderr.contains(expected), "{database}: {stderr}");
        let roles = roles_for(dir, database);
        assert_eq!(roles.len(), 1, "{database}: {:?}", audit_records(dir));
        let log = format!("{}{}", servers.tls.log(), servers.plain.log());
        assert!(
            !log.contains(&format!("user={} ", roles[0])) && !log.contains(&format!("user \"{}\"", roles[0])),
            "{database}: the server saw a login of the minted user:\n{log}"
        );
        // ... and the user minted for the refused session is gone.
        minted_on.wait_role_dropped(&roles[0], Duration::from_secs(20));
    }

    // A server that takes the connection and never answers the startup packet: the whole login
    // is bounded, the agent gets a FATAL saying so, and the minted user is dropped. (psql's own
    // connect_timeout, 5 s in the harness, would otherwise give up first.)
    let addr = broker.addresses.databases["silent"];
    let mut cmd = psql_command();
    cmd.args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "-U", "agent", "-d", DATABASE, "-c", "SELECT 1"]).env("PGCONNECT_TIMEOUT", "60");
    let started = Instant::now();
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "silent: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr.contains("FATAL:  credential-broker: ") && stderr.contains("no AuthenticationOk within 10s"), "silent: {stderr}\n{}", broker.log());
    assert!(started.elapsed() < Duration::from_secs(25), "silent: the login took {:?}", started.elapsed());
    let roles = roles_for(dir, "silent");
    assert_eq!(roles.len(), 1, "silent: {:?}", audit_records(dir));
    servers.plain.wait_role_dropped(&roles[0], Duration::from_secs(20));

    // A cancel reaches the server through a TLS database too (the broker sends it over TLS, as
    // the session; the server would also take it in cleartext, so this shows it arrives, not how).
    let addr = broker.addresses.databases["verified"];
    let mut cmd = psql_command();
    cmd.args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "-U", "agent", "-d", DATABASE, "-c", "SELECT pg_sleep(60)"]);
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while servers.tls.admin_sql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'") != "1" {
        assert!(Instant::now() < deadline, "the query never started:\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let started = Instant::now();
    assert!(std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("canceling statement due to user request"), "{stderr}\nbroker log:\n{}", broker.log());
    assert!(started.elapsed() < Duration::from_secs(20));
}

/// With `sslmode: require` the server is not authenticated (any certificate is accepted), so the
/// broker logs in only with SCRAM-SHA-256-PLUS: a server (or a man in the middle) that asks for
/// the password in cleartext over TLS gets nothing, while verify-full still logs in. The same for
/// the provider's admin connection.
#[test]
fn sslmode_require_logs_in_only_with_channel_binding() {
    let servers = Servers::start();
    // The TLS server now asks every TCP login for its password in cleartext (inside TLS).
    servers.tls.set_hba("local all all trust\nhostssl all all 127.0.0.1/32 password\nhostssl all all ::1/128 password\n");
    let dir = servers.dir.path();
    std::fs::write(dir.join("tls-admin-password"), &servers.tls.password).unwrap();
    std::fs::write(dir.join("plain-admin-password"), &servers.plain.password).unwrap();
    std::fs::write(dir.join("policy.rego"), POLICY).unwrap();
    let broker = Broker::start(dir, &broker_config(&servers), &[]);

    let (ok, stdout, stderr) = psql(&broker, "encrypted", SSL_QUERY);
    assert!(!ok && stdout.is_empty(), "require: {stdout:?}");
    assert!(
        stderr.contains("FATAL:  credential-broker: ")
            && stderr.contains("asked for a cleartext password")
            && stderr.contains(
                "sslmode require does not authenticate the server, so the broker only logs in with SCRAM-SHA-256-PLUS channel binding; use verify-full"
            ),
        "require: {stderr}\nbroker log:\n{}",
        broker.log()
    );
    let roles = roles_for(dir, "encrypted");
    assert_eq!(roles.len(), 1, "{:?}", audit_records(dir));
    let log = servers.tls.log();
    assert!(
        !log.contains(&format!("user={} ", roles[0])) && !log.contains(&format!("user \"{}\"", roles[0])),
        "require: the server saw a login of the minted user:\n{log}"
    );
    servers.tls.wait_role_dropped(&roles[0], Duration::from_secs(20));

    // verify-full with the server's CA: the server is authenticated, so cleartext inside TLS is fine.
    let (ok, stdout, stderr) = psql(&broker, "verified", SSL_QUERY);
    assert!(ok && stdout == "t", "verify-full: {stdout:?}\nstderr: {stderr}\nbroker log:\n{}", broker.log());
    let role = roles_for(dir, "verified").pop().unwrap();
    assert!(servers.tls.log().lines().any(|l| l.contains(&format!("connection authorized: user={role}")) && l.contains("SSL enabled")));

    // (The broker drops that user once psql is gone, through its own admin connection: wait, so
    // that login is not counted below.)
    servers.tls.wait_role_dropped(&role, Duration::from_secs(20));

    // The admin connection: require refuses (no retry) without an admin login; verify-full works.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let before = admin_logins(&servers.tls);
    let provider = PostgresNativeProvider::new("pg", settings(&servers.tls, "127.0.0.1", PostgresTls::new(SslMode::Require, None, None).unwrap())).unwrap();
    let e = runtime.block_on(provider.mint(&request())).unwrap_err();
    assert!(
        e.message.contains("sslmode require does not authenticate the server, so the broker only logs in with SCRAM-SHA-256-PLUS channel binding"),
        "{e:?}"
    );
    assert!(!e.retryable, "{e:?}");
    assert_eq!(admin_logins(&servers.tls), before, "require: the server saw an admin login");
    let verified = PostgresTls::new(SslMode::VerifyFull, Some(servers.ca.cert_path.clone()), None).unwrap();
    let provider = PostgresNativeProvider::new("pg", settings(&servers.tls, "127.0.0.1", verified)).unwrap();
    let lease = runtime.block_on(provider.mint(&request())).unwrap_or_else(|e| panic!("verify-full: {e}\n{}", servers.tls.log()));
    runtime.block_on(provider.revoke(&lease)).unwrap();
}

fn settings(pg: &Postgres, host: &str, tls: PostgresTls) -> PostgresNativeSettings {
    PostgresNativeSettings {
        host: host.into(),
        port: pg.port(),
        tls,
        database: DATABASE.into(),
        admin_user: SUPERUSER.into(),
        admin_password: Secret::new(pg.password.clone()),
        grants: vec!["SELECT ON public.orders".into()],
        member_of: vec![],
        ttl: Duration::from_secs(300),
        timeout: Duration::from_secs(10),
    }
}

fn request() -> MintRequest {
    MintRequest {
        identity: Identity { agent_id: "agent-7".into(), tenant: "acme".into(), labels: BTreeMap::new() },
        scope: Scope { service: "postgres".into(), region: None, permissions: vec![] },
        credential_scope: "postgres_native:pg".into(),
        ttl: Duration::from_secs(120),
        request_id: "req-1".into(),
    }
}

/// Admin connections of `credential-broker` in the server log: (authorized lines, of which over SSL).
fn admin_logins(pg: &Postgres) -> (usize, usize) {
    let log = pg.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&format!("connection authorized: user={SUPERUSER}")) && l.contains("credential-broker")).collect();
    (lines.len(), lines.iter().filter(|l| l.contains("SSL enabled")).count())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_connection_speaks_tls_as_sslmode_says() {
    let servers = tokio::task::spawn_blocking(Servers::start).await.unwrap();
    let ca = Some(servers.ca.cert_path.clone());
    let tls = |mode, root: Option<std::path::PathBuf>| PostgresTls::new(mode, root, None).unwrap();

    // verify-full with the server's CA, and require with no CA: the role is made over TLS (the
    // server takes no cleartext login anyway) and can log in.
    for (what, t) in [("verify-full", tls(SslMode::VerifyFull, ca.clone())), ("require", tls(SslMode::Require, None))] {
        let before = admin_logins(&servers.tls);
        let provider = PostgresNativeProvider::new("pg", settings(&servers.tls, "127.0.0.1", t)).unwrap();
        let lease = provider.mint(&request()).await.unwrap_or_else(|e| panic!("{what}: {e}\n{}", servers.tls.log()));
        let Credential::Password { username, password } = &lease.credential else { panic!("not a password") };
        let out = servers.tls.psql_as(username, password.expose(), DATABASE, "SELECT count(*) FROM orders");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2", "{what}: {}", String::from_utf8_lossy(&out.stderr));
        provider.revoke(&lease).await.unwrap();
        let after = admin_logins(&servers.tls);
        assert!(after.0 > before.0 && after.0 - before.0 == after.1 - before.1, "{what}: admin logins not all over TLS: {before:?} → {after:?}");
    }

    // The wrong CA, a name the certificate does not carry, a server without TLS: refused with
    // the reason, and no admin login happened.
    let refusals = [
        ("wrong CA", &servers.tls, "127.0.0.1", tls(SslMode::VerifyFull, Some(servers.other_ca.cert_path.clone())), "invalid peer certificate"),
        ("wrong name", &servers.tls, "127.0.0.2", tls(SslMode::VerifyFull, ca.clone()), "not valid for name"),
        ("no TLS", &servers.plain, "127.0.0.1", tls(SslMode::Require, None), "the server does not offer TLS but sslmode is require"),
    ];
    for (what, pg, host, t, expected) in refusals {
        let before = admin_logins(pg);
        let provider = PostgresNativeProvider::new("pg", settings(pg, host, t)).unwrap();
        let e = provider.mint(&request()).await.unwrap_err();
        assert!(e.message.contains(expected), "{what}: {e:?}");
        assert!(!e.retryable, "{what}: a TLS refusal is not worth retrying: {e:?}");
        assert_eq!(admin_logins(pg), before, "{what}: the server saw an admin login");
    }

    // disable: cleartext to the server without TLS.
    let provider = PostgresNativeProvider::new("pg", settings(&servers.plain, "127.0.0.1", PostgresTls::disabled())).unwrap();
    let lease = provider.mint(&request()).await.unwrap();
    provider.revoke(&lease).await.unwrap();
    let (logins, over_ssl) = admin_logins(&servers.plain);
    assert!(logins >= 2 && over_ssl == 0, "{logins} {over_ssl}");
}

const CONFIG: &str = r#"
identity: {agent_id: agent-1, tenant: acme}
routes: []
providers:
  pg:
    type: postgres_native
    host: HOST
    database: shop
    admin_user: broker_admin
    admin_password_file: /nonexistent
    grants: ["SELECT ON public.orders"]
    PROVIDER_TLS
databases:
  - name: shop
    listen: "127.0.0.1:0"
    upstream: "UPSTREAM"
    database: shop
    provider: pg
    DATABASE_TLS
policy: {file: Cargo.toml}
audit: {path: /tmp/audit.jsonl}
"#;

fn config(host: &str, provider_tls: &str, upstream: &str, database_tls: &str) -> Result<Config, Vec<ConfigProblem>> {
    let yaml = CONFIG.replace("HOST", host).replace("PROVIDER_TLS", provider_tls).replace("UPSTREAM", upstream).replace("DATABASE_TLS", database_tls);
    Config::from_yaml(&yaml, Path::new(env!("CARGO_MANIFEST_DIR")), &|_| None)
}

fn problems(result: Result<Config, Vec<ConfigProblem>>) -> Vec<String> {
    result.map(|_| Vec::new()).unwrap_or_else(|p| p.into_iter().map(|p| p.to_string()).collect())
}

#[test]
fn tls_settings_default_to_verify_full_and_problems_name_their_key() {
    // Nothing said: verify-full with the broker's upstream roots, for both, even off loopback.
    let c = config("db.internal", "", "db.internal:5432", "").unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(c.databases[0].tls.sslmode, SslMode::VerifyFull);
    assert!(c.databases[0].tls.client.is_some());
    let credential_broker::config::ProviderConfig::PostgresNative(pg) = &c.providers["pg"] else { panic!() };
    assert_eq!(pg.tls.sslmode, SslMode::VerifyFull);
    assert!(pg.tls.client.is_some());

    // disable is allowed for a database (a warning at start-up off loopback), and for the admin
    // connection on loopback only.
    let c = config("127.0.0.1", "sslmode: disable", "db.internal:5432", "sslmode: disable").unwrap_or_else(|p| panic!("{p:?}"));
    assert!(c.databases[0].tls.client.is_none());
    let p = problems(config("db.internal", "sslmode: disable", "db.internal:5432", ""));
    assert!(p.iter().any(|p| p.starts_with("providers.pg.host: ") && p.contains("sslmode disable")), "{p:?}");

    let p = problems(config("127.0.0.1", "sslmode: verify-ca", "127.0.0.1:5432", "sslmode: prefer"));
    assert!(p.contains(&"databases[0].sslmode: expected one of disable, require, verify-full (got \"prefer\")".to_string()), "{p:?}");
    assert!(p.iter().any(|p| p.starts_with("providers.pg.sslmode: expected one of disable, require, verify-full")), "{p:?}");

    let p = problems(config("127.0.0.1", "sslrootcert: /nonexistent/ca.pem", "127.0.0.1:5432", "sslrootcert: Cargo.toml"));
    assert!(p.iter().any(|p| p.starts_with("providers.pg.sslrootcert: cannot read /nonexistent/ca.pem")), "{p:?}");
    assert!(p.iter().any(|p| p.starts_with("databases[0].sslrootcert: ") && p.contains("holds no PEM certificate")), "{p:?}");

    let p = problems(config("127.0.0.1", "sslmode: require\n    sslrootcert: Cargo.toml", "127.0.0.1:5432", ""));
    assert!(p.iter().any(|p| p.starts_with("providers.pg.sslrootcert: only sslmode verify-full")), "{p:?}");
}
