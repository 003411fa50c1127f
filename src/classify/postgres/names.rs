//! Names → resources: identifier normalisation and the `postgres://HOST/DB/...` strings policy sees.

use sqlparser::ast::{Ident, ObjectName, ObjectNamePart};

use super::Database;
use crate::classify::ClassifyError;

/// The schema Postgres always searches first (implicitly, before `search_path`).
pub(super) const PG_CATALOG: &str = "pg_catalog";

/// System catalogs and views that live in `pg_catalog`. An unqualified reference to one of these
/// resolves there (pg_catalog is searched before `search_path`), so it must not be reported as
/// `default_schema.NAME`. Only exact names are listed: a user table called `pg_whatever` in
/// `public` must keep its own resource, or a policy that allows `pg_catalog.*` would cover it.
const PG_CATALOG_RELATIONS: &str = "\
    pg_aggregate pg_am pg_amop pg_amproc pg_attrdef pg_attribute pg_auth_members pg_authid \
    pg_available_extension_versions pg_available_extensions pg_cast pg_class pg_collation \
    pg_config pg_constraint pg_conversion pg_cursors pg_database pg_db_role_setting \
    pg_default_acl pg_depend pg_description pg_enum pg_event_trigger pg_extension \
    pg_file_settings pg_foreign_data_wrapper pg_foreign_server pg_foreign_table pg_group \
    pg_hba_file_rules pg_ident_file_mappings pg_index pg_indexes pg_inherits pg_init_privs \
    pg_language pg_largeobject pg_largeobject_metadata pg_locks pg_matviews pg_namespace \
    pg_opclass pg_operator pg_opfamily pg_partitioned_table pg_policies pg_policy \
    pg_prepared_statements pg_prepared_xacts pg_proc pg_publication pg_publication_rel \
    pg_publication_tables pg_range pg_replication_origin pg_replication_slots pg_rewrite \
    pg_roles pg_rules pg_seclabel pg_seclabels pg_sequence pg_sequences pg_settings pg_shadow \
    pg_shdepend pg_shdescription pg_shseclabel pg_stat_activity pg_stat_all_indexes \
    pg_stat_all_tables pg_stat_archiver pg_stat_bgwriter pg_stat_database \
    pg_stat_database_conflicts pg_stat_progress_vacuum pg_stat_replication pg_stat_ssl \
    pg_stat_subscription pg_stat_sys_indexes pg_stat_sys_tables pg_stat_user_functions \
    pg_stat_user_indexes pg_stat_user_tables pg_stat_wal pg_stat_wal_receiver \
    pg_statio_all_indexes pg_statio_all_tables pg_statio_user_indexes pg_statio_user_tables \
    pg_statistic pg_statistic_ext pg_statistic_ext_data pg_stats pg_stats_ext pg_subscription \
    pg_subscription_rel pg_tables pg_tablespace pg_timezone_abbrevs pg_timezone_names \
    pg_transform pg_trigger pg_ts_config pg_ts_config_map pg_ts_dict pg_ts_parser \
    pg_ts_template pg_type pg_user pg_user_mapping pg_user_mappings pg_views \
";

fn is_catalog_relation(name: &str) -> bool {
    PG_CATALOG_RELATIONS.split_ascii_whitespace().any(|known| known == name)
}

/// Normalise one identifier as Postgres' lexer does, so the resource names the object the server
/// will use: unquoted names fold ASCII letters to lower case (only those: in a UTF-8 database `Ö`
/// stays `Ö`, so `ÖRDERS` is not `örders`), quoted names are kept exactly, and either is cut to
/// [`MAX_IDENTIFIER_BYTES`] at a character boundary, as the server truncates a longer one (with a
/// NOTICE) rather than refusing it.
pub(super) fn normalize(ident: &Ident) -> String {
    let name = match ident.quote_style {
        Some(_) => ident.value.clone(),
        None => ident.value.to_ascii_lowercase(),
    };
    truncate_identifier(name)
}

/// `NAMEDATALEN - 1`: the longest identifier Postgres keeps (`max_identifier_length`).
pub(super) const MAX_IDENTIFIER_BYTES: usize = 63;

fn truncate_identifier(mut name: String) -> String {
    if name.len() > MAX_IDENTIFIER_BYTES {
        let mut cut = MAX_IDENTIFIER_BYTES;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name
}

/// Render one normalised name for a resource string. Names made only of letters, digits, `_` and
/// `$` are written bare; anything else is double-quoted (with `"` doubled) so that a quoted name
/// such as `"a.b"` can never be read as schema `a`, table `b` by a policy pattern.
pub(super) fn render(name: &str) -> String {
    let plain = !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '$');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// Builds resource strings for one database and resolves names against its default schema.
pub(super) struct Resources<'d> {
    db: &'d Database,
}

impl<'d> Resources<'d> {
    pub(super) fn new(db: &'d Database) -> Self {
        Resources { db }
    }

    /// The schema unqualified names resolve to.
    pub(super) fn default_schema(&self) -> &str {
        &self.db.default_schema
    }

    /// `postgres://HOST/DB`: statements that touch no particular object.
    pub(super) fn database(&self) -> String {
        format!("postgres://{}/{}", self.db.host, self.db.name)
    }

    /// `postgres://HOST/DB/SUFFIX`.
    pub(super) fn under(&self, suffix: &str) -> String {
        format!("{}/{}", self.database(), suffix)
    }

    /// `postgres://HOST/DB/KIND:NAME` for objects that live outside schemas (roles, channels,
    /// settings, extensions, databases, cursors, prepared statements).
    pub(super) fn named(&self, kind: &str, name: &str) -> String {
        self.under(&format!("{kind}:{}", render(name)))
    }

    /// `postgres://HOST/DB/SCHEMA`.
    pub(super) fn schema(&self, schema: &str) -> String {
        self.under(&render(schema))
    }

    /// `postgres://HOST/DB/SCHEMA.NAME` for a table, view, sequence, index or type.
    pub(super) fn relation(&self, name: &ObjectName) -> Result<String, ClassifyError> {
        let (schema, object) = self.resolve(name, self.relation_default_schema(name))?;
        Ok(self.under(&format!("{}.{}", render(&schema), render(&object))))
    }

    /// Like [`Self::relation`], but an unqualified name resolves to `schema`.
    pub(super) fn relation_in(&self, name: &ObjectName, schema: &str) -> Result<String, ClassifyError> {
        let (schema, object) = self.resolve(name, schema)?;
        Ok(self.under(&format!("{}.{}", render(&schema), render(&object))))
    }

    /// `postgres://HOST/DB/SCHEMA.NAME()` for a function with an already resolved schema.
    pub(super) fn function(&self, schema: &str, name: &str) -> String {
        self.under(&format!("{}.{}()", render(schema), render(name)))
    }

    /// The schema a name without one resolves to when it is a relation.
    fn relation_default_schema(&self, name: &ObjectName) -> &str {
        match name.0.as_slice() {
            [ObjectNamePart::Identifier(ident)] if is_catalog_relation(&normalize(ident)) => PG_CATALOG,
            _ => &self.db.default_schema,
        }
    }

    /// Split a possibly qualified name into (schema, object), normalised. `db.schema.object` is
    /// accepted only for this database (Postgres itself rejects cross-database references).
    pub(super) fn resolve(&self, name: &ObjectName, default_schema: &str) -> Result<(String, String), ClassifyError> {
        let parts = idents(name)?;
        match parts.as_slice() {
            [object] => Ok((default_schema.to_string(), object.clone())),
            [schema, object] => Ok((schema.clone(), object.clone())),
            [catalog, schema, object] if *catalog == self.db.name => Ok((schema.clone(), object.clone())),
            _ => Err(ClassifyError::new(format!("unclassified statement: name {name} does not name an object in database {}", self.db.name))),
        }
    }

    /// The single, normalised identifier of a schema or other unqualified object.
    pub(super) fn single(&self, name: &ObjectName) -> Result<String, ClassifyError> {
        match idents(name)?.as_slice() {
            [one] => Ok(one.clone()),
            [catalog, one] if *catalog == self.db.name => Ok(one.clone()),
            _ => Err(ClassifyError::new(format!("unclassified statement: {name} is not a simple name"))),
        }
    }
}

/// The normalised identifiers of a name; a name built from a function call is not classified.
pub(super) fn idents(name: &ObjectName) -> Result<Vec<String>, ClassifyError> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Ok(normalize(ident)),
            ObjectNamePart::Function(_) => Err(ClassifyError::new(format!("unclassified statement: name {name} contains a function call"))),
        })
        .collect()
}
