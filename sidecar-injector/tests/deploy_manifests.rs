//! Every manifest under `deploy/` parses, the pieces refer to each other correctly, and the
//! example agent pod goes through the same injection the webhook would apply.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::Deserialize as _;
use serde_json::Value;
use sidecar_injector::conventions::{BROKER_CONTAINER_NAME, NAMESPACE_LABEL_ENABLED, NAMESPACE_LABEL_INJECT};
use sidecar_injector::offline::{inject_manifests, OfflineOptions};
use sidecar_injector::server::{MUTATE_ANNOTATED_PATH, MUTATE_PATH};
use sidecar_injector::InjectorConfig;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

/// One YAML document and the file it came from.
struct Doc {
    file: PathBuf,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }

    fn typed<T: DeserializeOwned>(&self) -> T {
        serde_json::from_value(self.value.clone()).unwrap_or_else(|err| panic!("{} {} in {}: {err}", self.kind(), self.name(), self.file.display()))
    }
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files.extend(yaml_files(&path));
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn parse_file(file: &Path) -> Vec<Doc> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|err| panic!("{}: {err}", file.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|document| serde_norway::Value::deserialize(document).unwrap_or_else(|err| panic!("{}: {err}", file.display())))
        .filter(|value| !value.is_null())
        .map(|value| Doc { file: file.to_owned(), value: serde_json::to_value(value).expect("YAML that is JSON") })
        .collect()
}

/// The Kubernetes objects (everything but kustomization files).
fn objects() -> Vec<Doc> {
    yaml_files(&deploy_dir()).iter().filter(|f| f.file_name().is_some_and(|n| n != "kustomization.yaml")).flat_map(|f| parse_file(f)).collect()
}

fn one<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    let found: Vec<_> = docs.iter().filter(|d| d.kind() == kind && d.name() == name).collect();
    assert_eq!(found.len(), 1, "expected one {kind} {name}");
    found[0]
}

#[test]
fn every_document_is_a_kubernetes_object_of_a_known_shape() {
    let docs = objects();
    assert!(docs.len() >= 15, "only {} documents", docs.len());
    for doc in &docs {
        let where_ = format!("{} in {}", doc.kind(), doc.file.display());
        assert!(doc.value["apiVersion"].as_str().is_some_and(|v| !v.is_empty()), "{where_}: apiVersion");
        assert!(!doc.name().is_empty(), "{where_}: metadata.name");
        // Typed parsing catches misspelt or misplaced fields of the core kinds.
        match doc.kind() {
            "Namespace" => drop(doc.typed::<Namespace>()),
            "ServiceAccount" => drop(doc.typed::<ServiceAccount>()),
            "ConfigMap" => drop(doc.typed::<ConfigMap>()),
            "Service" => drop(doc.typed::<Service>()),
            "Deployment" => drop(doc.typed::<Deployment>()),
            "PodDisruptionBudget" => drop(doc.typed::<PodDisruptionBudget>()),
            "MutatingWebhookConfiguration" => drop(doc.typed::<MutatingWebhookConfiguration>()),
            "Pod" => drop(doc.typed::<Pod>()),
            "Issuer" | "Certificate" => assert_eq!(doc.value["apiVersion"], "cert-manager.io/v1", "{where_}"),
            other => panic!("{where_}: unexpected kind {other}"),
        }
    }
}

#[test]
fn each_kustomization_lists_exactly_its_directory() {
    for kustomization in yaml_files(&deploy_dir()).into_iter().filter(|f| f.ends_with("kustomization.yaml")) {
        let dir = kustomization.parent().expect("dir");
        let doc = &parse_file(&kustomization)[0];
        assert_eq!(doc.value["kind"], "Kustomization");
        let listed: BTreeSet<String> = doc.value["resources"].as_array().expect("resources").iter().map(|r| r.as_str().expect("a path").to_owned()).collect();
        let present: BTreeSet<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml"))
            .map(|p| p.file_name().and_then(|n| n.to_str()).expect("name").to_owned())
            .collect();
        assert_eq!(listed, present, "{}", kustomization.display());
    }
}

#[test]
fn the_webhook_configuration_is_what_the_server_expects() {
    let docs = objects();
    let config: MutatingWebhookConfiguration = one(&docs, "MutatingWebhookConfiguration", "credential-broker-sidecar-injector").typed();
    let webhooks = config.webhooks.expect("webhooks");
    let paths: Vec<_> = webhooks.iter().map(|w| w.client_config.service.as_ref().and_then(|s| s.path.clone()).unwrap_or_default()).collect();
    assert_eq!(paths, [MUTATE_PATH, MUTATE_ANNOTATED_PATH]);
    for webhook in &webhooks {
        let name = &webhook.name;
        assert_eq!(webhook.admission_review_versions, ["v1"], "{name}");
        assert_eq!(webhook.side_effects, "None", "{name}");
        assert_eq!(webhook.reinvocation_policy.as_deref(), Some("IfNeeded"), "{name}");
        let rules = webhook.rules.as_ref().expect("rules");
        assert_eq!(rules.len(), 1, "{name}");
        assert_eq!(rules[0].operations.as_deref(), Some(&["CREATE".to_owned()][..]), "{name}: only CREATE");
        assert_eq!(rules[0].resources.as_deref(), Some(&["pods".to_owned()][..]), "{name}");
        assert_eq!(rules[0].api_groups.as_deref(), Some(&[String::new()][..]), "{name}");
    }

    let labelled = &webhooks[0];
    assert_eq!(labelled.failure_policy.as_deref(), Some("Fail"), "opted-in namespaces fail closed");
    let selector = labelled.namespace_selector.as_ref().and_then(|s| s.match_labels.as_ref()).expect("matchLabels");
    assert_eq!(selector.get(NAMESPACE_LABEL_INJECT).map(String::as_str), Some(NAMESPACE_LABEL_ENABLED));

    // The other entry must never see the opted-in namespaces (they would be handled twice) nor
    // the injector's own namespace.
    let expressions = webhooks[1].namespace_selector.as_ref().and_then(|s| s.match_expressions.as_ref()).expect("matchExpressions");
    let excluded = |key: &str| -> Vec<String> {
        expressions.iter().filter(|e| e.key == key && e.operator == "NotIn").flat_map(|e| e.values.clone().unwrap_or_default()).collect()
    };
    assert!(excluded(NAMESPACE_LABEL_INJECT).contains(&NAMESPACE_LABEL_ENABLED.to_owned()));
    assert!(excluded("kubernetes.io/metadata.name").contains(&"credential-broker-system".to_owned()));
    assert!(excluded("kubernetes.io/metadata.name").contains(&"kube-system".to_owned()));
}

#[test]
fn service_deployment_certificate_and_webhook_refer_to_each_other() {
    let docs = objects();
    let webhook_doc = one(&docs, "MutatingWebhookConfiguration", "credential-broker-sidecar-injector");
    let webhook: MutatingWebhookConfiguration = webhook_doc.typed();
    let service_ref = webhook.webhooks.as_ref().and_then(|w| w.first()).and_then(|w| w.client_config.service.clone()).expect("service reference");
    let service: Service = one(&docs, "Service", &service_ref.name).typed();
    assert_eq!(service.metadata.namespace.as_deref(), Some(service_ref.namespace.as_str()));
    let service_spec = service.spec.expect("service spec");
    let port = service_spec.ports.as_ref().and_then(|p| p.iter().find(|p| Some(p.port) == service_ref.port)).expect("the webhook's port on the Service");

    let deployment: Deployment = one(&docs, "Deployment", "sidecar-injector").typed();
    assert_eq!(deployment.metadata.namespace, service.metadata.namespace);
    let spec = deployment.spec.expect("deployment spec");
    assert!(spec.replicas.unwrap_or(1) >= 2, "failurePolicy Fail needs more than one replica");
    let template_labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).expect("template labels");
    for (key, value) in service_spec.selector.expect("selector") {
        assert_eq!(template_labels.get(&key), Some(&value), "the Service selects the webhook pods");
    }
    let pod_spec = spec.template.spec.expect("pod spec");
    let container = &pod_spec.containers[0];
    let IntOrString::String(target) = port.target_port.clone().expect("targetPort") else { panic!("targetPort by name") };
    let container_port = container.ports.iter().flatten().find(|p| p.name.as_deref() == Some(target.as_str())).expect("named container port");
    let args = container.args.clone().expect("args");
    assert_eq!(args[0], "serve");
    let arg = |flag: &str| args.iter().find_map(|a| a.strip_prefix(&format!("--{flag}="))).unwrap_or_else(|| panic!("--{flag}")).to_owned();
    assert!(arg("listen").ends_with(&format!(":{}", container_port.container_port)), "the server listens on the Service's target port");

    // The serving certificate: issued for the Service's name, mounted where --tls-cert points,
    // and the CA source the webhook configuration's caBundle is injected from.
    let namespace = service.metadata.namespace.clone().expect("namespace");
    let cert_ref = webhook_doc.value["metadata"]["annotations"]["cert-manager.io/inject-ca-from"].as_str().expect("inject-ca-from");
    let (cert_namespace, cert_name) = cert_ref.split_once('/').expect("namespace/name");
    assert_eq!(cert_namespace, namespace);
    let certificate = &one(&docs, "Certificate", cert_name).value;
    let dns_names: Vec<_> = certificate["spec"]["dnsNames"].as_array().expect("dnsNames").iter().filter_map(Value::as_str).collect();
    assert!(dns_names.contains(&format!("{}.{namespace}.svc", service_ref.name).as_str()), "{dns_names:?}");
    let secret_name = certificate["spec"]["secretName"].as_str().expect("secretName");
    let issuer = certificate["spec"]["issuerRef"]["name"].as_str().expect("issuer");
    assert_eq!(one(&docs, "Issuer", issuer).value["metadata"]["namespace"], namespace.as_str());

    let mounted_dir = |volume_source: &dyn Fn(&k8s_openapi::api::core::v1::Volume) -> bool| -> String {
        let volume = pod_spec.volumes.iter().flatten().find(|v| volume_source(v)).expect("volume");
        container.volume_mounts.iter().flatten().find(|m| m.name == volume.name).expect("mount").mount_path.clone()
    };
    let tls_dir = mounted_dir(&|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some(secret_name));
    assert_eq!(arg("tls-cert"), format!("{tls_dir}/tls.crt"));
    assert_eq!(arg("tls-key"), format!("{tls_dir}/tls.key"));

    // The injector config it is started with is valid.
    let config_map_name = pod_spec.volumes.iter().flatten().find_map(|v| v.config_map.as_ref().map(|c| c.name.clone())).expect("config volume");
    let config_dir = mounted_dir(&|v| v.config_map.is_some());
    let config_file = arg("config");
    let key = config_file.strip_prefix(&format!("{config_dir}/")).expect("--config inside the ConfigMap mount");
    let config_map: ConfigMap = one(&docs, "ConfigMap", &config_map_name).typed();
    let text = config_map.data.as_ref().and_then(|d| d.get(key)).expect("the config key");
    InjectorConfig::from_yaml(text).unwrap_or_else(|err| panic!("{config_map_name}/{key}: {err}"));

    // The webhook needs no Kubernetes API access, so its pods carry no token.
    assert_eq!(pod_spec.automount_service_account_token, Some(false));
    let account: ServiceAccount = one(&docs, "ServiceAccount", pod_spec.service_account_name.as_deref().expect("service account")).typed();
    assert_eq!(account.automount_service_account_token, Some(false));
    assert!(!docs.iter().any(|d| ["Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"].contains(&d.kind())));
}

#[test]
fn the_example_agent_pod_is_injected_offline() {
    let docs = objects();
    let pod_doc = one(&docs, "Pod", "researcher");
    let pod: Pod = pod_doc.typed();
    let namespace_name = pod.metadata.namespace.clone().expect("namespace");
    let namespace: Namespace = one(&docs, "Namespace", &namespace_name).typed();
    let opted_in = namespace.metadata.labels.as_ref().and_then(|l| l.get(NAMESPACE_LABEL_INJECT)).map(String::as_str) == Some(NAMESPACE_LABEL_ENABLED);
    assert!(opted_in, "the example namespace is labelled for injection");
    let broker_config = one(&docs, "ConfigMap", &InjectorConfig::default().broker.config_map);
    assert_eq!(broker_config.value["metadata"]["namespace"], namespace_name.as_str(), "the broker ConfigMap lives beside the pod");

    let text = std::fs::read_to_string(&pod_doc.file).expect("read example");
    let options = OfflineOptions { namespace: None, namespace_label: opted_in };
    let injected = inject_manifests(&text, &InjectorConfig::default(), &options).unwrap_or_else(|err| panic!("{err}"));
    assert!(injected.warnings.is_empty(), "{:?}", injected.warnings);
    let output: Vec<Doc> = serde_norway::Deserializer::from_str(&injected.yaml)
        .map(|d| Doc { file: pod_doc.file.clone(), value: serde_json::to_value(serde_norway::Value::deserialize(d).expect("yaml")).expect("json") })
        .collect();
    let pod: Pod = one(&output, "Pod", "researcher").typed();
    let spec = pod.spec.expect("spec");
    let brokers = spec.init_containers.iter().flatten().filter(|c| c.name == BROKER_CONTAINER_NAME).count();
    assert_eq!(brokers, 1);
    assert_eq!(spec.containers.len(), 1);
    one(&output, "ServiceAccount", "researcher");
}
