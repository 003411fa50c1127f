#!/usr/bin/env bash
# Quickstart: a local HTTPS API and OAuth2 token endpoint, moto as a local AWS, the broker in front
# of them, and curl and the AWS CLI going through the broker holding only placeholders. Needs the
# Rust toolchain; .ci/setup installs the rest (curl, a Python venv with moto and awscli).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=examples/quickstart

echo "==> installing curl and a Python venv with moto + awscli if missing (.ci/setup)"
.ci/setup
echo "==> building (first run takes a few minutes)"
cargo build --quiet --bin credential-broker --example demo-servers

export DEMO_DIR
DEMO_DIR="$(mktemp -d -t credential-broker-quickstart.XXXXXX)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_for() { for _ in $(seq 1 300); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; exit 1; }

echo "==> starting the demo API and token endpoint"
target/debug/examples/demo-servers "$DEMO_DIR" >"$DEMO_DIR/api.log" 2>&1 &
pids+=($!)
wait_for "$DEMO_DIR/servers.env"
set -a; . "$DEMO_DIR/servers.env"; set +a

echo "==> starting moto (a local AWS, signature and IAM checks on)"
moto_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export DEMO_MOTO_ADDR="127.0.0.1:$moto_port"
INITIAL_NO_AUTH_ACTION_COUNT=5 .venv/bin/moto_server -H 127.0.0.1 -p "$moto_port" >"$DEMO_DIR/moto.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do curl -sf "http://$DEMO_MOTO_ADDR/moto-api/" >/dev/null && break; sleep 0.1; done
MOTO_ENDPOINT="http://$DEMO_MOTO_ADDR" USER_NAME=credential-broker ROLE_NAME=agent-role ACCOUNT_ID=123456789012 \
  .venv/bin/python "$here/moto_bootstrap.py" >"$DEMO_DIR/broker-aws-key.json"
base_key=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["AccessKeyId"])' <"$DEMO_DIR/broker-aws-key.json")
base_secret=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["SecretAccessKey"])' <"$DEMO_DIR/broker-aws-key.json")

echo "==> starting credential-broker (only it holds the AWS base key, in its own environment)"
target/debug/credential-broker check-config "$here/broker.yaml"
AWS_ACCESS_KEY_ID="$base_key" AWS_SECRET_ACCESS_KEY="$base_secret" AWS_EC2_METADATA_DISABLED=true \
  target/debug/credential-broker run --config "$here/broker.yaml" --addresses-file "$DEMO_DIR/addresses.json" 2>"$DEMO_DIR/broker.log" &
pids+=($!)
wait_for "$DEMO_DIR/addresses.json"
proxy="http://$(sed -n 's/.*"proxy": "\([^"]*\)".*/\1/p' "$DEMO_DIR/addresses.json")"

echo
echo "==> the agent: curl through HTTPS_PROXY=$proxy, holding only the placeholder"
echo '$ curl -H "Authorization: Bearer credential-broker-placeholder" https://api.demo.test/repos/demo/widgets'
HTTPS_PROXY="$proxy" curl -sS --cacert "$DEMO_DIR/broker-ca.crt" -H "Authorization: Bearer credential-broker-placeholder" \
  https://api.demo.test/repos/demo/widgets
echo
echo '$ curl -X DELETE https://api.demo.test/repos/demo/widgets    # the policy says no'
HTTPS_PROXY="$proxy" curl -sS --cacert "$DEMO_DIR/broker-ca.crt" -X DELETE -w '  (HTTP %{http_code})' \
  https://api.demo.test/repos/demo/widgets
echo
sleep 0.3

echo
echo "==> what the API received (the broker swapped the placeholder for a just-minted token):"
grep '^\[api.demo.test\]' "$DEMO_DIR/api.log"

echo
echo "==> the agent: the AWS CLI with placeholder keys only, through the same proxy"
agent_aws() {
  env -i PATH="$PATH" HOME="$DEMO_DIR" AWS_ACCESS_KEY_ID=credential-broker-placeholder AWS_SECRET_ACCESS_KEY=credential-broker-placeholder \
    AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null \
    HTTPS_PROXY="$proxy" AWS_CA_BUNDLE="$DEMO_DIR/broker-ca.crt" .venv/bin/aws "$@"
}
echo '$ aws s3 mb s3://demo-agent-data && echo hello | aws s3 cp - s3://demo-agent-data/hello.txt && aws s3 ls s3://demo-agent-data'
agent_aws s3 mb s3://demo-agent-data
echo "hello from the agent" | agent_aws s3 cp - s3://demo-agent-data/hello.txt
agent_aws s3 ls s3://demo-agent-data
echo '$ aws s3 rb s3://demo-agent-data    # the policy says no'
agent_aws s3 rb s3://demo-agent-data 2>&1 | sed 's/^/  /' || true
echo '$ aws s3 ls s3://demo-agent-data with a real-looking key instead of the placeholder: refused'
env -i PATH="$PATH" HOME="$DEMO_DIR" AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE AWS_SECRET_ACCESS_KEY=x AWS_DEFAULT_REGION=us-east-1 \
  AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null HTTPS_PROXY="$proxy" AWS_CA_BUNDLE="$DEMO_DIR/broker-ca.crt" \
  .venv/bin/aws s3 ls s3://demo-agent-data 2>&1 | sed 's/^/  /' || true

echo
echo "==> audit log: $DEMO_DIR/audit.jsonl"
cat "$DEMO_DIR/audit.jsonl"
echo
echo "==> the session policy minted for the PutObject (one action, one object, a time bound):"
python3 -c '
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r["event"] == "issue" and r["scope"]["permissions"][0]["action"] == "s3:PutObject":
        print(json.dumps(json.loads(r["credential_scope"]), indent=2)); print("role:", r["details"]["role_arn"])
' "$DEMO_DIR/audit.jsonl"
echo
target/debug/credential-broker audit verify "$DEMO_DIR/audit.jsonl"
echo
echo "==> why was the DELETE denied?"
echo '$ credential-broker explain --config examples/quickstart/broker.yaml --method DELETE --url https://api.demo.test/repos/demo/widgets'
target/debug/credential-broker explain --config "$here/broker.yaml" --method DELETE --url https://api.demo.test/repos/demo/widgets
echo
echo "broker log: $DEMO_DIR/broker.log"
