use serde_json::json;

use super::*;
use crate::ambient::denial_message;

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})).unwrap()
}

#[test]
fn finds_every_kind_of_ambient_credential() {
    let pod = pod(json!({
        "initContainers": [{"name": "setup", "image": "i", "envFrom": [{"configMapRef": {"name": "c"}}, {"secretRef": {"name": "bulk"}}]}],
        "containers": [{
            "name": "agent",
            "image": "i",
            "env": [
                {"name": "PLAIN", "value": "x"},
                {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "AWS_ACCESS_KEY_ID", "value": "AKIAIOSFODNN7EXAMPLE"}
            ],
            "volumeMounts": [
                {"name": "cfg", "mountPath": "/cfg"},
                {"name": "creds", "mountPath": "/creds"},
                {"name": "bundle", "mountPath": "/bundle"}
            ]
        }],
        "volumes": [
            {"name": "cfg", "configMap": {"name": "cfg"}},
            {"name": "creds", "secret": {"secretName": "aws"}},
            {"name": "bundle", "projected": {"sources": [{"configMap": {"name": "x"}}, {"secret": {"name": "tls"}}]}}
        ]
    }));
    let violations = scan_pod(&pod);
    let messages: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "container \"setup\": envFrom[1] imports every key of secret \"bulk\" (envFrom.secretRef)",
            "container \"agent\": env \"DB_PASSWORD\" comes from secret \"db\" (valueFrom.secretKeyRef)",
            "container \"agent\": env \"AWS_ACCESS_KEY_ID\" has a literal value that looks like an AWS access key id",
            "container \"agent\": volume \"creds\" (secret \"aws\") is mounted at /creds",
            "container \"agent\": volume \"bundle\" (secret \"tls\") is mounted at /bundle",
        ]
    );
    assert_eq!(violations[0].list, ContainerList::InitContainers);
    let denial = denial_message(&violations);
    assert!(!denial.contains("AKIAIOSFODNN7EXAMPLE"), "the value must never be echoed");
}

#[test]
fn a_container_named_like_the_broker_is_still_checked() {
    let pod = pod(json!({
        "containers": [{"name": "credential-broker", "image": "i", "envFrom": [{"secretRef": {"name": "broker"}}]}]
    }));
    let messages: Vec<String> = scan_pod(&pod).iter().map(ToString::to_string).collect();
    assert_eq!(messages, ["container \"credential-broker\": envFrom[0] imports every key of secret \"broker\" (envFrom.secretRef)"]);
}

#[test]
fn a_clean_pod_has_no_violations() {
    let pod = pod(json!({
        "containers": [{"name": "a", "image": "i", "env": [{"name": "AWS_SECRET_ACCESS_KEY", "value": "credential-broker-placeholder"}]}]
    }));
    assert!(scan_pod(&pod).is_empty());
}
