"""Fixtures of the in-process tests: every test runs on both engines (``[cython]`` and ``[python]``).

``rf``: the rigfast modules of the engine; ``loop``: a :class:`FakeLoop` set as the current loop;
``make_gateway(**env)``: a Gateway built on them (nothing listens: connect with ``gw.client()``).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.inprocess.harness import ENGINES, Client, FakeLoop, engine_modules, engine_unavailable

EXTRACTORS = (
    '{"greeting":{"name":{"stable_field_index":1,"event":{"json_pointer":"/data/name"}}},'
    '"order":{"customer":{"stable_field_index":1,"event":{"json_pointer":"/data/customer"}},'
    '"region":{"stable_field_index":2,"event":{"json_pointer":"/data/region"}}}}'
)


@pytest.fixture(params=ENGINES)
def rf(request):
    why = engine_unavailable(request.param)
    if why:
        pytest.skip(why)
    with engine_modules(request.param) as mods:
        assert mods.ext.BUILD == request.param  # the parametrisation is real: this copy runs that engine
        yield mods


@pytest.fixture()
def loop():
    fake = FakeLoop()
    asyncio.set_event_loop(fake)
    yield fake
    asyncio.set_event_loop(None)


class InProcessGateway:
    """A Gateway and one ServerState per port, on the fake loop."""

    def __init__(self, rf, loop, env: dict):
        self.rf = rf
        self.loop = loop
        self.cfg = rf.config.load({"RIGFAST_WORKERS": "1", "EXTRACTORS": EXTRACTORS, **env})
        self.gw = rf.app.Gateway(self.cfg)
        cors = [(b"access-control-allow-origin", self.cfg.cors.encode())]
        self.inbound = rf.protocol.ServerState(self.cfg, self.gw.inbound, cors)
        self.internal = rf.protocol.ServerState(self.cfg, self.gw.internal)

    def client(self, internal: bool = False) -> Client:
        return Client(self.rf.protocol, self.internal if internal else self.inbound)

    def settle(self) -> None:
        """Run what the loop has ready: hub fan-out and flushes, tasks."""
        self.loop.run_ready()


@pytest.fixture()
def make_gateway(rf, loop):
    made = []

    def make(**env: str) -> InProcessGateway:
        g = InProcessGateway(rf, loop, {k: str(v) for k, v in env.items()})
        made.append(g)
        return g

    yield make
    for g in made:
        g.gw.hub.close_all()
