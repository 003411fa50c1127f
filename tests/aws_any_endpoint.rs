//! One host serving every AWS service (LocalStack, moto's server, an internal gateway) as the
//! agent's `AWS_ENDPOINT_URL`: the broker takes the service and region from the scope the SDK
//! signed for, with no per-service mapping in the configuration. And on real AWS hostnames a
//! signed scope that contradicts the host is refused, audited, and never reaches the upstream.

mod support;

use std::path::Path;
use std::process::Output;

use support::broker::Broker;
use support::moto::Moto;

const PLACEHOLDER: &str = "credential-broker-placeholder";

const POLICY: &str = r#"
package credential_broker
import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

acme_resources := {
    "arn:aws:s3:::acme-",
    "arn:aws:dynamodb:us-east-1:123456789012:table/acme-",
    "arn:aws:sqs:us-east-1:123456789012:acme-",
    "arn:aws:sns:us-east-1:123456789012:acme-",
    "arn:aws:logs:us-east-1:123456789012:log-group:acme-",
}

decision := {"allow": true, "reason": "the tenant's resources", "ttl_seconds": 300} if {
    some prefix in acme_resources
    startswith(input.scope.resource, prefix)
}
"#;

struct Setup {
    dir: tempfile::TempDir,
    moto: Moto,
    broker: Broker,
}

impl Setup {
    fn start() -> Setup {
        let moto = Moto::start();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
        let yaml = config_yaml(dir.path(), &moto);
        let broker = Broker::start(
            dir.path(),
            &yaml,
            &[
                ("AWS_ACCESS_KEY_ID", moto.base_access_key_id.as_str()),
                ("AWS_SECRET_ACCESS_KEY", moto.base_secret_access_key.as_str()),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
        );
        Setup { dir, moto, broker }
    }

    /// Placeholder keys and the broker's endpoint listener as the one endpoint for every service.
    fn endpoint_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", PLACEHOLDER.into()),
            ("AWS_SECRET_ACCESS_KEY", PLACEHOLDER.into()),
            ("AWS_ENDPOINT_URL", self.broker.endpoint_url("emulator").trim_end_matches('/').to_string()),
        ]
    }

    /// Placeholder keys, the broker as HTTPS proxy for real AWS hostnames.
    fn proxy_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", PLACEHOLDER.into()),
            ("AWS_SECRET_ACCESS_KEY", PLACEHOLDER.into()),
            ("HTTPS_PROXY", self.broker.proxy_url()),
            ("AWS_CA_BUNDLE", self.broker.ca_cert().display().to_string()),
        ]
    }

    fn aws(&self, args: &[&str]) -> Output {
        let env = self.endpoint_env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.moto.aws(args, &env)
    }

    fn aws_ok(&self, args: &[&str]) -> String {
        let out = self.aws(args);
        assert!(out.status.success(), "aws {args:?} failed:\n{}\nbroker log:\n{}", String::from_utf8_lossy(&out.stderr), self.broker.log());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// The emulator route: an endpoint listener in front of moto, whose host is a custom endpoint
/// with neither service nor region. The AWS route: real hostnames, dialled at moto.
fn config_yaml(dir: &Path, moto: &Moto) -> String {
    format!(
        r#"
identity: {{agent_id: agent-aws, tenant: acme}}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0"}}
tls: {{ca_cert_path: {dir}/broker-ca.crt}}
routes:
  - name: emulator
    endpoint: {{listen: "127.0.0.1:0", upstream: "http://{moto}"}}
    allow_plaintext_upstream: true
    provider: sts
    inject:
      sigv4:
        account_id: "123456789012"
        placeholder_access_key_id: {PLACEHOLDER}
        custom_endpoints: [{{host: "{moto}"}}]
  - name: aws
    hosts: ["*.amazonaws.com"]
    connect_to: "http://{moto}"
    allow_plaintext_upstream: true
    provider: sts
    inject: {{sigv4: {{account_id: "123456789012", placeholder_access_key_id: {PLACEHOLDER}}}}}
providers:
  sts: {{type: sts, role_arn: "{role}", region: us-east-1, endpoint_url: "http://{moto}"}}
policy: {{file: {dir}/policy.rego}}
audit: {{path: {dir}/audit.jsonl}}
"#,
        dir = dir.display(),
        moto = moto.addr(),
        role = moto.role_arn,
    )
}

#[test]
fn one_endpoint_url_for_every_service_works_with_no_per_service_mapping() {
    let s = Setup::start();
    let script = r#"
import time, boto3
s3 = boto3.client("s3")
s3.create_bucket(Bucket="acme-notes")
s3.put_object(Bucket="acme-notes", Key="a/b.txt", Body=b"from boto3")
print(s3.get_object(Bucket="acme-notes", Key="a/b.txt")["Body"].read().decode())
ddb = boto3.client("dynamodb")
ddb.create_table(TableName="acme-tasks", AttributeDefinitions=[{"AttributeName": "id", "AttributeType": "S"}],
                 KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")
ddb.put_item(TableName="acme-tasks", Item={"id": {"S": "t-1"}})
print(ddb.get_item(TableName="acme-tasks", Key={"id": {"S": "t-1"}})["Item"]["id"]["S"])
sqs = boto3.client("sqs")
url = sqs.create_queue(QueueName="acme-jobs")["QueueUrl"]
sqs.send_message(QueueUrl=url, MessageBody="job-7")
print(sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"])
sns = boto3.client("sns")
topic = sns.create_topic(Name="acme-alerts")["TopicArn"]
print(bool(sns.publish(TopicArn=topic, Message="hello")["MessageId"]))
logs = boto3.client("logs")
logs.create_log_group(logGroupName="acme-agent")
logs.create_log_stream(logGroupName="acme-agent", logStreamName="run-1")
logs.put_log_events(logGroupName="acme-agent", logStreamName="run-1", logEvents=[{"timestamp": int(time.time() * 1000), "message": "started"}])
print(logs.get_log_events(logGroupName="acme-agent", logStreamName="run-1")["events"][0]["message"])
"#;
    let env = s.endpoint_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = s.moto.boto3(script, &env);
    assert!(out.status.success(), "{}\nbroker log:\n{}", String::from_utf8_lossy(&out.stderr), s.broker.log());
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().collect::<Vec<_>>(), ["from boto3", "t-1", "job-7", "True", "started"]);

    // The CLI, same single endpoint: S3 (path-style to an IP host), SNS (Query), Logs (JSON).
    let work = s.dir.path().join("cli.txt");
    std::fs::write(&work, "from the cli\n").unwrap();
    s.aws_ok(&["s3", "cp", &work.display().to_string(), "s3://acme-notes/cli.txt"]);
    assert_eq!(s.aws_ok(&["s3", "cp", "s3://acme-notes/cli.txt", "-"]), "from the cli\n");
    s.aws_ok(&["sns", "publish", "--topic-arn", "arn:aws:sns:us-east-1:123456789012:acme-alerts", "--message", "hi"]);
    s.aws_ok(&["dynamodb", "get-item", "--table-name", "acme-tasks", "--key", r#"{"id": {"S": "t-1"}}"#]);
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    let event = format!("timestamp={now_ms},message=again");
    s.aws_ok(&["logs", "put-log-events", "--log-group-name", "acme-agent", "--log-stream-name", "run-1", "--log-events", &event]);

    // Each call was classified for the service it was signed for, in the signed region.
    let issued: Vec<String> = s.audit().iter().filter(|r| r["event"] == "issue").filter_map(|r| r["scope"]["service"].as_str().map(str::to_string)).collect();
    for service in ["s3", "dynamodb", "sqs", "sns", "logs"] {
        assert!(issued.iter().any(|s| s == service), "no {service} session issued: {issued:?}");
    }

    // A policy deny still names the exact resource on the shared host.
    let out = s.aws(&["dynamodb", "get-item", "--table-name", "globex-tasks", "--key", r#"{"id": {"S": "x"}}"#]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("(AccessDeniedException) when calling the GetItem operation: denied by policy: no rule allows this request"), "{stderr}");
}

#[test]
fn a_signature_for_another_service_or_region_than_the_aws_host_serves_is_refused_and_audited() {
    let s = Setup::start();
    // Signed for DynamoDB (and for IAM) but sent to S3's host; signed for eu-west-1 but sent to
    // DynamoDB in us-east-1. botocore signs with the client's service and region whatever the URL.
    let script = r#"
import json, boto3, botocore.config, botocore.exceptions
config = botocore.config.Config(retries={"max_attempts": 1})
calls = [
    ("dynamodb-to-s3", lambda: boto3.client("dynamodb", config=config, endpoint_url="https://s3.us-east-1.amazonaws.com")
        .get_item(TableName="acme-tasks", Key={"id": {"S": "x"}})),
    ("iam-to-s3", lambda: boto3.client("iam", config=config, endpoint_url="https://s3.us-east-1.amazonaws.com").list_users()),
    ("region", lambda: boto3.client("dynamodb", config=config, region_name="eu-west-1", endpoint_url="https://dynamodb.us-east-1.amazonaws.com")
        .get_item(TableName="acme-tasks", Key={"id": {"S": "x"}})),
]
for name, call in calls:
    try:
        call()
        print(json.dumps({"name": name, "accepted": True}))
    except botocore.exceptions.ClientError as e:
        r = e.response
        print(json.dumps({"name": name, "status": r["ResponseMetadata"]["HTTPStatusCode"], "code": r["Error"]["Code"],
                          "message": r["Error"]["Message"], "request_id": r["ResponseMetadata"].get("RequestId")}))
"#;
    let moto_requests_before = s.moto.log().lines().count();
    let env = s.proxy_env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = s.moto.boto3(script, &env);
    assert!(out.status.success(), "{}\nbroker log:\n{}", String::from_utf8_lossy(&out.stderr), s.broker.log());
    let results: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let expected = [
        ("dynamodb-to-s3", "AccessDeniedException", "signed for service \"dynamodb\" but sent to s3.us-east-1.amazonaws.com, a s3 endpoint"),
        ("iam-to-s3", "AccessDenied", "signed for service \"iam\" but sent to s3.us-east-1.amazonaws.com, a s3 endpoint"),
        ("region", "AccessDeniedException", "signed for region \"eu-west-1\" but sent to dynamodb.us-east-1.amazonaws.com, which serves us-east-1"),
    ];
    assert_eq!(results.len(), expected.len(), "{results:?}");
    let audit = s.audit();
    for ((name, code, reason), r) in expected.iter().zip(&results) {
        assert_eq!(r["name"], *name, "{r}");
        assert_eq!((r["status"].as_u64(), r["code"].as_str()), (Some(403), Some(*code)), "{r}");
        let message = r["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason) && message.contains("(credential-broker signed_scope_mismatch, request id "), "{name}: {message}");
        let id = r["request_id"].as_str().unwrap_or_default();
        let record = audit.iter().find(|a| a["request_id"] == id).unwrap_or_else(|| panic!("{name}: no audit record for {id}"));
        assert_eq!(record["decision"], "deny", "{record}");
        assert_eq!(record["details"]["code"], "signed_scope_mismatch", "{record}");
        assert!(record["reason"].as_str().unwrap_or_default().contains(reason), "{record}");
    }
    // Nothing was minted and nothing reached moto.
    assert!(audit.iter().all(|r| r["event"] != "issue"), "{audit:?}");
    assert_eq!(s.moto.log().lines().count(), moto_requests_before, "a refused request reached the upstream:\n{}", s.moto.log());
}
