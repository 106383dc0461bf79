"""Micro benchmarks of what the metrics add to the hot path (run: make bench).

Per HTTP request the gateway now does one ``loop.time()`` when the request is complete and one
``REQUEST_DURATION.observe`` when it is answered; per fan-out batch one ``monotonic()`` and one
``DELIVERY_LATENCY.observe`` per source, and per event with recipients one per-type counter bump.
Everything else (RIG's names, process_* metrics) is computed at scrape time.
"""

from __future__ import annotations

import asyncio
from time import monotonic

from rigfast import metrics


def test_counter_inc_labelled(benchmark):
    c = metrics.Counter("bench_total", "bench", ("source",))
    benchmark(c.inc, 1, "http")


def test_counter_inc_bounded_type(benchmark):
    c = metrics.Counter("bench_type_total", "bench", ("type",), max_labels=1000)
    benchmark(c.inc, 3, "greeting")


def test_histogram_observe(benchmark):
    h = metrics.Histogram("bench_seconds", "bench", metrics.LATENCY_BOUNDS, ("port",))
    benchmark(h.observe, 0.00042, 1, "inbound")


def test_loop_time(benchmark):
    import uvloop

    loop = uvloop.new_event_loop()
    try:
        benchmark(loop.time)
    finally:
        loop.close()


def test_monotonic(benchmark):
    benchmark(monotonic)


def test_render_scrape(benchmark):
    """A whole /metrics of one worker (not the hot path: once per scrape)."""
    asyncio.set_event_loop(asyncio.new_event_loop())
    benchmark(metrics.REGISTRY.render)


def test_request_duration_inline(benchmark):
    """What HttpProtocol.respond adds per answer: one monotonic() and an inline bucket bump."""
    from bisect import bisect_left

    h = metrics.REQUEST_DURATION.child("bench")
    t0 = monotonic()

    def answer():
        d = monotonic() - t0
        h.counts[bisect_left(h.bounds, d)] += 1
        h.total += d

    benchmark(answer)
