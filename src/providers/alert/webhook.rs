//! Alert delivery to an Alertmanager v2 API (`POST /api/v2/alerts`, a JSON array of alerts).
//!
//! A bounded queue and one delivery task: raising an alert is a `try_send`, so a slow or dead
//! receiver costs the request path nothing; when the queue is full the alert is dropped (and
//! counted) rather than waited for. Each delivery is retried with exponential backoff.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::audit::record::rfc3339;
use crate::metrics::Metrics;
use crate::upstream::{full, HttpClient};

/// One alert in Alertmanager's v2 `postableAlert` shape. Labels identify it, so the resolved
/// alert carries exactly the labels of the firing one.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertmanagerAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<String>,
}

impl AlertmanagerAlert {
    pub fn firing(name: &str, provider: &str, description: String, at: SystemTime) -> Self {
        let labels = [("alertname", name), ("severity", "critical"), ("service", "credential-broker"), ("provider", provider)];
        AlertmanagerAlert {
            labels: labels.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            annotations: [("summary".to_string(), format!("{name}: provider {provider}")), ("description".to_string(), description)].into(),
            starts_at: rfc3339(at),
            ends_at: None,
        }
    }

    pub fn resolved(mut self, at: SystemTime) -> Self {
        self.ends_at = Some(rfc3339(at));
        self
    }
}

/// The sending side of the delivery queue.
pub struct WebhookSink {
    tx: mpsc::Sender<AlertmanagerAlert>,
    metrics: Arc<Metrics>,
}

/// How deliveries are made.
pub struct WebhookSettings {
    /// The receiver's base URL (or its `/api/v2/alerts` endpoint).
    pub base_url: url::Url,
    pub queue_capacity: usize,
    pub max_attempts: u32,
    pub request_timeout: Duration,
}

impl WebhookSink {
    /// Start the delivery task (needs a Tokio runtime).
    pub fn start(settings: WebhookSettings, client: HttpClient, metrics: Arc<Metrics>) -> WebhookSink {
        let (tx, rx) = mpsc::channel(settings.queue_capacity.max(1));
        tokio::spawn(deliver_all(rx, settings, client, metrics.clone()));
        WebhookSink { tx, metrics }
    }

    /// Queue an alert; never waits.
    pub fn send(&self, alert: AlertmanagerAlert) {
        if self.tx.try_send(alert).is_err() {
            self.metrics.alert_delivery("dropped");
            tracing::error!("alert webhook queue is full or closed; alert dropped (it is still in the log and the metrics)");
        }
    }
}

/// `webhook_url` may be Alertmanager's base URL or already its `/api/v2/alerts` endpoint.
fn alerts_url(base: &url::Url) -> String {
    let base = base.as_str().trim_end_matches('/');
    if base.ends_with("/api/v2/alerts") {
        base.to_string()
    } else {
        format!("{base}/api/v2/alerts")
    }
}

async fn deliver_all(mut rx: mpsc::Receiver<AlertmanagerAlert>, settings: WebhookSettings, client: HttpClient, metrics: Arc<Metrics>) {
    let url = alerts_url(&settings.base_url);
    while let Some(alert) = rx.recv().await {
        let body = serde_json::to_vec(&[&alert]).unwrap_or_default();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match post(&client, &url, &body, settings.request_timeout).await {
                Ok(()) => {
                    metrics.alert_delivery("sent");
                    tracing::debug!(%url, resolved = alert.ends_at.is_some(), "alert delivered");
                    break;
                }
                Err(e) if attempt >= settings.max_attempts => {
                    metrics.alert_delivery("failed");
                    tracing::error!(%url, attempts = attempt, error = %e, "alert webhook delivery failed; giving up on this alert");
                    break;
                }
                Err(e) => {
                    let delay = Duration::from_millis(200u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(5));
                    tracing::warn!(%url, attempt, error = %e, delay_ms = delay.as_millis() as u64, "alert webhook delivery failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

async fn post(client: &HttpClient, url: &str, body: &[u8], timeout: Duration) -> Result<(), String> {
    let req =
        http::Request::post(url).header(http::header::CONTENT_TYPE, "application/json").body(full(body.to_vec())).map_err(|e| format!("bad request: {e}"))?;
    match tokio::time::timeout(timeout, client.request(req)).await {
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => Err(format!("receiver answered {}", resp.status())),
        Ok(Err(e)) => Err(format!("{e}")),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firing_and_resolved_share_labels_and_follow_the_v2_shape() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let firing = AlertmanagerAlert::firing("Credential Minting Failure", "idp", "down".into(), at);
        let v = serde_json::to_value([&firing]).unwrap();
        assert_eq!(v[0]["labels"]["alertname"], "Credential Minting Failure");
        assert_eq!(v[0]["startsAt"], "2023-11-14T22:13:20Z");
        assert!(v[0].get("endsAt").is_none());
        let resolved = firing.clone().resolved(at + Duration::from_secs(5));
        assert_eq!(resolved.labels, firing.labels);
        assert_eq!(serde_json::to_value(&resolved).unwrap()["endsAt"], "2023-11-14T22:13:25Z");
    }

    #[test]
    fn the_v2_path_is_appended_once() {
        assert_eq!(alerts_url(&"http://127.0.0.1:9093/".parse().unwrap()), "http://127.0.0.1:9093/api/v2/alerts");
        assert_eq!(alerts_url(&"https://am.example/api/v2/alerts".parse().unwrap()), "https://am.example/api/v2/alerts");
    }
}
