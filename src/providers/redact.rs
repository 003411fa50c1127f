//! Error texts from providers come from the network and are not trusted to be free of secrets:
//! [`scrub`] blanks whatever looks like key material before a text reaches a log, an audit record
//! or an error body.

/// Blanks anything that looks like key material: AWS access key ids (`AKIA…`/`ASIA…`, 16+
/// characters), JWTs (`eyJ…`), and any run of 32+ base64/base64url characters between dots (AWS
/// secret keys are 40, session and bearer tokens longer). ARNs, host names and URLs survive: `:`,
/// spaces and short dot-separated labels do not make a token.
pub(crate) fn scrub(s: &str) -> String {
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '+' | '=' | '_' | '-' | '.');
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let key_id = run.len() >= 16 && (run.starts_with("AKIA") || run.starts_with("ASIA"));
        let jwt = run.starts_with("eyJ") && run.contains('.');
        let long_segment = run.split('.').any(|segment| segment.len() >= 32);
        if key_id || jwt || long_segment {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        if is_key_char(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// At most `max` characters (not bytes), so a multi-byte character is never cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// An error and all its sources, each said once.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_blanks_key_material_and_keeps_names() {
        let text = "key AKIAIOSFODNN7EXAMPLE secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY on arn:aws:iam::123456789012:role/agent-role";
        assert_eq!(scrub(text), "key [redacted] secret [redacted] on arn:aws:iam::123456789012:role/agent-role");
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:prod/github-token-AbCdEf";
        assert_eq!(scrub(arn), arn);
        assert_eq!(scrub("token ghp_0123456789abcdefghijABCDEFGHIJ012345 end"), "token [redacted] end");
        assert_eq!(scrub("https://login.example.com/tenant/oauth2/v2.0/token"), "https://login.example.com/tenant/oauth2/v2.0/token");
        assert_eq!(scrub("bucket credential-broker-quickstart.s3.us-east-1.amazonaws.com"), "bucket credential-broker-quickstart.s3.us-east-1.amazonaws.com");
        assert_eq!(scrub("assertion eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln."), "assertion [redacted]");
    }
}
