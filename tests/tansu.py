"""The tests' Tansu broker is the gateway's own launcher (``rigfast dev-broker`` uses it too)."""

from rigfast.kafka.tansu import TansuBroker, broker_bin  # noqa: F401
from tests.helpers import free_port  # noqa: F401  (benches import it from here)
