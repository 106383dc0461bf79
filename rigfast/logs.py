"""Logging setup (LOG_LEVEL, LOG_FMT) and a rate-limited logger for hot paths.

``LOG_FMT=json`` writes one JSON object per line to stderr::

    {"time": "2024-05-01T12:00:00.123Z", "level": "warning", "logger": "rigfast.hub",
     "message": "...", <extra fields>, "exc": "Traceback ..."}

Anything else gives a readable text line with the extra fields as
``key=value`` pairs. Extra fields are whatever was passed as
``logger.info(..., extra={...})``.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import datetime, timezone
from typing import Any, Callable, TextIO

import orjson

from rigfast.errors import ConfigError

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime", "taskName"}
)


def parse_level(level: str) -> int:
    """LOG_LEVEL text -> logging level; raises ConfigError naming LOG_LEVEL."""
    try:
        return LEVELS[level.strip().lower()]
    except (KeyError, AttributeError):
        raise ConfigError(f"LOG_LEVEL must be one of debug, info, warning (warn), error; got {level!r}") from None


def _rfc3339(ts: float) -> str:
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


def _level_name(record: logging.LogRecord) -> str:
    return record.levelname.lower()


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _rfc3339(record.created),
            "level": _level_name(record),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for k, v in _extras(record).items():
            if k not in out:
                out[k] = v
        if record.exc_info:
            if not record.exc_text:
                record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=repr).decode()


class TextFormatter(logging.Formatter):
    """``<time> <level> <logger>: <message> key=value ...`` plus any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_rfc3339(record.created)} {_level_name(record):<7} {record.name}: {record.getMessage()}"
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={_text_value(v)}" for k, v in extras.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _text_value(v: Any) -> str:
    if isinstance(v, str):
        return v if v and " " not in v and "=" not in v and '"' not in v else orjson.dumps(v).decode()
    try:
        return orjson.dumps(v).decode()
    except TypeError:
        return repr(v)


_HANDLER_MARK = "_rigfast_handler"


def setup_logging(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Configure the root logger from LOG_LEVEL and LOG_FMT; safe to call again.

    Replaces the handler an earlier call installed, leaves others alone.
    Returns the handler (tests read its stream).
    """
    lvl = parse_level(level)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt.strip().lower() == "json" else TextFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, _HANDLER_MARK, False):
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(lvl)
    return handler


class RateLimitedLogger:
    """At most one line per ``interval_s`` per key; the next line says how many were suppressed.

    For warnings that a flood could repeat thousands of times a second
    (invalid Kafka messages, failing checks). Keys are caller-chosen strings,
    e.g. ``"invalid-event:" + topic``; at most ``max_keys`` are tracked.
    Suppressed counts are reported with the next line for that key, or by
    ``flush()``.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = 10.0,
        *,
        max_keys: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.logger = logger
        self.interval_s = interval_s
        self.max_keys = max_keys
        self._clock = clock
        # key -> [time of last emitted line, suppressed since then]
        self._state: dict[str, list] = {}

    def log(self, level: int, key: str, msg: str, *args: Any, **kwargs: Any) -> bool:
        """Log unless ``key`` logged within the interval; True if a line was written."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self._clock()
        st = self._state.get(key)
        if st is not None and now - st[0] < self.interval_s:
            st[1] += 1
            return False
        suppressed = st[1] if st is not None else 0
        if st is None:
            if len(self._state) >= self.max_keys:
                self._evict(now)
            self._state[key] = [now, 0]
        else:
            st[0] = now
            st[1] = 0
        if suppressed:
            msg = f"{msg} ({suppressed} similar suppressed)"
            extra = dict(kwargs.pop("extra", None) or {})
            extra["suppressed"] = suppressed
            kwargs["extra"] = extra
        kwargs.setdefault("stacklevel", 2)
        self.logger.log(level, msg, *args, **kwargs)
        return True

    def _evict(self, now: float) -> None:
        stale = [k for k, st in self._state.items() if now - st[0] >= self.interval_s and not st[1]]
        for k in stale:
            del self._state[k]
        if len(self._state) >= self.max_keys:
            # Still full: forget the oldest half (their suppressed counts are lost).
            for k in list(self._state)[: len(self._state) // 2 + 1]:
                del self._state[k]

    def debug(self, key: str, msg: str, *args: Any, **kwargs: Any) -> bool:
        kwargs.setdefault("stacklevel", 3)
        return self.log(logging.DEBUG, key, msg, *args, **kwargs)

    def info(self, key: str, msg: str, *args: Any, **kwargs: Any) -> bool:
        kwargs.setdefault("stacklevel", 3)
        return self.log(logging.INFO, key, msg, *args, **kwargs)

    def warning(self, key: str, msg: str, *args: Any, **kwargs: Any) -> bool:
        kwargs.setdefault("stacklevel", 3)
        return self.log(logging.WARNING, key, msg, *args, **kwargs)

    def error(self, key: str, msg: str, *args: Any, **kwargs: Any) -> bool:
        kwargs.setdefault("stacklevel", 3)
        return self.log(logging.ERROR, key, msg, *args, **kwargs)

    def flush(self, level: int = logging.WARNING) -> int:
        """Report pending suppressed counts (e.g. at shutdown); returns how many keys had some."""
        n = 0
        for key, st in list(self._state.items()):
            if st[1]:
                self.logger.log(level, "%d similar messages suppressed", st[1], extra={"key": key, "suppressed": st[1]})
                st[1] = 0
                n += 1
        return n
