"""Resumable streams (Last-Event-ID / lastEventId, history gaps) and slow-consumer safety."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import httpx
import websockets

from tests.helpers import T, health, make_event, open_sse, publish_ok, uid, wait_until


def _ids(items) -> list[str]:
    return [e.data["id"] for e in items if e.data and isinstance(e.data, dict) and "id" in e.data]


def test_sse_resume_replays_only_subscribed_events_in_order(gateway):
    """A reconnect with Last-Event-ID gets exactly the missed events of its subscriptions, in order, after the handshake."""
    etype, other = uid("res-a"), uid("res-b")
    subs = [{"eventType": etype}]
    with open_sse(gateway.inbound, subs) as s:
        s.expect_handshake()
        first = make_event(etype, {"n": 0})
        publish_ok(gateway.inbound, first)
        last_id = s.next_event().id
    missed = [make_event(etype, {"n": i}) for i in range(1, 4)]
    for i, ev in enumerate(missed):
        publish_ok(gateway.inbound, ev)
        publish_ok(gateway.inbound, make_event(other, {"n": i}))  # not subscribed: never replayed
    with open_sse(gateway.inbound, subs, headers={"last-event-id": last_id}) as s2:
        s2.expect_handshake()
        replayed = [s2.next_event() for _ in missed]
        assert _ids(replayed) == [e["id"] for e in missed]
        assert all(e.event == etype for e in replayed)
        live = make_event(etype, {"n": "live"})
        publish_ok(gateway.inbound, live)
        assert s2.next_event().data["id"] == live["id"]


def test_sse_resume_beyond_history_sends_gap_first(gateway_factory):
    """When the history no longer reaches back to Last-Event-ID, rig.history_gap comes first, then what is kept."""
    gw = gateway_factory(RIGFAST_HISTORY_SIZE="3")
    etype = uid("gap")
    subs = [{"eventType": etype}]
    with open_sse(gw.inbound, subs) as s:
        s.expect_handshake()
        publish_ok(gw.inbound, make_event(etype, {"n": 0}))
        last_id = s.next_event().id
    later = [make_event(etype, {"n": i}) for i in range(1, 8)]
    for ev in later:
        publish_ok(gw.inbound, ev)
    with open_sse(gw.inbound, subs, headers={"last-event-id": last_id}) as s2:
        s2.expect_handshake()
        gap = s2.next_event()
        assert gap.event == "rig.history_gap", gap
        assert gap.data["data"]["last_event_id"] == last_id
        kept = [s2.next_event() for _ in range(3)]
        assert _ids(kept) == [e["id"] for e in later[-3:]]


def test_sse_resume_from_unknown_run_is_a_gap(gateway):
    """A Last-Event-ID from another gateway run (unknown boot prefix) is answered with rig.history_gap."""
    with open_sse(gateway.inbound, [{"eventType": uid("x")}], headers={"last-event-id": "deadbeef-42"}) as s:
        s.expect_handshake()
        assert s.next_event().event == "rig.history_gap"


def test_ws_resume_with_last_event_id_query(gateway):
    """WebSocket clients resume with the lastEventId query parameter and get the missed events."""
    etype = uid("ws-res")
    subs = json.dumps([{"eventType": etype}])
    with open_sse(gateway.inbound, [{"eventType": etype}]) as s:
        s.expect_handshake()
        publish_ok(gateway.inbound, make_event(etype, {"n": 0}))
        last_id = s.next_event().id
    missed = [make_event(etype, {"n": i}) for i in (1, 2)]
    for ev in missed:
        publish_ok(gateway.inbound, ev)

    async def run() -> list[dict]:
        url = gateway.ws + "/_rig/v1/connection/ws?" + httpx.QueryParams(subscriptions=subs, lastEventId=last_id).__str__()
        async with websockets.connect(url, open_timeout=T) as ws:
            frames = [json.loads(await asyncio.wait_for(ws.recv(), T)) for _ in range(4)]
        return frames

    frames = asyncio.run(run())
    assert [f["type"] for f in frames[:2]] == ["rig.connection.create", "rig.subscriptions_set"]
    assert [f["id"] for f in frames[2:]] == [e["id"] for e in missed]


def _metric(api: str, name: str, label: str) -> float:
    text = httpx.get(api + "/metrics?local", timeout=T).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and label in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_slow_consumer_disconnected_others_unaffected(gateway_factory):
    """A client that stops reading is disconnected and counted; a reading client still gets every event."""
    gw = gateway_factory(RIGFAST_SEND_BUFFER_BYTES="65536")
    etype = uid("slow")
    subs = json.dumps([{"eventType": etype}])
    # the slow client: tiny receive buffer, never reads after connecting
    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(T)
    slow.connect(("127.0.0.1", gw.port))
    query = httpx.QueryParams(subscriptions=subs)
    slow.sendall(f"GET /_rig/v1/connection/sse?{query} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
    wait_until(lambda: health(gw.api)["connections"]["sse"] == 1, what="slow client connected")
    before = _metric(gw.api, "rig_slow_consumer_disconnects_total", 'transport="sse"')
    n_events = 400
    pad = "p" * 30000  # ~30 kB per event: the slow client's buffers fill after a few MB
    with open_sse(gw.inbound, [{"eventType": etype}]) as fast:
        fast.expect_handshake()
        got: list[str] = []
        # the fast client reads while events are published, like a healthy browser
        reader = threading.Thread(target=lambda: got.extend(fast.next_event().data["id"] for _ in range(n_events)))
        reader.start()
        sent = []
        with httpx.Client(base_url=gw.inbound, timeout=T) as client:
            for i in range(n_events):
                ev = make_event(etype, {"n": i, "pad": pad})
                r = client.post("/_rig/v1/events", json=ev, headers={"content-type": "application/cloudevents+json"})
                assert r.status_code == 202, r.text
                sent.append(ev["id"])
        reader.join(timeout=4 * T)
        assert not reader.is_alive(), f"fast client got {len(got)} of {n_events} events"
        assert got == sent
    wait_until(
        lambda: _metric(gw.api, "rig_slow_consumer_disconnects_total", 'transport="sse"') >= before + 1,
        what="slow consumer counted",
    )
    wait_until(lambda: health(gw.api)["connections"]["sse"] == 0, what="slow consumer gone")
    slow.close()
