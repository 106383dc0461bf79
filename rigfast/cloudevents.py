"""CloudEvents: the event type, validation, the HTTP and Kafka bindings, the gateway's own events.

An :class:`Event` keeps the published JSON object as it was (attributes and
extensions preserved) plus its compact serialization, made once and shared
by every recipient. The Kafka fast path's event is the record scanner's
``RecordEvent`` (``rigfast._ext``): the same interface, found in the record
bytes without decoding them.

Bindings: :func:`parse_http_event` (HTTP: batched mode, binary mode with
``ce-`` headers, else structured), :func:`parse_kafka_message` (Kafka: binary mode with
``ce_`` headers and a content type that is not CloudEvents JSON, else
structured); one structured event, over HTTP or Kafka, is first tried by the
record scanner (:func:`parse_structured_fast`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from time import time as _time
from typing import Any, Iterable, Mapping

import orjson

from rigfast._ext import scan_record
from rigfast.errors import CloudEventError, RigError
from rigfast.ids import random_uuid4

SPEC_VERSIONS = ("0.2", "0.3", "1.0")
STRUCTURED_MEDIA_TYPE = "application/cloudevents+json"

# 0.1 attribute names (camelCase) keyed by their lowercased header form.
_V01_NAMES = {
    n.lower(): n
    for n in ("eventType", "eventTypeVersion", "cloudEventsVersion", "source", "eventID", "eventTime", "schemaURL", "contentType", "extensions")
}


class Event:
    """A validated CloudEvent. ``json`` is the compact serialization sent to frontends.

    ``keys``: the extractor field values of the event's type (value keys), set by the first
    match on fields (``hub.event_keys``) or carried over from the node's reader."""

    __slots__ = ("type", "id", "obj", "json", "seq", "rid", "keys")

    def __init__(self, etype: str, eid: str, obj: dict, json: bytes | None = None):
        self.type = etype
        self.id = eid
        self.obj = obj
        self.json = orjson.dumps(obj) if json is None else json
        self.seq = 0  # this worker's sequence number, set by the hub
        self.rid = ""  # resume id (SSE id:): set where the event entered the gateway, the same on every worker
        self.keys = None

    def __repr__(self) -> str:
        return f"Event({self.type!r}, id={self.id!r})"


def _event(etype: str, eid: str, obj: dict, raw: bytes | None) -> Event:
    try:
        return Event(etype, eid, obj, raw)
    except TypeError as exc:  # orjson cannot serialize it (nested deeper than 255 levels)
        raise CloudEventError(f"the event cannot be forwarded as JSON: {exc}") from None


def _require_str(obj: Mapping, name: str) -> str:
    if name not in obj:
        raise CloudEventError(f"missing required attribute {name!r}")
    v = obj[name]
    if not isinstance(v, str) or not v:
        raise CloudEventError(f"attribute {name!r} must be a non-empty string")
    return v


def validate(obj: Any, raw: bytes | None = None) -> Event:
    """Check a decoded CloudEvent object (0.1, 0.2, 0.3 or 1.0) and wrap it.

    ``raw``: the JSON text ``obj`` was decoded from; forwarded as it is when it
    holds no line break (an SSE ``data:`` line must be one line).
    """
    # find, not ``in``: ``bytes in bytes`` first tries the needle as an int and raises (and clears) a TypeError
    if raw is not None and (raw.find(b"\n") >= 0 or raw.find(b"\r") >= 0):
        raw = None
    if not isinstance(obj, dict):
        raise CloudEventError("a CloudEvent must be a JSON object")
    if "specversion" in obj:
        sv = obj["specversion"]
        if sv not in SPEC_VERSIONS:
            raise CloudEventError(f"unsupported specversion {sv!r} (supported: 0.1, 0.2, 0.3, 1.0)")
        etype = _require_str(obj, "type")
        eid = _require_str(obj, "id")
        _require_str(obj, "source")
        for opt in ("time", "subject", "datacontenttype", "dataschema", "contenttype", "schemaurl"):
            if opt in obj and not isinstance(obj[opt], str):
                raise CloudEventError(f"attribute {opt!r} must be a string")
        if "data_base64" in obj and not isinstance(obj["data_base64"], str):
            raise CloudEventError("attribute 'data_base64' must be a string")
        return _event(etype, eid, obj, raw)
    if "cloudEventsVersion" in obj:
        _require_str(obj, "cloudEventsVersion")
        etype = _require_str(obj, "eventType")
        eid = _require_str(obj, "eventID")
        _require_str(obj, "source")
        return _event(etype, eid, obj, raw)
    raise CloudEventError("missing required attribute 'specversion'")


def parse_structured(body: bytes) -> Event:
    """Structured mode: the body is the whole event as JSON."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CloudEventError(f"body is not valid JSON: {exc}") from None
    return validate(obj, body.strip() if type(body) is bytes else None)


BATCH_MEDIA_TYPE = "application/cloudevents-batch+json"


def parse_batch(body: bytes) -> list[Event]:
    """Batched mode: the body is a JSON array of structured events, all validated or none.

    The error of the first bad event names its index ("event 3: ...").
    """
    try:
        items = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise CloudEventError(f"body is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise CloudEventError("a batch must be a JSON array of CloudEvents")
    if not items:
        raise CloudEventError("empty batch: expected at least one CloudEvent")
    events = []
    for i, obj in enumerate(items):
        try:
            events.append(validate(obj))
        except CloudEventError as exc:
            raise CloudEventError(f"event {i} of the batch: {exc.message}") from None
    return events


def media_type(content_type: str) -> str:
    """``type/subtype`` of a content type, lowercased, parameters stripped."""
    return content_type.split(";", 1)[0].strip().lower()


def is_json_media(content_type: str | None) -> bool:
    if not content_type:
        return False
    mt = media_type(content_type)
    return mt == "application/json" or mt.endswith("+json") or mt == "text/json"


def parse_binary(attrs: Mapping[str, str], data: bytes, content_type: str | None) -> Event:
    """Binary mode: ``attrs`` are the ce-/ce_ attributes (names lowercased), ``data`` the body."""
    obj: dict[str, Any] = {}
    v01 = "specversion" not in attrs and "cloudeventsversion" in attrs
    for name, value in attrs.items():
        obj[_V01_NAMES.get(name, name) if v01 else name] = value
    if content_type:
        obj["contentType" if v01 else ("datacontenttype" if obj.get("specversion") in ("1.0", "0.3") else "contenttype")] = content_type
    if data:
        if is_json_media(content_type) or not content_type:
            try:
                obj["data"] = orjson.loads(data)
            except orjson.JSONDecodeError as exc:
                raise CloudEventError(f"data is not valid JSON ({content_type or 'no content-type'}): {exc}") from None
        elif content_type.lower().startswith("text/"):
            try:
                obj["data"] = data.decode("utf-8")
            except UnicodeDecodeError:
                raise CloudEventError("text data is not valid UTF-8") from None
        else:
            import base64

            obj["data_base64"] = base64.b64encode(data).decode("ascii")
    return validate(obj)


# -- HTTP binding --------------------------------------------------------------------------------

def parse_http_event(req: Any) -> Event | list[Event]:
    """HTTP binding (``req`` has ``headers``, lowercased name/value byte pairs, and ``body``):
    batched mode (a list) for application/cloudevents-batch+json, binary mode when
    ce-specversion (or 0.1's ce-cloudeventsversion) is set, else structured."""
    ctype = None
    ce = None
    for k, v in req.headers:  # one pass: content-type and any ce- attributes
        if k == b"content-type":
            ctype = v.decode("latin-1")
        elif k[:3] == b"ce-" and len(k) > 3:
            try:
                (ce := ce or {})[k[3:].decode("ascii")] = v.decode("utf-8")
            except UnicodeDecodeError:
                raise CloudEventError(f"header {k.decode('latin-1')} is not valid UTF-8") from None
    # the two usual values are their own media type (lowercase, no parameters): no parsing
    mt = ctype if ctype == STRUCTURED_MEDIA_TYPE or ctype == "application/json" else media_type(ctype) if ctype else None
    if mt == BATCH_MEDIA_TYPE:
        if not req.body:
            raise CloudEventError("empty body: expected a JSON array of CloudEvents")
        return parse_batch(req.body)
    if ce and ("specversion" in ce or "cloudeventsversion" in ce):
        return parse_binary(ce, req.body, ctype)
    if mt is not None and mt not in (STRUCTURED_MEDIA_TYPE, "application/json"):
        # any other content type is binary mode (as RIG): the attributes must come in ce- headers
        missing = ", ".join("ce-" + n for n in ("specversion", "type", "source", "id") if n not in (ce or ()))
        raise CloudEventError(
            f"binary mode (content-type {mt!r}): missing header {missing}; structured mode takes "
            f"application/cloudevents+json or application/json, batched mode {BATCH_MEDIA_TYPE}"
        )
    body = req.body
    if not body:
        raise CloudEventError("empty body: expected a CloudEvent as JSON")
    if type(body) is bytes:
        # the scanner on what parse_structured would forward; what it is unsure of gets the full parser
        ev = scan_record(body.strip())
        if ev is not None:
            return ev
    return parse_structured(body)


# -- Kafka binding -------------------------------------------------------------------------------

def parse_structured_fast(value: bytes) -> Event:
    """Structured mode: the record scanner finds type and id in the bytes and keeps them as the event JSON.

    What the scanner is not sure of (a line break: the event is re-serialized on one line;
    CloudEvents 0.1; anything invalid, which gets its precise message) takes the full parser."""
    ev = scan_record(value)
    if ev is None:
        return parse_structured(value)
    return ev  # type: ignore[return-value]


def _header_str(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bytes):
        try:
            return v.decode("utf-8")
        except UnicodeDecodeError:
            raise CloudEventError("a header value is not valid UTF-8") from None
    return str(v)


def parse_kafka_message(value: bytes | None, headers: Iterable[tuple[str, Any]] | None) -> Event:
    """Kafka binding: one record (value, headers) to an Event; raises CloudEventError."""
    if headers:
        content_type = None
        for k, v in headers:
            if k.lower() == "content-type":
                content_type = _header_str(v)
                break
        if content_type is not None and media_type(content_type) != STRUCTURED_MEDIA_TYPE:
            attrs = {}
            for k, v in headers:
                kl = k.lower()
                if kl.startswith("ce_") and len(kl) > 3:
                    attrs[kl[3:]] = _header_str(v)
            return parse_binary(attrs, value or b"", content_type)
    if not value:
        raise CloudEventError("empty message")
    return parse_structured_fast(value)


# -- the gateway's own events --------------------------------------------------------------------

# [epoch ms, its RFC 3339 text, epoch second, its text up to the seconds]: gateway events made in
# one ms share the text; a new ms within the same second only formats its milliseconds
_now_cache: list = [0, "", -1, ""]


def now_rfc3339() -> str:
    ms = int(_time() * 1000)
    if ms != _now_cache[0]:
        sec, frac = divmod(ms, 1000)
        if sec != _now_cache[2]:
            _now_cache[2] = sec
            _now_cache[3] = datetime.fromtimestamp(sec, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        _now_cache[0] = ms
        _now_cache[1] = "%s.%03dZ" % (_now_cache[3], frac)
    return _now_cache[1]


def gateway_json(etype: str, eid: str, now: str, data_json: bytes) -> bytes:
    """``orjson.dumps`` of a gateway event's object (see :func:`make_event`) whose data serializes to
    ``data_json``: the keys in that order, compact; the id and time are plain ASCII."""
    return b"".join((b'{"specversion":"0.2","type":', orjson.dumps(etype), b',"source":"rig","id":"', eid.encode(),
                     b'","time":"', now.encode(), b'","data":', data_json, b"}"))


def make_event(etype: str, data: Any) -> Event:
    """A gateway-made event: specversion 0.2 as RIG 3.0 makes them, source "rig", fresh UUID id, RFC 3339 time."""
    eid = random_uuid4()
    now = now_rfc3339()
    obj = {"specversion": "0.2", "type": etype, "source": "rig", "id": eid, "time": now, "data": data}
    return Event(etype, eid, obj, gateway_json(etype, eid, now, orjson.dumps(data)))
