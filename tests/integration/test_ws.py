"""WebSocket transport: GET /_rig/v1/connection/ws (upgrade), one-way, text frames."""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import quote

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.helpers import T, WS_ONE_WAY_REASON, make_event, publish, uid

WS_PATH = "/_rig/v1/connection/ws"


def ws_url(gw, subscriptions=None, jwt=None) -> str:
    q = []
    if subscriptions is not None:
        raw = subscriptions if isinstance(subscriptions, str) else json.dumps(subscriptions)
        q.append("subscriptions=" + quote(raw, safe=""))
    if jwt is not None:
        q.append("jwt=" + quote(jwt, safe=""))
    return gw.ws + WS_PATH + ("?" + "&".join(q) if q else "")


def ws_connect(url, **kw):
    kw.setdefault("ping_interval", None)
    kw.setdefault("open_timeout", T)
    kw.setdefault("close_timeout", T)
    return connect(url, **kw)


async def recv_json(ws, timeout=T):
    msg = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(msg, str), f"expected a text frame, got {type(msg).__name__}"
    return json.loads(msg)


async def handshake(ws):
    first = await recv_json(ws)
    assert first["type"] == "rig.connection.create", first
    second = await recv_json(ws)
    assert second["type"] == "rig.subscriptions_set", second
    return first["data"]["connection_token"], second["data"]


async def apublish(gw, ev, **kw):
    r = await asyncio.to_thread(publish, gw.inbound, ev, **kw)
    assert r.status_code == 202, (r.status_code, r.text)
    return r


async def expect_close(ws, timeout=T):
    """Read until the server's close frame; returns it (websockets Close)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    for _ in range(100):
        try:
            await asyncio.wait_for(ws.recv(), max(0.01, deadline - loop.time()))
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "connection dropped without a close frame"
            return exc.rcvd
    raise AssertionError("server kept sending instead of closing")


def test_ws_first_frames_are_text_json(gateway):
    """The first two frames are text frames: rig.connection.create then rig.subscriptions_set."""

    async def main():
        async with ws_connect(ws_url(gateway)) as ws:
            first = await recv_json(ws)
            assert first["type"] == "rig.connection.create"
            assert first["source"] == "rig"
            assert first["data"]["connection_token"]
            assert first["data"]["errors"] == []
            second = await recv_json(ws)
            assert second["type"] == "rig.subscriptions_set"
            assert second["data"] == []

    asyncio.run(main())


def test_ws_delivers_events_as_text_frames(gateway):
    """A published event arrives as one text frame holding the event JSON, unchanged."""
    etype = uid("ws-deliver")

    async def main():
        async with ws_connect(ws_url(gateway, [{"eventType": etype}])) as ws:
            _, subs = await handshake(ws)
            assert subs == [{"eventType": etype, "oneOf": []}]
            ev = make_event(etype, {"x": "ü", "list": [1, 2]}, myext="keep-me")
            await apublish(gateway, ev)
            assert await recv_json(ws) == ev

    asyncio.run(main())


def test_ws_filters_by_subscription(gateway):
    """Only events matching the connection's subscriptions are sent."""

    async def main():
        async with ws_connect(ws_url(gateway, [{"eventType": "greeting", "oneOf": [{"name": "wsalice"}]}])) as ws:
            await handshake(ws)
            await apublish(gateway, make_event("greeting", {"name": "wsbob"}))
            hit = make_event("greeting", {"name": "wsalice"})
            await apublish(gateway, hit)
            assert (await recv_json(ws))["id"] == hit["id"]

    asyncio.run(main())


class _FrameLog(logging.Handler):
    """Collects websockets' debug frame log lines ('< PING ...' for received pings)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.ping = asyncio.Event()

    def emit(self, record):
        line = record.getMessage()
        self.lines.append(line)
        if line.startswith("< PING"):
            self.ping.set()


def test_ws_server_sends_pings(gateway_factory):
    """With a short heartbeat interval the server sends ping frames, and the connection stays up."""
    gw = gateway_factory(RIGFAST_HEARTBEAT_INTERVAL_S="0.3")

    async def main():
        log = logging.getLogger(f"rigfast.test.ws.{uid()}")
        log.setLevel(logging.DEBUG)
        log.propagate = False
        h = _FrameLog()
        log.addHandler(h)
        async with ws_connect(ws_url(gw), logger=log) as ws:
            await handshake(ws)
            await asyncio.wait_for(h.ping.wait(), T)
            pings = [line for line in h.lines if line.startswith("< PING")]
            assert pings
            # still open and answering after the ping
            waiter = await ws.ping(b"after-ping")
            await asyncio.wait_for(waiter, T)

    asyncio.run(main())


def test_ws_client_ping_gets_pong(gateway):
    """A client ping is answered with a pong carrying the same payload."""

    async def main():
        async with ws_connect(ws_url(gateway)) as ws:
            await handshake(ws)
            waiter = await ws.ping(b"rigfast-ping")
            latency = await asyncio.wait_for(waiter, T)
            assert latency >= 0

    asyncio.run(main())


@pytest.mark.parametrize("payload", ["hello", b"\x00\x01binary"])
def test_ws_client_data_frame_closes_1000(gateway, payload):
    """A client data frame (text or binary) gets close 1000 with the one-way reason."""

    async def main():
        async with ws_connect(ws_url(gateway)) as ws:
            await handshake(ws)
            await ws.send(payload)
            close = await expect_close(ws)
            assert close.code == 1000
            assert close.reason == WS_ONE_WAY_REASON

    asyncio.run(main())


@pytest.mark.parametrize(
    "subs",
    ["not json", json.dumps([{"oneOf": []}])],
    ids=["malformed", "no-event-type"],
)
def test_ws_bad_subscriptions_close_with_reason(gateway, subs):
    """Bad subscriptions on connect: handshake, then close 1000 "Bad request." (RIG's; the detail is logged)."""

    async def main():
        try:
            async with ws_connect(ws_url(gateway, subs)) as ws:
                close = await expect_close(ws)
                assert (close.code, close.reason) == (1000, "Bad request."), close
        except InvalidStatus as exc:  # refused before the upgrade: not what docs/protocol.md asks for
            pytest.fail(f"upgrade refused with HTTP {exc.response.status_code}; expected 101 then a close frame")

    asyncio.run(main())


def test_ws_client_close_is_answered(gateway):
    """A client close frame is answered with a close frame (clean shutdown)."""

    async def main():
        ws = await ws_connect(ws_url(gateway))
        await handshake(ws)
        await asyncio.wait_for(ws.close(1000, "bye"), T)
        assert ws.close_code == 1000, (ws.close_code, ws.close_reason)

    asyncio.run(main())
