//! Postgres statement scope: SQL text → for each statement, its verb and every
//! (action, object) it needs.
//!
//! # Resources
//! - a table, view, sequence, index or type: `postgres://HOST/DB/SCHEMA.NAME`. Unqualified names
//!   resolve to [`Database::default_schema`], except the system catalogs (`pg_class`, `pg_tables`,
//!   …) which Postgres finds in `pg_catalog` first. Identifiers are normalised as Postgres does:
//!   unquoted ones fold to lower case, quoted ones are kept; a name with characters other than
//!   letters, digits, `_` and `$` is written double-quoted (`public."a.b"`), so a quoted dot can
//!   never pass for a schema separator. `db.schema.table` is accepted for this database only.
//!   Temporary tables and views are in `pg_temp`.
//! - a function: `postgres://HOST/DB/SCHEMA.NAME()` (see [`functions`] for which calls count).
//! - a schema: `postgres://HOST/DB/SCHEMA`.
//! - anything outside schemas: `postgres://HOST/DB/KIND:NAME`, KIND one of `role`, `database`,
//!   `extension`, `setting`, `channel`, `prepared`, `cursor`, `library`.
//! - the database itself: `postgres://HOST/DB` — for statements that touch no object (`BEGIN`,
//!   `DISCARD`, `DO`) and for a `SELECT` with no `FROM` (`SELECT 1`, `SELECT now()`, `VALUES (1)`),
//!   which gets `postgres:SELECT` on it.
//!
//! # Actions
//! `postgres:SELECT` on every table read anywhere (joins, subqueries in any clause, CTE bodies —
//! a CTE's own name is not a table —, set operations, sources of `INSERT … SELECT`, `UPDATE …
//! FROM`, `DELETE … USING`, `MERGE … USING`, `CREATE TABLE AS`, `CREATE VIEW AS`, `COPY (query)`);
//! `postgres:INSERT`/`UPDATE`/`DELETE` on write targets (`ON CONFLICT DO UPDATE` adds `UPDATE`,
//! `RETURNING` adds `SELECT` on the target, as Postgres itself requires); `postgres:EXECUTE` on
//! table functions, procedures and non-trivial function calls; `postgres:CREATE`/`ALTER`/`DROP`/
//! `TRUNCATE`/`GRANT`/`REVOKE`/`COMMENT`/`LOCK`/`VACUUM`/`ANALYZE`/`REFRESH` on the object;
//! `postgres:COPY_FROM`/`COPY_TO` for `COPY`; `postgres:TRANSACTION`, `SET`, `SHOW`, `LISTEN`, …
//! for session plumbing; and the session-changing actions listed in [`actions`] (see
//! [`is_session_changing`]). The full list is in [`actions`].
//!
//! # Refusals
//! A statement that does not parse is `Err("unparseable SQL: …")`; one whose objects cannot be
//! determined is `Err("unclassified statement: …")` — among them `EXECUTE name` of an SQL-level
//! prepared statement (the tables of the prepared statement are not known here: the extended
//! protocol's `Parse` is classified instead), `set_config` with a non-literal setting name, and
//! every statement kind not handled here. One refused statement refuses the whole string.

pub mod actions;
mod collector;
mod ddl;
mod dml;
pub mod functions;
pub mod lexing;
mod names;
mod raw;
mod session;
mod settings;
mod statements;
#[cfg(test)]
mod tests;

use serde::Serialize;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

pub use actions::is_session_changing;

use super::{ClassifyError, Scope};

/// The database a connection is bound to, as the resources name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Database {
    /// The upstream host as policy names it (`db.internal` or `db.internal:5432`).
    pub host: String,
    /// The database name.
    pub name: String,
    /// The schema unqualified names resolve to, normally `public`. The broker must keep
    /// `search_path` from changing under it: that is why `SET search_path` is session-changing.
    pub default_schema: String,
}

/// One statement's verb (for logs and error messages) and the permissions it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementScope {
    /// `SELECT`, `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `CREATE TABLE`, `DROP TABLE`, `TRUNCATE`,
    /// `COPY`, `BEGIN`, `SET`, `EXPLAIN ANALYZE`, …
    pub sql_verb: String,
    /// `service = "postgres"`, no region, at least one permission.
    pub scope: Scope,
}

/// Classify a simple-query string: one entry per statement, in order. An empty string (or only
/// comments and semicolons) is `Ok(vec![])`, as Postgres answers it with `EmptyQueryResponse`.
pub fn classify_sql(sql: &str, db: &Database) -> Result<Vec<StatementScope>, ClassifyError> {
    let dialect = PostgreSqlDialect {};
    match Parser::parse_sql(&dialect, sql) {
        Ok(statements) => statements.iter().map(|statement| collector::classify_statement(statement, db)).collect(),
        // Some statements sqlparser cannot parse must still be recognised (to be denied by name).
        Err(err) => raw::classify_pieces(sql, db, err),
    }
}

/// Classify the query of an extended-protocol `Parse` message: at most one statement, with
/// `$1`-style placeholders. `Ok(None)` for an empty query; more than one statement is refused, as
/// Postgres refuses it.
pub fn classify_parse(sql: &str, db: &Database) -> Result<Option<StatementScope>, ClassifyError> {
    let mut scopes = classify_sql(sql, db)?;
    match scopes.len() {
        0 | 1 => Ok(scopes.pop()),
        _ => Err(ClassifyError::new("unclassified statement: a prepared statement may hold only one command")),
    }
}

/// A run-time setting asked for outside SQL (in the startup packet: `client_encoding`, or
/// `-c name=value` in `options`), classified as `SET name = 'value'` is: verb `SET`, the setting's
/// action (session-changing for `role`, a widening `search_path`, a lexing change, …) on
/// `postgres://HOST/DB/setting:NAME`. `setting` is matched ASCII case-insensitively, as the server does.
pub fn classify_setting(setting: &str, value: &str, db: &Database) -> StatementScope {
    let setting = setting.to_ascii_lowercase();
    let values = if setting == "search_path" { settings::split_search_path(value) } else { vec![value.to_string()] };
    let action = settings::setting_action(&setting, Some(&values), &db.default_schema, actions::SET);
    let resource = names::Resources::new(db).named("setting", &setting);
    StatementScope { sql_verb: "SET".into(), scope: Scope::single("postgres", None, action, resource) }
}
