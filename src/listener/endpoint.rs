//! Endpoint listeners: a local port per route that forwards to the route's fixed upstream base
//! URL, so a client can be pointed at it by base URL with no proxy settings and no CA.

use std::sync::Arc;

use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;

use super::{serve_connection, Drain};
use crate::broker::Broker;
use crate::config::Route;
use crate::pipeline::{self, Target};

/// The target every request on a route's endpoint goes to.
pub fn endpoint_target(route: &Route) -> Option<Target> {
    let endpoint = route.endpoint.as_ref()?;
    let url = &endpoint.upstream;
    Some(Target {
        scheme: if url.scheme() == "https" { "https" } else { "http" },
        host: url.host_str()?.to_ascii_lowercase(),
        port: url.port_or_known_default()?,
        base_path: url.path().trim_end_matches('/').to_string(),
        route: Arc::new(route.clone()),
    })
}

pub async fn serve(broker: Arc<Broker>, builder: Arc<auto::Builder<TokioExecutor>>, drain: Drain, target: Arc<Target>, stream: TcpStream) {
    serve_connection(builder, stream, &drain, &broker.refusals.clone(), move |req| pipeline::handle(broker.clone(), target.clone(), req)).await;
}
