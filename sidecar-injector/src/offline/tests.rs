use super::*;

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: agent
  namespace: agents
spec:
  replicas: 1
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: agent:1
        env:
        - name: KEEP
          value: \"1\"
";

fn labelled() -> OfflineOptions {
    OfflineOptions { namespace: None, namespace_label: true }
}

#[test]
fn workloads_are_injected_in_their_pod_template() {
    let out = inject_manifests(DEPLOYMENT, &InjectorConfig::default(), &labelled()).unwrap();
    let value: serde_json::Value = serde_norway::from_str(&out.yaml).unwrap();
    let template = &value["spec"]["template"];
    assert_eq!(template["spec"]["initContainers"][0]["name"], "credential-broker");
    assert_eq!(template["metadata"]["annotations"]["credential-broker/status"], "injected");
    assert_eq!(template["metadata"]["labels"]["app"], "agent");
    assert_eq!(value["spec"]["replicas"], 1);
    // The user's key order survives: apiVersion, kind, metadata, spec.
    assert!(out.yaml.starts_with("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n"), "{}", out.yaml);
}

#[test]
fn cronjobs_lists_and_other_kinds() {
    let text = "\
apiVersion: v1
kind: ConfigMap
metadata: {name: c}
data: {a: b}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: '@daily'
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: job, image: j}]
---
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Pod
  metadata: {name: p}
  spec:
    containers: [{name: a, image: a}]
---
";
    let out = inject_manifests(text, &InjectorConfig::default(), &labelled()).unwrap();
    let docs: Vec<serde_json::Value> = serde_norway::Deserializer::from_str(&out.yaml).map(|d| serde_json::Value::deserialize(d).unwrap()).collect();
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[0]["data"]["a"], "b");
    assert!(docs[0].get("spec").is_none());
    assert_eq!(docs[1]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["initContainers"][0]["restartPolicy"], "Always");
    assert_eq!(docs[2]["items"][0]["spec"]["initContainers"][0]["name"], "credential-broker");
}

#[test]
fn without_the_namespace_label_only_annotated_pods_change() {
    let out = inject_manifests(DEPLOYMENT, &InjectorConfig::default(), &OfflineOptions::default()).unwrap();
    assert!(!out.yaml.contains("credential-broker"));
}

#[test]
fn denied_objects_print_nothing_and_carry_the_webhook_message() {
    let text = format!(
        "{DEPLOYMENT}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: leaky}}\nspec:\n  containers:\n  - name: app\n    image: a\n    envFrom: [{{secretRef: {{name: aws}}}}]\n"
    );
    let err = inject_manifests(&text, &InjectorConfig::default(), &labelled()).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, OfflineError::Denied(_)));
    assert!(message.contains("document 2 (Pod \"leaky\") denied"), "{message}");
    assert!(message.contains("container \"app\": envFrom[0] imports every key of secret \"aws\""), "{message}");
}

#[test]
fn broken_yaml_names_the_document() {
    let err = inject_manifests("a: b\n---\n: : :\n  - [", &InjectorConfig::default(), &labelled()).unwrap_err().to_string();
    assert!(err.starts_with("document 2"), "{err}");
}
