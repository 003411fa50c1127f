//! The quickstart's stand-ins for the outside world: an HTTPS API (`api.demo.test`) and an OAuth2
//! token endpoint, both with their own CA. They are the same servers the integration tests use.
//!
//! Usage: cargo run --example demo-servers -- DIR
//! Writes DIR/servers.env (addresses, CA path, token URL) and DIR/client-secret, then prints every
//! request the API receives, with the Authorization header it got.

#![allow(dead_code)]

#[path = "../../tests/support/pki.rs"]
mod pki;
#[path = "../../tests/support/token_endpoint.rs"]
mod token_endpoint;
#[path = "../../tests/support/upstream.rs"]
mod upstream;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[tokio::main]
async fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: demo-servers DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = pki::TestCa::new(&dir);
    let api = upstream::HttpsUpstream::start(&ca, &["api.demo.test", "localhost"]).await;
    let idp = token_endpoint::TokenEndpoint::start(&ca).await;
    // Short-lived tokens, so a second run of the client shows a fresh mint.
    idp.state.expires_in.store(120, std::sync::atomic::Ordering::SeqCst);

    let secret = dir.join("client-secret");
    std::fs::write(&secret, token_endpoint::CLIENT_SECRET).unwrap();
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let env = format!(
        "DEMO_API_ADDR={}\nDEMO_TOKEN_URL={}\nDEMO_UPSTREAM_CA={}\nDEMO_CLIENT_SECRET_FILE={}\n",
        api.addr,
        idp.url(),
        ca.cert_path.display(),
        secret.display()
    );
    std::fs::write(dir.join("servers.env.tmp"), env).unwrap();
    std::fs::rename(dir.join("servers.env.tmp"), dir.join("servers.env")).unwrap();
    println!("demo API on https://api.demo.test (really {}), token endpoint {}", api.addr, idp.url());

    let mut shown = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let seen = api.requests();
        for r in &seen[shown..] {
            println!("[api.demo.test] {} {} — Authorization: {}", r.method, r.path, r.authorization.as_deref().unwrap_or("(none)"));
        }
        shown = seen.len();
        std::io::stdout().flush().unwrap();
    }
}
