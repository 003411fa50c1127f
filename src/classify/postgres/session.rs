//! Session and transaction statements: `BEGIN`/`COMMIT`/…, `SET`/`RESET`/`SHOW`, `DISCARD`,
//! `LISTEN`/`NOTIFY`, `DEALLOCATE`, `EXPLAIN`, `LOAD`, cursors.
//!
//! Harmless plumbing gets an action on the database (`postgres:TRANSACTION`) or on a
//! `KIND:NAME` resource (`setting:statement_timeout`, `channel:jobs`). Statements that change who
//! the session is, or how names resolve, get the distinct actions listed in
//! [`super::is_session_changing`].

use sqlparser::ast::{CloseCursor, DiscardObject, Expr, Ident, ObjectName, Reset, Set, SetSessionAuthorizationParamKind, UtilityOption, Value};

use super::collector::Collector;
use super::names::{idents, normalize};
use super::{actions, lexing, settings};
use crate::classify::ClassifyError;

/// `BEGIN`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `RELEASE`, `SET TRANSACTION`.
pub(super) fn transaction(c: &mut Collector<'_>, verb: &str) -> Result<(), ClassifyError> {
    c.set_verb(verb);
    c.add_database(actions::TRANSACTION);
    Ok(())
}

pub(super) fn set(c: &mut Collector<'_>, set: &Set) -> Result<(), ClassifyError> {
    match set {
        Set::SingleAssignment { variable, values, .. } => {
            c.set_verb("SET");
            assignment(c, variable, values)
        }
        Set::MultipleAssignments { assignments } => {
            c.set_verb("SET");
            for a in assignments {
                assignment(c, &a.name, std::slice::from_ref(&a.value))?;
            }
            Ok(())
        }
        Set::SetRole { role_name, .. } => {
            c.set_verb("SET ROLE");
            identity(c, actions::SET_ROLE, role_name.as_ref());
            Ok(())
        }
        Set::SetSessionAuthorization(param) => {
            c.set_verb("SET SESSION AUTHORIZATION");
            let user = match &param.kind {
                SetSessionAuthorizationParamKind::User(user) => Some(user),
                SetSessionAuthorizationParamKind::Default => None,
            };
            identity(c, actions::SET_SESSION_AUTHORIZATION, user);
            Ok(())
        }
        Set::SetTimeZone { .. } => keyword_setting(c, "timezone", None),
        // `SET NAMES x` is `SET client_encoding = x`, whose value decides how the server lexes.
        Set::SetNames { charset_name, .. } => keyword_setting(c, "client_encoding", Some(&[normalize(charset_name)])),
        Set::SetNamesDefault {} => keyword_setting(c, "client_encoding", None),
        Set::SetTransaction { .. } => transaction(c, "SET TRANSACTION"),
        Set::ParenthesizedAssignments { .. } | Set::SetSessionParam(_) => Err(ClassifyError::new(format!("unclassified statement: {set}"))),
    }
}

/// `SET name = values`.
fn assignment(c: &mut Collector<'_>, variable: &ObjectName, values: &[Expr]) -> Result<(), ClassifyError> {
    let setting = idents(variable)?.join(".");
    let literal_values: Option<Vec<String>> = values.iter().map(value_text).collect();
    let action = settings::setting_action(&setting, literal_values.as_deref(), c.res.default_schema(), actions::SET);
    let resource = match action {
        actions::SET_ROLE | actions::SET_SESSION_AUTHORIZATION => {
            // `SET role = x` is `SET ROLE x`: name the role like the keyword form does.
            let role = literal_values.as_ref().and_then(|v| v.first()).cloned();
            match role {
                Some(role) => c.res.named("role", &role),
                None => c.res.database(),
            }
        }
        _ => c.res.named("setting", &setting),
    };
    c.add(action, resource);
    Ok(())
}

/// The text of a `SET` value: an identifier (normalised), a string literal (as written), a
/// number or a boolean (`SET standard_conforming_strings = true`).
pub(super) fn value_text(value: &Expr) -> Option<String> {
    match value {
        Expr::Identifier(ident) => Some(normalize(ident)),
        Expr::Value(value) => match &value.value {
            Value::Number(..) | Value::Boolean(_) => Some(value.value.to_string()),
            other => other.clone().into_string(),
        },
        _ => None,
    }
}

/// A setting changed with its own keyword (`SET TIME ZONE`, `SET NAMES`) to `values` (`None`:
/// not a literal, or `DEFAULT`).
fn keyword_setting(c: &mut Collector<'_>, setting: &str, values: Option<&[String]>) -> Result<(), ClassifyError> {
    c.set_verb("SET");
    let action = settings::setting_action(setting, values, c.res.default_schema(), actions::SET);
    let resource = c.res.named("setting", setting);
    c.add(action, resource);
    Ok(())
}

/// An identity change to a named role, or back to the default (`NONE`, `DEFAULT`).
fn identity(c: &mut Collector<'_>, action: &str, role: Option<&Ident>) {
    let resource = match role {
        Some(role) => c.res.named("role", &normalize(role)),
        None => c.res.database(),
    };
    c.add(action, resource);
}

pub(super) fn reset(c: &mut Collector<'_>, reset: &Reset) -> Result<(), ClassifyError> {
    c.set_verb("RESET");
    let (action, resource) = match reset {
        Reset::ALL => (actions::RESET_ALL, c.res.database()),
        Reset::SessionAuthorization => (actions::RESET_SESSION_AUTHORIZATION, c.res.database()),
        Reset::ConfigurationParameter(name) => {
            let setting = idents(name)?.join(".");
            let action = match setting.as_str() {
                "role" => actions::RESET_ROLE,
                "session_authorization" => actions::RESET_SESSION_AUTHORIZATION,
                // The server's default search_path is not known here.
                "search_path" => actions::SET_SEARCH_PATH,
                // Nor the value a lexing setting returns to (the relay checks the server's
                // reports, but nobody needs to reset these; see `lexing`).
                s if lexing::is_lexing_setting(s) => actions::SET_LEXING,
                _ => actions::SET,
            };
            (action, c.res.named("setting", &setting))
        }
    };
    c.add(action, resource);
    Ok(())
}

/// `DISCARD ALL` resets the session's identity and settings; the other forms only drop caches.
pub(super) fn discard(c: &mut Collector<'_>, object: &DiscardObject) -> Result<(), ClassifyError> {
    c.set_verb("DISCARD");
    c.add_database(match object {
        DiscardObject::ALL => actions::DISCARD,
        DiscardObject::PLANS => actions::DISCARD_PLANS,
        DiscardObject::SEQUENCES => actions::DISCARD_SEQUENCES,
        DiscardObject::TEMP => actions::DISCARD_TEMP,
    });
    Ok(())
}

pub(super) fn show(c: &mut Collector<'_>, variable: &[Ident]) -> Result<(), ClassifyError> {
    c.set_verb("SHOW");
    let setting = variable.iter().map(normalize).collect::<Vec<_>>().join(".");
    let resource = c.res.named("setting", &setting);
    c.add(actions::SHOW, resource);
    Ok(())
}

/// `LISTEN`, `UNLISTEN`, `NOTIFY` on a channel.
pub(super) fn channel(c: &mut Collector<'_>, verb: &str, action: &str, channel: &Ident) -> Result<(), ClassifyError> {
    c.set_verb(verb);
    let resource = c.res.named("channel", &normalize(channel));
    c.add(action, resource);
    Ok(())
}

pub(super) fn deallocate(c: &mut Collector<'_>, name: &Ident) -> Result<(), ClassifyError> {
    c.set_verb("DEALLOCATE");
    let resource = c.res.named("prepared", &normalize(name));
    c.add(actions::DEALLOCATE, resource);
    Ok(())
}

/// `EXPLAIN stmt`: `EXPLAIN` on the database plus everything `stmt` needs (found when the walk
/// reaches it), as Postgres checks the statement's privileges even to plan it. `EXPLAIN ANALYZE`
/// runs the statement, which the verb makes visible.
pub(super) fn explain(c: &mut Collector<'_>, analyze: bool, options: Option<&[UtilityOption]>) -> Result<(), ClassifyError> {
    let analyze = analyze || options.into_iter().flatten().any(is_analyze_on);
    c.set_verb(if analyze { "EXPLAIN ANALYZE" } else { "EXPLAIN" });
    c.add_database(actions::EXPLAIN);
    Ok(())
}

/// `ANALYZE`, `ANALYZE true`, `ANALYZE on`, `ANALYZE 1` in `EXPLAIN (…)`.
fn is_analyze_on(option: &UtilityOption) -> bool {
    if !option.name.value.eq_ignore_ascii_case("analyze") {
        return false;
    }
    match &option.arg {
        None => true,
        Some(arg) => {
            let arg = arg.to_string().to_lowercase();
            !matches!(arg.trim_matches('\''), "false" | "off" | "0" | "no")
        }
    }
}

/// `LOAD 'library'`: loads arbitrary shared code into the backend.
pub(super) fn load(c: &mut Collector<'_>, library: &Ident) -> Result<(), ClassifyError> {
    c.set_verb("LOAD");
    let resource = c.res.named("library", &library.value);
    c.add(actions::LOAD, resource);
    Ok(())
}

/// `FETCH … FROM cursor`: the cursor's query was classified when it was declared.
pub(super) fn cursor(c: &mut Collector<'_>, verb: &str, name: &Ident) -> Result<(), ClassifyError> {
    c.set_verb(verb);
    let resource = c.res.named("cursor", &normalize(name));
    c.add(actions::CURSOR, resource);
    Ok(())
}

pub(super) fn close(c: &mut Collector<'_>, cursor: &CloseCursor) -> Result<(), ClassifyError> {
    match cursor {
        CloseCursor::All => {
            c.set_verb("CLOSE");
            c.add_database(actions::CURSOR);
            Ok(())
        }
        CloseCursor::Specific { name } => self::cursor(c, "CLOSE", name),
    }
}
