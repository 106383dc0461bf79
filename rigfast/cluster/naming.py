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
    """One event reader process per node with several workers (see cluster/reader.py): it routes
    every event between the node's workers, and reads Kafka for all of them."""
    return max(cfg.workers, cfg.worker_count) > 1


def reader_reads_sources(cfg: Any) -> bool:
    """The node's reader consumes ``KAFKA_SOURCE_TOPICS`` (no worker does)."""
    return reader_in_use(cfg) and bool(cfg.kafka_brokers) and bool(cfg.kafka_source_topics)


def reader_reads_cluster_topic(cfg: Any) -> bool:
    """The node's reader consumes the cluster topic (no worker does)."""
    return reader_in_use(cfg) and bool(cfg.kafka_brokers) and bool(cfg.cluster_topic)
