"""Graceful drain on SIGTERM: not ready at once, waiting long-polls answered first, streams closed
spread over RIGFAST_DRAIN_S (SSE with a `retry:` hint, WebSocket with close 1001), and every event
accepted before the signal delivered to every connection before its close."""

from __future__ import annotations

import asyncio
import json
import signal
import time

import httpx
import websockets

from tests.conftest import start_gateway
from tests.helpers import T, make_event, subs_query, uid, wait_conn_count

DRAIN_S = 3.0
N_SSE = 24
N_WS = 8


async def _sse(gw, etype: str, out: dict) -> None:
    """One raw SSE connection: the ids it got, whether a retry: line came, when it ended."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(*gw.hostport), T)
    path = "/_rig/v1/connection/sse?" + subs_query([{"eventType": etype}])
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), T)
    assert head.startswith(b"HTTP/1.1 200"), head
    out["open"] = True
    buf = b""
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), DRAIN_S + 3 * T)
        if not chunk:
            break
        buf += chunk
    out["end"] = time.monotonic()
    out["retry"] = any(line.startswith(b"retry: ") for line in buf.split(b"\n"))
    # the retry hint is the last thing on the stream, after every event
    out["retry_last"] = buf.rstrip(b"\n").rsplit(b"\n\n", 1)[-1].startswith(b"retry: ")
    out["ids"] = [json.loads(line[6:])["id"] for line in buf.split(b"\n")
                  if line.startswith(b"data: ") and json.loads(line[6:])["type"] == etype]
    writer.close()


async def _ws(gw, etype: str, out: dict) -> None:
    url = f"{gw.ws}/_rig/v1/connection/ws?" + subs_query([{"eventType": etype}])
    async with websockets.connect(url, open_timeout=T, close_timeout=T) as ws:
        out["open"] = True
        ids = []
        try:
            while True:
                ev = json.loads(await asyncio.wait_for(ws.recv(), DRAIN_S + 3 * T))
                if ev["type"] == etype:
                    ids.append(ev["id"])
        except websockets.ConnectionClosed as exc:
            out["end"] = time.monotonic()
            out["code"] = exc.rcvd.code if exc.rcvd else None
        out["ids"] = ids


async def _longpoll_waiting(gw, etype: str, out: dict) -> None:
    """A long-poll session whose poll waits when SIGTERM comes: answered at once, connection closed."""
    async with httpx.AsyncClient(base_url=gw.inbound, timeout=T) as c:
        r = await c.get("/_rig/v1/connection/longpolling?" + subs_query([{"eventType": uid("nothing")}]))
        assert r.status_code == 200
        r = await c.get("/_rig/v1/connection/longpolling")  # the gateway events, at once
        assert r.status_code == 200 and r.json()["events"]
        out["open"] = True
        r = await c.get("/_rig/v1/connection/longpolling")  # waits: nothing else comes
        out["end"] = time.monotonic()
        out["status"] = r.status_code
        out["connection"] = r.headers.get("connection")


def test_sigterm_drains_spread_over_the_window_and_loses_no_accepted_event():
    gw = start_gateway(RIGFAST_DRAIN_S=str(DRAIN_S), RIGFAST_LONGPOLL_TIMEOUT_S="10")
    etype = uid("drain")
    sse = [dict() for _ in range(N_SSE)]
    ws = [dict() for _ in range(N_WS)]
    lp: dict = {}

    async def scenario():
        tasks = [asyncio.create_task(_sse(gw, etype, o)) for o in sse]
        tasks += [asyncio.create_task(_ws(gw, etype, o)) for o in ws]
        await asyncio.to_thread(wait_conn_count, gw.api, "sse", N_SSE)
        await asyncio.to_thread(wait_conn_count, gw.api, "ws", N_WS)
        tasks.append(asyncio.create_task(_longpoll_waiting(gw, etype, lp)))
        await asyncio.to_thread(wait_conn_count, gw.api, "longpolling", 1)
        accepted = []
        async with httpx.AsyncClient(base_url=gw.inbound, timeout=T) as c:
            for i in range(40):  # the last 202 comes right before the signal
                ev = make_event(etype, {"i": i})
                r = await c.post("/_rig/v1/events", json=ev)
                assert r.status_code == 202
                accepted.append(ev["id"])
            gw.proc.send_signal(signal.SIGTERM)
            t_sig = time.monotonic()
        async with httpx.AsyncClient(base_url=gw.api, timeout=T) as api:
            ready = await api.get("/health/ready")
            live = await api.get("/health")
        await asyncio.wait_for(asyncio.gather(*tasks), DRAIN_S + 4 * T)
        return accepted, t_sig, ready, live

    try:
        accepted, t_sig, ready, live = asyncio.run(scenario())
        code = gw.proc.wait(DRAIN_S + 2 * T)
    finally:
        gw.stop()
    assert code == 0, gw.log()
    # not ready (503) during the drain, still alive
    assert ready.status_code == 503 and ready.json()["checks"]["not_draining"] is False
    assert live.status_code == 200
    # the waiting long-poll is answered first, and its connection closed
    assert lp["status"] == 200 and lp["end"] - t_sig < 1.0 and lp["connection"] == "close"
    # nothing accepted before SIGTERM is lost, on any connection
    for o in sse + ws:
        assert o["ids"] == accepted
    assert all(o["retry"] and o["retry_last"] for o in sse)
    assert all(o["code"] == 1001 for o in ws)
    # the closes are spread over the window, not all at once
    ends = sorted(o["end"] - t_sig for o in sse + ws)
    assert ends[-1] <= DRAIN_S + 1.0
    assert ends[-1] - ends[0] >= DRAIN_S * 0.6, ends
    third = len(ends) // 3
    assert ends[2 * third] - ends[third] >= DRAIN_S * 0.2, ends  # the middle third alone spans a fifth


def test_sigint_stops_at_once():
    gw = start_gateway(RIGFAST_DRAIN_S="30")
    out: dict = {}

    async def scenario():
        task = asyncio.create_task(_sse(gw, uid("x"), out))
        await asyncio.to_thread(wait_conn_count, gw.api, "sse", 1)
        gw.proc.send_signal(signal.SIGINT)
        t = time.monotonic()
        await asyncio.wait_for(task, T)
        return t

    try:
        t = asyncio.run(scenario())
        assert gw.proc.wait(T) == 0
    finally:
        gw.stop()
    assert out["end"] - t < 2.0 and not out["retry"]
