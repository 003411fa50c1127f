//! SQL containment end to end: the tricks an agent tries to run more than the policy allows, with
//! the real `psql` through the broker's Postgres listener against a real PostgreSQL. The policy
//! allows opening a session and reading `orders`, nothing else. Each trick must be refused with
//! SQLSTATE 42501 (or a FATAL at startup) naming the reason, leave `orders` untouched (checked on
//! the server directly, not through the broker), and leave a `deny` record naming the scope that
//! was refused.

mod support;

use std::path::Path;
use std::process::Output;

use support::broker::Broker;
use support::clients::text;
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
    input.scope.resource == "postgres://127.0.0.1/shop/public.orders"
}
"#;

const ORDERS: &str = "1|book\n2|lamp";

struct Db {
    dir: tempfile::TempDir,
    pg: Postgres,
    broker: Broker,
}

impl Db {
    fn start() -> Db {
        let pg = Postgres::start();
        pg.admin_sql("CREATE TABLE orders (id int primary key, item text); INSERT INTO orders VALUES (1, 'book'), (2, 'lamp')");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("admin-password"), &pg.password).unwrap();
        std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
        let broker = Broker::start(dir.path(), &config_yaml(dir.path(), pg.port()), &[]);
        Db { dir, pg, broker }
    }

    /// `psql -c SQL` through the broker (the whole string is one `Query`), with extra environment.
    fn psql(&self, sql: &str, env: &[(&str, &str)]) -> Output {
        let port = self.broker.addresses.databases["shop"].port().to_string();
        let mut cmd = psql_command();
        cmd.args(["-h", "127.0.0.1", "-p", &port, "-U", "agent", "-d", DATABASE, "-c", sql]).envs(env.iter().copied());
        cmd.output().expect("running psql")
    }

    /// The table as the server has it, read directly.
    fn orders(&self) -> String {
        self.pg.admin_sql("SELECT id, item FROM orders ORDER BY id")
    }

    fn audit_records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    /// Runs `sql`, which must be refused with `reason` (SQLSTATE 42501) and leave a deny record with
    /// a permission of `action` (none: the statement could not be classified, so no scope).
    fn assert_denied(&self, sql: &str, reason: &str, action: Option<&str>) {
        let before = self.audit_records().len();
        let out = self.psql(sql, &[]);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success(), "{sql}: allowed:\n{stdout}");
        assert!(stderr.contains("permission denied by credential-broker:") && stderr.contains(reason), "{sql}: {stderr}\n{}", self.broker.log());
        assert_eq!(self.orders(), ORDERS, "{sql}: orders changed");
        let records = self.audit_records();
        let deny = records[before..].iter().find(|r| r["event"] == "deny").unwrap_or_else(|| panic!("{sql}: no deny record in {:#?}", &records[before..]));
        assert!(deny["reason"].as_str().unwrap().contains(reason), "{sql}: {deny}");
        assert_eq!((deny["agent_id"].as_str(), deny["route"].as_str()), (Some("agent-7"), Some("database:shop")), "{deny}");
        match action {
            Some(action) => {
                let permissions = deny["scope"]["permissions"].as_array().unwrap_or_else(|| panic!("{sql}: no scope in {deny}"));
                assert!(permissions.iter().any(|p| p["action"] == action), "{sql}: {action} is not in {deny}");
            }
            None => assert!(deny["scope"].is_null(), "{sql}: {deny}"),
        }
    }

    /// psql with `env` must fail at startup with a FATAL naming `reason`, with a deny record
    /// naming `action` on `resource` and no user minted.
    fn assert_refused_at_startup(&self, env: &[(&str, &str)], reason: &str, action: &str, resource: &str) {
        let before = self.audit_records().len();
        let out = self.psql("SELECT * FROM orders", env);
        let (stdout, stderr) = text(&out);
        assert!(!out.status.success() && stdout.is_empty(), "{env:?}: the session started:\n{stdout}");
        assert!(stderr.contains("FATAL") && stderr.contains(reason), "{env:?}: {stderr}");
        let records = self.audit_records();
        let new = &records[before..];
        assert!(!new.iter().any(|r| r["event"] == "issue"), "{env:?}: a user was minted: {new:#?}");
        let deny = new.iter().find(|r| r["event"] == "deny").unwrap_or_else(|| panic!("{env:?}: no deny record in {new:#?}"));
        assert_eq!(
            (deny["scope"]["permissions"][0]["action"].as_str(), deny["scope"]["permissions"][0]["resource"].as_str()),
            (Some(action), Some(resource)),
            "{deny}"
        );
    }
}

fn config_yaml(dir: &Path, port: u16) -> String {
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
audit: {{path: {dir}/audit.jsonl}}
logging: {{format: json}}
"#,
        dir = dir.display(),
    )
}

const NO_RULE: &str = "no rule allows this request";
const SESSION: &str = "is not allowed through the broker";

#[test]
fn sql_tricks_that_hide_a_write_are_denied_and_the_table_is_unchanged() {
    let db = Db::start();
    // What the policy allows goes through: the baseline the denials are measured against.
    let (stdout, stderr) = text(&db.psql("SELECT id, item FROM orders ORDER BY id", &[]));
    assert_eq!(stdout.trim(), ORDERS, "{stderr}\n{}", db.broker.log());

    let delete = Some("postgres:DELETE");
    for sql in [
        // A data-modifying CTE under a SELECT.
        "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
        // A second statement in the same Query.
        "SELECT * FROM orders; DELETE FROM orders",
        // Dollar quotes: a `;` inside is text, the statement after is real; nested tags too.
        "SELECT $x$;$x$ FROM orders; DELETE FROM orders",
        "SELECT $a$ $b$ ; $b$ $a$ FROM orders; DELETE FROM orders",
        // Comments hiding a statement boundary, or a verb.
        "SELECT * FROM orders /* ; */ ; DELETE FROM orders",
        "SELECT * FROM orders -- ; harmless\n; DELETE FROM orders",
        "/* SELECT * FROM orders */ DELETE FROM orders",
        // With standard_conforming_strings on (which the broker holds the server to), `\` in
        // '…' is a character: the literal ends at `\'` and the DELETE is a statement.
        r"SELECT 'a\' FROM orders; DELETE FROM orders; --'",
    ] {
        db.assert_denied(sql, NO_RULE, delete);
    }

    for (sql, action) in [
        ("SET ROLE broker_admin", "postgres:SET_ROLE"),
        ("SET SESSION AUTHORIZATION broker_admin", "postgres:SET_SESSION_AUTHORIZATION"),
        ("COPY orders TO PROGRAM 'touch /tmp/cb-containment-copy'", "postgres:COPY_PROGRAM"),
        ("COPY orders FROM PROGRAM 'echo 3,pwned'", "postgres:COPY_PROGRAM"),
        ("DO $$ BEGIN DELETE FROM orders; END $$", "postgres:DO"),
        ("CREATE FUNCTION wipe() RETURNS void LANGUAGE sql SECURITY DEFINER AS $$ DELETE FROM orders $$", "postgres:SECURITY_DEFINER"),
    ] {
        db.assert_denied(sql, SESSION, Some(action));
    }
    // Other servers and SQL-as-a-string: calls the policy must name, so denied here.
    db.assert_denied("SELECT dblink_exec('dbname=shop', 'DELETE FROM orders')", NO_RULE, Some("postgres:EXECUTE"));
    db.assert_denied("SELECT * FROM dblink('dbname=shop', 'DELETE FROM orders RETURNING id') AS t(id int)", NO_RULE, Some("postgres:EXECUTE"));
    db.assert_denied("CREATE EXTENSION postgres_fdw", NO_RULE, Some("postgres:CREATE_EXTENSION"));
    // Not classified at all: refused, never guessed.
    db.assert_denied("CREATE SERVER evil FOREIGN DATA WRAPPER postgres_fdw OPTIONS (dbname 'shop')", "unclassified statement", None);

    // An escaped quote in E'…' keeps the literal open, as on the server: one SELECT, allowed, and
    // what looked like a statement is just text.
    let out = db.psql(r"SELECT E'\'; DROP TABLE orders; --' AS s FROM orders WHERE id = 1", &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(stdout.trim(), "'; DROP TABLE orders; --", "{stderr}");
    assert_eq!(db.orders(), ORDERS);

    // Nothing denied reached the server: the stand-in statements did, not these.
    let server_log = db.pg.log();
    for text in ["DELETE FROM orders", "PROGRAM", "SET ROLE", "SESSION AUTHORIZATION", "dblink", "SECURITY DEFINER", "postgres_fdw"] {
        assert!(!server_log.contains(text), "{text} reached the server:\n{server_log}");
    }
    assert!(!Path::new("/tmp/cb-containment-copy").exists());
}

#[test]
fn settings_that_change_how_the_server_reads_sql_are_denied_however_they_are_asked_for() {
    let db = Db::start();
    let lexing = Some("postgres:SET_LEXING");
    for sql in [
        "SET standard_conforming_strings = off",
        "SET LOCAL standard_conforming_strings TO 'off'",
        "SELECT set_config('standard_conforming_strings', 'off', false) FROM orders",
        "RESET standard_conforming_strings",
        "SET client_encoding = 'SJIS'",
        "SET NAMES 'BIG5'",
        "SELECT set_config('client_encoding', 'GBK', false) FROM orders",
        "SET backslash_quote = on",
        // With the setting changed first in the same Query, the next literal would end early.
        r"SET standard_conforming_strings = off; SELECT 'a\'; DELETE FROM orders; --' FROM orders",
    ] {
        db.assert_denied(sql, SESSION, lexing);
    }
    let server_log = db.pg.log();
    for text in ["standard_conforming_strings", "SJIS", "BIG5", "GBK", "backslash_quote"] {
        assert!(!server_log.contains(text), "{text} reached the server:\n{server_log}");
    }

    // The same settings in the startup packet: the session is refused before a user is minted.
    let scs = "postgres://127.0.0.1/shop/setting:standard_conforming_strings";
    let encoding = "postgres://127.0.0.1/shop/setting:client_encoding";
    db.assert_refused_at_startup(&[("PGOPTIONS", "-c standard_conforming_strings=off")], "standard_conforming_strings=off", "postgres:SET_LEXING", scs);
    db.assert_refused_at_startup(&[("PGOPTIONS", "--standard-conforming-strings=off")], "standard_conforming_strings=off", "postgres:SET_LEXING", scs);
    db.assert_refused_at_startup(&[("PGCLIENTENCODING", "SJIS")], "client_encoding=SJIS", "postgres:SET_LEXING", encoding);
    db.assert_refused_at_startup(&[("PGOPTIONS", "-c role=broker_admin")], "role=broker_admin", "postgres:SET_ROLE", "postgres://127.0.0.1/shop/setting:role");

    // A normal UTF8 client still works; and an unset encoding is pinned to UTF8.
    for env in [&[("PGCLIENTENCODING", "UTF8")][..], &[]] {
        let (stdout, stderr) = text(&db.psql("SELECT current_setting('client_encoding') FROM orders WHERE id = 1", env));
        assert_eq!(stdout.trim(), "UTF8", "{env:?}: {stderr}");
    }
    assert_eq!(db.orders(), ORDERS);

    // A server that reads SQL differently (here the database's own setting, as `ALTER DATABASE`
    // or the server's configuration would leave it) reports so at login: the session is ended
    // before the agent can send a query, and the end is audited.
    db.pg.admin_sql("ALTER DATABASE shop SET standard_conforming_strings TO false");
    let before = db.audit_records().len();
    let (stdout, stderr) = text(&db.psql(r"SELECT 'a\' FROM orders", &[]));
    assert!(stdout.is_empty() && stderr.contains("the server changed how it reads SQL text"), "{stdout}\n{stderr}\n{}", db.broker.log());
    let records = db.audit_records();
    let deny = records[before..].iter().find(|r| r["event"] == "deny").unwrap_or_else(|| panic!("no deny record: {:#?}", &records[before..]));
    assert!(deny["reason"].as_str().unwrap().contains("the server reports standard_conforming_strings = off"), "{deny}");
    assert_eq!(deny["scope"]["permissions"][0]["action"], "postgres:SET_LEXING", "{deny}");
    assert!(!db.pg.log().contains(r"SELECT 'a\' FROM orders"), "the query reached a server reading it differently");
    assert_eq!(db.orders(), ORDERS);
}
