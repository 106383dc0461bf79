"""KafkaSource against a real Tansu broker on a real uvloop loop."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest

from rigfast import metrics
from rigfast.sources import kafka
from rigfast.sources.kafka import KafkaSource

from .conftest import Collector, ce, make_cfg, produce_all, structured, wait_state

pytestmark = pytest.mark.kafka


async def _produce(*args, **kw) -> None:
    await asyncio.get_running_loop().run_in_executor(None, lambda: produce_all(*args, **kw))


async def _started(cfg) -> tuple[KafkaSource, Collector]:
    col = Collector()
    src = KafkaSource(cfg, asyncio.get_running_loop(), col.publish_batch)
    src.start()
    await wait_state(src, "connected")
    return src, col


def test_structured_mode(tansu, topic, runner):
    """Structured records arrive as Events, in order, with their JSON kept as sent."""

    async def main():
        src, col = await _started(make_cfg(tansu.bootstrap, topic))
        try:
            await _produce(tansu.bootstrap, topic, structured(50))
            await col.wait_for(50)
            assert col.ids() == [f"ev-{i}" for i in range(50)]
            e = col.events[7]
            assert e.type == "com.example.test"
            assert orjson.loads(e.json) == ce(7)
            assert e.obj["data"] == {"i": 7}
        finally:
            await src.stop()

    runner.run(main())


def test_binary_mode(tansu, topic, runner):
    """Binary records (ce_ headers + content-type) become Events with data from the value."""

    async def main():
        src, col = await _started(make_cfg(tansu.bootstrap, topic))
        try:
            headers = [
                ("content-type", b"application/json"),
                ("ce_specversion", b"1.0"),
                ("ce_type", b"com.example.binary"),
                ("ce_source", b"/bin"),
                ("ce_id", b"b-1"),
                ("ce_userid", b"alice"),
            ]
            structured_ct = [("content-type", b"application/cloudevents+json; charset=utf-8")]
            records = [
                (b'{"n": 1}', headers),
                (orjson.dumps(ce(2)), structured_ct),
            ]
            await _produce(tansu.bootstrap, topic, records)
            await col.wait_for(2)
            b, s = col.events
            assert (b.type, b.id) == ("com.example.binary", "b-1")
            assert b.obj["data"] == {"n": 1}
            assert b.obj["userid"] == "alice"
            assert b.obj["datacontenttype"] == "application/json"
            assert (s.type, s.id) == ("com.example.test", "ev-2")
        finally:
            await src.stop()

    runner.run(main())


def test_garbage_is_counted_and_skipped(tansu, topic, runner):
    """Invalid records are counted and skipped; all valid ones arrive in order."""
    garbage = [
        (b"not json", None),
        (b"[1,2]", None),
        (b'{"specversion":"1.0","type":"x","id":"1"}', None),  # no source
        (b"", None),
        (b"{}", [("content-type", b"application/json"), ("ce_type", b"x")]),  # binary, no specversion
        (b'{"specversion":"9.9","type":"x","id":"1","source":"s"}', None),
    ]

    async def main():
        src, col = await _started(make_cfg(tansu.bootstrap, topic))
        before = metrics.EVENTS_INVALID.get("kafka")
        try:
            records = []
            good = structured(30)
            for i, rec in enumerate(good):
                records.append(rec)
                if i % 5 == 0:
                    records.append(garbage[(i // 5) % len(garbage)])
            await _produce(tansu.bootstrap, topic, records)
            await col.wait_for(30)
            assert col.ids() == [f"ev-{i}" for i in range(30)]
            assert metrics.EVENTS_INVALID.get("kafka") - before == 6
        finally:
            await src.stop()

    runner.run(main())


def test_pretty_printed_json_becomes_one_line(tansu, topic, runner):
    """A structured value with line breaks is re-serialized so event.json is one line."""

    async def main():
        src, col = await _started(make_cfg(tansu.bootstrap, topic))
        try:
            pretty = orjson.dumps(ce(1), option=orjson.OPT_INDENT_2)
            assert b"\n" in pretty
            await _produce(tansu.bootstrap, topic, [(pretty, None)])
            await col.wait_for(1)
            assert b"\n" not in col.events[0].json
            assert orjson.loads(col.events[0].json) == ce(1)
        finally:
            await src.stop()

    runner.run(main())


def test_no_replay_on_start(tansu, topic, runner):
    """A source started after events were produced delivers only the newer ones."""

    async def main():
        # one record batch each: Tansu's ListOffsets counts the last batch as one record
        await _produce(tansu.bootstrap, topic, structured(20), one_batch_each=True)
        src, col = await _started(make_cfg(tansu.bootstrap, topic))
        try:
            await _produce(tansu.bootstrap, topic, structured(5, start=100))
            await col.wait_for(5)
            assert col.ids() == [f"ev-{i}" for i in range(100, 105)]
        finally:
            await src.stop()

    runner.run(main())


def test_topic_created_later_is_read_from_its_start(tansu, runner, monkeypatch):
    """A source topic that does not exist at start is picked up when it appears."""
    monkeypatch.setattr(kafka, "METADATA_REFRESH_S", 0.3)
    name = f"rig-late-{time.monotonic_ns()}"

    async def main():
        src, col = await _started(make_cfg(tansu.bootstrap, name))
        try:
            assert src.health()["partitions"] == 0
            await asyncio.get_running_loop().run_in_executor(None, lambda: tansu.create_topics([name], partitions=2))
            await _produce(tansu.bootstrap, name, structured(10))
            await col.wait_for(10)
            assert sorted(col.ids()) == sorted(f"ev-{i}" for i in range(10))
            assert src.health()["partitions"] == 2
        finally:
            await src.stop()

    runner.run(main())


def test_one_wakeup_per_batch(tansu, topic, runner):
    """Many records produced at once reach publish_batch in far fewer calls than records."""
    n = 5000

    async def main():
        src, col = await _started(make_cfg(tansu.bootstrap, topic))
        try:
            await _produce(tansu.bootstrap, topic, structured(n), **{"linger.ms": 50})
            await col.wait_for(n, timeout=30)
            assert col.ids() == [f"ev-{i}" for i in range(n)]
            assert col.calls < n / 10, col.calls
        finally:
            await src.stop()

    runner.run(main())


def test_stop_while_consuming_is_prompt(tansu, topic, runner):
    """stop() during a stream returns within a second or two and the thread is gone; twice is fine."""

    async def main():
        src, col = await _started(make_cfg(tansu.bootstrap, topic))
        prod = asyncio.ensure_future(_produce(tansu.bootstrap, topic, structured(20000)))
        try:
            await col.wait_for(100, timeout=30)
            t0 = time.monotonic()
            await src.stop()
            assert time.monotonic() - t0 < 3.0
            assert src._consumer.thread is not None and not src._consumer.thread.is_alive()
            await src.stop()
        finally:
            await asyncio.wait_for(prod, 30)

    runner.run(main())


class _HeldLoop:
    """A stand-in loop that holds call_soon_threadsafe callbacks until released."""

    def __init__(self) -> None:
        import threading

        self.held: list = []
        self.lock = threading.Lock()

    def call_soon_threadsafe(self, fn, *args):
        with self.lock:
            self.held.append((fn, args))

    def run_held(self) -> int:
        with self.lock:
            held, self.held = self.held, []
        for fn, args in held:
            fn(*args)
        return len(held)


def test_hand_off_is_bounded(tansu, topic, runner, monkeypatch):
    """With the loop not running callbacks, the thread stops after MAX_BATCHES_IN_FLIGHT batches."""
    monkeypatch.setattr(kafka, "BATCH_MAX_MESSAGES", 10)

    async def main():
        held = _HeldLoop()
        col = Collector()
        src = KafkaSource(make_cfg(tansu.bootstrap, topic), held, col.publish_batch)
        src.start()
        try:
            await wait_state(src, "connected")
            await _produce(tansu.bootstrap, topic, structured(200))
            deadline = time.monotonic() + 15
            while len(held.held) < kafka.MAX_BATCHES_IN_FLIGHT and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert len(held.held) == kafka.MAX_BATCHES_IN_FLIGHT
            await asyncio.sleep(0.5)  # a negative check: nothing more may be handed off meanwhile
            assert len(held.held) == kafka.MAX_BATCHES_IN_FLIGHT
            while len(col.events) < 200 and time.monotonic() < deadline:
                if not held.run_held():
                    await asyncio.sleep(0.01)
            assert col.ids() == [f"ev-{i}" for i in range(200)]
        finally:
            stopper = asyncio.ensure_future(src.stop())
            while not stopper.done():
                held.run_held()
                await asyncio.sleep(0.01)

    runner.run(main())


def test_poison_records_are_counted_skipped_and_later_records_arrive(tansu, runner, caplog):
    """Records that make a decoder raise something other than a CloudEvent error (deep nesting:
    RecursionError in msgspec, a value that is not JSON at all) are counted, logged at most once
    per second, and skipped; good records after them arrive on every partition, and the consumer
    is not recreated (it would start again at the poison record, forever)."""
    import logging

    name = f"rig-poison-{time.monotonic_ns()}"
    tansu.create_topics([name], partitions=2)
    poison = [
        b"[" * 200000,
        b'{"a":' * 200000,
        b'{"specversion":"1.0","type":"x","source":"s","id":"1","data":' + b"[" * 100000,
        b'{"specversion":"1.0","type":"x","source":"s","id":"1","x":' + b'{"a":' * 100000,
    ]

    async def main():
        src, col = await _started(make_cfg(tansu.bootstrap, name))
        before = metrics.EVENTS_INVALID.get("kafka")

        try:
            from confluent_kafka import Producer

            p = Producer({"bootstrap.servers": tansu.bootstrap, "log_level": 0, "message.max.bytes": 2_000_000})
            n = 0
            for part in (0, 1):
                for bad in poison:
                    p.produce(name, orjson.dumps(ce(n)), partition=part)
                    n += 1
                    p.produce(name, bad, partition=part)
                    p.flush(10)
                p.produce(name, orjson.dumps(ce(n)), partition=part)
                n += 1
            assert await asyncio.get_running_loop().run_in_executor(None, p.flush, 20) == 0
            await col.wait_for(n, timeout=20)
            assert sorted(col.ids(), key=lambda s: int(s[3:])) == [f"ev-{i}" for i in range(n)]
            deadline = time.monotonic() + 10
            while metrics.EVENTS_INVALID.get("kafka") - before < 2 * len(poison):
                assert time.monotonic() < deadline, "poison records not counted"
                await asyncio.sleep(0.05)
            assert metrics.EVENTS_INVALID.get("kafka") - before == 2 * len(poison)
            assert src.health()["state"] == "connected"
            assert not [r for r in caplog.records if "recreating" in r.getMessage()]
            skipped = [r for r in caplog.records if "skipped" in r.getMessage() and r.name.startswith("rigfast.kafka")]
            assert 1 <= len(skipped) < 2 * len(poison)  # rate-limited: a flood is not a line per record
            # a good record produced afterwards still arrives
            await _produce(tansu.bootstrap, name, [(orjson.dumps(ce(n)), None)])
            await col.wait_for(n + 1)
        finally:
            await src.stop()

    caplog.set_level(logging.WARNING, logger="rigfast")
    runner.run(main())
