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
import os
import socket
import threading
import time
from typing import Any, Callable

log = logging.getLogger("rigfast.cluster.kafka")

POLL_TIMEOUT_S = 0.1
BATCH_MAX = 1000
RETRY_S = 1.0
_CONSUMER_ONLY = ("group.id", "enable.auto.commit", "enable.auto.offset.store", "enable.partition.eof",
                  "auto.offset.reset", "topic.metadata.refresh.interval.ms")

Record = tuple[str, Any, Any, dict, int]  # topic, key, value, headers, timestamp ms


def base_config(cfg: Any) -> dict[str, Any]:
    """Connection/security properties, shared with the Kafka event source."""
    try:
        from rigfast.sources.kafka import librdkafka_config
    except ImportError:  # pragma: no cover - the event source module is always there in a release
        return {"bootstrap.servers": ",".join(cfg.kafka_brokers), "group.id": f"rigfast-cluster-{os.getpid()}"}
    return librdkafka_config(cfg)


class KafkaLink:
    def __init__(self, cfg: Any, loop: asyncio.AbstractEventLoop, on_records: Callable[[list[Record]], None]):
        self.cfg = cfg
        self.loop = loop
        self.on_records = on_records
        self.cluster_topic = cfg.cluster_topic
        self.blacklist_topic = cfg.blacklist_topic
        conf = base_config(cfg)
        conf.update({
            "client.id": f"rigfast-cluster-{socket.gethostname()}-{os.getpid()}",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 20,
            "fetch.min.bytes": 1,
            "log_level": 3,
        })
        self.consumer_conf = conf
        self.producer_conf = {k: v for k, v in conf.items() if k not in _CONSUMER_ONLY}
        self.producer_conf.update({"linger.ms": 1, "acks": "1", "message.timeout.ms": 10000,
                                   "queue.buffering.max.kbytes": 65536})
        self.producer: Any = None
        self.state = "connecting"
        self.ready = False
        self.last_error: str | None = None
        self.start_ms = int(time.time() * 1000)
        self.produce_errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- loop side --------------------------------------------------------------
    def start(self) -> None:
        from confluent_kafka import Producer

        self.producer = Producer(dict(self.producer_conf, error_cb=self._on_error))
        self._thread = threading.Thread(target=self._run, name="rigfast-cluster-kafka", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            await self.loop.run_in_executor(None, self._thread.join, 5.0)
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
        log.debug("cluster: Kafka: %s", err.str())

    def _run(self) -> None:
        from confluent_kafka import Consumer

        while not self._stop.is_set():
            consumer = None
            try:
                self._create_topics()
                consumer = Consumer(dict(self.consumer_conf, error_cb=self._on_error))
                self._consume(consumer)
            except Exception as exc:  # noqa: BLE001 - recreate and go on
                self.last_error = str(exc)
                self.state = "down"
                log.warning("cluster: Kafka link failed, retrying in %.0fs: %s", RETRY_S, exc)
            finally:
                if consumer is not None:
                    try:
                        consumer.close()
                    except Exception:  # noqa: BLE001
                        pass
            self._stop.wait(RETRY_S)

    def _create_topics(self) -> None:
        from confluent_kafka import KafkaError
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({k: v for k, v in self.producer_conf.items() if k not in ("linger.ms", "acks", "message.timeout.ms", "queue.buffering.max.kbytes")})
        md = admin.list_topics(timeout=5.0)
        wanted = []
        if self.cluster_topic not in md.topics:
            wanted.append(NewTopic(self.cluster_topic, num_partitions=1, replication_factor=1))
        if self.blacklist_topic not in md.topics:
            wanted.append(NewTopic(self.blacklist_topic, num_partitions=1, replication_factor=1,
                                   config={"cleanup.policy": "compact"}))
        if not wanted:
            return
        for topic, fut in admin.create_topics(wanted, operation_timeout=5.0).items():
            try:
                fut.result(timeout=10.0)
                log.info("cluster: created Kafka topic %s", topic)
            except Exception as exc:  # noqa: BLE001
                err = exc.args[0] if exc.args else None
                if hasattr(err, "code") and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise

    def _partitions(self, c: Any, topic: str) -> list[int]:
        deadline = time.monotonic() + 10.0
        while not self._stop.is_set() and time.monotonic() < deadline:
            md = c.list_topics(topic, timeout=2.0)
            t = md.topics.get(topic)
            if t is not None and t.error is None and t.partitions:
                return sorted(t.partitions)
            self._stop.wait(0.1)
        raise RuntimeError(f"topic {topic} has no partitions in the metadata")

    def _consume(self, c: Any) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        assign = []
        blacklist_end: dict[int, int] = {}
        for p in self._partitions(c, self.cluster_topic):
            lo, hi = c.get_watermark_offsets(TopicPartition(self.cluster_topic, p), timeout=5.0, cached=False)
            assign.append(TopicPartition(self.cluster_topic, p, hi))
        for p in self._partitions(c, self.blacklist_topic):
            lo, hi = c.get_watermark_offsets(TopicPartition(self.blacklist_topic, p), timeout=5.0, cached=False)
            if hi > lo:
                blacklist_end[p] = hi
            assign.append(TopicPartition(self.blacklist_topic, p, OFFSET_BEGINNING))
        c.assign(assign)
        self.state = "connected"
        if not blacklist_end:
            self.ready = True
        log.info("cluster: reading %s from its end and %s from its beginning", self.cluster_topic, self.blacklist_topic)
        producer = self.producer
        while not self._stop.is_set():
            producer.poll(0)
            first = c.poll(POLL_TIMEOUT_S)
            if first is None:
                continue
            msgs = [first] + c.consume(BATCH_MAX - 1, 0)
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
