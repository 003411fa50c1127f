//! Run-time settings (`SET`, `RESET`, `set_config`, `ALTER ROLE … SET`): which ones change the
//! session's identity, name resolution, or how the server lexes SQL text.

use super::{actions, lexing};

/// The action for changing `setting` (already lower-cased) to `values`.
///
/// `role` and `session_authorization` change who the session is. `search_path` changes what every
/// later unqualified name means, and this classifier resolves such names against the database's
/// default schema; so a `search_path` change is `SET_SEARCH_PATH` (session-changing) unless it
/// keeps that resolution intact: empty (`''`, which pg_dump and pgbench-style clients set for
/// safety), `pg_catalog`, the default schema, or `pg_catalog, <default schema>`. `values` is `None`
/// when the new value is not a literal (or is `DEFAULT`). A setting that decides how the server
/// lexes SQL ([`lexing`]) is `SET_LEXING` unless it is set to exactly one literal value that keeps
/// the broker's reading; `DEFAULT` and non-literals are changes, as the value they stand for is not
/// known here. Every other setting gets `ordinary`.
pub(super) fn setting_action(setting: &str, values: Option<&[String]>, default_schema: &str, ordinary: &'static str) -> &'static str {
    match setting {
        "role" => actions::SET_ROLE,
        "session_authorization" => actions::SET_SESSION_AUTHORIZATION,
        "search_path" if values.is_some_and(|v| keeps_resolution(v, default_schema)) => ordinary,
        "search_path" => actions::SET_SEARCH_PATH,
        s if lexing::is_lexing_setting(s) => match values {
            Some([one]) if lexing::keeps_lexing(s, one) => ordinary,
            _ => actions::SET_LEXING,
        },
        _ => ordinary,
    }
}

/// Whether a `search_path` resolves unqualified names as the classifier assumes.
fn keeps_resolution(values: &[String], default_schema: &str) -> bool {
    let schemas: Vec<&str> = values.iter().map(String::as_str).filter(|v| !v.is_empty()).collect();
    match schemas.as_slice() {
        [] => true,
        [one] => *one == "pg_catalog" || *one == default_schema,
        [first, second] => *first == "pg_catalog" && *second == default_schema,
        _ => false,
    }
}

/// Split a `search_path` string (`'pg_catalog, "My Schema"'`) into schema names, normalised:
/// unquoted names lower-cased (ASCII letters, as Postgres does), quoted ones kept.
pub(super) fn split_search_path(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .map(|item| match item.strip_prefix('"').and_then(|i| i.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\"\"", "\""),
            None => item.to_ascii_lowercase(),
        })
        .collect()
}
