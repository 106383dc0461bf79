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
import threading
from typing import Any, Callable

from rigfast.kafka import clients

log = logging.getLogger("rigfast.proxy.kafka")

POLL_S = 0.1
BATCH_MAX = 500

# on_response(correlation, status_or_None, value, headers)
OnResponse = Callable[[str, "int | None", bytes, dict], None]


class ProxyKafka:
    def __init__(self, cfg: Any, loop: asyncio.AbstractEventLoop, on_response: OnResponse):
        self.cfg = cfg
        self.loop = loop
        self.on_response = on_response
        self.topics = list(cfg.proxy_kafka_response_topics)
        self.consumer_conf = clients.consumer_config(cfg, "proxy")
        self.consumer_conf.update({"fetch.wait.max.ms": 20, "fetch.min.bytes": 1})
        self.producer_conf = clients.producer_config(cfg, "proxy")
        self.producer: Any = None
        self.consuming = False
        self.ready: asyncio.Future | None = None
        self.last_error: str | None = None
        self._consumer = clients.ConsumerThread("rigfast-proxy-responses", self.consumer_conf, self._consume,
                                                restart_delay_s=1.0, logger=log, on_failure=self._on_failure,
                                                error_cb=self._on_error)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start_producer(self) -> None:
        if self.producer is not None:
            return
        from confluent_kafka import Producer

        self.producer = Producer(clients.with_logging(self.producer_conf, self._on_error))
        t = threading.Thread(target=self._serve_producer, name="rigfast-proxy-producer", daemon=True)
        t.start()
        self._threads.append(t)

    def start_consumer(self) -> None:
        if self.consuming or not self.topics:
            return
        self.consuming = True
        self.ready = self.loop.create_future()
        self._consumer.start()

    async def stop(self) -> None:
        self._stop.set()
        await self._consumer.stop()
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
        clients.BROKERS.on_error(err)

    def _on_failure(self, exc: BaseException) -> None:
        self.last_error = str(exc)

    def _serve_producer(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(POLL_S)

    def _assign(self, c: Any, stopping: threading.Event) -> None:
        admin = clients.admin(self.cfg)
        admin.ensure_topics([(t, 1, None) for t in self.topics], logger=log)
        parts = admin.wait_partitions(self.topics, stop=stopping)
        assign = []
        for topic in self.topics:
            assign.extend(clients.end_offsets(c, topic, parts[topic]))
        c.assign(assign)

    def _consume(self, c: Any, stopping: threading.Event) -> None:
        self._assign(c, stopping)
        log.info("proxy: reading responses from %s", ", ".join(self.topics))
        clients.BROKERS.came_up()
        self.loop.call_soon_threadsafe(self._set_ready)
        while not stopping.is_set():
            for m in clients.poll_batch(c, BATCH_MAX, POLL_S):
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
