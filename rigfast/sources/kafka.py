"""Kafka source: consume CloudEvents from the source topics, hand them to the hub in batches.

How this works
--------------
One daemon thread per gateway process owns a confluent-kafka ``Consumer``.
It never touches the event loop except through one
``loop.call_soon_threadsafe(self._deliver, events)`` per batch, so the loop
wakes once per batch, not once per message.

Reading: every process reads ALL partitions of the source topics, because
every node (and every worker) must see every event. There is no consumer
group for events: the thread ``assign()``s the partitions itself, so no
JoinGroup/SyncGroup round (slow on Tansu with default timeouts), no
rebalances when nodes come and go, and no commits. librdkafka still insists
on a ``group.id``; it gets a unique one
(``<KAFKATOFILTER_KAFKA_GROUP_ID>-<host>-<pid>-<random>``) that never joins
and never commits. Partitions seen at the first successful metadata request
start at their high watermark: a (re)started node delivers new events only,
it does not replay. Metadata is refreshed periodically
(``METADATA_REFRESH_S``), so topics created later and partitions added later
are picked up; those start at their beginning, since all of their records
were written after this node started.

Hand-off bound: a semaphore counts batches handed to the loop and not yet
published (``MAX_BATCHES_IN_FLIGHT``). The loop-side ``_deliver`` releases it
after ``publish_batch`` ran. When the loop falls behind, the thread waits on
the semaphore and stops calling ``consume()``; librdkafka's prefetch queue is
itself bounded (``queued.max.messages.kbytes``), so fetching stops too and the
data stays in Kafka: nothing is dropped, memory stays bounded.

Back-pressure from the loop: between ``pause()`` and ``resume()`` the loop
keeps the batches it gets, unpublished, with their hand-off slots, so the
thread stops at MAX_BATCHES_IN_FLIGHT as above; ``resume()`` publishes them
in order. The node's reader pauses while a worker is behind on its link
(docs/cluster.md).

Polling: ``poll(timeout)`` waits for the first message (returns at once when
one is there), then ``consume(num_messages=BATCH-1, timeout=0)`` takes what
is already queued. ``consume(N, timeout)`` alone would wait the whole timeout
for N messages and add that much latency at low rates.

Decoding: a record without headers goes to the record scanner
(``rigfast._ext.scan_records``, compiled), which checks the value and finds
type and id in its bytes without decoding it, and keeps the value as the
event's JSON. The rest (binary mode, a value the scanner is unsure of,
consume errors) goes through the Kafka binding of ``rigfast.cloudevents``
(``parse_kafka_message``), counted in ``rig_kafka_full_parse_total``. Invalid
messages are counted (``rig_events_invalid_total{source="kafka"}``), logged
at most once per second with the number suppressed, and skipped.

Clients: settings, the consumer thread (create, recreate after a failure)
and logging come from :mod:`rigfast.kafka.clients`; an outage is logged
when it starts and ends, not per retry.

Faults: librdkafka reconnects by itself; the thread only tracks state from
``error_cb`` (all brokers down -> ``down``) and from metadata requests
(success -> ``connected``). While down it retries metadata once per second;
``consume()`` errors are recorded and followed by a short, growing pause, so
there is no busy loop. A fatal consumer error recreates the consumer after
``KAFKA_RESTART_DELAY_MS``, resuming at the offsets reached. After a
connection loss every partition is checked once: a high watermark below our
position means the broker lost or recreated the log (Tansu with memory
storage after a restart; unclean leader election on Kafka), and reading
resumes at the log start, so events produced after the broker came back are
delivered. ``auto.offset.reset=earliest`` does the same for the offset-out-of
-range errors that real Kafka reports in that case.

Tansu note (0.6): ListOffsets(latest) answers the last record batch's base
offset + 1 instead of the true high watermark, so a node starting on Tansu
can replay the rest of the last record batch of each partition. Kafka
answers the true high watermark.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Any, Callable


from rigfast import metrics
from rigfast._ext import scan_records
from rigfast.cloudevents import Event, parse_kafka_message
from rigfast.errors import CloudEventError
from rigfast.kafka import clients
from rigfast.logs import RateLimitedLogger

log = logging.getLogger("rigfast.kafka")

BATCH_MAX_MESSAGES = 2000
MAX_BATCHES_IN_FLIGHT = 4
POLL_TIMEOUT_S = 0.2
METADATA_REFRESH_S = 10.0
METADATA_RETRY_S = 1.0
METADATA_TIMEOUT_S = 2.0
LAG_REFRESH_S = 1.0
INVALID_LOG_INTERVAL_S = 1.0
ERROR_BACKOFF_MAX_S = 1.0
OFFSETS_TIMEOUT_S = 2.0

FULL_PARSE = metrics.REGISTRY.counter(
    "rig_kafka_full_parse_total",
    "Kafka records the record scanner left to the full CloudEvent parser (binary mode, line breaks, "
    "CloudEvents 0.1, invalid records)", ())


# --- the source -----------------------------------------------------------------------------


class KafkaSource:
    """Consumes the source topics on a thread; see the module docstring."""

    def __init__(
        self,
        cfg: Any,
        loop: asyncio.AbstractEventLoop,
        publish_batch: Callable[[list[Event]], None],
        *,
        from_beginning: bool = False,
    ):
        """``from_beginning`` reads existing records too (benchmarks, tools); the gateway reads new ones only."""
        self._cfg = cfg
        self._from_beginning = from_beginning
        self._loop = loop
        self._publish_batch = publish_batch
        self._topics: tuple[str, ...] = tuple(cfg.kafka_source_topics)
        self._brokers: tuple[str, ...] = tuple(cfg.kafka_brokers)
        self._enabled = bool(self._brokers) and bool(self._topics)
        self._conf = clients.consumer_config(cfg) if self._enabled else {}
        self._restart_delay_s = max(0, int(cfg.kafka_restart_delay_ms)) / 1000.0
        self._consumer = clients.ConsumerThread("rigfast-kafka", self._conf, self._consume_loop,
                                                restart_delay_s=self._restart_delay_s, logger=log,
                                                on_failure=self._on_failure, error_cb=self._on_error)
        self._stopping = self._consumer.stopping
        self._slots = threading.Semaphore(MAX_BATCHES_IN_FLIGHT)
        self._paused = False  # pause(): batches are kept in _held, unpublished
        self._held: deque = deque()
        self._state = "connecting" if self._enabled else "disabled"
        self._last_error: str | None = None
        self._lag = 0
        # (topic, partition) -> next offset to read; survives consumer re-creation
        self._offsets: dict[tuple[str, int], int] = {}
        self._ever_connected = False
        self._verify_pending = False
        self._missing_topics: list[str] = []
        self._invalid_pending = 0
        self._log = RateLimitedLogger(log, INVALID_LOG_INTERVAL_S)
        self._errors_log = clients.rate_limited(log)
        self._batches = 0
        self._batch_errors = 0  # consume errors in the batch being decoded
        # fn({(topic, partition): next offset}) after each batch was published (the node reader saves them)
        self.on_positions: Callable[[dict], None] | None = None
        self._handed_positions: dict | None = None
        metrics.REGISTRY.gauge(
            "rig_kafka_connected", "1 when the Kafka consumer is connected to the brokers", self._gauge_connected
        )
        metrics.REGISTRY.gauge(
            "rig_kafka_consumer_lag", "Records behind the high watermark, summed over partitions", lambda: self._lag
        )

    # -- public interface (loop thread) --

    def start(self) -> None:
        """Start the consumer thread; returns at once, the broker may be absent."""
        if self._enabled:
            self._consumer.start()

    async def stop(self) -> None:
        """Close the consumer and join the thread without blocking the loop; safe to call twice."""
        await self._consumer.stop()
        if self._enabled and self._consumer.thread is not None:
            self._state = "down"

    @property
    def reached(self) -> bool:
        """The brokers answered at least once (readiness: /health/ready)."""
        return self._ever_connected

    def health(self) -> dict:
        return {
            "state": self._state,
            "brokers": list(self._brokers),
            "topics": list(self._topics),
            "last_error": self._last_error,
            "lag": self._lag,
            "partitions": len(self._offsets),
        }

    def _gauge_connected(self) -> int:
        return 1 if self._state == "connected" else 0

    # -- loop side --

    def pause(self) -> None:
        """Publish nothing more until :meth:`resume`: batches that come meanwhile are kept (at most
        MAX_BATCHES_IN_FLIGHT: their slots stay taken, so the thread stops reading)."""
        self._paused = True

    def resume(self) -> None:
        """Publish the kept batches, in order, then go on (stops again if publishing one pauses us)."""
        self._paused = False
        held = self._held
        while held and not self._paused:
            self._deliver(*held.popleft())

    def resume_at(self, offsets: dict[tuple[str, int], int]) -> None:
        """Before start(): read these partitions from these offsets (a restarted node reader)."""
        self._offsets.update(offsets)

    def _deliver(self, events: list[Event], invalid: int, positions: dict | None = None) -> None:
        if self._paused:  # kept with its slot; published by resume()
            self._held.append((events, invalid, positions))
            return
        try:
            if invalid:
                metrics.EVENTS_INVALID.inc(invalid, "kafka")
            if events:  # publish_batch (the hub's) counts them as received
                self._publish_batch(events)
            if positions and self.on_positions is not None:
                self.on_positions(positions)
        except Exception:
            log.exception("publish_batch failed on a Kafka batch of %d events", len(events))
        finally:
            self._slots.release()

    # -- consumer thread --

    def _hand_off(self, events: list[Event]) -> bool:
        """Queue one batch for the loop, waiting while MAX_BATCHES_IN_FLIGHT are pending."""
        while not self._slots.acquire(timeout=POLL_TIMEOUT_S):
            if self._stopping.is_set():
                return False
        invalid, self._invalid_pending = self._invalid_pending, 0
        positions, self._handed_positions = self._handed_positions, None
        try:
            self._loop.call_soon_threadsafe(self._deliver, events, invalid, positions)
        except RuntimeError:  # loop closed: nobody to deliver to
            self._slots.release()
            self._stopping.set()
            return False
        self._batches += 1
        return True

    def _on_error(self, err: Any) -> None:
        """librdkafka error_cb; runs on this thread, inside poll()/consume()."""
        from confluent_kafka import KafkaError

        code = err.code()
        self._last_error = err.str()
        if code == KafkaError._ALL_BROKERS_DOWN:
            self._state = "down" if self._ever_connected else "connecting"
            self._verify_pending = self._ever_connected
        elif code == KafkaError._TRANSPORT:
            self._verify_pending = self._ever_connected
        clients.BROKERS.on_error(err)  # logs the outage once, not every retry

    def _on_failure(self, exc: BaseException) -> None:
        self._last_error = str(exc)
        self._state = "down" if self._ever_connected else "connecting"

    def _consume_loop(self, c: Any, stopping: threading.Event) -> None:
        assigned: set[tuple[str, int]] = set()
        if self._offsets:  # re-created consumer: resume where the previous one was
            self._assign(c, assigned, dict(self._offsets))
        last_meta = -1e9
        next_lag = time.monotonic() + LAG_REFRESH_S
        error_pause = 0.0
        batch_rest = BATCH_MAX_MESSAGES - 1
        while not stopping.is_set():
            now = time.monotonic()
            settled = self._state == "connected" and not self._verify_pending and not self._missing_topics
            if now - last_meta >= (METADATA_REFRESH_S if settled else METADATA_RETRY_S):
                self._refresh(c, assigned)
                last_meta = time.monotonic()
            if now >= next_lag:
                self._update_lag(c, assigned)
                next_lag = now + LAG_REFRESH_S
            if not assigned:  # poll anyway: it serves error_cb and logs
                c.poll(POLL_TIMEOUT_S)
                continue
            first = c.poll(POLL_TIMEOUT_S)
            if first is None:
                continue
            msgs = c.consume(batch_rest, 0)
            msgs.insert(0, first)
            events, errors = self._decode_batch(msgs)
            if self.on_positions is not None:
                # one position() call per batch, not a look at its records (a batch from one partition would be
                # walked to its start); a recreated consumer resumes after what was handed off
                self._handed_positions = self._handed_positions or {}
                self._positions(c, assigned, self._handed_positions)
            if events:
                if self._state != "connected":
                    self._set_connected()
                if not self._hand_off(events):
                    return
            if errors and not events:
                error_pause = min(ERROR_BACKOFF_MAX_S, error_pause * 2 or 0.05)
                stopping.wait(error_pause)
            else:
                error_pause = 0.0

    def _decode_batch(self, msgs: list) -> tuple[list[Event], int]:
        """(events in record order, consume errors): the scanner takes the common case."""
        self._batch_errors = 0
        events = scan_records(msgs, self._decode_one)
        return events, self._batch_errors

    def _decode_one(self, m: Any) -> Event | None:
        """A record the scanner did not take: a consume error, or the full Kafka binding."""
        if m.error() is not None:
            self._batch_errors += 1
            self._on_consume_error(m)
            return None
        FULL_PARSE.inc()
        try:
            ev = parse_kafka_message(m.value(), m.headers())
        except CloudEventError as exc:
            self._skip(m, exc.message)
            return None
        except Exception as exc:  # noqa: BLE001 - a poison record (RecursionError, ...) is skipped too
            self._skip(m, f"undecodable record ({type(exc).__name__}: {exc})")
            return None
        # resume id: the record's position, the same for every worker and node reading it
        ev.rid = f"k:{m.topic()}:{m.partition()}:{m.offset()}"
        return ev

    def _skip(self, m: Any, why: str) -> None:
        """One record that is not a CloudEvent: counted, logged (rate-limited), never retried."""
        self._invalid_pending += 1
        self._log.warning(
            "invalid",
            "invalid CloudEvent skipped (topic %s partition %d offset %d): %s",
            m.topic(), m.partition(), m.offset(), why[:200],
        )

    def _on_consume_error(self, m: Any) -> None:
        err = m.error()
        self._last_error = err.str()
        self._errors_log.warning(f"consume:{err.code()}", "Kafka consume error on %s[%s]: %s", m.topic(), m.partition(), err.str())

    def _set_connected(self) -> None:
        self._state = "connected"
        self._ever_connected = True
        clients.BROKERS.came_up()

    def _refresh(self, c: Any, assigned: set[tuple[str, int]]) -> bool:
        """Metadata: assign new partitions, and after a connection loss check for recreated logs."""
        from confluent_kafka import KafkaException

        try:
            md = c.list_topics(timeout=METADATA_TIMEOUT_S)
        except KafkaException as exc:
            self._last_error = str(exc.args[0].str() if exc.args else exc)
            self._state = "down" if self._ever_connected else "connecting"
            log.debug("Kafka metadata request failed: %s", self._last_error)
            return False
        first_time = not self._ever_connected
        new: dict[tuple[str, int], int] = {}
        missing = []
        for topic in self._topics:
            t = md.topics.get(topic)
            if t is None or t.error is not None or not t.partitions:
                missing.append(topic)
                continue
            for p in t.partitions:
                key = (topic, p)
                if key in assigned:
                    continue
                if key in self._offsets:
                    new[key] = self._offsets[key]
                elif self._from_beginning:
                    new[key] = -2  # OFFSET_BEGINNING
                elif first_time:
                    hi = self._high_watermark(c, topic, p)
                    if hi is None:
                        return False
                    new[key] = hi
                else:
                    new[key] = -2  # OFFSET_BEGINNING: a partition that appeared after we started
        if self._verify_pending and not self._check_truncation(c, assigned):
            return False
        if new:
            self._assign(c, assigned, new)
        if missing != self._missing_topics:
            if missing:
                log.warning("Kafka: source topics %s do not exist (yet); checking every %.0fs", missing, METADATA_RETRY_S)
            self._missing_topics = missing
        self._set_connected()
        return True

    def _high_watermark(self, c: Any, topic: str, partition: int) -> int | None:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, partition), timeout=OFFSETS_TIMEOUT_S, cached=False)
        except KafkaException as exc:
            self._last_error = str(exc)
            return None
        return hi

    def _assign(self, c: Any, assigned: set[tuple[str, int]], offsets: dict[tuple[str, int], int]) -> None:
        from confluent_kafka import TopicPartition

        c.incremental_assign([TopicPartition(t, p, off) for (t, p), off in offsets.items()])
        assigned.update(offsets)
        for key, off in offsets.items():
            if off >= 0:
                self._offsets[key] = off
            else:
                self._offsets.setdefault(key, 0)
        log.info("Kafka: reading %s", ", ".join(f"{t}[{p}]@{o}" for (t, p), o in sorted(offsets.items())))

    def _positions(self, c: Any, assigned: set[tuple[str, int]], also: dict | None = None) -> None:
        """librdkafka's position of each assigned partition (after the last record it returned) into
        ``_offsets``, and into ``also`` when given."""
        from confluent_kafka import TopicPartition

        if not assigned:
            return
        offsets = self._offsets
        for tp in c.position([TopicPartition(t, p) for t, p in assigned]):
            if tp.offset >= 0:
                offsets[tp.topic, tp.partition] = tp.offset
                if also is not None:
                    also[tp.topic, tp.partition] = tp.offset

    def _check_truncation(self, c: Any, assigned: set[tuple[str, int]]) -> bool:
        """After a connection loss: a log that ends before our position was lost or recreated."""
        from confluent_kafka import KafkaException, TopicPartition

        self._positions(c, assigned)
        for key in list(assigned):
            try:
                lo, hi = c.get_watermark_offsets(TopicPartition(*key), timeout=OFFSETS_TIMEOUT_S, cached=False)
            except KafkaException as exc:
                self._last_error = str(exc)
                log.debug("Kafka: watermarks of %s[%d] unavailable: %s", key[0], key[1], exc)
                return False
            pos = self._offsets.get(key, 0)
            if 0 <= hi < pos:
                log.warning(
                    "Kafka: %s[%d] ends at %d, before our position %d: the log was recreated, reading it from %d",
                    key[0], key[1], hi, pos, lo,
                )
                c.seek(TopicPartition(key[0], key[1], lo))
                self._offsets[key] = lo
        self._verify_pending = False
        return True

    def _update_lag(self, c: Any, assigned: set[tuple[str, int]]) -> None:
        from confluent_kafka import TopicPartition

        self._positions(c, assigned)
        lag = 0
        for key in assigned:
            try:
                lo, hi = c.get_watermark_offsets(TopicPartition(*key), cached=True)
            except Exception:
                continue
            pos = self._offsets.get(key, -1)
            if hi >= 0 and pos >= 0 and hi > pos:
                lag += hi - pos
        self._lag = lag
        if self._invalid_pending and self._slots.acquire(blocking=False):
            invalid, self._invalid_pending = self._invalid_pending, 0
            try:
                self._loop.call_soon_threadsafe(self._deliver, [], invalid)
            except RuntimeError:
                self._slots.release()
