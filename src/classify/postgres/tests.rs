//! Table-driven tests: one row = one SQL string as a client sends it, and exactly the verb and
//! permissions it must classify to. Permissions are compared as sets: their order follows the
//! AST walk, which is deterministic but not part of the contract.

use super::{classify_parse, classify_sql, is_session_changing, Database};

const DB: &str = "postgres://db.internal/app";

fn db() -> Database {
    Database { host: "db.internal".into(), name: "app".into(), default_schema: "public".into() }
}

/// `("SELECT", "public.t")` → `("postgres:SELECT", "postgres://db.internal/app/public.t")`; an
/// empty resource is the database itself.
fn expand(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected
        .iter()
        .map(|(action, resource)| {
            let resource = if resource.is_empty() { DB.to_string() } else { format!("{DB}/{resource}") };
            (format!("postgres:{action}"), resource)
        })
        .collect()
}

/// One statement: (sql, verb, permissions as `(ACTION, resource under the database)`).
type Row<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

fn check(rows: &[Row]) {
    let mut failures = Vec::new();
    for (sql, verb, expected) in rows {
        let mut permissions = expand(expected);
        permissions.sort();
        let expected = (verb.to_string(), permissions);
        let got = classify_sql(sql, &db()).map(|scopes| {
            let [one] = scopes.as_slice() else {
                return (format!("{} statements", scopes.len()), Vec::new());
            };
            assert_eq!(one.scope.service, "postgres");
            assert_eq!(one.scope.region, None);
            let mut permissions: Vec<_> = one.scope.permissions.iter().map(|p| (p.action.clone(), p.resource.clone())).collect();
            permissions.sort();
            (one.sql_verb.clone(), permissions)
        });
        if got.as_ref() != Ok(&expected) {
            failures.push(format!("{sql}\n   expected {expected:?}\n   got      {got:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Each row must be refused with an error containing the text.
fn check_err(rows: &[(&str, &str)]) {
    let mut failures = Vec::new();
    for (sql, needle) in rows {
        match classify_sql(sql, &db()) {
            Err(e) if e.reason.contains(needle) => {}
            other => failures.push(format!("{sql}\n   expected error {needle:?}, got {other:?}")),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn reads_find_every_table_anywhere() {
    check(&[
        ("SELECT * FROM t", "SELECT", &[("SELECT", "public.t")]),
        ("select a from Sales.Orders o", "SELECT", &[("SELECT", "sales.orders")]),
        (
            r#"SELECT * FROM "Mixed"."a.b""#,
            "SELECT",
            // Case is kept (only a quoted name can carry upper case); a dot is quoted.
            &[("SELECT", r#"Mixed."a.b""#)],
        ),
        ("SELECT * FROM app.s.t", "SELECT", &[("SELECT", "s.t")]),
        ("SELECT * FROM a JOIN b ON a.id = b.id LEFT JOIN s.c USING (id)", "SELECT", &[("SELECT", "public.a"), ("SELECT", "public.b"), ("SELECT", "s.c")]),
        (
            "SELECT (SELECT max(x) FROM a) FROM b WHERE id IN (SELECT id FROM c) \
             GROUP BY 1 HAVING count(*) > (SELECT count(*) FROM d)",
            "SELECT",
            &[("SELECT", "public.a"), ("SELECT", "public.b"), ("SELECT", "public.c"), ("SELECT", "public.d")],
        ),
        ("SELECT * FROM (SELECT * FROM inner_t) AS sub WHERE EXISTS (SELECT 1 FROM e)", "SELECT", &[("SELECT", "public.inner_t"), ("SELECT", "public.e")]),
        ("SELECT a FROM x UNION SELECT a FROM y EXCEPT TABLE z", "SELECT", &[("SELECT", "public.z"), ("SELECT", "public.x"), ("SELECT", "public.y")]),
        ("SELECT * FROM t1, LATERAL (SELECT * FROM t2 WHERE t2.id = t1.id) x", "SELECT", &[("SELECT", "public.t1"), ("SELECT", "public.t2")]),
        ("PREPARE q AS SELECT * FROM t WHERE id = $1", "PREPARE", &[("SELECT", "public.t")]),
        ("EXPLAIN SELECT * FROM t", "EXPLAIN", &[("EXPLAIN", ""), ("SELECT", "public.t")]),
        ("SELECT 1", "SELECT", &[("SELECT", "")]),
        ("VALUES (1), (2)", "SELECT", &[("SELECT", "")]),
        ("SELECT now(), lower('A')", "SELECT", &[("SELECT", "")]),
        ("select * from T1 natural join \"T1\"", "SELECT", &[("SELECT", "public.t1"), ("SELECT", "public.T1")]),
        ("SELECT ARRAY(SELECT x FROM arr_t)", "SELECT", &[("SELECT", ""), ("SELECT", "public.arr_t")]),
        // Row locks need UPDATE on the tables of the locking query (not of its subqueries).
        (
            "SELECT * FROM t JOIN u ON true WHERE id IN (SELECT id FROM v) FOR UPDATE",
            "SELECT",
            &[("SELECT", "public.t"), ("UPDATE", "public.t"), ("SELECT", "public.u"), ("UPDATE", "public.u"), ("SELECT", "public.v")],
        ),
        // System catalogs are found in pg_catalog before search_path; look-alikes are not.
        ("SELECT * FROM pg_class JOIN pg_classes ON true", "SELECT", &[("SELECT", "pg_catalog.pg_class"), ("SELECT", "public.pg_classes")]),
        ("SELECT * FROM information_schema.tables", "SELECT", &[("SELECT", "information_schema.tables")]),
        // $1 placeholders (extended protocol) parse like values.
        ("SELECT * FROM t WHERE id = $1", "SELECT", &[("SELECT", "public.t")]),
    ]);
}

#[test]
fn ctes_are_not_tables_but_their_bodies_are_read() {
    check(&[
        ("WITH recent AS (SELECT * FROM orders) SELECT * FROM recent JOIN users ON true", "SELECT", &[("SELECT", "public.orders"), ("SELECT", "public.users")]),
        // A CTE named like a table shadows it only where it is visible: not in its own body.
        ("WITH t AS (SELECT * FROM t) SELECT * FROM t", "SELECT", &[("SELECT", "public.t")]),
        (
            "WITH RECURSIVE r AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM r WHERE n < 5) \
             SELECT * FROM r",
            "SELECT",
            &[("SELECT", "")],
        ),
        // Outside the query that defines it, the CTE name is the real table again. (`SELECT 1`
        // reads the database itself.)
        ("SELECT * FROM (WITH a AS (SELECT 1) SELECT * FROM a) x, a", "SELECT", &[("SELECT", ""), ("SELECT", "public.a")]),
        // A schema-qualified name is never a CTE.
        ("WITH t AS (SELECT 1) SELECT * FROM public.t", "SELECT", &[("SELECT", ""), ("SELECT", "public.t")]),
        (
            "WITH gone AS (DELETE FROM old RETURNING *) INSERT INTO archive SELECT * FROM gone",
            "INSERT",
            &[("INSERT", "public.archive"), ("DELETE", "public.old"), ("SELECT", "public.old")],
        ),
    ]);
}

#[test]
fn writes_name_their_target_and_read_their_sources() {
    check(&[
        ("INSERT INTO t (a) VALUES ($1)", "INSERT", &[("INSERT", "public.t")]),
        ("INSERT INTO s.t SELECT * FROM u WHERE x IN (SELECT x FROM v)", "INSERT", &[("INSERT", "s.t"), ("SELECT", "public.u"), ("SELECT", "public.v")]),
        (
            "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 2 RETURNING id",
            "INSERT",
            &[("INSERT", "public.t"), ("UPDATE", "public.t"), ("SELECT", "public.t")],
        ),
        ("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", "INSERT", &[("INSERT", "public.t")]),
        ("UPDATE t SET a = u.a FROM u WHERE t.id = u.id", "UPDATE", &[("UPDATE", "public.t"), ("SELECT", "public.u")]),
        ("UPDATE t SET a = (SELECT max(a) FROM u) RETURNING *", "UPDATE", &[("UPDATE", "public.t"), ("SELECT", "public.t"), ("SELECT", "public.u")]),
        ("DELETE FROM t USING u WHERE t.id = u.id", "DELETE", &[("DELETE", "public.t"), ("SELECT", "public.u")]),
        (
            "MERGE INTO t USING s ON t.id = s.id \
             WHEN MATCHED THEN UPDATE SET a = s.a \
             WHEN NOT MATCHED THEN INSERT (id, a) VALUES (s.id, s.a)",
            "MERGE",
            &[("UPDATE", "public.t"), ("INSERT", "public.t"), ("SELECT", "public.s")],
        ),
        ("COPY t FROM STDIN", "COPY", &[("COPY_FROM", "public.t")]),
        ("COPY s.t (a, b) TO STDOUT", "COPY", &[("COPY_TO", "s.t")]),
        ("COPY (SELECT * FROM t JOIN u ON true) TO STDOUT WITH (FORMAT csv)", "COPY", &[("COPY_TO", ""), ("SELECT", "public.t"), ("SELECT", "public.u")]),
        ("SELECT * INTO TEMP snapshot FROM t", "SELECT", &[("CREATE", "pg_temp.snapshot"), ("SELECT", "public.t")]),
        ("DECLARE c CURSOR FOR SELECT * FROM t", "DECLARE", &[("SELECT", "public.t")]),
        ("FETCH 10 FROM c", "FETCH", &[("CURSOR", "cursor:c")]),
        ("EXPLAIN ANALYZE DELETE FROM t", "EXPLAIN ANALYZE", &[("EXPLAIN", ""), ("DELETE", "public.t")]),
    ]);
}

#[test]
fn function_calls() {
    check(&[
        ("SELECT count(*), coalesce(max(a), 0) FROM t", "SELECT", &[("SELECT", "public.t")]),
        ("SELECT my_func(a) FROM t", "SELECT", &[("SELECT", "public.t"), ("EXECUTE", "public.my_func()")]),
        ("SELECT pg_read_file('/etc/passwd')", "SELECT", &[("SELECT", ""), ("EXECUTE", "pg_catalog.pg_read_file()")]),
        ("SELECT * FROM s.report(1)", "SELECT", &[("EXECUTE", "s.report()")]),
        ("CALL s.refresh_all()", "CALL", &[("EXECUTE", "s.refresh_all()")]),
        ("SELECT set_config('statement_timeout', '5s', false)", "SELECT", &[("SELECT", ""), ("SET_CONFIG", "setting:statement_timeout")]),
        ("SELECT dblink('host=x', 'select 1')", "SELECT", &[("SELECT", ""), ("EXECUTE", "pg_catalog.dblink()")]),
        ("SELECT set_config('role', 'admin', false)", "SELECT", &[("SELECT", ""), ("SET_ROLE", "setting:role")]),
    ]);
}

#[test]
fn schema_changes() {
    check(&[
        ("CREATE TABLE s.t (id int PRIMARY KEY)", "CREATE TABLE", &[("CREATE", "s.t")]),
        ("CREATE TEMP TABLE scratch AS SELECT * FROM t", "CREATE TABLE", &[("CREATE", "pg_temp.scratch"), ("SELECT", "public.t")]),
        ("CREATE VIEW v AS SELECT a FROM t", "CREATE VIEW", &[("CREATE", "public.v"), ("SELECT", "public.t")]),
        ("CREATE INDEX idx ON s.t (a)", "CREATE INDEX", &[("ALTER", "s.t"), ("CREATE", "s.idx")]),
        ("CREATE TABLE c PARTITION OF p FOR VALUES IN (1)", "CREATE TABLE", &[("CREATE", "public.c"), ("ALTER", "public.p")]),
        ("ALTER TABLE t ADD COLUMN b int", "ALTER TABLE", &[("ALTER", "public.t")]),
        ("DROP TABLE a, s.b", "DROP TABLE", &[("DROP", "public.a"), ("DROP", "s.b")]),
        ("TRUNCATE a, b", "TRUNCATE", &[("TRUNCATE", "public.a"), ("TRUNCATE", "public.b")]),
        ("GRANT SELECT ON t TO reader", "GRANT", &[("GRANT", "public.t")]),
        ("GRANT admin TO bob", "GRANT", &[("GRANT", "role:admin")]),
        ("CREATE SCHEMA reports", "CREATE SCHEMA", &[("CREATE", "reports")]),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE plpython3u SECURITY DEFINER AS 'return 1'",
            "CREATE FUNCTION",
            &[("CREATE", "public.f()"), ("CREATE_UNTRUSTED_FUNCTION", "public.f()"), ("SECURITY_DEFINER", "public.f()")],
        ),
        ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", "LOCK", &[("LOCK", "public.t")]),
        ("VACUUM", "VACUUM", &[("VACUUM", "")]),
    ]);
}

#[test]
fn session_plumbing_and_identity_changes() {
    check(&[
        ("BEGIN", "BEGIN", &[("TRANSACTION", "")]),
        ("COMMIT", "COMMIT", &[("TRANSACTION", "")]),
        ("SET statement_timeout = '5s'", "SET", &[("SET", "setting:statement_timeout")]),
        ("SHOW search_path", "SHOW", &[("SHOW", "setting:search_path")]),
        ("LISTEN jobs", "LISTEN", &[("LISTEN", "channel:jobs")]),
        // Denied by default: they change who the session is or how names resolve.
        ("SET ROLE admin", "SET ROLE", &[("SET_ROLE", "role:admin")]),
        ("SET role = admin", "SET", &[("SET_ROLE", "role:admin")]),
        ("SET SESSION AUTHORIZATION bob", "SET SESSION AUTHORIZATION", &[("SET_SESSION_AUTHORIZATION", "role:bob")]),
        ("RESET ALL", "RESET", &[("RESET_ALL", "")]),
        ("RESET ROLE", "RESET", &[("RESET_ROLE", "setting:role")]),
        ("DISCARD ALL", "DISCARD", &[("DISCARD", "")]),
        ("DISCARD PLANS", "DISCARD", &[("DISCARD_PLANS", "")]),
        ("SET search_path TO evil, public", "SET", &[("SET_SEARCH_PATH", "setting:search_path")]),
        ("SET search_path = pg_catalog, public", "SET", &[("SET", "setting:search_path")]),
        ("RESET search_path", "RESET", &[("SET_SEARCH_PATH", "setting:search_path")]),
        ("SET search_path = ''", "SET", &[("SET", "setting:search_path")]),
        ("DO $$BEGIN PERFORM 1; END$$", "DO", &[("DO", "")]),
        ("COPY t TO PROGRAM 'curl http://x'", "COPY", &[("COPY_TO", "public.t"), ("COPY_PROGRAM", "")]),
        ("COPY t FROM '/etc/passwd'", "COPY", &[("COPY_FROM", "public.t"), ("COPY_FILE", "")]),
    ]);
}

#[test]
fn session_changing_actions_are_flagged() {
    for sql in [
        "SET ROLE admin",
        "SET SESSION AUTHORIZATION bob",
        "RESET ALL",
        "RESET ROLE",
        "RESET SESSION AUTHORIZATION",
        "DISCARD ALL",
        "DO $$BEGIN NULL; END$$",
        "COPY t FROM PROGRAM 'id'",
        "SET search_path = evil",
        "SELECT set_config('search_path', 'evil', false)",
        "ALTER SYSTEM SET log_statement = 'none'",
        "SET standard_conforming_strings = off",
        "SELECT set_config('client_encoding', 'SJIS', false)",
    ] {
        let scopes = classify_sql(sql, &db()).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(scopes.iter().flat_map(|s| &s.scope.permissions).any(|p| is_session_changing(&p.action)), "{sql} is not flagged: {scopes:?}");
    }
    for sql in ["SELECT * FROM t", "SET statement_timeout = 0", "BEGIN", "DISCARD PLANS"] {
        let scopes = classify_sql(sql, &db()).unwrap();
        assert!(!scopes.iter().flat_map(|s| &s.scope.permissions).any(|p| is_session_changing(&p.action)), "{sql} is flagged");
    }
}

#[test]
fn several_statements_are_classified_in_order() {
    let scopes = classify_sql("BEGIN; UPDATE t SET a = 1; COMMIT;", &db()).unwrap();
    let verbs: Vec<&str> = scopes.iter().map(|s| s.sql_verb.as_str()).collect();
    assert_eq!(verbs, ["BEGIN", "UPDATE", "COMMIT"]);
    // A statement sqlparser cannot parse is still recognised (and so denied) by name.
    let scopes = classify_sql("SELECT 1; DO $$ BEGIN DROP TABLE t; END $$;", &db()).unwrap();
    let verbs: Vec<&str> = scopes.iter().map(|s| s.sql_verb.as_str()).collect();
    assert_eq!(verbs, ["SELECT", "DO"]);
    assert!(classify_sql("", &db()).unwrap().is_empty());
    assert!(classify_sql(" ; -- nothing\n", &db()).unwrap().is_empty());
}

#[test]
fn refused_statements() {
    check_err(&[
        ("SELEC * FROM t", "unparseable SQL"),
        ("SELECT * FROM t WHERE", "unparseable SQL"),
        // One bad statement refuses the whole string.
        ("SELECT 1; SELEC 2", "unparseable SQL"),
        ("EXECUTE stmt(1)", "EXECUTE of a prepared statement"),
        ("SELECT * FROM other_db.s.t", "does not name an object"),
        ("SELECT set_config($1, 'x', false)", "set_config with a setting name that is not a literal"),
        ("DROP TRIGGER trg", "DROP TRIGGER without ON table"),
        // Valid Postgres that sqlparser 0.64 does not parse: refused, never guessed.
        ("TABLE s.t", "unparseable SQL"),
    ]);
}

#[test]
fn extended_protocol_parse_holds_one_statement() {
    let one = classify_parse("SELECT * FROM t WHERE id = $1", &db()).unwrap().unwrap();
    assert_eq!(one.sql_verb, "SELECT");
    assert_eq!(classify_parse("", &db()).unwrap(), None);
    let err = classify_parse("SELECT 1; SELECT 2", &db()).unwrap_err();
    assert!(err.reason.contains("only one command"), "{err}");
}

/// Settings that change how the server lexes SQL text (see `lexing`): every way to change one
/// away from the broker's reading is `SET_LEXING`; values that keep it are ordinary.
#[test]
fn lexing_settings_are_held_to_the_brokers_reading() {
    const SCS: &str = "setting:standard_conforming_strings";
    const ENC: &str = "setting:client_encoding";
    check(&[
        ("SET standard_conforming_strings = off", "SET", &[("SET_LEXING", SCS)]),
        ("SET standard_conforming_strings TO 'off'", "SET", &[("SET_LEXING", SCS)]),
        ("SET LOCAL standard_conforming_strings = off", "SET", &[("SET_LEXING", SCS)]),
        ("SET SESSION Standard_Conforming_Strings TO false", "SET", &[("SET_LEXING", SCS)]),
        ("SET standard_conforming_strings = 0", "SET", &[("SET_LEXING", SCS)]),
        ("SET standard_conforming_strings = of", "SET", &[("SET_LEXING", SCS)]),
        // The value DEFAULT stands for is not known here.
        ("SET standard_conforming_strings TO DEFAULT", "SET", &[("SET_LEXING", SCS)]),
        ("RESET standard_conforming_strings", "RESET", &[("SET_LEXING", SCS)]),
        ("SELECT set_config('standard_conforming_strings', 'off', false)", "SELECT", &[("SELECT", ""), ("SET_LEXING", SCS)]),
        ("SELECT pg_catalog.set_config('STANDARD_CONFORMING_STRINGS', 'off', true)", "SELECT", &[("SELECT", ""), ("SET_LEXING", SCS)]),
        ("SELECT set_config('standard_conforming_strings', current_setting('x.y'), false)", "SELECT", &[("SELECT", ""), ("SET_LEXING", SCS)]),
        // Client-only encodings (a 0x5c trail byte) and any other non-UTF-8 encoding.
        ("SET client_encoding = 'SJIS'", "SET", &[("SET_LEXING", ENC)]),
        ("SET client_encoding TO 'Shift_JIS'", "SET", &[("SET_LEXING", ENC)]),
        ("SET client_encoding TO big5", "SET", &[("SET_LEXING", ENC)]),
        ("SET client_encoding = 'WIN936'", "SET", &[("SET_LEXING", ENC)]),
        ("SET client_encoding = LATIN1", "SET", &[("SET_LEXING", ENC)]),
        ("SET client_encoding TO DEFAULT", "SET", &[("SET_LEXING", ENC)]),
        ("SET NAMES 'GBK'", "SET", &[("SET_LEXING", ENC)]),
        ("SET NAMES DEFAULT", "SET", &[("SET_LEXING", ENC)]),
        ("RESET client_encoding", "RESET", &[("SET_LEXING", ENC)]),
        ("SELECT set_config('client_encoding', 'sjis', false)", "SELECT", &[("SELECT", ""), ("SET_LEXING", ENC)]),
        ("SET backslash_quote = on", "SET", &[("SET_LEXING", "setting:backslash_quote")]),
        ("SET backslash_quote = true", "SET", &[("SET_LEXING", "setting:backslash_quote")]),
        // Later sessions of the role would start with it.
        ("ALTER ROLE cb_x SET standard_conforming_strings = off", "ALTER ROLE", &[("ALTER_ROLE", "role:cb_x"), ("SET_LEXING", SCS)]),
        ("ALTER ROLE cb_x IN DATABASE app SET client_encoding = 'SJIS'", "ALTER ROLE", &[("ALTER_ROLE", "role:cb_x"), ("SET_LEXING", ENC)]),
        ("ALTER ROLE cb_x SET search_path = evil", "ALTER ROLE", &[("ALTER_ROLE", "role:cb_x"), ("SET_SEARCH_PATH", "setting:search_path")]),
        // Values that keep the broker's reading are ordinary settings.
        ("SET standard_conforming_strings = on", "SET", &[("SET", SCS)]),
        ("SET standard_conforming_strings = true", "SET", &[("SET", SCS)]),
        ("SET standard_conforming_strings TO 'yes'", "SET", &[("SET", SCS)]),
        ("SET client_encoding = 'UTF8'", "SET", &[("SET", ENC)]),
        ("SET client_encoding TO 'utf-8'", "SET", &[("SET", ENC)]),
        ("SET NAMES 'UTF8'", "SET", &[("SET", ENC)]),
        ("SELECT set_config('client_encoding', 'UTF8', false)", "SELECT", &[("SELECT", ""), ("SET_CONFIG", ENC)]),
        ("SET backslash_quote = safe_encoding", "SET", &[("SET", "setting:backslash_quote")]),
        ("SET backslash_quote = off", "SET", &[("SET", "setting:backslash_quote")]),
        // Only warns; does not change lexing.
        ("SET escape_string_warning = off", "SET", &[("SET", "setting:escape_string_warning")]),
        ("ALTER ROLE cb_x SET statement_timeout = '5s'", "ALTER ROLE", &[("ALTER_ROLE", "role:cb_x")]),
    ]);
    // Not classified at all, so refused too.
    check_err(&[("ALTER DATABASE app SET standard_conforming_strings = off", "")]);
}

/// The classifier reads strings as the server does with `standard_conforming_strings = on` (which
/// the broker holds the server to): a backslash in `'…'` is a character, in `E'…'` an escape.
#[test]
fn strings_are_lexed_as_with_standard_conforming_strings_on() {
    let verbs = |sql: &str| classify_sql(sql, &db()).unwrap_or_else(|e| panic!("{sql}: {e}")).into_iter().map(|s| s.sql_verb).collect::<Vec<_>>();
    assert_eq!(verbs(r"SELECT 'a\'; DELETE FROM t; --'"), ["SELECT", "DELETE"]);
    assert_eq!(verbs(r"SELECT E'a\'; DELETE FROM t; --'"), ["SELECT"]);
    assert_eq!(verbs(r"SELECT E'\\'; DELETE FROM t"), ["SELECT", "DELETE"]);
    assert_eq!(verbs("SELECT $x$;$x$; DELETE FROM t"), ["SELECT", "DELETE"]);
    assert_eq!(verbs("SELECT $x$ $y$;$y$ $x$; DELETE FROM t"), ["SELECT", "DELETE"]);
    assert_eq!(verbs("SELECT 1 /* ; DELETE FROM t */; -- ; DELETE FROM t\nDELETE FROM u"), ["SELECT", "DELETE"]);
}

/// Identifiers are named as the server will use them: ASCII-only case folding, cut to 63 bytes.
#[test]
fn identifiers_are_normalised_as_the_server_does() {
    let long = "a".repeat(63);
    check(&[
        // In a UTF-8 database only ASCII letters fold: `ÖRDERS` is `Örders`, not `örders`.
        ("SELECT * FROM ÖRDERS", "SELECT", &[("SELECT", "public.Örders")]),
        (&format!("SELECT * FROM {long}zzz"), "SELECT", &[("SELECT", &format!("public.{long}"))]),
        (&format!("SELECT * FROM \"{long}ZZZ\""), "SELECT", &[("SELECT", &format!("public.{long}"))]),
        // Cut at a character boundary: 62 ASCII bytes, then a 2-byte character that does not fit.
        (&format!("SELECT * FROM {}éx", "a".repeat(62)), "SELECT", &[("SELECT", &format!("public.{}", "a".repeat(62)))]),
    ]);
}

#[test]
fn server_reports_are_checked_against_the_brokers_reading() {
    use super::lexing::keeps_lexing;
    for (setting, value, kept) in [
        ("standard_conforming_strings", "on", true),
        ("standard_conforming_strings", "off", false),
        ("client_encoding", "UTF8", true),
        ("client_encoding", "SJIS", false),
        ("client_encoding", "SQL_ASCII", false),
        ("client_encoding", "BIG5", false),
        ("backslash_quote", "safe_encoding", true),
        ("backslash_quote", "on", false),
        ("escape_string_warning", "off", true),
        ("DateStyle", "ISO, MDY", true),
    ] {
        assert_eq!(keeps_lexing(setting, value), kept, "{setting} = {value}");
    }
}
