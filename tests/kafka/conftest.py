"""Fixtures for the Kafka source tests: one Tansu broker per session, helpers to drive a KafkaSource."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid

import orjson
import pytest

from rigfast import config

pytestmark = pytest.mark.kafka

_topic_ids = itertools.count()


@pytest.fixture
def topic(tansu):
    """A fresh single-partition topic, so tests never see each other's events."""
    name = f"rig-test-{next(_topic_ids)}-{uuid.uuid4().hex[:6]}"
    tansu.create_topics([name], partitions=1)
    return name


@pytest.fixture
def runner():
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as r:
        yield r


def make_cfg(brokers: str, topics: str, **extra: str):
    env = {"KAFKA_BROKERS": brokers, "KAFKA_SOURCE_TOPICS": topics, "KAFKA_RESTART_DELAY_MS": "200"}
    env.update(extra)
    return config.load(env)


def ce(i: int, etype: str = "com.example.test", **more) -> dict:
    return {"specversion": "1.0", "type": etype, "source": "/tests", "id": f"ev-{i}", "data": {"i": i, **more}}


def producer(bootstrap: str, **extra):
    from confluent_kafka import Producer

    conf = {"bootstrap.servers": bootstrap, "linger.ms": 5, "log_level": 0}
    conf.update(extra)
    return Producer(conf)


def produce_all(bootstrap: str, topic: str, records, one_batch_each: bool = False, **extra) -> None:
    """records: iterable of (value, headers); one_batch_each flushes after every record."""
    p = producer(bootstrap, **extra)
    for value, headers in records:
        p.produce(topic, value, headers=headers)
        if one_batch_each:
            assert p.flush(10) == 0
    assert p.flush(20) == 0


def structured(n: int, start: int = 0):
    return [(orjson.dumps(ce(i)), None) for i in range(start, start + n)]


class Collector:
    """publish_batch target: collects events, wakes a waiter when enough arrived."""

    def __init__(self) -> None:
        self.events: list = []
        self.calls = 0
        self._want = 0
        self._enough: asyncio.Event | None = None

    def publish_batch(self, events: list) -> None:
        self.calls += 1
        self.events.extend(events)
        if self._enough is not None and len(self.events) >= self._want:
            self._enough.set()

    async def wait_for(self, n: int, timeout: float = 15.0) -> None:
        if len(self.events) >= n:
            return
        self._want = n
        self._enough = asyncio.Event()
        try:
            await asyncio.wait_for(self._enough.wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"only {len(self.events)} of {n} events after {timeout}s") from None
        finally:
            self._enough = None

    def ids(self) -> list[str]:
        return [e.id for e in self.events]


async def wait_state(source, state: str, timeout: float = 15.0) -> None:
    """Wait until health() reports `state` (polled; bounded)."""
    deadline = time.monotonic() + timeout
    while source.health()["state"] != state:
        if time.monotonic() > deadline:
            raise AssertionError(f"state {source.health()} never became {state!r} in {timeout}s")
        await asyncio.sleep(0.02)
