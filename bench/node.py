"""A real rigfast node (``python -m rigfast``: supervisor, workers, the reader) for the node benchmarks.

Started on free loopback ports, ready when every worker says so in
``/health?detailed``; stopped by its own PID (SIGTERM, then SIGKILL after a
bounded wait). Its processes are found from /proc (``procstat.tree``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time

import httpx

from bench.procstat import role, tree
from rigfast.kafka.tansu import free_port


class Node:
    def __init__(self, workers: int, env: dict[str, str] | None = None, node_id: str = "bench",
                 ready_timeout_s: float = 60.0):
        self.workers = workers
        self.port, self.api = free_port(), free_port()
        directory = tempfile.mkdtemp(prefix="rigfast-bench-")
        full = dict(os.environ, RIGFAST_WORKERS=str(workers), INBOUND_PORT=str(self.port), API_HTTP_PORT=str(self.api),
                    RIGFAST_HOST="127.0.0.1", RIGFAST_API_HOST="127.0.0.1", RIGFAST_CLUSTER_TOPIC="",
                    LOG_LEVEL="warning", RIGFAST_NODE_ID=node_id, MAX_CONNECTIONS_PER_MINUTE="0",
                    RIGFAST_CLUSTER_DIR=directory)
        full.update(env or {})
        self.kafka = bool(full.get("KAFKA_SOURCE_TOPICS"))
        self.log_path = os.path.join(directory, "node.log")  # the node's warnings and errors, see problems()
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "rigfast"], env=full, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT)
        try:
            self.wait_ready(ready_timeout_s)
        except BaseException:
            self.stop()
            raise

    def health(self) -> dict:
        return httpx.get(f"http://127.0.0.1:{self.api}/health?detailed", timeout=5).json()

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        seen: set = set()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node exited with {self.proc.returncode}")
            try:
                h = self.health()
                if self.workers == 1:
                    if not self.kafka or (h.get("kafka") or {}).get("state") == "connected":
                        return
                elif (h.get("cluster") or {}).get("ready"):
                    seen.add(h["worker"])
                    if len(seen) == self.workers:
                        return
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError("node not ready")

    def problems(self) -> list[str]:
        """The node's log lines that are errors (e.g. a worker cut off by the reader for not reading)."""
        with open(self.log_path, errors="replace") as fh:
            return [line.rstrip() for line in fh if " error " in line or '"level":"error"' in line or "Traceback" in line]

    def pids(self) -> list[int]:
        return tree(self.proc.pid)

    def roles(self) -> dict[int, str]:
        return {p: role(p) for p in self.pids()}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> "Node":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
