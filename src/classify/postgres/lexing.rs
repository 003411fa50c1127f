//! Settings that change how the server reads the SQL text the broker classified.
//!
//! The broker reads a query string one way only: sqlparser's `PostgreSqlDialect` takes a backslash
//! in `'…'` literally (it does not honour `standard_conforming_strings`; it always lexes as if the
//! setting were `on`), takes backslash escapes in `E'…'`, and the relay decodes the text as UTF-8
//! (`wire::cstr` refuses anything else). If the server read the same bytes differently, a literal
//! the broker saw as one string could end early on the server, and what follows would run
//! unclassified:
//!
//! ```sql
//! SELECT 'a\'; DELETE FROM orders; --'   -- one SELECT to the broker; with
//!                                        -- standard_conforming_strings = off, a SELECT and a
//!                                        -- DELETE to the server
//! ```
//!
//! So the server is held to the broker's reading: a change away from it is
//! [`SET_LEXING`](super::actions::SET_LEXING), denied by default like `SET ROLE`, however it is
//! asked for (`SET`, `SET LOCAL`, `SET NAMES`, `set_config`, `RESET`, `ALTER ROLE … SET`, the
//! startup packet), and the Postgres relay ends a session whose server reports another value.
//!
//! The settings, one by one:
//! - `standard_conforming_strings`: must stay `on` (see above).
//! - `client_encoding`: must be UTF-8, the encoding the broker decodes. Client-only encodings
//!   (SJIS, BIG5, GBK, UHC, GB18030, JOHAB, SHIFT_JIS_2004) have multibyte characters whose trail
//!   byte is 0x5c (`\`): bytes that are valid UTF-8, such as U+0081 followed by `\'`, end an `E'…'`
//!   literal on an SJIS server where the broker sees an escaped quote. The ASCII-safe encodings
//!   (LATIN1, EUC_JP, …) lex the same but read every non-ASCII byte as another character, so a
//!   non-ASCII identifier would be a different name to the server than in the policy's resource.
//! - `backslash_quote`: decides whether `\'` may stand for a quote. Under UTF-8 `on` reads like the
//!   broker, but it is the second half of the client-encoding attack (the default `safe_encoding`
//!   refuses `\'` under client-only encodings); `safe_encoding` and `off` (which only makes the
//!   server refuse more) are kept, everything else is a change.
//! - not lexing, so ordinary settings: `escape_string_warning` (only warns about backslashes in
//!   `'…'`), `transform_null_equals`, `array_nulls`, `DateStyle`/`IntervalStyle`, `xmloption`,
//!   `bytea_output`, `quote_all_identifiers` (they change values or output, not which text is a
//!   statement or a name). `search_path` changes name resolution and is handled in `settings`.

/// Whether `setting` (a GUC name, any case) decides how the server lexes SQL text.
pub fn is_lexing_setting(setting: &str) -> bool {
    LEXING_SETTINGS.iter().any(|s| s.eq_ignore_ascii_case(setting))
}

const LEXING_SETTINGS: &[&str] = &["standard_conforming_strings", "client_encoding", "backslash_quote"];

/// Whether the server, with `setting` at `value` (as `SET` or the server's `ParameterStatus`
/// writes it), still reads SQL text as the broker does. Settings that do not affect lexing always do.
pub fn keeps_lexing(setting: &str, value: &str) -> bool {
    let value = value.trim();
    match setting.to_ascii_lowercase().as_str() {
        "standard_conforming_strings" => is_boolean_on(value),
        "client_encoding" => is_utf8(value),
        "backslash_quote" => value.eq_ignore_ascii_case("safe_encoding") || is_boolean_off(value),
        _ => true,
    }
}

/// Postgres' spellings of a true boolean (`parse_bool`: any prefix of `true` or `yes`, `on`, `1`).
fn is_boolean_on(value: &str) -> bool {
    let v = value.to_ascii_lowercase();
    (!v.is_empty() && ("true".starts_with(&v) || "yes".starts_with(&v))) || v == "on" || v == "1"
}

/// Postgres' spellings of a false boolean (any prefix of `false` or `no`, `off` or `of`, `0`).
fn is_boolean_off(value: &str) -> bool {
    let v = value.to_ascii_lowercase();
    (!v.is_empty() && ("false".starts_with(&v) || "no".starts_with(&v))) || v == "off" || v == "of" || v == "0"
}

/// Whether an encoding name is UTF-8 as Postgres looks names up (`pg_char_to_encoding`: only
/// ASCII letters and digits count, case-insensitively: `UTF8`, `utf-8`, `Unicode`).
fn is_utf8(name: &str) -> bool {
    let cleaned: String = name.chars().filter(char::is_ascii_alphanumeric).map(|c| c.to_ascii_lowercase()).collect();
    matches!(cleaned.as_str(), "utf8" | "unicode")
}
