"""The open-file limit: every connection is a file descriptor."""

from __future__ import annotations

import logging

log = logging.getLogger("rigfast")

# descriptors a worker needs besides frontend connections: listeners, bus, Kafka, logs, imports
RESERVED_FDS = 128


def raise_nofile() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the resulting soft limit."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


def capacity(nofile: int) -> int:
    """Frontend connections one process can hold with ``nofile`` descriptors."""
    return max(nofile - RESERVED_FDS, 0)


def max_connections(cfg) -> int:
    """Public connections one worker accepts before answering 503: RIGFAST_MAX_CONNECTIONS, or
    what the open-file limit holds after the reserve (so the internal API always has descriptors)."""
    if cfg.max_connections > 0:
        return cfg.max_connections
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except ImportError:  # pragma: no cover - not POSIX
        return 1 << 30
    if soft == resource.RLIM_INFINITY:
        return 1 << 30
    return max(capacity(soft), 1)
