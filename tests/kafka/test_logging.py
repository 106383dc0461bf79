"""librdkafka's logs under a dead broker: every client has the gateway's logger (JSON stays JSON), and an
outage logs its state changes, not a line per retry."""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers import free_port, wait_until

pytestmark = pytest.mark.kafka

WINDOW_S = 5.0


@pytest.mark.parametrize("workers", ["2"])
def test_dead_brokers_log_quietly_and_in_json(gateway_factory, workers):
    """KAFKA_BROKERS pointing at nothing, every Kafka client in use (event source, cluster link with its
    producer and admin client, proxy response consumer): over a 5 s window after start, at most a few
    lines per worker (was ~40 a second per worker, half of them raw ``%3|...|FAIL|`` lines), each one a
    JSON object, and the outage is reported as such."""
    dead = f"127.0.0.1:{free_port()}"
    gw = gateway_factory(LOG_FMT="json", LOG_LEVEL="info", KAFKA_BROKERS=dead, KAFKA_SOURCE_TOPICS="rig",
                         PROXY_KAFKA_RESPONSE_TOPICS="rig-responses", RIGFAST_WORKERS=workers)
    procs = int(workers) + (1 if int(workers) > 1 else 0)  # the workers and the node's event reader
    # the window starts once every process met the outage (start-up lines are not what is measured)
    wait_until(lambda: gw.log(tail=1 << 22).count("brokers unreachable") >= procs, timeout=30,
               what="every process reports the outage")
    start_len = len(gw.log(tail=1 << 22).splitlines())
    t0 = time.monotonic()
    time.sleep(WINDOW_S)  # the measurement window itself: lines written per second of outage
    elapsed = time.monotonic() - t0
    gw.stop()  # (the exit code is not what this test is about)
    lines = [ln for ln in gw.log(tail=1 << 22).splitlines() if ln.strip()]
    records = []
    for ln in lines:
        try:
            records.append(json.loads(ln))
        except ValueError:
            pytest.fail(f"not JSON: {ln!r}")
    window = lines[start_len:]
    per_s = len(window) / elapsed
    assert per_s <= 1.0 * int(workers), f"{len(window)} lines in {elapsed:.1f}s:\n" + "\n".join(window)
    messages = [r["message"] for r in records]
    assert any("brokers unreachable" in m for m in messages), messages
    assert sum("brokers unreachable" in m for m in messages) == procs, messages
