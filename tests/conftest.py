"""Shared fixtures: start a real gateway (``python -m rigfast``) on free loopback ports.

``start_gateway(**env)`` launches one and waits until ``GET /health`` on the API
port answers ``200 OK``. The module-scoped ``gateway`` fixture is the default
one (extractors for ``greeting.name`` and the two-field ``order`` type, a JWT
secret for automatic subscriptions). Tests that need special settings use the
``gateway_factory`` fixture, which stops what it started. When a test fails,
the stderr of every gateway still running is attached to the report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers import T, free_port, stop_process

REPO_ROOT = Path(__file__).resolve().parent.parent

JWT_SECRET = "rigfast-test-secret-0123456789abcdef"

DEFAULT_EXTRACTORS = {
    "greeting": {
        "name": {
            "stable_field_index": 1,
            "event": {"json_pointer": "/data/name"},
            "jwt": {"json_pointer": "/username"},
        }
    },
    "order": {
        "customer": {"stable_field_index": 1, "event": {"json_pointer": "/data/customer"}},
        "region": {"stable_field_index": 2, "event": {"json_pointer": "/data/region"}},
    },
}

DEFAULT_ENV = {
    "EXTRACTORS": json.dumps(DEFAULT_EXTRACTORS),
    "JWT_SECRET_KEY": JWT_SECRET,
    "RIGFAST_LONGPOLL_TIMEOUT_S": "3",
    "RIGFAST_DRAIN_S": "0",  # tests stop gateways at once; tests/integration/test_drain.py drains
}

_RUNNING: list["Gateway"] = []

# a bound, not a wait: a gateway usually answers in well under a second, but a loaded machine
# (several suites at once) has taken over 15 s to import, build its config and listen
STARTUP_S = 12 * T


class Gateway:
    """A running gateway process on loopback ports."""

    def __init__(self, proc: subprocess.Popen, port: int, api_port: int, log_path: str, env: dict):
        self.proc = proc
        self.port = port
        self.api_port = api_port
        self.log_path = log_path
        self.env = env
        self.inbound = f"http://127.0.0.1:{port}"
        self.api = f"http://127.0.0.1:{api_port}"
        self.ws = f"ws://127.0.0.1:{port}"
        self.hostport = ("127.0.0.1", port)
        self.api_hostport = ("127.0.0.1", api_port)

    def log(self, tail: int = 8000) -> str:
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""
        return text[-tail:]

    def stop(self, timeout: float = T) -> int | None:
        """SIGTERM, wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self in _RUNNING:
            _RUNNING.remove(self)
        return stop_process(self.proc, timeout)

    def __repr__(self) -> str:
        return f"Gateway(inbound={self.inbound}, api={self.api}, pid={self.proc.pid})"


def _nofile(n: int):
    def set_limit() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))

    return set_limit


def start_gateway(*, nofile: int | None = None, **env: str) -> Gateway:
    """Start ``python -m rigfast`` with DEFAULT_ENV updated by `env`; wait until healthy.

    ``nofile``: the gateway's open-file limit (soft and hard), as ``prlimit --nofile`` would set it.
    """
    port, api_port = free_port(), free_port()
    while api_port == port:
        api_port = free_port()
    full = dict(os.environ)
    full.update(DEFAULT_ENV)
    full.update(
        {
            "INBOUND_PORT": str(port),
            "API_HTTP_PORT": str(api_port),
            "RIGFAST_HOST": "127.0.0.1",
            "RIGFAST_API_HOST": "127.0.0.1",
            "RIGFAST_WORKERS": "1",
        }
    )
    full.update({k: str(v) for k, v in env.items()})
    fd, log_path = tempfile.mkstemp(prefix="rigfast-gw-", suffix=".log")
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rigfast"],
            cwd=str(REPO_ROOT),
            env=full,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=_nofile(nofile) if nofile else None,
        )
    gw = Gateway(proc, port, api_port, log_path, full)
    _RUNNING.append(gw)
    deadline = time.monotonic() + STARTUP_S
    last_err = None
    while True:
        if proc.poll() is not None:
            _RUNNING.remove(gw)
            raise RuntimeError(f"gateway exited with {proc.returncode} during start-up:\n{gw.log()}")
        try:
            r = httpx.get(gw.api + "/health", timeout=T)
            if r.status_code == 200 and r.text.strip() == "OK":
                return gw
            last_err = f"{r.status_code} {r.text[:200]!r}"
        except httpx.HTTPError as exc:
            last_err = repr(exc)
        if time.monotonic() > deadline:
            gw.stop()
            raise RuntimeError(f"gateway not healthy after {STARTUP_S:.0f}s ({last_err}):\n{gw.log()}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def gateway():
    """The default gateway, shared by the tests of one module."""
    gw = start_gateway()
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def tansu():
    """A Tansu (Kafka-protocol) broker on a free loopback port, shared by the Kafka and cluster tests."""
    from tests.tansu import TansuBroker

    broker = TansuBroker()
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def gateway_factory():
    """``gateway_factory(**env)`` starts a gateway with special settings; stopped after the test."""
    started: list[Gateway] = []

    def factory(*, nofile: int | None = None, **env: str) -> Gateway:
        gw = start_gateway(nofile=nofile, **env)
        started.append(gw)
        return gw

    yield factory
    for gw in started:
        gw.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a second or two (many connections, timeouts)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and _RUNNING:
        for gw in list(_RUNNING):
            rep.sections.append((f"gateway log ({gw.inbound}, pid {gw.proc.pid})", gw.log() or "(empty)"))
