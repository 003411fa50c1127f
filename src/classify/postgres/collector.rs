//! The AST walk: every table, table function and function call anywhere in a statement.
//!
//! sqlparser's `Visitor` reaches every node, so a table hidden in a subquery of a `HAVING` clause is
//! found without this module knowing every place a subquery may appear. Statement handlers run
//! first (pre-order) and *claim* the names they classify themselves (an `INSERT` target, a dropped
//! table); every other relation the walk meets is read, so it needs `SELECT`. Forgetting to claim a
//! name therefore over-reports (an extra `SELECT`), never under-reports.

use std::collections::HashSet;
use std::ops::ControlFlow;

use sqlparser::ast::{Expr, ObjectName, ObjectNamePart, Query, Select, SelectInto, SetExpr, Statement, TableFactor, Visit, Visitor};

use super::names::{normalize, Resources};
use super::{actions, functions, statements, Database, StatementScope};
use crate::classify::{ClassifyError, Permission, Scope};

/// Classify one parsed statement.
pub(super) fn classify_statement(statement: &Statement, db: &Database) -> Result<StatementScope, ClassifyError> {
    let mut collector = Collector { res: Resources::new(db), verb: None, permissions: Vec::new(), claimed: HashSet::new(), frames: Vec::new() };
    if let ControlFlow::Break(err) = statement.visit(&mut collector) {
        return Err(err);
    }
    let verb = collector.verb.take().ok_or_else(|| unclassified(statement))?;
    if collector.permissions.is_empty() {
        // Only a query can legitimately touch nothing (`VALUES (1)`); it reads from the database.
        match statement {
            Statement::Query(_) => {
                let resource = collector.res.database();
                collector.add(actions::SELECT, resource);
            }
            _ => return Err(unclassified(statement)),
        }
    }
    Ok(StatementScope { sql_verb: verb, scope: Scope { service: "postgres".to_string(), region: None, permissions: collector.permissions } })
}

/// The error for a statement whose effect is not known here.
pub(super) fn unclassified(statement: &Statement) -> ClassifyError {
    let text = statement.to_string();
    let head: String = text.chars().take(80).collect();
    ClassifyError::new(format!("unclassified statement: {head}"))
}

/// State of one walk over one top-level statement.
pub(super) struct Collector<'d> {
    pub(super) res: Resources<'d>,
    /// The verb of the outermost statement (the first one the walk enters).
    verb: Option<String>,
    permissions: Vec<Permission>,
    /// Names already classified by a statement handler, by address in the AST being walked.
    claimed: HashSet<*const ObjectName>,
    /// One frame per enclosing query, for CTE name scoping.
    frames: Vec<Frame>,
}

/// The CTE names visible inside one query.
struct Frame {
    /// Names visible to relations directly in this query's body.
    visible: Vec<String>,
    /// Names this query inherited from its parent (what its own CTE bodies start from).
    inherited: Vec<String>,
    /// This query's CTEs in order: (address of the CTE body, CTE name).
    ctes: Vec<(*const Query, String)>,
    recursive: bool,
    /// `FOR UPDATE`/`FOR SHARE`/…: Postgres requires `UPDATE` privilege on the tables it locks.
    locking: bool,
}

impl Collector<'_> {
    /// Record the verb; only the outermost statement's counts.
    pub(super) fn set_verb(&mut self, verb: impl Into<String>) {
        if self.verb.is_none() {
            self.verb = Some(verb.into());
        }
    }

    /// Add one permission, once.
    pub(super) fn add(&mut self, action: &str, resource: String) {
        let permission = Permission { action: action.to_string(), resource };
        if !self.permissions.contains(&permission) {
            self.permissions.push(permission);
        }
    }

    /// Add `action` on the database itself.
    pub(super) fn add_database(&mut self, action: &str) {
        let resource = self.res.database();
        self.add(action, resource);
    }

    /// Claim `name` (so the walk does not also count it as read) and add `action` on it as a
    /// relation. Write targets are never CTE references: Postgres resolves them to real tables.
    pub(super) fn table(&mut self, action: &str, name: &ObjectName) -> Result<(), ClassifyError> {
        self.claim(name);
        let resource = self.res.relation(name)?;
        self.add(action, resource);
        Ok(())
    }

    /// Mark a name as handled by a statement handler.
    pub(super) fn claim(&mut self, name: &ObjectName) {
        self.claimed.insert(name as *const ObjectName);
    }

    fn is_cte(&self, name: &ObjectName) -> bool {
        let [ObjectNamePart::Identifier(ident)] = name.0.as_slice() else {
            return false;
        };
        let name = normalize(ident);
        self.frames.last().is_some_and(|frame| frame.visible.contains(&name))
    }

    /// A relation that is read: `SELECT` on it unless it names a CTE in scope.
    fn read(&mut self, name: &ObjectName) -> Result<(), ClassifyError> {
        if self.claimed.contains(&(name as *const ObjectName)) || self.is_cte(name) {
            return Ok(());
        }
        let resource = self.res.relation(name)?;
        // `FOR UPDATE OF x` names only some of them, but by alias; locking all over-reports.
        if self.frames.last().is_some_and(|frame| frame.locking) {
            self.add(actions::UPDATE, resource.clone());
        }
        self.add(actions::SELECT, resource);
        Ok(())
    }

    /// Open a scope frame for `query`. A CTE body sees the CTEs before it (and itself when
    /// `WITH RECURSIVE`); the main body sees them all; a subquery sees what its parent sees.
    fn enter_query(&mut self, query: &Query) {
        let address = query as *const Query;
        let inherited = match self.frames.last() {
            None => Vec::new(),
            Some(parent) => match parent.ctes.iter().position(|(q, _)| *q == address) {
                Some(index) => {
                    let upto = if parent.recursive { index + 1 } else { index };
                    let mut names = parent.inherited.clone();
                    names.extend(parent.ctes[..upto].iter().map(|(_, n)| n.clone()));
                    names
                }
                None => parent.visible.clone(),
            },
        };
        let (ctes, recursive) = match &query.with {
            Some(with) => (with.cte_tables.iter().map(|cte| (&*cte.query as *const Query, normalize(&cte.alias.name))).collect::<Vec<_>>(), with.recursive),
            None => (Vec::new(), false),
        };
        let mut visible = inherited.clone();
        visible.extend(ctes.iter().map(|(_, n)| n.clone()));
        self.frames.push(Frame { visible, inherited, ctes, recursive, locking: !query.locks.is_empty() });
    }

    /// `SELECT … INTO [TEMP] t`: `CREATE` on each target table.
    fn select_into(&mut self, into: &SelectInto) -> Result<(), ClassifyError> {
        for target in &into.targets {
            let parts = match target {
                Expr::Identifier(ident) => vec![ident.clone()],
                Expr::CompoundIdentifier(idents) => idents.clone(),
                _ => return Err(ClassifyError::new("unclassified statement: SELECT INTO target")),
            };
            let name = ObjectName(parts.into_iter().map(ObjectNamePart::Identifier).collect());
            let resource = if into.temporary { self.res.relation_in(&name, "pg_temp")? } else { self.res.relation(&name)? };
            self.add(actions::CREATE, resource);
        }
        Ok(())
    }

    /// `TABLE name` (alone or inside a set operation) is not a table factor, so find it here.
    fn set_expr_tables(&mut self, body: &SetExpr) -> Result<(), ClassifyError> {
        match body {
            SetExpr::SetOperation { left, right, .. } => {
                self.set_expr_tables(left)?;
                self.set_expr_tables(right)
            }
            SetExpr::Table(table) => {
                let Some(name) = &table.table_name else {
                    return Err(ClassifyError::new("unclassified statement: TABLE without a name"));
                };
                let parts = table.schema_name.iter().chain(std::iter::once(name)).map(|ident| ObjectNamePart::Identifier(ident.clone())).collect();
                self.read(&ObjectName(parts))
            }
            _ => Ok(()),
        }
    }
}

/// Turn a handler's result into the visitor's control flow.
fn flow(result: Result<(), ClassifyError>) -> ControlFlow<ClassifyError> {
    match result {
        Ok(()) => ControlFlow::Continue(()),
        Err(err) => ControlFlow::Break(err),
    }
}

impl Visitor for Collector<'_> {
    type Break = ClassifyError;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<ClassifyError> {
        flow(statements::classify(self, statement))
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<ClassifyError> {
        self.enter_query(query);
        flow(self.set_expr_tables(&query.body))
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<ClassifyError> {
        self.frames.pop();
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<ClassifyError> {
        if select.from.is_empty() {
            // `SELECT 1`, `SELECT now()`: reads no table, but is still a read of this database.
            self.add_database(actions::SELECT);
        }
        match &select.into {
            // `SELECT … INTO t` creates table t.
            Some(into) => flow(self.select_into(into)),
            None => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<ClassifyError> {
        flow(functions::table_factor(self, factor))
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<ClassifyError> {
        flow(self.read(relation))
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<ClassifyError> {
        match expr {
            Expr::Function(function) => flow(functions::call(self, function)),
            _ => ControlFlow::Continue(()),
        }
    }
}
