"""Process-local metrics, rendered in the Prometheus text exposition format.

Counters are plain Python objects whose ``value`` (or per-label values) is
bumped with ``inc``: cheap enough for the hot path. Gauges are callbacks read
at scrape time, so nothing is maintained twice.

The figures are per worker process; see the README for how a node's figures
are summed.
"""

from __future__ import annotations

from typing import Callable, Iterable


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    return "{" + ",".join(f'{n}="{_escape(str(v))}"' for n, v in zip(names, values)) + "}"


class Counter:
    __slots__ = ("name", "help", "label_names", "values")

    def __init__(self, name: str, help: str, label_names: tuple[str, ...] = ()):
        self.name = name
        self.help = help
        self.label_names = label_names
        self.values: dict[tuple[str, ...], float] = {} if label_names else {(): 0}

    def inc(self, n: float = 1, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0) + n

    def get(self, *labels: str) -> float:
        return self.values.get(labels, 0)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, v in self.values.items():
            yield f"{self.name}{_labels(self.label_names, labels)} {_num(v)}"


class Gauge:
    __slots__ = ("name", "help", "label_names", "read")

    def __init__(self, name: str, help: str, read: Callable[[], float | dict], label_names: tuple[str, ...] = ()):
        self.name = name
        self.help = help
        self.label_names = label_names
        self.read = read

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        v = self.read()
        if isinstance(v, dict):
            for labels, x in v.items():
                labels = labels if isinstance(labels, tuple) else (labels,)
                yield f"{self.name}{_labels(self.label_names, labels)} {_num(x)}"
        else:
            yield f"{self.name} {_num(v)}"


def _num(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer()):
        return str(int(v))
    return repr(float(v))


class Registry:
    def __init__(self) -> None:
        self._items: dict[str, Counter | Gauge] = {}

    def counter(self, name: str, help: str, label_names: tuple[str, ...] = ()) -> Counter:
        c = self._items.get(name)
        if c is None:
            c = self._items[name] = Counter(name, help, label_names)
        return c  # type: ignore[return-value]

    def gauge(self, name: str, help: str, read: Callable[[], float | dict], label_names: tuple[str, ...] = ()) -> Gauge:
        g = self._items[name] = Gauge(name, help, read, label_names)
        return g

    def render(self) -> bytes:
        lines: list[str] = []
        for item in self._items.values():
            lines.extend(item.render())
        return ("\n".join(lines) + "\n").encode()


REGISTRY = Registry()

# The gateway's counters. Labels: source = http | api | kafka; transport = sse | ws | longpolling | phoenix (a Phoenix socket; its channels are not connections).
EVENTS_RECEIVED = REGISTRY.counter("rig_events_received_total", "Events accepted from a source", ("source",))
EVENTS_INVALID = REGISTRY.counter("rig_events_invalid_total", "Messages rejected as invalid CloudEvents", ("source",))
EVENTS_DELIVERED = REGISTRY.counter(
    "rig_events_delivered_total", "Event deliveries to frontend connections", ("source", "transport")
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
# Counted by the reverse proxy (status = the HTTP status answered to the client).
PROXY_REQUESTS = REGISTRY.counter("rig_proxy_requests_total", "Requests handled by the reverse proxy", ("status",))
# The Kafka source replaces this gauge with its own when KAFKA_BROKERS is set; without Kafka the lag is 0.
REGISTRY.gauge("rig_kafka_consumer_lag", "Records behind the high watermark, summed over partitions", lambda: 0)
