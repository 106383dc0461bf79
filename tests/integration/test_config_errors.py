"""A bad setting stops the gateway before any worker starts: exit code 2 and one line naming the variable,
with one worker and with two (no restart loop); a worker that exits with that code stops its supervisor."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from rigfast import config
from rigfast.cluster.supervisor import run_workers
from tests.conftest import REPO_ROOT
from tests.helpers import T, free_port


def run_gateway(workers: int, **env: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, INBOUND_PORT=str(free_port()), API_HTTP_PORT=str(free_port()), RIGFAST_HOST="127.0.0.1",
                RIGFAST_API_HOST="127.0.0.1", RIGFAST_WORKERS=str(workers))
    full.update(env)
    return subprocess.run([sys.executable, "-m", "rigfast"], cwd=str(REPO_ROOT), env=full, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=3 * T)


def assert_one_line(proc: subprocess.CompletedProcess, variable: str, problem: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr  # no traceback, no worker started
    assert variable in lines[0] and problem in lines[0], lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""


WORKERS = [pytest.param(1, id="workers1"), pytest.param(2, id="workers2")]


@pytest.mark.parametrize("workers", WORKERS)
def test_unknown_check(workers):
    """SUBSCRIPTION_CHECK=bogus names the variable and the accepted values."""
    assert_one_line(run_gateway(workers, SUBSCRIPTION_CHECK="bogus"), "SUBSCRIPTION_CHECK", "no_check, jwt_validation")


@pytest.mark.parametrize("workers", WORKERS)
def test_bad_submission_check_url(workers):
    assert_one_line(run_gateway(workers, SUBMISSION_CHECK="http://:80/check"), "SUBMISSION_CHECK", "no host")


@pytest.mark.parametrize("workers", WORKERS)
def test_bad_kafka_sasl(workers):
    """A bad KAFKA_SASL with KAFKA_BROKERS set stops the start (nothing connects to the broker)."""
    proc = run_gateway(workers, KAFKA_BROKERS=f"127.0.0.1:{free_port()}", KAFKA_SASL="kerberos:me")
    assert_one_line(proc, "KAFKA_SASL", "plain:user:pass")


@pytest.mark.parametrize("workers", WORKERS)
def test_librdkafka_refuses_a_property(workers):
    proc = run_gateway(workers, KAFKA_BROKERS=f"127.0.0.1:{free_port()}", RIGFAST_KAFKA_CONFIG='{"no.such.property": 1}')
    assert_one_line(proc, "RIGFAST_KAFKA_CONFIG", "no.such.property")


@pytest.mark.parametrize("workers", WORKERS)
def test_kafka_ca_file_missing(workers, tmp_path):
    proc = run_gateway(workers, KAFKA_BROKERS=f"127.0.0.1:{free_port()}", KAFKA_SSL_ENABLED="true",
                       KAFKA_SSL_CA_CERTFILE=str(tmp_path / "missing-ca.pem"))
    assert_one_line(proc, "KAFKA_SSL_CA_CERTFILE", "ssl.ca.location")


@pytest.mark.parametrize("workers", WORKERS)
def test_bad_tls_files(workers, tmp_path):
    bad = tmp_path / "not-pem.txt"
    bad.write_text("not a certificate")
    proc = run_gateway(workers, HTTPS_CERTFILE=str(bad), HTTPS_KEYFILE=str(bad), INBOUND_HTTPS_PORT=str(free_port()),
                       API_HTTPS_PORT=str(free_port()))
    assert_one_line(proc, "HTTPS_CERTFILE", "cannot load the certificate and key")


@pytest.mark.parametrize("workers", WORKERS)
def test_missing_tls_files(workers, tmp_path):
    proc = run_gateway(workers, HTTPS_CERTFILE=str(tmp_path / "c.pem"), HTTPS_KEYFILE=str(tmp_path / "k.pem"),
                       INBOUND_HTTPS_PORT=str(free_port()), API_HTTPS_PORT=str(free_port()))
    assert_one_line(proc, "HTTPS_KEYFILE", "No such file")


@pytest.mark.parametrize("workers", WORKERS)
def test_port_not_a_number(workers):
    """INBOUND_PORT=abc: the variable and the value, not Python's int() message."""
    proc = run_gateway(workers, INBOUND_PORT="abc")
    assert_one_line(proc, "INBOUND_PORT", "expected an integer, got 'abc'")
    assert "int()" not in proc.stderr


@pytest.mark.parametrize("workers", WORKERS)
def test_bad_jwt_key(workers):
    assert_one_line(run_gateway(workers, JWT_ALG="RS256", JWT_SECRET_KEY="-----BEGIN PUBLIC KEY-----\nnope"), "JWT_SECRET_KEY", "RS256")


@pytest.mark.parametrize("workers", WORKERS)
def test_port_taken(workers):
    """A port someone else listens on: one line naming the variable and the address."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_gateway(workers, API_HTTP_PORT=str(port))
    assert_one_line(proc, f"API_HTTP_PORT={port}", "Address already in use")


def test_supervised_worker_on_a_taken_port_exits_2():
    """A worker whose port is taken after the parent's check (here: no parent) exits 2 with a line naming it."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_gateway(1, INBOUND_PORT=str(port), RIGFAST_WORKER_COUNT="2", RIGFAST_WORKER_INDEX="1",
                           RIGFAST_NODE_ID=f"cfgtest{os.getpid()}", RIGFAST_CLUSTER_DIR="")
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if "configuration error" in ln]
    assert len(errors) == 1 and f"INBOUND_PORT={port}" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_supervisor_stops_on_a_worker_configuration_error():
    """The supervisor does not restart a worker that exited with 2: it stops the others and returns 2."""
    cfg = config.load({"RIGFAST_WORKERS": "2", "INBOUND_PORT": "0", "API_HTTP_PORT": "0",
                       "RIGFAST_NODE_ID": f"sup{os.getpid()}"})
    # worker 1 fails like a worker with a bad setting; worker 0 would run until stopped
    command = [sys.executable, "-c",
               "import os, sys, time\n"
               "if os.environ['RIGFAST_WORKER_INDEX'] == '1': sys.exit(2)\n"
               "time.sleep(60)\n"]
    started = time.monotonic()
    assert run_workers(cfg, command) == 2
    assert time.monotonic() - started < 15  # the sleeping worker was stopped, not waited for


@pytest.mark.parametrize(
    "variable, value",
    [("NATS_SERVERS", "nats://127.0.0.1:4222"), ("KINESIS_ENABLED", "true"), ("KAFKA_SERIALIZER", "avro"),
     ("LOG_FMT", "erlang"), ("REQUEST_LOG", "console"), ("DISCOVERY_TYPE", "dns")],
)
def test_unsupported_rig_setting_stops_the_start(variable, value):
    """A RIG setting rigfast does not implement, set to a value that would change behaviour, exits 2 with one
    line naming it (instead of running without it)."""
    assert_one_line(run_gateway(1, **{variable: value}), variable, "not supported")


def test_unsupported_rig_setting_with_workers():
    assert_one_line(run_gateway(2, NATS_SOURCE_TOPICS="rig"), "NATS_SOURCE_TOPICS", "not supported")


def test_harmless_values_of_rig_settings_are_accepted():
    """Values that change nothing (KINESIS_ENABLED=false, KAFKA_SERIALIZER empty, LOG_FMT=json) pass the check."""
    for env in ({"KINESIS_ENABLED": "false"}, {"KAFKA_SERIALIZER": ""}, {"LOG_FMT": "json"}):
        config.check_unsupported(env)


@pytest.mark.parametrize("workers", WORKERS)
def test_bad_extractors(workers):
    assert_one_line(run_gateway(workers, EXTRACTORS='{"greeting": 5}'), "EXTRACTORS", "greeting")


@pytest.mark.parametrize("workers", WORKERS)
def test_bad_proxy_api(workers):
    apis = '[{"id": "a", "proxy": {"target_url": "x", "port": 1}, "version_data": {"default": {"endpoints": [{"id": "e"}]}}}]'
    assert_one_line(run_gateway(workers, PROXY_CONFIG_FILE=apis), "PROXY_CONFIG_FILE", "'a'")
