use k8s_openapi::api::core::v1::Container;
use serde_json::json;

use super::*;
use crate::conventions::*;

fn labelled(name: &str) -> NamespaceInfo {
    NamespaceInfo { name: name.to_owned(), inject_enabled: true }
}

fn unlabelled() -> NamespaceInfo {
    NamespaceInfo { name: "other".to_owned(), inject_enabled: false }
}

fn pod_with(annotations: Value, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agent", "annotations": annotations}, "spec": spec})
}

fn simple_pod() -> Value {
    pod_with(json!({}), json!({"containers": [{"name": "agent", "image": "agent:1"}]}))
}

fn applied(pod: &Value, mutation: &Mutation) -> (Value, Pod) {
    let mut doc = pod.clone();
    json_patch::patch(&mut doc, &mutation.patch).unwrap();
    let typed = serde_json::from_value(doc.clone()).unwrap();
    (doc, typed)
}

fn env_of<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    container.env.iter().flatten().find(|e| e.name == name).and_then(|e| e.value.as_deref())
}

fn spec(pod: &Pod) -> &k8s_openapi::api::core::v1::PodSpec {
    pod.spec.as_ref().unwrap()
}

#[test]
fn injects_native_sidecar_env_mounts_and_token() {
    let pod = simple_pod();
    let mutation = mutate(&pod, &InjectorConfig::default(), &labelled("agents")).unwrap();
    let (_, typed) = applied(&pod, &mutation);
    let spec = spec(&typed);
    let init = spec.init_containers.as_ref().unwrap();
    assert_eq!(init.len(), 1);
    let broker = &init[0];
    assert_eq!(broker.name, BROKER_CONTAINER_NAME);
    assert_eq!(broker.restart_policy.as_deref(), Some("Always"));
    assert_eq!(broker.args.as_ref().unwrap(), &BROKER_ARGS.map(str::to_owned).to_vec());
    assert_eq!(env_of(broker, ENV_AGENT_ID), Some("agents/default"));
    assert_eq!(env_of(broker, ENV_TENANT), Some("agents"));
    assert!(broker.volume_mounts.as_ref().unwrap().iter().any(|m| m.name == TOKEN_VOLUME_NAME && m.mount_path == TOKEN_DIR));

    let agent = &spec.containers[0];
    for (name, value) in agent_env(false) {
        assert_eq!(env_of(agent, name), Some(value.as_str()), "{name}");
    }
    let mounts = agent.volume_mounts.as_ref().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].mount_path, CA_DIR);
    assert_eq!(mounts[0].read_only, Some(true));
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert_eq!(typed.metadata.annotations.as_ref().unwrap().get(ANNOTATION_STATUS).map(String::as_str), Some(STATUS_INJECTED));
    let volumes: Vec<_> = spec.volumes.as_ref().unwrap().iter().map(|v| v.name.as_str()).collect();
    assert_eq!(volumes, [CA_VOLUME_NAME, CONFIG_VOLUME_NAME, TOKEN_VOLUME_NAME, AUDIT_VOLUME_NAME]);
}

#[test]
fn injecting_an_injected_pod_changes_nothing() {
    let pod = simple_pod();
    let config = InjectorConfig::default();
    let mutation = mutate(&pod, &config, &labelled("agents")).unwrap();
    let (doc, _) = applied(&pod, &mutation);
    assert!(mutate(&doc, &config, &labelled("agents")).unwrap().is_empty());
}

#[test]
fn a_broker_container_alone_marks_a_pod_injected() {
    let pod = pod_with(json!({}), json!({"containers": [{"name": "agent", "image": "a"}, {"name": "credential-broker", "image": "b"}]}));
    assert!(mutate(&pod, &InjectorConfig::default(), &labelled("agents")).unwrap().is_empty());
}

#[test]
fn opt_in_and_opt_out() {
    let config = InjectorConfig::default();
    assert!(mutate(&simple_pod(), &config, &unlabelled()).unwrap().is_empty());
    let opted_in = pod_with(json!({ANNOTATION_INJECT: "true"}), json!({"containers": [{"name": "a", "image": "a"}]}));
    assert!(!mutate(&opted_in, &config, &unlabelled()).unwrap().is_empty());
    let opted_out = pod_with(json!({ANNOTATION_INJECT: "false"}), json!({"containers": [{"name": "a", "image": "a"}]}));
    assert!(mutate(&opted_out, &config, &labelled("agents")).unwrap().is_empty());
    let unclear = pod_with(json!({ANNOTATION_INJECT: "yes"}), json!({"containers": [{"name": "a", "image": "a"}]}));
    let err = mutate(&unclear, &config, &labelled("agents")).unwrap_err().to_string();
    assert!(err.contains("credential-broker/inject"), "{err}");
}

#[test]
fn opted_out_pods_in_opted_in_namespaces_are_still_checked() {
    let pod = pod_with(
        json!({ANNOTATION_INJECT: "false"}),
        json!({"containers": [{"name": "app", "image": "a", "env": [{"name": "GITHUB_TOKEN", "value": "ghp_16C7e42F292c6912E7710c838347Ae178B4a"}]}]}),
    );
    let err = mutate(&pod, &InjectorConfig::default(), &labelled("agents")).unwrap_err();
    assert!(matches!(err, Denial::AmbientCredentials(_)));
    assert!(err.to_string().contains("container \"app\": env \"GITHUB_TOKEN\""), "{err}");
    // Outside opted-in namespaces the injector has no say.
    assert!(mutate(&pod, &InjectorConfig::default(), &unlabelled()).unwrap().is_empty());
}

#[test]
fn existing_env_of_the_same_name_is_replaced_and_others_kept() {
    let pod = pod_with(
        json!({}),
        json!({"containers": [{"name": "a", "image": "a", "env": [
            {"name": "KEEP", "value": "1"},
            {"name": "HTTPS_PROXY", "value": "http://corp-proxy:3128"},
            {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
        ]}]}),
    );
    let mutation = mutate(&pod, &InjectorConfig::default(), &labelled("agents")).unwrap();
    let (_, typed) = applied(&pod, &mutation);
    let agent = &spec(&typed).containers[0];
    let env = agent.env.as_ref().unwrap();
    assert_eq!(env[0].name, "KEEP");
    assert_eq!(env[1].value.as_deref(), Some(PROXY_URL));
    assert_eq!(env[2].value.as_deref(), Some(AWS_PLACEHOLDER_CREDENTIAL));
    assert!(env[2].value_from.is_none());
    assert_eq!(env.iter().filter(|e| e.name == "HTTPS_PROXY").count(), 1);
}

#[test]
fn transparent_mode_adds_iptables_init_and_no_proxy_env() {
    let pod = pod_with(
        json!({ANNOTATION_MODE: "transparent"}),
        json!({"initContainers": [{"name": "migrate", "image": "m"}], "containers": [{"name": "a", "image": "a"}]}),
    );
    let mutation = mutate(&pod, &InjectorConfig::default(), &labelled("agents")).unwrap();
    let (_, typed) = applied(&pod, &mutation);
    let init = spec(&typed).init_containers.as_ref().unwrap();
    let names: Vec<_> = init.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, [IPTABLES_INIT_CONTAINER_NAME, BROKER_CONTAINER_NAME, "migrate"]);
    assert_eq!(init[0].args.as_ref().unwrap().join(" "), "iptables-init --proxy-port 15006 --ports 80,443,5432 --exclude-uid 15100");
    let caps = init[0].security_context.as_ref().unwrap().capabilities.as_ref().unwrap();
    assert_eq!(caps.add.as_ref().unwrap(), &["NET_ADMIN", "NET_RAW"]);
    assert_eq!(init[0].security_context.as_ref().unwrap().run_as_user, Some(0));
    for container in [&init[2], &spec(&typed).containers[0]] {
        assert_eq!(env_of(container, "HTTPS_PROXY"), None);
        assert_eq!(env_of(container, "SSL_CERT_FILE"), Some(CA_CERT_PATH));
    }
    assert!(init[0].env.is_none(), "the iptables init container is no agent");
}

#[test]
fn plain_container_fallback() {
    let mut config = InjectorConfig::default();
    config.broker.native_sidecar = false;
    let pod = simple_pod();
    let mutation = mutate(&pod, &config, &labelled("agents")).unwrap();
    let (_, typed) = applied(&pod, &mutation);
    let spec = spec(&typed);
    assert!(spec.init_containers.is_none());
    assert_eq!(spec.containers[0].name, BROKER_CONTAINER_NAME);
    assert!(spec.containers[0].restart_policy.is_none());
    assert_eq!(env_of(&spec.containers[1], "HTTP_PROXY"), Some(PROXY_URL));
}

#[test]
fn the_default_token_is_taken_from_agents() {
    let pod = pod_with(
        json!({}),
        json!({
            "serviceAccountName": "researcher",
            "containers": [{"name": "a", "image": "a", "volumeMounts": [
                {"name": "kube-api-access-x2v9k", "mountPath": DEFAULT_TOKEN_MOUNT_PATH, "readOnly": true},
                {"name": "data", "mountPath": "/data"}
            ]}],
            "volumes": [
                {"name": "data", "emptyDir": {}},
                {"name": "kube-api-access-x2v9k", "projected": {"sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}
                ]}}
            ]
        }),
    );
    let mutation = mutate(&pod, &InjectorConfig::default(), &labelled("lab")).unwrap();
    let (_, typed) = applied(&pod, &mutation);
    let spec = spec(&typed);
    let mounts: Vec<_> = spec.containers[0].volume_mounts.iter().flatten().map(|m| m.name.as_str()).collect();
    assert_eq!(mounts, ["data", CA_VOLUME_NAME]);
    assert!(!spec.volumes.iter().flatten().any(|v| v.name.starts_with("kube-api-access-")));
    let broker = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(env_of(broker, ENV_AGENT_ID), Some("lab/researcher"));
}

#[test]
fn annotations_choose_identity_config_and_policy() {
    let pod = pod_with(
        json!({ANNOTATION_AGENT_ID: "bot-7", ANNOTATION_TENANT: "acme", ANNOTATION_POLICY: "s3-readonly", ANNOTATION_CONFIG: "acme-broker"}),
        json!({"containers": [{"name": "a", "image": "a"}]}),
    );
    let mutation = mutate(&pod, &InjectorConfig::default(), &labelled("agents")).unwrap();
    let (_, typed) = applied(&pod, &mutation);
    let spec = spec(&typed);
    let broker = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(env_of(broker, ENV_AGENT_ID), Some("bot-7"));
    assert_eq!(env_of(broker, ENV_TENANT), Some("acme"));
    assert_eq!(env_of(broker, ENV_POLICY_BUNDLE), Some("s3-readonly"));
    let config_volume = spec.volumes.iter().flatten().find(|v| v.name == CONFIG_VOLUME_NAME).unwrap();
    assert_eq!(config_volume.config_map.as_ref().unwrap().name, "acme-broker");
}

#[test]
fn bad_annotations_and_host_network_are_denied() {
    let config = InjectorConfig::default();
    let cases = [
        (json!({ANNOTATION_MODE: "sideways"}), json!({"containers": [{"name": "a"}]}), "credential-broker/mode"),
        (json!({ANNOTATION_CONFIG: "Not_A_Name"}), json!({"containers": [{"name": "a"}]}), "credential-broker/config"),
        (json!({ANNOTATION_TENANT: " "}), json!({"containers": [{"name": "a"}]}), "credential-broker/tenant"),
        (json!({}), json!({"hostNetwork": true, "containers": [{"name": "a"}]}), "hostNetwork"),
    ];
    for (annotations, spec, needle) in cases {
        let err = mutate(&pod_with(annotations, spec), &config, &labelled("agents")).unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
    let err = mutate(&json!({"kind": "Pod", "metadata": {}}), &config, &labelled("a")).unwrap_err();
    assert!(matches!(err, Denial::InvalidPod(_)));
}

#[test]
fn strip_namespaces_strip_with_warnings() {
    let mut config = InjectorConfig::default();
    config.strip_namespaces.insert("legacy".to_owned());
    let pod = pod_with(
        json!({}),
        json!({
            "containers": [{"name": "app", "image": "a",
                "env": [
                    {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                    {"name": "KEEP", "value": "1"},
                    {"name": "AWS_SECRET_ACCESS_KEY", "value": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}
                ],
                "envFrom": [{"secretRef": {"name": "bulk"}}],
                "volumeMounts": [{"name": "creds", "mountPath": "/creds"}]
            }],
            "volumes": [{"name": "creds", "secret": {"secretName": "aws"}}]
        }),
    );
    assert!(mutate(&pod, &config, &labelled("agents")).is_err(), "other namespaces still deny");
    let mutation = mutate(&pod, &config, &labelled("legacy")).unwrap();
    assert_eq!(mutation.warnings.len(), 4);
    assert!(mutation.warnings.iter().all(|w| w.starts_with("credential-broker stripped")));
    let (doc, typed) = applied(&pod, &mutation);
    let agent = &spec(&typed).containers[0];
    assert!(agent.env_from.as_ref().unwrap().is_empty());
    assert_eq!(env_of(agent, "KEEP"), Some("1"));
    assert_eq!(env_of(agent, "AWS_SECRET_ACCESS_KEY"), Some(AWS_PLACEHOLDER_CREDENTIAL));
    assert!(agent.env.iter().flatten().all(|e| e.name != "A"));
    assert!(agent.volume_mounts.iter().flatten().all(|m| m.name != "creds"));
    assert!(mutate(&doc, &config, &labelled("legacy")).unwrap().is_empty());
}
