"""Cluster wire formats: bus frames, event batches, connection-token routes. No I/O here.

Bus frame: 4-byte big-endian length of what follows, 1 kind byte, payload.
An event batch payload is ``<source>\\n<event json>\\n<event json>...``: the
relayed events are HTTP/API submissions, whose JSON is orjson's compact
output and never contains a raw line break, so the batch needs no escaping
and the receiver reuses each event's bytes as they are. Control payloads
(requests, replies, blacklist entries) are small JSON objects.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

from rigfast.cloudevents import Event, relayed

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


def encode_events(events: list[Event], source: str) -> bytes:
    """``source`` line, then one ``<resume id> <event JSON>`` line per event."""
    return source.encode() + b"\n" + b"\n".join(e.rid.encode() + b" " + e.json for e in events)


def decode_events(payload: bytes) -> tuple[str, list[Event]]:
    """Inverse of :func:`encode_events`; events were validated where they were submitted."""
    source, _, rest = payload.partition(b"\n")
    out = []
    for line in rest.split(b"\n"):
        if not line:
            continue
        resume_id, _, raw = line.partition(b" ")
        ev = relayed(orjson.loads(raw), raw)
        ev.rid = resume_id.decode()
        out.append(ev)
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
