//! Containment on AWS routes, attacked the way an agent that wants out would: with the real AWS
//! CLI, boto3 and raw `requests` through the broker's proxy, against a real moto (signature and IAM
//! checks on). The policy here allows everything, so every refusal is the broker's own.
//!
//! A relay sits between the broker and moto on the AWS route, so each test sees exactly what
//! reached "AWS"; another sits in front of moto's STS, so the test knows every secret STS minted
//! and can look for it in the broker's log, the audit log and what the clients saw. Each test also
//! makes an allowed call first: it proves the relay sees forwarded traffic, so "nothing reached
//! moto" is an observation, not an accident.

mod support;

use std::process::Output;

use serde_json::Value;
use support::broker::Broker;
use support::moto::{Moto, WireTap, ROLE_ARN};

const PLACEHOLDER: &str = "credential-broker-placeholder";
/// A real-looking IAM user key, as a leaked one would look.
const REAL_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const REAL_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
/// A session token the agent should not have.
const AGENT_TOKEN: &str = "IQoJb3JpZ2luX2VjEAgentHeldSessionToken0123456789abcdef";
const BUCKET: &str = "acme-data";

const POLICY: &str = r#"
package credential_broker
import rego.v1

# Everything is allowed: what is refused below is refused by the broker itself.
default decision := {"allow": true, "reason": "this test's policy allows everything"}
"#;

struct Rig {
    dir: tempfile::TempDir,
    moto: Moto,
    broker: Broker,
    /// Between the broker and moto on the AWS route: every request that reached "AWS".
    upstream: WireTap,
    /// Between the broker and moto's STS: every secret STS minted.
    sts: WireTap,
    _runtime: tokio::runtime::Runtime,
}

impl Rig {
    fn start() -> Rig {
        let moto = Moto::start();
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let upstream = runtime.block_on(WireTap::start(moto.addr()));
        let sts = runtime.block_on(WireTap::start(moto.addr()));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("policy.rego"), POLICY).unwrap();
        let yaml = format!(
            r#"
identity: {{agent_id: agent-contained, tenant: acme}}
listeners: {{proxy: "127.0.0.1:0", admin: "127.0.0.1:0"}}
tls: {{ca_cert_path: {dir}/broker-ca.crt}}
routes:
  - name: aws
    hosts: ["*.amazonaws.com"]
    connect_to: "http://{upstream}"
    allow_plaintext_upstream: true
    provider: sts
    inject: {{sigv4: {{account_id: "123456789012", placeholder_access_key_id: {PLACEHOLDER}, max_buffered_body_bytes: 1048576}}}}
providers:
  sts: {{type: sts, role_arn: "{ROLE_ARN}", region: us-east-1, endpoint_url: "http://{sts}"}}
policy: {{file: {dir}/policy.rego}}
audit: {{path: {dir}/audit.jsonl}}
"#,
            dir = dir.path().display(),
            upstream = upstream.addr,
            sts = sts.addr,
        );
        let broker = Broker::start(
            dir.path(),
            &yaml,
            &[
                ("AWS_ACCESS_KEY_ID", moto.base_access_key_id.as_str()),
                ("AWS_SECRET_ACCESS_KEY", moto.base_secret_access_key.as_str()),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
        );
        Rig { dir, moto, broker, upstream, sts, _runtime: runtime }
    }

    /// The agent's environment: placeholder keys, the broker as HTTPS proxy, its CA trusted.
    fn agent_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", PLACEHOLDER.into()),
            ("AWS_SECRET_ACCESS_KEY", PLACEHOLDER.into()),
            ("HTTPS_PROXY", self.broker.proxy_url()),
            ("AWS_CA_BUNDLE", self.broker.ca_cert().display().to_string()),
            ("BUCKET", BUCKET.into()),
            ("PLACEHOLDER", PLACEHOLDER.into()),
            ("REAL_KEY", REAL_KEY.into()),
            ("REAL_SECRET", REAL_SECRET.into()),
            ("AGENT_TOKEN", AGENT_TOKEN.into()),
        ]
    }

    /// `aws <args>` as the agent, with `extra` added to (or overriding) its environment.
    fn aws(&self, args: &[&str], extra: &[(&'static str, &str)]) -> Output {
        let mut env = self.agent_env();
        env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.moto.aws(args, &env)
    }

    fn aws_ok(&self, args: &[&str]) -> String {
        let out = self.aws(args, &[]);
        assert!(out.status.success(), "aws {args:?} failed:\n{}\nbroker log:\n{}", text(&out.stderr), self.broker.log());
        text(&out.stdout)
    }

    /// A Python snippet as the agent (boto3, botocore, requests); its stdout, one JSON value a line.
    fn python(&self, script: &str) -> Vec<Value> {
        let env = self.agent_env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let out = self.moto.boto3(&format!("{PY_HELPERS}\n{script}"), &env);
        assert!(out.status.success(), "python failed:\n{}\nbroker log:\n{}", text(&out.stderr), self.broker.log());
        text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn audited(&self, request_id: &str) -> Value {
        let records: Vec<Value> = self.audit().into_iter().filter(|r| r["request_id"] == request_id).collect();
        assert_eq!(records.len(), 1, "exactly one audit record for {request_id}: {records:?}");
        records.into_iter().next().unwrap()
    }

    /// The request heads that reached moto through the AWS route, in order.
    fn forwarded(&self) -> Vec<String> {
        self.upstream.requests().into_iter().map(|(head, _)| head).collect()
    }

    fn assume_role_calls(&self) -> usize {
        self.sts.form_posts("AssumeRole").len()
    }

    /// No minted secret, no base secret, and none of the agent's own credentials anywhere the
    /// broker writes or a client can read.
    fn assert_no_secret_in(&self, outputs: &[String]) {
        let minted: Vec<String> =
            ["AccessKeyId", "SecretAccessKey", "SessionToken"].iter().flat_map(|tag| self.sts.answered_values(tag)).filter(|s| !s.is_empty()).collect();
        assert!(!minted.is_empty(), "moto issued no session credentials");
        let mut written = self.broker.log();
        written.push_str(&std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default());
        for o in outputs {
            written.push_str(o);
        }
        for s in &minted {
            assert!(!written.contains(s.as_str()), "a minted secret leaked into the broker's output or a client's view");
        }
        assert!(!written.contains(&self.moto.base_secret_access_key), "the broker's base secret leaked");
        let broker_written = format!("{}{}", self.broker.log(), std::fs::read_to_string(self.dir.path().join("audit.jsonl")).unwrap_or_default());
        for agent_secret in [REAL_KEY, REAL_SECRET, AGENT_TOKEN] {
            assert!(!broker_written.contains(agent_secret), "the agent's credential {agent_secret:.4}… is written whole by the broker");
        }
    }
}

/// What each agent script can use: `send` prints the broker's answer as one JSON line.
const PY_HELPERS: &str = r#"
import json, os, requests, boto3, botocore.config, botocore.exceptions
import xml.etree.ElementTree as ET
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

PROXY, CA, BUCKET = os.environ["HTTPS_PROXY"], os.environ["AWS_CA_BUNDLE"], os.environ["BUCKET"]
PH, REAL, REAL_SECRET, TOKEN = os.environ["PLACEHOLDER"], os.environ["REAL_KEY"], os.environ["REAL_SECRET"], os.environ["AGENT_TOKEN"]
PLACEHOLDER_KEYS = Credentials(PH, PH)
REAL_KEYS = Credentials(REAL, REAL_SECRET)
S3 = f"https://{BUCKET}.s3.us-east-1.amazonaws.com"

def signed(method, url, body, creds, service="s3", headers=None):
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    (S3SigV4Auth if service == "s3" else SigV4Auth)(creds, service, "us-east-1").add_auth(req)
    return dict(req.headers.items())

def aws_error(r):
    """A refusal read the way the SDKs read it: S3 and Query XML, or the JSON protocols'."""
    if "xml" in r.headers.get("content-type", ""):
        root = ET.fromstring(r.content)
        error = root if root.tag == "Error" else root.find("Error")
        return {"code": error.findtext("Code"), "message": error.findtext("Message"), "request_id": root.findtext("RequestId")}
    body = r.json()
    return {"code": r.headers.get("x-amzn-ErrorType"), "type": body.get("__type"), "message": body.get("message"),
            "request_id": r.headers.get("x-amzn-RequestId")}

def send(name, method, url, headers=None, body=b""):
    r = requests.request(method, url, headers=headers or {}, data=body, proxies={"https": PROXY}, verify=CA, timeout=30)
    try:
        answer = r.json()
    except ValueError:
        answer = r.text
    error = aws_error(r) if r.status_code >= 400 else None
    print(json.dumps({"name": name, "status": r.status_code, "body": answer, "error": error,
                      "broker_request_id": r.headers.get("x-credential-broker-request-id")}))
"#;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn by_name<'a>(results: &'a [Value], name: &str) -> &'a Value {
    results.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("no result {name}: {results:?}"))
}

/// The broker's refusal as the client saw it (in the service's own error format, read as the SDKs
/// read it), and its audit record: 403, an access-denied code, a message saying why with the
/// broker's code and the request id, and one deny record with that id and the reason; the record.
fn assert_refused(rig: &Rig, result: &Value, code: &str, says: &str) -> Value {
    let name = &result["name"];
    assert_eq!(result["status"], 403, "{name}: {result}");
    let error = &result["error"];
    let aws_code = error["code"].as_str().unwrap_or_default();
    assert!(["AccessDenied", "AccessDeniedException"].contains(&aws_code), "{name}: {error}");
    if !error["type"].is_null() {
        assert_eq!(error["type"], aws_code, "{name}: the JSON body and x-amzn-ErrorType agree: {error}");
    }
    let message = error["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{name}: the message should say {says:?}: {message}");
    let request_id = error["request_id"].as_str().filter(|s| !s.is_empty()).unwrap_or_else(|| panic!("{name}: no request id: {error}"));
    assert!(message.ends_with(&format!("(credential-broker {code}, request id {request_id})")), "{name}: {message}");
    if !result["broker_request_id"].is_null() {
        assert_eq!(result["broker_request_id"], request_id, "{name}: {result}");
    }
    let record = rig.audited(request_id);
    assert_eq!(record["event"], "deny", "{name}: {record}");
    assert_eq!(record["decision"], "deny", "{name}: {record}");
    let reason = record["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(says) && message.contains(reason), "{name}: the audit says what the client was told: {reason:?} / {message:?}");
    assert_eq!(record["agent_id"], "agent-contained");
    record
}

#[test]
fn the_aws_cli_with_a_session_token_is_refused_and_nothing_reaches_aws() {
    let rig = Rig::start();
    // The allowed call: it reaches moto, so the relay is known to see forwarded requests.
    rig.aws_ok(&["dynamodb", "list-tables"]);
    let forwarded = rig.forwarded().len();
    assert_eq!(forwarded, 1, "{:?}", rig.forwarded());
    let audit_len = rig.audit().len();

    let create = [
        "dynamodb",
        "create-table",
        "--table-name",
        "escape-table",
        "--attribute-definitions",
        "AttributeName=id,AttributeType=S",
        "--key-schema",
        "AttributeName=id,KeyType=HASH",
        "--billing-mode",
        "PAY_PER_REQUEST",
    ];
    let out = rig.aws(&create, &[("AWS_SESSION_TOKEN", AGENT_TOKEN)]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    // botocore shows the refusal in DynamoDB's own JSON error format: the code and the reason.
    assert!(stderr.contains("(AccessDeniedException)") && stderr.contains("AWS session token") && stderr.contains("unset AWS_SESSION_TOKEN"), "{stderr}");
    assert!(!stderr.contains(AGENT_TOKEN), "the refusal does not echo the token");

    // Nothing reached moto and nothing was minted for it; the table does not exist.
    assert_eq!(rig.forwarded().len(), forwarded, "{:?}", rig.forwarded());
    assert_eq!(rig.assume_role_calls(), 1, "only the allowed call minted a session");
    let tables = rig.aws_ok(&["dynamodb", "list-tables"]);
    assert!(!tables.contains("escape-table"), "{tables}");

    let records = rig.audit();
    let denies: Vec<&Value> = records[audit_len..].iter().filter(|r| r["decision"] == "deny").collect();
    assert_eq!(denies.len(), 1, "one deny record for one refused call (the CLI does not retry a 403): {denies:?}");
    let deny = denies[0];
    assert_eq!(deny["details"]["code"], "real_credential_refused");
    assert!(deny["reason"].as_str().unwrap().contains("X-Amz-Security-Token header"), "{deny}");
    assert!(deny["scope"].is_null(), "refused before classification: {deny}");
    rig.assert_no_secret_in(&[stderr, tables]);
}

#[test]
fn signatures_other_than_sigv4_by_the_placeholder_are_refused_and_audited() {
    let rig = Rig::start();
    rig.aws_ok(&["s3", "mb", &format!("s3://{BUCKET}")]);
    let results = rig.python(
        r#"
def put(key):
    return f"{S3}/{key}", f"body of {key}".encode()

url, body = put("control.txt")
send("control", "PUT", url, signed("PUT", url, body, PLACEHOLDER_KEYS), body)

# SigV2 with a real key.
url, body = put("sigv2.txt")
h = signed("PUT", url, body, PLACEHOLDER_KEYS)
h["Authorization"] = f"AWS {REAL}:frJIUN8DYpKDtOLCwo//yllqDzg="
send("sigv2", "PUT", url, h, body)

# SigV4 by a real key, with `credential=` in lower case, then with a tab before Credential=.
url, body = put("lowercase.txt")
h = signed("PUT", url, body, REAL_KEYS)
h["Authorization"] = h["Authorization"].replace("Credential=", "credential=")
send("lowercase", "PUT", url, h, body)
url, body = put("tab.txt")
h = signed("PUT", url, body, REAL_KEYS)
h["Authorization"] = h["Authorization"].replace(" Credential=", "\tCredential=")
send("tab", "PUT", url, h, body)

# No signature at all.
url, body = put("unsigned.txt")
send("unsigned", "PUT", url, {"x-amz-content-sha256": "UNSIGNED-PAYLOAD"}, body)

# SigV4a, the multi-region asymmetric scheme.
url, body = put("sigv4a.txt")
h = signed("PUT", url, body, PLACEHOLDER_KEYS)
date = h["X-Amz-Date"][:8]
h["Authorization"] = (f"AWS4-ECDSA-P256-SHA256 Credential={PH}/{date}/s3/aws4_request, "
                      "SignedHeaders=host;x-amz-date;x-amz-region-set, Signature=3045022100" + "ab" * 32)
h["X-Amz-Region-Set"] = "*"
send("sigv4a", "PUT", url, h, body)

# The placeholder's signature with bytes that are not ASCII appended.
url, body = put("non-ascii.txt")
h = signed("PUT", url, body, PLACEHOLDER_KEYS)
h["Authorization"] = h["Authorization"].encode() + b"\xff\xfe"
send("non_ascii", "PUT", url, h, body)

# Presigned URLs (the SDK signs them offline): the placeholder's works, one carrying the agent's
# session token does not, nor one sent with a signed header as well.
config = botocore.config.Config(signature_version="s3v4", s3={"addressing_style": "virtual"})
plain = boto3.client("s3", aws_access_key_id=PH, aws_secret_access_key=PH, config=config)
with_token = boto3.client("s3", aws_access_key_id=PH, aws_secret_access_key=PH, aws_session_token=TOKEN, config=config)
send("presigned", "GET", plain.generate_presigned_url("get_object", Params={"Bucket": BUCKET, "Key": "control.txt"}, ExpiresIn=300))
url = with_token.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "presigned-token.txt"}, ExpiresIn=300)
assert "X-Amz-Security-Token=" in url, url
send("presigned_token", "PUT", url, {}, b"body of presigned-token.txt")
url = plain.generate_presigned_url("put_object", Params={"Bucket": BUCKET, "Key": "both.txt"}, ExpiresIn=300)
send("header_and_presigned", "PUT", url, signed("PUT", url, b"x", PLACEHOLDER_KEYS), b"x")
"#,
    );
    let outputs: Vec<String> = results.iter().map(Value::to_string).collect();

    // The controls: the placeholder's header signature and presigned URL both go through.
    assert_eq!(by_name(&results, "control")["status"], 200, "{results:?}");
    assert_eq!(by_name(&results, "presigned")["status"], 200, "{results:?}");
    assert_eq!(by_name(&results, "presigned")["body"], "body of control.txt");

    let cases = [
        ("sigv2", "real_credential_refused", "access key id \"AKIA…\""),
        ("lowercase", "real_credential_refused", "access key id \"AKIA…\""),
        ("tab", "real_credential_refused", "access key id \"AKIA…\""),
        ("unsigned", "agent_signature_refused", "the request is not signed"),
        ("sigv4a", "agent_signature_refused", "SigV4a"),
        ("non_ascii", "agent_signature_refused", "not visible ASCII"),
        ("presigned_token", "real_credential_refused", "X-Amz-Security-Token query parameter"),
        ("header_and_presigned", "agent_signature_refused", "both an Authorization header and a signature in the query"),
    ];
    for (name, code, says) in cases {
        let record = assert_refused(&rig, by_name(&results, name), code, says);
        assert_eq!(record["details"]["code"], code, "{name}: {record}");
        assert!(record["scope"].is_null(), "{name}: refused before classification: {record}");
    }

    // Exactly the allowed requests reached moto: CreateBucket, the control PUT and the presigned
    // GET; the last one with the broker's header signature and none of the agent's query.
    let forwarded = rig.forwarded();
    assert_eq!(forwarded.len(), 3, "{forwarded:#?}");
    assert!(forwarded[1].starts_with("PUT /control.txt HTTP/1.1"), "{}", forwarded[1]);
    assert!(forwarded[2].starts_with("GET /control.txt HTTP/1.1"), "{}", forwarded[2]);
    assert!(forwarded.iter().all(|h| !h.lines().next().unwrap_or_default().contains("X-Amz-")), "no presigned query went upstream: {forwarded:#?}");
    let listing = rig.aws_ok(&["s3", "ls", &format!("s3://{BUCKET}")]);
    assert_eq!(listing.lines().count(), 1, "only the control object exists: {listing}");
    assert!(listing.contains("control.txt"), "{listing}");
    rig.assert_no_secret_in(&[outputs.join("\n"), listing]);
}

#[test]
fn credential_vending_is_refused_even_when_the_policy_allows_everything() {
    let rig = Rig::start();
    rig.aws_ok(&["sts", "get-caller-identity"]);
    assert_eq!(rig.forwarded().len(), 1);
    let minted = rig.assume_role_calls();
    let results = rig.python(&format!(
        r#"
# boto3 as the agent's SDK: the refusal as botocore parsed it (Query XML for STS and IAM, JSON for
# the others).
def call(name, service, fn):
    client = boto3.client(service, config=botocore.config.Config(retries={{"max_attempts": 1}}))
    try:
        fn(client)
        print(json.dumps({{"name": name, "status": 200}}))
    except botocore.exceptions.ClientError as e:
        r = e.response
        error = {{"code": r["Error"]["Code"], "message": r["Error"]["Message"], "request_id": r["ResponseMetadata"].get("RequestId")}}
        print(json.dumps({{"name": name, "status": r["ResponseMetadata"]["HTTPStatusCode"], "error": error}}))

call("sts:AssumeRole", "sts", lambda c: c.assume_role(RoleArn="{ROLE_ARN}", RoleSessionName="escape"))
call("sts:GetSessionToken", "sts", lambda c: c.get_session_token())
call("sts:GetFederationToken", "sts", lambda c: c.get_federation_token(Name="escape"))
call("secretsmanager:GetSecretValue", "secretsmanager", lambda c: c.get_secret_value(SecretId="prod/db"))
call("ssm:GetParameter", "ssm", lambda c: c.get_parameter(Name="/prod/db/password", WithDecryption=True))
call("ssm:GetParameters", "ssm", lambda c: c.get_parameters(Names=["/prod/db/password"], WithDecryption=True))
call("iam:CreateAccessKey", "iam", lambda c: c.create_access_key(UserName="credential-broker"))
call("kms:Decrypt", "kms", lambda c: c.decrypt(KeyId="alias/prod", CiphertextBlob=b"\x01" * 64))
"#
    ));
    for result in &results {
        let action = result["name"].as_str().unwrap();
        let says = format!("{action} vends credentials; agents may not obtain AWS credentials through the broker");
        let record = assert_refused(&rig, result, "policy_denied", &says);
        assert_eq!(record["scope"]["permissions"][0]["action"], action, "{record}");
    }
    assert_eq!(results.len(), 8, "{results:?}");
    // Not one of them reached moto, and the broker minted nothing for them.
    assert_eq!(rig.forwarded().len(), 1, "{:#?}", rig.forwarded());
    assert_eq!(rig.assume_role_calls(), minted);
    let outputs: Vec<String> = results.iter().map(Value::to_string).collect();
    rig.assert_no_secret_in(&outputs);
}

#[test]
fn dynamodb_bodies_with_duplicate_keys_are_refused() {
    let rig = Rig::start();
    rig.aws_ok(&[
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
    let forwarded = rig.forwarded().len();
    let results = rig.python(
        r#"
URL = "https://dynamodb.us-east-1.amazonaws.com/"
def ddb(name, target, body):
    headers = {"X-Amz-Target": f"DynamoDB_20120810.{target}", "Content-Type": "application/x-amz-json-1.0"}
    send(name, "POST", URL, signed("POST", URL, body, PLACEHOLDER_KEYS, "dynamodb", headers), body)

ddb("control", "PutItem", b'{"TableName": "acme-tasks", "Item": {"id": {"S": "control"}}}')
# The classifier might read one table name and DynamoDB the other.
ddb("two_table_names", "PutItem", b'{"TableName": "acme-tasks", "TableName": "other-tenant", "Item": {"id": {"S": "dup-1"}}}')
ddb("escaped_duplicate", "PutItem", b'{"TableName": "acme-tasks", "Table\\u004eame": "other-tenant", "Item": {"id": {"S": "dup-4"}}}')
ddb("nested_duplicate", "PutItem", b'{"TableName": "acme-tasks", "Item": {"id": {"S": "dup-2"}, "id": {"S": "dup-3"}}}')
ddb("duplicate_create", "CreateTable", b'{"TableName": "escape-a", "TableName": "escape-b", "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}], "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}], "BillingMode": "PAY_PER_REQUEST"}')
"#,
    );
    assert_eq!(by_name(&results, "control")["status"], 200, "{results:?}");
    for name in ["two_table_names", "escaped_duplicate", "nested_duplicate", "duplicate_create"] {
        assert_refused(&rig, by_name(&results, name), "unclassified_request", "duplicate");
    }
    // Only the control PutItem reached moto; no item or table from the refused bodies exists.
    assert_eq!(rig.forwarded().len(), forwarded + 1, "{:#?}", rig.forwarded());
    let scan = rig.aws_ok(&["dynamodb", "scan", "--table-name", "acme-tasks"]);
    assert!(scan.contains("control") && !scan.contains("dup-"), "{scan}");
    let tables = rig.aws_ok(&["dynamodb", "list-tables"]);
    assert!(!tables.contains("escape-"), "{tables}");
    let outputs: Vec<String> = results.iter().map(Value::to_string).collect();
    rig.assert_no_secret_in(&[outputs.join("\n"), scan, tables]);
}
