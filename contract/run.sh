#!/usr/bin/env bash
# Contract conformance (issue 7): schemathesis against a live qss, for every operation of
# /openapi.json. No 5xx, and every response conforms to the document: its status, content
# type, headers and body schema. Also: no operation that needs a token answers without one
# (ignored_auth), wrong methods get 405 with an Allow header, and a deleted resource is gone.
# ST_CHECKS overrides the checks (positive_data_acceptance and negative_data_rejection are
# left out: the document's request schemas are a guide for generation, not the parsers'
# whole truth, e.g. timestamps bound to the server's clock).
#
#   pip install schemathesis   # once
#   contract/run.sh            # builds qss (debug) if needed; about a minute
# (one worker: with several, CPython 3.11 can fail in hypothesis's own ast.parse)
#
# It starts `qss serve` on a temporary SQLite database and `qss listen` as the webhook
# receiver, on 127.0.0.1; makes two accounts; seeds the first with a subscription and a
# delivered event (whose ids the run uses), then runs schemathesis twice:
#   1. the account API (/v2) with a token of the first account, on its own account id;
#   2. the rest (/admin, /oauth/token, the probes) with the admin token, on the second
#      account's id (the run may delete that account, which is allowed).
# Knobs: ST_MAX_EXAMPLES (default 40). Exit status: schemathesis's.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v st >/dev/null || { echo "contract/run.sh: schemathesis is not installed (pip install schemathesis)" >&2; exit 2; }

cargo build -q -p qss
qss="${CARGO_TARGET_DIR:-target}/debug/qss"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

admin="contract-admin-token-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
secret="contract-receiver-secret-0123456789"
api_port=$(port)
listen_port=$(port)
base="http://127.0.0.1:$api_port"

"$qss" listen --port "$listen_port" --secret "$secret" > "$work/listen.log" 2>&1 &
pids+=($!)
QSS_ADMIN_TOKEN="$admin" QSS_LOG=warn QSS_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true \
QSS_RATE_LIMIT_LIGHT=100000 QSS_RATE_LIMIT_HEAVY=100000 QSS_RATE_LIMIT_OAUTH=100000 \
  "$qss" serve --listen "127.0.0.1:$api_port" --database "sqlite://$work/qss.db" > "$work/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done

json() { python3 -c "import json,sys; v=json.load(sys.stdin); print(eval(sys.argv[1]))" "$1"; }
call() { # method path token [body]
  curl -sS -X "$1" "$base$2" -H "Authorization: Bearer $3" -H 'Content-Type: application/json' ${4:+-d "$4"}
}
account() {
  call POST /admin/accounts "$admin" '{"name": "Contract", "plan": "business", "qss_addon": true}'
}
a=$(account)
account_id=$(echo "$a" | json 'v["account_id"]')
second_id=$(account | json 'v["account_id"]')
# A token with every scope, ingest included.
c=$(call POST "/admin/accounts/$account_id/credentials" "$admin" '{"scopes": ["qss:read", "qss:write", "qss:ingest"]}')
client_id=$(echo "$c" | json 'v["client_id"]')
client_secret=$(echo "$c" | json 'v["client_secret"]')
token=$(curl -sS -X POST -u "$client_id:$client_secret" \
  "$base/oauth/token?grant_type=account_credentials&account_id=$account_id" | json 'v["access_token"]')
v2="/v2/accounts/$account_id/qss"

# A subscription, and a delivered event: a call window closed a minute ago.
call PATCH "$v2/settings" "$token" '{"aggregation_interval_seconds": 10, "aggregation_grace_seconds": 0}' >/dev/null
webhook_id=$(call POST "$v2/webhooks" "$token" \
  "{\"url\": \"http://127.0.0.1:$listen_port/hook\", \"secret_token\": \"$secret\", \"events\": [\"qss.phone_call_qos\"]}" \
  | json 'v["id"]')
ts=$(python3 -c 'import datetime; print((datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%SZ"))')
call POST "$v2/telemetry" "$token" "{\"samples\": [{\"kind\": \"call_qos\", \"call_id\": \"contract\", \"direction\": \"inbound\", \"timestamp\": \"$ts\", \"metrics\": {\"bitrate\": 64, \"latency\": 80, \"jitter\": 8, \"packet_loss\": 0.5}}]}" >/dev/null
delivery_id=""
for _ in $(seq 100); do
  delivery_id=$(call GET "$v2/webhooks/$webhook_id/deliveries" "$token" | json '(v["deliveries"] or [{"id": ""}])[0]["id"]')
  [ -n "$delivery_id" ] && break
  sleep 0.1
done
[ -n "$delivery_id" ] || { echo "contract/run.sh: no delivery to test with" >&2; exit 1; }

checks="${ST_CHECKS:-not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,ignored_auth,unsupported_method,allow_header_conformance,use_after_free,ensure_resource_availability}"
run() { # name include-regex account-id
  echo "== schemathesis: $1"
  QSS_ACCOUNT_ID="$3" QSS_TOKEN="$token" QSS_ADMIN_TOKEN="$admin" \
  QSS_WEBHOOK_ID="$webhook_id" QSS_DELIVERY_ID="$delivery_id" \
    st --config-file contract/schemathesis.toml run "$base/openapi.json" \
      --include-path-regex "$2" --checks "$checks" \
      --max-examples "${ST_MAX_EXAMPLES:-40}" --workers 1 --seed 1 --no-color
}
status=0
run "the account API" '^/v2/' "$account_id" || status=1
run "the operator API, OAuth and the probes" '^/(admin|oauth|healthz|readyz|metrics|openapi)' "$second_id" || status=1
if grep -E "panicked|internal error" "$work/serve.log"; then
  echo "contract/run.sh: the server logged an internal error" >&2
  status=1
fi
exit $status
