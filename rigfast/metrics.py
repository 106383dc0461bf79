"""Process-local metrics, exposed through prometheus_client collectors.

The hot path only touches plain Python objects: a :class:`Counter` is a dict of
label tuple -> number bumped with ``inc``; a :class:`Histogram` is a list of
bucket counts bumped with ``observe`` (one ``bisect``); gauges are callbacks
read at scrape time, so nothing is maintained twice. At scrape time
:class:`GatewayCollector` turns them into prometheus_client metric families,
next to prometheus_client's own ``process_*`` and ``python_*`` collectors, and
:func:`render` writes the text exposition format.

RIG's metric names and labels (its Grafana dashboards query them) are derived
from the same counters at scrape time (:func:`rig_families`): no second count
on the hot path. docs/metrics.md lists every family.

The figures are per worker process; ``/metrics`` on a node with several
workers merges every worker's text (``rigfast.cluster.node.merge_metrics``).
"""

from __future__ import annotations

import os
import resource
from bisect import bisect_left
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
OTHER = "other"  # label value once a bounded counter holds max_labels distinct label sets


class Counter:
    """``values``: label tuple -> count. A hot path may add to the count of labels already in ``values``
    in place; a new label goes through ``inc`` (which keeps ``max_labels``)."""

    __slots__ = ("name", "help", "label_names", "values", "max_labels")

    def __init__(self, name: str, help: str, label_names: tuple[str, ...] = (), max_labels: int = 0):
        self.name = name
        self.help = help
        self.label_names = label_names
        self.values: dict[tuple[str, ...], float] = {} if label_names else {(): 0}
        self.max_labels = max_labels  # 0: unbounded (labels from a fixed set); else overflow into "other"

    def inc(self, n: float = 1, *labels: str) -> None:
        values = self.values
        if labels in values:
            values[labels] += n
        elif not self.max_labels or len(values) < self.max_labels:
            values[labels] = n
        else:
            other = (OTHER,) * len(labels)
            values[other] = values.get(other, 0) + n

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0)

    def family(self) -> Metric:
        fam = CounterMetricFamily(self.name, self.help, labels=self.label_names)
        for labels, v in self.values.items():
            fam.add_metric(labels, v)
        return fam


class Gauge:
    __slots__ = ("name", "help", "label_names", "read")

    def __init__(self, name: str, help: str, read: Callable[[], float | dict], label_names: tuple[str, ...] = ()):
        self.name = name
        self.help = help
        self.label_names = label_names
        self.read = read

    def family(self) -> Metric:
        fam = GaugeMetricFamily(self.name, self.help, labels=self.label_names)
        v = self.read()
        if isinstance(v, dict):
            for labels, x in v.items():
                fam.add_metric(labels if isinstance(labels, tuple) else (labels,), x)
        else:
            fam.add_metric((), v)
        return fam


class Series:
    """One label set of a :class:`Histogram`: ``counts[i]`` observations in bucket i (last: +Inf).
    Hot paths hold one and bump it inline: ``s.counts[bisect_left(s.bounds, v)] += 1; s.total += v``."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0


class Histogram:
    """Cumulative-bucket histogram per label tuple: ``observe(value, n, *labels)`` costs one bisect."""

    __slots__ = ("name", "help", "label_names", "bounds", "series")

    def __init__(self, name: str, help: str, bounds: Iterable[float], label_names: tuple[str, ...] = ()):
        self.name = name
        self.help = help
        self.label_names = label_names
        self.bounds = tuple(sorted(bounds))
        self.series: dict[tuple[str, ...], Series] = {}

    def child(self, *labels: str) -> Series:
        s = self.series.get(labels)
        if s is None:
            s = self.series[labels] = Series(self.bounds)
        return s

    def observe(self, value: float, n: int = 1, *labels: str) -> None:
        s = self.series.get(labels) or self.child(*labels)
        s.counts[bisect_left(self.bounds, value)] += n
        s.total += value * n

    def cumulative(self, labels: tuple[str, ...]) -> tuple[list[int], float]:
        s = self.series[labels]
        out, acc = [], 0
        for c in s.counts:
            acc += c
            out.append(acc)
        return out, s.total

    def family(self, name: str | None = None, help: str | None = None, scale: float = 1.0,
               bounds: Iterable[float] | None = None, extra: tuple[tuple[str, Callable[[tuple], str]], ...] = ()) -> Metric:
        """The histogram as a family; ``scale`` multiplies values (seconds -> ms), ``bounds`` picks a
        subset of this histogram's bounds (each must be one of them), ``extra`` adds labels."""
        names = self.label_names + tuple(n for n, _ in extra)
        fam = HistogramMetricFamily(name or self.name, help or self.help, labels=names)
        keep = self.bounds if bounds is None else tuple(bounds)
        for labels in list(self.series):
            cum, total = self.cumulative(labels)
            buckets = [(_le(b * scale), cum[self.bounds.index(b)]) for b in keep]
            buckets.append(("+Inf", cum[-1]))
            fam.add_metric(labels + tuple(fn(labels) for _, fn in extra), buckets, total * scale)
        return fam


def _le(x: float) -> str:
    return repr(float(round(x, 9)))


class Registry:
    def __init__(self) -> None:
        self._items: dict[str, Counter | Gauge | Histogram] = {}
        self.derived: list[Callable[[], Iterable[Metric]]] = []  # more families made at scrape time
        self._prom = CollectorRegistry(auto_describe=False)
        self._prom.register(GatewayCollector(self))
        ProcessCollector(registry=self._prom)
        PlatformCollector(registry=self._prom)
        GCCollector(registry=self._prom)

    def counter(self, name: str, help: str, label_names: tuple[str, ...] = (), max_labels: int = 0) -> Counter:
        c = self._items.get(name)
        if c is None:
            c = self._items[name] = Counter(name, help, label_names, max_labels)
        return c  # type: ignore[return-value]

    def gauge(self, name: str, help: str, read: Callable[[], float | dict], label_names: tuple[str, ...] = ()) -> Gauge:
        g = self._items[name] = Gauge(name, help, read, label_names)
        return g

    def histogram(self, name: str, help: str, bounds: Iterable[float], label_names: tuple[str, ...] = ()) -> Histogram:
        h = self._items.get(name)
        if h is None:
            h = self._items[name] = Histogram(name, help, bounds, label_names)
        return h  # type: ignore[return-value]

    def get(self, name: str):
        return self._items.get(name)

    def collect(self) -> Iterable[Metric]:
        for item in list(self._items.values()):
            yield item.family()
        for fn in self.derived:
            yield from fn()

    def render(self) -> bytes:
        return generate_latest(self._prom)


class GatewayCollector:
    """prometheus_client collector over the gateway's cheap counters, gauges and histograms."""

    def __init__(self, registry: Registry):
        self.registry = registry

    def collect(self) -> Iterable[Metric]:
        return self.registry.collect()


REGISTRY = Registry()

# The gateway's counters. Labels: source = http | api | kafka; transport = sse | ws | longpolling | phoenix (a Phoenix socket; its channels are not connections).
EVENTS_RECEIVED = REGISTRY.counter("rig_events_received_total", "Events accepted from a source", ("source",))
EVENTS_INVALID = REGISTRY.counter("rig_events_invalid_total", "Messages rejected as invalid CloudEvents", ("source",))
EVENTS_DELIVERED = REGISTRY.counter(
    "rig_events_delivered_total", "Event deliveries to frontend connections", ("source", "transport")
)
# RIG's per-type count of deliveries; event types come from clients, so the label set is bounded
DELIVERED_BY_TYPE = REGISTRY.counter(
    "rig_events_delivered_by_type_total", "Event deliveries to frontend connections by event type (at most 1000 "
    "types, then type=\"other\")", ("type",), max_labels=1000,
)
EVENTS_DROPPED = REGISTRY.counter("rig_events_dropped_total", "Events that matched no subscription", ("source",))
CONNECTIONS_OPENED = REGISTRY.counter("rig_connections_opened_total", "Frontend connections opened", ("transport",))
SLOW_CONSUMER_DISCONNECTS = REGISTRY.counter(
    "rig_slow_consumer_disconnects_total", "Connections closed because their send buffer overflowed", ("transport",)
)
CONNECTIONS_REFUSED = REGISTRY.counter(
    "rig_connections_refused_total", "Public connections refused with 503 at RIGFAST_MAX_CONNECTIONS", ("reason",)
)
REQUESTS_REJECTED = REGISTRY.counter("rig_http_requests_rejected_total", "Requests answered with an error status", ("status",))
# Counted by the reverse proxy with RIG's labels (method, path = the endpoint's path_regex, target,
# response_from, status = RIG's word: ok, not_found, unreachable, request_timeout, response_timeout,
# bad_request, unauthorized) and code = the HTTP status answered to the client (rigfast's own).
PROXY_REQUESTS = REGISTRY.counter(
    "rig_proxy_requests_total", "Requests handled by the reverse proxy",
    ("method", "path", "target", "response_from", "status", "code"), max_labels=10000,
)
PRODUCED = REGISTRY.counter("rig_produced_events_total", "Events produced to Kafka by the reverse proxy", ("target", "topic"))
PRODUCE_FAILED = REGISTRY.counter(
    "rig_produced_events_failed_total", "Events the reverse proxy failed to produce to Kafka", ("target", "topic")
)
BLACKLIST_ADDED = REGISTRY.counter("rig_blacklist_added_total", "Sessions blacklisted (entries added) since start")

# Latency buckets, seconds: RIG's processing-time buckets (1 ms ... 1 s) plus finer and coarser ones
RIG_MS_BUCKETS = (1, 2, 5, 10, 25, 50, 75, 100, 250, 500, 750, 1000)
LATENCY_BOUNDS = (0.0001, 0.00025, 0.0005) + tuple(b / 1000 for b in RIG_MS_BUCKETS) + (2.5, 5.0, 10.0)
DELIVERY_LATENCY = REGISTRY.histogram(
    "rig_delivery_latency_seconds",
    "From an event's acceptance (HTTP answer / Kafka hand-over) until every matching connection's frame was written",
    LATENCY_BOUNDS, ("source",),
)
REQUEST_DURATION = REGISTRY.histogram(
    "rig_http_request_duration_seconds", "From a request's last byte until its answer was written (streams excluded)",
    LATENCY_BOUNDS, ("port",),
)
# The Kafka source replaces this gauge with its own when KAFKA_BROKERS is set; without Kafka the lag is 0.
REGISTRY.gauge("rig_kafka_consumer_lag", "Records behind the high watermark, summed over partitions", lambda: 0)

# What rig_families() needs from the gateway, set by it at start
RIG_CONTEXT: dict = {"kafka_topics": "N/A", "subscriptions": lambda: 0, "blacklist": lambda: 0}
BLACKLIST_SET = "Elixir.SessionBlacklist"  # RIG's name of the blacklist set, what its dashboards select


def _topic(source: str) -> str:
    return RIG_CONTEXT["kafka_topics"] if source == "kafka" else "N/A"


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rig_families() -> Iterable[Metric]:
    """RIG 3.0's metric names and labels, from rigfast's counters (what RIG's dashboards query)."""
    received, invalid = EVENTS_RECEIVED.values, EVENTS_INVALID.values
    consumed = CounterMetricFamily("rig_consumed_events", "Events consumed (accepted or rejected), RIG's name",
                                   labels=("source", "topic"))
    sources = {("http",), ("api",)} | ({("kafka",)} if RIG_CONTEXT["kafka_topics"] != "N/A" else set())
    for (source,) in sorted(sources | set(received) | set(invalid)):  # every source from the start, as RIG declares them
        consumed.add_metric((source, _topic(source)), received.get((source,), 0) + invalid.get((source,), 0))
    yield consumed
    failed = CounterMetricFamily("rig_consumed_events_failed", "Consumed events that could not be handled "
                                 "(invalid CloudEvents), RIG's name", labels=("source", "topic"))
    for (source,) in sorted(sources | set(invalid)):
        failed.add_metric((source, _topic(source)), invalid.get((source,), 0))
    yield failed
    forwarded = CounterMetricFamily("rig_consumed_events_forwarded", "Events forwarded to frontend connections, "
                                    "by event type, RIG's name", labels=("type",))
    for (etype,), v in DELIVERED_BY_TYPE.values.items():
        forwarded.add_metric((etype,), v)
    yield forwarded
    yield DELIVERY_LATENCY.family(
        "rig_consumed_event_processing_duration_milliseconds",
        "Event processing time, acceptance until written to every matching connection, ms (RIG's name)",
        scale=1000.0, bounds=tuple(b / 1000 for b in RIG_MS_BUCKETS), extra=(("topic", lambda lab: _topic(lab[0])),),
    )
    subs = GaugeMetricFamily("rig_subscriptions_total", "Subscriptions held, RIG's name")
    subs.add_metric((), RIG_CONTEXT["subscriptions"]())
    yield subs
    total = GaugeMetricFamily("rig_distributed_set_items_total", "Items ever added to a set, RIG's name (blacklist)",
                              labels=("name",))
    total.add_metric((BLACKLIST_SET,), BLACKLIST_ADDED.get())
    yield total
    current = GaugeMetricFamily("rig_distributed_set_items_current", "Items in a set now, RIG's name (blacklist)",
                                labels=("name",))
    current.add_metric((BLACKLIST_SET,), RIG_CONTEXT["blacklist"]())
    yield current
    # RIG's Resources dashboard reads the Erlang VM's memory and port (socket/file) figures; the
    # closest facts of a Python worker are its resident memory and its open files
    mem = GaugeMetricFamily("erlang_vm_memory_bytes_total", "RIG dashboard compatibility: this worker's resident "
                            "memory (kind=\"processes\"); see process_resident_memory_bytes", labels=("kind",))
    mem.add_metric(("processes",), _rss_bytes())
    yield mem
    ports = GaugeMetricFamily("erlang_vm_port_count", "RIG dashboard compatibility: open file descriptors "
                              "(sockets included); see process_open_fds")
    ports.add_metric((), _open_fds())
    yield ports
    limit = GaugeMetricFamily("erlang_vm_port_limit", "RIG dashboard compatibility: the open-file limit; "
                              "see process_max_fds")
    limit.add_metric((), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    yield limit


REGISTRY.derived.append(rig_families)
