//! Decoding of the pieces of a request the classifiers read: percent-encoded paths and
//! `name=value&…` parameter lists (URL queries and Query-protocol form bodies).

use super::{unclassified, ClassifyError};

/// Strict percent-decoding of a path segment: `+` stays `+`, a malformed `%` escape or a result
/// that is not UTF-8 is refused (AWS and the broker might read it differently).
pub(crate) fn percent_decode(raw: &str) -> Result<String, ClassifyError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| unclassified(format!("malformed percent-encoding in {raw:?}")))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| unclassified(format!("{raw:?} does not decode to UTF-8")))
}

/// Decoded `name=value` pairs in their original order.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Parse an `application/x-www-form-urlencoded` list (`+` is a space, as in HTML forms and the
    /// AWS Query protocol). Names without `=` get an empty value (S3's `?uploads`).
    pub fn parse(raw: &[u8]) -> Self {
        Params(url::form_urlencoded::parse(raw).map(|(k, v)| (k.into_owned(), v.into_owned())).collect())
    }

    /// Append another list (the URL query and the form body of one Query-protocol request).
    pub fn extend(&mut self, other: Params) {
        self.0.extend(other.0);
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    /// The value of `name`. A parameter given twice is refused: the broker must not scope one value
    /// while AWS acts on the other.
    pub fn get(&self, name: &str) -> Result<Option<&str>, ClassifyError> {
        let mut found = self.0.iter().filter(|(k, _)| k == name);
        let first = found.next();
        if found.next().is_some() {
            return Err(unclassified(format!("parameter {name} given more than once")));
        }
        Ok(first.map(|(_, v)| v.as_str()))
    }

    /// Values of a Query-protocol list: `NAME.1`, `NAME.2`, … (in that order, without gaps).
    pub fn list(&self, name: &str) -> Result<Vec<&str>, ClassifyError> {
        let mut out = Vec::new();
        for i in 1.. {
            match self.get(&format!("{name}.{i}"))? {
                Some(v) => out.push(v),
                None => break,
            }
        }
        let prefix = format!("{name}.");
        let total = self.names().filter(|k| k.starts_with(&prefix)).count();
        if total != out.len() {
            return Err(unclassified(format!("list parameter {name} is not numbered 1..N")));
        }
        Ok(out)
    }
}
