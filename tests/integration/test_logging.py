"""Logging: LOG_FMT=json gives one JSON object per stderr line (time, level, logger, message, context); LOG_LEVEL filters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime

import httpx
import pytest

from tests.conftest import DEFAULT_ENV, REPO_ROOT
from tests.helpers import T, free_port, open_sse, uid


def json_lines(text: str) -> list[dict]:
    """Every non-empty line parsed as a JSON object (fails on the first line that is not one)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            pytest.fail(f"line {n} is not JSON: {line!r}\n--- whole output ---\n{text}")
        assert isinstance(obj, dict), line
        out.append(obj)
    return out


def check_fields(rec: dict) -> None:
    assert rec["level"] in ("debug", "info", "warning", "error", "critical"), rec
    assert isinstance(rec["message"], str) and rec["message"], rec
    assert isinstance(rec["logger"], str) and rec["logger"], rec
    ts = rec["time"]
    assert ts.endswith("Z"), ts
    datetime.fromisoformat(ts.replace("Z", "+00:00"))


def test_json_lines_with_fields(gateway_factory):
    """LOG_FMT=json: every line the gateway writes, start to stop, is one JSON object with time/level/logger/message."""
    url = f"http://127.0.0.1:{free_port()}/check"
    gw = gateway_factory(LOG_FMT="json", LOG_LEVEL="debug", SUBSCRIPTION_CHECK=url)
    with open_sse(gw.inbound, [{"eventType": "checked"}]) as s:  # named subscriptions: the check runs
        assert s.status_code == 403  # the unreachable checker is logged as a warning
    assert httpx.post(gw.api + "/v3/session-blacklist", json={"sessionId": uid(), "validityInSeconds": 5},
                      timeout=T).status_code == 201
    assert gw.stop() == 0
    records = json_lines(gw.log(tail=1 << 20))
    for rec in records:
        check_fields(rec)
    messages = " | ".join(r["message"] for r in records)
    assert any(r["level"] == "info" and "listening" in r["message"] for r in records), messages
    assert any(r["level"] == "warning" and "unreachable" in r["message"] for r in records), messages
    assert any("stopping" in r["message"] for r in records), messages


def test_log_level_filters(gateway_factory):
    """LOG_LEVEL=warning drops info lines (e.g. the start-up banner) but keeps warnings."""
    url = f"http://127.0.0.1:{free_port()}/check"
    gw = gateway_factory(LOG_FMT="json", LOG_LEVEL="warning", SUBSCRIPTION_CHECK=url)
    with open_sse(gw.inbound, [{"eventType": "checked"}]) as s:  # named subscriptions: the check runs
        assert s.status_code == 403
    gw.stop()
    records = json_lines(gw.log(tail=1 << 20))
    assert records, "expected the checker warning"
    assert all(r["level"] in ("warning", "error", "critical") for r in records), records


def test_startup_error_is_a_json_line(tmp_path):
    """A TLS key that cannot be loaded stops the gateway with exit code 2 and one JSON error line naming the setting."""
    key = tmp_path / "key.pem"
    key.write_text("not a key")
    env = dict(os.environ, **DEFAULT_ENV, LOG_FMT="json", INBOUND_PORT=str(free_port()), API_HTTP_PORT=str(free_port()),
               INBOUND_HTTPS_PORT=str(free_port()), API_HTTPS_PORT=str(free_port()), RIGFAST_WORKERS="1",
               RIGFAST_HOST="127.0.0.1", RIGFAST_API_HOST="127.0.0.1", HTTPS_CERTFILE=str(key), HTTPS_KEYFILE=str(key))
    proc = subprocess.run([sys.executable, "-m", "rigfast"], cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=3 * T)
    assert proc.returncode == 2, proc.stderr
    errors = [r for r in json_lines(proc.stderr) if r["level"] == "error"]
    assert errors and "HTTPS_KEYFILE" in errors[-1]["message"], proc.stderr


def test_bad_log_level_refused():
    """An unknown LOG_LEVEL stops the gateway at once with exit code 2 and a message naming LOG_LEVEL."""
    env = dict(os.environ, **DEFAULT_ENV, LOG_LEVEL="chatty", RIGFAST_WORKERS="1",
               INBOUND_PORT=str(free_port()), API_HTTP_PORT=str(free_port()))
    proc = subprocess.run([sys.executable, "-m", "rigfast"], cwd=str(REPO_ROOT), env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=3 * T)
    assert proc.returncode == 2
    assert "LOG_LEVEL" in proc.stderr
