//! A real PostgreSQL server (the Debian `postgresql` package) on a free 127.0.0.1 port, in a
//! fresh data directory, stopped on drop.
//!
//! `initdb` and `postgres` refuse to run as root, so when the tests run as root the server runs as
//! the `postgres` system user (through `setpriv`) in a tempdir chowned to it. TCP connections
//! authenticate with scram-sha-256; the superuser `broker_admin` has a random password.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::SanType;

use super::pki::TestCa;

/// The superuser the harness creates (the broker's admin connection logs in as this).
pub const SUPERUSER: &str = "broker_admin";
/// The database the tests use (created besides `postgres`).
pub const DATABASE: &str = "shop";

/// The directory with `initdb`, `postgres`, `psql`: `$CB_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/*/bin`. Panics (never skips) when none is installed.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CB_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok().map(|v| (v, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").is_file())
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => {
            panic!("PostgreSQL is not installed: this test needs initdb, postgres and psql; run .ci/setup (apt-get install postgresql) or set CB_TEST_PG_BIN")
        }
    }
}

/// A program from [`bin_dir`]; panics with what to install when it is missing.
pub fn program(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    if !path.is_file() {
        panic!("{} is missing: run .ci/setup (apt-get install postgresql)", path.display());
    }
    path
}

/// How [`Postgres::start_with`] sets the server up beyond the defaults of [`Postgres::start`].
#[derive(Default)]
pub struct StartOptions {
    /// Addresses to listen on besides 127.0.0.1.
    pub extra: Vec<std::net::Ipv4Addr>,
    /// Addresses allowed to log in with scram-sha-256 besides loopback.
    pub clients: Vec<std::net::Ipv4Addr>,
    /// `ssl = on` with a certificate for 127.0.0.1 and `localhost` from this CA, and TCP logins
    /// over TLS only (`hostssl`): a cleartext login is refused by the server itself.
    pub tls: Option<Arc<TestCa>>,
}

pub struct Postgres {
    child: Option<Child>,
    port: u16,
    /// Holds the data directory and the log; removed on drop.
    dir: tempfile::TempDir,
    /// The superuser's password.
    pub password: String,
    /// `setpriv …` to run server programs as the `postgres` user, empty when not root.
    run_as: Vec<String>,
    /// The server requires TLS: the harness's own `psql` uses `sslmode=require`.
    tls: bool,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGINT: "fast" shutdown, closes sessions and exits; then make sure.
            let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn random_password() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Postgres {
    /// initdb (scram-sha-256 for TCP, the superuser with a random password), start `postgres` on a
    /// free port, wait until it accepts logins, create [`DATABASE`].
    pub fn start() -> Postgres {
        Self::start_on(&[], &[])
    }

    /// Like [`Postgres::start`], also listening on `extra` addresses besides 127.0.0.1 (e.g. the
    /// host end of a test network namespace's veth pair) and accepting scram-sha-256 logins from
    /// `clients` (e.g. the namespace's end).
    pub fn start_on(extra: &[std::net::Ipv4Addr], clients: &[std::net::Ipv4Addr]) -> Postgres {
        Self::start_with(StartOptions { extra: extra.to_vec(), clients: clients.to_vec(), tls: None })
    }

    /// A server with TLS on (see [`StartOptions::tls`]).
    pub fn start_tls(ca: Arc<TestCa>) -> Postgres {
        Self::start_with(StartOptions { tls: Some(ca), ..Default::default() })
    }

    pub fn start_with(options: StartOptions) -> Postgres {
        let (extra, clients) = (&options.extra[..], &options.clients[..]);
        let initdb = program("initdb");
        let postgres = program("postgres");
        let dir = tempfile::Builder::new().prefix("cb-postgres-").tempdir().unwrap();
        let run_as: Vec<String> = if is_root() {
            let status = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status().expect("chown");
            assert!(status.success(), "chown of the Postgres tempdir to the postgres user failed (does the postgres user exist? apt-get install postgresql)");
            ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"].map(String::from).to_vec()
        } else {
            Vec::new()
        };
        let password = random_password();
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, &password).unwrap();
        let data = dir.path().join("data");
        let mut pg = Postgres { child: None, port: free_port(), dir, password, run_as, tls: options.tls.is_some() };
        if !pg.run_as.is_empty() {
            let _ = Command::new("chown").args(["postgres:postgres"]).arg(&pwfile).status();
        }

        let out = pg
            .command(&initdb)
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("running initdb");
        assert!(out.status.success(), "initdb failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let _ = std::fs::remove_file(&pwfile);
        if !clients.is_empty() {
            use std::io::Write;
            let mut hba = std::fs::OpenOptions::new().append(true).open(data.join("pg_hba.conf")).unwrap();
            for ip in clients {
                writeln!(hba, "host all all {ip}/32 scram-sha-256").unwrap();
            }
        }
        let mut ssl_settings: Vec<String> = Vec::new();
        if let Some(ca) = &options.tls {
            // TCP logins over TLS only; the harness's own psql goes over TLS too.
            let mut hba = "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostssl all all ::1/128 scram-sha-256\n".to_string();
            for ip in clients {
                hba.push_str(&format!("hostssl all all {ip}/32 scram-sha-256\n"));
            }
            std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
            let sans = vec![SanType::IpAddress("127.0.0.1".parse().unwrap()), SanType::DnsName("localhost".try_into().unwrap())];
            let (crt, key) = ca.leaf_files(pg.dir.path(), "server", sans, false);
            // The server refuses a key others can read; it must be the server user's own.
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
            if !pg.run_as.is_empty() {
                let status = Command::new("chown").arg("postgres:postgres").arg(&crt).arg(&key).status().expect("chown");
                assert!(status.success(), "chown of the server certificate and key failed");
            }
            ssl_settings = vec!["ssl=on".into(), format!("ssl_cert_file={}", crt.display()), format!("ssl_key_file={}", key.display())];
        }
        let listen: Vec<String> = std::iter::once("127.0.0.1".to_string()).chain(extra.iter().map(|ip| ip.to_string())).collect();

        let log = std::fs::File::create(pg.log_path()).unwrap();
        let socket_dir = pg.dir.path().to_path_buf();
        let child = pg
            .command(&postgres)
            .arg("-D")
            .arg(&data)
            .args(["-p", &pg.port.to_string(), "-h", &listen.join(","), "-c"])
            .arg(format!("unix_socket_directories={}", socket_dir.display()))
            .args(["-c", "password_encryption=scram-sha-256", "-c", "fsync=off", "-c", "log_connections=on", "-c", "log_statement=all"])
            .args(ssl_settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting postgres");
        pg.child = Some(child);
        pg.wait_ready(Duration::from_secs(60));
        pg.admin_sql(&format!("CREATE DATABASE {DATABASE}"));
        pg
    }

    /// A command for a server program, as the `postgres` user when the tests run as root.
    fn command(&self, program: &Path) -> Command {
        let mut cmd = match self.run_as.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        cmd.env_remove("PGPASSWORD").env_remove("PGUSER").env_remove("PGDATABASE");
        cmd
    }

    fn wait_ready(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let out = self.psql_as(SUPERUSER, &self.password.clone(), "postgres", "SELECT 1");
            if out.status.success() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!("postgres exited ({status}) before accepting logins:\n{}", self.log());
            }
            if Instant::now() > deadline {
                panic!("postgres did not accept logins within {within:?}:\n{}\nlast psql: {}", self.log(), String::from_utf8_lossy(&out.stderr));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The server log (connections and every statement), for failure messages and leak scans.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `psql` over TCP as `user` with `password` (empty: none in the environment), one command,
    /// unaligned tuples-only output, stopping at the first error.
    pub fn psql_as(&self, user: &str, password: &str, database: &str, sql: &str) -> Output {
        let mut cmd = psql_command();
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", user, "-d", database, "-c", sql]);
        if !password.is_empty() {
            cmd.env("PGPASSWORD", password);
        }
        if self.tls {
            cmd.env("PGSSLMODE", "require");
        }
        cmd.output().expect("running psql")
    }

    /// Replaces `pg_hba.conf` with `hba` and makes the server reload it (e.g. `hostssl … password`
    /// to have the server ask for a cleartext password over TLS).
    pub fn set_hba(&self, hba: &str) {
        // Overwriting keeps the file's owner (the postgres user when the tests run as root).
        std::fs::write(self.dir.path().join("data").join("pg_hba.conf"), hba).unwrap();
        let out = self.command(&program("pg_ctl")).arg("reload").arg("-D").arg(self.dir.path().join("data")).output().expect("running pg_ctl");
        assert!(out.status.success(), "pg_ctl reload: {}", String::from_utf8_lossy(&out.stderr));
        // The postmaster rereads the file on SIGHUP, shortly after.
        std::thread::sleep(Duration::from_millis(500));
    }

    /// Polls `pg_roles` until no role named `role` is left; panics after `within`.
    pub fn wait_role_dropped(&self, role: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while self.admin_sql(&format!("SELECT count(*) FROM pg_roles WHERE rolname = '{}'", role.replace('\'', "''"))) != "0" {
            assert!(Instant::now() < deadline, "the role {role} was not dropped within {within:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `sql` as the superuser in [`DATABASE`]; panics on failure. Returns psql's output.
    pub fn admin_sql(&self, sql: &str) -> String {
        let db = if sql.trim_start().to_ascii_uppercase().starts_with("CREATE DATABASE") { "postgres" } else { DATABASE };
        let out = self.psql_as(SUPERUSER, &self.password, db, sql);
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// `psql -X -A -t -v ON_ERROR_STOP=1`, with no PG* settings, password file or service file from
/// the test's environment (so "no password" really means none).
pub fn psql_command() -> Command {
    let mut cmd = Command::new(program("psql"));
    cmd.env_clear();
    for var in ["PATH", "LANG", "TMPDIR"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.env("PGPASSFILE", "/dev/null").env("PGSERVICEFILE", "/dev/null").env("PGCONNECT_TIMEOUT", "5").env("PGSSLMODE", "disable");
    cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1"]).stdin(Stdio::null());
    cmd
}
