//! A route whose host is an IP address: the broker's leaf names it with an IP SAN, so a real
//! client (curl, OpenSSL) accepts it; the CA vouches for no other address; and a pattern no
//! certificate could serve (a wildcard over an address) is refused by `check-config`.

mod support;

use std::path::Path;

use support::broker::{cli, Broker};
use support::clients::curl_via_proxy;
use support::pki::TestCa;
use support::upstream::HttpsUpstream;

const PLACEHOLDER: &str = "credential-broker-placeholder";

const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "reads are fine"} if input.scope.action == "http:GET"
"#;

fn config_yaml(dir: &Path, ca: &TestCa, hosts: &str) -> String {
    format!(
        r#"
mode: dev
identity: {{agent_id: agent-7, tenant: acme}}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0"}}
tls: {{ca_cert_path: {dir}/broker-ca.crt, upstream_ca_file: {upstream_ca}}}
routes:
  - name: local-api
    hosts: {hosts}
    provider: env
    inject: {{header: {{name: Authorization, format: "Bearer {{secret}}", placeholder: {PLACEHOLDER}}}}}
providers:
  env: {{type: env, variable: LOCAL_TOKEN}}
policy: {{file: {dir}/policy.rego}}
audit: {{path: {dir}/audit.jsonl}}
"#,
        dir = dir.display(),
        upstream_ca = ca.cert_path.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_accepts_the_leaf_of_an_ip_route_and_the_upstream_gets_the_credential() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    let upstream = HttpsUpstream::start(&ca, &["localhost"]).await;
    std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
    let broker = Broker::start(dir.path(), &config_yaml(dir.path(), &ca, r#"["127.0.0.1"]"#), &[("LOCAL_TOKEN", "local-token-93be")]);

    let url = format!("https://127.0.0.1:{}/items", upstream.addr.port());
    let (status, body) = curl_via_proxy(&broker.proxy_url(), broker.ca_cert(), &[], &url);
    assert_eq!(status, 200, "{body}\n{}", broker.log());
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer local-token-93be"));

    // The leaf names the address as an IP, and nothing else.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "curl --silent --proxy {} --cacert {} -o /dev/null --write-out '%{{certs}}' {url} | openssl x509 -noout -ext subjectAltName",
            broker.proxy_url(),
            broker.ca_cert().display()
        ))
        .output()
        .unwrap();
    let san = String::from_utf8_lossy(&out.stdout);
    assert!(san.contains("IP Address:127.0.0.1") && !san.contains("DNS:"), "{san}");
}

#[test]
fn check_config_refuses_an_ip_pattern_no_certificate_could_serve() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path());
    std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
    let path = dir.path().join("config.yaml");
    std::fs::write(&path, config_yaml(dir.path(), &ca, r#"["127.0.0.1", "*.0.0.1"]"#)).unwrap();
    let out = cli(&["check-config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("routes[0].hosts[1]") && stderr.contains("a wildcard cannot match IP addresses"), "{stderr}");
}
