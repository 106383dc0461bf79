"""Cluster fixtures: a Tansu broker, two 2-worker nodes on it, and a 2-worker node without Kafka.

Every node is a real supervisor process (``python -m rigfast`` with
``RIGFAST_WORKERS=2``) on its own loopback ports. A node counts as up when
each of its workers, reached through fresh connections to the API port
(the kernel picks the worker), reports ``cluster.ready`` in
``/health?detailed``: bus linked to its peer, Kafka topics assigned and the
blacklist read. ``Node.pinned(w)`` returns an HTTP client whose one
keep-alive connection is served by worker ``w``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import jwt as pyjwt
import pytest

from tests.conftest import DEFAULT_ENV, JWT_SECRET, REPO_ROOT
from tests.helpers import T, free_port, stop_process

pytestmark = pytest.mark.kafka


class Node:
    """One rigfast node: a supervisor and its workers."""

    def __init__(self, node_id: str, workers: int = 2, kafka: str | None = None, **env: str):
        self.node_id = node_id
        self.workers = workers
        self.port, self.api_port = free_port(), free_port()
        while self.api_port == self.port:
            self.api_port = free_port()
        self.env = dict(os.environ)
        self.env.update(DEFAULT_ENV)
        self.env.update({
            "INBOUND_PORT": str(self.port), "API_HTTP_PORT": str(self.api_port),
            "RIGFAST_HOST": "127.0.0.1", "RIGFAST_API_HOST": "127.0.0.1",
            "RIGFAST_WORKERS": str(workers), "RIGFAST_NODE_ID": node_id,
            "RIGFAST_CLUSTER_DIR": tempfile.mkdtemp(prefix=f"rigfast-{node_id}-"),
        })
        if kafka:
            self.env.update({"KAFKA_BROKERS": kafka, "KAFKA_SOURCE_TOPICS": f"rig-src-{node_id}",
                             "RIGFAST_KAFKA_CONFIG": '{"fetch.wait.max.ms": 20}'})
        self.env.update({k: str(v) for k, v in env.items()})
        self.inbound = f"http://127.0.0.1:{self.port}"
        self.api = f"http://127.0.0.1:{self.api_port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = ""

    def start(self) -> "Node":
        fd, self.log_path = tempfile.mkstemp(prefix=f"rigfast-node-{self.node_id}-", suffix=".log")
        with os.fdopen(fd, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "rigfast"], cwd=str(REPO_ROOT), env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.wait_ready()
        return self

    def log(self, tail: int = 6000) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def healths(self, want: set[int] | None = None, timeout: float = 3 * T) -> dict[int, dict]:
        """Detailed health of every worker (or of those in `want`), via fresh connections; bounded."""
        want = set(range(self.workers)) if want is None else want
        seen: dict[int, dict] = {}
        deadline = time.monotonic() + timeout
        for _ in range(2000):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"node {self.node_id} exited with {self.proc.returncode}:\n{self.log()}")
            try:
                h = httpx.get(self.api + "/health?detailed", timeout=T).json()
                seen[h["worker"]] = h
            except httpx.HTTPError:
                pass
            if want <= seen.keys() or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return seen

    def wait_ready(self, timeout: float = 4 * T) -> dict[int, dict]:
        deadline = time.monotonic() + timeout
        last = {}
        while time.monotonic() < deadline:
            last = self.healths(timeout=max(0.1, deadline - time.monotonic()))
            if len(last) == self.workers and all(h["cluster"]["ready"] for h in last.values()):
                return last
            time.sleep(0.05)
        raise RuntimeError(f"node {self.node_id} not ready after {timeout}s: {last}\n{self.log()}")

    def pinned(self, worker: int, limit: int = 200) -> httpx.Client:
        """A client whose single keep-alive connection to the API port is served by `worker`."""
        for _ in range(limit):
            c = httpx.Client(base_url=self.api, timeout=T, limits=httpx.Limits(max_connections=1))
            if c.get("/health?detailed").json()["worker"] == worker:
                return c
            c.close()
        raise AssertionError(f"no connection landed on worker {worker} in {limit} tries")

    def stop(self, timeout: float = 3 * T) -> int | None:
        if self.proc is None:
            return None
        code = stop_process(self.proc, timeout)
        self.proc = None
        return code


def jwt_for(session_id: str, **claims) -> str:
    return pyjwt.encode({"jti": session_id, "exp": int(time.time()) + 600, **claims}, JWT_SECRET, "HS256")


@pytest.fixture(scope="session")
def two_nodes(tansu):
    """Nodes "na" and "nb", two workers each, linked through Tansu."""
    tansu.create_topics(["rigfast-cluster", "rigfast-blacklist", "rig-src-na", "rig-src-nb"])
    nodes = [Node("na", kafka=tansu.bootstrap), Node("nb", kafka=tansu.bootstrap)]
    try:
        for n in nodes:
            n.start()
        yield nodes
    finally:
        for n in nodes:
            n.stop()


@pytest.fixture(scope="session")
def solo():
    """Node "ns": two workers, no Kafka (the Unix-socket bus only)."""
    node = Node("ns")
    try:
        yield node.start()
    finally:
        node.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        for name in ("two_nodes", "solo", "node"):
            nodes = item.funcargs.get(name) if hasattr(item, "funcargs") else None
            for n in (nodes if isinstance(nodes, list) else [nodes] if nodes else []):
                rep.sections.append((f"node {n.node_id} log", n.log()))
