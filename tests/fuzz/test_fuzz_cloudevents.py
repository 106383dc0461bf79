"""Fuzz the CloudEvent bindings: structured, batched and binary HTTP, and Kafka records.

Properties: a bad input raises CloudEventError (a 400 naming the problem), never anything else;
an accepted event has a non-empty string type and id and a JSON serialization on one line (an
SSE data: line) that decodes to the same type; the fast structured path (Kafka, and HTTP
structured mode) accepts exactly what the full validator accepts, with the same type and id.
"""

from __future__ import annotations

import json

import orjson
from hypothesis import given
from hypothesis import strategies as st

from rigfast import cloudevents
from rigfast.errors import CloudEventError
from tests.fuzz.conftest import FUZZ

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
ATTR = st.sampled_from(["t", "", "x.y", "a\nb"]) | st.integers() | st.none() | JSON


@st.composite
def event_obj(draw):
    obj = {}
    version = draw(st.sampled_from(["1.0", "0.3", "0.2", "0.1", "2.0", 1.0, None]))
    if version == "0.1":
        for k in ("cloudEventsVersion", "eventType", "eventID", "source"):
            if draw(st.integers(0, 9)):
                obj[k] = draw(ATTR) if draw(st.integers(0, 4)) == 0 else "v"
        obj["cloudEventsVersion"] = "0.1"
    elif version is not None:
        obj["specversion"] = version
        for k in ("type", "id", "source"):
            if draw(st.integers(0, 9)):
                obj[k] = draw(ATTR) if draw(st.integers(0, 4)) == 0 else draw(st.text(min_size=1, max_size=6))
    for k in draw(st.lists(st.sampled_from(["data", "time", "subject", "datacontenttype", "data_base64", "ext"]), max_size=3)):
        obj[k] = draw(JSON)
    if draw(st.integers(0, 5)) == 0:
        obj["data"] = draw(st.integers(1, 3000).map(lambda n: json.loads("[" * min(n, 900) + "]" * min(n, 900))))
    return obj


def serialized(draw_obj):
    return draw_obj.flatmap(lambda o: st.sampled_from([
        json.dumps(o).encode(), json.dumps(o, indent=1).encode(), b"  " + json.dumps(o).encode() + b"\n",
        json.dumps(o).encode()[:-1],
    ]))


DEEP = st.integers(1000, 200_000).map(lambda n: b'{"specversion":"1.0","type":"t","source":"s","id":"1","data":' + b"[" * n + b"]" * n + b"}")
BODY = serialized(event_obj()) | st.binary(max_size=80) | DEEP | st.integers(1000, 200_000).map(lambda n: b"[" * n)


def _accepted(ev) -> None:
    assert isinstance(ev.type, str) and ev.type and isinstance(ev.id, str) and ev.id
    assert b"\n" not in ev.json and b"\r" not in ev.json
    obj = orjson.loads(ev.json)
    assert (obj["type"] if "specversion" in obj else obj["eventType"]) == ev.type


def _outcome(fn, *args):
    try:
        ev = fn(*args)
    except CloudEventError as exc:
        assert exc.message
        return None
    _accepted(ev)
    return ev.type, ev.id


@FUZZ
@given(BODY)
def test_fuzz_structured_and_kafka(body):
    full = _outcome(cloudevents.parse_structured, body)
    fast = _outcome(cloudevents.parse_structured_fast, body)
    assert fast == full, (fast, full)
    assert _outcome(cloudevents.parse_kafka_message, body, None) == full
    assert _outcome(cloudevents.parse_kafka_message, body, [("content-type", b"application/cloudevents+json")]) == full


@FUZZ
@given(st.lists(event_obj(), max_size=4).map(lambda l: json.dumps(l).encode()) | BODY)
def test_fuzz_batch(body):
    try:
        events = cloudevents.parse_batch(body)
    except CloudEventError as exc:
        assert exc.message
        return
    assert events
    for ev in events:
        _accepted(ev)


HEADER_VALUE = st.text(max_size=10) | st.sampled_from(["1.0", "0.3", "0.1", "t", ""])
CTYPE = st.none() | st.sampled_from(["application/json", "text/plain", "application/octet-stream", "text/plain; charset=utf-8",
                                     "application/cloudevents+json", "APPLICATION/JSON", "x+json", ""])


@FUZZ
@given(st.dictionaries(st.sampled_from(["specversion", "type", "source", "id", "cloudeventsversion", "eventtype",
                                        "eventid", "time", "subject", "x"]), HEADER_VALUE, max_size=6),
       st.binary(max_size=40) | serialized(event_obj()), CTYPE)
def test_fuzz_binary_http_and_kafka(attrs, data, ctype):
    _outcome(cloudevents.parse_binary, attrs, data, ctype)
    headers = [("ce_" + k, v.encode()) for k, v in attrs.items()]
    if ctype is not None:
        headers.append(("content-type", ctype.encode()))
    if headers and ctype is not None and data:
        _outcome(cloudevents.parse_kafka_message, data, headers + [("ce_bad", b"\xff")])
    _outcome(cloudevents.parse_kafka_message, data, headers)
