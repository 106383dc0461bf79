"""The in-process gateway the protocol fuzz targets feed: real objects, fake transport and loop."""

from __future__ import annotations

import asyncio
import contextlib
import os

from tests.inprocess.conftest import InProcessGateway
from tests.inprocess.harness import FakeLoop, engine_modules, engine_unavailable


def current_engine() -> str:
    return "python" if os.environ.get("RIGFAST_NO_EXTENSIONS") == "1" or engine_unavailable("cython") else "cython"


@contextlib.contextmanager
def inprocess_gateway(**env: str):
    loop = FakeLoop()
    asyncio.set_event_loop(loop)
    try:
        with engine_modules(current_engine()) as rf:
            g = InProcessGateway(rf, loop, {"MAX_CONNECTIONS_PER_MINUTE": "0", **env})
            try:
                yield g
            finally:
                g.gw.hub.close_all()
    finally:
        asyncio.set_event_loop(None)
