"""librdkafka clients for every part of the gateway: settings, logging, one admin client, the consumer thread.

How this works
--------------
- **Settings.** :func:`connection_config` maps the ``KAFKA_*`` settings to
  librdkafka's connection and security properties (pure, raises
  ``ConfigError``). :func:`consumer_config` and :func:`producer_config` add what
  a consumer (a unique group id that is never joined, no commits) or a producer
  needs, and every client gets :data:`CLIENT_LOG` as its ``logger``.
- **Logging.** Without a ``logger`` librdkafka prints ``%3|...|FAIL|`` lines
  straight to stderr (not JSON, one per retry). With one, its lines go through
  Python logging (``rigfast.kafka.librdkafka``), at most one per facility and
  level per :data:`LIBRDKAFKA_LOG_INTERVAL_S` in the process, with the count
  suppressed in between. Error callbacks go to :data:`BROKERS`, which logs the
  transitions (unreachable / reachable again), not each retry.
- **Admin.** :func:`admin` gives the process's one ``AdminClient`` per broker
  list (created on first use, reused): topic creation and waiting for
  partitions.
- **Consumer thread.** :class:`ConsumerThread` owns one ``Consumer`` on a daemon
  thread: create, run the owner's body, close, and after a failure recreate it
  after a pause (the failure logged rate-limited). The body keeps its own
  position, so a recreated consumer resumes where the last one stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import threading
import time
from typing import Any, Callable, Iterable

from rigfast.config import read_json_setting
from rigfast.errors import ConfigError
from rigfast.logs import RateLimitedLogger

log = logging.getLogger("rigfast.kafka")

LIBRDKAFKA_LOG_INTERVAL_S = 60.0
FAILURE_LOG_INTERVAL_S = 30.0
ADMIN_TIMEOUT_S = 5.0
METADATA_TIMEOUT_S = 2.0  # one metadata request; blocks its thread (and a stop) at most this long
STOP_JOIN_S = 3.0
HOLD_WAIT_S = 0.2  # a paused consumer thread looks at its stop flag (and its metadata timers) this often

_SASL_MECHANISMS = {"plain": "PLAIN", "scram_sha_256": "SCRAM-SHA-256", "scram_sha_512": "SCRAM-SHA-512"}
CONSUMER_ONLY = ("group.id", "enable.auto.commit", "enable.auto.offset.store", "enable.partition.eof",
                 "auto.offset.reset", "topic.metadata.refresh.interval.ms", "fetch.wait.max.ms", "fetch.min.bytes")


# --- settings -------------------------------------------------------------------------------

def unique_group_id(prefix: str) -> str:
    """A group id no other process uses: the group is never joined, only librdkafka wants one."""
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}-{random.getrandbits(32):08x}"


def client_id(role: str) -> str:
    return f"rigfast{'-' + role if role else ''}-{socket.gethostname()}-{os.getpid()}"


def connection_config(cfg: Any) -> dict[str, Any]:
    """Brokers, security and ``RIGFAST_KAFKA_CONFIG`` as librdkafka properties (pure, no I/O)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": ",".join(cfg.kafka_brokers),
        "socket.keepalive.enable": True,
        "reconnect.backoff.max.ms": 2000,
        "log.connection.close": False,
    }
    ssl = bool(cfg.kafka_ssl_enabled)
    sasl = (cfg.kafka_sasl or "").strip()
    if sasl:
        parts = sasl.split(":", 2)
        if len(parts) != 3 or not parts[1] or parts[0].lower() not in _SASL_MECHANISMS:
            raise ConfigError(
                "KAFKA_SASL must be plain:user:pass, scram_sha_256:user:pass or scram_sha_512:user:pass"
            )
        conf["sasl.mechanisms"] = _SASL_MECHANISMS[parts[0].lower()]
        conf["sasl.username"] = parts[1]
        conf["sasl.password"] = parts[2]
        conf["security.protocol"] = "SASL_SSL" if ssl else "SASL_PLAINTEXT"
    elif ssl:
        conf["security.protocol"] = "SSL"
    if ssl:
        if cfg.kafka_ssl_ca_certfile:
            conf["ssl.ca.location"] = cfg.kafka_ssl_ca_certfile
        if cfg.kafka_ssl_certfile:
            conf["ssl.certificate.location"] = cfg.kafka_ssl_certfile
        if cfg.kafka_ssl_keyfile:
            conf["ssl.key.location"] = cfg.kafka_ssl_keyfile
        if cfg.kafka_ssl_keyfile_pass:
            conf["ssl.key.password"] = cfg.kafka_ssl_keyfile_pass
    extra = read_json_setting("RIGFAST_KAFKA_CONFIG", cfg.kafka_config or "")
    if extra is not None:
        if not isinstance(extra, dict):
            raise ConfigError("RIGFAST_KAFKA_CONFIG must be a JSON object of librdkafka properties")
        conf.update(extra)
    return conf


def consumer_config(cfg: Any, role: str = "") -> dict[str, Any]:
    """A consumer that assigns partitions itself: unique never-joined group, no commits."""
    conf = {
        "group.id": unique_group_id(cfg.kafkatofilter_kafka_group_id),
        "client.id": client_id(role),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        # Only used when a fetch position is out of range (log truncated or
        # recreated): everything in the new log is newer than what we read.
        "auto.offset.reset": "earliest",
        "topic.metadata.refresh.interval.ms": 10000,
    }
    conf.update(connection_config(cfg))
    return conf


def producer_config(cfg: Any, role: str = "", **extra: Any) -> dict[str, Any]:
    conf = {"client.id": client_id(role), "linger.ms": 1, "acks": "1", "message.timeout.ms": 10000}
    conf.update(_not_consumer(connection_config(cfg)))
    conf.update(extra)
    return conf


def _not_consumer(conf: dict[str, Any]) -> dict[str, Any]:
    """``RIGFAST_KAFKA_CONFIG`` may hold consumer properties: producers and admin clients do not get them."""
    return {k: v for k, v in conf.items() if k not in CONSUMER_ONLY}


def with_logging(conf: dict[str, Any], error_cb: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """``conf`` plus the gateway's librdkafka logger and an error callback (by default :data:`BROKERS`'s)."""
    return dict(conf, logger=CLIENT_LOG, error_cb=error_cb or BROKERS.on_error)


# --- logging --------------------------------------------------------------------------------

class ClientLog:
    """librdkafka's ``logger``: its lines into Python logging, rate-limited per facility and level."""

    def __init__(self, logger: logging.Logger, interval_s: float):
        self._limited = RateLimitedLogger(logger, interval_s, max_keys=256)
        self.logger = logger

    def log(self, level: int, fmt: str, *args: Any) -> None:
        # confluent-kafka calls log(level, "%s [%s] %s", facility, client name, text)
        if not self.logger.isEnabledFor(level):
            return
        facility = str(args[0]) if args else ""
        if level >= logging.WARNING:
            self._limited.log(level, f"{level}:{facility}", fmt, *args)
        else:
            self.logger.log(level, fmt, *args)


CLIENT_LOG = ClientLog(logging.getLogger("rigfast.kafka.librdkafka"), LIBRDKAFKA_LOG_INTERVAL_S)


class BrokerState:
    """The process's view of the brokers from the clients' error callbacks: logs changes, not retries."""

    _DOWN_CODES: frozenset[int] | None = None

    def __init__(self, logger: logging.Logger = log):
        self.log = logger
        self.down = False
        self.since = time.monotonic()
        self.last_error: str | None = None
        self._limited = RateLimitedLogger(logger, FAILURE_LOG_INTERVAL_S)
        self._lock = threading.Lock()

    @classmethod
    def _down_codes(cls) -> frozenset[int]:
        if cls._DOWN_CODES is None:
            from confluent_kafka import KafkaError

            cls._DOWN_CODES = frozenset((KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT,
                                         KafkaError._RESOLVE, KafkaError._TIMED_OUT))
        return cls._DOWN_CODES

    def on_error(self, err: Any) -> None:
        """librdkafka ``error_cb`` (any client, any thread)."""
        text = err.str()
        self.last_error = text
        if err.code() in self._down_codes():
            self.went_down(text)
        elif err.fatal():
            self.log.error("Kafka fatal error: %s", text)
        else:
            self._limited.warning(f"error:{err.code()}", "Kafka: %s", text)

    def went_down(self, why: str) -> None:
        with self._lock:
            if self.down:
                return
            self.down = True
            self.since = time.monotonic()
        self.log.warning("Kafka: brokers unreachable (%s); retrying quietly", why)

    def came_up(self) -> None:
        """A client talked to the brokers (metadata answered, records read)."""
        if not self.down:
            return
        with self._lock:
            if not self.down:
                return
            self.down = False
            lasted = time.monotonic() - self.since
        self.log.info("Kafka: brokers reachable again after %.1fs", lasted)


BROKERS = BrokerState()


def rate_limited(logger: logging.Logger, interval_s: float = FAILURE_LOG_INTERVAL_S) -> RateLimitedLogger:
    return RateLimitedLogger(logger, interval_s)


# --- admin ----------------------------------------------------------------------------------

class Admin:
    """One ``AdminClient`` for the process: create topics, wait for their partitions."""

    def __init__(self, conf: dict[str, Any]):
        from confluent_kafka.admin import AdminClient

        self.client = AdminClient(with_logging(conf))

    def list_topics(self, timeout: float = METADATA_TIMEOUT_S) -> Any:
        self.client.poll(0)  # serves the log queue
        md = self.client.list_topics(timeout=timeout)
        BROKERS.came_up()
        return md

    def ensure_topics(self, wanted: Iterable[tuple[str, int, dict | None]], timeout: float = ADMIN_TIMEOUT_S,
                      logger: logging.Logger = log) -> list[str]:
        """Create the missing ones of ``(name, partitions, config)``; the names created. Existing is fine."""
        from confluent_kafka import KafkaError
        from confluent_kafka.admin import NewTopic

        wanted = list(wanted)
        md = self.list_topics()
        new = [NewTopic(name, num_partitions=n, replication_factor=1, config=conf or {})
               for name, n, conf in wanted if name not in md.topics]
        created = []
        if not new:
            return created
        for topic, fut in self.client.create_topics(new, operation_timeout=timeout).items():
            try:
                fut.result(timeout=timeout * 2)
                created.append(topic)
                logger.info("Kafka: created topic %s", topic)
            except Exception as exc:  # noqa: BLE001
                err = exc.args[0] if exc.args else None
                if hasattr(err, "code") and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue  # a race with another worker or node
                raise
        return created

    def wait_partitions(self, topics: Iterable[str], timeout: float = 10.0,
                        stop: threading.Event | None = None) -> dict[str, list[int]]:
        """Each topic's partition ids, once the metadata shows every topic with partitions."""
        topics = list(topics)
        deadline = time.monotonic() + timeout
        while True:
            md = self.list_topics(min(METADATA_TIMEOUT_S, timeout))
            out = {}
            for t in topics:
                tm = md.topics.get(t)
                if tm is not None and tm.error is None and tm.partitions:
                    out[t] = sorted(tm.partitions)
            if len(out) == len(topics):
                return out
            if time.monotonic() > deadline or (stop is not None and stop.is_set()):
                raise RuntimeError(f"topics {sorted(set(topics) - set(out))} have no partitions in the metadata")
            if stop is not None:
                stop.wait(0.1)
            else:
                time.sleep(0.1)


_admins: dict[str, Admin] = {}
_admins_lock = threading.Lock()


def admin(cfg: Any) -> Admin:
    """The process's admin client for ``cfg``'s brokers (one, reused)."""
    conf = _not_consumer(connection_config(cfg))
    conf["client.id"] = client_id("admin")
    key = conf["bootstrap.servers"]
    with _admins_lock:
        a = _admins.get(key)
        if a is None:
            a = _admins[key] = Admin(conf)
        return a


def end_offsets(c: Any, topic: str, partitions: Iterable[int], timeout: float = ADMIN_TIMEOUT_S) -> list[Any]:
    """TopicPartitions of ``topic`` positioned at their high watermark (read new records only)."""
    from confluent_kafka import TopicPartition

    out = []
    for p in partitions:
        _, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout, cached=False)
        out.append(TopicPartition(topic, p, hi))
    return out


# --- the consumer thread --------------------------------------------------------------------

class ConsumerThread:
    """A daemon thread owning one Consumer; ``body(consumer, stopping)`` runs until stop or failure.

    After a failure the consumer is closed and recreated after ``restart_delay_s``
    (the failure logged at most once per ``FAILURE_LOG_INTERVAL_S``). ``before``
    runs before each consumer is created (topic creation, say); ``on_failure`` is
    told the exception; ``error_cb`` is librdkafka's (it should pass errors on to
    :data:`BROKERS`).

    Back-pressure: :meth:`pause` (any thread) makes a body that asks :meth:`held`
    before each poll stop taking records until :meth:`resume`. librdkafka's
    prefetch queue is bounded (``queued.max.messages.kbytes``), so fetching stops
    too and the records wait in Kafka: nothing is dropped.
    """

    def __init__(self, name: str, conf: dict[str, Any], body: Callable[[Any, threading.Event], None], *,
                 restart_delay_s: float = 1.0, logger: logging.Logger = log,
                 before: Callable[[], None] | None = None,
                 on_failure: Callable[[BaseException], None] | None = None,
                 error_cb: Callable[[Any], None] | None = None):
        self.name = name
        self.error_cb = error_cb
        self.conf = conf
        self.body = body
        self.restart_delay_s = restart_delay_s
        self.before = before
        self.on_failure = on_failure
        self.stopping = threading.Event()
        self.flowing = threading.Event()
        self.flowing.set()
        self.thread: threading.Thread | None = None
        self._log = RateLimitedLogger(logger, FAILURE_LOG_INTERVAL_S)

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self.thread.start()

    async def stop(self, timeout: float = STOP_JOIN_S) -> None:
        """Stop the body and join the thread (bounded) without blocking the loop; safe to call twice."""
        self.stopping.set()
        t = self.thread
        if t is not None and t.is_alive():
            await asyncio.get_running_loop().run_in_executor(None, t.join, timeout)

    def pause(self) -> None:
        self.flowing.clear()

    def resume(self) -> None:
        self.flowing.set()

    def held(self) -> bool:
        """In the body, before a poll: False when records may be taken; True, after waiting up to
        HOLD_WAIT_S for :meth:`resume`, while paused (the body goes round its loop and asks again)."""
        if self.flowing.is_set():
            return False
        self.flowing.wait(HOLD_WAIT_S)
        return True

    def _run(self) -> None:
        from confluent_kafka import Consumer, KafkaException

        while not self.stopping.is_set():
            consumer = None
            try:
                if self.before is not None:
                    self.before()
                consumer = Consumer(with_logging(self.conf, self.error_cb))
                self.body(consumer, self.stopping)
            except Exception as exc:  # noqa: BLE001 - recreate and go on
                if self.on_failure is not None:
                    self.on_failure(exc)
                self._log.warning("failed", "%s: Kafka consumer failed, recreating it in %.1fs: %s",
                                  self.name, self.restart_delay_s, exc,
                                  exc_info=not isinstance(exc, KafkaException))
            finally:
                if consumer is not None:
                    try:
                        consumer.close()
                    except Exception as exc:  # noqa: BLE001 - already closed or broken
                        log.debug("closing the Kafka consumer: %s", exc)
            if not self.stopping.is_set():
                self.stopping.wait(self.restart_delay_s)


def poll_batch(c: Any, max_messages: int, timeout: float) -> list:
    """Wait up to ``timeout`` for the first message, then take what is already queued (up to ``max_messages``).

    ``consume(N, timeout)`` alone would wait the whole timeout for N messages
    and add that much latency at low rates.
    """
    first = c.poll(timeout)
    if first is None:
        return []
    msgs = c.consume(max_messages - 1, 0)
    msgs.insert(0, first)
    return msgs
