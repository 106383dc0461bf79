"""Cluster wire formats: bus frames, event batches, connection-token routes. No I/O here.

Bus frame: 4-byte big-endian length of what follows, 1 kind byte, payload.
An event batch payload is ``<source>\\n<meta>\\n<event json>\\n<event json>...``:
``meta`` is one JSON array with ``[resume id, type, id]`` per event (plus the
extractor field values, ``keys``, when the node's reader sends them to a
worker), so the receiver neither decodes nor re-serializes the events: it
reuses each event's bytes as they are. Event JSON never contains a raw line
break (orjson's compact output, or a Kafka record the scanner took as it is,
which it only does without one), so the batch needs no escaping. Control
payloads (requests, replies, blacklist entries) are small JSON objects.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

from rigfast._ext import RecordEvent
from rigfast.cloudevents import Event

EVENTS, REQUEST, REPLY, BLACKLIST, HELLO, APIS, INTEREST, REPLAY, READY, KAFKA_STATE = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10
SUBMIT, ACK, SUBMITTED, LINKED = 11, 12, 13, 14
KIND_NAMES = {EVENTS: "events", REQUEST: "request", REPLY: "reply", BLACKLIST: "blacklist", HELLO: "hello", APIS: "apis",
              INTEREST: "interest", REPLAY: "replay", READY: "ready", KAFKA_STATE: "kafka_state",
              SUBMIT: "submit", ACK: "ack", SUBMITTED: "submitted", LINKED: "linked"}
# KAFKA_STATE (reader -> worker): the node reader's event-source health as JSON (the source's health()
# plus "reached", "consumed", "invalid"), sent on link-up and when it changes, at most every STATE_INTERVAL_S
# Submitted (HTTP) events, see docs/cluster.md "The flow of an event":
# SUBMIT (worker -> reader): ``<batch> <workers served directly, comma-separated>\n`` + an event batch
# ACK (reader -> worker): ``<batch>``: the reader has routed that SUBMIT and every one before it
# SUBMITTED (reader -> worker, or worker -> worker over the bus): ``<origin> <batch>\n`` + an event batch;
#   (origin, batch) names it once across both ways, so a worker delivers it once
# LINKED (reader -> worker): JSON list of the workers whose whole interest the reader holds

HEADER = struct.Struct("!IB")
MAX_FRAME_BYTES = 64 << 20


def encode_frame(kind: int, payload: bytes) -> bytes:
    return HEADER.pack(len(payload) + 1, kind) + payload


def encode_json_frame(kind: int, obj: Any) -> bytes:
    return encode_frame(kind, orjson.dumps(obj))


class FrameDecoder:
    """Feed bytes, get ``(kind, payload)`` pairs; raises ValueError on an oversized frame."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buf = self._buf
        buf += data
        out = []
        pos = 0
        n = len(buf)
        while n - pos >= 5:
            length, kind = HEADER.unpack_from(buf, pos)
            if length < 1 or length > MAX_FRAME_BYTES:
                raise ValueError(f"bad frame length {length}")
            end = pos + 4 + length
            if end > n:
                break
            out.append((kind, bytes(buf[pos + 5:end])))
            pos = end
        if pos:
            del buf[:pos]
        return out


def _keys_out(keys: dict) -> dict:
    # value keys are str (a JSON string) or bytes (canonical JSON of any other value): the latter as [text]
    return {k: v if type(v) is str else [v.decode()] for k, v in keys.items()}


def _keys_in(keys: dict) -> dict:
    return {k: v if type(v) is str else v[0].encode() for k, v in keys.items()}


def encode_events(events: list[Event], source: str, with_keys: bool = False) -> bytes:
    """``source`` line, the meta line, then one line per event with its JSON.

    ``with_keys``: also the events' extractor field values (reader to worker: same node, same EXTRACTORS)."""
    if with_keys:
        meta = [[e.rid, e.type, e.id] if e.keys is None else [e.rid, e.type, e.id, _keys_out(e.keys)] for e in events]
    else:
        meta = [[e.rid, e.type, e.id] for e in events]
    return b"\n".join([source.encode(), orjson.dumps(meta), *(e.json for e in events)])


def decode_events(payload: bytes) -> tuple[str, list[Event]]:
    """Inverse of :func:`encode_events`; events were validated where they entered the gateway, and are not
    decoded here (their ``obj`` is decoded from their bytes if someone needs it)."""
    source, _, rest = payload.partition(b"\n")
    meta_line, _, rest = rest.partition(b"\n")
    meta = orjson.loads(meta_line)
    raws = rest.split(b"\n") if rest else []
    if len(raws) != len(meta):
        raise ValueError(f"event batch: {len(meta)} events announced, {len(raws)} sent")
    out = [RecordEvent(m[1], m[2], raw, m[0], None if len(m) == 3 else _keys_in(m[3])) for m, raw in zip(meta, raws)]
    return source.decode(), out


def tagged(kind: int, head: str, payload: bytes) -> bytes:
    """A frame of ``head`` (one line, no line break) and ``payload``: SUBMIT, SUBMITTED."""
    return encode_frame(kind, head.encode() + b"\n" + payload)


def untag(payload: bytes) -> tuple[str, bytes]:
    """Inverse of :func:`tagged`: (head, payload)."""
    head, _, rest = payload.partition(b"\n")
    return head.decode(), rest


# -- connection tokens ------------------------------------------------------------

def token_prefix(node: str, worker: int) -> str:
    """Tokens are ``<node>.w<worker>.<144 random bits>``: the route to the owner, and unguessable."""
    return f"{node}.w{worker}."


def route_of(token: str) -> tuple[str, int] | None:
    """(node, worker) a token was issued by, or None for a token without a route."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0] or len(parts[1]) < 2 or parts[1][0] != "w" or not parts[1][1:].isdigit():
        return None
    return parts[0], int(parts[1][1:])
