#!/usr/bin/env bash
# Side-by-side benchmark (`make bench-peers`): rigfast vs nginx+nchan and Pushpin, bench/peers/.
#
#   bench/peerbench.sh                                   # every scenario, rig,nchan,pushpin, 2 reps
#   SCENARIOS=fanout_sse,addressed REPS=1 bench/peerbench.sh
#   SERVERS=rig,nchan bench/peerbench.sh --k 200         # extra flags go to the load client
#
# Installs nginx + libnginx-mod-nchan + Pushpin with apt when missing (needs root). rigfast runs
# as one worker from this checkout's .venv, pinned to core 1 like the peers, the load client on
# core 0; every server is started fresh for every run and stopped by PID. Loopback only.
# Tables and raw JSON go to $OUT (default /tmp/peerbench-rigfast).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
PKGS=(nginx libnginx-mod-nchan pushpin condure)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "[peerbench] installing ${missing[*]} with apt"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
exec "$PY" "$ROOT/bench/peers/run.py" --servers "${SERVERS:-rig,nchan,pushpin}" \
    --scenarios "${SCENARIOS:-fanout_sse,fanout_ws,latency_sse,idle_mem,connect,addressed}" \
    --reps "${REPS:-2}" --out "${OUT:-/tmp/peerbench-rigfast}" --python "$PY" "$@"
