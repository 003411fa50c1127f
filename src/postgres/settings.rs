//! Settings that reach the session outside SQL statements: those the agent's startup packet asks
//! for, and those the server reports (`ParameterStatus`). Both are held to what the statement
//! check assumes: a startup that asks for a session-changing setting is refused like the `SET`
//! would be, and a server that reports a setting under which it would read SQL text differently
//! from the broker (see `classify::postgres::lexing`) ends the session.

use crate::classify::postgres::lexing::{is_lexing_setting, keeps_lexing};
use crate::classify::postgres::{classify_setting, is_session_changing, Database, StatementScope};

use super::wire;

/// The encoding every session speaks: the one the broker decodes query text in.
pub const CLIENT_ENCODING: &str = "UTF8";

/// Startup parameters that are the protocol's own, not run-time settings.
const PROTOCOL_PARAMETERS: &[&str] = &["user", "database", "options", "replication"];

/// The run-time settings a startup packet asks for, `(name, value)`: every parameter that is not
/// the protocol's own (the server takes any other as a setting), and each `-c name=value` or
/// `--name=value` in `options`, whose names the server reads with `-` as `_`. Protocol
/// extensions (`_pq_.…`) are not settings.
pub fn startup_settings(params: &[(String, String)]) -> Vec<(String, String)> {
    let mut settings: Vec<(String, String)> =
        params.iter().filter(|(k, _)| !PROTOCOL_PARAMETERS.contains(&k.as_str()) && !k.starts_with("_pq_.")).cloned().collect();
    for (_, options) in params.iter().filter(|(k, _)| k == "options") {
        let words = split_options(options);
        let mut words = words.iter();
        while let Some(word) = words.next() {
            let assignment = match word.strip_prefix("--") {
                Some(long) => Some(long.to_string()),
                None => match word.strip_prefix("-c") {
                    Some("") => words.next().cloned(),
                    Some(inline) => Some(inline.to_string()),
                    // Other switches (`-B`, `-d`, …) set no setting a session may change.
                    None => None,
                },
            };
            if let Some((name, value)) = assignment.as_deref().and_then(|a| a.split_once('=')) {
                settings.push((name.replace('-', "_"), value.to_string()));
            }
        }
    }
    settings
}

/// `options` as the server splits it (`pg_split_opts`): at unescaped whitespace, with `\` taking
/// the next character literally.
fn split_options(options: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_ascii_whitespace() => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// The first setting of a startup that changes the session (its scope), with the reason the agent
/// reads; `None` when the startup asks for nothing the statement check would deny by default.
pub fn refused_startup_setting(params: &[(String, String)], db: &Database) -> Option<(StatementScope, String)> {
    startup_settings(params).into_iter().find_map(|(name, value)| {
        let statement = classify_setting(&name, &value, db);
        let action = statement.scope.permissions.iter().find(|p| is_session_changing(&p.action))?.action.clone();
        let reason = format!("the startup parameter {name}={value} changes the session ({action}) and is not allowed through the broker");
        Some((statement, reason))
    })
}

/// The startup parameters passed on to the server: the `allowed` ones the agent sent, with
/// `client_encoding` pinned to [`CLIENT_ENCODING`] when the agent did not name one (the server's
/// default would otherwise be the database's or the server's configured encoding).
pub fn forwarded_parameters(params: Vec<(String, String)>, allowed: &[&str]) -> Vec<(String, String)> {
    let mut forwarded: Vec<(String, String)> = params.into_iter().filter(|(k, _)| allowed.contains(&k.as_str())).collect();
    if !forwarded.iter().any(|(k, _)| k == "client_encoding") {
        forwarded.push(("client_encoding".into(), CLIENT_ENCODING.into()));
    }
    forwarded
}

/// A server `ParameterStatus` (its body) that reports a lexing setting at a value under which the
/// server reads SQL differently from the broker: `(name, value)`. A report of such a setting that
/// cannot be read counts as one.
pub fn changed_lexing(body: &[u8]) -> Option<(String, String)> {
    let (name, rest) = wire::cstr(body).ok()?;
    if !is_lexing_setting(name) {
        return None;
    }
    match wire::cstr(rest) {
        Ok((value, _)) if keeps_lexing(name, value) => None,
        Ok((value, _)) => Some((name.to_string(), value.to_string())),
        Err(_) => Some((name.to_string(), "(unreadable)".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Database {
        Database { host: "db.internal".into(), name: "app".into(), default_schema: "public".into() }
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn options_are_split_as_the_server_does() {
        let got = startup_settings(&params(&[
            ("user", "agent"),
            ("options", r"-c standard_conforming_strings=off --search-path=evil -cstatement_timeout=5s -B 10 -c application_name=a\ b"),
        ]));
        let want = params(&[("standard_conforming_strings", "off"), ("search_path", "evil"), ("statement_timeout", "5s"), ("application_name", "a b")]);
        assert_eq!(got, want);
    }

    #[test]
    fn startups_that_change_the_session_are_refused() {
        for (pairs, action) in [
            (&[("options", "-c standard_conforming_strings=off")][..], "postgres:SET_LEXING"),
            (&[("options", "--standard-conforming-strings=off")][..], "postgres:SET_LEXING"),
            (&[("client_encoding", "SJIS")][..], "postgres:SET_LEXING"),
            (&[("client_encoding", "BIG5")][..], "postgres:SET_LEXING"),
            (&[("standard_conforming_strings", "off")][..], "postgres:SET_LEXING"),
            (&[("options", "-c role=broker_admin")][..], "postgres:SET_ROLE"),
            (&[("options", "-c search_path=evil,public")][..], "postgres:SET_SEARCH_PATH"),
        ] {
            let (statement, reason) = refused_startup_setting(&params(pairs), &db()).unwrap_or_else(|| panic!("{pairs:?} was not refused"));
            assert_eq!(statement.scope.permissions[0].action, action, "{pairs:?}");
            assert!(reason.contains(action), "{reason}");
        }
        for pairs in [
            &[("user", "agent"), ("database", "app"), ("application_name", "psql"), ("client_encoding", "UTF8")][..],
            &[("options", "-c statement_timeout=5s -c search_path=public")][..],
            &[("_pq_.compression", "on")][..],
        ] {
            assert!(refused_startup_setting(&params(pairs), &db()).is_none(), "{pairs:?} was refused");
        }
    }

    #[test]
    fn client_encoding_is_pinned_when_not_asked_for() {
        let allowed = &["application_name", "client_encoding"];
        let forwarded = forwarded_parameters(params(&[("application_name", "psql"), ("options", "-c x=y")]), allowed);
        assert_eq!(forwarded, params(&[("application_name", "psql"), ("client_encoding", "UTF8")]));
        let forwarded = forwarded_parameters(params(&[("client_encoding", "utf-8")]), allowed);
        assert_eq!(forwarded, params(&[("client_encoding", "utf-8")]));
    }

    #[test]
    fn server_reports_that_change_lexing_are_found() {
        let report = |name: &str, value: &str| [name.as_bytes(), b"\0", value.as_bytes(), b"\0"].concat();
        assert_eq!(changed_lexing(&report("standard_conforming_strings", "off")), Some(("standard_conforming_strings".into(), "off".into())));
        assert_eq!(changed_lexing(&report("client_encoding", "SJIS")), Some(("client_encoding".into(), "SJIS".into())));
        assert_eq!(changed_lexing(&report("standard_conforming_strings", "on")), None);
        assert_eq!(changed_lexing(&report("client_encoding", "UTF8")), None);
        assert_eq!(changed_lexing(&report("application_name", "anything")), None);
        assert!(changed_lexing(b"client_encoding\0\xff\xfe\0").is_some());
    }
}
