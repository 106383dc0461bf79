"""Kafka for the reverse proxy: producing requests to endpoint topics, reading correlated responses.

How this works: one producer (its delivery callbacks served by a small
thread that polls it) and, when a ``response_from: kafka`` endpoint exists,
one consumer thread that ``assign()``s every partition of
``PROXY_KAFKA_RESPONSE_TOPICS`` from its end (no consumer group). Every
worker of every node reads every response record and keeps the ones whose
``rig-correlation`` it is waiting for, so the backend may answer on any
partition and the answer reaches the worker holding the client's request
whatever node it runs on. Started lazily, when the first API that needs it
is loaded.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from typing import Any, Callable

log = logging.getLogger("rigfast.proxy.kafka")

POLL_S = 0.1
_CONSUMER_ONLY = ("group.id", "enable.auto.commit", "enable.auto.offset.store", "enable.partition.eof",
                  "auto.offset.reset", "topic.metadata.refresh.interval.ms")

# on_response(correlation, status_or_None, value, headers)
OnResponse = Callable[[str, "int | None", bytes, dict], None]


def _conf(cfg: Any) -> dict:
    from rigfast.sources.kafka import librdkafka_config

    conf = librdkafka_config(cfg)
    conf["client.id"] = f"rigfast-proxy-{socket.gethostname()}-{os.getpid()}"
    conf["log_level"] = 3
    return conf


class ProxyKafka:
    def __init__(self, cfg: Any, loop: asyncio.AbstractEventLoop, on_response: OnResponse):
        self.cfg = cfg
        self.loop = loop
        self.on_response = on_response
        self.topics = list(cfg.proxy_kafka_response_topics)
        conf = _conf(cfg)
        self.consumer_conf = dict(conf, **{"fetch.wait.max.ms": 20, "fetch.min.bytes": 1})
        self.producer_conf = {k: v for k, v in conf.items() if k not in _CONSUMER_ONLY}
        self.producer_conf.update({"linger.ms": 1, "acks": "1", "message.timeout.ms": 10000})
        self.producer: Any = None
        self.consuming = False
        self.ready: asyncio.Future | None = None
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start_producer(self) -> None:
        if self.producer is not None:
            return
        from confluent_kafka import Producer

        self.producer = Producer(dict(self.producer_conf, error_cb=self._on_error))
        t = threading.Thread(target=self._serve_producer, name="rigfast-proxy-producer", daemon=True)
        t.start()
        self._threads.append(t)

    def start_consumer(self) -> None:
        if self.consuming or not self.topics:
            return
        self.consuming = True
        self.ready = self.loop.create_future()
        t = threading.Thread(target=self._consume_forever, name="rigfast-proxy-responses", daemon=True)
        t.start()
        self._threads.append(t)

    async def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            if t.is_alive():
                await self.loop.run_in_executor(None, t.join, 5.0)
        if self.producer is not None:
            await self.loop.run_in_executor(None, self.producer.flush, 2.0)

    def produce(self, topic: str, value: bytes, headers: list, key: bytes | None = None) -> asyncio.Future:
        """Produce one record; the future resolves when the broker acknowledged it (or fails)."""
        fut = self.loop.create_future()
        loop = self.loop

        def delivered(err, msg) -> None:
            def settle() -> None:
                if fut.done():
                    return
                if err is not None:
                    fut.set_exception(RuntimeError(str(err)))
                else:
                    fut.set_result(None)
            loop.call_soon_threadsafe(settle)

        try:
            self.producer.produce(topic, value, key=key, headers=headers, on_delivery=delivered)
        except BufferError:
            fut.set_exception(RuntimeError("Kafka producer queue full"))
        except Exception as exc:  # noqa: BLE001 - KafkaException: unknown topic and the like
            fut.set_exception(RuntimeError(str(exc)))
        return fut

    def health(self) -> dict:
        return {"producer": self.producer is not None, "consuming": self.consuming,
                "ready": bool(self.ready and self.ready.done()), "last_error": self.last_error}

    # -- threads ----------------------------------------------------------------------
    def _on_error(self, err) -> None:
        self.last_error = err.str()
        log.debug("proxy: Kafka: %s", err.str())

    def _serve_producer(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(POLL_S)

    def _consume_forever(self) -> None:
        from confluent_kafka import Consumer

        while not self._stop.is_set():
            c = None
            try:
                c = Consumer(dict(self.consumer_conf, error_cb=self._on_error))
                self._consume(c)
            except Exception as exc:  # noqa: BLE001 - recreate and go on
                self.last_error = str(exc)
                log.warning("proxy: Kafka response consumer failed, retrying: %s", exc)
            finally:
                if c is not None:
                    try:
                        c.close()
                    except Exception:  # noqa: BLE001
                        pass
            self._stop.wait(1.0)

    def _assign(self, c: Any) -> None:
        from confluent_kafka import TopicPartition
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({k: v for k, v in self.producer_conf.items() if k not in ("linger.ms", "acks", "message.timeout.ms")})
        md = admin.list_topics(timeout=5.0)
        missing = [t for t in self.topics if t not in md.topics]
        if missing:
            for t, fut in admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in missing]).items():
                try:
                    fut.result(timeout=10.0)
                    log.info("proxy: created Kafka topic %s", t)
                except Exception:  # noqa: BLE001 - exists already (a race with another worker)
                    pass
        assign = []
        deadline = time.monotonic() + 10.0
        for topic in self.topics:
            while True:
                t = c.list_topics(topic, timeout=2.0).topics.get(topic)
                if t is not None and t.error is None and t.partitions:
                    break
                if time.monotonic() > deadline or self._stop.is_set():
                    raise RuntimeError(f"response topic {topic} has no partitions")
                self._stop.wait(0.1)
            for p in sorted(t.partitions):
                _, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=5.0, cached=False)
                assign.append(TopicPartition(topic, p, hi))
        c.assign(assign)

    def _consume(self, c: Any) -> None:
        self._assign(c)
        log.info("proxy: reading responses from %s", ", ".join(self.topics))
        self.loop.call_soon_threadsafe(self._set_ready)
        while not self._stop.is_set():
            first = c.poll(POLL_S)
            if first is None:
                continue
            for m in [first] + c.consume(499, 0):
                if m.error() is not None:
                    self.last_error = m.error().str()
                    continue
                headers = {}
                for k, v in m.headers() or ():
                    headers[k.lower()] = v
                corr = headers.get("rig-correlation")
                code = headers.get("rig-response-code")
                status = None
                if code is not None:
                    try:
                        status = int(code)
                    except ValueError:
                        status = None
                value = m.value() or b""
                try:
                    self.loop.call_soon_threadsafe(
                        self.on_response, corr.decode("latin-1") if corr else None, status, value, headers)
                except RuntimeError:  # loop closed: stopping
                    return

    def _set_ready(self) -> None:
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(None)
