"""consumer_config: the KAFKA_* settings mapped to librdkafka properties."""

from __future__ import annotations

import pytest

from rigfast import config
from rigfast.config import ConfigError
from rigfast.kafka.clients import consumer_config as librdkafka_config


def _conf(**env: str) -> dict:
    return librdkafka_config(config.load(env))


def test_brokers_and_reading_defaults():
    """Brokers join into bootstrap.servers; no commits, unique group id, earliest on out-of-range."""
    c = _conf(KAFKA_BROKERS="a:9092, b:9093")
    assert c["bootstrap.servers"] == "a:9092,b:9093"
    assert c["enable.auto.commit"] is False
    assert c["auto.offset.reset"] == "earliest"
    assert c["group.id"].startswith("rig-kafka-to-filter-")
    assert c["group.id"] != _conf(KAFKA_BROKERS="a:9092")["group.id"]
    assert "security.protocol" not in c


@pytest.mark.parametrize(
    "raw, mech",
    [("plain:u:p", "PLAIN"), ("scram_sha_256:u:p", "SCRAM-SHA-256"), ("scram_sha_512:u:p", "SCRAM-SHA-512")],
)
def test_sasl_mechanisms(raw, mech):
    """KAFKA_SASL mechanism:user:pass sets mechanism, credentials and SASL_PLAINTEXT."""
    c = _conf(KAFKA_BROKERS="a:1", KAFKA_SASL=raw)
    assert c["sasl.mechanisms"] == mech
    assert (c["sasl.username"], c["sasl.password"]) == ("u", "p")
    assert c["security.protocol"] == "SASL_PLAINTEXT"


def test_sasl_password_may_contain_colons():
    """Only the first two colons split KAFKA_SASL."""
    assert _conf(KAFKA_SASL="plain:u:p:a:ss")["sasl.password"] == "p:a:ss"


@pytest.mark.parametrize("raw", ["plain", "plain:user", "gssapi:u:p", "plain::p"])
def test_invalid_sasl_names_the_variable(raw):
    """A malformed KAFKA_SASL is a ConfigError naming the variable."""
    with pytest.raises(ConfigError, match="KAFKA_SASL"):
        _conf(KAFKA_SASL=raw)


def test_ssl_files():
    """KAFKA_SSL_* map to ssl.* and security.protocol SSL (SASL_SSL with SASL)."""
    env = dict(
        KAFKA_SSL_ENABLED="true",
        KAFKA_SSL_CA_CERTFILE="/ca.pem",
        KAFKA_SSL_CERTFILE="/c.pem",
        KAFKA_SSL_KEYFILE="/k.pem",
        KAFKA_SSL_KEYFILE_PASS="secret",
    )
    c = _conf(**env)
    assert c["security.protocol"] == "SSL"
    assert c["ssl.ca.location"] == "/ca.pem"
    assert c["ssl.certificate.location"] == "/c.pem"
    assert c["ssl.key.location"] == "/k.pem"
    assert c["ssl.key.password"] == "secret"
    assert _conf(KAFKA_SASL="plain:u:p", **env)["security.protocol"] == "SASL_SSL"


def test_ssl_files_ignored_when_disabled():
    """Without KAFKA_SSL_ENABLED the certificate settings are not used."""
    c = _conf(KAFKA_SSL_CA_CERTFILE="/ca.pem")
    assert "ssl.ca.location" not in c and "security.protocol" not in c


def test_extra_properties_override():
    """RIGFAST_KAFKA_CONFIG JSON adds and overrides librdkafka properties."""
    c = _conf(KAFKA_BROKERS="a:1", RIGFAST_KAFKA_CONFIG='{"fetch.min.bytes": 1, "auto.offset.reset": "latest"}')
    assert c["fetch.min.bytes"] == 1
    assert c["auto.offset.reset"] == "latest"


@pytest.mark.parametrize("raw", ['["x"]', "{not json"])
def test_extra_properties_must_be_a_json_object(raw):
    """A RIGFAST_KAFKA_CONFIG that is not a JSON object is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="RIGFAST_KAFKA_CONFIG"):
        _conf(RIGFAST_KAFKA_CONFIG=raw)
