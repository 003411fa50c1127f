//! A real OAuth 2.0 token endpoint (client-credentials grant) whose behaviour a test can switch.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::pki::TestCa;

pub const CLIENT_ID: &str = "broker-client";
pub const CLIENT_SECRET: &str = "client-secret-0f9a8b7c6d5e";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u8)]
pub enum Mode {
    Ok = 0,
    ServerError = 1,
    BadClient = 2,
}

#[derive(Default)]
pub struct State {
    pub calls: AtomicU32,
    pub mode: AtomicU8,
    pub expires_in: AtomicU64,
    /// Every token handed out, so tests can scan for them.
    pub issued: Mutex<Vec<String>>,
    /// The form bodies received (scope etc.), without the Authorization header.
    pub forms: Mutex<Vec<String>>,
}

pub struct TokenEndpoint {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenEndpoint {
    pub async fn start(ca: &TestCa) -> TokenEndpoint {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&["localhost"]));
        let state = Arc::new(State { expires_in: AtomicU64::new(3600), ..Default::default() });
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (acceptor, st) = (acceptor.clone(), st.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let svc = hyper::service::service_fn(move |req| token(st.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(tls), svc).await;
                });
            }
        });
        TokenEndpoint { addr, state, task }
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}/oauth/token", self.addr.port())
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn calls(&self) -> u32 {
        self.state.calls.load(Ordering::SeqCst)
    }

    pub fn issued(&self) -> Vec<String> {
        self.state.issued.lock().unwrap().clone()
    }
}

async fn token(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    state.calls.fetch_add(1, Ordering::SeqCst);
    let auth = req.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    state.forms.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
    let reply = |status: StatusCode, body: serde_json::Value| {
        Ok(Response::builder().status(status).header("content-type", "application/json").body(Full::new(Bytes::from(body.to_string()))).unwrap())
    };
    use base64::Engine as _;
    let expected = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}")));
    match state.mode.load(Ordering::SeqCst) {
        1 => return reply(StatusCode::INTERNAL_SERVER_ERROR, serde_json::json!({"error": "server_error"})),
        2 => return reply(StatusCode::UNAUTHORIZED, serde_json::json!({"error": "invalid_client"})),
        _ => {}
    }
    if auth != expected {
        return reply(StatusCode::UNAUTHORIZED, serde_json::json!({"error": "invalid_client"}));
    }
    let token = format!("minted-{}", uuid::Uuid::new_v4().simple());
    state.issued.lock().unwrap().push(token.clone());
    let expires_in = state.expires_in.load(Ordering::SeqCst);
    reply(StatusCode::OK, serde_json::json!({"access_token": token, "token_type": "Bearer", "expires_in": expires_in}))
}
