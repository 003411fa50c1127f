//! The injector and the broker must agree on ports, paths, users and env names. The injector
//! shares no code with the broker, so this test holds the contract: the literal values the
//! broker is built around, the broker's own example config, and what an injected pod gets.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{json, Value};
use sidecar_injector::conventions::*;
use sidecar_injector::{mutate, InjectorConfig, NamespaceInfo};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_owned()
}

fn yaml_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn injected_pod() -> Pod {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "agent", "namespace": "agents"},
        "spec": {"serviceAccountName": "researcher", "containers": [{"name": "agent", "image": "agent:1"}]}
    });
    let namespace = NamespaceInfo { name: "agents".to_owned(), inject_enabled: true };
    let mutation = mutate(&pod, &InjectorConfig::default(), &namespace).expect("injects");
    let mut doc = pod;
    json_patch::patch(&mut doc, &mutation.patch).expect("applies");
    serde_json::from_value(doc).expect("a pod")
}

fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
    let spec = pod.spec.as_ref().expect("spec");
    spec.init_containers.iter().flatten().chain(spec.containers.iter()).find(|c| c.name == name).expect("container")
}

fn env_value<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    container.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.as_deref())
}

/// The values the broker is built around, spelled out so that changing a constant on one side
/// only is caught here rather than in a cluster.
#[test]
fn the_constants_are_the_agreed_values() {
    assert_eq!(ADMIN_PORT, 15000);
    assert_eq!(HEALTH_PORT, 15021);
    assert_eq!(PROXY_PORT, 15001);
    assert_eq!(TRANSPARENT_PORT, 15006);
    assert_eq!(POSTGRES_PORT, 15432);
    assert_eq!(PROXY_URL, "http://127.0.0.1:15001");
    assert_eq!(CA_CERT_PATH, "/var/run/credential-broker/ca.crt");
    assert_eq!(BROKER_CONFIG_FILE, "/etc/credential-broker/config.yaml");
    assert_eq!(BROKER_UID, 15100);
    assert_eq!(AWS_PLACEHOLDER_CREDENTIAL, "credential-broker-placeholder");
    assert_eq!(
        [ENV_AGENT_ID, ENV_TENANT, ENV_POD_NAME, ENV_POD_NAMESPACE, ENV_SERVICE_ACCOUNT],
        ["CB_AGENT_ID", "CB_TENANT", "CB_POD_NAME", "CB_POD_NAMESPACE", "CB_SERVICE_ACCOUNT"]
    );
}

/// `config/broker.yaml` is the broker's shipped example; its listeners and CA path must be
/// where the injector points agents.
#[test]
fn the_broker_example_config_listens_where_agents_are_sent() {
    let config = yaml_file(&repo_root().join("config/broker.yaml"));
    assert_broker_config_matches(&config, "config/broker.yaml");
}

/// Checks one broker config document against the injector's constants.
fn assert_broker_config_matches(config: &Value, origin: &str) {
    let field = |pointer: &str| config.pointer(pointer).and_then(Value::as_str).unwrap_or_else(|| panic!("{origin}: no {pointer}")).to_owned();
    assert_eq!(field("/listeners/proxy"), format!("127.0.0.1:{PROXY_PORT}"), "{origin}");
    assert_eq!(field("/listeners/admin"), format!("127.0.0.1:{ADMIN_PORT}"), "{origin}");
    // The kubelet probes the pod IP, so the health listener must listen beyond loopback.
    assert_eq!(field("/listeners/health"), format!("0.0.0.0:{HEALTH_PORT}"), "{origin}");
    // Transparent mode's iptables rules redirect to 127.0.0.1 on this port.
    assert_eq!(field("/listeners/transparent"), format!("127.0.0.1:{TRANSPARENT_PORT}"), "{origin}");
    assert_eq!(field("/tls/ca_cert_path"), CA_CERT_PATH, "{origin}");
    // The broker's root filesystem is read-only; the audit log must go to the injected volume.
    let audit = PathBuf::from(field("/audit/path"));
    assert!(audit.starts_with(AUDIT_DIR), "{origin}: audit.path {} is outside {AUDIT_DIR}", audit.display());
    // Every ${VAR} the config expands must be set in the injected broker container.
    let text = serde_norway::to_string(config).expect("yaml");
    let pod = injected_pod();
    let broker = container(&pod, BROKER_CONTAINER_NAME);
    for var in referenced_env(&text) {
        assert!(broker.env.iter().flatten().any(|e| e.name == var), "{origin} uses ${{{var}}} but the broker container does not set it");
    }
}

/// Names in `${NAME}` references (the broker's `$${` escape is no reference).
fn referenced_env(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let escaped = rest[..start].ends_with('$');
        rest = &rest[start + 2..];
        let Some(end) = rest.find('}') else { break };
        if !escaped {
            names.push(rest[..end].to_owned());
        }
        rest = &rest[end + 1..];
    }
    names
}

#[test]
fn referenced_env_finds_references_and_skips_escapes() {
    assert_eq!(referenced_env("a: ${CB_TENANT}-$${LITERAL}-${CB_POD_NAME}"), ["CB_TENANT", "CB_POD_NAME"]);
}

/// The example broker ConfigMap under deploy/ is held to the same contract.
#[test]
fn the_deployed_broker_config_map_agrees_too() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/example/broker-configmap.yaml");
    let config_map = yaml_file(&path);
    assert_eq!(config_map["metadata"]["name"], DEFAULT_BROKER_CONFIG_MAP);
    let file_name = Path::new(BROKER_CONFIG_FILE).file_name().and_then(|n| n.to_str()).expect("file name");
    let text = config_map["data"][file_name].as_str().unwrap_or_else(|| panic!("{}: no data.{file_name}", path.display()));
    let config: Value = serde_norway::from_str(text).expect("config.yaml is YAML");
    assert_broker_config_matches(&config, "deploy/example/broker-configmap.yaml");
    // A relative policy file is resolved next to config.yaml, i.e. in the same ConfigMap.
    let policy = config.pointer("/policy/file").and_then(Value::as_str).expect("policy.file");
    assert!(config_map["data"][policy].is_string(), "the ConfigMap must carry {policy}");
}

#[test]
fn the_injected_pod_uses_the_agreed_values() {
    let pod = injected_pod();
    let broker = container(&pod, BROKER_CONTAINER_NAME);
    assert_eq!(broker.args.as_deref().map(|a| a.join(" ")).as_deref(), Some("run --config /etc/credential-broker/config.yaml"));
    let ports: Vec<i32> = broker.ports.iter().flatten().map(|p| p.container_port).collect();
    assert_eq!(ports, [15000, 15021, 15001, 15006, 15432]);
    let security = broker.security_context.as_ref().expect("security context");
    assert_eq!(security.run_as_user, Some(15100));
    assert_eq!(security.run_as_non_root, Some(true));
    let mount = |name: &str| broker.volume_mounts.iter().flatten().find(|m| m.name == name).expect("mount").clone();
    assert_eq!(mount(CONFIG_VOLUME_NAME).mount_path, "/etc/credential-broker");
    let ca = mount(CA_VOLUME_NAME);
    assert_eq!((ca.mount_path.as_str(), ca.read_only), ("/var/run/credential-broker", Some(false)), "the broker writes its CA certificate");
    let audit = mount(AUDIT_VOLUME_NAME);
    assert_eq!((audit.mount_path.as_str(), audit.read_only), ("/var/log/credential-broker", Some(false)), "the broker writes its audit log");
    for var in ["CB_POD_NAME", "CB_POD_NAMESPACE", "CB_SERVICE_ACCOUNT"] {
        assert!(broker.env.iter().flatten().any(|e| e.name == var && e.value_from.is_some()), "{var} from the downward API");
    }
    assert_eq!(env_value(broker, "CB_AGENT_ID"), Some("agents/researcher"));
    assert_eq!(env_value(broker, "CB_TENANT"), Some("agents"));
    for probe in [&broker.startup_probe, &broker.readiness_probe, &broker.liveness_probe] {
        let port = probe.as_ref().and_then(|p| p.http_get.as_ref()).map(|g| g.port.clone());
        assert_eq!(port, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15021)), "probes go to the health listener");
    }

    let agent = container(&pod, "agent");
    for (name, value) in [
        ("HTTP_PROXY", "http://127.0.0.1:15001"),
        ("HTTPS_PROXY", "http://127.0.0.1:15001"),
        ("SSL_CERT_FILE", "/var/run/credential-broker/ca.crt"),
        ("AWS_CA_BUNDLE", "/var/run/credential-broker/ca.crt"),
        ("AWS_ACCESS_KEY_ID", "credential-broker-placeholder"),
        ("AWS_SECRET_ACCESS_KEY", "credential-broker-placeholder"),
        ("PGHOST", "127.0.0.1"),
        ("PGPORT", "15432"),
    ] {
        assert_eq!(env_value(agent, name), Some(value), "{name}");
    }
}

#[test]
fn transparent_mode_redirects_to_the_transparent_port_and_spares_the_broker_uid() {
    let config = InjectorConfig { default_mode: sidecar_injector::config::Mode::Transparent, ..InjectorConfig::default() };
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": {"containers": [{"name": "a", "image": "a"}]}});
    let mutation = mutate(&pod, &config, &NamespaceInfo { name: "agents".to_owned(), inject_enabled: true }).expect("injects");
    let mut doc = pod;
    json_patch::patch(&mut doc, &mutation.patch).expect("applies");
    let pod: Pod = serde_json::from_value(doc).expect("a pod");
    let init = container(&pod, IPTABLES_INIT_CONTAINER_NAME);
    assert_eq!(init.args.as_deref().map(|a| a.join(" ")).as_deref(), Some("iptables-init --proxy-port 15006 --ports 80,443,5432 --exclude-uid 15100"));
}
