"""Broker absent at start, killed and restarted mid-stream: the source recovers by itself."""

from __future__ import annotations

import asyncio

import pytest

from rigfast import metrics
from rigfast.sources.kafka import KafkaSource
from tests.tansu import TansuBroker

from .conftest import Collector, make_cfg, produce_all, structured, wait_state

pytestmark = pytest.mark.kafka


async def _in_thread(fn, *args, **kw):
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kw))


def test_broker_absent_then_killed_and_restarted(runner):
    """Start with no broker, then broker up, killed, restarted: events after each recovery arrive."""
    broker = TansuBroker()
    topic = "rig"

    async def main():
        col = Collector()
        src = KafkaSource(make_cfg(broker.bootstrap, topic), asyncio.get_running_loop(), col.publish_batch)
        src.start()
        try:
            await asyncio.sleep(0)  # start() must not block; the thread runs without a broker
            assert src.health()["state"] == "connecting"
            await _in_thread(broker.start)
            await _in_thread(broker.create_topics, [topic])
            await wait_state(src, "connected", timeout=20)
            assert b"rig_kafka_connected 1" in metrics.REGISTRY.render()

            await _in_thread(produce_all, broker.bootstrap, topic, structured(30))
            await col.wait_for(30)

            await _in_thread(broker.kill)
            await wait_state(src, "down", timeout=20)
            assert src.health()["last_error"]
            assert b"rig_kafka_connected 0" in metrics.REGISTRY.render()

            # memory storage: the restarted broker has an empty, recreated log
            await _in_thread(broker.restart, [topic])
            await wait_state(src, "connected", timeout=20)
            await _in_thread(produce_all, broker.bootstrap, topic, structured(10, start=100))
            await col.wait_for(40, timeout=20)
            assert col.ids() == [f"ev-{i}" for i in range(30)] + [f"ev-{i}" for i in range(100, 110)]
        finally:
            await src.stop()
            broker.stop()

    runner.run(main())
