//! The generic HTTP classifier: method + host + path → `http:METHOD` on `https://host/path`.

use super::{ClassifyError, Scope};

/// Classify a plain HTTP API request. The query string is left out of the resource: it does not
/// name a different resource, and keeping it would let an agent vary the cache key at will.
pub fn classify(method: &str, scheme: &str, host: &str, path: &str) -> Result<Scope, ClassifyError> {
    if host.is_empty() {
        return Err(ClassifyError::new("request has no host"));
    }
    if !path.starts_with('/') {
        return Err(ClassifyError::new(format!("path {path:?} is not absolute")));
    }
    let path = path.split('?').next().unwrap_or(path);
    Ok(Scope::single("http", None, format!("http:{}", method.to_ascii_uppercase()), format!("{scheme}://{}{path}", host.to_ascii_lowercase())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_on_a_path_names_the_method_and_url_without_query() {
        let scope = classify("get", "https", "API.Example.test", "/repos/x?page=2").unwrap();
        assert_eq!(scope.permissions[0].action, "http:GET");
        assert_eq!(scope.permissions[0].resource, "https://api.example.test/repos/x");
    }

    #[test]
    fn relative_path_is_refused() {
        assert!(classify("GET", "https", "h", "x").is_err());
    }
}
