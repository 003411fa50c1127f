//! Refusals at the listeners, before the request pipeline: each is audited through
//! [`crate::audit::RefusalAudit`] (which also logs it, rate-limited) under the same request id
//! as the answer the agent gets.

use std::net::IpAddr;

use http::Response;

use crate::audit::Refusal;
use crate::broker::Broker;
use crate::pipeline::{new_request_id, BrokerError};
use crate::providers::Identity;
use crate::upstream::Body;

/// Who is being refused, where.
#[derive(Clone, Copy)]
pub struct Refuser<'a> {
    pub broker: &'a Broker,
    /// `proxy`, `transparent`…
    pub listener: &'static str,
    pub peer: Option<IpAddr>,
    /// Set once the agent proved an identity (a CONNECT's token, a client certificate).
    pub agent: Option<&'a Identity>,
}

impl Refuser<'_> {
    /// Audit a refusal that has no HTTP answer (a closed connection, a TLS alert); its request id.
    pub fn record(&self, code: &'static str, target: Option<&str>, reason: &str) -> String {
        let request_id = new_request_id();
        self.record_as(&request_id, code, target, reason);
        request_id
    }

    fn record_as(&self, request_id: &str, code: &'static str, target: Option<&str>, reason: &str) {
        self.broker.refusals.record(Refusal {
            code,
            listener: self.listener,
            request_id,
            peer: self.peer,
            agent: self.agent.map(|a| (a.agent_id.as_str(), a.tenant.as_str())),
            route: None,
            target,
            reason,
        });
    }

    /// The HTTP answer for `e`: a refusal (4xx) is audited; an upstream failure (5xx) is not a
    /// refusal and is only logged.
    pub fn answer(&self, target: Option<&str>, e: BrokerError) -> Response<Body> {
        let request_id = new_request_id();
        if e.is_refusal() {
            self.record_as(&request_id, e.code(), target, &e.to_string());
        } else {
            tracing::warn!(request_id = %request_id, listener = self.listener, peer = ?self.peer, target, error = %e, code = e.code(), "request failed");
        }
        e.into_response(&request_id)
    }
}
