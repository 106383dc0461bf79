"""Configuration resolved and checked once, before any worker starts.

``config.load`` parses and checks the settings themselves (types, ranges,
extractors, proxy APIs). :func:`resolve` builds what can still fail from
them: the JWT verifier and the two checks (``SUBSCRIPTION_CHECK``,
``SUBMISSION_CHECK``), the TLS context (certificate and key loaded), and the
librdkafka settings (``KAFKA_SASL``, ``KAFKA_SSL_*``, ``RIGFAST_KAFKA_CONFIG``:
a client is built, never connected). :func:`check_ports` sees that the ports
are free. Each raises :class:`ConfigError` with one line naming the variable.

The command runs both in the parent (the supervisor, or the only process)
before any worker starts; a worker resolves again (its objects cannot cross a
process boundary) and hands the result to the gateway.
"""

from __future__ import annotations

import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from rigfast.auth.authorizer import Authorizer
from rigfast.errors import ConfigError
from rigfast.kafka.clients import consumer_config as librdkafka_config


@dataclass
class Resolved:
    auth: Authorizer
    tls: ssl.SSLContext | None


def resolve(cfg: Any) -> Resolved:
    auth = Authorizer(cfg)
    tls = tls_context(cfg) if cfg.tls_enabled else None
    if cfg.kafka_brokers:
        check_kafka(cfg)
    return Resolved(auth, tls)


def tls_context(cfg: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    # A callable, not None: OpenSSL would otherwise prompt on the terminal for an encrypted key.
    password = cfg.https_keyfile_pass or (lambda: b"")
    try:
        ctx.load_cert_chain(cfg.https_certfile, cfg.https_keyfile, password)
    except (OSError, ssl.SSLError) as exc:
        why = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise ConfigError(
            f"HTTPS_CERTFILE={cfg.https_certfile!r}, HTTPS_KEYFILE={cfg.https_keyfile!r}: cannot load the "
            f"certificate and key ({why}); both must be PEM files, and an encrypted key needs the right "
            "HTTPS_KEYFILE_PASS"
        ) from None
    return ctx


def check_kafka(cfg: Any) -> None:
    """Build the librdkafka settings and a client from them (librdkafka checks every property
    and loads the TLS files); the client is closed at once, its log is not read."""
    conf = librdkafka_config(cfg)
    from confluent_kafka import Consumer, KafkaException

    try:
        Consumer(dict(conf, logger=_QUIET)).close()
    except (KafkaException, ValueError, TypeError) as exc:
        err = exc.args[0] if exc.args else exc
        why = err.str() if hasattr(err, "str") else str(err)
        var = next((env for prop, env in _KAFKA_VARS if prop in why), "RIGFAST_KAFKA_CONFIG")
        raise ConfigError(f"{var}: librdkafka refuses the Kafka settings: {why}") from None


# librdkafka property -> the variable it comes from (most specific first)
_KAFKA_VARS = (
    ("ssl.ca.location", "KAFKA_SSL_CA_CERTFILE"), ("ssl.certificate.location", "KAFKA_SSL_CERTFILE"),
    ("ssl.key.password", "KAFKA_SSL_KEYFILE_PASS"), ("ssl.key", "KAFKA_SSL_KEYFILE"),
    ("sasl.", "KAFKA_SASL"), ("bootstrap.servers", "KAFKA_BROKERS"),
)


_QUIET = logging.getLogger("rigfast.preflight.librdkafka")
_QUIET.propagate = False
_QUIET.addHandler(logging.NullHandler())

_PORTS = (
    ("INBOUND_PORT", "host", "inbound_port", False),
    ("API_HTTP_PORT", "api_host", "api_http_port", False),
    ("INBOUND_HTTPS_PORT", "host", "inbound_https_port", True),
    ("API_HTTPS_PORT", "api_host", "api_https_port", True),
)


def listening_plan(cfg: Any) -> list[tuple[str, str, int, bool]]:
    """(variable, host, port, tls) of every port the gateway listens on."""
    return [(env, getattr(cfg, host), getattr(cfg, port), tls) for env, host, port, tls in _PORTS if cfg.tls_enabled or not tls]


def check_ports(cfg: Any) -> None:
    """Fail fast when a port is taken (SO_REUSEPORT would otherwise share it with a stranger)."""
    for env, host, port, _ in listening_plan(cfg):
        if port == 0:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                raise ConfigError(f"{env}={port}: cannot listen on {host}:{port}: {exc.strerror}") from None
