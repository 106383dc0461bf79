"""Between nodes: the cluster topic and the compacted blacklist topic on Kafka.

How this works: every worker of every node has one producer and one
consumer thread. The consumer ``assign()``s every partition itself (no
consumer group: no join round, no rebalances, no commits):

- the cluster topic (``RIGFAST_CLUSTER_TOPIC``) from its end, as it is when
  the worker starts. It carries event batches submitted over HTTP on some
  node, and control messages (requests and replies) addressed to one
  ``(node, worker)``. Headers: ``rf-kind`` (``ev``/``req``/``rep``),
  ``rf-from`` and, for control messages, ``rf-to`` (``<node>.w<i>``).
  A worker ignores event batches from its own node (they came over the bus)
  and control messages not addressed to it. Records written before the
  worker started (by timestamp) are skipped too: Tansu may report an end
  offset that lies before the true end, which would replay old records.
- the blacklist topic (``RIGFAST_BLACKLIST_TOPIC``, compacted, key = session
  id, value = ``{"expires_at": <epoch seconds>}``) from its beginning, so a
  (re)started node knows every ban still in force. ``ready`` turns true once
  it has read up to the end the topic had at start.

Both topics are created when missing (the blacklist one with
``cleanup.policy=compact``). The thread hands each batch to the loop with
one ``call_soon_threadsafe``; it also serves the producer's callbacks.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable

from rigfast.kafka import clients

log = logging.getLogger("rigfast.cluster.kafka")

POLL_TIMEOUT_S = 0.1
BATCH_MAX = 1000
RETRY_S = 1.0

Record = tuple[str, Any, Any, dict, int]  # topic, key, value, headers, timestamp ms


class KafkaLink:
    def __init__(self, cfg: Any, loop: asyncio.AbstractEventLoop, on_records: Callable[[list[Record]], None]):
        self.cfg = cfg
        self.loop = loop
        self.on_records = on_records
        self.cluster_topic = cfg.cluster_topic
        self.blacklist_topic = cfg.blacklist_topic
        self.consumer_conf = clients.consumer_config(cfg, "cluster")
        self.consumer_conf.update({"fetch.wait.max.ms": 20, "fetch.min.bytes": 1})
        self.producer_conf = clients.producer_config(cfg, "cluster", **{"queue.buffering.max.kbytes": 65536})
        self.producer: Any = None
        self.state = "connecting"
        self.ready = False
        self.last_error: str | None = None
        self.start_ms = int(time.time() * 1000)
        self.produce_errors = 0
        self._consumer = clients.ConsumerThread("rigfast-cluster-kafka", self.consumer_conf, self._consume,
                                                restart_delay_s=RETRY_S, logger=log, before=self._create_topics,
                                                on_failure=self._on_failure, error_cb=self._on_error)

    # -- loop side --------------------------------------------------------------
    def start(self) -> None:
        from confluent_kafka import Producer

        self.producer = Producer(clients.with_logging(self.producer_conf, self._on_error))
        self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()
        if self.producer is not None:
            await self.loop.run_in_executor(None, self.producer.flush, 2.0)

    def produce(self, topic: str, value: bytes | None, key: bytes | None = None, headers: list | None = None) -> bool:
        try:
            self.producer.produce(topic, value, key=key, headers=headers, on_delivery=self._delivered)
            return True
        except BufferError:
            self.produce_errors += 1
            log.error("cluster: Kafka producer queue full; message to %s dropped", topic)
            return False

    def health(self) -> dict:
        return {"state": self.state, "ready": self.ready, "topics": [self.cluster_topic, self.blacklist_topic],
                "last_error": self.last_error, "produce_errors": self.produce_errors}

    # -- thread side ------------------------------------------------------------
    def _delivered(self, err, msg) -> None:
        if err is not None:
            self.produce_errors += 1
            self.last_error = str(err)
            log.warning("cluster: Kafka delivery to %s failed: %s", msg.topic(), err)

    def _on_error(self, err) -> None:
        self.last_error = err.str()
        clients.BROKERS.on_error(err)

    def _on_failure(self, exc: BaseException) -> None:
        self.last_error = str(exc)
        self.state = "down"

    def _create_topics(self) -> None:
        clients.admin(self.cfg).ensure_topics([
            (self.cluster_topic, 1, None),
            (self.blacklist_topic, 1, {"cleanup.policy": "compact"}),
        ], logger=log)

    def _consume(self, c: Any, stopping: threading.Event) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        parts = clients.admin(self.cfg).wait_partitions([self.cluster_topic, self.blacklist_topic], stop=stopping)
        assign = clients.end_offsets(c, self.cluster_topic, parts[self.cluster_topic])
        blacklist_end: dict[int, int] = {}
        for p in parts[self.blacklist_topic]:
            lo, hi = c.get_watermark_offsets(TopicPartition(self.blacklist_topic, p), timeout=5.0, cached=False)
            if hi > lo:
                blacklist_end[p] = hi
            assign.append(TopicPartition(self.blacklist_topic, p, OFFSET_BEGINNING))
        c.assign(assign)
        self.state = "connected"
        clients.BROKERS.came_up()
        if not blacklist_end:
            self.ready = True
        log.info("cluster: reading %s from its end and %s from its beginning", self.cluster_topic, self.blacklist_topic)
        producer = self.producer
        while not stopping.is_set():
            producer.poll(0)
            msgs = clients.poll_batch(c, BATCH_MAX, POLL_TIMEOUT_S)
            if not msgs:
                continue
            batch: list[Record] = []
            for m in msgs:
                if m.error() is not None:
                    self.last_error = m.error().str()
                    continue
                topic = m.topic()
                if topic == self.blacklist_topic and blacklist_end:
                    end = blacklist_end.get(m.partition())
                    if end is not None and m.offset() + 1 >= end:
                        del blacklist_end[m.partition()]
                elif topic == self.cluster_topic:
                    ts_type, ts = m.timestamp()
                    if ts_type and ts < self.start_ms:
                        continue
                batch.append((topic, m.key(), m.value(), dict(m.headers() or ()), m.timestamp()[1]))
            if batch:
                try:
                    self.loop.call_soon_threadsafe(self.on_records, batch)
                except RuntimeError:  # the loop is closed: we are stopping
                    return
            if not blacklist_end and not self.ready:
                # after the batch above: the loop has applied the whole blacklist when it sees ready
                self.loop.call_soon_threadsafe(self._set_ready)

    def _set_ready(self) -> None:
        self.ready = True
