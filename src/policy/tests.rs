use super::*;

const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "reads of repos are allowed", "ttl_seconds": 300} if {
    input.scope.action == "http:GET"
    startswith(input.scope.resource, "https://api.example.test/repos/")
    input.agent.tenant == "acme"
}
"#;

fn identity(tenant: &str) -> Identity {
    Identity { agent_id: "agent-1".into(), tenant: tenant.into(), labels: Default::default() }
}

fn facts() -> RequestFacts {
    RequestFacts { id: "r1".into(), protocol: "https".into(), method: "GET".into(), host: "api.example.test".into(), path: "/repos/x".into(), upgrade: None }
}

fn engine(dir: &tempfile::TempDir, text: &str) -> PolicyEngine {
    let f = dir.path().join("policy.rego");
    std::fs::write(&f, text).unwrap();
    PolicyEngine::load(&f, "data.credential_broker.decision").unwrap()
}

#[test]
fn allows_and_denies_with_reasons_and_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir, POLICY);
    let get = Scope::single("http", None, "http:GET", "https://api.example.test/repos/x");
    let d = e.decide(&identity("acme"), &facts(), &get);
    assert_eq!(d, Decision { allow: true, reason: "reads of repos are allowed".into(), ttl_seconds: Some(300) });
    let d = e.decide(&identity("other"), &facts(), &get);
    assert_eq!(d.reason, "no rule allows this request");
    let post = Scope::single("http", None, "http:POST", "https://api.example.test/repos/x");
    assert!(!e.decide(&identity("acme"), &facts(), &post).allow);
}

#[test]
fn every_permission_must_be_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir, POLICY);
    let mut scope = Scope::single("http", None, "http:GET", "https://api.example.test/repos/x");
    scope.permissions.push(Permission { action: "http:GET".into(), resource: "https://api.example.test/admin".into() });
    assert!(!e.decide(&identity("acme"), &facts(), &scope).allow);
}

#[test]
fn a_broken_new_policy_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir, POLICY);
    std::fs::write(dir.path().join("policy.rego"), "package credential_broker\nthis is not rego").unwrap();
    assert!(e.reload_if_changed().is_err());
    let get = Scope::single("http", None, "http:GET", "https://api.example.test/repos/x");
    assert!(e.decide(&identity("acme"), &facts(), &get).allow);
    std::fs::write(dir.path().join("policy.rego"), POLICY.replace("http:GET", "http:PUT")).unwrap();
    assert!(e.reload_if_changed().unwrap());
    assert!(!e.decide(&identity("acme"), &facts(), &get).allow);
}

#[test]
fn conflicting_rules_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir, "package credential_broker\nimport rego.v1\ndecision := {\"allow\": true} if { true }\ndecision := {\"allow\": false} if { true }\n");
    let d = e.decide(&identity("acme"), &facts(), &Scope::single("http", None, "http:GET", "x"));
    assert!(!d.allow);
}

#[test]
fn an_upgrade_is_its_own_action_and_the_policy_sees_its_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{POLICY}\ndecision := {{\"allow\": true, \"reason\": \"websockets on repos\"}} if {{\n  input.scope.action == \"http:UPGRADE\"\n  input.request.upgrade == \"websocket\"\n}}\n"
    );
    let upgrade = Scope::single("http", None, "http:UPGRADE", "https://api.example.test/repos/x");
    // A policy that allows GET does not allow a tunnel on the same resource.
    let get_only = engine(&dir, POLICY);
    let websocket = RequestFacts { upgrade: Some("websocket".into()), ..facts() };
    assert!(!get_only.decide(&identity("acme"), &websocket, &upgrade).allow);
    let dir = tempfile::tempdir().unwrap();
    let e = engine(&dir, &text);
    assert!(e.decide(&identity("acme"), &websocket, &upgrade).allow);
    let h2c = RequestFacts { upgrade: Some("h2c".into()), ..facts() };
    assert!(!e.decide(&identity("acme"), &h2c, &upgrade).allow);
}
