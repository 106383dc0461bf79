"""Settings: one table, read once from RIG's environment variable names.

Every setting has an environment variable (RIG's name where RIG has one) and
a command line flag derived from it (``--inbound-port`` for ``INBOUND_PORT``).
``rigfast --help`` prints this table. Values are checked at start; a bad one
stops the gateway with a message naming the variable.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from rigfast.errors import ConfigError
from rigfast.proxy.apis import ApiError, parse_apis
from rigfast.subscriptions import Extractors

__all__ = ["SETTINGS", "Config", "ConfigError", "Setting", "load", "parse_env", "read_json_setting"]


def _bool(raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true/false, got {raw!r}")


def _int(raw: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError(f"expected an integer, got {raw!r}") from None


def _float(raw: str) -> float:
    try:
        return float(raw.strip())
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None


def _str(raw: str) -> str:
    return raw


def _list(raw: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(",") if p.strip())


@dataclass(frozen=True)
class Setting:
    env: str
    default: Any
    parse: Callable[[str], Any]
    help: str
    attr: str = ""

    @property
    def name(self) -> str:
        return self.attr or self.env.lower().removeprefix("rigfast_")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


_NODE_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,63}$")


def _default_workers() -> int:
    return os.cpu_count() or 1


SETTINGS: tuple[Setting, ...] = (
    # ports and binding
    Setting("INBOUND_PORT", 4000, _int, "public port: frontend connections, event submission, proxy"),
    Setting("INBOUND_HTTPS_PORT", 4001, _int, "public TLS port (on when HTTPS_CERTFILE and HTTPS_KEYFILE are set)"),
    Setting("API_HTTP_PORT", 4010, _int, "internal API port (no auth: never expose it to the internet)"),
    Setting("API_HTTPS_PORT", 4011, _int, "internal API TLS port"),
    Setting("RIGFAST_HOST", "0.0.0.0", _str, "bind address of the public ports"),
    Setting("RIGFAST_API_HOST", "0.0.0.0", _str, "bind address of the internal API ports; set 127.0.0.1 to keep it off the network"),
    Setting("HTTPS_CERTFILE", "", _str, "PEM certificate file for the TLS ports"),
    Setting("HTTPS_KEYFILE", "", _str, "PEM private key file for the TLS ports"),
    Setting("HTTPS_KEYFILE_PASS", "", _str, "password of an encrypted HTTPS_KEYFILE"),
    Setting("RIGFAST_WORKERS", None, _int, "worker processes (default: number of cores)", attr="workers"),
    # cluster (see docs/cluster.md)
    Setting("RIGFAST_NODE_ID", "", _str, "this node's id in connection tokens and cluster messages (default: random at start)"),
    Setting("RIGFAST_WORKER_INDEX", 0, _int, "set by the supervisor: this worker's index on the node"),
    Setting("RIGFAST_WORKER_COUNT", 1, _int, "set by the supervisor: number of workers on the node"),
    Setting("RIGFAST_CLUSTER_DIR", "", _str, "directory for the workers' Unix sockets (default: $XDG_RUNTIME_DIR or /tmp, per node)"),
    Setting("RIGFAST_CLUSTER_TOPIC", "rigfast-cluster", _str, "Kafka topic nodes exchange events and control messages on; empty: nodes do not talk"),
    Setting("RIGFAST_BLACKLIST_TOPIC", "rigfast-blacklist", _str, "compacted Kafka topic holding the session blacklist"),
    Setting("RIGFAST_READER_LINK_BYTES", 8 << 20, _int, "bytes the node's reader holds unsent for one worker before it stops taking Kafka records until that worker has read all but a quarter of them (back-pressure: a slow worker slows the node's reading, nothing is dropped); 8 times this (at least 64 MiB) cuts the worker off"),
    Setting("RIGFAST_READER_STALL_S", 10.0, _float, "a worker the node's reader waits for that reads nothing from it for this long is cut off (its interest dropped; reading goes on without it), seconds"),
    Setting("RIGFAST_CLUSTER_TIMEOUT_S", 5.0, _float, "how long a request forwarded to another worker or node waits for its answer, seconds"),
    Setting("RIGFAST_DRAIN_S", 10.0, _float, "on SIGTERM, close frontend connections spread over this many seconds (0: at once)"),
    # frontends
    Setting("CORS", "*", _str, "value of access-control-allow-origin"),
    Setting("MAX_CONNECTIONS_PER_MINUTE", 5000, _int, "new frontend connections per minute before 429"),
    Setting("RIGFAST_HEARTBEAT_INTERVAL_S", 15.0, _float, "SSE heartbeat comment / WebSocket ping interval, seconds"),
    Setting("RIGFAST_LONGPOLL_TIMEOUT_S", 5.0, _float, "how long a long-poll request waits for events, seconds"),
    Setting("RIGFAST_LONGPOLL_SESSION_TTL_S", 3600.0, _float, "long-polling session expiry without a poll, seconds"),
    Setting("RIGFAST_LONGPOLL_BUFFER", 200, _int, "undelivered events kept per long-polling session"),
    Setting("RIGFAST_PHOENIX_IDLE_S", 60.0, _float, "Phoenix sockets: closed after this long without a message (long-polling: without a poll), seconds"),
    Setting("RIGFAST_PHOENIX_POLL_TIMEOUT_S", 10.0, _float, "Phoenix long-polling: how long a poll waits for messages, seconds"),
    Setting("RIGFAST_PHOENIX_LONGPOLL_BUFFER", 1000, _int, "Phoenix long-polling: messages waiting for the next poll before the session is dropped as a slow consumer"),
    Setting("RIGFAST_PHOENIX_MAX_CHANNELS", 100, _int, "Phoenix sockets: topics joined at once per socket"),
    Setting("RIGFAST_SEND_BUFFER_BYTES", 1 << 20, _int, "per-connection send buffer; a client that falls further behind is disconnected"),
    Setting("RIGFAST_HISTORY_SIZE", 10000, _int, "events kept for Last-Event-ID resumption"),
    Setting("RIGFAST_HISTORY_AGE_S", 300.0, _float, "maximum age of events kept for resumption, seconds"),
    Setting("RIGFAST_HISTORY_BYTES", 64 << 20, _int, "maximum total JSON size of the events kept for resumption (oldest dropped first), once per node: in the node's reader, or with one worker in the worker; a worker of several keeps its own, within the same bound, only while its link to the reader is down"),
    Setting("RIGFAST_REPLAY_MAX_BYTES", 512 << 10, _int, "most event bytes one resuming connect replays (older missed events: rig.history_gap)"),
    Setting("RIGFAST_LONGPOLL_MAX_SESSIONS", 20000, _int, "live long-polling sessions per worker; more new sessions get 503"),
    Setting("RIGFAST_LONGPOLL_FIRST_POLL_TTL_S", 60.0, _float, "expiry of a long-polling session that never polled after it was created, seconds"),
    Setting("RIGFAST_LONGPOLL_COOKIE_SAMESITE", "Lax", _str, "SameSite of the long-polling cookies: Lax, Strict, None (None needs TLS: cross-site frontends)"),
    Setting("RIGFAST_LONGPOLL_BUFFER_BYTES", 64 << 10, _int, "undelivered event bytes kept per long-polling session (oldest dropped first; the newest event always stays)"),
    # subscriptions: per connection, checked on connect (query) and PUT
    Setting("RIGFAST_MAX_SUBSCRIPTIONS", 50, _int, "subscriptions per connection (query or PUT); more: 400"),
    Setting("RIGFAST_MAX_ONEOF", 100, _int, "oneOf entries per connection, all its subscriptions together; more: 400"),
    Setting("RIGFAST_MAX_SUBSCRIPTION_VALUE_BYTES", 512, _int, "size of one constraint value (as JSON); larger: 400"),
    Setting("RIGFAST_MAX_SUBSCRIPTIONS_BYTES", 16384, _int, "size of a connection's subscription list as sent (query value or PUT body); larger: 400"),
    Setting("RIGFAST_WS_MAX_MESSAGE_BYTES", 65536, _int, "largest WebSocket message a client may send; larger: close 1009"),
    Setting("RIGFAST_CLIENT_CONNECTION_SHARE", 0.1, _float, "share of MAX_CONNECTIONS_PER_MINUTE one client address (IPv6: its /64) may spend, at least 10 a minute; 1 = no per-client limit"),
    Setting("RIGFAST_API_TOKEN", "", _str, "bearer token the internal API requires (except /health); empty: no authentication, as RIG"),
    # HTTP limits
    Setting("RIGFAST_MAX_HEADER_BYTES", 16384, _int, "request line + headers larger than this get 431"),
    Setting("RIGFAST_MAX_HEADERS", 100, _int, "more header fields than this get 431"),
    Setting("RIGFAST_MAX_BODY_BYTES", 1 << 20, _int, "request bodies larger than this get 413"),
    Setting("RIGFAST_MAX_PIPELINED", 64, _int, "pipelined requests parsed ahead of the one being answered, per connection (more wait unread)"),
    Setting("RIGFAST_SPARE_PROTOCOLS", 64, _int, "connection objects (with their HTTP parser, ~1.2 KiB each) kept per port for new connections, taken from connections that became SSE streams; 0: none kept"),
    Setting("RIGFAST_PROXY_LENGTH_LINES", 4096, _int, "formatted Content-Length lines the reverse proxy keeps for reuse (~60 bytes each; emptied when full); 0: none kept"),
    Setting("RIGFAST_MAX_CONNECTIONS", 0, _int, "open public connections per worker before new ones get 503; 0: the open-file limit minus a reserve for the internal API"),
    Setting("RIGFAST_REQUEST_TIMEOUT_S", 30.0, _float, "a request not complete within this gets 408"),
    Setting("RIGFAST_KEEPALIVE_TIMEOUT_S", 75.0, _float, "idle keep-alive connections are closed after this"),
    # subscriptions and auth
    Setting("EXTRACTORS", "", _str, "extractor configuration: a JSON file path or the JSON itself", attr="extractors_src"),
    Setting("JWT_SECRET_KEY", "", _str, "HS secret, or PEM public key (inline or file path) for RS/ES"),
    Setting("JWT_ALG", "HS256", _str, "HS256/384/512, RS256/384/512, ES256/384"),
    Setting("JWT_SESSION_FIELD", "/jti", _str, "JSON pointer to the claim that identifies a session"),
    Setting("SUBSCRIPTION_CHECK", "no_check", _str, "no_check | jwt_validation | http(s) URL"),
    Setting("SUBMISSION_CHECK", "no_check", _str, "no_check | jwt_validation | http(s) URL"),
    Setting("RIGFAST_CHECK_TIMEOUT_S", 5.0, _float, "timeout of an external (URL) authorization check"),
    # kafka
    Setting("KAFKA_BROKERS", (), _list, "comma-separated host:port list; empty = no Kafka (embedded default)"),
    Setting("KAFKA_SOURCE_TOPICS", ("rig",), _list, "topics to consume events from"),
    Setting("KAFKATOFILTER_KAFKA_GROUP_ID", "rig-kafka-to-filter", _str, "consumer group id (prefix; see README)"),
    Setting("KAFKA_SASL", "", _str, "plain:user:pass, scram_sha_256:user:pass or scram_sha_512:user:pass"),
    Setting("KAFKA_SSL_ENABLED", False, _bool, "use TLS to the brokers"),
    Setting("KAFKA_SSL_CA_CERTFILE", "", _str, "CA certificate file for the brokers"),
    Setting("KAFKA_SSL_CERTFILE", "", _str, "client certificate file"),
    Setting("KAFKA_SSL_KEYFILE", "", _str, "client key file"),
    Setting("KAFKA_SSL_KEYFILE_PASS", "", _str, "client key password"),
    Setting("KAFKA_RESTART_DELAY_MS", 5000, _int, "delay before the consumer reconnects after a failure"),
    Setting("RIGFAST_KAFKA_CONFIG", "", _str, "extra librdkafka properties as JSON, e.g. {\"fetch.min.bytes\": 1}"),
    # proxy
    Setting("PROXY_CONFIG_FILE", "", _str, "reverse proxy APIs: a JSON file path or the JSON itself"),
    Setting("PROXY_RECV_TIMEOUT", 5000, _int, "forwarded request timeout, ms"),
    Setting("PROXY_KAFKA_RESPONSE_TOPICS", ("rig-proxy-response",), _list, "topics carrying correlated proxy responses"),
    Setting("PROXY_KAFKA_RESPONSE_TIMEOUT", 5000, _int, "wait for a Kafka response, ms"),
    Setting("PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT", 5000, _int, "wait for a POST /v3/responses answer, ms"),
    Setting("RIGFAST_PROXY_MAX_CONNS", 256, _int, "reverse proxy: open connections per upstream host:port and worker (more requests wait)"),
    Setting("RIGFAST_PROXY_MAX_RESPONSE_BYTES", 64 << 20, _int, "reverse proxy: largest upstream response body passed on (streamed, never held; a larger content-length is 502); 0: no limit; event streams are exempt"),
    # logging
    Setting("LOG_LEVEL", "info", _str, "debug | info | warning | error"),
    Setting("RIGFAST_ACCESS_LOG", False, _bool, "one log line per answered HTTP request (logger rigfast.access, level info)"),
    Setting("LOG_FMT", "text", _str, "text (default) or json (one JSON object per line)"),
)

class Config:
    """The gateway's settings, as attributes named after the flags."""

    __slots__ = tuple(s.name for s in SETTINGS) + ("extractors", "proxy_apis")

    def __init__(self, values: Mapping[str, Any]):
        for s in SETTINGS:
            object.__setattr__(self, s.name, values.get(s.name, s.default))
        if self.workers is None:
            object.__setattr__(self, "workers", _default_workers())
        object.__setattr__(self, "extractors", load_extractors(self.extractors_src))
        self._check()
        object.__setattr__(self, "proxy_apis", load_proxy_apis(self.proxy_config_file, bool(self.kafka_brokers)))

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("Config is read-only")

    def _check(self) -> None:
        if self.workers < 1:
            raise ConfigError("RIGFAST_WORKERS must be >= 1")
        if self.node_id and not _NODE_ID_RE.match(self.node_id):
            raise ConfigError("RIGFAST_NODE_ID must be 1-63 characters of A-Z a-z 0-9 _ -")
        if not 0 <= self.worker_index < max(self.worker_count, 1):
            raise ConfigError("RIGFAST_WORKER_INDEX must be in [0, RIGFAST_WORKER_COUNT)")
        for name in ("inbound_port", "api_http_port", "inbound_https_port", "api_https_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ConfigError(f"{name.upper()} must be a port number, got {port}")
        if self.jwt_alg not in ("HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384"):
            raise ConfigError(f"JWT_ALG {self.jwt_alg!r} is not supported")
        if self.drain_s < 0:
            raise ConfigError(f"RIGFAST_DRAIN_S must be >= 0, got {self.drain_s}")
        for name in ("history_bytes", "replay_max_bytes", "longpoll_max_sessions", "longpoll_buffer_bytes", "max_subscriptions",
                     "max_oneof", "max_subscription_value_bytes", "max_subscriptions_bytes", "ws_max_message_bytes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"RIGFAST_{name.upper()} must be >= 0 (0: no limit)")
        for name in ("spare_protocols", "proxy_length_lines"):
            if getattr(self, name) < 0:
                raise ConfigError(f"RIGFAST_{name.upper()} must be >= 0 (0: none kept)")
        if self.reader_link_bytes < 4096:
            raise ConfigError(f"RIGFAST_READER_LINK_BYTES must be >= 4096, got {self.reader_link_bytes}")
        if self.reader_stall_s <= 0:
            raise ConfigError(f"RIGFAST_READER_STALL_S must be > 0, got {self.reader_stall_s}")
        if self.longpoll_cookie_samesite not in ("Lax", "Strict", "None"):
            raise ConfigError("RIGFAST_LONGPOLL_COOKIE_SAMESITE must be Lax, Strict or None")
        if not 0 < self.client_connection_share <= 1:
            raise ConfigError("RIGFAST_CLIENT_CONNECTION_SHARE must be in (0, 1]")
        if bool(self.https_certfile) != bool(self.https_keyfile):
            raise ConfigError("HTTPS_CERTFILE and HTTPS_KEYFILE must be set together")

    @property
    def tls_enabled(self) -> bool:
        return bool(self.https_certfile and self.https_keyfile)

    def to_env(self) -> dict[str, str]:
        """The settings as environment variables (to hand to worker processes)."""
        out = {}
        for s in SETTINGS:
            v = getattr(self, s.name)
            if isinstance(v, tuple):
                v = ",".join(v)
            elif isinstance(v, bool):
                v = "true" if v else "false"
            out[s.env] = str(v)
        return out


def parse_env(env: Mapping[str, str], overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for s in SETTINGS:
        raw = env.get(s.env)
        if raw is None:
            continue
        try:
            values[s.name] = s.parse(raw)
        except ValueError as exc:
            raise ConfigError(f"{s.env}: {exc}") from None
    if overrides:
        values.update({k: v for k, v in overrides.items() if v is not None})
    return values


# RIG settings rigfast does not implement: set to a value that would change what RIG does, they
# stop the start (exit 2) instead of being ignored. (variable or prefix, is it set?, what to say)
_OFF = ("", "false", "0", "no", "off")
UNSUPPORTED: tuple[tuple[str, Callable[[str], bool], str], ...] = (
    ("NATS_", lambda v: v.strip() != "", "NATS is not supported (events come from Kafka or HTTP)"),
    ("KINESIS_", lambda v: v.strip().lower() not in _OFF, "Amazon Kinesis is not supported (events come from Kafka or HTTP)"),
    ("PROXY_KINESIS_", lambda v: v.strip() != "", "the reverse proxy has no Kinesis target"),
    ("PROXY_NATS_", lambda v: v.strip() != "", "the reverse proxy has no NATS target"),
    ("KAFKA_SERIALIZER", lambda v: v.strip().lower() == "avro", "Avro serialization is not supported (CloudEvents as JSON only)"),
    ("LOG_FMT", lambda v: v.strip().lower() not in ("", "text", "json"), "only text and json are supported"),
    ("FIREHOSE_KAFKA_HTTP_TARGETS", lambda v: v.strip() not in ("", "[]"), "the Kafka firehose to HTTP targets is not supported"),
    ("REQUEST_LOG", lambda v: v.strip() not in ("", "[]"), "proxy request logging (console, kafka) is not supported"),
    ("DISCOVERY_TYPE", lambda v: v.strip() != "", "Erlang node discovery is not supported: rigfast nodes cluster over Kafka (KAFKA_BROKERS)"),
    ("JAEGER_HOST", lambda v: v.strip() != "", "tracing (Jaeger) is not supported"),
    ("RATE_LIMIT_ENABLED", lambda v: v.strip().lower() not in _OFF, "the proxy request rate limit is not supported (MAX_CONNECTIONS_PER_MINUTE limits connections)"),
)


def check_unsupported(env: Mapping[str, str]) -> None:
    """ConfigError (one line, naming the variable) for the first unsupported RIG setting in ``env``."""
    for name in sorted(env):
        value = env[name]
        for key, is_set, why in UNSUPPORTED:
            if (name == key or (key.endswith("_") and name.startswith(key))) and is_set(value):
                raise ConfigError(f"{name}={value!r}: not supported by rigfast ({why}); unset it")


def load(env: Mapping[str, str] | None = None, **overrides: Any) -> Config:
    """Build the configuration from the environment (and CLI overrides)."""
    env = os.environ if env is None else env
    check_unsupported(env)
    return Config(parse_env(env, overrides))


def read_json_setting(env_name: str, raw: str) -> Any:
    """A setting that is either inline JSON or the path of a JSON file."""
    text = raw.strip()
    if not text:
        return None
    if not text.startswith(("{", "[")):
        try:
            with open(text, encoding="utf-8") as fh:
                text = fh.read()
        except OSError as exc:
            raise ConfigError(f"{env_name}: cannot read file {raw!r}: {exc.strerror}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{env_name}: invalid JSON: {exc}") from None


def load_proxy_apis(raw: str, kafka: bool) -> list:
    """PROXY_CONFIG_FILE, validated: a bad API stops the gateway with a message naming it."""
    try:
        return parse_apis(read_json_setting("PROXY_CONFIG_FILE", raw), kafka=kafka)
    except ApiError as exc:
        raise ConfigError(f"PROXY_CONFIG_FILE: {exc}") from None


def load_extractors(raw: str) -> Extractors:
    return Extractors.from_config(read_json_setting("EXTRACTORS", raw))
