"""Logging setup and the rate-limited logger (rigfast.logs)."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from rigfast.config import ConfigError
from rigfast.logs import RateLimitedLogger, parse_level, setup_logging

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


@pytest.mark.parametrize(
    "text, level",
    [("debug", logging.DEBUG), ("INFO", logging.INFO), ("Warning", logging.WARNING), ("warn", logging.WARNING),
     ("error", logging.ERROR), (" info ", logging.INFO)],
)
def test_parse_level(text, level):
    """LOG_LEVEL names are case-insensitive; RIG's 'warn' means warning."""
    assert parse_level(text) == level


def test_parse_level_invalid():
    """An unknown LOG_LEVEL is a ConfigError naming LOG_LEVEL."""
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        parse_level("verbose")


def test_json_lines(restore_root):
    """LOG_FMT=json writes one parseable JSON object per line with time, level, message, logger and extras."""
    buf = io.StringIO()
    setup_logging("debug", "JSON", stream=buf)
    lg = logging.getLogger("rigfast.test")
    lg.info("hello %s", "world", extra={"conn": 7, "transport": "sse", "obj": object()})
    lg.debug("second")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["message"] == "hello world"
    assert first["level"] == "info"
    assert first["logger"] == "rigfast.test"
    assert RFC3339.match(first["time"])
    assert first["conn"] == 7 and first["transport"] == "sse"
    assert first["obj"].startswith("<object")  # not serialisable: repr
    assert "exc" not in first
    assert json.loads(lines[1])["level"] == "debug"


def test_json_exception(restore_root):
    """A logged exception appears as a traceback string under exc, still on one line."""
    buf = io.StringIO()
    setup_logging("info", "json", stream=buf)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("rigfast.test").exception("failed")
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["level"] == "error"
    assert "Traceback" in rec["exc"] and "ValueError: boom" in rec["exc"]


def test_level_filters(restore_root):
    """Records below LOG_LEVEL are not written."""
    buf = io.StringIO()
    setup_logging("warn", "json", stream=buf)
    lg = logging.getLogger("rigfast.test")
    lg.info("hidden")
    lg.warning("shown")
    assert [json.loads(x)["message"] for x in buf.getvalue().splitlines()] == ["shown"]


def test_text_format(restore_root):
    """Any other LOG_FMT gives a readable line with time, level, logger, message and key=value extras."""
    buf = io.StringIO()
    setup_logging("info", "text", stream=buf)
    logging.getLogger("rigfast.test").warning("slow consumer", extra={"conn": 3, "why": "send buffer full"})
    line = buf.getvalue().strip()
    assert RFC3339.match(line.split(" ", 1)[0])
    assert "warning" in line and "rigfast.test: slow consumer" in line
    assert "conn=3" in line and 'why="send buffer full"' in line


def test_setup_twice_replaces_own_handler(restore_root):
    """Calling setup_logging again replaces its earlier handler instead of doubling lines."""
    first, second = io.StringIO(), io.StringIO()
    setup_logging("info", "json", stream=first)
    setup_logging("info", "json", stream=second)
    logging.getLogger("rigfast.test").info("once")
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_rate_limited_logger(restore_root):
    """One line per key per interval; the next line carries the suppressed count."""
    buf = io.StringIO()
    setup_logging("info", "json", stream=buf)
    clock = Clock()
    rl = RateLimitedLogger(logging.getLogger("rigfast.test"), interval_s=10, clock=clock)
    assert rl.warning("bad-event", "invalid event on %s", "topic-a")
    for _ in range(5):
        assert not rl.warning("bad-event", "invalid event on %s", "topic-a")
    assert rl.warning("other", "different key")  # keys are independent
    clock.t += 10
    assert rl.warning("bad-event", "invalid event on %s", "topic-a")
    recs = [json.loads(x) for x in buf.getvalue().splitlines()]
    assert [r["message"] for r in recs] == [
        "invalid event on topic-a",
        "different key",
        "invalid event on topic-a (5 similar suppressed)",
    ]
    assert recs[2]["suppressed"] == 5
    assert "suppressed" not in recs[0]


def test_rate_limited_logger_flush_and_bounded_keys(restore_root):
    """flush() reports pending suppressed counts; the key table stays bounded."""
    buf = io.StringIO()
    setup_logging("info", "json", stream=buf)
    clock = Clock()
    rl = RateLimitedLogger(logging.getLogger("rigfast.test"), interval_s=10, max_keys=4, clock=clock)
    rl.warning("k", "m")
    rl.warning("k", "m")
    assert rl.flush() == 1
    last = json.loads(buf.getvalue().splitlines()[-1])
    assert last["suppressed"] == 1 and last["key"] == "k"
    for i in range(20):
        rl.warning(f"key{i}", "m")
    assert len(rl._state) <= 4


def test_rate_limited_logger_respects_level(restore_root):
    """A disabled level writes nothing and does not start a suppression window."""
    buf = io.StringIO()
    setup_logging("error", "json", stream=buf)
    rl = RateLimitedLogger(logging.getLogger("rigfast.test"), interval_s=10, clock=Clock())
    assert not rl.warning("k", "m")
    assert buf.getvalue() == ""
    assert rl._state == {}
