//! The one canonical form of a request path, decided before anything looks at it.
//!
//! The policy sees the canonical path and exactly that path goes upstream, so an agent cannot
//! have the broker decide about one resource while the server serves another. The attacker's
//! lever is any difference between how the broker reads a path and how some server behind it
//! (nginx, Tomcat, IIS, a framework router) reads it. Each such difference is settled here,
//! deliberately, in one of two ways: **rewrite** to a form that every server reads the same way,
//! or **refuse** (400) where there is no such form.
//!
//! | input | decision | why |
//! |---|---|---|
//! | `.` / `..` segments | removed (RFC 3986 §5.2.4) | servers resolve them; the policy must see the result |
//! | `%2e` / `%2E` | read as `.` | servers decode before resolving (`/%2e%2e/` is a climb) |
//! | `..` above the root | refused | RFC 3986 drops it, some servers climb; no honest client sends it |
//! | `//` (empty segments) | merged into `/`, before dot removal | nginx merges first (`merge_slashes`): `/a//../b` is `/b` there, `/a/b` by RFC 3986; merging first gives the stricter answer and one spelling for policy |
//! | `%2f` `%5c` (any case), `\` | refused | some servers decode or convert them to `/` *after* routing (and IIS treats `\` as `/`): no canonical form |
//! | `%00` | refused | truncates paths in C-based servers and file systems |
//! | `..;x` / `.;x` (path parameters) | refused | Tomcat/Jetty strip `;params` and then resolve `..`; nginx does not |
//! | `%41` and other encoded unreserved characters | decoded (RFC 3986 §6.2.2.2) | the same resource either way, and a deny rule on `/admin` must not be dodged with `/%61dmin` |
//! | other escapes (`%3a`, `%e2%82%ac`) | kept, hex upper-cased (§6.2.2.1) | one spelling for the policy; decoding them could change the meaning |
//! | malformed escape (`%zz`, `%u002e`, a lone `%`) | refused | servers disagree (IIS decoded `%u`) |
//! | escapes that are not UTF-8 (`%c0%ae` overlong `.`) | refused | old decoders read overlong forms as `.` and `/` |
//! | `%25` followed by two hex digits | refused | double encoding: a server that decodes twice sees `%2e%2e` as `..` |
//!
//! Not handled here, by choice: Windows' stripping of trailing dots and spaces from names
//! (`/a/... /`) and Unicode look-alikes (full-width `．`); the paths of the APIs the broker fronts
//! are not file names, and a prefix policy already fails closed on them.
//!
//! S3 keys are the exception: a key is a literal string (`a/../b` is a key, not a climb), and S3
//! reads it that way, so S3 paths are not passed through here (see `pipeline::aws`).

/// Why a path has no canonical form: the request is refused with 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("the path must start with /")]
    NotAbsolute,
    #[error("an encoded / or \\ (%2F, %5C) inside a segment is ambiguous: servers disagree whether it separates segments")]
    EncodedSeparator,
    #[error("a backslash is read as / by some servers; percent-encode it only where it is data, or remove it")]
    Backslash,
    #[error("an encoded NUL byte (%00) is not allowed in a path")]
    NulByte,
    #[error("the path climbs above the root with ..")]
    AboveRoot,
    #[error("a dot-segment with path parameters (..; or .;) is resolved by some servers and not by others")]
    DotSegmentParameters,
    #[error("malformed percent-encoding: % must be followed by two hex digits")]
    MalformedEscape,
    #[error("percent-encoded bytes that are not UTF-8 (such as the overlong %C0%AE) are not allowed")]
    NotUtf8,
    #[error("double percent-encoding (%25 followed by hex digits) is not allowed")]
    DoubleEncoding,
}

/// The canonical form of `path` (no query), or why it has none. A path that is already canonical
/// comes back unchanged.
pub fn canonical_path(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let decoded = decode_unreserved(path)?;
    let mut out: Vec<&str> = Vec::new();
    // Empty segments are dropped (merged slashes); a trailing `/` or a final dot-segment leaves
    // the path ending in `/`, as RFC 3986 does.
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "" => trailing_slash = last,
            "." => trailing_slash = last,
            ".." => {
                if out.pop().is_none() {
                    return Err(PathError::AboveRoot);
                }
                trailing_slash = last;
            }
            s => {
                if is_dot_with_parameters(s) {
                    return Err(PathError::DotSegmentParameters);
                }
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut canonical = String::with_capacity(decoded.len());
    for s in &out {
        canonical.push('/');
        canonical.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        canonical.push('/');
    }
    Ok(canonical)
}

/// `..;x`, `.;x`, and the same with `;` encoded: Tomcat strips the parameters and resolves the dots.
fn is_dot_with_parameters(segment: &str) -> bool {
    let base = segment.split(';').next().unwrap_or(segment);
    let base = match base.find("%3B") {
        Some(at) => &base[..at],
        None => base,
    };
    base != segment && (base == "." || base == "..")
}

/// Check every escape, decode the unreserved ones and upper-case the hex of the rest.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut escaped = Vec::new(); // the bytes of a run of escapes, to check they are UTF-8
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(PathError::Backslash),
            b'%' => {}
            _ => {
                // A literal run, copied as it is (both stops are ASCII, so on char boundaries).
                let end = bytes[i..].iter().position(|b| matches!(b, b'%' | b'\\')).map_or(bytes.len(), |n| i + n);
                check_utf8(&mut escaped)?;
                out.push_str(&path[i..end]);
                i = end;
                continue;
            }
        }
        let value = bytes.get(i + 1..i + 3).and_then(hex_byte).ok_or(PathError::MalformedEscape)?;
        match value {
            0 => return Err(PathError::NulByte),
            b'/' | b'\\' => return Err(PathError::EncodedSeparator),
            b'%' if bytes.get(i + 3..i + 5).and_then(hex_byte).is_some() => return Err(PathError::DoubleEncoding),
            v if is_unreserved(v) => {
                check_utf8(&mut escaped)?;
                out.push(char::from(v));
            }
            v => {
                escaped.push(v);
                out.push('%');
                out.push_str(&format!("{v:02X}"));
            }
        }
        i += 3;
    }
    check_utf8(&mut escaped)?;
    Ok(out)
}

/// A run of escaped bytes must decode to UTF-8; the run ends at the next literal character.
fn check_utf8(run: &mut Vec<u8>) -> Result<(), PathError> {
    let ok = std::str::from_utf8(run).is_ok();
    run.clear();
    ok.then_some(()).ok_or(PathError::NotUtf8)
}

fn hex_byte(two: &[u8]) -> Option<u8> {
    let s = std::str::from_utf8(two).ok()?;
    if !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u8::from_str_radix(s, 16).ok()
}

/// RFC 3986 §2.3: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
#[path = "path_tests.rs"]
mod tests;
