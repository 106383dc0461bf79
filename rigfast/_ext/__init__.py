"""Hot-path engine: compiled (Cython) when built, plain Python otherwise.

``RIGFAST_NO_EXTENSIONS=1`` forces the Python references at import time.
Each compiled module falls back to its Python twin (``<name>_ref``) on its
own, so a build that produced only some of them still uses those.
``MATCH_BUILD``, ``FRAMES_BUILD``, ``FANOUT_BUILD``, ``SCAN_BUILD`` and ``HEADS_BUILD`` say which one is in use
("cython" or "python"). The request path's modules compiled in place from
their own ``.py`` (``inplace.MODULES``: the HTTP/1 protocol, ...) are chosen by
``inplace.EngineFinder``, installed here; ``INPLACE_BUILDS`` says which engine
each one has. ``BUILD`` is "cython" when all are compiled, "python" when none
is, and "mixed" otherwise.
"""

from __future__ import annotations

import importlib
import os

from rigfast._ext import inplace

inplace.install()  # before anything imports a module of inplace.MODULES

_FORCE_PYTHON = os.environ.get("RIGFAST_NO_EXTENSIONS") == "1"


def _pick(name: str):
    """The compiled module ``name`` if it imports (and is allowed), else its ``_ref`` twin."""
    if not _FORCE_PYTHON:
        try:
            return importlib.import_module(f"rigfast._ext.{name}"), "cython"
        except ImportError:
            pass
    return importlib.import_module(f"rigfast._ext.{name}_ref"), "python"


_match, MATCH_BUILD = _pick("match")
_frames, FRAMES_BUILD = _pick("frames")
_fanout, FANOUT_BUILD = _pick("fanout")
_scan, SCAN_BUILD = _pick("scan")
_heads, HEADS_BUILD = _pick("heads")

SubscriptionIndex = _match.SubscriptionIndex
encode_sse = _frames.encode_sse
encode_ws_text = _frames.encode_ws_text
unquote = _frames.unquote
deliver = _fanout.deliver
flush_slice = _fanout.flush_slice
Recipient = _fanout.Recipient
RecordEvent = _scan.RecordEvent
scan_record = _scan.scan
scan_extract = _scan.extract
scan_records = _scan.scan_records
response_head = _heads.response_head
request_head = _heads.request_head
field_list = _heads.field_list
forward_fields = _heads.forward_fields
json_ends = _scan.json_ends
event_types = _scan.event_types

INPLACE_BUILDS = {name: inplace.build(name) for name in inplace.MODULES}

_builds = {MATCH_BUILD, FRAMES_BUILD, FANOUT_BUILD, SCAN_BUILD, HEADS_BUILD, *INPLACE_BUILDS.values()}
BUILD = _builds.pop() if len(_builds) == 1 else "mixed"
del _builds

__all__ = [
    "BUILD", "FANOUT_BUILD", "FRAMES_BUILD", "HEADS_BUILD", "INPLACE_BUILDS", "MATCH_BUILD", "SCAN_BUILD",
    "Recipient", "RecordEvent", "SubscriptionIndex", "deliver", "encode_sse", "encode_ws_text", "event_types",
    "field_list", "flush_slice", "forward_fields", "json_ends", "response_head", "scan_extract", "scan_record",
    "scan_records", "unquote",
]
