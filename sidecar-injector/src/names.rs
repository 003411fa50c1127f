//! Checks for Kubernetes names and quantities, shared by config validation and annotations.

/// Whether `name` is a DNS-1123 subdomain (ConfigMap names, for example).
pub fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty() && name.len() <= 253 && name.split('.').all(is_label_shaped)
}

/// Whether `name` is a DNS-1123 label (namespace names).
pub fn is_dns_label(name: &str) -> bool {
    name.len() <= 63 && is_label_shaped(name)
}

fn is_label_shaped(part: &str) -> bool {
    let bytes = part.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    edge_ok(bytes.first()) && edge_ok(bytes.last()) && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Whether `value` is a Kubernetes resource quantity such as `50m`, `0.5`, `128Mi` or `1e3`.
pub fn is_quantity(value: &str) -> bool {
    const SUFFIXES: [&str; 14] = ["Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E", ""];
    let number_end = value.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(value.len());
    let (number, suffix) = value.split_at(number_end);
    let number_ok = !number.is_empty() && number != "." && number.matches('.').count() <= 1 && number.chars().any(|c| c.is_ascii_digit());
    let suffix_ok = SUFFIXES.contains(&suffix) || is_exponent(suffix);
    number_ok && suffix_ok
}

fn is_exponent(suffix: &str) -> bool {
    let Some(rest) = suffix.strip_prefix(['e', 'E']) else {
        return false;
    };
    let digits = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns_subdomain("credential-broker-config"));
        assert!(is_dns_subdomain("a.b-c.d"));
        assert!(!is_dns_subdomain("Has-Caps"));
        assert!(!is_dns_subdomain("-leading"));
        assert!(!is_dns_subdomain(""));
        assert!(is_dns_label("team-a"));
        assert!(!is_dns_label("team.a"));
    }

    #[test]
    fn quantities() {
        for ok in ["50m", "500m", "32Mi", "128Mi", "1", "0.5", "1e3", "2Gi"] {
            assert!(is_quantity(ok), "{ok}");
        }
        for bad in ["", "lots", "m", "1.2.3", "12XB", "."] {
            assert!(!is_quantity(bad), "{bad}");
        }
    }
}
