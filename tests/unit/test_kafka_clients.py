"""rigfast.kafka.clients without a broker: the librdkafka logger's rate limit, the outage state's log lines."""

from __future__ import annotations

import logging

from rigfast.kafka.clients import BrokerState, ClientLog


class _Err:
    def __init__(self, code: int, text: str = "x"):
        self._code, self._text = code, text

    def code(self) -> int:
        return self._code

    def str(self) -> str:
        return self._text

    def fatal(self) -> bool:
        return False


def test_client_log_one_line_per_facility_per_interval(caplog):
    """librdkafka's FAIL line on every retry becomes one line per facility; other facilities still get theirs."""
    logger = logging.getLogger("test.librdkafka")
    cl = ClientLog(logger, interval_s=60.0)
    with caplog.at_level(logging.INFO, logger="test.librdkafka"):
        for _ in range(100):
            cl.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", "Connect to 127.0.0.1:1 failed")
        cl.log(logging.WARNING, "%s [%s] %s", "REQTMOUT", "rdkafka#consumer-1", "timed out")
        cl.log(logging.INFO, "%s [%s] %s", "CONFWARN", "rdkafka#consumer-1", "a")
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("FAIL" in m for m in msgs) == 1
    assert any("REQTMOUT" in m for m in msgs) and any("CONFWARN" in m for m in msgs)


def test_broker_state_logs_transitions_only(caplog):
    """Hundreds of transport errors during one outage: one 'unreachable' line; one 'reachable again'."""
    from confluent_kafka import KafkaError

    st = BrokerState(logging.getLogger("test.brokers"))
    with caplog.at_level(logging.INFO, logger="test.brokers"):
        for _ in range(300):
            st.on_error(_Err(KafkaError._TRANSPORT))
            st.on_error(_Err(KafkaError._ALL_BROKERS_DOWN))
        for _ in range(5):
            st.came_up()
        st.on_error(_Err(KafkaError._TRANSPORT))
    msgs = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in msgs) == 2
    assert sum("reachable again" in m for m in msgs) == 1
