"""T10: reverse-proxy requests/s versus the origin served directly, with wrk, on loopback.

Run: python bench/proxy_bench.py [--duration 5] [--connections 32] [--reps 3] [--workers 1] [--old REV]

T10: rigfast's requests/s >= 0.8x nginx's as the proxy. Besides the rates it
prints each proxy's own CPU time per request (process tree, from /proc; user +
system), which a loaded machine disturbs less than the rates.

What it does: starts nginx (one worker process, access log off) serving a
small static file on a free loopback port, and a rigfast gateway whose
PROXY_CONFIG_FILE routes ``GET /file.txt`` to it. Then it runs wrk against
the origin directly and through the gateway, alternating, ``--reps`` times,
and prints the medians and their ratio. Layout (docs/targets.md): wrk pinned to
core 0, every server process (nginx and the gateway) pinned to core 1, so the
proxied run pays for the origin's work and the gateway's on the same core.
``--spread`` leaves nginx unpinned instead (it then competes with wrk).
For calibration it also measures nginx itself as the reverse proxy (a second
nginx, ``proxy_pass`` with a keep-alive upstream pool, on core 1 too): the
same layout's ceiling for a proxy written in C. ``--old REV`` adds a gateway
run from another revision of this repository (bench/revtree.py: its own tree,
built in place, this venv) to every repetition: before/after in one run.
Everything it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY = b"x" * 64 + b"\n"
sys.path.insert(0, REPO)
from bench import revtree  # noqa: E402
from bench.procstat import proc_cpu_split  # noqa: E402
from tests.helpers import free_port  # noqa: E402


def tree_cpu_s(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process and its children (the gateway's worker, nginx's worker)."""
    user, system = proc_cpu_split(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            kids = [int(k) for k in fh.read().split()]
    except OSError:
        kids = []
    for kid in kids:
        try:
            u, s = tree_cpu_s(kid)
        except OSError:
            continue
        user += u
        system += s
    return user, system


def wait_http(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as r:
                if r.status == 200:
                    return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not answering after {timeout}s")
        time.sleep(0.05)


def run_nginx(tmp: str, name: str, pin: str | None, http_body: str) -> subprocess.Popen:
    """nginx with one worker in the foreground; ``http_body`` goes inside its http block."""
    conf = os.path.join(tmp, f"{name}.conf")
    with open(conf, "w") as fh:
        fh.write(f"""
daemon off;
worker_processes 1;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{http_body}
}}
""")
    cmd = ["nginx", "-c", conf, "-p", tmp]
    if pin:
        cmd = ["taskset", "-c", pin] + cmd
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_nginx(tmp: str, port: int, pin: str | None) -> subprocess.Popen:
    """The origin: a small static file."""
    root = os.path.join(tmp, "www")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "file.txt"), "wb") as fh:
        fh.write(BODY)
    return run_nginx(tmp, "nginx", pin, f"""    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}""")


def start_nginx_proxy(tmp: str, port: int, origin_port: int) -> subprocess.Popen:
    """nginx as the proxy, for comparison, on core 1 like rigfast."""
    return run_nginx(tmp, "nginx-proxy", "1", f"""    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}""")


def start_gateway(tmp: str, origin_port: int, workers: int, pin: str, tree: str = REPO) -> tuple[subprocess.Popen, int]:
    """A gateway run from ``tree`` (this checkout, or a revision's tree: bench/revtree.py)."""
    port, api_port = free_port(), free_port()
    apis = [{"id": "bench", "proxy": {"target_url": "127.0.0.1", "port": origin_port},
             "version_data": {"default": {"endpoints": [{"id": "file", "method": "GET", "path_regex": "/file\\.txt"}]}}}]
    env = dict(os.environ, INBOUND_PORT=str(port), API_HTTP_PORT=str(api_port), RIGFAST_HOST="127.0.0.1",
               RIGFAST_API_HOST="127.0.0.1", RIGFAST_WORKERS=str(workers), PROXY_CONFIG_FILE=json.dumps(apis),
               LOG_LEVEL="warning", MAX_CONNECTIONS_PER_MINUTE="0", RIGFAST_NODE_ID="bench",
               RIGFAST_CLUSTER_DIR=os.path.join(tmp, f"cluster-{port}"))
    if tree != REPO:
        env = revtree.env(tree, env)
    log = open(os.path.join(tmp, f"gateway-{port}.log"), "wb")
    proc = subprocess.Popen(["taskset", "-c", pin, sys.executable, "-m", "rigfast"], cwd=tree, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, port


def wrk(url: str, duration: int, connections: int, pid: int | None = None) -> tuple[float, float, float]:
    """(requests/s, user and system CPU microseconds per request of the process tree ``pid``, 0 when none)."""
    u0, s0 = tree_cpu_s(pid) if pid else (0.0, 0.0)
    out = subprocess.run(["taskset", "-c", "0", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", url],
                         capture_output=True, text=True, timeout=duration + 30).stdout
    u1, s1 = tree_cpu_s(pid) if pid else (0.0, 0.0)
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    if not m or "Non-2xx" in out or "Socket errors" in out and "timeout 0" not in out:
        print(out, file=sys.stderr)
    if not m or not n:
        raise RuntimeError("wrk printed no Requests/sec")
    count = max(int(n.group(1)), 1)
    return float(m.group(1)), (u1 - u0) * 1e6 / count, (s1 - s0) * 1e6 / count


def stop(proc: subprocess.Popen | None, group: bool = False) -> None:
    if proc is None or proc.poll() is not None:
        return
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    ap.add_argument("--spread", action="store_true", help="do not pin nginx (by default it shares core 1 with the gateway)")
    ap.add_argument("--old", metavar="REV", help="also measure a gateway run from this revision (bench/revtree.py)")
    args = ap.parse_args()
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            print(f"{tool} is not installed (apt-get install wrk nginx util-linux)", file=sys.stderr)
            return 2
    old_tree = revtree.tree(args.old) if args.old else None
    tmp = tempfile.mkdtemp(prefix="rigfast-proxybench-")
    os.chmod(tmp, 0o755)  # nginx started as root serves files as an unprivileged user
    nginx = nproxy = None
    gateways: list[subprocess.Popen] = []
    try:
        origin_port = free_port()
        nginx = start_nginx(tmp, origin_port, None if args.spread else "1")
        direct = f"http://127.0.0.1:{origin_port}/file.txt"
        wait_http(direct)
        # (name, url, pid of the process tree whose CPU is counted)
        proxies: list[tuple[str, str, int]] = []
        for name, tree in [("rigfast", REPO)] + ([(f"rigfast@{args.old}", old_tree)] if old_tree else []):
            gw, port = start_gateway(tmp, origin_port, args.workers, "1", tree)
            gateways.append(gw)
            proxies.append((name, f"http://127.0.0.1:{port}/file.txt", gw.pid))
            wait_http(proxies[-1][1])
        nproxy_port = free_port()
        nproxy = start_nginx_proxy(tmp, nproxy_port, origin_port)
        proxies.append(("nginx", f"http://127.0.0.1:{nproxy_port}/file.txt", nproxy.pid))
        wait_http(proxies[-1][1])
        for url in [direct] + [url for _, url, _ in proxies]:
            wrk(url, 1, args.connections)  # warm-up
        d: list[float] = []
        got: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _, _ in proxies}
        for i in range(args.reps):
            d.append(wrk(direct, args.duration, args.connections)[0])
            for name, url, pid in proxies:
                got[name].append(wrk(url, args.duration, args.connections, pid))
            print(f"rep {i + 1}: direct {d[-1]:,.0f} req/s; " + "; ".join(
                f"{name} proxy {r[-1][0]:,.0f} ({r[-1][0] / d[-1]:.2f}x, {r[-1][1] + r[-1][2]:.1f} us CPU/request: "
                f"{r[-1][1]:.1f} user + {r[-1][2]:.1f} system)" for name, r in got.items()))
        md = statistics.median(d)
        med = {name: tuple(statistics.median(x[k] for x in r) for k in range(3)) for name, r in got.items()}
        mn, mnc = med["nginx"][0], med["nginx"][1] + med["nginx"][2]
        print(f"median over {args.reps} x {args.duration}s, {args.connections} connections, {args.workers} gateway worker(s), "
              f"origin {'unpinned' if args.spread else 'on core 1'}: direct {md:,.0f} req/s; " + "; ".join(
                  f"{name} proxy {m[0]:,.0f} req/s = {m[0] / md:.2f}x, {m[1] + m[2]:.1f} us CPU/request "
                  f"({m[1]:.1f} user + {m[2]:.1f} system)" for name, m in med.items()))
        for name, m in med.items():
            if name != "nginx":
                print(f"{name} / nginx proxy: requests/s {m[0] / mn:.2f} (T10 target >= 0.80), "
                      f"CPU per request {(m[1] + m[2]) / mnc:.1f}x")
    finally:
        stop(nproxy)
        for gw in gateways:
            stop(gw, group=True)
        stop(nginx)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
