//! Schema and privilege statements (`CREATE`, `ALTER`, `DROP`, `TRUNCATE`, `GRANT`, `REVOKE`,
//! `COMMENT`) and maintenance (`VACUUM`, `ANALYZE`, `LOCK`, `REFRESH MATERIALIZED VIEW`).
//!
//! Each names the object it changes: `postgres:CREATE` on `postgres://HOST/DB/SCHEMA.NAME` for a
//! table, view, index, sequence or type, on `postgres://HOST/DB/SCHEMA` for a schema, on
//! `…/SCHEMA.NAME()` for a function and on `…/KIND:NAME` for a database, role or extension.
//! Queries inside (`CREATE TABLE … AS SELECT`, `CREATE VIEW … AS`) are read by the walk.

use sqlparser::ast::{
    AlterRoleOperation, CommentObject, CreateExtension, CreateFunction, CreateIndex, CreateRole, CreateTable, CreateTrigger, CreateView, DropExtension,
    DropFunction, DropTrigger, FunctionSecurity, GrantObjects, Ident, Lock, ObjectName, ObjectType, SchemaName, SetConfigValue, Truncate,
};

use super::collector::Collector;
use super::names::{idents, normalize};
use super::{actions, session, settings};
use crate::classify::ClassifyError;

/// Temporary objects live in the session's own `pg_temp` schema, whatever `search_path` says.
const PG_TEMP: &str = "pg_temp";

pub(super) fn create_table(c: &mut Collector<'_>, create: &CreateTable) -> Result<(), ClassifyError> {
    c.set_verb("CREATE TABLE");
    create_relation(c, &create.name, create.temporary)?;
    // An inheritance child or a partition changes its parent, which only the parent's owner may do.
    for parent in create.inherits.iter().flatten().chain(&create.partition_of) {
        c.table(actions::ALTER, parent)?;
    }
    Ok(())
}

pub(super) fn create_view(c: &mut Collector<'_>, create: &CreateView) -> Result<(), ClassifyError> {
    c.set_verb(if create.materialized { "CREATE MATERIALIZED VIEW" } else { "CREATE VIEW" });
    create_relation(c, &create.name, create.temporary)
}

fn create_relation(c: &mut Collector<'_>, name: &ObjectName, temporary: bool) -> Result<(), ClassifyError> {
    c.claim(name);
    let resource = if temporary { c.res.relation_in(name, PG_TEMP)? } else { c.res.relation(name)? };
    c.add(actions::CREATE, resource);
    Ok(())
}

/// `CREATE INDEX [name] ON table`: `CREATE` on the index (in its table's schema) when named, and
/// `ALTER` on the table, as indexing a table takes its owner and locks it.
pub(super) fn create_index(c: &mut Collector<'_>, create: &CreateIndex) -> Result<(), ClassifyError> {
    c.set_verb("CREATE INDEX");
    c.table(actions::ALTER, &create.table_name)?;
    if let Some(index) = &create.name {
        c.claim(index);
        let default = c.res.default_schema().to_string();
        let (schema, _) = c.res.resolve(&create.table_name, &default)?;
        let resource = c.res.relation_in(index, &schema)?;
        c.add(actions::CREATE, resource);
    }
    Ok(())
}

/// `CREATE SEQUENCE`, `CREATE TYPE`, `CREATE DOMAIN`: a schema-qualified object.
pub(super) fn create_object(c: &mut Collector<'_>, verb: &str, name: &ObjectName) -> Result<(), ClassifyError> {
    c.set_verb(verb);
    c.table(actions::CREATE, name)
}

pub(super) fn alter_object(c: &mut Collector<'_>, verb: &str, name: &ObjectName) -> Result<(), ClassifyError> {
    c.set_verb(verb);
    c.table(actions::ALTER, name)
}

pub(super) fn create_schema(c: &mut Collector<'_>, name: &SchemaName) -> Result<(), ClassifyError> {
    c.set_verb("CREATE SCHEMA");
    let schema = match name {
        SchemaName::Simple(name) | SchemaName::NamedAuthorization(name, _) => c.res.single(name)?,
        SchemaName::UnnamedAuthorization(role) => normalize(role),
    };
    let resource = c.res.schema(&schema);
    c.add(actions::CREATE, resource);
    Ok(())
}

pub(super) fn alter_schema(c: &mut Collector<'_>, name: &ObjectName) -> Result<(), ClassifyError> {
    c.set_verb("ALTER SCHEMA");
    let resource = c.res.schema(&c.res.single(name)?);
    c.add(actions::ALTER, resource);
    Ok(())
}

pub(super) fn create_database(c: &mut Collector<'_>, name: &ObjectName) -> Result<(), ClassifyError> {
    c.set_verb("CREATE DATABASE");
    let resource = c.res.named("database", &c.res.single(name)?);
    c.add(actions::CREATE, resource);
    Ok(())
}

/// `CREATE FUNCTION`: `CREATE` on the function, plus `CREATE_UNTRUSTED_FUNCTION` for a language
/// that can reach the operating system (`c`, `internal`, `plpython3u` and the other `…u`
/// languages) and `SECURITY_DEFINER` for a function that runs with its owner's rights.
pub(super) fn create_function(c: &mut Collector<'_>, create: &CreateFunction) -> Result<(), ClassifyError> {
    c.set_verb("CREATE FUNCTION");
    let resource = function_resource(c, &create.name)?;
    c.add(actions::CREATE, resource.clone());
    if let Some(language) = &create.language {
        let language = normalize(language);
        if language == "c" || language == "internal" || language.ends_with('u') {
            c.add(actions::CREATE_UNTRUSTED_FUNCTION, resource.clone());
        }
    }
    if let Some(FunctionSecurity::Definer) = create.security {
        c.add(actions::SECURITY_DEFINER, resource);
    }
    Ok(())
}

fn function_resource(c: &Collector<'_>, name: &ObjectName) -> Result<String, ClassifyError> {
    let (schema, object) = c.res.resolve(name, c.res.default_schema())?;
    Ok(c.res.function(&schema, &object))
}

/// `CREATE TRIGGER … ON table`: `CREATE_TRIGGER` on the table it fires on.
pub(super) fn create_trigger(c: &mut Collector<'_>, create: &CreateTrigger) -> Result<(), ClassifyError> {
    c.set_verb("CREATE TRIGGER");
    c.claim(&create.name);
    c.table(actions::CREATE_TRIGGER, &create.table_name)
}

pub(super) fn drop_trigger(c: &mut Collector<'_>, drop: &DropTrigger) -> Result<(), ClassifyError> {
    c.set_verb("DROP TRIGGER");
    c.claim(&drop.trigger_name);
    match &drop.table_name {
        Some(table) => c.table(actions::DROP_TRIGGER, table),
        None => Err(ClassifyError::new("unclassified statement: DROP TRIGGER without ON table")),
    }
}

pub(super) fn create_extension(c: &mut Collector<'_>, create: &CreateExtension) -> Result<(), ClassifyError> {
    c.set_verb("CREATE EXTENSION");
    let resource = c.res.named("extension", &normalize(&create.name));
    c.add(actions::CREATE_EXTENSION, resource);
    Ok(())
}

pub(super) fn drop_extension(c: &mut Collector<'_>, drop: &DropExtension) -> Result<(), ClassifyError> {
    c.set_verb("DROP EXTENSION");
    for name in &drop.names {
        let resource = c.res.named("extension", &normalize(name));
        c.add(actions::DROP_EXTENSION, resource);
    }
    Ok(())
}

pub(super) fn create_role(c: &mut Collector<'_>, create: &CreateRole) -> Result<(), ClassifyError> {
    c.set_verb("CREATE ROLE");
    for name in &create.names {
        let resource = c.res.named("role", &c.res.single(name)?);
        c.add(actions::CREATE_ROLE, resource);
    }
    Ok(())
}

/// A statement about one role (`ALTER ROLE`).
pub(super) fn role(c: &mut Collector<'_>, verb: &str, action: &str, name: &Ident) -> Result<(), ClassifyError> {
    c.set_verb(verb);
    let resource = c.res.named("role", &normalize(name));
    c.add(action, resource);
    Ok(())
}

/// `ALTER ROLE name …`: `ALTER_ROLE` on the role. `ALTER ROLE … SET` of a setting that changes the
/// session (identity, name resolution, how the server lexes SQL) also needs that setting's own
/// action: every later session of the role (of every role, with `ALTER ROLE ALL`) starts with it,
/// including broker sessions of a role that is reused (a Vault static role).
pub(super) fn alter_role(c: &mut Collector<'_>, name: &Ident, operation: &AlterRoleOperation) -> Result<(), ClassifyError> {
    role(c, "ALTER ROLE", actions::ALTER_ROLE, name)?;
    if let AlterRoleOperation::Set { config_name, config_value, .. } = operation {
        let setting = idents(config_name)?.join(".");
        let values = match config_value {
            SetConfigValue::Value(expr) => session::value_text(expr).map(|v| vec![v]),
            SetConfigValue::Default | SetConfigValue::FromCurrent => None,
        };
        let action = settings::setting_action(&setting, values.as_deref(), c.res.default_schema(), actions::ALTER_ROLE);
        if action != actions::ALTER_ROLE {
            let resource = c.res.named("setting", &setting);
            c.add(action, resource);
        }
    }
    Ok(())
}

/// `DROP TABLE a, b`, `DROP VIEW`, `DROP SCHEMA`, `DROP ROLE`, …
pub(super) fn drop(c: &mut Collector<'_>, object_type: &ObjectType, names: &[ObjectName]) -> Result<(), ClassifyError> {
    c.set_verb(format!("DROP {object_type}"));
    for name in names {
        c.claim(name);
        let (action, resource) = match object_type {
            ObjectType::Table
            | ObjectType::ForeignTable
            | ObjectType::View
            | ObjectType::MaterializedView
            | ObjectType::Index
            | ObjectType::Sequence
            | ObjectType::Type
            | ObjectType::Collation => (actions::DROP, c.res.relation(name)?),
            ObjectType::Schema => (actions::DROP, c.res.schema(&c.res.single(name)?)),
            ObjectType::Database => (actions::DROP, c.res.named("database", &c.res.single(name)?)),
            ObjectType::Role | ObjectType::User | ObjectType::Group => (actions::DROP_ROLE, c.res.named("role", &c.res.single(name)?)),
            _ => return Err(ClassifyError::new(format!("unclassified statement: DROP {object_type}"))),
        };
        c.add(action, resource);
    }
    Ok(())
}

pub(super) fn drop_function(c: &mut Collector<'_>, drop: &DropFunction) -> Result<(), ClassifyError> {
    c.set_verb("DROP FUNCTION");
    for function in &drop.func_desc {
        let resource = function_resource(c, &function.name)?;
        c.add(actions::DROP, resource);
    }
    Ok(())
}

pub(super) fn truncate(c: &mut Collector<'_>, truncate: &Truncate) -> Result<(), ClassifyError> {
    c.set_verb("TRUNCATE");
    for target in &truncate.table_names {
        c.table(actions::TRUNCATE, &target.name)?;
    }
    Ok(())
}

/// `GRANT`/`REVOKE` privileges `ON` objects: the action on each object named.
pub(super) fn grant(c: &mut Collector<'_>, verb: &str, action: &str, objects: Option<&GrantObjects>) -> Result<(), ClassifyError> {
    c.set_verb(verb);
    let unclassified = || ClassifyError::new(format!("unclassified statement: {verb} on these objects"));
    match objects.ok_or_else(unclassified)? {
        GrantObjects::Tables(names) | GrantObjects::Sequences(names) | GrantObjects::Views(names) => {
            for name in names {
                c.table(action, name)?;
            }
        }
        GrantObjects::Schemas(names)
        | GrantObjects::AllTablesInSchema { schemas: names }
        | GrantObjects::AllSequencesInSchema { schemas: names }
        | GrantObjects::AllViewsInSchema { schemas: names }
        | GrantObjects::AllFunctionsInSchema { schemas: names } => {
            for name in names {
                let resource = c.res.schema(&c.res.single(name)?);
                c.add(action, resource);
            }
        }
        GrantObjects::Databases(names) => {
            for name in names {
                let resource = c.res.named("database", &c.res.single(name)?);
                c.add(action, resource);
            }
        }
        GrantObjects::Functions(functions) | GrantObjects::Procedures(functions) | GrantObjects::Routines(functions) => {
            for function in functions {
                let resource = function_resource(c, &function.name)?;
                c.add(action, resource);
            }
        }
        _ => return Err(unclassified()),
    }
    Ok(())
}

/// `GRANT role TO grantee` / `REVOKE role FROM grantee`: the action on each role handed out.
pub(super) fn grant_role(c: &mut Collector<'_>, verb: &str, action: &str, roles: &[Ident]) -> Result<(), ClassifyError> {
    c.set_verb(verb);
    for role in roles {
        let resource = c.res.named("role", &normalize(role));
        c.add(action, resource);
    }
    Ok(())
}

pub(super) fn comment(c: &mut Collector<'_>, object_type: &CommentObject, name: &ObjectName) -> Result<(), ClassifyError> {
    c.set_verb("COMMENT");
    c.claim(name);
    let resource = match object_type {
        CommentObject::Table
        | CommentObject::View
        | CommentObject::MaterializedView
        | CommentObject::Index
        | CommentObject::Sequence
        | CommentObject::Type
        | CommentObject::Domain
        | CommentObject::ForeignTable
        | CommentObject::Collation => c.res.relation(name)?,
        CommentObject::Column => {
            // `table.column` or `schema.table.column`: the comment changes the table.
            let mut parts = name.0.clone();
            parts.pop();
            if parts.is_empty() {
                return Err(ClassifyError::new("unclassified statement: COMMENT ON COLUMN"));
            }
            c.res.relation(&ObjectName(parts))?
        }
        CommentObject::Schema => c.res.schema(&c.res.single(name)?),
        CommentObject::Database => c.res.named("database", &c.res.single(name)?),
        CommentObject::Extension => c.res.named("extension", &c.res.single(name)?),
        CommentObject::Role | CommentObject::User => c.res.named("role", &c.res.single(name)?),
        CommentObject::Function | CommentObject::Procedure => function_resource(c, name)?,
    };
    c.add(actions::COMMENT, resource);
    Ok(())
}

/// `VACUUM [table]`, `ANALYZE [table]`: on the table, or on the whole database.
pub(super) fn maintenance(c: &mut Collector<'_>, verb: &str, table: Option<&ObjectName>) -> Result<(), ClassifyError> {
    c.set_verb(verb);
    let action = if verb == "VACUUM" { actions::VACUUM } else { actions::ANALYZE };
    match table {
        Some(table) => c.table(action, table),
        None => {
            c.add_database(action);
            Ok(())
        }
    }
}

pub(super) fn lock(c: &mut Collector<'_>, lock: &Lock) -> Result<(), ClassifyError> {
    c.set_verb("LOCK");
    for target in &lock.tables {
        c.table(actions::LOCK, &target.name)?;
    }
    Ok(())
}

pub(super) fn refresh(c: &mut Collector<'_>, name: &ObjectName) -> Result<(), ClassifyError> {
    c.set_verb("REFRESH MATERIALIZED VIEW");
    c.table(actions::REFRESH, name)
}
