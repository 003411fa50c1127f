//! The action vocabulary (`postgres:VERB`) and which actions change the session's identity.

// Data access and DML.
pub const SELECT: &str = "postgres:SELECT";
pub const INSERT: &str = "postgres:INSERT";
pub const UPDATE: &str = "postgres:UPDATE";
pub const DELETE: &str = "postgres:DELETE";
pub const TRUNCATE: &str = "postgres:TRUNCATE";
pub const EXECUTE: &str = "postgres:EXECUTE";
pub const COPY_FROM: &str = "postgres:COPY_FROM";
pub const COPY_TO: &str = "postgres:COPY_TO";
pub const LOCK: &str = "postgres:LOCK";

// Schema changes and privileges.
pub const CREATE: &str = "postgres:CREATE";
pub const ALTER: &str = "postgres:ALTER";
pub const DROP: &str = "postgres:DROP";
pub const COMMENT: &str = "postgres:COMMENT";
pub const GRANT: &str = "postgres:GRANT";
pub const REVOKE: &str = "postgres:REVOKE";
pub const CREATE_TRIGGER: &str = "postgres:CREATE_TRIGGER";
pub const DROP_TRIGGER: &str = "postgres:DROP_TRIGGER";
pub const CREATE_EXTENSION: &str = "postgres:CREATE_EXTENSION";
pub const DROP_EXTENSION: &str = "postgres:DROP_EXTENSION";
pub const CREATE_ROLE: &str = "postgres:CREATE_ROLE";
pub const ALTER_ROLE: &str = "postgres:ALTER_ROLE";
pub const DROP_ROLE: &str = "postgres:DROP_ROLE";
pub const VACUUM: &str = "postgres:VACUUM";
pub const ANALYZE: &str = "postgres:ANALYZE";
pub const REFRESH: &str = "postgres:REFRESH";

// Harmless session plumbing that clients send all the time.
pub const TRANSACTION: &str = "postgres:TRANSACTION";
pub const SHOW: &str = "postgres:SHOW";
pub const SET: &str = "postgres:SET";
pub const SET_CONFIG: &str = "postgres:SET_CONFIG";
pub const DEALLOCATE: &str = "postgres:DEALLOCATE";
pub const LISTEN: &str = "postgres:LISTEN";
pub const UNLISTEN: &str = "postgres:UNLISTEN";
pub const NOTIFY: &str = "postgres:NOTIFY";
pub const EXPLAIN: &str = "postgres:EXPLAIN";
pub const CURSOR: &str = "postgres:CURSOR";
pub const DISCARD_PLANS: &str = "postgres:DISCARD_PLANS";
pub const DISCARD_SEQUENCES: &str = "postgres:DISCARD_SEQUENCES";
pub const DISCARD_TEMP: &str = "postgres:DISCARD_TEMP";

// Session-, role- and server-changing actions: denied by default (see `is_session_changing`).
pub const SET_ROLE: &str = "postgres:SET_ROLE";
pub const SET_SESSION_AUTHORIZATION: &str = "postgres:SET_SESSION_AUTHORIZATION";
pub const RESET_ROLE: &str = "postgres:RESET_ROLE";
pub const RESET_SESSION_AUTHORIZATION: &str = "postgres:RESET_SESSION_AUTHORIZATION";
pub const RESET_ALL: &str = "postgres:RESET_ALL";
pub const DISCARD: &str = "postgres:DISCARD";
pub const SET_SEARCH_PATH: &str = "postgres:SET_SEARCH_PATH";
pub const SET_LEXING: &str = "postgres:SET_LEXING";
pub const DO: &str = "postgres:DO";
pub const COPY_PROGRAM: &str = "postgres:COPY_PROGRAM";
pub const COPY_FILE: &str = "postgres:COPY_FILE";
pub const LOAD: &str = "postgres:LOAD";
pub const ALTER_SYSTEM: &str = "postgres:ALTER_SYSTEM";
pub const CREATE_UNTRUSTED_FUNCTION: &str = "postgres:CREATE_UNTRUSTED_FUNCTION";
pub const SECURITY_DEFINER: &str = "postgres:SECURITY_DEFINER";

/// Actions the broker denies by default, whatever the policy says.
///
/// They change who the session is (`SET ROLE`, `SET SESSION AUTHORIZATION` and their `RESET`s,
/// `RESET ALL`, `DISCARD ALL`), how later names resolve (`SET_SEARCH_PATH`: every later
/// statement's tables would be classified against the wrong schema), how the server reads later
/// SQL text (`SET_LEXING`: see [`super::lexing`]), or run code or touch files
/// outside SQL's view (`DO`, `COPY … PROGRAM`, `COPY … 'file'`, `LOAD`, `ALTER SYSTEM`, functions
/// in untrusted languages, `SECURITY DEFINER` functions). A statement carrying any of these is
/// refused before policy is asked. `SET_CONFIG` (the function form of `SET` on an ordinary
/// setting) is not listed: `set_config` on `role`, `session_authorization` or a widening
/// `search_path` is classified as `SET_ROLE` / `SET_SESSION_AUTHORIZATION` / `SET_SEARCH_PATH`.
pub fn is_session_changing(action: &str) -> bool {
    SESSION_CHANGING.contains(&action)
}

const SESSION_CHANGING: &[&str] = &[
    SET_ROLE,
    SET_SESSION_AUTHORIZATION,
    RESET_ROLE,
    RESET_SESSION_AUTHORIZATION,
    RESET_ALL,
    DISCARD,
    SET_SEARCH_PATH,
    SET_LEXING,
    DO,
    COPY_PROGRAM,
    COPY_FILE,
    LOAD,
    ALTER_SYSTEM,
    CREATE_UNTRUSTED_FUNCTION,
    SECURITY_DEFINER,
];
