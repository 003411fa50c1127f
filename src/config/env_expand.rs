//! `${NAME}` references in configuration string values, resolved from the environment.
//!
//! Expansion happens on parsed string scalars, never on the raw YAML text, so a value taken from the
//! environment cannot inject YAML structure (a ConfigMap rendered per pod is the use case).

use serde_norway::Value;

/// Replace every `${NAME}` in string values. `$${` escapes a literal `${`.
/// Problems are returned as `(key path, message)` pairs so every one can be reported.
pub fn expand_env(value: &mut Value, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    walk(value, String::new(), lookup, &mut problems);
    problems
}

fn walk(value: &mut Value, path: String, lookup: &dyn Fn(&str) -> Option<String>, problems: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) => match expand_str(s, lookup) {
            Ok(expanded) => *s = expanded,
            Err(message) => problems.push((path, message)),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, format!("{path}[{i}]"), lookup, problems);
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = key.as_str().map(str::to_owned).unwrap_or_else(|| format!("{key:?}"));
                let child = if path.is_empty() { key } else { format!("{path}.{key}") };
                walk(item, child, lookup, problems);
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, lookup, problems),
        _ => {}
    }
}

fn expand_str(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        if let Some(escaped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(body) = after.strip_prefix("${") {
            let end = body.find('}').ok_or_else(|| format!("unterminated ${{ in {input:?}"))?;
            let name = &body[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid environment variable name {name:?}"));
            }
            let value = lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "AGENT").then(|| "agent-7".to_string())
    }

    #[test]
    fn expands_nested_values_and_reports_missing_names_with_their_path() {
        let mut v: Value = serde_norway::from_str("identity:\n  agent_id: ${AGENT}\nroutes:\n  - name: x-${MISSING}\n").unwrap();
        let problems = expand_env(&mut v, &env);
        assert_eq!(v["identity"]["agent_id"].as_str(), Some("agent-7"));
        assert_eq!(problems, vec![("routes[0].name".to_string(), "environment variable MISSING is not set".to_string())]);
    }

    #[test]
    fn escaped_and_lone_dollars_stay_literal() {
        assert_eq!(expand_str("a$${B}c$d", &env).unwrap(), "a${B}c$d");
    }
}
