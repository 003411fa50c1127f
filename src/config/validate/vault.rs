//! Validation of the `vault` provider (Vault or OpenBao), every problem with its key path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{https_url, resolve_path, Problems};
use crate::config::raw::{RawVault, RawVaultJwtAuth};
use crate::config::{VaultAuth, VaultEngine, VaultSettings};

pub(super) fn validate(p: &mut Problems, path: &str, base: &Path, raw: RawVault) -> Option<VaultSettings> {
    // Cleartext only to a dev server on loopback: the broker's token and the secrets cross this.
    let address = https_url(p, &format!("{path}.address"), &raw.address, true);
    let ca_file = raw.ca_file.map(|f| existing_file(p, &format!("{path}.ca_file"), base, &f));
    if let Some(ns) = &raw.namespace {
        if ns.trim_matches('/').is_empty() || !ns.split('/').all(safe_segment) {
            p.add(format!("{path}.namespace"), format!("{ns:?} is not a namespace path like team-a or team-a/child"));
        }
    }
    let timeout = Duration::from_secs(raw.timeout_seconds.unwrap_or(10));
    if !(1..=120).contains(&timeout.as_secs()) {
        p.add(format!("{path}.timeout_seconds"), "must be between 1 and 120");
    }
    let auth = auth(p, &format!("{path}.auth"), base, raw.auth);
    let engine = match (raw.database, raw.kv) {
        (Some(db), None) => {
            let mount = mount(p, &format!("{path}.database.mount"), db.mount, "database");
            name(p, &format!("{path}.database.role"), &db.role);
            Some(VaultEngine::Database { mount, role: db.role })
        }
        (None, Some(kv)) => {
            let mount = mount(p, &format!("{path}.kv.mount"), kv.mount, "secret");
            let kv_path = kv.path.trim_matches('/').to_string();
            if kv_path.is_empty() || !kv_path.split('/').all(safe_segment) {
                p.add(format!("{path}.kv.path"), format!("{:?} is not a secret path like agents/api", kv.path));
            }
            if kv.field.is_empty() {
                p.add(format!("{path}.kv.field"), "is required (the key within the secret whose value is the credential)");
            }
            let ttl = Duration::from_secs(kv.ttl_seconds.unwrap_or(300));
            if !(1..=43_200).contains(&ttl.as_secs()) {
                p.add(format!("{path}.kv.ttl_seconds"), "must be between 1 and 43200");
            }
            Some(VaultEngine::Kv { mount, path: kv_path, field: kv.field, ttl })
        }
        (Some(_), Some(_)) => {
            p.add(path, "set exactly one of `database` or `kv`, not both");
            None
        }
        (None, None) => {
            p.add(path, "needs exactly one engine: `database: {mount, role}` or `kv: {mount, path, field}`");
            None
        }
    };
    Some(VaultSettings { address: address?, ca_file, namespace: raw.namespace.map(|n| n.trim_matches('/').to_string()), timeout, auth: auth?, engine: engine? })
}

fn auth(p: &mut Problems, path: &str, base: &Path, raw: crate::config::raw::RawVaultAuth) -> Option<VaultAuth> {
    let set = [raw.token.is_some(), raw.approle.is_some(), raw.jwt.is_some(), raw.kubernetes.is_some()].iter().filter(|s| **s).count();
    if set != 1 {
        p.add(path, "set exactly one of `token`, `approle`, `jwt` or `kubernetes`");
        return None;
    }
    if let Some(t) = raw.token {
        return Some(VaultAuth::Token { token_file: existing_file(p, &format!("{path}.token.token_file"), base, &t.token_file) });
    }
    if let Some(a) = raw.approle {
        let path = format!("{path}.approle");
        if a.role_id.trim().is_empty() {
            p.add(format!("{path}.role_id"), "is required");
        }
        let mount = mount(p, &format!("{path}.mount"), a.mount, "approle");
        let secret_id_file = existing_file(p, &format!("{path}.secret_id_file"), base, &a.secret_id_file);
        return Some(VaultAuth::AppRole { mount, role_id: a.role_id, secret_id_file });
    }
    let jwt_like = |p: &mut Problems, path: String, a: RawVaultJwtAuth, default_mount: &str| {
        name(p, &format!("{path}.role"), &a.role);
        let mount = mount(p, &format!("{path}.mount"), a.mount, default_mount);
        let jwt_file = existing_file(p, &format!("{path}.jwt_file"), base, &a.jwt_file);
        (mount, a.role, jwt_file)
    };
    if let Some(a) = raw.jwt {
        let (mount, role, jwt_file) = jwt_like(p, format!("{path}.jwt"), a, "jwt");
        return Some(VaultAuth::Jwt { mount, role, jwt_file });
    }
    let a = raw.kubernetes?;
    let (mount, role, jwt_file) = jwt_like(p, format!("{path}.kubernetes"), a, "kubernetes");
    Some(VaultAuth::Kubernetes { mount, role, jwt_file })
}

fn existing_file(p: &mut Problems, path: &str, base: &Path, v: &str) -> PathBuf {
    let file = resolve_path(base, v);
    if !file.is_file() {
        p.add(path, format!("{} does not exist", file.display()));
    }
    file
}

/// A mount path (`database`, `team-a/db`), default when unset.
fn mount(p: &mut Problems, path: &str, v: Option<String>, default: &str) -> String {
    let v = v.unwrap_or_else(|| default.to_string());
    let trimmed = v.trim_matches('/').to_string();
    if trimmed.is_empty() || !trimmed.split('/').all(safe_segment) {
        p.add(path, format!("{v:?} is not a mount path like {default}"));
    }
    trimmed
}

/// A role name: one path segment.
fn name(p: &mut Problems, path: &str, v: &str) {
    if !safe_segment(v) {
        p.add(path, format!("{v:?} is not a role name (letters, digits, `-`, `_`, `.`)"));
    }
}

/// One URL path segment that cannot climb (`..`) or smuggle a query.
fn safe_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, ProviderConfig, VaultAuth, VaultEngine};

    fn load(dir: &std::path::Path, provider: &str) -> Result<Config, Vec<String>> {
        std::fs::write(dir.join("policy.rego"), "package credential_broker\n").unwrap();
        let yaml = format!("identity: {{agent_id: a, tenant: t}}\npolicy: {{file: policy.rego}}\naudit: {{path: audit.jsonl}}\nproviders:\n  v:\n{provider}");
        Config::from_yaml(&yaml, dir, &|_| None).map_err(|ps| ps.iter().map(|p| p.to_string()).collect())
    }

    #[test]
    fn a_database_provider_with_approle_validates_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret-id"), "s").unwrap();
        let config = load(
            dir.path(),
            "    type: vault\n    address: https://vault.example.com:8200\n    auth: {approle: {role_id: r-1, secret_id_file: secret-id}}\n    database: {role: readonly}\n",
        )
        .unwrap();
        let ProviderConfig::Vault(s) = &config.providers["v"] else { panic!("not a vault provider") };
        assert_eq!(s.engine, VaultEngine::Database { mount: "database".into(), role: "readonly".into() });
        assert_eq!(s.auth, VaultAuth::AppRole { mount: "approle".into(), role_id: "r-1".into(), secret_id_file: dir.path().join("secret-id") });
        assert_eq!(s.timeout.as_secs(), 10);
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let dir = tempfile::tempdir().unwrap();
        let problems = load(
            dir.path(),
            "    type: vault\n    address: http://vault.example.com:8200\n    ca_file: missing.pem\n    timeout_seconds: 0\n    auth: {jwt: {role: \"a/b\", jwt_file: missing-token}}\n    database: {role: r}\n    kv: {path: a, field: f}\n",
        )
        .unwrap_err();
        let text = problems.join("\n");
        for needle in [
            "providers.v.address: \"http://vault.example.com:8200\" must be an https URL",
            "providers.v.ca_file:",
            "providers.v.timeout_seconds: must be between 1 and 120",
            "providers.v.auth.jwt.role:",
            "providers.v.auth.jwt.jwt_file:",
            "providers.v: set exactly one of `database` or `kv`",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
        let problems =
            load(dir.path(), "    type: vault\n    address: http://127.0.0.1:8200\n    auth: {}\n    kv: {path: \"../x\", field: \"\"}\n").unwrap_err();
        let text = problems.join("\n");
        for needle in ["providers.v.auth: set exactly one of", "providers.v.kv.path:", "providers.v.kv.field: is required"] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
    }

    /// A `databases[]` entry takes a vault provider with a database engine and refuses a kv one;
    /// an HTTP route the other way round.
    #[test]
    fn databases_take_the_database_engine_and_routes_the_kv_engine() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "t").unwrap();
        let both = "    type: vault\n    address: http://127.0.0.1:8200\n    auth: {token: {token_file: token}}\n    database: {role: ro}\n  kv:\n    type: vault\n    address: http://127.0.0.1:8200\n    auth: {token: {token_file: token}}\n    kv: {path: agents/api, field: token}\n";
        let db = |provider: &str| {
            format!("databases:\n  - {{name: shop, listen: \"127.0.0.1:0\", upstream: \"127.0.0.1:5432\", database: shop, provider: {provider}}}\n")
        };
        let route = |provider: &str| {
            format!("routes:\n  - {{name: api, hosts: [api.example.com], provider: {provider}, inject: {{header: {{name: Authorization, placeholder: placeholder-1}}}}}}\n")
        };
        let ok = load(dir.path(), &format!("{both}{}{}", db("v"), route("kv")));
        assert!(ok.is_ok(), "{ok:?}");
        let text = load(dir.path(), &format!("{both}{}{}", db("kv"), route("v"))).unwrap_err().join("\n");
        assert!(text.contains("databases[0].provider: vault provider \"kv\" reads a KV secret"), "{text}");
        assert!(text.contains("routes[0].provider: a vault provider with a `database` engine mints database logins"), "{text}");
    }
}
