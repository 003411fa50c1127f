//! The XML body of S3 `DeleteObjects` (`POST /bucket?delete`): which keys it deletes.
//!
//! The body is small (at most 1000 keys, and S3 requires a checksum of it), so the broker may
//! buffer it. Only the shape the SDKs produce is accepted: `<Object>` elements holding a `<Key>`
//! and an optional `<VersionId>`, with the five predefined XML entities and numeric character
//! references. Anything else (CDATA, comments, prefixed tags) is refused rather than guessed.

use super::{unclassified, ClassifyError};

/// S3's own limit on keys per DeleteObjects request.
const MAX_OBJECTS: usize = 1000;

/// One object named by a DeleteObjects body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DeleteTarget {
    pub key: String,
    pub version_id: Option<String>,
}

pub(crate) fn objects(body: &[u8]) -> Result<Vec<DeleteTarget>, ClassifyError> {
    let bad = |why: &str| unclassified(format!("S3 DeleteObjects body: {why}"));
    let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8"))?;
    if text.contains("<![CDATA[") || text.contains("<!--") || text.contains("<!DOCTYPE") {
        return Err(bad("CDATA, comments and DTDs are not accepted"));
    }
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<Object>") {
        let after = &rest[start + "<Object>".len()..];
        let end = after.find("</Object>").ok_or_else(|| bad("unterminated <Object>"))?;
        let inner = &after[..end];
        let key = element(inner, "Key").map_err(|e| bad(&e))?.ok_or_else(|| bad("<Object> without <Key>"))?;
        let version_id = element(inner, "VersionId").map_err(|e| bad(&e))?;
        if key.is_empty() {
            return Err(bad("empty <Key>"));
        }
        out.push(DeleteTarget { key, version_id });
        rest = &after[end + "</Object>".len()..];
    }
    // Every `<Object` opening must have been one of the plain `<Object>` elements read above;
    // otherwise S3 might see objects this scan did not (`<Object xmlns=…>`, `<s3:Object>`).
    if text.matches("<Object").count() != out.len() || has_prefixed_tag(text) {
        return Err(bad("unexpected <Object> form"));
    }
    if out.is_empty() {
        return Err(bad("no objects"));
    }
    if out.len() > MAX_OBJECTS {
        return Err(bad("more than 1000 objects"));
    }
    Ok(out)
}

/// Whether any element name carries a namespace prefix (`<s3:Object>`), which this scan ignores.
fn has_prefixed_tag(text: &str) -> bool {
    text.split('<').skip(1).any(|tag| {
        let tag = tag.strip_prefix('/').unwrap_or(tag);
        let name_end = tag.find(|c: char| c.is_ascii_whitespace() || c == '>' || c == '/').unwrap_or(tag.len());
        !tag.starts_with('?') && tag[..name_end].contains(':')
    })
}

/// The decoded text of the single `<NAME>…</NAME>` element in `inner`, if any.
fn element(inner: &str, name: &str) -> Result<Option<String>, String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let Some(start) = inner.find(&open) else {
        if inner.contains(&format!("<{name}")) {
            return Err(format!("unexpected <{name}> form"));
        }
        return Ok(None);
    };
    let after = &inner[start + open.len()..];
    let end = after.find(&close).ok_or(format!("unterminated <{name}>"))?;
    if after[end + close.len()..].contains(&format!("<{name}")) {
        return Err(format!("<{name}> given twice"));
    }
    unescape(&after[..end]).map(Some)
}

/// XML character data → text: the five predefined entities and `&#N;` / `&#xH;`.
fn unescape(raw: &str) -> Result<String, String> {
    if raw.contains('<') {
        return Err("markup inside a text element".into());
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after.find(';').ok_or("unterminated entity")?;
        let entity = &after[..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32).ok_or_else(|| format!("unknown entity &{entity};"))?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_keys_versions_and_entities() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>a&amp;b&#x2A;</Key></Object><Object><Key>c</Key><VersionId>v1</VersionId></Object><Quiet>true</Quiet></Delete>"#;
        let objs = objects(body).unwrap();
        assert_eq!(objs, vec![DeleteTarget { key: "a&b*".into(), version_id: None }, DeleteTarget { key: "c".into(), version_id: Some("v1".into()) },]);
    }

    #[test]
    fn refuses_shapes_it_does_not_read() {
        for body in [
            &b"<Delete></Delete>"[..],
            b"<Delete><Object><Key><![CDATA[x]]></Key></Object></Delete>",
            b"<Delete><Object xmlns=\"x\"><Key>a</Key></Object></Delete>",
            b"<Delete><Object><Key>a</Key><Key>b</Key></Object></Delete>",
            b"<Delete><Object><VersionId>1</VersionId></Object></Delete>",
            b"<Delete><Object><Key>a&bogus;</Key></Object></Delete>",
            b"<Delete><s3:Object><s3:Key>a</s3:Key></s3:Object></Delete>",
            b"\xff",
        ] {
            assert!(objects(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }
}
