"""The cluster wire format (rigfast.cluster.wire): frames, event batches, token routes."""

from __future__ import annotations

import json

import pytest


def test_frames_survive_any_split(rf):
    w = rf.wire
    stream = w.encode_frame(w.EVENTS, b"abc") + w.encode_json_frame(w.REQUEST, {"op": "poll"}) + w.encode_frame(w.HELLO, b"")
    for cut in range(len(stream) + 1):
        d = w.FrameDecoder()
        got = d.feed(stream[:cut]) + d.feed(stream[cut:])
        assert got == [(w.EVENTS, b"abc"), (w.REQUEST, b'{"op":"poll"}'), (w.HELLO, b"")]


def test_oversized_frame_is_refused(rf):
    w = rf.wire
    with pytest.raises(ValueError):
        w.FrameDecoder().feed(w.HEADER.pack(w.MAX_FRAME_BYTES + 1, w.EVENTS))


def test_event_batch_round_trip_keeps_bytes_and_resume_ids(rf):
    ce = rf.cloudevents
    events = [ce.parse_structured(json.dumps({"specversion": "1.0", "type": "t", "source": "s", "id": str(i)}).encode())
              for i in range(3)]
    events.append(ce.parse_structured(b'{"cloudEventsVersion":"0.1","eventType":"old","source":"s","eventID":"x"}'))
    for i, e in enumerate(events):
        e.rid = f"boot-{i}"
    source, back = rf.wire.decode_events(rf.wire.encode_events(events, "http"))
    assert source == "http"
    assert [(e.type, e.id, e.rid, e.json) for e in back] == [(e.type, e.id, e.rid, e.json) for e in events]


@pytest.mark.parametrize("token, route", [
    ("n1.w0.abcdef", ("n1", 0)), ("node-x.w12.zzz", ("node-x", 12)),
    ("plain-token", None), ("n1.x0.abc", None), ("n1.w.abc", None), (".w1.abc", None),
])
def test_route_of(rf, token, route):
    assert rf.wire.route_of(token) == route
    if route:
        assert token.startswith(rf.wire.token_prefix(*route))
