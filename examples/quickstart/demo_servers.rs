//! The quickstart's stand-ins for the outside world: an HTTPS API (`api.demo.test`) and an OAuth2
//! token endpoint, both with their own CA, a PostgreSQL server with a `shop` database, and an
//! OpenBao dev server whose database secrets engine makes users in it. They are the same servers
//! the integration tests use.
//!
//! Usage: cargo run --example demo-servers -- DIR
//! Writes DIR/servers.env (addresses, CA path, token URL, Postgres and OpenBao addresses, the
//! broker's OpenBao token file), DIR/client-secret, DIR/vault-token and DIR/pg-admin-password,
//! then prints every request the API receives, with the Authorization header it got. On SIGTERM or
//! SIGINT it stops PostgreSQL and OpenBao (and removes their directories) before exiting.

#![allow(dead_code)]

#[path = "../../tests/support/openbao.rs"]
mod openbao;
#[path = "../../tests/support/pki.rs"]
mod pki;
#[path = "../../tests/support/postgres.rs"]
mod postgres;
#[path = "../../tests/support/token_endpoint.rs"]
mod token_endpoint;
#[path = "../../tests/support/upstream.rs"]
mod upstream;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};

/// The shop's tables: orders the agent may read, customers it may not.
const SHOP_SQL: &str = "CREATE TABLE customers (id int PRIMARY KEY, name text, email text);
INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com'), (2, 'Grace', 'grace@example.com');
CREATE TABLE orders (id int PRIMARY KEY, customer_id int REFERENCES customers, item text, total numeric);
INSERT INTO orders VALUES (1, 1, 'book', 12.50), (2, 2, 'lamp', 30.00), (3, 1, 'pen', 2.20);";

fn secret_file(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

#[tokio::main]
async fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: demo-servers DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    // Handlers first, so a SIGTERM while the servers start is not fatal before they can be stopped.
    let mut terminate = signal(SignalKind::terminate()).unwrap();
    let mut interrupt = signal(SignalKind::interrupt()).unwrap();
    // PostgreSQL and OpenBao start while the HTTPS servers do.
    let pg = std::thread::spawn(postgres::Postgres::start);
    let bao = std::thread::spawn(openbao::OpenBao::start);

    let ca = pki::TestCa::new(&dir);
    let api = upstream::HttpsUpstream::start(&ca, &["api.demo.test", "localhost"]).await;
    let idp = token_endpoint::TokenEndpoint::start(&ca).await;
    // Short-lived tokens, so a second run of the client shows a fresh mint.
    idp.state.expires_in.store(120, std::sync::atomic::Ordering::SeqCst);

    // Both joined before either is unwrapped: a failure of one still stops the other (on unwind).
    let (pg, bao) = match (pg.join(), bao.join()) {
        (Ok(pg), Ok(bao)) => (pg, bao),
        _ => panic!("PostgreSQL or OpenBao did not start (see above)"),
    };
    pg.admin_sql(SHOP_SQL);
    // Role `readonly`: a user that may log in and read orders, for 5 minutes (renewable up to an
    // hour); revoking the lease ends its sessions and drops it.
    bao.database_engine(&pg, "readonly", "5m", "1h");
    bao.broker_policy();

    let client_secret = dir.join("client-secret");
    secret_file(&client_secret, token_endpoint::CLIENT_SECRET);
    // The broker's own OpenBao token: the broker policy only (database creds, renew, revoke).
    let vault_token = dir.join("vault-token");
    secret_file(&vault_token, &bao.broker_token("1h"));
    // For the demo's "DBA" view only; neither the agent nor the broker gets it.
    let pg_admin_password = dir.join("pg-admin-password");
    secret_file(&pg_admin_password, &pg.password);

    let env = format!(
        "DEMO_API_ADDR={}\nDEMO_TOKEN_URL={}\nDEMO_UPSTREAM_CA={}\nDEMO_CLIENT_SECRET_FILE={}\n\
         DEMO_PG_ADDR={}\nDEMO_PG_SUPERUSER={}\nDEMO_PG_ADMIN_PASSWORD_FILE={}\nDEMO_VAULT_ADDR={}\nDEMO_VAULT_TOKEN_FILE={}\n",
        api.addr,
        idp.url(),
        ca.cert_path.display(),
        client_secret.display(),
        pg.addr(),
        postgres::SUPERUSER,
        pg_admin_password.display(),
        bao.address(),
        vault_token.display(),
    );
    std::fs::write(dir.join("servers.env.tmp"), env).unwrap();
    std::fs::rename(dir.join("servers.env.tmp"), dir.join("servers.env")).unwrap();
    println!("demo API on https://api.demo.test (really {}), token endpoint {}", api.addr, idp.url());
    println!("PostgreSQL on {} (log {}), OpenBao on {}", pg.addr(), pg.log_path().display(), bao.address());

    let mut shown = 0;
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let seen = api.requests();
        for r in &seen[shown..] {
            println!("[api.demo.test] {} {} — Authorization: {}", r.method, r.path, r.authorization.as_deref().unwrap_or("(none)"));
        }
        shown = seen.len();
        std::io::stdout().flush().unwrap();
    }
    println!("stopping OpenBao and PostgreSQL");
    drop(bao);
    drop(pg);
}
