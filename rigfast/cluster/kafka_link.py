"""Between nodes: the cluster topic and the compacted blacklist topic on Kafka.

How this works: every worker of every node has one producer and one
consumer thread; on a node with a reader (several workers) the reader
consumes the cluster topic for the node and the workers only the blacklist
topic (``read_cluster``, ``read_blacklist``). The consumer ``assign()``s
every partition itself (no consumer group: no join round, no rebalances, no
commits):

- the cluster topic (``RIGFAST_CLUSTER_TOPIC``) from its end, as it is when
  the worker starts. It carries event batches submitted over HTTP on some
  node, and control messages (requests and replies) addressed to one
  ``(node, worker)``. Headers: ``rf-kind`` (``ev``/``req``/``rep``/``apis``),
  ``rf-from`` and, for control messages, ``rf-to`` (``<node>.w<i>``); the
  key is the sending node (``ev``, ``apis``) or the node addressed (``req``,
  ``rep``). With ``node`` set (the reader) the consumer thread drops, by
  key and kind alone, event batches from its own node and control messages
  for other nodes: they cost the loop nothing and nobody decodes them. A
  lone worker ignores its own event batches and control messages not
  addressed to it. Records written before the consumer started (by
  timestamp) are skipped too: Tansu may report an end offset that lies
  before the true end, which would replay old records. ``start`` (the
  reader's saved positions) starts partitions there instead of at the end,
  without that check.
- the blacklist topic (``RIGFAST_BLACKLIST_TOPIC``, compacted, key = session
  id, value = ``{"expires_at": <epoch seconds>}``) from its beginning, so a
  (re)started node knows every ban still in force. ``ready`` turns true once
  it has read up to the end the topic had at start.

Both topics are created when missing (the blacklist one with
``cleanup.policy=compact``). The thread hands each batch to the loop with
one ``call_soon_threadsafe``; it also serves the producer's callbacks. The
loop can hold it back (``pause``/``resume``: the node's reader while a
worker is behind on its link).
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
CONTROL_KINDS = (b"req", b"rep")  # records addressed to one node (key); the others' key is the sender
BATCH_MAX = 1000
RETRY_S = 1.0

Record = tuple[str, Any, Any, dict, int, int, int]  # topic, key, value, headers, timestamp ms, partition, offset


class KafkaLink:
    def __init__(self, cfg: Any, loop: asyncio.AbstractEventLoop, on_records: Callable[[list[Record]], None],
                 read_cluster: bool = True, read_blacklist: bool = True, node: str | None = None,
                 start: dict[int, int] | None = None, produce: bool = True):
        self.cfg = cfg
        self.loop = loop
        self.on_records = on_records
        self.cluster_topic = cfg.cluster_topic
        self.blacklist_topic = cfg.blacklist_topic
        self.read_cluster = read_cluster
        self.read_blacklist = read_blacklist
        self.topics = [t for t, on in ((self.cluster_topic, read_cluster), (self.blacklist_topic, read_blacklist)) if on]
        self.node = node.encode() if node else None
        self.positions = start if start is not None else {}  # cluster-topic partition -> next offset
        self.with_producer = produce
        self.on_ready: Callable[[], None] | None = None  # told once, when ``ready`` turns true (loop thread)
        self.consumer_conf = clients.consumer_config(cfg, "cluster")
        self.consumer_conf.update({"fetch.wait.max.ms": 20, "fetch.min.bytes": 1})
        self.producer_conf = clients.producer_config(cfg, "cluster", **{"queue.buffering.max.kbytes": 65536})
        self.producer: Any = None
        self.state = "connecting"
        self.ready = False
        self.last_error: str | None = None
        self.start_ms = int(time.time() * 1000)
        self.produce_errors = 0
        self.skipped = 0  # cluster-topic records dropped by key and kind, unread (``node`` set)
        self._consumer = clients.ConsumerThread("rigfast-cluster-kafka", self.consumer_conf, self._consume,
                                                restart_delay_s=RETRY_S, logger=log, before=self._create_topics,
                                                on_failure=self._on_failure, error_cb=self._on_error)

    # -- loop side --------------------------------------------------------------
    def start(self) -> None:
        from confluent_kafka import Producer

        if self.with_producer:
            self.producer = Producer(clients.with_logging(self.producer_conf, self._on_error))
        self._consumer.start()

    def pause(self) -> None:
        """Stop taking records until :meth:`resume` (back-pressure; batches already handed to the loop still come)."""
        self._consumer.pause()

    def resume(self) -> None:
        self._consumer.resume()

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
        return {"state": self.state, "ready": self.ready, "topics": self.topics,
                "last_error": self.last_error, "produce_errors": self.produce_errors, "skipped": self.skipped}

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

        parts = clients.admin(self.cfg).wait_partitions(self.topics, stop=stopping)
        assign = []
        resumed: set[int] = set()  # cluster-topic partitions started at a saved position: no timestamp check
        if self.read_cluster:
            start = dict(self.positions)
            at_end = [p for p in parts[self.cluster_topic] if p not in start]
            assign = clients.end_offsets(c, self.cluster_topic, at_end)
            self.positions.update({tp.partition: tp.offset for tp in assign})  # where we start: resumable from here
            for p in parts[self.cluster_topic]:
                if p in start:
                    assign.append(TopicPartition(self.cluster_topic, p, start[p]))
                    resumed.add(p)
        blacklist_end: dict[int, int] = {}
        for p in parts.get(self.blacklist_topic, ()) if self.read_blacklist else ():
            lo, hi = c.get_watermark_offsets(TopicPartition(self.blacklist_topic, p), timeout=5.0, cached=False)
            if hi > lo:
                blacklist_end[p] = hi
            assign.append(TopicPartition(self.blacklist_topic, p, OFFSET_BEGINNING))
        c.assign(assign)
        self.state = "connected"
        clients.BROKERS.came_up()
        if not blacklist_end:
            self.loop.call_soon_threadsafe(self._set_ready)
        log.info("cluster: reading %s", ", ".join(
            [f"{self.cluster_topic} from {'saved positions' if resumed else 'its end'}"] * self.read_cluster
            + [f"{self.blacklist_topic} from its beginning"] * self.read_blacklist))
        producer = self.producer
        node = self.node
        while not stopping.is_set():
            if producer is not None:
                producer.poll(0)
            if self._consumer.held():  # paused by the loop (the node reader: a worker is behind)
                continue
            msgs = clients.poll_batch(c, BATCH_MAX, POLL_TIMEOUT_S)
            if not msgs:
                continue
            batch: list[Record] = []
            for m in msgs:
                if m.error() is not None:
                    self.last_error = m.error().str()
                    continue
                topic = m.topic()
                headers = dict(m.headers() or ())
                if topic == self.blacklist_topic:
                    if blacklist_end:
                        end = blacklist_end.get(m.partition())
                        if end is not None and m.offset() + 1 >= end:
                            del blacklist_end[m.partition()]
                else:
                    if m.partition() not in resumed:
                        ts_type, ts = m.timestamp()
                        if ts_type and ts < self.start_ms:
                            continue
                    if node is not None and (m.key() == node) != (headers.get("rf-kind") in CONTROL_KINDS):
                        self.skipped += 1  # our own node's events, or a control message for another node
                        continue
                batch.append((topic, m.key(), m.value(), headers, m.timestamp()[1], m.partition(), m.offset()))
            if batch:
                try:
                    self.loop.call_soon_threadsafe(self.on_records, batch)
                except RuntimeError:  # the loop is closed: we are stopping
                    return
            if not blacklist_end and not self.ready:
                # after the batch above: the loop has applied the whole blacklist when it sees ready
                self.loop.call_soon_threadsafe(self._set_ready)

    def _set_ready(self) -> None:
        if not self.ready:
            self.ready = True
            if self.on_ready is not None:
                self.on_ready()
