"""The CloudEvent bindings (rigfast.cloudevents): HTTP structured/binary/batched, Kafka fast path/binary, relayed."""

from __future__ import annotations

import json

import pytest

EVENT = {"specversion": "1.0", "type": "t.one", "source": "s", "id": "1", "data": {"k": [1, 2]}, "ext1": "x"}


class Req:
    def __init__(self, headers: dict, body: bytes):
        self.headers = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        self.body = body


def test_http_structured_keeps_the_event_as_sent(rf):
    body = json.dumps(EVENT).encode()
    e = rf.cloudevents.parse_http_event(Req({"content-type": "application/cloudevents+json; charset=utf-8"}, body))
    assert (e.type, e.id) == ("t.one", "1") and json.loads(e.json) == EVENT and e.obj["ext1"] == "x"


def test_http_structured_is_the_full_parsers_event(rf):
    """One structured event over HTTP is first tried by the record scanner: the event (type, id, the JSON
    forwarded, the object) and every refusal's message are what parse_structured gives for the body."""
    compact = json.dumps(EVENT, separators=(",", ":")).encode()
    ok = [compact, b"  " + compact + b" ", b"  " + compact + b"\r\n", json.dumps(EVENT).encode(), json.dumps(EVENT, indent=1).encode(),
          json.dumps({"cloudEventsVersion": "0.1", "eventType": "t", "eventID": "2", "source": "s"}).encode()]
    for body in ok:
        got = rf.cloudevents.parse_http_event(Req({"content-type": "application/cloudevents+json"}, body))
        want = rf.cloudevents.parse_structured(body)
        assert (got.type, got.id, got.json, got.obj) == (want.type, want.id, want.json, want.obj)
    assert type(rf.cloudevents.parse_http_event(Req({"content-type": "application/json"}, compact))).__name__ == "RecordEvent"
    for body in (b"  {\"specversion\": 1}", b"{\"specversion\":\"1.0\",\"type\":\"t\"}", b" [1]", b"  {nope"):
        with pytest.raises(rf.errors.CloudEventError) as got_error:
            rf.cloudevents.parse_http_event(Req({"content-type": "application/json"}, body))
        with pytest.raises(rf.errors.CloudEventError) as want_error:
            rf.cloudevents.parse_structured(body)
        assert got_error.value.message == want_error.value.message


def test_http_binary_mode(rf):
    e = rf.cloudevents.parse_http_event(Req({"ce-specversion": "1.0", "ce-type": "t.bin", "ce-source": "s", "ce-id": "9",
                                             "content-type": "application/json"}, b'{"a": 1}'))
    assert (e.type, e.id) == ("t.bin", "9") and e.obj["data"] == {"a": 1} and e.obj["datacontenttype"] == "application/json"


def test_http_binary_text_and_bytes(rf):
    ce = {"ce-specversion": "1.0", "ce-type": "t", "ce-source": "s", "ce-id": "1"}
    assert rf.cloudevents.parse_http_event(Req(dict(ce, **{"content-type": "text/plain"}), b"hi")).obj["data"] == "hi"
    e = rf.cloudevents.parse_http_event(Req(dict(ce, **{"content-type": "application/octet-stream"}), b"\x00\xff"))
    assert e.obj["data_base64"] == "AP8="


def test_http_batch(rf):
    body = json.dumps([EVENT, dict(EVENT, id="2")]).encode()
    events = rf.cloudevents.parse_http_event(Req({"content-type": "application/cloudevents-batch+json"}, body))
    assert [e.id for e in events] == ["1", "2"]


def test_http_batch_names_the_bad_event(rf):
    body = json.dumps([EVENT, {"specversion": "1.0"}]).encode()
    with pytest.raises(rf.errors.CloudEventError, match="event 1"):
        rf.cloudevents.parse_http_event(Req({"content-type": "application/cloudevents-batch+json"}, body))


@pytest.mark.parametrize("obj, message", [
    ({"type": "t", "source": "s", "id": "1"}, "specversion"),
    ({"specversion": "9.9", "type": "t", "source": "s", "id": "1"}, "unsupported specversion"),
    ({"specversion": "1.0", "type": "", "source": "s", "id": "1"}, "'type' must be a non-empty string"),
    ({"specversion": "1.0", "type": "t", "source": "s", "id": "1", "time": 5}, "'time' must be a string"),
    ([1], "must be a JSON object"),
])
def test_invalid_events_say_why(rf, obj, message):
    with pytest.raises(rf.errors.CloudEventError, match=message):
        rf.cloudevents.parse_structured(json.dumps(obj).encode())


def test_http_other_media_type_is_binary_mode_400(rf):
    """As RIG: any content type other than the JSON ones is binary mode; without ce-specversion it is 400."""
    with pytest.raises(rf.errors.RigError) as info:
        rf.cloudevents.parse_http_event(Req({"content-type": "text/xml"}, b"<x/>"))
    assert info.value.status == 400 and "ce-specversion" in info.value.message


def test_media_type_strip(rf):
    assert rf.cloudevents.media_type(" Application/CloudEvents+JSON ; charset=utf-8") == "application/cloudevents+json"


def test_kafka_fast_path_keeps_the_record_bytes(rf):
    value = json.dumps(EVENT).encode()
    e = rf.cloudevents.parse_kafka_message(value, None)
    assert isinstance(e, rf.ext.RecordEvent) and e.json is value and e.obj == EVENT


def test_kafka_value_with_a_line_break_is_one_line(rf):
    value = json.dumps(EVENT, indent=2).encode()
    e = rf.cloudevents.parse_kafka_message(value, [("content-type", b"application/cloudevents+json")])
    assert b"\n" not in e.json and json.loads(e.json) == EVENT


def test_kafka_binary_mode(rf):
    headers = [("ce_specversion", b"1.0"), ("ce_type", b"k.bin"), ("ce_source", b"s"), ("ce_id", b"5"),
               ("content-type", b"application/json")]
    e = rf.cloudevents.parse_kafka_message(b'{"v": 2}', headers)
    assert (e.type, e.id, e.obj["data"]) == ("k.bin", "5", {"v": 2})


def test_kafka_cloudevents_01_takes_the_full_validator(rf):
    v01 = {"cloudEventsVersion": "0.1", "eventType": "old", "source": "s", "eventID": "x"}
    e = rf.cloudevents.parse_kafka_message(json.dumps(v01).encode(), None)
    assert (e.type, e.id) == ("old", "x") and not isinstance(e, rf.ext.RecordEvent)


def test_kafka_invalid_and_empty(rf):
    with pytest.raises(rf.errors.CloudEventError, match="'id'"):
        rf.cloudevents.parse_kafka_message(b'{"specversion":"1.0","type":"t","source":"s"}', None)
    with pytest.raises(rf.errors.CloudEventError, match="empty"):
        rf.cloudevents.parse_kafka_message(b"", None)


