#!/usr/bin/env bash
# Side-by-side benchmark: rigfast vs nginx+nchan and Pushpin, with ../shared/tools/peerbench.
#
#   bench/peerbench.sh                          # every scenario, rig,nchan,pushpin, 2 reps
#   SCENARIOS=fanout_sse,addressed REPS=1 bench/peerbench.sh
#   SERVERS=rig bench/peerbench.sh              # rigfast alone
#
# rigfast runs as one worker pinned to core 1 (like the peers; the load client is on core 0),
# and is restarted for every scenario, as peerbench restarts the peers. Loopback only; every
# client run is bounded by peerbench's --max-runtime. Tables and JSON go to $OUT (default
# /tmp/peerbench-rigfast).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PB=${PEERBENCH:-$ROOT/../shared/tools/peerbench}
PY=${PY:-$ROOT/.venv/bin/python}
PBPY=${PEERBENCH_VENV:-/tmp/peerbench-venv}/bin/python
SERVERS=${SERVERS:-rig,nchan,pushpin}
SCENARIOS=${SCENARIOS:-fanout_sse,fanout_ws,latency_sse,idle_mem,connect,addressed}
REPS=${REPS:-2}
OUT=${OUT:-/tmp/peerbench-rigfast}
PORT=${RIG_PORT:-4000}
API_PORT=${RIG_API_PORT:-4010}
mkdir -p "$OUT"
bash "$PB/setup.sh" >/dev/null

pid=""
stop_rig() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        wait "$pid" || true
    fi
    pid=""
}
trap stop_rig EXIT

for scn in ${SCENARIOS//,/ }; do
    EXTRACTORS='{"bench.addressed":{"name":{"stable_field_index":1,"event":{"json_pointer":"/data/name"}}}}' \
    RIGFAST_WORKERS=1 LOG_LEVEL=warning RIGFAST_HOST=127.0.0.1 RIGFAST_API_HOST=127.0.0.1 \
    INBOUND_PORT=$PORT API_HTTP_PORT=$API_PORT MAX_CONNECTIONS_PER_MINUTE=10000000 \
        taskset -c 1 "$PY" -m rigfast >"$OUT/rigfast-$scn.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$API_PORT/health" >/dev/null && break
        sleep 0.1
    done
    "$PBPY" "$PB/run.py" --servers "$SERVERS" --scenarios "$scn" --reps "$REPS" \
        --rig-port "$PORT" --rig-pid "$pid" --out "$OUT/results-$scn.json" "$@" | tee "$OUT/table-$scn.txt"
    stop_rig
done
