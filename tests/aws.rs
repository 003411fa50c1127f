//! AWS through the broker, end to end: the real `aws` CLI and boto3 hold only placeholder keys;
//! the broker classifies each call, asks the policy, mints STS session credentials from a real
//! moto server (signature and IAM checks on) and re-signs the request with them.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use support::broker::Broker;
use support::moto::{Moto, WireTap};

const PLACEHOLDER: &str = "credential-broker-placeholder";
const BUCKET: &str = "acme-agent-data";

const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

bucket := "arn:aws:s3:::acme-agent-data"

s3_actions := {"s3:CreateBucket", "s3:PutObject", "s3:GetObject", "s3:ListBucket", "s3:DeleteObject",
               "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}

decision := {"allow": true, "reason": "the tenant's bucket", "ttl_seconds": 300} if {
    input.scope.action in s3_actions
    some prefix in {bucket, concat("", [bucket, "/"])}
    startswith(input.scope.resource, prefix)
    input.agent.tenant == "acme"
}

decision := {"allow": false, "reason": "deleting buckets needs a human"} if {
    input.scope.action == "s3:DeleteBucket"
}

decision := {"allow": true, "reason": "the tenant's task table"} if {
    input.scope.action in {"dynamodb:CreateTable", "dynamodb:DescribeTable", "dynamodb:PutItem", "dynamodb:GetItem"}
    input.scope.resource == "arn:aws:dynamodb:us-east-1:123456789012:table/acme-tasks"
}

decision := {"allow": true, "reason": "the tenant's job queue"} if {
    input.scope.action in {"sqs:CreateQueue", "sqs:GetQueueUrl", "sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage"}
    input.scope.resource == "arn:aws:sqs:us-east-1:123456789012:acme-jobs"
}
"#;

struct Aws {
    dir: tempfile::TempDir,
    moto: Moto,
    broker: Broker,
    /// Sits between the broker and moto's STS, so the test knows every secret STS handed out.
    sts_tap: Option<WireTap>,
    _runtime: tokio::runtime::Runtime,
}

impl Aws {
    fn start() -> Aws {
        let moto = Moto::start();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let tap = runtime.block_on(WireTap::start(moto.addr()));
        let mut a = Self::start_with(moto, tap.url().as_str().trim_end_matches('/'));
        a.sts_tap = Some(tap);
        a._runtime = runtime;
        a
    }

    /// `sts_endpoint` lets a test point the broker at an STS that is not there.
    fn start_with(moto: Moto, sts_endpoint: &str) -> Aws {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
        let yaml = config_yaml(dir.path(), &moto, sts_endpoint);
        let broker = Broker::start(
            dir.path(),
            &yaml,
            &[
                ("AWS_ACCESS_KEY_ID", moto.base_access_key_id.as_str()),
                ("AWS_SECRET_ACCESS_KEY", moto.base_secret_access_key.as_str()),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
        );
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        Aws { dir, moto, broker, sts_tap: None, _runtime: runtime }
    }

    /// The agent's environment: placeholder keys, the broker as HTTPS proxy, its CA trusted.
    fn agent_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", PLACEHOLDER.into()),
            ("AWS_SECRET_ACCESS_KEY", PLACEHOLDER.into()),
            ("HTTPS_PROXY", self.broker.proxy_url()),
            ("AWS_CA_BUNDLE", self.broker.ca_cert().display().to_string()),
        ]
    }

    fn aws(&self, args: &[&str]) -> Output {
        let env = self.agent_env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.moto.aws(args, &env)
    }

    fn aws_ok(&self, args: &[&str]) -> String {
        let out = self.aws(args);
        assert!(out.status.success(), "aws {args:?} failed:\n{}\nbroker log tail:\n{}", String::from_utf8_lossy(&out.stderr), tail(&self.broker.log(), 30));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn issues(&self) -> Vec<serde_json::Value> {
        self.audit().into_iter().filter(|r| r["event"] == "issue").collect()
    }

    /// Every secret STS (moto) handed the broker, read off the wire.
    fn minted_secrets(&self) -> Vec<String> {
        let tap = self.sts_tap.as_ref().expect("started with an STS tap");
        ["AccessKeyId", "SecretAccessKey", "SessionToken"].iter().flat_map(|tag| tap.answered_values(tag)).filter(|s| !s.is_empty()).collect()
    }

    fn assert_no_minted_secret_in(&self, outputs: &[String]) {
        let secrets = self.minted_secrets();
        assert!(!secrets.is_empty(), "moto issued no session credentials");
        let mut written = self.broker.log();
        written.push_str(&std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default());
        for o in outputs {
            written.push_str(o);
        }
        for s in &secrets {
            assert!(!written.contains(s.as_str()), "a minted secret leaked into broker output or a client's view");
        }
        assert!(!written.contains(&self.moto.base_secret_access_key), "the broker's base secret leaked");
    }
}

fn config_yaml(dir: &Path, moto: &Moto, sts_endpoint: &str) -> String {
    format!(
        r#"
identity: {{agent_id: agent-aws, tenant: acme}}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0"}}
tls: {{ca_cert_path: {dir}/broker-ca.crt}}
routes:
  - name: aws
    hosts: ["*.amazonaws.com"]
    # moto stands in for AWS: every AWS host is dialled there, in cleartext on loopback.
    connect_to: "http://{moto}"
    allow_plaintext_upstream: true
    endpoint: {{listen: "127.0.0.1:0", upstream: "https://s3.us-east-1.amazonaws.com"}}
    provider: sts
    inject: {{sigv4: {{account_id: "123456789012", placeholder_access_key_id: {PLACEHOLDER}, max_buffered_body_bytes: 1048576}}}}
providers:
  sts: {{type: sts, role_arn: "{role}", region: us-east-1, endpoint_url: "{sts_endpoint}"}}
policy: {{file: {dir}/policy.rego}}
credentials:
  retry: {{max_retries: 3, base_delay_ms: 20, max_delay_ms: 100}}
audit: {{path: {dir}/audit.jsonl}}
"#,
        dir = dir.display(),
        moto = moto.addr(),
        role = moto.role_arn,
    )
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn the_aws_cli_works_through_the_broker_with_only_placeholder_keys() {
    let a = Aws::start();
    let work = a.dir.path();
    std::fs::write(work.join("small.txt"), "hello from the agent\n").unwrap();
    // 24 MiB: the CLI uploads it in 8 MiB parts (create, 3 × upload-part, complete), streamed.
    let big: Vec<u8> = (0..24 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(work.join("big.bin"), &big).unwrap();
    let small = work.join("small.txt").display().to_string();
    let big_path = work.join("big.bin").display().to_string();

    a.aws_ok(&["s3", "mb", &format!("s3://{BUCKET}")]);
    a.aws_ok(&["s3", "cp", &small, &format!("s3://{BUCKET}/small.txt")]);
    a.aws_ok(&["s3", "cp", &big_path, &format!("s3://{BUCKET}/big.bin")]);
    let listing = a.aws_ok(&["s3", "ls", &format!("s3://{BUCKET}")]);
    assert!(listing.contains("small.txt") && listing.contains("big.bin"), "{listing}");
    assert!(listing.contains(&(24 * 1024 * 1024).to_string()), "{listing}");
    let body = a.aws_ok(&["s3", "cp", &format!("s3://{BUCKET}/small.txt"), "-"]);
    assert_eq!(body, "hello from the agent\n");
    let back = work.join("big.back");
    a.aws_ok(&["s3", "cp", &format!("s3://{BUCKET}/big.bin"), &back.display().to_string()]);
    assert!(std::fs::read(&back).unwrap() == big, "the 24 MiB object came back different");
    a.aws_ok(&["s3", "rm", &format!("s3://{BUCKET}/small.txt")]);

    a.aws_ok(&[
        "dynamodb",
        "create-table",
        "--table-name",
        "acme-tasks",
        "--attribute-definitions",
        "AttributeName=id,AttributeType=S",
        "--key-schema",
        "AttributeName=id,KeyType=HASH",
        "--billing-mode",
        "PAY_PER_REQUEST",
    ]);
    a.aws_ok(&["dynamodb", "put-item", "--table-name", "acme-tasks", "--item", r#"{"id": {"S": "t-1"}, "what": {"S": "summarise"}}"#]);
    let item = a.aws_ok(&["dynamodb", "get-item", "--table-name", "acme-tasks", "--key", r#"{"id": {"S": "t-1"}}"#]);
    assert!(item.contains("summarise"), "{item}");

    let queue = a.aws_ok(&["sqs", "create-queue", "--queue-name", "acme-jobs"]);
    let queue_url = serde_json::from_str::<serde_json::Value>(&queue).unwrap()["QueueUrl"].as_str().unwrap().to_string();
    a.aws_ok(&["sqs", "send-message", "--queue-url", &queue_url, "--message-body", "job-42"]);
    let received = a.aws_ok(&["sqs", "receive-message", "--queue-url", &queue_url]);
    assert!(received.contains("job-42"), "{received}");

    // Each distinct action/resource got its own session, each audited with its exact policy.
    let issues = a.issues();
    assert!(issues.len() >= 10, "{issues:?}");
    for r in &issues {
        assert_eq!(r["provider"], "sts");
        let policy: serde_json::Value = serde_json::from_str(r["credential_scope"].as_str().unwrap()).unwrap();
        assert_eq!(policy["Version"], "2012-10-17");
        let text = policy.to_string();
        assert!(!text.contains("\"*\"") && !text.contains(":*"), "a session policy must name exact resources: {text}");
    }
    a.assert_no_minted_secret_in(&[listing, body, item, queue, received]);
}

#[test]
fn boto3_and_an_endpoint_listener_work_too() {
    let a = Aws::start();
    let script = format!(
        r#"
import boto3
s3 = boto3.client("s3")
s3.create_bucket(Bucket="{BUCKET}")
s3.put_object(Bucket="{BUCKET}", Key="notes/a.txt", Body=b"from boto3")
print(s3.get_object(Bucket="{BUCKET}", Key="notes/a.txt")["Body"].read().decode())
ddb = boto3.client("dynamodb")
ddb.create_table(TableName="acme-tasks", AttributeDefinitions=[{{"AttributeName": "id", "AttributeType": "S"}}],
                 KeySchema=[{{"AttributeName": "id", "KeyType": "HASH"}}], BillingMode="PAY_PER_REQUEST")
ddb.put_item(TableName="acme-tasks", Item={{"id": {{"S": "b-1"}}}})
print(ddb.get_item(TableName="acme-tasks", Key={{"id": {{"S": "b-1"}}}})["Item"]["id"]["S"])
sqs = boto3.client("sqs")
url = sqs.create_queue(QueueName="acme-jobs")["QueueUrl"]
sqs.send_message(QueueUrl=url, MessageBody="job-7")
print(sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"])
"#
    );
    let env = a.agent_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = a.moto.boto3(&script, &env);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), tail(&a.broker.log(), 30));
    assert_eq!(stdout.lines().collect::<Vec<_>>(), ["from boto3", "b-1", "job-7"]);

    // The endpoint listener: no proxy, no CA, just AWS_ENDPOINT_URL_S3 (path-style S3).
    let endpoint = a.broker.endpoint_url("aws");
    let env = [("AWS_ACCESS_KEY_ID", PLACEHOLDER), ("AWS_SECRET_ACCESS_KEY", PLACEHOLDER), ("AWS_ENDPOINT_URL_S3", endpoint.as_str())];
    let out = a.moto.aws(&["s3", "cp", &format!("s3://{BUCKET}/notes/a.txt"), "-"], &env);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), tail(&a.broker.log(), 30));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from boto3");
    a.assert_no_minted_secret_in(&[stdout]);
}

#[test]
fn without_the_broker_or_with_a_real_looking_key_the_same_calls_fail() {
    let a = Aws::start();
    a.aws_ok(&["s3", "mb", &format!("s3://{BUCKET}")]);
    // Straight to moto with the placeholder: moto rejects the unknown key.
    let direct = a.moto.aws(
        &["s3", "ls", &format!("s3://{BUCKET}")],
        &[("AWS_ACCESS_KEY_ID", PLACEHOLDER), ("AWS_SECRET_ACCESS_KEY", PLACEHOLDER), ("AWS_ENDPOINT_URL", &a.moto.endpoint())],
    );
    assert!(!direct.status.success());
    assert!(String::from_utf8_lossy(&direct.stderr).contains("InvalidAccessKeyId"), "{}", String::from_utf8_lossy(&direct.stderr));

    // Through the broker with a key that is not the placeholder: refused, nothing minted.
    let before = a.issues().len();
    let env = [
        ("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
        ("HTTPS_PROXY", &a.broker.proxy_url()),
        ("AWS_CA_BUNDLE", a.broker.ca_cert().to_str().unwrap()),
    ];
    let out = a.moto.aws(&["s3", "ls", &format!("s3://{BUCKET}")], &env);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("(AccessDenied)") && stderr.contains("not the configured placeholder"), "{stderr}");
    assert_eq!(a.issues().len(), before);
    assert!(!a.broker.log().contains("AKIAIOSFODNN7EXAMPLE"), "the refused key is not logged whole");
    let deny = a.audit().into_iter().last().unwrap();
    assert_eq!(deny["decision"], "deny");
    assert!(deny["reason"].as_str().unwrap().contains("not the configured placeholder"));
}

#[test]
fn a_policy_deny_is_403_with_the_reason_and_no_sts_call() {
    let a = Aws::start();
    a.aws_ok(&["s3", "mb", &format!("s3://{BUCKET}")]);
    let sessions = a.moto.assumed_roles().len();
    let out = a.aws(&["s3", "rb", &format!("s3://{BUCKET}")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("(AccessDenied)") && stderr.contains("deleting buckets needs a human"), "{stderr}");
    assert_eq!(a.moto.assumed_roles().len(), sessions, "a denied request mints nothing");
    let deny = a.audit().into_iter().rev().find(|r| r["decision"] == "deny").unwrap();
    assert_eq!(deny["scope"]["permissions"][0]["action"], "s3:DeleteBucket");
    assert_eq!(deny["scope"]["permissions"][0]["resource"], format!("arn:aws:s3:::{BUCKET}"));
    assert_eq!(deny["reason"], "deleting buckets needs a human");

    // A bucket outside the tenant's: the default deny.
    let out = a.aws(&["s3", "ls", "s3://globex-data"]);
    assert!(!out.status.success());
    // Credential vending is refused whatever the policy says.
    let out = a.aws(&["sts", "get-session-token"]);
    assert!(!out.status.success());
    let vending = a.audit().into_iter().last().unwrap();
    assert!(vending["reason"].as_str().unwrap().contains("vends credentials"), "{vending}");
}

#[test]
fn the_minted_session_policy_is_exactly_the_request_with_a_time_bound() {
    let a = Aws::start();
    a.aws_ok(&["s3", "mb", &format!("s3://{BUCKET}")]);
    std::fs::write(a.dir.path().join("x.txt"), "x").unwrap();
    a.aws_ok(&["s3", "cp", &a.dir.path().join("x.txt").display().to_string(), &format!("s3://{BUCKET}/reports/x.txt")]);
    let put = a.issues().into_iter().find(|r| r["scope"]["permissions"][0]["action"] == "s3:PutObject").expect("an issuance for the PutObject");
    let policy: serde_json::Value = serde_json::from_str(put["credential_scope"].as_str().unwrap()).unwrap();
    // The policy's ttl_seconds is 300, shorter than STS's 900 s minimum: the session policy
    // carries the real end as an aws:CurrentTime condition, equal to the lease's expiry.
    let not_after = policy["Statement"][0]["Condition"]["DateLessThan"]["aws:CurrentTime"].as_str().unwrap().to_string();
    let expected = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": format!("arn:aws:s3:::{BUCKET}/reports/x.txt"),
            "Condition": {"DateLessThan": {"aws:CurrentTime": not_after}}
        }]
    });
    assert_eq!(policy, expected);
    let expiry = put["expiry"].as_str().unwrap();
    assert_eq!(&expiry[..19], &not_after[..19], "the condition and the lease end together");
    let issued = time::OffsetDateTime::parse(put["timestamp"].as_str().unwrap(), &time::format_description::well_known::Rfc3339).unwrap();
    let end = time::OffsetDateTime::parse(&not_after, &time::format_description::well_known::Rfc3339).unwrap();
    let lifetime = (end - issued).whole_seconds();
    assert!((298..=300).contains(&lifetime), "lifetime {lifetime} s");
    // moto received the same policy (it stores but does not enforce session policies).
    let stored: Vec<String> = a.moto.assumed_roles().iter().filter_map(|r| r["policy"].as_str().map(String::from)).collect();
    assert!(stored.contains(&put["credential_scope"].as_str().unwrap().to_string()));
    assert_eq!(put["agent_id"], "agent-aws");
    assert_eq!(put["details"]["role_arn"], a.moto.role_arn.as_str());
    assert_eq!(put["details"]["source_identity"], "agent-aws");
    assert_eq!(put["details"]["duration_seconds"], "900");
    assert!(put["request_id"].as_str().is_some_and(|s| !s.is_empty()));
}

#[test]
fn sts_unreachable_fails_closed_after_three_retries_with_the_alert() {
    let moto = Moto::start();
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let a = Aws::start_with(moto, &format!("http://{closed}"));
    let out = a.aws(&["s3", "ls", &format!("s3://{BUCKET}")]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("(ServiceUnavailable)") && stderr.contains("credential minting failed for provider sts"), "{stderr}");
    assert!(a.broker.wait_for_log("Credential Minting Failure", Duration::from_secs(10)));
    let alert = a.broker.log().lines().find(|l| l.contains("Credential Minting Failure")).unwrap().to_string();
    assert!(alert.contains("\"attempts\":4"), "one try and three retries: {alert}");
    let errors: Vec<_> = a.audit().into_iter().filter(|r| r["decision"] == "error").collect();
    assert!(!errors.is_empty());
    assert!(a.moto.assumed_roles().is_empty());
}

#[test]
fn a_hundred_concurrent_cold_requests_for_one_scope_make_one_assume_role_call() {
    let a = Aws::start();
    a.aws_ok(&["s3", "mb", &format!("s3://{BUCKET}")]);
    std::fs::write(a.dir.path().join("c.txt"), "c").unwrap();
    a.aws_ok(&["s3", "cp", &a.dir.path().join("c.txt").display().to_string(), &format!("s3://{BUCKET}/c.txt")]);
    let before = a.moto.assumed_roles().len();
    let script = format!(
        r#"
import boto3, botocore.config, concurrent.futures, threading
s3 = boto3.client("s3", config=botocore.config.Config(max_pool_connections=100))
barrier = threading.Barrier(100)
def get(_):
    barrier.wait()
    return s3.get_object(Bucket="{BUCKET}", Key="c.txt")["Body"].read()
with concurrent.futures.ThreadPoolExecutor(100) as pool:
    bodies = list(pool.map(get, range(100)))
print(sum(1 for b in bodies if b == b"c"))
"#
    );
    let env = a.agent_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = a.moto.boto3(&script, &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100");
    assert_eq!(a.moto.assumed_roles().len() - before, 1, "exactly one AssumeRole for 100 cold requests of one scope");
}

#[test]
fn a_body_over_the_signing_buffer_cap_is_refused_with_413() {
    let a = Aws::start();
    // DynamoDB bodies are hashed for the signature, so they are buffered; this route caps that at
    // 1 MiB. The 2 MiB item never reaches STS or moto.
    let script = r#"
import boto3, botocore.exceptions
ddb = boto3.client("dynamodb", config=boto3.session.Config(retries={"max_attempts": 1}))
try:
    ddb.put_item(TableName="acme-tasks", Item={"id": {"S": "big"}, "blob": {"S": "x" * (2 * 1024 * 1024)}})
    print("accepted")
except botocore.exceptions.ClientError as e:
    print(e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"])
"#;
    let env = a.agent_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = a.moto.boto3(script, &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "413 RequestEntityTooLargeException");
    assert!(a.issues().is_empty(), "nothing minted for a refused body");
    assert!(a.broker.log().contains("payload_too_large"));
}

/// The deny record the broker wrote for `request_id`.
fn deny_with_id(a: &Aws, request_id: &str) -> serde_json::Value {
    let record = a.audit().into_iter().find(|r| r["request_id"] == request_id);
    let record = record.unwrap_or_else(|| panic!("no audit record for request {request_id}"));
    assert_eq!(record["decision"], "deny", "{record}");
    record
}

/// The request id the broker put in a refusal message: "… (credential-broker <code>, request id <id>)".
fn request_id_in(message: &str) -> String {
    let after = message.split("request id ").nth(1).unwrap_or_else(|| panic!("no request id in {message:?}"));
    after.chars().take_while(|c| c.is_ascii_hexdigit() || *c == '-').collect()
}

#[test]
fn refusals_reach_the_cli_and_boto3_in_each_services_own_error_format() {
    let a = Aws::start();
    a.aws_ok(&["s3", "mb", &format!("s3://{BUCKET}")]);

    // S3 (REST XML), through the CLI: the code and the policy's reason, not "403 Forbidden".
    let out = a.aws(&["s3", "rb", &format!("s3://{BUCKET}")]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(
        stderr.contains("An error occurred (AccessDenied) when calling the DeleteBucket operation: denied by policy: deleting buckets needs a human (credential-broker policy_denied, request id "),
        "{stderr}"
    );
    assert_eq!(deny_with_id(&a, &request_id_in(&stderr))["reason"], "deleting buckets needs a human");
    let out = a.aws(&["s3api", "get-object", "--bucket", "globex-data", "--key", "plans.txt", "/dev/null"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("(AccessDenied) when calling the GetObject operation: denied by policy: no rule allows this request"), "{stderr}");
    assert_eq!(deny_with_id(&a, &request_id_in(&stderr))["scope"]["permissions"][0]["resource"], "arn:aws:s3:::globex-data/plans.txt");

    // SNS (Query XML) through the CLI: before, botocore could not parse the broker's JSON.
    let topic = "arn:aws:sns:us-east-1:123456789012:globex-alerts";
    let out = a.aws(&["sns", "publish", "--topic-arn", topic, "--message", "hi"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.contains("(AccessDenied) when calling the Publish operation: denied by policy: no rule allows this request"), "{stderr}");
    assert_eq!(deny_with_id(&a, &request_id_in(&stderr))["scope"]["permissions"][0]["action"], "sns:Publish");

    // boto3: S3, DynamoDB (JSON) and SNS (Query) each give a ClientError with the code, the
    // reason and the broker's request id as the SDK's own RequestId.
    let script = format!(
        r#"
import json, boto3, botocore.config, botocore.exceptions
config = botocore.config.Config(retries={{"max_attempts": 1}})
calls = [
    ("s3", lambda: boto3.client("s3", config=config).delete_bucket(Bucket="{BUCKET}")),
    ("dynamodb", lambda: boto3.client("dynamodb", config=config).get_item(TableName="globex-tasks", Key={{"id": {{"S": "x"}}}})),
    ("sns", lambda: boto3.client("sns", config=config).publish(TopicArn="{topic}", Message="hi")),
]
for name, call in calls:
    try:
        call()
        print(json.dumps({{"name": name, "accepted": True}}))
    except botocore.exceptions.ClientError as e:
        r = e.response
        print(json.dumps({{"name": name, "status": r["ResponseMetadata"]["HTTPStatusCode"], "code": r["Error"]["Code"],
                          "message": r["Error"]["Message"], "request_id": r["ResponseMetadata"].get("RequestId")}}))
"#
    );
    let env = a.agent_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = a.moto.boto3(&script, &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let results: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let expected = [
        ("s3", "AccessDenied", "denied by policy: deleting buckets needs a human"),
        ("dynamodb", "AccessDeniedException", "denied by policy: no rule allows this request"),
        ("sns", "AccessDenied", "denied by policy: no rule allows this request"),
    ];
    assert_eq!(results.len(), expected.len(), "{results:?}");
    for ((name, code, reason), r) in expected.iter().zip(&results) {
        assert_eq!(r["name"], *name, "{r}");
        assert_eq!((r["status"].as_u64(), r["code"].as_str()), (Some(403), Some(*code)), "{r}");
        let message = r["message"].as_str().unwrap_or_default();
        let id = r["request_id"].as_str().unwrap_or_default();
        assert!(!id.is_empty(), "{name}: the SDK reads the broker's request id: {r}");
        assert_eq!(message, format!("{reason} (credential-broker policy_denied, request id {id})"), "{name}");
        deny_with_id(&a, id);
    }
}
