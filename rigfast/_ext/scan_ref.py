"""Record scanner, plain Python: the contract of ``scan.pyx`` (see its docstring), kept with orjson.

The compiled scanner walks the bytes once without building Python objects;
without a C compiler there is no cheaper way in Python than orjson's
full decode, so this twin decodes the value and applies the same rules to
the object: :func:`scan` returns a :class:`RecordEvent` exactly for the
values ``cloudevents.parse_structured`` accepts whose bytes can be
forwarded as they are (no line break, a 0.2/0.3/1.0 event), with the
decoded object kept as its ``obj``; otherwise None (the caller then runs
the full parser).
"""

from __future__ import annotations

from array import array
from itertools import accumulate
from operator import attrgetter
from typing import Any, Callable, Iterable

import orjson

from rigfast.subscriptions import MISSING, walk_pointer

_SPEC_VERSIONS = ("0.2", "0.3", "1.0")
_REQUIRED = ("type", "id", "source")
_OPTIONAL = ("time", "subject", "datacontenttype", "dataschema", "contenttype", "schemaurl", "data_base64")


class RecordEvent:
    """A Kafka record's event as the scanner found it (see ``scan.pyx``)."""

    __slots__ = ("type", "id", "json", "keys", "seq", "_o", "_rid", "_topic", "_part", "_off")

    def __init__(self, type: str, id: str, json: bytes, rid: str = "", keys: dict | None = None):
        self.type, self.id, self.json, self.keys = type, id, json, keys
        self._rid, self.seq, self._o = rid, 0, None

    @property
    def rid(self) -> str:
        if self._rid is None:
            self._rid = f"k:{self._topic}:{self._part}:{self._off}"
        return self._rid

    @rid.setter
    def rid(self, value: str) -> None:
        self._rid = value

    @property
    def obj(self) -> Any:
        if self._o is None:
            self._o = orjson.loads(self.json)
        return self._o

    @obj.setter
    def obj(self, value: Any) -> None:
        self._o = value

    def __repr__(self) -> str:
        return f"Event({self.type!r}, id={self.id!r})"


def scan(value: bytes) -> RecordEvent | None:
    if 10 in value or 13 in value:
        return None
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if type(obj) is not dict or obj.get("specversion") not in _SPEC_VERSIONS:
        return None
    for name in _REQUIRED:
        v = obj.get(name)
        if type(v) is not str or not v:
            return None
    for name in _OPTIONAL:
        if name in obj and type(obj[name]) is not str:
            return None
    ev = RecordEvent(obj["type"], obj["id"], value)
    ev._o = obj
    return ev


def extract(value: bytes, paths: Iterable[tuple[str, tuple[str, ...]]], canon: Callable[[bytes], Any]) -> dict:
    obj = orjson.loads(value)
    out = {}
    for name, parts in paths:
        v = walk_pointer(obj, parts)
        if v is not MISSING:
            out[name] = v if type(v) is str else canon(orjson.dumps(v))
    return out


def _scanned(m: Any) -> RecordEvent | None:
    value = m.value() if m.error() is None and m.headers() is None else None
    ev = scan(value) if type(value) is bytes else None
    if ev is not None:
        ev._topic, ev._part, ev._off, ev._rid = m.topic(), m.partition(), m.offset(), None
    return ev


def scan_records(msgs: list, fallback: Callable[[Any], Any]) -> list:
    return [ev for m in msgs if (ev := _scanned(m) or fallback(m)) is not None]


_json = attrgetter("json")
_type = attrgetter("type")


def json_ends(events: list) -> array:
    return array("q", accumulate(map(len, map(_json, events)), initial=0))


def event_types(events: list) -> set:
    return set(map(_type, events))
