//! Function calls: table functions in `FROM`, calls in expressions, and `set_config`.
//!
//! A function can read files, kill backends or run any SQL it likes, so calls are not free:
//! - known, side-effect-free built-ins (`count`, `lower`, `now`, `pg_get_*`, …) need nothing;
//! - dangerous built-ins (`pg_read_file`, `lo_export`, `dblink*`, `pg_terminate_backend`,
//!   `query_to_xml`, …) need `postgres:EXECUTE` on `postgres://HOST/DB/pg_catalog.NAME()`;
//! - every other function (user-defined ones may write tables or be `SECURITY DEFINER`) needs
//!   `postgres:EXECUTE` on `postgres://HOST/DB/SCHEMA.NAME()`, the default schema when unqualified;
//! - a table function in `FROM` always needs `postgres:EXECUTE` on its resource;
//! - `set_config(name, value, local)` is classified like `SET name`: see [`setting_action`].

use sqlparser::ast::{Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName, ObjectNamePart, TableFactor};

use super::collector::Collector;
use super::names::PG_CATALOG;
use super::{actions, settings};
use crate::classify::ClassifyError;

/// Side-effect-free built-ins, called freely. Unknown names are not assumed safe.
const SAFE: &str = "\
    count sum avg min max array_agg string_agg json_agg jsonb_agg json_object_agg \
    jsonb_object_agg bool_and bool_or every bit_and bit_or bit_xor stddev stddev_pop stddev_samp \
    variance var_pop var_samp corr covar_pop covar_samp regr_slope regr_intercept \
    percentile_cont percentile_disc mode rank dense_rank row_number ntile lag lead first_value \
    last_value nth_value cume_dist percent_rank grouping \
    now current_timestamp current_date current_time localtime localtimestamp clock_timestamp \
    statement_timestamp transaction_timestamp timeofday date_trunc date_part date_bin extract \
    age to_char to_date to_timestamp to_number make_date make_time make_timestamp \
    make_timestamptz make_interval justify_days justify_hours justify_interval isfinite \
    lower upper initcap length char_length character_length octet_length bit_length substr \
    substring position strpos trim btrim ltrim rtrim lpad rpad replace translate concat \
    concat_ws format left right repeat reverse split_part regexp_replace regexp_match \
    regexp_matches regexp_split_to_array regexp_split_to_table regexp_like regexp_count \
    regexp_instr regexp_substr starts_with ascii chr md5 sha224 sha256 sha384 sha512 encode \
    decode quote_ident quote_literal quote_nullable to_hex string_to_array string_to_table \
    array_to_string unistr normalize to_ascii \
    abs ceil ceiling floor round trunc sign sqrt cbrt exp ln log log10 power pow mod div pi \
    degrees radians random sin cos tan cot asin acos atan atan2 sinh cosh tanh gcd lcm \
    width_bucket greatest least coalesce nullif num_nulls num_nonnulls \
    array_length array_lower array_upper array_dims array_ndims array_position \
    array_positions array_append array_prepend array_cat array_remove array_replace \
    array_fill cardinality unnest generate_series generate_subscripts \
    json_build_object jsonb_build_object json_build_array jsonb_build_array json_object \
    jsonb_object to_json to_jsonb row_to_json array_to_json json_array_length \
    jsonb_array_length json_extract_path jsonb_extract_path json_extract_path_text \
    jsonb_extract_path_text json_typeof jsonb_typeof jsonb_set jsonb_set_lax jsonb_insert \
    jsonb_pretty jsonb_strip_nulls json_strip_nulls json_each jsonb_each json_each_text \
    jsonb_each_text json_array_elements jsonb_array_elements json_array_elements_text \
    jsonb_array_elements_text json_object_keys jsonb_object_keys json_populate_record \
    jsonb_populate_record json_populate_recordset jsonb_populate_recordset json_to_record \
    jsonb_to_record json_to_recordset jsonb_to_recordset jsonb_path_query jsonb_path_exists \
    jsonb_path_match jsonb_path_query_array jsonb_path_query_first \
    to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank \
    ts_rank_cd ts_headline setweight \
    version current_user session_user current_role user current_schema current_schemas \
    current_database current_catalog current_setting pg_backend_pid inet_client_addr \
    inet_client_port inet_server_addr inet_server_port pg_postmaster_start_time \
    pg_conf_load_time pg_is_in_recovery txid_current pg_current_xact_id pg_typeof \
    pg_column_size pg_size_pretty pg_size_bytes pg_relation_size pg_total_relation_size \
    pg_table_size pg_indexes_size pg_database_size pg_tablespace_size pg_encoding_to_char \
    pg_char_to_encoding format_type obj_description col_description shobj_description \
    pg_describe_object pg_identify_object pg_identify_object_as_address row_security_active \
    pg_jit_available pg_listening_channels pg_my_temp_schema pg_is_other_temp_schema \
    pg_trigger_depth pg_blocking_pids pg_sleep pg_sleep_for pg_sleep_until currval lastval \
    gen_random_uuid pg_advisory_lock pg_advisory_unlock pg_advisory_unlock_all \
    pg_try_advisory_lock pg_advisory_xact_lock pg_try_advisory_xact_lock \
";

/// Prefixes and suffixes of catalog-reading built-ins (`pg_get_viewdef`, `has_table_privilege`,
/// `pg_table_is_visible`), as psql's `\d` queries use many of them.
const SAFE_PREFIXES: &[&str] = &["pg_get_", "has_", "pg_has_"];
const SAFE_SUFFIXES: &[&str] = &["_is_visible"];

/// Built-ins that read or write server files, signal backends, reach other servers, change
/// sequences or run SQL given as a string (whose tables cannot be known here).
const DANGEROUS: &str = "\
    pg_read_file pg_read_binary_file pg_ls_dir pg_stat_file lo_import lo_export loread lowrite \
    pg_terminate_backend pg_cancel_backend pg_reload_conf pg_rotate_logfile pg_promote \
    pg_switch_wal pg_create_restore_point pg_start_backup pg_stop_backup \
    pg_log_backend_memory_contexts pg_notify nextval setval ts_stat ts_rewrite \
    pg_import_system_collations pg_logdir_ls pg_current_logfile \
";
const DANGEROUS_PREFIXES: &[&str] = &[
    "dblink",
    "lo_",
    "pg_read_",
    "pg_ls_",
    "pg_file_",
    "pg_stat_reset",
    "pg_create_",
    "pg_drop_",
    "pg_replication_",
    "pg_logical_",
    "pg_wal_",
    "pg_backup_",
    "query_to_xml",
    "table_to_xml",
    "cursor_to_xml",
    "schema_to_xml",
    "database_to_xml",
];

fn listed(list: &str, name: &str) -> bool {
    list.split_ascii_whitespace().any(|known| known == name)
}

fn is_safe(name: &str) -> bool {
    listed(SAFE, name) || SAFE_PREFIXES.iter().any(|p| name.starts_with(p)) || SAFE_SUFFIXES.iter().any(|s| name.ends_with(s))
}

fn is_dangerous(name: &str) -> bool {
    listed(DANGEROUS, name) || DANGEROUS_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// (schema written by the caller, if any; function name), normalised.
fn split_name(c: &Collector<'_>, name: &ObjectName) -> Result<(Option<String>, String), ClassifyError> {
    let (schema, object) = c.res.resolve(name, "")?;
    Ok(((!schema.is_empty()).then_some(schema), object))
}

/// The schema an unqualified function resolves to: built-ins live in pg_catalog, which Postgres
/// searches first; anything else is taken to be in the default schema.
fn function_schema(c: &Collector<'_>, schema: Option<String>, name: &str) -> String {
    match schema {
        Some(schema) => schema,
        None if is_safe(name) || is_dangerous(name) || name == "set_config" => PG_CATALOG.to_string(),
        None => c.res.default_schema().to_string(),
    }
}

/// A function called inside an expression.
pub(super) fn call(c: &mut Collector<'_>, function: &Function) -> Result<(), ClassifyError> {
    if is_array_constructor(function) {
        // `ARRAY(SELECT …)` is syntax, not a call; the walk still reads the subquery.
        return Ok(());
    }
    let (schema, name) = split_name(c, &function.name)?;
    let builtin_schema = schema.as_deref().is_none_or(|s| s == PG_CATALOG);
    if builtin_schema && name == "set_config" {
        return set_config(c, list_args(&function.args));
    }
    if builtin_schema && !is_dangerous(&name) && is_safe(&name) {
        return Ok(());
    }
    let schema = function_schema(c, schema, &name);
    let resource = c.res.function(&schema, &name);
    c.add(actions::EXECUTE, resource);
    Ok(())
}

/// A function that is executed however it is spelled (`CALL p()`, a table function in `FROM`).
pub(super) fn execute(c: &mut Collector<'_>, name: &ObjectName, args: &[FunctionArg]) -> Result<(), ClassifyError> {
    let (schema, fname) = split_name(c, name)?;
    if schema.as_deref().is_none_or(|s| s == PG_CATALOG) && fname == "set_config" {
        return set_config(c, args);
    }
    let schema = function_schema(c, schema, &fname);
    let resource = c.res.function(&schema, &fname);
    c.add(actions::EXECUTE, resource);
    Ok(())
}

/// Table functions in `FROM`: `generate_series(1, 3)`, `LATERAL f(x)`.
pub(super) fn table_factor(c: &mut Collector<'_>, factor: &TableFactor) -> Result<(), ClassifyError> {
    match factor {
        TableFactor::Table { name, args: Some(args), .. } => {
            // The name is a function, not a relation: keep the walk from reading it as a table.
            c.claim(name);
            execute(c, name, &args.args)
        }
        TableFactor::Function { name, args, .. } => execute(c, name, args),
        _ => Ok(()),
    }
}

/// `ARRAY(subquery)`: sqlparser parses it as a call to `ARRAY`, a reserved word in Postgres that no
/// unquoted user function can be named.
fn is_array_constructor(function: &Function) -> bool {
    let [ObjectNamePart::Identifier(ident)] = function.name.0.as_slice() else {
        return false;
    };
    ident.quote_style.is_none() && ident.value.eq_ignore_ascii_case("array") && matches!(function.args, FunctionArguments::Subquery(_))
}

fn list_args(args: &FunctionArguments) -> &[FunctionArg] {
    match args {
        FunctionArguments::List(list) => &list.args,
        FunctionArguments::None | FunctionArguments::Subquery(_) => &[],
    }
}

/// `set_config('name', 'value', is_local)`: like `SET name = value`. The setting must be a literal:
/// a placeholder could name `role` and is refused.
fn set_config(c: &mut Collector<'_>, args: &[FunctionArg]) -> Result<(), ClassifyError> {
    let Some(setting) = literal_arg(args, 0, "setting_name") else {
        return Err(ClassifyError::new("unclassified statement: set_config with a setting name that is not a literal"));
    };
    // Setting names compare ASCII case-insensitively (`guc_name_compare`).
    let setting = setting.to_ascii_lowercase();
    let value = literal_arg(args, 1, "new_value");
    let action = settings::setting_action(&setting, value.as_deref().map(settings::split_search_path).as_deref(), c.res.default_schema(), actions::SET_CONFIG);
    let resource = c.res.named("setting", &setting);
    c.add(action, resource);
    Ok(())
}

/// The string literal passed as argument `position` (or by `name =>`), looking through casts.
fn literal_arg(args: &[FunctionArg], position: usize, name: &str) -> Option<String> {
    let by_name = args.iter().find_map(|arg| match arg {
        FunctionArg::Named { name: n, arg, .. } if n.value.eq_ignore_ascii_case(name) => Some(arg),
        _ => None,
    });
    let arg = match by_name {
        Some(arg) => arg,
        None => match args.get(position)? {
            FunctionArg::Unnamed(arg) => arg,
            _ => return None,
        },
    };
    match arg {
        FunctionArgExpr::Expr(expr) => literal(expr),
        _ => None,
    }
}

fn literal(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Value(value) => value.value.clone().into_string(),
        Expr::Cast { expr, .. } | Expr::Nested(expr) => literal(expr),
        _ => None,
    }
}
