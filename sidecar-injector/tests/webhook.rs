//! The webhook over HTTPS, as the API server calls it: real-shaped AdmissionReviews in, patches
//! applied with json-patch and read back as k8s-openapi Pods.
//!
//! Golden patches live in `tests/golden/`; `UPDATE_GOLDEN=1 cargo test -p sidecar-injector`
//! rewrites them (review the diff before committing).

mod common;

use std::path::PathBuf;

use base64::Engine as _;
use common::TestServer;
use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{json, Value};
use sidecar_injector::conventions::*;
use sidecar_injector::server::{MUTATE_ANNOTATED_PATH, MUTATE_PATH};

const UID: &str = "4b7e1f0c-2d9a-4c55-8e21-6f3a9b0d7c11";

fn testdata(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/pods").join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

/// An AdmissionReview as kube-apiserver sends it for a pod CREATE.
fn review_for(pod: &Value) -> Vec<u8> {
    let namespace = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or("");
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": UID,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": name,
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": "a1b2c3d4-0000-4000-8000-000000000001",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": pod,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    }))
    .expect("serialize review")
}

/// POSTs the pod's review to `path` and returns the review's `response`.
async fn admit(server: &TestServer, path: &str, pod: &Value) -> Value {
    let answer = server.post(path, review_for(pod)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.content_type, "application/json");
    let review = answer.json();
    assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(review["kind"], "AdmissionReview");
    let response = review["response"].clone();
    assert_eq!(response["uid"], UID, "the API server rejects a response for another uid");
    response
}

/// The JSON Patch in an allowed response.
fn patch_of(response: &Value) -> Value {
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(response["patchType"], "JSONPatch");
    let encoded = response["patch"].as_str().expect("patch is a base64 string");
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).expect("patch is base64");
    serde_json::from_slice(&bytes).expect("patch is JSON")
}

/// Applies the patch as the API server would and reads the result as a Pod.
fn apply(pod: &Value, patch: &Value) -> (Value, Pod) {
    let operations: json_patch::Patch = serde_json::from_value(patch.clone()).expect("a JSON Patch");
    let mut doc = pod.clone();
    json_patch::patch(&mut doc, &operations).expect("patch applies to the pod it was made for");
    let typed = serde_json::from_value(doc.clone()).expect("the patched pod is a valid Pod");
    (doc, typed)
}

fn assert_golden(name: &str, patch: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let text = serde_json::to_string_pretty(patch).expect("serialize golden") + "\n";
        std::fs::write(&path, text).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{}: {err} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
    let expected: Value = serde_json::from_str(&text).expect("golden is JSON");
    assert!(
        &expected == patch,
        "patch differs from {} (UPDATE_GOLDEN=1 rewrites it); got:\n{}",
        path.display(),
        serde_json::to_string_pretty(patch).unwrap_or_default()
    );
}

fn all_containers(pod: &Pod) -> Vec<&Container> {
    let spec = pod.spec.as_ref().expect("spec");
    spec.init_containers.iter().flatten().chain(spec.containers.iter()).collect()
}

fn env<'a>(container: &'a Container, name: &str) -> Vec<&'a str> {
    container.env.iter().flatten().filter(|e| e.name == name).map(|e| e.value.as_deref().unwrap_or("<valueFrom>")).collect()
}

fn mounts_volume(container: &Container, volume: &str) -> bool {
    container.volume_mounts.iter().flatten().any(|m| m.name == volume)
}

/// Everything an injected pod must satisfy, whatever it started as.
fn assert_injected(pod: &Pod, transparent: bool) {
    let containers = all_containers(pod);
    let brokers: Vec<_> = containers.iter().filter(|c| c.name == BROKER_CONTAINER_NAME).collect();
    assert_eq!(brokers.len(), 1, "exactly one broker");
    let broker = brokers[0];
    let spec = pod.spec.as_ref().expect("spec");
    assert!(spec.init_containers.iter().flatten().any(|c| c.name == BROKER_CONTAINER_NAME), "a native sidecar");
    assert_eq!(broker.restart_policy.as_deref(), Some("Always"));
    assert_eq!(pod.metadata.annotations.as_ref().and_then(|a| a.get(ANNOTATION_STATUS)).map(String::as_str), Some(STATUS_INJECTED));

    // The service-account token: projected into the broker only, the default one gone.
    assert_eq!(spec.automount_service_account_token, Some(false));
    let token_mount = broker.volume_mounts.iter().flatten().find(|m| m.name == TOKEN_VOLUME_NAME).expect("broker mounts its token");
    assert_eq!(token_mount.mount_path, TOKEN_DIR);
    let token_volume = spec.volumes.iter().flatten().find(|v| v.name == TOKEN_VOLUME_NAME).expect("token volume");
    let projection = token_volume.projected.as_ref().and_then(|p| p.sources.as_ref()).and_then(|s| s.first()).and_then(|s| s.service_account_token.as_ref());
    assert_eq!(projection.and_then(|t| t.audience.as_deref()), Some(TOKEN_AUDIENCE));
    assert!(!spec.volumes.iter().flatten().any(|v| v.name.starts_with("kube-api-access-")), "default token volume removed");

    let agents: Vec<_> = containers.iter().filter(|c| c.name != BROKER_CONTAINER_NAME && c.name != IPTABLES_INIT_CONTAINER_NAME).collect();
    assert!(!agents.is_empty());
    for agent in agents {
        let name = &agent.name;
        assert!(!mounts_volume(agent, TOKEN_VOLUME_NAME), "{name} must not mount the broker's token");
        assert!(!agent.volume_mounts.iter().flatten().any(|m| m.mount_path == DEFAULT_TOKEN_MOUNT_PATH), "{name} must not mount the default token");
        let ca = agent.volume_mounts.iter().flatten().filter(|m| m.name == CA_VOLUME_NAME).collect::<Vec<_>>();
        assert_eq!(ca.len(), 1, "{name}: one CA mount");
        assert_eq!((ca[0].mount_path.as_str(), ca[0].read_only), (CA_DIR, Some(true)), "{name}");
        for (var, value) in agent_env(transparent) {
            assert_eq!(env(agent, var), [value.as_str()], "{name}: {var}");
        }
        if transparent {
            assert!(env(agent, "HTTPS_PROXY").is_empty(), "{name}: no proxy settings in transparent mode");
        }
    }
}

fn container<'a>(pod: &'a Pod, name: &str) -> &'a Container {
    all_containers(pod).into_iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no container {name}"))
}

#[tokio::test]
async fn a_single_container_pod_is_injected() {
    let server = TestServer::start().await;
    let pod = testdata("single-container");
    let response = admit(&server, MUTATE_PATH, &pod).await;
    let patch = patch_of(&response);
    assert_golden("single-container", &patch);
    let (_, typed) = apply(&pod, &patch);
    assert_injected(&typed, false);
    let broker = container(&typed, BROKER_CONTAINER_NAME);
    assert_eq!(env(broker, ENV_AGENT_ID), ["agents/researcher"]);
    assert_eq!(env(broker, ENV_TENANT), ["agents"]);
    // The pod's own settings survive.
    let agent = container(&typed, "agent");
    assert_eq!(agent.args.as_deref(), Some(&["--task".to_owned(), "summarise".to_owned()][..]));
    assert_eq!(agent.volume_mounts.iter().flatten().count(), 1, "only the CA mount is left");
}

#[tokio::test]
async fn init_containers_several_agents_existing_env_and_volumes() {
    let server = TestServer::start().await;
    let pod = testdata("multi-container");
    let patch = patch_of(&admit(&server, MUTATE_PATH, &pod).await);
    assert_golden("multi-container", &patch);
    let (_, typed) = apply(&pod, &patch);
    assert_injected(&typed, false);

    let spec = typed.spec.as_ref().expect("spec");
    let init: Vec<_> = spec.init_containers.iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(init, [BROKER_CONTAINER_NAME, "fetch-prompts"], "the broker starts before the pod's own init containers");
    let regular: Vec<_> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(regular, ["planner", "executor"]);

    let planner = container(&typed, "planner");
    assert_eq!(env(planner, "LOG_LEVEL"), ["debug"]);
    assert_eq!(env(planner, "POD_IP"), ["<valueFrom>"]);
    assert_eq!(env(planner, "HTTPS_PROXY"), [PROXY_URL], "the broker's proxy replaces the corporate one");
    assert_eq!(planner.env_from.as_ref().map(Vec::len), Some(1));
    let planner_mounts: Vec<_> = planner.volume_mounts.iter().flatten().map(|m| m.name.as_str()).collect();
    assert_eq!(planner_mounts, ["work", "settings", CA_VOLUME_NAME]);
    assert!(mounts_volume(container(&typed, "fetch-prompts"), "work"));

    let volumes: Vec<_> = spec.volumes.iter().flatten().map(|v| v.name.as_str()).collect();
    assert_eq!(volumes, ["work", "settings", CA_VOLUME_NAME, CONFIG_VOLUME_NAME, TOKEN_VOLUME_NAME, AUDIT_VOLUME_NAME]);

    // Identity and policy from the annotations.
    let broker = container(&typed, BROKER_CONTAINER_NAME);
    assert_eq!(env(broker, ENV_AGENT_ID), ["planner-v2"]);
    assert_eq!(env(broker, ENV_TENANT), ["acme"]);
    assert_eq!(env(broker, ENV_POLICY_BUNDLE), ["s3-readonly"]);
}

#[tokio::test]
async fn an_annotated_pod_in_an_unlabelled_namespace_gets_transparent_mode() {
    let server = TestServer::start().await;
    let pod = testdata("transparent-job");
    let patch = patch_of(&admit(&server, MUTATE_ANNOTATED_PATH, &pod).await);
    assert_golden("transparent-job", &patch);
    let (_, typed) = apply(&pod, &patch);
    assert_injected(&typed, true);
    let init: Vec<_> = typed.spec.as_ref().and_then(|s| s.init_containers.as_ref()).into_iter().flatten().map(|c| c.name.as_str()).collect();
    assert_eq!(init, [IPTABLES_INIT_CONTAINER_NAME, BROKER_CONTAINER_NAME]);
    assert_eq!(env(container(&typed, BROKER_CONTAINER_NAME), ENV_AGENT_ID), ["batch/default"]);
}

#[tokio::test]
async fn an_injected_pod_is_left_alone_on_reinvocation() {
    let server = TestServer::start().await;
    let pod = testdata("single-container");
    let patch = patch_of(&admit(&server, MUTATE_PATH, &pod).await);
    let (injected, _) = apply(&pod, &patch);
    // reinvocationPolicy: IfNeeded sends the pod again after other webhooks changed it.
    let response = admit(&server, MUTATE_PATH, &injected).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
}

#[tokio::test]
async fn opted_out_and_not_opted_in_pods_are_not_patched() {
    let server = TestServer::start().await;
    let response = admit(&server, MUTATE_PATH, &testdata("opted-out")).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
    // A pod in an unlabelled namespace without the annotation.
    let mut plain = testdata("single-container");
    plain["metadata"]["namespace"] = json!("web");
    let response = admit(&server, MUTATE_ANNOTATED_PATH, &plain).await;
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none(), "{response}");
}

/// Expects a denial whose message names each `(container, detail)`.
async fn assert_denied(server: &TestServer, fixture: &str, expected: &[&str]) {
    let response = admit(server, MUTATE_PATH, &testdata(fixture)).await;
    assert_eq!(response["allowed"], false, "{fixture}: {response}");
    assert!(response.get("patch").is_none());
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().expect("a message for the user");
    assert!(message.starts_with("credential-broker: agent containers must not hold credentials"), "{message}");
    for part in expected {
        assert!(message.contains(part), "{fixture}: {message:?} does not mention {part:?}");
    }
}

#[tokio::test]
async fn pods_carrying_secrets_are_denied_naming_container_and_variable() {
    let server = TestServer::start().await;
    assert_denied(&server, "secret-key-ref", &[r#"container "agent": env "DB_PASSWORD" comes from secret "orders-db""#]).await;
    assert_denied(&server, "env-from-secret", &[r#"container "migrate": envFrom[1] imports every key of secret "migrate-creds""#]).await;
    assert_denied(&server, "secret-volume", &[r#"container "uploader": volume "gcp-key" (secret "uploader-gcp-key") is mounted at /var/secrets/gcp"#]).await;
    assert_denied(
        &server,
        "literal-aws-keys",
        &[
            r#"container "agent": env "AWS_ACCESS_KEY_ID" has a literal value that looks like an AWS access key id"#,
            r#"container "agent": env "AWS_SECRET_ACCESS_KEY" has a literal value that looks like an AWS secret access key"#,
        ],
    )
    .await;
    // Messages end up in events and kubectl output: the key itself must never be echoed.
    let response = admit(&server, MUTATE_PATH, &testdata("literal-aws-keys")).await;
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(!message.contains("AKIAIOSFODNN7EXAMPLE") && !message.contains("wJalrXUtnFEMI"), "{message}");
}

#[tokio::test]
async fn an_opted_out_pod_with_secrets_is_still_denied() {
    let server = TestServer::start().await;
    let mut pod = testdata("secret-key-ref");
    pod["metadata"]["annotations"] = json!({ANNOTATION_INJECT: "false"});
    let response = admit(&server, MUTATE_PATH, &pod).await;
    assert_eq!(response["allowed"], false, "{response}");
    assert!(response["status"]["message"].as_str().unwrap_or_default().contains(r#"env "DB_PASSWORD""#));
}

#[tokio::test]
async fn bad_bodies_get_clear_errors_and_the_server_keeps_serving() {
    let server = TestServer::start().await;
    let cases: [(&[u8], &str); 4] = [
        (b"{this is not json", "request body is not JSON"),
        (
            br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}"#,
            r#"expected apiVersion admission.k8s.io/v1 kind AdmissionReview, got apiVersion "v1" kind "Pod""#,
        ),
        (br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{}}"#, r#"got apiVersion "admission.k8s.io/v1beta1""#),
        (br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#, "AdmissionReview has no request"),
    ];
    for (body, expected) in cases {
        let answer = server.post(MUTATE_PATH, body.to_vec()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", String::from_utf8_lossy(body));
        assert_eq!(answer.content_type, "application/json");
        let error = answer.json()["error"].as_str().unwrap_or_default().to_owned();
        assert!(error.contains(expected), "{error:?} does not contain {expected:?}");
    }

    // A review with a request but no object: the uid is known, so the answer is a denial the
    // API server can show to whoever created the pod.
    let mut no_object: Value = serde_json::from_slice(&review_for(&testdata("single-container"))).expect("review");
    no_object["request"].as_object_mut().expect("request").remove("object");
    let answer = server.post(MUTATE_PATH, serde_json::to_vec(&no_object).expect("json")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let response = &answer.json()["response"];
    assert_eq!((&response["uid"], &response["allowed"]), (&json!(UID), &json!(false)));
    assert_eq!(response["status"]["message"], "credential-broker: admission request has no object");

    assert_eq!(server.send(Method::GET, MUTATE_PATH, Vec::new()).await.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(server.get("/nope").await.status, StatusCode::NOT_FOUND);

    // Still serving, and still injecting.
    assert_eq!(server.get("/healthz").await.status, StatusCode::OK);
    let patch = patch_of(&admit(&server, MUTATE_PATH, &testdata("single-container")).await);
    assert_injected(&apply(&testdata("single-container"), &patch).1, false);
}

#[tokio::test]
async fn a_container_posing_as_the_broker_cannot_carry_secrets() {
    let server = TestServer::start().await;
    let mut pod = testdata("secret-key-ref");
    pod["spec"]["containers"][0]["name"] = json!(BROKER_CONTAINER_NAME);
    let response = admit(&server, MUTATE_PATH, &pod).await;
    assert_eq!(response["allowed"], false, "{response}");
    let message = response["status"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(r#"container "credential-broker": env "DB_PASSWORD" comes from secret "orders-db""#), "{message}");
}
