//! Micro-benchmarks of the per-request hot paths, using only the library's public API:
//!
//! - `classify/http`: method + host + path → [`Scope`] for a typical API call;
//! - `policy/decide`: one allow and one deny through the embedded Rego engine with a realistic
//!   policy (several rules, label and tenant checks, a TTL);
//! - `tls/leaf`: minting a leaf certificate for a host never seen before (cold) and fetching the
//!   cached one (warm).
//!
//! Run: `cargo bench --bench hot_paths` (add `-- --quick` for a fast sanity run).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use credential_broker::classify::{self, Scope};
use credential_broker::policy::{PolicyEngine, RequestFacts};
use credential_broker::providers::Identity;
use credential_broker::tls::CertificateAuthority;
use criterion::{criterion_group, criterion_main, Criterion};

/// A policy shaped like a real deployment's: a default deny, read access to a few API trees for
/// one tenant, writes only for agents labelled for it, an explicit deny list that wins, and a
/// shorter TTL for writes.
const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

read_prefixes := [
    "https://api.github.com/repos/acme/",
    "https://api.github.com/orgs/acme/",
    "https://api.example.test/v1/",
]

denied_resources := {
    "https://api.github.com/repos/acme/secrets",
    "https://api.github.com/orgs/acme/members",
}

read_methods := {"http:GET", "http:HEAD"}
write_methods := {"http:POST", "http:PUT", "http:PATCH"}

known_tenant if input.agent.tenant in {"acme", "acme-staging"}

under_read_prefix if {
    some prefix in read_prefixes
    startswith(input.scope.resource, prefix)
}

explicitly_denied if input.scope.resource in denied_resources

explicitly_denied if contains(input.scope.resource, "/admin/")

decision := {"allow": false, "reason": "resource is on the deny list"} if {
    explicitly_denied
}

decision := {"allow": true, "reason": "reads of acme repositories are allowed", "ttl_seconds": 300} if {
    not explicitly_denied
    known_tenant
    input.scope.action in read_methods
    under_read_prefix
}

decision := {"allow": true, "reason": "writes allowed for writer agents", "ttl_seconds": 60} if {
    not explicitly_denied
    known_tenant
    input.scope.action in write_methods
    input.agent.labels.role == "writer"
    under_read_prefix
}
"#;

const QUERY: &str = "data.credential_broker.decision";

fn bench_classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify/http");
    g.bench_function("GET api.github.com/repos/../pulls?query", |b| {
        b.iter(|| {
            classify::http::classify(
                black_box("GET"),
                black_box("https"),
                black_box("API.GitHub.com"),
                black_box("/repos/acme/widgets/pulls?state=open&per_page=100"),
            )
            .unwrap()
        })
    });
    g.bench_function("scope key", |b| {
        let scope = classify::http::classify("GET", "https", "api.github.com", "/repos/acme/widgets/pulls").unwrap();
        b.iter(|| black_box(&scope).key())
    });
    g.finish();
}

fn identity() -> Identity {
    let mut labels = BTreeMap::new();
    labels.insert("role".to_string(), "reader".to_string());
    labels.insert("team".to_string(), "platform".to_string());
    Identity { agent_id: "agent-7f3a".into(), tenant: "acme".into(), labels }
}

fn facts(method: &str, path: &str) -> RequestFacts {
    RequestFacts {
        id: "0190b6e2-7c1d-7d3e-9a4f-2b6c8d0e1f23".into(),
        protocol: "https".into(),
        method: method.into(),
        host: "api.github.com".into(),
        path: path.into(),
        upgrade: None,
    }
}

fn load_policy(dir: &Path) -> PolicyEngine {
    let file = dir.join("policy.rego");
    std::fs::write(&file, POLICY).expect("writing the policy");
    PolicyEngine::load(&file, QUERY).expect("compiling the bench policy")
}

fn bench_policy(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = load_policy(dir.path());
    let who = identity();

    let allow_path = "/repos/acme/widgets/pulls";
    let allow_facts = facts("GET", allow_path);
    let allow_scope: Scope = classify::http::classify("GET", "https", "api.github.com", allow_path).unwrap();
    let d = engine.decide(&who, &allow_facts, &allow_scope);
    assert!(d.allow, "the allow case must be allowed: {d:?}");
    assert_eq!(d.ttl_seconds, Some(300));

    // A write by a reader-labelled agent: no rule allows it, so the default deny applies.
    let deny_path = "/repos/acme/widgets/issues";
    let deny_facts = facts("POST", deny_path);
    let deny_scope: Scope = classify::http::classify("POST", "https", "api.github.com", deny_path).unwrap();
    let d = engine.decide(&who, &deny_facts, &deny_scope);
    assert!(!d.allow, "the deny case must be denied: {d:?}");

    // An explicit deny-list hit (a different, earlier-matching branch of the policy).
    let listed_path = "/repos/acme/secrets";
    let listed_facts = facts("GET", listed_path);
    let listed_scope: Scope = classify::http::classify("GET", "https", "api.github.com", listed_path).unwrap();
    let d = engine.decide(&who, &listed_facts, &listed_scope);
    assert_eq!(d.reason, "resource is on the deny list", "{d:?}");

    let mut g = c.benchmark_group("policy/decide");
    g.bench_function("allow GET repo read", |b| b.iter(|| engine.decide(black_box(&who), black_box(&allow_facts), black_box(&allow_scope))));
    g.bench_function("deny POST (default rule)", |b| b.iter(|| engine.decide(black_box(&who), black_box(&deny_facts), black_box(&deny_scope))));
    g.bench_function("deny GET (deny list)", |b| b.iter(|| engine.decide(black_box(&who), black_box(&listed_facts), black_box(&listed_scope))));
    g.bench_function("classify + decide (allow)", |b| {
        b.iter(|| {
            let scope = classify::http::classify("GET", "https", "api.github.com", black_box(allow_path)).unwrap();
            engine.decide(&who, &allow_facts, &scope)
        })
    });
    g.finish();
}

fn bench_leaf(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let ca = CertificateAuthority::generate(&["bench.test".to_string()], Duration::from_secs(3600)).expect("generating the CA");
    // Warm: the leaf is minted once here and every iteration hits the cache.
    rt.block_on(ca.server_config("api.bench.test")).expect("minting the warm leaf");

    let mut g = c.benchmark_group("tls/leaf");
    // Cold: every iteration asks for a host the CA has never seen, so each one generates a P-256
    // key, signs a certificate and builds a rustls ServerConfig. (The cache keeps every minted
    // leaf, so it grows by one entry per iteration; that does not change the per-mint cost.)
    let counter = AtomicU64::new(0);
    g.bench_function("cold (mint for a new host)", |b| {
        b.iter(|| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            let host = format!("h{n}.bench.test");
            rt.block_on(ca.server_config(black_box(&host))).unwrap()
        })
    });
    g.bench_function("warm (cached host)", |b| b.iter(|| rt.block_on(ca.server_config(black_box("api.bench.test"))).unwrap()));
    g.finish();
}

/// The AWS path's per-request work: endpoint resolution + IAM classification, the session policy
/// that becomes the cache key, and SigV4 re-signing with a (warm) session credential.
fn bench_aws(c: &mut Criterion) {
    use credential_broker::classify::aws::{classify, resolve_endpoint, AwsRequest};
    use credential_broker::inject::sigv4::{sign_request, Payload};
    use credential_broker::providers::{sts::session_policy, Credential, Secret};

    let mut g = c.benchmark_group("aws");
    let get = http::Method::GET;
    let post = http::Method::POST;
    let no_headers = http::HeaderMap::new();
    g.bench_function("classify s3 GetObject (virtual-hosted)", |b| {
        b.iter(|| {
            let ep = resolve_endpoint(black_box("acme-agent-data.s3.us-east-1.amazonaws.com"), &[]).unwrap();
            let req = AwsRequest { method: &get, path: "/reports/2026/q3.csv", query: Some("versionId=3"), headers: &no_headers, body: None };
            classify(black_box(&req), &ep, "123456789012").unwrap()
        })
    });
    let mut json_headers = http::HeaderMap::new();
    json_headers.insert("x-amz-target", "DynamoDB_20120810.PutItem".parse().unwrap());
    json_headers.insert("content-type", "application/x-amz-json-1.0".parse().unwrap());
    let body = br#"{"TableName":"acme-tasks","Item":{"id":{"S":"t-1"},"what":{"S":"summarise the quarter"}}}"#;
    g.bench_function("classify dynamodb PutItem (JSON body)", |b| {
        b.iter(|| {
            let ep = resolve_endpoint(black_box("dynamodb.us-east-1.amazonaws.com"), &[]).unwrap();
            let req = AwsRequest { method: &post, path: "/", query: None, headers: &json_headers, body: Some(body) };
            classify(black_box(&req), &ep, "123456789012").unwrap()
        })
    });
    let ep = resolve_endpoint("acme-agent-data.s3.us-east-1.amazonaws.com", &[]).unwrap();
    let scope = classify(&AwsRequest { method: &get, path: "/reports/q3.csv", query: None, headers: &no_headers, body: None }, &ep, "123456789012").unwrap();
    g.bench_function("session policy (cache key)", |b| b.iter(|| session_policy(black_box(&scope), None)));
    let credential = Credential::AwsSession {
        access_key_id: Secret::new("ASIABENCHMARK0000001"),
        secret_access_key: Secret::new("bench-secret-access-key-0000000000000000"),
        session_token: Secret::new("bench-session-token-".repeat(20)),
    };
    g.bench_function("sigv4 sign s3 GetObject", |b| {
        b.iter(|| {
            let mut req = http::Request::builder()
                .method("GET")
                .uri("https://acme-agent-data.s3.us-east-1.amazonaws.com/reports/q3.csv")
                .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
                .header("user-agent", "aws-cli/1.46 botocore/1.44")
                .body(())
                .unwrap();
            sign_request(&mut req, &credential, "s3", "us-east-1", &Payload::S3ClientDeclared("UNSIGNED-PAYLOAD".into())).unwrap();
            req
        })
    });
    g.bench_function("sigv4 sign dynamodb PutItem (hash body)", |b| {
        b.iter(|| {
            let mut req = http::Request::builder()
                .method("POST")
                .uri("https://dynamodb.us-east-1.amazonaws.com/")
                .header("x-amz-target", "DynamoDB_20120810.PutItem")
                .header("content-type", "application/x-amz-json-1.0")
                .body(())
                .unwrap();
            sign_request(&mut req, &credential, "dynamodb", "us-east-1", &Payload::Buffered(body)).unwrap();
            req
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench_classify, bench_policy, bench_leaf, bench_aws
}
criterion_main!(benches);
