"""rigfast against nginx + nchan and Pushpin, scenario by scenario (`make bench-peers`).

    python bench/peers/run.py [--servers rig,nchan,pushpin] [--scenarios fanout_sse,...] [--reps 2]
    python bench/peers/run.py --servers rig@272b250,rig@main,nchan   # two revisions (bench/ab.py peer)

For every scenario, server and repetition: a fresh server pinned to ``--server-cpus`` (core 1),
the load client (bench/peers/client.py) pinned to ``--client-cpus`` (core 0), the server
stopped by PID afterwards. Prints one table per scenario (medians over the repetitions, and each
server's figure divided by the baseline's, nchan by default) and writes every raw result to
``--out``/results.json. rigfast runs as one worker (``RIGFAST_WORKERS=1``) from this checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import servers  # noqa: E402
from client import SCENARIOS  # noqa: E402

# what each scenario's table shows: (result key, label, lower is better)
ROWS = {
    "fanout_sse": [("server_cpu_us_per_delivery", "server CPU µs per delivery", True),
                   ("deliveries_per_s", "deliveries/s", False),
                   ("latency_p50_ms", "latency p50 ms", True), ("latency_p99_ms", "latency p99 ms", True),
                   ("client_util", "client CPU util", None), ("dropped_by_server", "connections dropped", None)],
    "latency_sse": [("latency_p50_ms", "latency p50 ms", True), ("latency_p99_ms", "latency p99 ms", True),
                    ("server_cpu_us_per_delivery", "server CPU µs per delivery", True)],
    "idle_mem": [("rss_kib_per_connection", "server RSS KiB per connection", True)],
    "idle_mem_ws": [("rss_kib_per_connection", "server RSS KiB per WebSocket connection", True)],
    "connect": [("connects_per_s", "connects/s", False),
                ("server_cpu_us_per_connection", "server CPU µs per connection", True),
                ("connect_failed", "failed", None)],
    "addressed": [("server_cpu_us_per_event", "server CPU µs per event", True), ("events_per_s", "events/s", False),
                  ("latency_p50_ms", "latency p50 ms", True), ("latency_p99_ms", "latency p99 ms", True),
                  ("misrouted", "misrouted", None), ("users_short", "users short of events", None),
                  ("client_util", "client CPU util", None)],
}
ROWS["fanout_ws"] = ROWS["fanout_sse"]


def one(server: servers.Server, scenario: str, a) -> dict:
    server.start()
    try:
        pid = server.measured()[0]
        cmd = ["taskset", "-c", a.client_cpus, sys.executable, os.path.join(HERE, "client.py"), "--target",
               server.name.split("@")[0], "--port", str(server.sub_port), "--pub-port", str(server.pub_port), "--server-pid",
               str(pid), "--scenario", scenario] + a.client_args
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.run_timeout)
        if out.returncode != 0:
            return {"error": (out.stderr or out.stdout).strip().splitlines()[-1:] or ["failed"]}
        return json.loads(out.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return {"error": f"client did not finish in {a.run_timeout}s"}
    finally:
        server.stop()


def median(results: list[dict], key: str):
    xs = [r[key] for r in results if isinstance(r.get(key), (int, float))]
    return statistics.median(xs) if xs else None


def fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return f"{int(v):,}"


def table(scenario: str, by_server: dict[str, list[dict]], baseline: str) -> str:
    names = list(by_server)
    head = ["metric"] + names + [f"{n}/{baseline}" for n in names if n != baseline and baseline in by_server]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for key, label, _lower in ROWS[scenario]:
        meds = {n: median(by_server[n], key) for n in names}
        row = [label] + [fmt(meds[n]) for n in names]
        if baseline in by_server:
            for n in names:
                if n != baseline:
                    b, v = meds[baseline], meds[n]
                    row.append(f"{v / b:.2f}" if isinstance(v, (int, float)) and b else "-")
        lines.append("| " + " | ".join(row) + " |")
    errors = [f"{n}: {r['error']}" for n in names for r in by_server[n] if "error" in r]
    return f"### {scenario}\n\n" + "\n".join(lines) + ("\n\nerrors: " + "; ".join(errors) if errors else "") + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", default="rig,nchan,pushpin")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--baseline", default="nchan")
    ap.add_argument("--server-cpus", default="1")
    ap.add_argument("--client-cpus", default="0")
    ap.add_argument("--python", default=os.path.join(servers.REPO, ".venv", "bin", "python"),
                    help="the Python that runs rigfast (its venv)")
    ap.add_argument("--tree", action="append", default=[], metavar="REV=PATH",
                    help="server rig@REV runs from PATH (without it, bench/revtree.py makes the tree)")
    ap.add_argument("--out", default="/tmp/peerbench-rigfast")
    ap.add_argument("--run-timeout", type=float, default=240.0, help="longest one client run may take, seconds")
    a, a.client_args = ap.parse_known_args()
    os.makedirs(a.out, exist_ok=True)
    names = [s for s in a.servers.split(",") if s]
    trees = dict(t.split("=", 1) for t in a.tree)
    scenarios = [s for s in a.scenarios.split(",") if s]
    for s in scenarios:
        if s not in SCENARIOS:
            raise SystemExit(f"unknown scenario {s!r}: {', '.join(SCENARIOS)}")
    results: dict = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "servers": names,
                     "reps": a.reps, "client_args": a.client_args, "scenarios": {}}
    tables = []
    for scenario in scenarios:
        by_server: dict[str, list[dict]] = {n: [] for n in names}
        for rep in range(a.reps):
            for n in names:  # interleaved, so slow drift of the machine hits every server alike
                r = one(servers.make(n, a.server_cpus, a.out, a.python, trees), scenario, a)
                print(f"[peerbench] {scenario} {n} rep {rep + 1}: {json.dumps(r)}", file=sys.stderr, flush=True)
                by_server[n].append(r)
        results["scenarios"][scenario] = by_server
        tables.append(table(scenario, by_server, a.baseline))
        print(tables[-1], flush=True)
        with open(os.path.join(a.out, "results.json"), "w") as fh:
            json.dump(results, fh, indent=1)
    with open(os.path.join(a.out, "tables.md"), "w") as fh:
        fh.write("\n".join(tables))
    return 0


if __name__ == "__main__":
    sys.exit(main())
