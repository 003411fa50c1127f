#!/usr/bin/env bash
# Quickstart: a local HTTPS API and OAuth2 token endpoint, moto as a local AWS, PostgreSQL with
# OpenBao's database secrets engine, the broker in front of them, and curl and the AWS CLI going
# through the broker holding only placeholders, and psql with no password at all. Needs the Rust
# toolchain; .ci/setup installs the rest (curl, PostgreSQL, a Python venv with moto, awscli and
# OpenBao's bao).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=examples/quickstart

echo "==> installing curl, PostgreSQL and a Python venv with moto, awscli and OpenBao if missing (.ci/setup)"
.ci/setup
echo "==> building (first run takes a few minutes)"
cargo build --quiet --bin credential-broker --example demo-servers

export DEMO_DIR
DEMO_DIR="$(mktemp -d -t credential-broker-quickstart.XXXXXX)"
pids=()
# SIGTERM to each; demo-servers then stops PostgreSQL and OpenBao. Waited for, so nothing outlives the script.
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_for() { for _ in $(seq 1 300); do [ -s "$1" ] && return 0; sleep 0.1; done; echo "timed out waiting for $1" >&2; exit 1; }

echo "==> starting the demo API and token endpoint, PostgreSQL and OpenBao (dev server, database secrets engine)"
target/debug/examples/demo-servers "$DEMO_DIR" >"$DEMO_DIR/api.log" 2>&1 &
servers=$!
pids+=("$servers")
for _ in $(seq 1 600); do
  [ -s "$DEMO_DIR/servers.env" ] && break
  kill -0 "$servers" 2>/dev/null || { cat "$DEMO_DIR/api.log" >&2; echo "demo-servers exited" >&2; exit 1; }
  sleep 0.1
done
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

pg_port=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["databases"]["shop"].rsplit(":", 1)[1])' "$DEMO_DIR/addresses.json")
echo
echo "==> the agent: psql through the broker's Postgres listener (127.0.0.1:$pg_port), with no password at all"
# No PGPASSWORD, no password file (PGPASSFILE names none), no service file: the broker has OpenBao
# make a user for the session.
agent_psql() {
  env -u PGPASSWORD -u PGUSER -u PGSERVICE PGPASSFILE="$DEMO_DIR/no-pgpass" PGSERVICEFILE="$DEMO_DIR/no-pg-service" PGSSLMODE=disable \
    psql -X -w -v VERBOSITY=verbose -h 127.0.0.1 -p "$pg_port" -d shop -c "$1" 2>&1 | grep -v '^LOCATION:'
}
refused() {
  echo "\$ psql -h 127.0.0.1 -p $pg_port -d shop -c '$1'    # the policy says no"
  out=$(agent_psql "$1") && { echo "$out"; echo "expected a refusal" >&2; exit 1; }
  echo "$out" | sed 's/^/  /'
  grep -q 'ERROR:  42501: permission denied by credential-broker: ' <<<"$out" || { echo "expected the broker's 42501" >&2; exit 1; }
}
sql='SELECT current_user, count(*) FROM orders'
echo "\$ psql -h 127.0.0.1 -p $pg_port -d shop -c '$sql'"
out=$(agent_psql "$sql") || { echo "$out"; exit 1; }
echo "$out"
session_user=$(grep -o ' v-[^ ]*' <<<"$out" | tr -d ' ') || { echo "expected a user made by OpenBao (v-…)" >&2; exit 1; }
refused 'DELETE FROM orders'
refused 'SELECT * FROM customers'
echo
echo "==> the sessions are over: the broker revoked their leases and OpenBao dropped the users (the DBA's view)"
pg_superuser() {
  env -u PGUSER -u PGSERVICE PGPASSFILE="$DEMO_DIR/no-pgpass" PGPASSWORD="$(cat "$DEMO_PG_ADMIN_PASSWORD_FILE")" PGSSLMODE=disable \
    psql -X "$@" -h 127.0.0.1 -p "${DEMO_PG_ADDR##*:}" -U "$DEMO_PG_SUPERUSER" -d shop
}
vault_users="SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-%'"
for _ in $(seq 1 100); do [ -z "$(pg_superuser -A -t -c "$vault_users")" ] && break; sleep 0.1; done
echo "\$ PGPASSWORD=<superuser's> psql -h 127.0.0.1 -p ${DEMO_PG_ADDR##*:} -U $DEMO_PG_SUPERUSER -d shop -c \"$vault_users\"    # the server itself, not the broker"
pg_superuser -c "$vault_users"
[ -z "$(pg_superuser -A -t -c "$vault_users")" ] || { echo "OpenBao's users outlived their sessions" >&2; exit 1; }

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
echo "==> the issuance for the psql session that ran as $session_user (Vault's lease id, the user, its expiry; no password):"
python3 -c '
import json, sys
found = [json.loads(l) for l in open(sys.argv[1]) if json.loads(l)["event"] == "issue" and json.loads(l).get("details", {}).get("username") == sys.argv[2]]
assert len(found) == 1, found
r = found[0]
assert "password" not in json.dumps(r), r
print(json.dumps({k: r[k] for k in ("event", "request_id", "agent_id", "route", "scope", "credential_scope", "provider", "lease_id", "expiry", "details")}, indent=2))
' "$DEMO_DIR/audit.jsonl" "$session_user"
echo
target/debug/credential-broker audit verify "$DEMO_DIR/audit.jsonl"
echo
echo "==> why was the DELETE denied?"
echo '$ credential-broker explain --config examples/quickstart/broker.yaml --method DELETE --url https://api.demo.test/repos/demo/widgets'
target/debug/credential-broker explain --config "$here/broker.yaml" --method DELETE --url https://api.demo.test/repos/demo/widgets
echo
echo "broker log: $DEMO_DIR/broker.log"
