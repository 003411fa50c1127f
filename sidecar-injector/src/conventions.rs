//! The contract between the injector and the broker: names, ports, paths and env vars.
//!
//! The broker's own configuration must agree with every value here (its listeners, where it
//! writes its CA certificate, which user it runs as), so they live in one place and are
//! documented as public constants. Values that an operator may reasonably change per cluster
//! (image, resources, ConfigMap name) are defaults in [`crate::config`] instead.

/// Name of the injected broker container; its presence also marks a pod as injected.
pub const BROKER_CONTAINER_NAME: &str = "credential-broker";
/// Name of the init container that installs the transparent-mode iptables rules.
pub const IPTABLES_INIT_CONTAINER_NAME: &str = "credential-broker-iptables-init";
/// Default broker image when the injector config names none.
pub const DEFAULT_BROKER_IMAGE: &str = "credential-broker:0.1.0";

/// Directory the broker's ConfigMap is mounted at.
pub const BROKER_CONFIG_DIR: &str = "/etc/credential-broker";
/// The broker's configuration file inside [`BROKER_CONFIG_DIR`] (a key of the ConfigMap).
pub const BROKER_CONFIG_FILE: &str = "/etc/credential-broker/config.yaml";
/// Arguments of the broker container.
pub const BROKER_ARGS: [&str; 3] = ["run", "--config", BROKER_CONFIG_FILE];
/// Default name of the ConfigMap holding the broker's configuration.
pub const DEFAULT_BROKER_CONFIG_MAP: &str = "credential-broker-config";
/// Pod volume carrying the broker ConfigMap.
pub const CONFIG_VOLUME_NAME: &str = "credential-broker-config";

/// Shared emptyDir volume carrying only the broker's CA certificate.
pub const CA_VOLUME_NAME: &str = "credential-broker-ca";
/// Where [`CA_VOLUME_NAME`] is mounted: read-write in the broker, read-only in agents.
pub const CA_DIR: &str = "/var/run/credential-broker";
/// The broker writes its CA certificate (PEM) here; agents trust it through the CA env vars.
pub const CA_CERT_PATH: &str = "/var/run/credential-broker/ca.crt";

/// Memory-backed emptyDir the broker writes its audit log to, mounted only into the broker: its
/// root filesystem is read-only, so the log needs a writable place, and agents must not be able
/// to edit the record of what they were given.
pub const AUDIT_VOLUME_NAME: &str = "credential-broker-audit";
/// Where [`AUDIT_VOLUME_NAME`] is mounted; the broker config's `audit.path` must lie inside it.
pub const AUDIT_DIR: &str = "/var/log/credential-broker";

/// Projected service-account token volume, mounted only into the broker.
pub const TOKEN_VOLUME_NAME: &str = "credential-broker-token";
/// Where the broker finds its projected token directory.
pub const TOKEN_DIR: &str = "/var/run/secrets/credential-broker";
/// File name of the token inside [`TOKEN_DIR`].
pub const TOKEN_FILE_NAME: &str = "token";
/// Audience of the projected token: only the broker's identity checks accept it.
pub const TOKEN_AUDIENCE: &str = "credential-broker";
/// Lifetime of the projected token; the kubelet refreshes it well before expiry.
pub const TOKEN_EXPIRATION_SECONDS: i64 = 600;
/// Where the kubelet mounts the default service-account token, which agents must not get.
pub const DEFAULT_TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Admin listener on loopback: `/healthz`, `/readyz`, metrics and the admin API.
pub const ADMIN_PORT: u16 = 15000;
/// Health listener on the pod IP (`listeners.health: 0.0.0.0:15021`): only `/healthz` and
/// `/readyz`, so kubelet probes reach the broker while the admin API stays on loopback.
pub const HEALTH_PORT: u16 = 15021;
/// Explicit forward proxy (`HTTP_PROXY` / `HTTPS_PROXY`).
pub const PROXY_PORT: u16 = 15001;
/// Transparent listener that iptables redirects outbound traffic to.
pub const TRANSPARENT_PORT: u16 = 15006;
/// Postgres wire proxy agents connect to without a password.
pub const POSTGRES_PORT: u16 = 15432;
/// Readiness probe path on [`HEALTH_PORT`].
pub const READINESS_PATH: &str = "/readyz";
/// Liveness probe path on [`HEALTH_PORT`].
pub const LIVENESS_PATH: &str = "/healthz";

/// UID the broker runs as; transparent mode excludes it from redirection so the broker's own
/// upstream traffic is not looped back to itself.
pub const BROKER_UID: i64 = 15100;
/// Default outbound TCP ports redirected to the broker in transparent mode. 5432 included: the
/// transparent listener recognises Postgres and serves connections addressed to a configured
/// database's `upstream` (others are closed, never passed through).
pub const DEFAULT_REDIRECT_PORTS: [u16; 3] = [80, 443, 5432];

/// Proxy URL given to agents in proxy mode.
pub const PROXY_URL: &str = "http://127.0.0.1:15001";
/// Destinations agents reach directly, never through the broker.
pub const NO_PROXY: &str = "localhost,127.0.0.1,::1,.svc,.cluster.local";
/// Placeholder AWS credentials: SDKs need some key to sign with; the broker strips the
/// placeholder signature and re-signs, and refuses any request signed with a real key.
pub const AWS_PLACEHOLDER_CREDENTIAL: &str = "credential-broker-placeholder";
/// Host agents use for Postgres: the broker's wire proxy.
pub const PGHOST: &str = "127.0.0.1";

/// Pod annotation: `"true"` opts a pod in, `"false"` opts it out.
pub const ANNOTATION_INJECT: &str = "credential-broker/inject";
/// Pod annotation set to [`STATUS_INJECTED`] once a pod is injected.
pub const ANNOTATION_STATUS: &str = "credential-broker/status";
/// Value of [`ANNOTATION_STATUS`] on injected pods.
pub const STATUS_INJECTED: &str = "injected";
/// Pod annotation naming the ConfigMap with the broker's configuration.
pub const ANNOTATION_CONFIG: &str = "credential-broker/config";
/// Pod annotation with the agent id (default `<namespace>/<serviceaccount>`).
pub const ANNOTATION_AGENT_ID: &str = "credential-broker/agent-id";
/// Pod annotation with the tenant (default: the namespace).
pub const ANNOTATION_TENANT: &str = "credential-broker/tenant";
/// Pod annotation naming the policy bundle / routes the broker loads.
pub const ANNOTATION_POLICY: &str = "credential-broker/policy";
/// Pod annotation choosing `proxy` (default) or `transparent` interception.
pub const ANNOTATION_MODE: &str = "credential-broker/mode";
/// Namespace label that opts every pod in the namespace in.
pub const NAMESPACE_LABEL_INJECT: &str = "credential-broker/inject";
/// Value of [`NAMESPACE_LABEL_INJECT`] that opts a namespace in.
pub const NAMESPACE_LABEL_ENABLED: &str = "enabled";

/// Broker env: the pod's name (downward API).
pub const ENV_POD_NAME: &str = "CB_POD_NAME";
/// Broker env: the pod's namespace (downward API).
pub const ENV_POD_NAMESPACE: &str = "CB_POD_NAMESPACE";
/// Broker env: the pod's service account (downward API).
pub const ENV_SERVICE_ACCOUNT: &str = "CB_SERVICE_ACCOUNT";
/// Broker env: the agent id the broker reports to policy and audit.
pub const ENV_AGENT_ID: &str = "CB_AGENT_ID";
/// Broker env: the tenant the broker binds every credential to.
pub const ENV_TENANT: &str = "CB_TENANT";
/// Broker env: the policy bundle named by [`ANNOTATION_POLICY`], when present.
pub const ENV_POLICY_BUNDLE: &str = "CB_POLICY_BUNDLE";

/// Env vars pointing TLS clients at the broker's CA certificate (OpenSSL, AWS SDKs and CLI,
/// Python requests, Node.js, curl).
pub const CA_ENV_VARS: [&str; 5] = ["SSL_CERT_FILE", "AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE"];
/// Proxy env vars set in proxy mode; lowercase too because curl and many tools read only those.
pub const PROXY_ENV_VARS: [&str; 4] = ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"];
/// No-proxy env vars set in proxy mode.
pub const NO_PROXY_ENV_VARS: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// The env every agent container gets in the given mode, in the order it is written.
///
/// Transparent mode leaves out the `*_PROXY` variables: iptables already sends the traffic to
/// the broker, and a proxy setting would make clients speak CONNECT to the transparent port.
pub fn agent_env(transparent: bool) -> Vec<(&'static str, String)> {
    let mut env = Vec::new();
    if !transparent {
        env.extend(PROXY_ENV_VARS.iter().map(|name| (*name, PROXY_URL.to_owned())));
        env.extend(NO_PROXY_ENV_VARS.iter().map(|name| (*name, NO_PROXY.to_owned())));
    }
    env.extend(CA_ENV_VARS.iter().map(|name| (*name, CA_CERT_PATH.to_owned())));
    env.push(("AWS_ACCESS_KEY_ID", AWS_PLACEHOLDER_CREDENTIAL.to_owned()));
    env.push(("AWS_SECRET_ACCESS_KEY", AWS_PLACEHOLDER_CREDENTIAL.to_owned()));
    env.push(("AWS_EC2_METADATA_DISABLED", "true".to_owned()));
    env.push(("PGHOST", PGHOST.to_owned()));
    env.push(("PGPORT", POSTGRES_PORT.to_string()));
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_values_agree_with_ports_and_paths() {
        assert_eq!(PROXY_URL, format!("http://127.0.0.1:{PROXY_PORT}"));
        assert_eq!(CA_CERT_PATH, format!("{CA_DIR}/ca.crt"));
        assert_eq!(BROKER_CONFIG_FILE, format!("{BROKER_CONFIG_DIR}/config.yaml"));
    }

    #[test]
    fn transparent_mode_sets_no_proxy_variables() {
        let names: Vec<_> = agent_env(true).into_iter().map(|(n, _)| n).collect();
        assert!(!names.iter().any(|n| n.to_ascii_uppercase().contains("PROXY")));
        assert!(names.contains(&"SSL_CERT_FILE"));
    }
}
