//! The canonicaliser, one row per form: what must not change, what is rewritten, what is refused.

use super::{canonical_path, PathError};

#[test]
fn legitimate_paths_do_not_change() {
    let unchanged = [
        "/",
        "/repos/acme/widgets",
        "/repos/acme/widgets/",
        "/v1/orders/42",
        "/repos/acme/a.b.c/contents/README.md",
        "/repos/acme/...",
        "/repos/acme/.github/workflows",
        "/repos/acme/..hidden",
        "/repos/acme/x..",
        "/search/code+with+plus",
        "/files/my%20file.txt",
        "/files/%E2%82%AC",
        "/q/a%3Fb%23c",
        "/cars;color=red/model",
        "/a:b@c!$&'()*,=",
        "/unicode/€",
        "/~user/_under-score",
        "/123456789012/acme-jobs",
    ];
    for path in unchanged {
        assert_eq!(canonical_path(path).as_deref(), Ok(path), "{path}");
    }
}

#[test]
fn dot_segments_and_their_encodings_are_resolved() {
    let rewritten = [
        ("/repos/../admin", "/admin"),
        ("/repos/demo/../../admin", "/admin"),
        ("/repos/%2e%2e/admin", "/admin"),
        ("/repos/%2E%2E/admin", "/admin"),
        ("/repos/.%2e/admin", "/admin"),
        ("/repos/%2e./admin", "/admin"),
        ("/repos/./acme/./x", "/repos/acme/x"),
        ("/repos/%2e/acme", "/repos/acme"),
        ("/repos/acme/..", "/repos/"),
        ("/repos/acme/.", "/repos/acme/"),
        ("/repos/acme/%2e%2e/", "/repos/"),
        ("/.", "/"),
        ("/a/b/c/../../d", "/a/d"),
    ];
    for (path, canonical) in rewritten {
        assert_eq!(canonical_path(path).as_deref(), Ok(canonical), "{path}");
    }
}

#[test]
fn repeated_slashes_merge_before_dot_segments_like_nginx() {
    let rewritten = [
        // RFC 3986 alone would give /repos/admin; nginx merges first and serves /admin.
        ("/repos//../admin", "/admin"),
        ("//repos///acme//x", "/repos/acme/x"),
        ("/repos/acme//", "/repos/acme/"),
        ("//", "/"),
    ];
    for (path, canonical) in rewritten {
        assert_eq!(canonical_path(path).as_deref(), Ok(canonical), "{path}");
    }
}

#[test]
fn encoded_unreserved_characters_are_decoded_and_other_hex_is_upper_cased() {
    let rewritten = [
        ("/%61dmin", "/admin"),
        ("/repos/%41CME/%7Euser", "/repos/ACME/~user"),
        ("/a%2Db%5Fc", "/a-b_c"),
        ("/q/a%3fb", "/q/a%3Fb"),
        ("/files/%e2%82%ac", "/files/%E2%82%AC"),
        ("/%72epos/%2E%2E/admin", "/admin"),
    ];
    for (path, canonical) in rewritten {
        assert_eq!(canonical_path(path).as_deref(), Ok(canonical), "{path}");
    }
}

#[test]
fn ambiguous_forms_are_refused() {
    use PathError::*;
    let refused = [
        ("repos/x", NotAbsolute),
        ("", NotAbsolute),
        ("*", NotAbsolute),
        ("/..", AboveRoot),
        ("/../admin", AboveRoot),
        ("/repos/../../admin", AboveRoot),
        ("/%2e%2e/admin", AboveRoot),
        ("/repos/%2fadmin", EncodedSeparator),
        ("/repos/..%2Fadmin", EncodedSeparator),
        ("/repos/%5cadmin", EncodedSeparator),
        ("/repos/..%5C..%5Cadmin", EncodedSeparator),
        ("/repos\\..\\admin", Backslash),
        ("/repos/\\admin", Backslash),
        ("/repos/%00/admin", NulByte),
        ("/repos/x%00.json", NulByte),
        ("/repos/..;/admin", DotSegmentParameters),
        ("/repos/.;x=1/admin", DotSegmentParameters),
        ("/repos/%2e%2e;/admin", DotSegmentParameters),
        ("/repos/..%3b/admin", DotSegmentParameters),
        ("/repos/%zz", MalformedEscape),
        ("/repos/%2", MalformedEscape),
        ("/repos/%", MalformedEscape),
        ("/repos/%u002e%u002e/admin", MalformedEscape),
        ("/repos/%c0%ae%c0%ae/admin", NotUtf8),
        ("/repos/%c0%af", NotUtf8),
        ("/repos/%e0%80%ae", NotUtf8),
        ("/repos/%ff", NotUtf8),
        ("/repos/%252e%252e/admin", DoubleEncoding),
        ("/repos/%252F", DoubleEncoding),
    ];
    for (path, why) in refused {
        assert_eq!(canonical_path(path), Err(why), "{path}");
    }
}

#[test]
fn a_literal_percent_sign_that_is_not_double_encoding_is_kept() {
    assert_eq!(canonical_path("/a/100%25").as_deref(), Ok("/a/100%25"));
    assert_eq!(canonical_path("/a/100%25done").as_deref(), Ok("/a/100%25done"));
}

#[test]
fn canonical_paths_are_fixed_points() {
    for path in ["/repos/../admin", "/%61/./b//c/", "/x/%e2%82%ac/..", "/a;b=c/d"] {
        let once = canonical_path(path).unwrap();
        assert_eq!(canonical_path(&once).as_deref(), Ok(once.as_str()), "{path}");
    }
}
