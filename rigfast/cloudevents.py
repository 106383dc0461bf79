"""CloudEvents: parse submitted/consumed events, make the gateway's own.

An :class:`Event` keeps the published JSON object as it was (attributes and
extensions preserved) plus its compact serialization, made once and shared
by every recipient.
"""

from __future__ import annotations

from datetime import datetime, timezone
from random import getrandbits as _getrandbits
from time import time as _time
from typing import Any, Mapping

import orjson

from rigfast.errors import CloudEventError

SPEC_VERSIONS = ("0.2", "0.3", "1.0")

# 0.1 attribute names (camelCase) keyed by their lowercased header form.
_V01_NAMES = {
    n.lower(): n
    for n in ("eventType", "eventTypeVersion", "cloudEventsVersion", "source", "eventID", "eventTime", "schemaURL", "contentType", "extensions")
}


class Event:
    """A validated CloudEvent. ``json`` is the compact serialization sent to frontends."""

    __slots__ = ("type", "id", "obj", "json", "seq", "rid")

    def __init__(self, etype: str, eid: str, obj: dict, json: bytes | None = None):
        self.type = etype
        self.id = eid
        self.obj = obj
        self.json = orjson.dumps(obj) if json is None else json
        self.seq = 0  # this worker's sequence number, set by the hub
        self.rid = ""  # resume id (SSE id:): set where the event entered the gateway, the same on every worker

    def __repr__(self) -> str:
        return f"Event({self.type!r}, id={self.id!r})"


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
    if raw is not None and (b"\n" in raw or b"\r" in raw):
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
        return Event(etype, eid, obj, raw)
    if "cloudEventsVersion" in obj:
        _require_str(obj, "cloudEventsVersion")
        etype = _require_str(obj, "eventType")
        eid = _require_str(obj, "eventID")
        _require_str(obj, "source")
        return Event(etype, eid, obj, raw)
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


def is_json_media(content_type: str | None) -> bool:
    if not content_type:
        return False
    mt = content_type.split(";", 1)[0].strip().lower()
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


_now_cache: list = [0, ""]  # [epoch ms, its RFC 3339 text]: gateway events made in one ms share it


def now_rfc3339() -> str:
    ms = int(_time() * 1000)
    if ms != _now_cache[0]:
        _now_cache[0] = ms
        _now_cache[1] = datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return _now_cache[1]


def random_uuid4() -> str:
    """A version-4 UUID string from the process PRNG: unique ids for gateway events, not secrets."""
    h = "%032x" % _getrandbits(128)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def make_event(etype: str, data: Any) -> Event:
    """A gateway-made event (source "rig", fresh UUID id, RFC 3339 time)."""
    eid = random_uuid4()
    obj = {"specversion": "1.0", "type": etype, "source": "rig", "id": eid, "time": now_rfc3339(), "data": data}
    return Event(etype, eid, obj)
