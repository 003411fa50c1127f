use serde_json::json;

use super::*;

fn review_of(operation: &str, object: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "agents",
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": object,
            "dryRun": false
        }
    }))
    .unwrap()
}

fn pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "a"}, "spec": {"containers": [{"name": "agent", "image": "agent:1"}]}})
}

#[test]
fn bodies_that_are_no_review_are_errors() {
    let config = InjectorConfig::default();
    let labelled = NamespaceOptIn::Labelled;
    assert!(matches!(review(b"{not json", &config, labelled), Err(ReviewError::NotJson(_))));
    assert_eq!(
        review(br#"{"apiVersion":"v1","kind":"Pod"}"#, &config, labelled),
        Err(ReviewError::WrongKind { api_version: "v1".to_owned(), kind: "Pod".to_owned() })
    );
    assert_eq!(review(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, &config, labelled), Err(ReviewError::NoRequest));
    assert!(matches!(
        review(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"x"}}"#, &config, labelled),
        Err(ReviewError::MalformedRequest(_))
    ));
}

#[test]
fn create_is_patched_with_base64_json_patch() {
    let out = review(&review_of("CREATE", pod()), &InjectorConfig::default(), NamespaceOptIn::Labelled).unwrap();
    let response = &out["response"];
    assert_eq!(out["kind"], "AdmissionReview");
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch = base64::engine::general_purpose::STANDARD.decode(response["patch"].as_str().unwrap()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    assert!(!patch.0.is_empty());
}

#[test]
fn other_operations_and_unlabelled_namespaces_pass_untouched() {
    let config = InjectorConfig::default();
    let update = review(&review_of("UPDATE", pod()), &config, NamespaceOptIn::Labelled).unwrap();
    assert_eq!(update["response"]["allowed"], true);
    assert!(update["response"].get("patch").is_none());
    let unlabelled = review(&review_of("CREATE", pod()), &config, NamespaceOptIn::Unlabelled).unwrap();
    assert!(unlabelled["response"].get("patch").is_none());
}

#[test]
fn a_bad_object_is_denied_in_the_review() {
    let config = InjectorConfig::default();
    for object in [Value::Null, json!("a string"), json!({"kind": "Pod", "spec": {"containers": "nope"}})] {
        let out = review(&review_of("CREATE", object.clone()), &config, NamespaceOptIn::Labelled).unwrap();
        let response = &out["response"];
        assert_eq!(response["allowed"], false, "{object}");
        assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(response["status"]["code"], 403);
        assert!(response["status"]["message"].as_str().unwrap().starts_with("credential-broker: "));
    }
}
