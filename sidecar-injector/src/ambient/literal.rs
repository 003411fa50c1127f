//! Recognises literal env values that look like credentials.
//!
//! The patterns are deliberately specific (known prefixes, fixed lengths) so ordinary config
//! values are not flagged; the point is to catch a pasted key, not to prove a value is safe.

use std::sync::LazyLock;

use regex::Regex;

struct Pattern {
    /// What the value looks like, for the denial message (never the value itself).
    looks_like: &'static str,
    regex: Regex,
    /// Only flag when the variable's name contains "SECRET" (the AWS secret key has no prefix).
    needs_secret_name: bool,
}

fn pattern(looks_like: &'static str, source: &str, needs_secret_name: bool) -> Option<Pattern> {
    // The sources are fixed strings tested below; a bad one is skipped rather than panicking.
    Regex::new(source).ok().map(|regex| Pattern { looks_like, regex, needs_secret_name })
}

static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    [
        pattern("an AWS access key id", r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b", false),
        pattern("an AWS secret access key", r"^[A-Za-z0-9/+=]{40}$", true),
        pattern("a PEM private key", r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----", false),
        pattern("a GitHub token", r"\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})", false),
        pattern("a Slack token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}", false),
        pattern("a JSON Web Token", r"\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}", false),
        pattern("an API key (sk-...)", r"\bsk-[A-Za-z0-9_-]{20,}", false),
        pattern("a URL with a password", r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]+:([^/\s@]+)@", false),
    ]
    .into_iter()
    .flatten()
    .collect()
});

/// A reference to another env var (`$(NAME)`), which Kubernetes expands at start; the value
/// itself is no credential (the referenced variable is checked on its own).
static ENV_REFERENCE: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"^\$\([A-Za-z_][A-Za-z0-9_]*\)$").ok());

/// What a literal `value` of variable `name` looks like, if it looks like a credential.
pub fn looks_like_credential(name: &str, value: &str) -> Option<&'static str> {
    let secret_name = name.to_ascii_uppercase().contains("SECRET");
    PATTERNS
        .iter()
        .filter(|p| secret_name || !p.needs_secret_name)
        .find(|p| match p.regex.captures(value) {
            // URL: a password that is only a `$(VAR)` reference is fine.
            Some(caps) => caps.get(1).is_none_or(|password| !is_env_reference(password.as_str())),
            None => false,
        })
        .map(|p| p.looks_like)
}

fn is_env_reference(text: &str) -> bool {
    ENV_REFERENCE.as_ref().is_some_and(|re| re.is_match(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles() {
        assert_eq!(PATTERNS.len(), 8);
        assert!(ENV_REFERENCE.is_some());
    }

    #[test]
    fn credentials_are_recognised() {
        let cases = [
            ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE", "an AWS access key id"),
            ("KEY", "ASIAY34FZKBOKMUTVV7A", "an AWS access key id"),
            ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "an AWS secret access key"),
            ("TLS_KEY", "-----BEGIN RSA PRIVATE KEY-----\nMIIE...", "a PEM private key"),
            ("K", "-----BEGIN PRIVATE KEY-----", "a PEM private key"),
            ("GITHUB_TOKEN", "ghp_16C7e42F292c6912E7710c838347Ae178B4a", "a GitHub token"),
            ("GH", "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", "a GitHub token"),
            ("SLACK", "xoxb-123456789012-abcdefghij", "a Slack token"),
            ("TOKEN", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "a JSON Web Token"),
            ("OPENAI_API_KEY", "sk-proj-abcdefghijklmnopqrstuvwx", "an API key (sk-...)"),
            ("DATABASE_URL", "postgres://app:hunter2@db.example:5432/app", "a URL with a password"),
        ];
        for (name, value, expected) in cases {
            assert_eq!(looks_like_credential(name, value), Some(expected), "{name}");
        }
    }

    #[test]
    fn ordinary_values_are_not_flagged() {
        let cases = [
            ("AWS_SECRET_ACCESS_KEY", "credential-broker-placeholder"),
            ("AWS_REGION", "eu-west-1"),
            // 40 base64 characters under a name without SECRET: a commit hash, say.
            ("GIT_COMMIT", "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"),
            ("DATABASE_URL", "postgres://app@127.0.0.1:15432/app"),
            ("DATABASE_URL", "postgres://app:$(PGPASSWORD)@db:5432/app"),
            ("HTTPS_PROXY", "http://127.0.0.1:15001"),
            ("TASK", "task-scheduler-with-a-very-long-name"),
            ("PUBLIC_CERT", "-----BEGIN CERTIFICATE-----"),
        ];
        for (name, value) in cases {
            assert_eq!(looks_like_credential(name, value), None, "{name}={value}");
        }
    }
}
