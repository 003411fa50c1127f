//! Dispatch: which handler classifies which kind of statement. Anything not listed is refused.

use sqlparser::ast::Statement;

use super::collector::{unclassified, Collector};
use super::{ddl, dml, session};
use crate::classify::ClassifyError;

/// Classify one statement (the outermost one, or one nested in `EXPLAIN`, `PREPARE` or a CTE):
/// record its verb and the permissions for the objects it names itself. Tables read elsewhere in
/// it are found by the walk.
pub(super) fn classify(c: &mut Collector<'_>, statement: &Statement) -> Result<(), ClassifyError> {
    use Statement as S;
    match statement {
        // Data.
        S::Query(query) => dml::query(c, query),
        S::Insert(insert) => dml::insert(c, insert),
        S::Update(update) => dml::update(c, update),
        S::Delete(delete) => dml::delete(c, delete),
        S::Merge(merge) => dml::merge(c, merge),
        S::Copy { source, to, target, .. } => dml::copy(c, source, *to, target),
        S::Call(function) => dml::call(c, function),
        S::Declare { stmts, .. } => dml::declare(c, stmts),
        S::Fetch { name, .. } => session::cursor(c, "FETCH", name),
        S::Close { cursor } => session::close(c, cursor),

        // Schema objects.
        S::CreateTable(create) => ddl::create_table(c, create),
        S::CreateView(create) => ddl::create_view(c, create),
        S::CreateIndex(create) => ddl::create_index(c, create),
        S::CreateSchema { schema_name, .. } => ddl::create_schema(c, schema_name),
        S::CreateDatabase { db_name, .. } => ddl::create_database(c, db_name),
        S::CreateSequence { name, .. } => ddl::create_object(c, "CREATE SEQUENCE", name),
        S::CreateType { name, .. } => ddl::create_object(c, "CREATE TYPE", name),
        S::CreateDomain(domain) => ddl::create_object(c, "CREATE DOMAIN", &domain.name),
        S::CreateFunction(create) => ddl::create_function(c, create),
        S::CreateTrigger(create) => ddl::create_trigger(c, create),
        S::CreateExtension(create) => ddl::create_extension(c, create),
        S::CreateRole(create) => ddl::create_role(c, create),
        S::AlterTable(alter) => ddl::alter_object(c, "ALTER TABLE", &alter.name),
        S::AlterIndex { name, .. } => ddl::alter_object(c, "ALTER INDEX", name),
        S::AlterView(alter) => ddl::alter_object(c, "ALTER VIEW", &alter.name),
        S::AlterType(alter) => ddl::alter_object(c, "ALTER TYPE", &alter.name),
        S::AlterSchema(alter) => ddl::alter_schema(c, &alter.name),
        S::AlterRole { name, operation } => ddl::alter_role(c, name, operation),
        S::Drop { object_type, names, .. } => ddl::drop(c, object_type, names),
        S::DropFunction(drop) => ddl::drop_function(c, drop),
        S::DropTrigger(drop) => ddl::drop_trigger(c, drop),
        S::DropExtension(drop) => ddl::drop_extension(c, drop),
        S::Truncate(truncate) => ddl::truncate(c, truncate),
        S::Grant(grant) => ddl::grant(c, "GRANT", super::actions::GRANT, grant.objects.as_ref()),
        S::Revoke(revoke) => ddl::grant(c, "REVOKE", super::actions::REVOKE, revoke.objects.as_ref()),
        S::GrantRole(grant) => ddl::grant_role(c, "GRANT", super::actions::GRANT, &grant.roles),
        S::RevokeRole(revoke) => ddl::grant_role(c, "REVOKE", super::actions::REVOKE, &revoke.roles),
        S::Comment { object_type, object_name, .. } => ddl::comment(c, object_type, object_name),

        // Maintenance.
        S::Vacuum(vacuum) => ddl::maintenance(c, "VACUUM", vacuum.table_name.as_ref()),
        S::Analyze(analyze) => ddl::maintenance(c, "ANALYZE", analyze.table_name.as_ref()),
        S::Lock(lock) => ddl::lock(c, lock),
        S::RefreshMaterializedView(refresh) => ddl::refresh(c, &refresh.name),

        // Session and transaction.
        S::StartTransaction { begin, .. } => session::transaction(c, if *begin { "BEGIN" } else { "START TRANSACTION" }),
        S::Commit { .. } => session::transaction(c, "COMMIT"),
        S::Rollback { .. } => session::transaction(c, "ROLLBACK"),
        S::Savepoint { .. } => session::transaction(c, "SAVEPOINT"),
        S::ReleaseSavepoint { .. } => session::transaction(c, "RELEASE"),
        S::Set(set) => session::set(c, set),
        S::Reset(reset) => session::reset(c, &reset.reset),
        S::Discard { object_type } => session::discard(c, object_type),
        S::ShowVariable { variable } => session::show(c, variable),
        S::LISTEN { channel } => session::channel(c, "LISTEN", super::actions::LISTEN, channel),
        S::UNLISTEN { channel } => session::channel(c, "UNLISTEN", super::actions::UNLISTEN, channel),
        S::NOTIFY { channel, .. } => session::channel(c, "NOTIFY", super::actions::NOTIFY, channel),
        S::Prepare { .. } => {
            // The prepared statement itself is classified when the walk reaches it.
            c.set_verb("PREPARE");
            Ok(())
        }
        S::Deallocate { name, .. } => session::deallocate(c, name),
        S::Explain { analyze, options, .. } => session::explain(c, *analyze, options.as_deref()),
        S::Load { extension_name } => session::load(c, extension_name),
        S::Execute { .. } => Err(ClassifyError::new(
            "unclassified statement: EXECUTE of a prepared statement (its tables are not known \
             here; prepare and run statements through the extended protocol instead)",
        )),
        _ => Err(unclassified(statement)),
    }
}
