//! A real HTTPS API server that records what it receives (think GitHub's API).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use super::pki::TestCa;

#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub version: http::Version,
    pub body_len: usize,
}

pub struct HttpsUpstream {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpsUpstream {
    pub async fn start(ca: &TestCa, names: &[&str]) -> HttpsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(names));
        let received = Arc::new(Mutex::new(Vec::new()));
        let rec = received.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (acceptor, rec) = (acceptor.clone(), rec.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else { return };
                    let svc = hyper::service::service_fn(move |req| answer(rec.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        HttpsUpstream { addr, received, task }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

async fn answer(rec: Arc<Mutex<Vec<Received>>>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let version = req.version();
    let authorization = req.headers().get("authorization").map(|v| v.to_str().unwrap_or("").to_string());
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    rec.lock().unwrap().push(Received { method: method.clone(), path: path.clone(), authorization, version, body_len: body.len() });
    let answer = serde_json::json!({"ok": true, "method": method, "path": path, "body_len": body.len()});
    Ok(Response::builder().header("content-type", "application/json").body(Full::new(Bytes::from(answer.to_string()))).unwrap())
}
