"""What the fuzz targets found, kept as plain regression tests."""

from __future__ import annotations

import pytest

from rigfast import cloudevents
from rigfast.errors import CloudEventError
from tests.fuzz.engine import inprocess_gateway
from tests.inprocess.harness import http_request, parse_responses


def _nested(depth: int, newline: bool = False) -> bytes:
    sep = b"\n" if newline else b""
    return (b'{"specversion":"1.0","type":"t","source":"s","id":"1",' + sep + b'"data":'
            + b"[" * depth + b"]" * depth + b"}")


def test_deeply_nested_event_with_line_break_is_400_not_500():
    """Found by test_fuzz_structured_and_kafka: an event that decodes (under orjson's 1024 levels)
    but holds a line break is re-serialized, and orjson's encoder stops at 255 levels: TypeError,
    answered 500 "internal error". Now a 400 naming the problem."""
    with inprocess_gateway() as g:
        c = g.client()
        c.send(http_request("POST", "/_rig/v1/events", _nested(400, newline=True), {"content-type": "application/cloudevents+json"}))
        g.settle()
        (status, _, body), = parse_responses(c.read())
        assert status == 400, body
        assert b"cannot be forwarded as JSON" in body


@pytest.mark.parametrize("depth", [1100, 5000, 200_000])
def test_kafka_fast_path_agrees_on_deep_nesting(depth):
    """Found by test_fuzz_structured_and_kafka: msgspec (the Kafka fast path) accepted nesting
    beyond orjson's limit (or raised RecursionError), so Kafka took events HTTP refuses, and
    their ``obj`` could not be decoded later (fan-out and resume filtering failed on them).
    Now both paths refuse them with CloudEventError."""
    value = _nested(depth)
    for parse in (cloudevents.parse_structured, cloudevents.parse_structured_fast,
                  lambda v: cloudevents.parse_kafka_message(v, None)):
        with pytest.raises(CloudEventError, match="depth"):
            parse(value)
