//! The Postgres listener end to end: the real `psql` connects to the broker with no password, the
//! broker logs in upstream with a user minted for the session, and every statement is checked
//! against policy — a denied one gets SQLSTATE 42501 with the reason and the session goes on.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::broker::Broker;
use support::clients::{text, wait_output};
use support::postgres::{psql_command, Postgres, DATABASE, SUPERUSER};

const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "agents may open sessions on shop"} if {
    input.scope.action == "postgres:CONNECT"
}

decision := {"allow": true, "reason": "agents may read orders"} if {
    input.scope.action == "postgres:SELECT"
    input.scope.resource in {"postgres://127.0.0.1/shop/public.orders", "postgres://127.0.0.1/shop"}
}

decision := {"allow": false, "reason": "deleting orders needs a human"} if {
    input.scope.action == "postgres:DELETE"
}

decision := {"allow": true, "reason": "agents may export orders"} if {
    input.scope.action == "postgres:COPY_TO"
    input.scope.resource == "postgres://127.0.0.1/shop/public.orders"
}

decision := {"allow": true, "reason": "agents may load customers"} if {
    input.scope.action == "postgres:COPY_FROM"
    input.scope.resource == "postgres://127.0.0.1/shop/public.customers"
}
"#;

const ADMIN_TOKEN: &str = "admin-token-7c2e91d04b5a8f36";

struct Proxy {
    dir: tempfile::TempDir,
    pg: Postgres,
    broker: Broker,
}

impl Proxy {
    fn start() -> Proxy {
        Self::start_with(|yaml| yaml)
    }

    fn start_with(edit: impl Fn(String) -> String) -> Proxy {
        Self::start_with_policy(edit, POLICY)
    }

    fn start_with_policy(edit: impl Fn(String) -> String, policy: &str) -> Proxy {
        let pg = Postgres::start();
        pg.admin_sql(
            "CREATE TABLE orders (id int primary key, item text); INSERT INTO orders VALUES (1, 'book'), (2, 'lamp'); CREATE TABLE customers (id int)",
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin-password"), &pg.password).unwrap();
        std::fs::write(dir.path().join("policy.rego"), policy).unwrap();
        std::fs::write(dir.path().join("admin-token"), ADMIN_TOKEN).unwrap();
        let yaml = format!("{}admin: {{token_file: {}/admin-token}}\n", edit(config_yaml(dir.path(), &pg)), dir.path().display());
        let broker = Broker::start(dir.path(), &yaml, &[]);
        Proxy { dir, pg, broker }
    }

    /// The broker API with curl: (status, JSON answer).
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

    /// `psql -c SQL` through the broker, running in the background.
    fn spawn_psql(&self, sql: &str) -> std::process::Child {
        let addr = self.broker.addresses.databases["shop"];
        let mut cmd = psql_command();
        cmd.args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "-U", "agent", "-d", DATABASE, "-c", sql]);
        cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
    }

    /// Waits until the server runs `sql` for a session.
    fn wait_active(&self, sql: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.pg.admin_sql(&format!("SELECT count(*) FROM pg_stat_activity WHERE query = '{sql}' AND state = 'active'")) != "1" {
            assert!(Instant::now() < deadline, "{sql} never started:\n{}", self.broker.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The minted users' server sessions.
    fn minted_backends(&self) -> String {
        self.pg.admin_sql("SELECT count(*) FROM pg_stat_activity WHERE usename LIKE 'cb\\_agent%'")
    }

    /// `psql` against the broker's listener with no password anywhere; `script` runs as a file, so
    /// each statement is its own `Query` on one connection and an error does not stop the rest.
    fn psql(&self, script: &str) -> std::process::Output {
        let addr = self.broker.addresses.databases["shop"];
        let file = self.dir.path().join(format!("script-{}.sql", uuid::Uuid::new_v4().simple()));
        std::fs::write(&file, script).unwrap();
        let mut cmd = psql_command();
        cmd.args(["-v", "ON_ERROR_STOP=0", "-h", "127.0.0.1", "-p", &addr.port().to_string(), "-U", "agent", "-d", DATABASE, "-f"]).arg(&file);
        cmd.output().expect("running psql")
    }

    fn audit_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn minted_roles(&self) -> String {
        self.pg.admin_sql("SELECT string_agg(rolname, ',') FROM pg_roles WHERE rolname LIKE 'cb\\_agent%'")
    }
}

fn config_yaml(dir: &Path, pg: &Postgres) -> String {
    config_yaml_for_port(dir, pg.port())
}

fn config_yaml_for_port(dir: &Path, port: u16) -> String {
    format!(
        r#"
identity: {{agent_id: agent-7, tenant: acme}}
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
    grants: ["SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public"]
    ttl_seconds: 600
databases:
  - name: shop
    listen: "127.0.0.1:0"
    upstream: "127.0.0.1:{port}"
    database: {DATABASE}
    provider: pg
    sslmode: disable
policy: {{file: {dir}/policy.rego}}
credentials:
  retry: {{max_retries: 3, base_delay_ms: 20, max_delay_ms: 100}}
audit: {{path: {dir}/audit.jsonl}}
logging: {{format: json}}
"#,
        dir = dir.display(),
    )
}

#[test]
fn psql_without_a_password_reads_through_a_session_user_and_denied_statements_get_42501() {
    let proxy = Proxy::start();
    let out = proxy.psql(
        "\\set VERBOSITY verbose\nSELECT item FROM orders ORDER BY id;\nDELETE FROM orders;\nSELECT count(*) FROM customers;\nSET ROLE broker_admin;\nSELECT count(*) FROM orders;\n",
    );
    let (stdout, stderr) = text(&out);
    let broker_log = proxy.broker.log();
    assert_eq!(stdout.trim(), "book\nlamp\n2", "stdout: {stdout}\nstderr: {stderr}\nbroker log:\n{broker_log}");
    assert!(stderr.contains("ERROR:  42501: permission denied by credential-broker: deleting orders needs a human"), "{stderr}");
    assert!(stderr.contains("permission denied by credential-broker: no rule allows this request"), "{stderr}");
    assert!(stderr.matches("42501").count() == 3, "DELETE, SELECT on customers and SET ROLE each denied: {stderr}");
    assert!(stderr.contains("changes the session"), "{stderr}");
    // Nothing denied reached the server; the orders are all still there.
    assert_eq!(proxy.pg.admin_sql("SELECT count(*) FROM orders"), "2");
    let server_log = proxy.pg.log();
    assert!(!server_log.contains("DELETE FROM orders") && !server_log.contains("SET ROLE"), "a denied statement reached the server:\n{server_log}");

    // The upstream saw a user made for this session, and it is gone once the session ends.
    let records = proxy.audit_records();
    let issued: Vec<_> = records.iter().filter(|r| r["event"] == "issue").collect();
    assert_eq!(issued.len(), 1, "{records:?}");
    let role = issued[0]["details"]["role"].as_str().unwrap().to_string();
    assert!(role.starts_with("cb_agent_7_"), "{role}");
    assert!(server_log.contains(&format!("user={role}")), "the upstream session was not the minted user:\n{server_log}");
    let denied: Vec<_> = records.iter().filter(|r| r["event"] == "deny").collect();
    assert_eq!(denied.len(), 3, "{records:?}");
    assert!(denied.iter().any(|r| r["reason"] == "deleting orders needs a human" && r["scope"]["permissions"][0]["action"] == "postgres:DELETE"), "{denied:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.minted_roles().is_empty() {
        assert!(Instant::now() < deadline, "the session's user outlived the session: {}", proxy.minted_roles());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The session's end is on the record: its user revoked at the source, under the session's id.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ended = loop {
        let records = proxy.audit_records();
        if let Some(r) = records.iter().find(|r| r["event"] == "revoke").cloned() {
            break r;
        }
        assert!(Instant::now() < deadline, "no revoke record for the ended session: {records:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ended["reason"], "the database session ended; its user was revoked at the source", "{ended}");
    assert_eq!((&ended["lease_id"], &ended["details"]["session_id"]), (&issued[0]["lease_id"], &issued[0]["request_id"]), "{ended}");
    // Minted passwords are runs of exactly 48 hex digits (ids have 32, hashes 64). None in the
    // log, the audit or the server's statement log.
    assert!(has_hex_run_of(&format!("password '{}'", "ab12".repeat(12)), 48));
    let audit = std::fs::read_to_string(proxy.dir.path().join("audit.jsonl")).unwrap();
    for (name, text) in [("broker log", proxy.broker.log()), ("audit", audit), ("server log", proxy.pg.log())] {
        assert!(!has_hex_run_of(&text, 48), "a password-like value in the {name}:\n{text}");
    }
}

fn has_hex_run_of(text: &str, len: usize) -> bool {
    text.split(|c: char| !c.is_ascii_hexdigit()).any(|run| run.len() == len)
}

#[test]
fn unparseable_statements_are_denied_not_passed() {
    let proxy = Proxy::start();
    let out = proxy.psql("SELEKT * FROM orders;\nSELECT count(*) FROM orders;\n");
    let (stdout, stderr) = text(&out);
    assert_eq!(stdout.trim(), "2", "{stderr}");
    assert!(stderr.contains("permission denied by credential-broker") && stderr.contains("unparseable"), "{stderr}");
}

/// `pgbench -M prepared` speaks the extended protocol: each statement is a `Parse`, checked the same way.
#[test]
fn prepared_statements_are_checked_at_parse() {
    let proxy = Proxy::start();
    let addr = proxy.broker.addresses.databases["shop"];
    let pgbench = |script: &str| {
        let file = proxy.dir.path().join(format!("bench-{}.sql", uuid::Uuid::new_v4().simple()));
        std::fs::write(&file, script).unwrap();
        let mut cmd = std::process::Command::new(support::postgres::program("pgbench"));
        cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).env("PGPASSFILE", "/dev/null").env("PGSSLMODE", "disable");
        cmd.args(["-n", "-M", "prepared", "-t", "20", "-c", "2", "-h", "127.0.0.1", "-p", &addr.port().to_string(), "-U", "agent", "-f"])
            .arg(&file)
            .arg(DATABASE);
        cmd.output().expect("running pgbench")
    };
    let out = pgbench("SELECT count(*) FROM orders WHERE id > 0;\n");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}\nbroker log:\n{}", proxy.broker.log());
    assert!(stdout.contains("number of transactions actually processed: 40/40"), "{stdout}");
    let server_log = proxy.pg.log();
    assert!(server_log.contains("execute P_0: SELECT count(*) FROM orders"), "pgbench did not use prepared statements:\n{server_log}");

    let out = pgbench("DELETE FROM orders WHERE id = 1;\n");
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "the prepared DELETE went through: {stdout}");
    assert!(stderr.contains("permission denied by credential-broker: deleting orders needs a human"), "{stderr}");
    assert_eq!(proxy.pg.admin_sql("SELECT count(*) FROM orders"), "2");
}

/// The admin connection's server is down: psql gets a clear error after the retries, and nothing
/// is opened upstream without a minted user.
#[test]
fn no_credential_no_session() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin-password"), &pg.password).unwrap();
    std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
    // The provider points at a port nothing listens on; the listener's upstream is the real server.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yaml = config_yaml(dir.path(), &pg).replacen(&format!("port: {}", pg.port()), &format!("port: {closed}"), 1);
    let broker = Broker::start(dir.path(), &yaml, &[]);
    let addr = broker.addresses.databases["shop"];
    let mut cmd = psql_command();
    cmd.args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "-U", "agent", "-d", DATABASE, "-c", "SELECT 1"]);
    let out = cmd.output().unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("credential-broker: no database credential after 4 attempts"), "{stderr}");
    let log = broker.log();
    assert!(log.contains("Credential Minting Failure: provider pg failed 4 time(s); failing closed"), "no alert in the broker log:\n{log}");
    let server_log = pg.log();
    assert!(!server_log.contains("user=cb_agent") && !server_log.contains("user=agent"), "an agent session reached the server:\n{server_log}");
}

/// Opening a session is itself a policy decision (`postgres:CONNECT` on the database): without a
/// rule allowing it the agent gets FATAL 42501 with the reason, and no user is minted.
#[test]
fn a_session_the_policy_does_not_allow_mints_nothing() {
    let no_connect = POLICY.replace("input.scope.action == \"postgres:CONNECT\"", "input.scope.action == \"postgres:NEVER\"");
    assert_ne!(no_connect, POLICY);
    let proxy = Proxy::start_with_policy(|yaml| yaml, &no_connect);
    let out = proxy.psql("SELECT 1;\n");
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success() && stdout.trim().is_empty(), "{stdout}");
    assert!(
        stderr.contains("FATAL:  credential-broker: permission denied: opening a session on shop needs postgres:CONNECT: no rule allows this request"),
        "{stderr}"
    );
    let records = proxy.audit_records();
    assert!(records.iter().all(|r| r["event"] != "issue"), "a user was minted: {records:?}");
    let denied: Vec<_> = records.iter().filter(|r| r["event"] == "deny").collect();
    assert_eq!(denied.len(), 1, "{records:?}");
    assert_eq!(denied[0]["scope"]["permissions"][0]["action"], "postgres:CONNECT", "{records:?}");
    assert_eq!(proxy.minted_roles(), "", "no role may exist");
    assert!(!proxy.pg.log().contains("user=cb_agent"), "a session reached the server");
}

/// A connection that never finishes its startup does not hold a slot for ever: after
/// `limits.header_read_timeout_ms` the agent is told why and the connection is closed, and the
/// listener goes on serving.
#[test]
fn a_silent_startup_is_cut_off_and_the_listener_keeps_serving() {
    use std::io::{Read, Write};
    let proxy = Proxy::start_with(|yaml| format!("{yaml}limits: {{header_read_timeout_ms: 500}}\n"));
    let addr = proxy.broker.addresses.databases["shop"];
    let mut silent = std::net::TcpStream::connect(addr).unwrap();
    // Half a startup packet (a length promising more), then nothing.
    silent.write_all(&[0, 0, 0, 40, 0, 3]).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    silent.read_to_end(&mut answer).expect("the broker closed the connection");
    assert!(started.elapsed() < Duration::from_secs(5), "cut off only after {:?}", started.elapsed());
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with('E') && answer.contains("the agent did not finish its startup within 500ms"), "{answer:?}");
    let out = proxy.psql("SELECT count(*) FROM orders;\n");
    assert_eq!(text(&out).0.trim(), "2", "{:?}", text(&out));
}

/// One deadline for the whole startup, not one per read: an agent sending an `SSLRequest` every
/// 300 ms (each answered `N`, the listener has no TLS) is cut off once
/// `limits.header_read_timeout_ms` has passed since it connected.
#[test]
fn repeated_ssl_requests_do_not_stretch_the_startup_deadline() {
    use std::io::{Read, Write};
    let proxy = Proxy::start_with(|yaml| format!("{yaml}limits: {{header_read_timeout_ms: 1000}}\n"));
    let mut agent = std::net::TcpStream::connect(proxy.broker.addresses.databases["shop"]).unwrap();
    agent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ssl_request = [&8i32.to_be_bytes()[..], &80_877_103i32.to_be_bytes()].concat();
    let started = Instant::now();
    let mut answers = 0;
    let rest = loop {
        assert!(started.elapsed() < Duration::from_secs(8), "still served after {answers} SSLRequests");
        if agent.write_all(&ssl_request).is_err() {
            break Vec::new();
        }
        let mut answer = [0u8; 1];
        match agent.read(&mut answer) {
            Ok(1) if answer[0] == b'N' => answers += 1,
            Ok(1) => {
                let mut rest = answer.to_vec();
                let _ = agent.read_to_end(&mut rest);
                break rest;
            }
            // Closed (or reset: a request sent as the broker closed).
            _ => break Vec::new(),
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let took = started.elapsed();
    assert!(answers >= 2 && took < Duration::from_secs(4), "cut off after {answers} SSLRequests, {took:?}");
    let rest = String::from_utf8_lossy(&rest);
    assert!(rest.is_empty() || rest.contains("the agent did not finish its startup within 1s"), "{rest:?}");
    let out = proxy.psql("SELECT count(*) FROM orders;\n");
    assert_eq!(text(&out).0.trim(), "2", "{:?}", text(&out));
}

/// A `StartupMessage` for user agent on the test database, as sent on the wire.
fn startup_packet() -> Vec<u8> {
    let mut startup = 196_608i32.to_be_bytes().to_vec();
    for kv in ["user", "agent", "database", DATABASE] {
        startup.extend_from_slice(kv.as_bytes());
        startup.push(0);
    }
    startup.push(0);
    [&(startup.len() as i32 + 4).to_be_bytes()[..], &startup].concat()
}

/// A TCP relay to the server for the listener's upstream that holds the first connection until
/// told the server's port: (its port, "the broker connected", "go on to this port").
fn held_upstream() -> (u16, std::sync::mpsc::Receiver<()>, std::sync::mpsc::Sender<u16>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (connected_tx, connected) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel::<u16>();
    std::thread::spawn(move || {
        let (broker, _) = listener.accept().unwrap();
        let _ = connected_tx.send(());
        let Ok(pg_port) = go_rx.recv() else { return };
        let server = std::net::TcpStream::connect(("127.0.0.1", pg_port)).unwrap();
        let (mut from_broker, mut to_server) = (broker.try_clone().unwrap(), server.try_clone().unwrap());
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from_broker, &mut to_server);
            let _ = to_server.shutdown(std::net::Shutdown::Write);
        });
        let (mut from_server, mut to_broker) = (server, broker);
        let _ = std::io::copy(&mut from_server, &mut to_broker);
        let _ = to_broker.shutdown(std::net::Shutdown::Write);
    });
    (port, connected, go)
}

/// An agent that resets its connection after the startup, while the broker mints its user and
/// logs in upstream: `AuthenticationOk` cannot be written, the session never starts (nor is it
/// registered, so the API could not revoke it), and the minted user is dropped at once rather
/// than living until its TTL. To make the failing write certain, the listener's upstream is a
/// relay that holds the broker's login until the agent's socket has been closed with
/// `SO_LINGER 0` (an RST: the broker's next write fails instead of being buffered).
#[test]
fn a_user_minted_for_an_agent_gone_before_authentication_ok_is_revoked() {
    use std::io::Write;
    let (relay_port, connected, go) = held_upstream();
    let proxy = Proxy::start_with(|yaml| {
        yaml.lines()
            .map(|l| if l.starts_with("    upstream: ") { format!("    upstream: \"127.0.0.1:{relay_port}\"") } else { l.to_string() })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    });
    let agent = std::net::TcpStream::connect(proxy.broker.addresses.databases["shop"]).unwrap();
    (&agent).write_all(&startup_packet()).unwrap();
    connected.recv_timeout(Duration::from_secs(20)).unwrap_or_else(|e| panic!("the broker never logged in upstream ({e}):\n{}", proxy.broker.log()));
    let role = proxy.minted_roles();
    assert!(role.starts_with("cb_agent_7_"), "minted before the upstream login: {role:?}");
    socket2::SockRef::from(&agent).set_linger(Some(Duration::ZERO)).unwrap();
    drop(agent);
    go.send(proxy.pg.port()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.minted_roles().is_empty() {
        assert!(Instant::now() < deadline, "the user of a session that never started outlived it: {}\n{}", proxy.minted_roles(), proxy.broker.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = proxy.broker.log();
    assert!(log.contains("revoked the postgres user of a session that did not start"), "{log}");
    assert!(!log.contains("postgres session closed"), "the session started after all:\n{log}");
    let (_, body) = proxy.api("GET", "/v1/grants", None);
    assert_eq!(body["grants"], serde_json::json!([]));
}

/// An agent that stops reading while the server streams a large result (the broker's writes to
/// it block) does not keep an ended session alive: revoked through the API, the session closes
/// within a few seconds and the user is gone. With small rows the broker tries its FATAL and
/// gives up on it after a short while; with rows larger than its buffer it was cut off in the
/// middle of one and closes without (the FATAL would be read as the rest of the row).
#[test]
fn a_session_ends_even_when_its_agent_stopped_reading() {
    use std::io::Write;
    let allow_all = "package credential_broker\nimport rego.v1\ndecision := {\"allow\": true, \"reason\": \"test\"}\n";
    for (sql, said) in [
        ("SELECT repeat(chr(120), 100) FROM generate_series(1, 20000) a, generate_series(1, 1000) b", "the agent did not take the session's last message"),
        ("SELECT repeat(chr(120), 1000000) FROM generate_series(1, 2000)", "closing without a FATAL: the agent was sent part of a message"),
    ] {
        let proxy = Proxy::start_with_policy(|yaml| yaml, allow_all);
        let mut agent = std::net::TcpStream::connect(proxy.broker.addresses.databases["shop"]).unwrap();
        agent.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        agent.write_all(&startup_packet()).unwrap();
        let login = until_ready(&mut agent);
        assert_eq!(login[0], (b'R', vec![0, 0, 0, 0]), "{login:?}");
        agent.write_all(&frame(b'Q', format!("{sql}\0").as_bytes())).unwrap();
        // The server blocked writing to the broker: the broker is blocked writing to the agent.
        let deadline = Instant::now() + Duration::from_secs(20);
        while proxy.pg.admin_sql("SELECT count(*) FROM pg_stat_activity WHERE usename LIKE 'cb\\_agent%' AND wait_event = 'ClientWrite'") != "1" {
            assert!(Instant::now() < deadline, "{sql} never blocked:\n{}", proxy.broker.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        // The server also waits when the broker is merely slow (a loaded machine); what matters is
        // that the broker itself is blocked: the agent's receive queue full and no longer growing.
        let port = agent.local_addr().unwrap().port();
        let mut last = receive_queue(port);
        loop {
            std::thread::sleep(Duration::from_millis(300));
            let now = receive_queue(port);
            if now > 0 && now == last {
                break;
            }
            assert!(Instant::now() < deadline, "the agent's receive queue never filled up ({now} bytes)");
            last = now;
        }
        let started = Instant::now();
        let (status, body) = proxy.api("POST", "/v1/grants/revoke", Some(r#"{"agent_id": "agent-7"}"#));
        assert_eq!((status, &body["count"]), (200, &serde_json::json!(1)), "{body:#}");
        assert!(proxy.broker.wait_for_log("postgres session closed", Duration::from_secs(15)), "the session never closed:\n{}", proxy.broker.log());
        assert!(started.elapsed() < Duration::from_secs(15), "{:?}", started.elapsed());
        assert!(proxy.broker.log().contains(said), "{sql}: expected {said:?}:\n{}", proxy.broker.log());
        assert_eq!(proxy.minted_roles(), "");
        let deadline = Instant::now() + Duration::from_secs(10);
        while proxy.minted_backends() != "0" {
            assert!(Instant::now() < deadline, "a backend of the revoked user is left");
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(agent);
    }
}

/// Bytes waiting unread in the receive queue of this machine's IPv4 TCP socket bound to `port`
/// (from /proc/net/tcp: `local_address` `0100007F:PORT`, `tx_queue:rx_queue` in hex).
fn receive_queue(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(1) == Some(&local.as_str()))
        .and_then(|f| f.get(4).and_then(|q| q.split(':').nth(1)).and_then(|rx| u64::from_str_radix(rx, 16).ok()))
        .unwrap_or(0)
}

/// Ctrl-C in psql sends a `CancelRequest` to the broker, which passes it to the server.
#[test]
fn a_cancel_request_reaches_the_server() {
    let proxy = Proxy::start();
    let addr = proxy.broker.addresses.databases["shop"];
    let mut cmd = psql_command();
    cmd.args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "-U", "agent", "-d", DATABASE, "-c", "SELECT pg_sleep(60)"]);
    let child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(20);
    while proxy.pg.admin_sql("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'") != "1" {
        assert!(Instant::now() < deadline, "the query never started:\n{}", proxy.broker.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let (_, stderr) = text(&out);
    assert!(stderr.contains("canceling statement due to user request"), "{stderr}\nbroker log:\n{}", proxy.broker.log());
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// A session lives no longer than its user: at the expiry the broker ends it with a FATAL
/// and drops the user, so it can neither go on nor log in again.
#[test]
fn a_session_ends_when_its_user_expires() {
    let proxy = Proxy::start_with(|yaml| yaml.replace("ttl_seconds: 600", "ttl_seconds: 30"));
    let addr = proxy.broker.addresses.databases["shop"];
    let mut cmd = psql_command();
    cmd.args(["-h", "127.0.0.1", "-p", &addr.port().to_string(), "-U", "agent", "-d", DATABASE, "-c", "SELECT pg_sleep(120)"]);
    let started = Instant::now();
    let out = cmd.output().unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("the session's database credential expired"), "{stderr}\nbroker log:\n{}", proxy.broker.log());
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !proxy.minted_roles().is_empty() {
        assert!(Instant::now() < deadline, "the expired user was not dropped: {}", proxy.minted_roles());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(proxy.pg.admin_sql("SELECT count(*) FROM pg_stat_activity WHERE usename LIKE 'cb\\_agent%'"), "0");
}

/// `explain --sql` answers as the listener would, without a server: tables found anywhere count.
#[test]
fn explain_sql_prints_each_statements_scope_and_decision() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
    let yaml = config_yaml_for_port(dir.path(), 5432);
    std::fs::write(dir.path().join("config.yaml"), yaml).unwrap();
    let config = dir.path().join("config.yaml");
    let sql = "SELECT * FROM orders; WITH c AS (SELECT id FROM customers) SELECT * FROM orders JOIN c USING (id); DELETE FROM orders; SET ROLE postgres";
    let out = support::broker::cli(&["explain", "--config", config.to_str().unwrap(), "--sql", sql, "--agent", "agent-9"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["database"], "shop");
    assert_eq!(v["agent"]["agent_id"], "agent-9");
    assert_eq!(v["allow"], false);
    let statements = v["statements"].as_array().unwrap();
    assert_eq!(statements.len(), 4, "{v:#}");
    assert_eq!(statements[0]["decision"]["allow"], true);
    assert_eq!(statements[0]["scope"]["permissions"][0]["resource"], "postgres://127.0.0.1/shop/public.orders");
    assert_eq!(statements[1]["decision"]["allow"], false, "the CTE reads customers: {v:#}");
    assert_eq!(statements[2]["decision"]["reason"], "deleting orders needs a human");
    assert!(statements[3]["decision"]["reason"].as_str().unwrap().contains("changes the session"), "{v:#}");

    let out = support::broker::cli(&["explain", "--config", config.to_str().unwrap(), "--sql", "SELEKT 1"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["statements"][0]["decision"]["reason"].as_str().unwrap().contains("unparseable"), "{v:#}");
}

/// Per-connection identities (jwt, mtls) are served by the listener (tests/postgres_identity.rs):
/// such a config is accepted, and the listener must still be on loopback (a jwt is sent there as a
/// cleartext password).
#[test]
fn databases_take_per_connection_identity_modes_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
    std::fs::write(dir.path().join("jwks.json"), r#"{"keys": []}"#).unwrap();
    let jwt = format!(
        "identity:\n  mode: jwt\n  jwt: {{jwks_file: {}/jwks.json, issuer: \"https://issuer.test\", audience: broker, tenant_claim: tenant}}",
        dir.path().display()
    );
    let yaml = config_yaml_for_port(dir.path(), 5432).replace("identity: {agent_id: agent-7, tenant: acme}", &jwt);
    std::fs::write(dir.path().join("config.yaml"), &yaml).unwrap();
    let out = support::broker::cli(&["check-config", dir.path().join("config.yaml").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let exposed = yaml.replace("    listen: \"127.0.0.1:0\"\n    upstream", "    listen: \"0.0.0.0:0\"\n    upstream");
    assert_ne!(exposed, yaml);
    std::fs::write(dir.path().join("config.yaml"), exposed).unwrap();
    let out = support::broker::cli(&["check-config", dir.path().join("config.yaml").to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("databases[0].listen") && stderr.contains("must be on loopback"), "{stderr}");
}

/// pgbench through the broker against the same server directly, as tps ratios (select-only and
/// TPC-B-like; 1, 8 and 32 clients; a new session user per pgbench connection). Not a pass/fail
/// test: `cargo test --release --test postgres_proxy -- --ignored --nocapture pgbench`.
#[test]
#[ignore]
fn pgbench_through_the_broker_vs_direct() {
    let allow_all = "package credential_broker\nimport rego.v1\ndecision := {\"allow\": true, \"reason\": \"bench\"}\n";
    let proxy = Proxy::start_with_policy(|yaml| yaml, allow_all);
    let pg = &proxy.pg;
    let run = |port: u16, user: &str, password: &str, args: &[&str]| -> f64 {
        let mut cmd = std::process::Command::new(support::postgres::program("pgbench"));
        cmd.env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default()).env("PGPASSFILE", "/dev/null").env("PGSSLMODE", "disable");
        if !password.is_empty() {
            cmd.env("PGPASSWORD", password);
        }
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", user]).args(args).arg(DATABASE);
        let out = cmd.output().unwrap();
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "pgbench {args:?}: {stdout}\n{stderr}");
        stdout.lines().find_map(|l| l.strip_prefix("tps = ")).and_then(|l| l.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0.0)
    };
    run(pg.port(), SUPERUSER, &pg.password, &["-i", "-q", "-s", "4"]);
    let broker_port = proxy.broker.addresses.databases["shop"].port();
    for (mode, extra) in [("select-only", &["-S"][..]), ("tpc-b-like", &[][..])] {
        for clients in ["1", "8", "32"] {
            let args: Vec<&str> = [&["-n", "-T", "5", "-c", clients, "-j", clients, "-M", "prepared"][..], extra].concat();
            let direct = run(pg.port(), SUPERUSER, &pg.password, &args);
            let through = run(broker_port, "agent", "", &args);
            println!("{mode:12} clients={clients:>2} direct={direct:>9.1} tps broker={through:>9.1} tps ratio={:.2}", through / direct);
        }
    }
}

/// After a revoke the user is gone, no backend of it is left, and the session did not revoke a
/// second time (one `DROP ROLE` in the server's statement log).
fn assert_revoked_at_the_source(proxy: &Proxy, role: &str) {
    assert_eq!(proxy.minted_roles(), "", "the revoked user is still there");
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.minted_backends() != "0" {
        assert!(Instant::now() < deadline, "a backend of the revoked user is left");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Once the session is closed it has decided whether to revoke (it must not: the API did).
    assert!(proxy.broker.wait_for_log("postgres session closed", Duration::from_secs(10)), "the session never closed:\n{}", proxy.broker.log());
    let drops = proxy.pg.log().matches(&format!("DROP ROLE \"{role}\"")).count();
    assert_eq!(drops, 1, "the role was dropped {drops} times:\n{}", proxy.broker.log());
}

fn issued_role(proxy: &Proxy) -> (String, String) {
    let records = proxy.audit_records();
    let issued: Vec<_> = records.iter().filter(|r| r["event"] == "issue").collect();
    assert_eq!(issued.len(), 1, "{records:?}");
    (issued[0]["lease_id"].as_str().unwrap().to_string(), issued[0]["details"]["role"].as_str().unwrap().to_string())
}

/// A database session's lease is a grant: `GET /v1/grants` lists it with its database and
/// expiry; revoking it by id ends the agent's connection at once (FATAL 57P01 with the reason,
/// not after the 30 s statement), drops the user and its backends, is audited once; a second
/// revoke of the id is a 404.
#[test]
fn a_database_session_is_a_grant_and_revoking_it_ends_the_session() {
    let proxy = Proxy::start();
    let child = proxy.spawn_psql("SELECT pg_sleep(30)");
    proxy.wait_active("SELECT pg_sleep(30)");
    let (status, body) = proxy.api("GET", "/v1/grants", None);
    assert_eq!(status, 200, "{body:#}");
    let grants = body["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "{body:#}");
    let g = &grants[0];
    let (lease_id, role) = issued_role(&proxy);
    assert_eq!((g["id"].as_str(), g["kind"].as_str(), g["database"].as_str()), (Some(lease_id.as_str()), Some("database_session"), Some("shop")), "{g:#}");
    assert_eq!((g["provider"].as_str(), g["agent_id"].as_str(), g["tenant"].as_str()), (Some("pg"), Some("agent-7"), Some("acme")), "{g:#}");
    assert!(g["session_id"].as_str().unwrap().starts_with("pgs-"), "{g:#}");
    assert_eq!(g["scope"]["permissions"][0]["action"], "postgres:CONNECT", "{g:#}");
    let left = g["expires_in_seconds"].as_u64().unwrap();
    assert!((500..=600).contains(&left), "{g:#}");
    assert!(g["expires_at"].as_str().unwrap().ends_with('Z'), "{g:#}");

    let metrics = String::from_utf8_lossy(&support::clients::curl(&["--noproxy", "*", &format!("{}/metrics", proxy.broker.admin_url())]).stdout).into_owned();
    assert!(metrics.lines().any(|l| l == "credential_broker_database_sessions 1"), "{metrics}");

    let started = Instant::now();
    let (status, body) = proxy.api("POST", &format!("/v1/grants/{lease_id}/revoke"), None);
    assert_eq!(status, 200, "{body:#}\n{}", proxy.broker.log());
    assert_eq!(body["count"], 1, "{body:#}");
    assert_eq!((body["revoked"][0]["kind"].as_str(), body["revoked"][0]["provider_revoked"].as_bool()), (Some("database_session"), Some(true)), "{body:#}");
    let out = wait_output(child, Duration::from_secs(10));
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(stderr.contains("the broker revoked the session's database credential"), "{stderr}\n{}", proxy.broker.log());
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_revoked_at_the_source(&proxy, &role);

    let revokes: Vec<_> = proxy.audit_records().into_iter().filter(|r| r["event"] == "revoke").collect();
    assert_eq!(revokes.len(), 1, "{revokes:?}");
    assert_eq!((revokes[0]["lease_id"].as_str(), revokes[0]["route"].as_str()), (Some(lease_id.as_str()), Some("database:shop")), "{revokes:?}");
    assert_eq!(revokes[0]["details"]["session_id"], g["session_id"]);
    let (_, body) = proxy.api("GET", "/v1/grants", None);
    assert_eq!(body["grants"], serde_json::json!([]));
    let (status, body) = proxy.api("POST", &format!("/v1/grants/{lease_id}/revoke"), None);
    assert_eq!(status, 404, "{body:#}");
}

/// The emergency button by filter: a filter naming another agent leaves the session alone; one
/// naming this agent ends it the same way.
#[test]
fn revoking_by_agent_ends_that_agents_database_sessions() {
    let proxy = Proxy::start();
    let child = proxy.spawn_psql("SELECT pg_sleep(30)");
    proxy.wait_active("SELECT pg_sleep(30)");
    let (status, body) = proxy.api("POST", "/v1/grants/revoke", Some(r#"{"agent_id": "agent-8"}"#));
    assert_eq!((status, &body["count"]), (200, &serde_json::json!(0)), "{body:#}");
    assert_eq!(proxy.minted_backends(), "1");

    let (_, role) = issued_role(&proxy);
    let started = Instant::now();
    let (status, body) = proxy.api("POST", "/v1/grants/revoke", Some(r#"{"agent_id": "agent-7"}"#));
    assert_eq!((status, &body["count"]), (200, &serde_json::json!(1)), "{body:#}");
    let out = wait_output(child, Duration::from_secs(10));
    let (_, stderr) = text(&out);
    assert!(stderr.contains("the broker revoked the session's database credential"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_revoked_at_the_source(&proxy, &role);
    assert_eq!(proxy.audit_records().iter().filter(|r| r["event"] == "revoke").count(), 1);
}

/// A protocol 3.0 message: tag, length, body.
fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    [&[tag][..], &(body.len() as i32 + 4).to_be_bytes(), body].concat()
}

/// The server's messages up to and including `ReadyForQuery`.
fn until_ready(s: &mut std::net::TcpStream) -> Vec<(u8, Vec<u8>)> {
    use std::io::Read;
    let mut got = Vec::new();
    loop {
        let mut head = [0u8; 5];
        s.read_exact(&mut head).unwrap_or_else(|e| panic!("after {got:?}: {e}"));
        let mut body = vec![0u8; i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize - 4];
        s.read_exact(&mut body).unwrap();
        got.push((head[0], body));
        if head[0] == b'Z' {
            return got;
        }
    }
}

/// A fast-path `FunctionCall` (psql and tokio-postgres cannot send one: raw protocol bytes here)
/// is denied in band with 42501 and audited; the session stays usable.
#[test]
fn fast_path_function_calls_are_denied_in_band() {
    use std::io::Write;
    let proxy = Proxy::start();
    let mut s = std::net::TcpStream::connect(proxy.broker.addresses.databases["shop"]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut startup = 196_608i32.to_be_bytes().to_vec();
    for kv in ["user", "agent", "database", DATABASE] {
        startup.extend_from_slice(kv.as_bytes());
        startup.push(0);
    }
    startup.push(0);
    s.write_all(&[&(startup.len() as i32 + 4).to_be_bytes()[..], &startup].concat()).unwrap();
    let login = until_ready(&mut s);
    assert_eq!(login[0], (b'R', vec![0, 0, 0, 0]), "{login:?}");

    // FunctionCall: now() (OID 1299), no argument format codes, no arguments, text result.
    let mut call = 1299i32.to_be_bytes().to_vec();
    call.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    s.write_all(&frame(b'F', &call)).unwrap();
    let answer = until_ready(&mut s);
    let tags: Vec<char> = answer.iter().map(|(t, _)| *t as char).collect();
    assert_eq!(tags, ['E', 'Z'], "{answer:?}");
    let error = String::from_utf8_lossy(&answer[0].1).into_owned();
    assert!(error.contains("C42501\0"), "{error:?}");
    assert!(error.contains("permission denied by credential-broker: fast-path function calls are not allowed through the broker"), "{error:?}");
    assert_eq!(answer[1].1, b"I", "the session is idle, not in a failed transaction");

    // Still usable.
    s.write_all(&frame(b'Q', b"SELECT count(*) FROM orders\0")).unwrap();
    let answer = until_ready(&mut s);
    let row = answer.iter().find(|(t, _)| *t == b'D').unwrap_or_else(|| panic!("{answer:?}"));
    assert!(row.1.ends_with(b"2"), "{answer:?}");
    s.write_all(&frame(b'X', b"")).unwrap();

    let denied: Vec<_> = proxy.audit_records().into_iter().filter(|r| r["event"] == "deny").collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["reason"], "fast-path function calls are not allowed through the broker");
    assert!(!proxy.pg.log().contains("fastpath function call"), "the call reached the server:\n{}", proxy.pg.log());
}

/// `COPY` is a statement like any other: `COPY orders TO STDOUT` (allowed) streams its rows,
/// `COPY customers FROM STDIN` (allowed) takes the agent's rows, `COPY orders FROM STDIN` and
/// `COPY customers TO STDOUT` (no rule) are denied with 42501 before any data moves.
#[test]
fn copy_is_checked_by_policy_and_its_data_flows() {
    let proxy = Proxy::start();
    let rows_in = proxy.dir.path().join("customers.txt");
    std::fs::write(&rows_in, "10\n11\n12\n").unwrap();
    let bad_rows = proxy.dir.path().join("orders.txt");
    std::fs::write(&bad_rows, "3\tsofa\n").unwrap();
    let script = format!(
        "\\copy orders to stdout\n\\copy customers from '{}'\n\\copy orders from '{}'\n\\copy customers to stdout\nSELECT count(*) FROM orders;\n",
        rows_in.display(),
        bad_rows.display()
    );
    let out = proxy.psql(&script);
    let (stdout, stderr) = text(&out);
    assert_eq!(stdout.trim(), "1\tbook\n2\tlamp\nCOPY 3\n2", "stdout: {stdout}\nstderr: {stderr}\nbroker log:\n{}", proxy.broker.log());
    assert_eq!(stderr.matches("permission denied by credential-broker: no rule allows this request").count(), 2, "{stderr}");
    assert_eq!(proxy.pg.admin_sql("SELECT string_agg(id::text, ',' ORDER BY id) FROM customers"), "10,11,12");
    assert_eq!(proxy.pg.admin_sql("SELECT count(*) FROM orders"), "2");
    let denied: Vec<_> = proxy.audit_records().into_iter().filter(|r| r["event"] == "deny").collect();
    let actions: Vec<_> = denied.iter().map(|r| r["scope"]["permissions"][0]["action"].as_str().unwrap_or("").to_string()).collect();
    assert_eq!(actions, ["postgres:COPY_FROM", "postgres:COPY_TO"], "{denied:?}");
}
