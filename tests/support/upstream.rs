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
    /// The query string as received, without `?`.
    pub query: Option<String>,
    /// The host the request named: `Host` (HTTP/1.1) or the URI authority (`:authority`, HTTP/2).
    pub host: Option<String>,
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
        Self::start_on(ca, names, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Listens on `addr` (e.g. a veth address that a network namespace reaches).
    pub async fn start_on(ca: &TestCa, names: &[&str], addr: SocketAddr) -> HttpsUpstream {
        let listener = TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("binding the test upstream on {addr}: {e}"));
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
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection_with_upgrades(TokioIo::new(tls), svc).await;
                });
            }
        });
        HttpsUpstream { addr, received, task }
    }

    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

type AnswerBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn answer(rec: Arc<Mutex<Vec<Received>>>, mut req: Request<Incoming>) -> Result<Response<AnswerBody>, Infallible> {
    if req.uri().path().ends_with("/ws") {
        let authorization = req.headers().get("authorization").map(|v| v.to_str().unwrap_or("").to_string());
        let (method, path, version) = (req.method().to_string(), req.uri().path().to_string(), req.version());
        let (query, host) = (req.uri().query().map(str::to_string), host_of(&req));
        rec.lock().unwrap().push(Received { method, path, query, host, authorization, version, body_len: 0 });
        return Ok(websocket_echo(&mut req));
    }
    if req.uri().path().ends_with("/events") {
        return Ok(server_sent_events());
    }
    if req.uri().path().ends_with("/slow") {
        // Slower than any test's request timeout.
        tokio::time::sleep(std::time::Duration::from_secs(10)).await;
    }
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let (query, host) = (req.uri().query().map(str::to_string), host_of(&req));
    let version = req.version();
    let authorization = req.headers().get("authorization").map(|v| v.to_str().unwrap_or("").to_string());
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    rec.lock().unwrap().push(Received { method: method.clone(), path: path.clone(), query, host, authorization, version, body_len: body.len() });
    let answer = serde_json::json!({"ok": true, "method": method, "path": path, "body_len": body.len()});
    Ok(Response::builder().header("content-type", "application/json").body(Full::new(Bytes::from(answer.to_string())).boxed()).unwrap())
}

fn host_of(req: &Request<Incoming>) -> Option<String> {
    let header = req.headers().get(http::header::HOST).and_then(|v| v.to_str().ok()).map(str::to_string);
    header.or_else(|| req.uri().authority().map(|a| a.to_string()))
}

/// `/events`: one event at once, the next only 3 s later, so a client that sees the first event
/// early proves the broker streams rather than buffers.
fn server_sent_events() -> Response<AnswerBody> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, Infallible>>(4);
    tokio::spawn(async move {
        let _ = tx.send(Ok(hyper::body::Frame::data(Bytes::from("data: first\n\n")))).await;
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        let _ = tx.send(Ok(hyper::body::Frame::data(Bytes::from("data: second\n\n")))).await;
    });
    let body = http_body_util::StreamBody::new(tokio_stream_from(rx));
    Response::builder().header("content-type", "text/event-stream").body(body.boxed()).unwrap()
}

fn tokio_stream_from<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `/ws`: answers the upgrade with 101 and then echoes raw bytes (enough to prove the tunnel).
fn websocket_echo(req: &mut Request<Incoming>) -> Response<AnswerBody> {
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        if let Ok(upgraded) = upgrade.await {
            let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
            let _ = tokio::io::copy(&mut r, &mut w).await;
        }
    });
    Response::builder()
        .status(http::StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        .body(Full::new(Bytes::new()).boxed())
        .unwrap()
}
