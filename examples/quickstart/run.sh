#!/usr/bin/env bash
# Quickstart: a local HTTPS API and OAuth2 token endpoint, the broker in front of them, and curl
# going through the broker holding only a placeholder. Needs only the Rust toolchain and curl.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=examples/quickstart

command -v curl >/dev/null || { echo "the quickstart needs curl: apt-get install -y curl" >&2; exit 1; }
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

echo "==> starting credential-broker"
target/debug/credential-broker check-config "$here/broker.yaml"
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
echo "==> audit log: $DEMO_DIR/audit.jsonl"
cat "$DEMO_DIR/audit.jsonl"
echo
target/debug/credential-broker audit verify "$DEMO_DIR/audit.jsonl"
echo
echo "==> why was the DELETE denied?"
echo '$ credential-broker explain --config examples/quickstart/broker.yaml --method DELETE --url https://api.demo.test/repos/demo/widgets'
target/debug/credential-broker explain --config "$here/broker.yaml" --method DELETE --url https://api.demo.test/repos/demo/widgets
echo
echo "broker log: $DEMO_DIR/broker.log"
