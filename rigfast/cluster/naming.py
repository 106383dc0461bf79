"""Names a node needs before anything else loads: node id, runtime folder, whether clustering is on."""

from __future__ import annotations

import os
import secrets
import tempfile
from typing import Any


def default_node_id() -> str:
    return "n" + secrets.token_hex(3)


def runtime_dir(cfg: Any, node: str) -> str:
    if cfg.cluster_dir:
        return cfg.cluster_dir
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    return os.path.join(base, f"rigfast-{os.getuid()}-{node}")


def enabled(cfg: Any) -> bool:
    return cfg.worker_count > 1 or bool(cfg.kafka_brokers and cfg.cluster_topic)


def reader_in_use(cfg: Any) -> bool:
    """One event reader process per node: several workers and Kafka source topics (see cluster/reader.py)."""
    return max(cfg.workers, cfg.worker_count) > 1 and bool(cfg.kafka_brokers) and bool(cfg.kafka_source_topics)
