//! An Alertmanager-shaped receiver: records every JSON array POSTed to `/api/v2/alerts`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

pub struct AlertReceiver {
    pub addr: SocketAddr,
    alerts: Arc<Mutex<Vec<serde_json::Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AlertReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AlertReceiver {
    pub async fn start() -> AlertReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let alerts = Arc::new(Mutex::new(Vec::new()));
        let rec = alerts.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let rec = rec.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| receive(rec.clone(), req));
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).serve_connection(TokioIo::new(stream), svc).await;
                });
            }
        });
        AlertReceiver { addr, alerts, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every alert received, in order (each POST's array flattened).
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        self.alerts.lock().unwrap().clone()
    }

    /// Waits (polling) until at least `n` alerts have arrived.
    pub fn wait_for(&self, n: usize, within: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.alerts().len() >= n {
                break;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        self.alerts()
    }
}

async fn receive(rec: Arc<Mutex<Vec<serde_json::Value>>>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let ok = req.method() == http::Method::POST && req.uri().path() == "/api/v2/alerts";
    let json = req.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let status = match serde_json::from_slice::<Vec<serde_json::Value>>(&body) {
        Ok(list) if ok && json => {
            rec.lock().unwrap().extend(list);
            StatusCode::OK
        }
        _ => StatusCode::BAD_REQUEST,
    };
    Ok(Response::builder().status(status).body(Full::new(Bytes::new())).unwrap())
}
