//! The statement check shared by the listener and `explain --sql`: classify, refuse what changes
//! the session, then ask the policy for every permission.

use serde::Serialize;

use super::DatabaseListener;
use crate::classify::postgres::{classify_parse, classify_sql, is_session_changing, Database, StatementScope};
use crate::policy::{Decision, PolicyEngine, RequestFacts};
use crate::providers::Identity;

/// One statement's scope (none when it could not be classified) and the decision on it.
#[derive(Debug, Serialize)]
pub struct StatementDecision {
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub statement: Option<StatementScope>,
    pub decision: Decision,
}

/// How statements of `db` are named in resources.
pub fn database(db: &DatabaseListener) -> Database {
    Database { host: db.upstream_host.clone(), name: db.database.clone(), default_schema: "public".into() }
}

/// The policy's `input.request` for one Postgres decision: `verb` is the SQL verb, or `CONNECT`
/// for opening a session.
pub fn request_facts(db: &DatabaseListener, request_id: &str, verb: &str) -> RequestFacts {
    RequestFacts {
        id: request_id.into(),
        protocol: "postgres".into(),
        method: verb.into(),
        host: db.upstream_host.clone(),
        path: format!("/{}", db.database),
        upgrade: None,
    }
}

/// Decides every statement of `sql` (a simple query, or with `parse` the query of one `Parse`).
/// An unclassifiable string is one denied entry without a scope.
pub fn decide(policy: &PolicyEngine, identity: &Identity, db: &DatabaseListener, request_id: &str, sql: &str, parse: bool) -> Vec<StatementDecision> {
    let classified = if parse { classify_parse(sql, &database(db)).map(|s| s.into_iter().collect()) } else { classify_sql(sql, &database(db)) };
    let statements = match classified {
        Ok(s) => s,
        Err(e) => return vec![StatementDecision { statement: None, decision: Decision::deny(e.to_string()) }],
    };
    statements
        .into_iter()
        .map(|statement| {
            let decision = match statement.scope.permissions.iter().find(|p| is_session_changing(&p.action)) {
                Some(p) => Decision::deny(format!("{} changes the session ({}) and is not allowed through the broker", statement.sql_verb, p.action)),
                None => policy.decide(identity, &request_facts(db, request_id, &statement.sql_verb), &statement.scope),
            };
            StatementDecision { statement: Some(statement), decision }
        })
        .collect()
}

/// `credential-broker explain --sql`: each statement's scope and decision for database `name`
/// (the only one configured when `None`), without connecting anywhere.
pub fn explain(config: &crate::config::Config, sql: &str, name: Option<&str>, identity: &Identity) -> anyhow::Result<serde_json::Value> {
    let db = match name {
        Some(n) => config.databases.iter().find(|d| d.name == n).ok_or_else(|| anyhow::anyhow!("--database {n:?}: no such database in the config"))?,
        None => match config.databases.as_slice() {
            [only] => only,
            [] => anyhow::bail!("the config has no databases"),
            _ => anyhow::bail!("the config has several databases: name one with --database"),
        },
    };
    let policy = PolicyEngine::load(&config.policy.file, &config.policy.query)?;
    let decisions = decide(&policy, identity, db, "explain", sql, false);
    let allow = decisions.iter().all(|d| d.decision.allow);
    Ok(serde_json::json!({"database": db.name, "agent": identity, "allow": allow, "statements": decisions}))
}
