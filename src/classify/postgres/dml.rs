//! Statements that read or write rows: queries, `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `COPY`,
//! `CALL`, `DECLARE … CURSOR`.
//!
//! Each handler names its write target; tables read anywhere else (sources, `FROM`, `USING`,
//! subqueries) are found by the walk and get `SELECT`. `RETURNING` hands rows of the target back,
//! which Postgres itself only allows with `SELECT` privilege, so it adds `SELECT` on the target.

use sqlparser::ast::{
    CopySource, CopyTarget, Declare, Delete, FromTable, Function, Insert, Merge, MergeAction, OnConflictAction, OnInsert, Query, SetExpr, TableFactor,
    TableObject, Update,
};

use super::collector::Collector;
use super::{actions, functions};
use crate::classify::ClassifyError;

/// A query statement. Its verb follows its body: `WITH … INSERT …` is an INSERT.
pub(super) fn query(c: &mut Collector<'_>, query: &Query) -> Result<(), ClassifyError> {
    c.set_verb(match &*query.body {
        SetExpr::Insert(_) => "INSERT",
        SetExpr::Update(_) => "UPDATE",
        SetExpr::Delete(_) => "DELETE",
        SetExpr::Merge(_) => "MERGE",
        _ => "SELECT",
    });
    Ok(())
}

pub(super) fn insert(c: &mut Collector<'_>, insert: &Insert) -> Result<(), ClassifyError> {
    c.set_verb("INSERT");
    let TableObject::TableName(target) = &insert.table else {
        return Err(ClassifyError::new("unclassified statement: INSERT into a table function"));
    };
    c.table(actions::INSERT, target)?;
    if let Some(OnInsert::OnConflict(conflict)) = &insert.on {
        if let OnConflictAction::DoUpdate(_) = conflict.action {
            c.table(actions::UPDATE, target)?;
        }
    }
    if insert.returning.is_some() {
        c.table(actions::SELECT, target)?;
    }
    Ok(())
}

pub(super) fn update(c: &mut Collector<'_>, update: &Update) -> Result<(), ClassifyError> {
    c.set_verb("UPDATE");
    let target = target_table(&update.table.relation, "UPDATE")?;
    c.table(actions::UPDATE, target)?;
    if update.returning.is_some() {
        c.table(actions::SELECT, target)?;
    }
    Ok(())
}

pub(super) fn delete(c: &mut Collector<'_>, delete: &Delete) -> Result<(), ClassifyError> {
    c.set_verb("DELETE");
    let from = match &delete.from {
        FromTable::WithFromKeyword(tables) | FromTable::WithoutKeyword(tables) => tables,
    };
    let mut targets = delete.tables.iter().collect::<Vec<_>>();
    for table in from {
        targets.push(target_table(&table.relation, "DELETE")?);
    }
    for target in targets {
        c.table(actions::DELETE, target)?;
        if delete.returning.is_some() {
            c.table(actions::SELECT, target)?;
        }
    }
    Ok(())
}

/// `MERGE INTO target USING source …`: each `WHEN` clause's action on the target; the source is
/// read. A `MERGE` whose every clause is `DO NOTHING` still reads the target.
pub(super) fn merge(c: &mut Collector<'_>, merge: &Merge) -> Result<(), ClassifyError> {
    c.set_verb("MERGE");
    let target = target_table(&merge.table, "MERGE")?;
    let mut wrote = false;
    for clause in &merge.clauses {
        let action = match clause.action {
            MergeAction::Insert(_) => actions::INSERT,
            MergeAction::Update(_) => actions::UPDATE,
            MergeAction::Delete { .. } => actions::DELETE,
            MergeAction::DoNothing { .. } => continue,
        };
        c.table(action, target)?;
        wrote = true;
    }
    if !wrote {
        c.table(actions::SELECT, target)?;
    }
    Ok(())
}

/// `COPY`: `COPY_FROM` (rows in) or `COPY_TO` (rows out) on the table, or for `COPY (query) TO`
/// `COPY_TO` on the database plus whatever the query reads. A server-side file or program adds
/// `COPY_FILE` / `COPY_PROGRAM` on the database, both session-changing.
pub(super) fn copy(c: &mut Collector<'_>, source: &CopySource, to: bool, target: &CopyTarget) -> Result<(), ClassifyError> {
    c.set_verb("COPY");
    let action = if to { actions::COPY_TO } else { actions::COPY_FROM };
    match source {
        CopySource::Table { table_name, .. } => c.table(action, table_name)?,
        CopySource::Query(_) if to => c.add_database(action),
        CopySource::Query(_) => return Err(ClassifyError::new("unclassified statement: COPY (query) FROM")),
    }
    match target {
        CopyTarget::Stdin | CopyTarget::Stdout => {}
        CopyTarget::File { .. } => c.add_database(actions::COPY_FILE),
        CopyTarget::Program { .. } => c.add_database(actions::COPY_PROGRAM),
    }
    Ok(())
}

/// `CALL proc(…)`: always `EXECUTE` on the procedure.
pub(super) fn call(c: &mut Collector<'_>, function: &Function) -> Result<(), ClassifyError> {
    c.set_verb("CALL");
    let args = match &function.args {
        sqlparser::ast::FunctionArguments::List(list) => list.args.as_slice(),
        _ => &[],
    };
    functions::execute(c, &function.name, args)
}

/// `DECLARE c CURSOR FOR query`: the query's reads, found by the walk.
pub(super) fn declare(c: &mut Collector<'_>, declares: &[Declare]) -> Result<(), ClassifyError> {
    c.set_verb("DECLARE");
    if declares.iter().any(|d| d.for_query.is_none()) {
        return Err(ClassifyError::new("unclassified statement: DECLARE without a cursor query"));
    }
    Ok(())
}

/// The table a write statement targets; anything else (a subquery, a function) is refused.
fn target_table<'a>(factor: &'a TableFactor, verb: &str) -> Result<&'a sqlparser::ast::ObjectName, ClassifyError> {
    match factor {
        TableFactor::Table { name, args: None, .. } => Ok(name),
        _ => Err(ClassifyError::new(format!("unclassified statement: {verb} target is not a table"))),
    }
}
