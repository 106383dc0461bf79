"""Record scanner (rigfast._ext.scan): the compiled scanner and its Python twin against the full parser.

The full parser is ``cloudevents.parse_structured`` (orjson, then the CloudEvent rules). Properties,
on both engines:

- sound: what the scanner takes, the full parser accepts, with the same type and id, and the value is
  kept as the event JSON; whatever the full parser rejects, the scanner does not take;
- complete on the common case: a structured 0.2/0.3/1.0 event with plain top-level keys and no line
  break is taken (whitespace, escapes in values, nesting, duplicate keys and all);
- ``extract`` finds what ``Extractors.extract`` finds in the decoded event (last duplicate key wins).

The compiled-engine tests skip with the reason when ``scan.pyx`` is not built or RIGFAST_NO_EXTENSIONS=1.
"""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rigfast import cloudevents
from rigfast._ext import scan_ref
from rigfast.errors import CloudEventError
from rigfast.subscriptions import Extractors, json_value_key, pointer_parts
from tests.unit.compiled import load_compiled

compiled_scan, needs_compiled = load_compiled("scan")

IMPLS = [
    pytest.param(scan_ref, id="python"),
    pytest.param(compiled_scan, id="cython", marks=needs_compiled),
]
PROPS = settings(max_examples=120, deadline=None)


def full(value: bytes):
    """(type, id) as the full parser sees the record, or None when it rejects it."""
    try:
        ev = cloudevents.parse_structured(value)
    except CloudEventError:
        return None
    return ev.type, ev.id


def check_sound(impl, value: bytes):
    """The scanner's answer is None or the full parser's; returns the scanned event."""
    ev = impl.scan(value)
    if ev is not None:
        assert full(value) == (ev.type, ev.id), value
        assert ev.json is value
        assert b"\n" not in value and b"\r" not in value
    return ev


# -- generated JSON text: random whitespace, escapes, duplicate keys --------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=10)
# doubles whose text has a small exponent (the scanner leaves magnitudes near a double's limits to orjson)
FLOATS = st.floats(-1e250, 1e250).filter(lambda x: x == 0 or abs(x) > 1e-250)
SCALAR = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | FLOATS | TEXT
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                     max_leaves=10)
WS = st.sampled_from(["", "", "", " ", "  ", "\t", " \t "])


def _escaped(ch: str) -> str:
    cp = ord(ch)
    if cp > 0xFFFF:  # a surrogate pair
        cp -= 0x10000
        return "\\u%04x\\u%04X" % (0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF))
    return "\\u%04x" % cp


@st.composite
def json_string(draw, s: str, escape: bool = True) -> str:
    """``s`` as a JSON string: characters that must be escaped are, and (one choice per string) every
    character, every other one, or none of the rest as \\uXXXX, ``/`` as ``\\/``."""
    step = draw(st.sampled_from([0, 0, 1, 2])) if escape else 0
    out = ['"']
    for i, ch in enumerate(s):
        if ch in '"\\' or ord(ch) < 0x20:
            out.append(json.dumps(ch)[1:-1] if i % 2 else _escaped(ch))
        elif step and i % step == 0:
            out.append("\\/" if ch == "/" else _escaped(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


@st.composite
def json_text(draw, v, escape_keys: bool = True) -> str:
    """``v`` as JSON text, with optional whitespace around tokens and escapes in strings."""
    ws = draw(WS)
    if isinstance(v, str):
        return draw(json_string(v))
    if isinstance(v, dict):
        items = [ws + draw(json_string(k, escape_keys)) + draw(WS) + ":" + draw(WS) + draw(json_text(x)) + draw(WS)
                 for k, x in v.items()]
        return "{" + ",".join(items) + ws + "}"
    if isinstance(v, list):
        return "[" + ",".join(draw(WS) + draw(json_text(x)) + draw(WS) for x in v) + ws + "]"
    if isinstance(v, float) and draw(st.booleans()):
        return repr(v).replace("e+", "E+") if "e" in repr(v) else repr(v)
    return json.dumps(v)


ATTRS = ("type", "id", "source")
OPTIONAL = ("time", "subject", "datacontenttype", "dataschema", "contenttype", "schemaurl", "data_base64")


@st.composite
def event_members(draw, valid: bool):
    """(key, value) pairs of a top-level object, duplicates allowed (the last one counts)."""
    members = [("specversion", draw(st.sampled_from(["1.0", "0.3", "0.2"])) if valid else
                draw(st.sampled_from(["1.0", "0.2", "1.1", "", 1.0, None])))]
    for k in ATTRS:
        good = draw(st.text(min_size=1, max_size=8))
        members.append((k, good if valid else draw(st.sampled_from([good, "", 5, None, [good]]))))
    for k in draw(st.lists(st.sampled_from(OPTIONAL), max_size=2)):
        members.append((k, draw(TEXT) if valid else draw(SCALAR)))
    members.append(("data", draw(VALUE)))
    for k in draw(st.lists(st.sampled_from(["ext", "data", "Type", "idx"]), max_size=2)):
        members.append((k, draw(VALUE)))
    members = draw(st.permutations(members))
    if draw(st.booleans()):  # duplicates: an earlier copy of an attribute, valid or not, then the real one
        k = draw(st.sampled_from(["type", "id", "specversion", "data"]))
        members.insert(0, (k, draw(SCALAR)))
    return members


@st.composite
def event_text(draw, valid: bool = True, escape_keys: bool = False) -> bytes:
    members = draw(event_members(valid))
    parts = [draw(WS) + draw(json_string(k, escape_keys)) + draw(WS) + ":" + draw(WS) + draw(json_text(v)) + draw(WS)
             for k, v in members]
    return (draw(WS) + "{" + ",".join(parts) + "}" + draw(WS)).encode()


@st.composite
def mutated(draw) -> bytes:
    b = bytearray(draw(event_text(valid=draw(st.booleans()))))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(b)))
        op = draw(st.integers(0, 2))
        byte = draw(st.sampled_from([0x22, 0x5C, 0x7B, 0x7D, 0x5B, 0x5D, 0x2C, 0x3A, 0x00, 0x1F, 0x80, 0xC3, 0xED,
                                     0xF4, 0xFF, 0x65, 0x2E, 0x2D, 0x30, 0x75]))
        if op == 0:
            b.insert(i, byte)
        elif op == 1 and i < len(b):
            del b[i]
        elif i < len(b):
            b[i] = byte
    return bytes(b)


@pytest.mark.parametrize("impl", IMPLS)
@PROPS
@given(value=event_text())
def test_common_case_is_taken(impl, value):
    """A valid event with plain top-level keys and no line break: taken, same type and id as the full parser."""
    ev = check_sound(impl, value)
    assert ev is not None, value
    obj = orjson.loads(value)
    assert (ev.type, ev.id) == (obj["type"], obj["id"]) and ev.obj == obj


@pytest.mark.parametrize("impl", IMPLS)
@PROPS
@given(value=event_text(valid=False, escape_keys=True) | mutated() | st.binary(max_size=60))
def test_never_takes_what_the_full_parser_rejects(impl, value):
    """Invalid attributes, escaped keys, broken JSON, random bytes: the scanner is sound on all of them."""
    check_sound(impl, value)


@needs_compiled
@PROPS
@given(value=event_text(valid=False, escape_keys=True) | mutated())
def test_compiled_and_python_agree(value):
    a, b = compiled_scan.scan(value), scan_ref.scan(value)
    if a is not None and b is not None:
        assert (a.type, a.id) == (b.type, b.id)
    if b is None:  # the twin decides with orjson: it takes everything valid and forwardable
        assert a is None


EVENT = {"specversion": "1.0", "type": "t", "id": "1", "source": "s"}


def ev_bytes(extra: bytes | str = b"", **attrs) -> bytes:
    """A valid event with ``attrs`` replaced and ``extra`` (JSON text) appended before the closing brace."""
    obj = {**EVENT, **attrs}
    extra = extra.encode() if isinstance(extra, str) else extra
    return json.dumps(obj, separators=(",", ":")).encode()[:-1] + extra + b"}"


CASES = [
    # (value, taken by the compiled scanner)
    (ev_bytes(), True),
    (ev_bytes(',"type":"caf\\u00e9 \\" \\\\ \\/ \\n"'), True),
    (ev_bytes(',"type":"t2"'), True),  # duplicate: the last one
    (b'{"type":5,"specversion":"1.0","type":"t","id":"1","source":"s"}', True),  # the invalid first copy is overridden
    (ev_bytes(',"type":5'), False),  # the last copy is invalid
    (ev_bytes(',"id":""'), False),
    (ev_bytes(b',"x":"\xff"'), False),  # invalid UTF-8 in a value nobody reads: orjson rejects it, so does the scanner
    (ev_bytes(',"x":"\\ud800"'), False),  # a lone surrogate
    (ev_bytes(',"x":"\\udc00"'), False),
    (ev_bytes(b',"x":"\xed\xa0\x80"'), False),  # a surrogate in UTF-8
    (ev_bytes(b',"x":"\xc0\x80"'), False),  # overlong
    (ev_bytes(b',"x":"\\ud83d\\ude00\xf0\x9f\x98\x80"'), True),
    (ev_bytes(',"x":1e400'), False),
    (ev_bytes(',"x":123456789012345678901234567890'), True),
    (ev_bytes(',"x":-0.5e-7'), True),
    (ev_bytes(',"x":01'), False),
    (ev_bytes(',"x":1.'), False),
    (ev_bytes(',"x":"a\tb"'), False),
    (ev_bytes(',"x":[1,]'), False),
    (ev_bytes(',"x":{"a":1,}'), False),
    (ev_bytes(',"x":tru'), False),
    (ev_bytes() + b"x", False),
    (ev_bytes() + b" \t ", True),
    (b'\xef\xbb\xbf' + ev_bytes(), False),
    (ev_bytes(specversion="1.1"), False),
    (b'{"specversion":"1\\u002e0","type":"t","id":"1","source":"s"}', True),
    (b'{"spec\\u0076ersion":"1.0","type":"t","id":"1","source":"s"}', False),  # escaped key: full parser
    (ev_bytes(time=5), False),
    (ev_bytes(data_base64=None), False),
    (json.dumps(EVENT, indent=1).encode(), False),  # a line break: the full parser makes it one line
    (json.dumps({"cloudEventsVersion": "0.1", "eventType": "old", "source": "s", "eventID": "x"}).encode(), False),
    (b"[1,2]", False), (b"not json", False), (b"", False), (b"{}", False),
    (b'{"specversion":"1.0","type":"x","id":"1"}', False),
    (b'{"specversion":"9.9","type":"x","id":"1","source":"s"}', False),
    (b"[" * 200000, False), (b'{"a":' * 200000, False),
    (b'{"specversion":"1.0","type":"x","source":"s","id":"1","data":' + b"[" * 100000, False),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("value, taken", CASES, ids=range(len(CASES)))
def test_cases(impl, value, taken):
    """Escapes, duplicates, UTF-8, numbers, whitespace, the invalid-record cases of the Kafka tests."""
    ev = check_sound(impl, value)
    if impl is compiled_scan:
        assert (ev is not None) == taken
    elif taken:
        assert ev is not None


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("depth", [1022, 1023, 1024, 1025])
def test_nesting_limit_is_orjsons(impl, depth):
    """Nesting up to orjson's limit (1024 levels, the event object included) is taken, one more is not."""
    for open_, leaf, close in (("[", "", "]"), ('{"a":', "1", "}")):
        value = ev_bytes(',"x":' + open_ * (depth - 1) + leaf + close * (depth - 1))
        ev = check_sound(impl, value)
        assert (full(value) is not None) == (depth <= 1024)
        if impl is compiled_scan:
            assert (ev is not None) == (depth <= 1024)


# -- extract ------------------------------------------------------------------------------------

POINTERS = ["/data/user", "/data", "/data/0", "/data/a~1b", "/data/x/1/y", "/type", "/ext/10", "/data/01", "", "/id/0"]


@st.composite
def data_value(draw):
    user = draw(SCALAR | st.lists(SCALAR, max_size=2) | st.dictionaries(TEXT, SCALAR, max_size=2))
    members = [("user", user), ("a/b", draw(SCALAR)), ("x", draw(VALUE)), ("0", draw(SCALAR))]
    members += [(k, draw(SCALAR)) for k in draw(st.lists(st.sampled_from(["user", "x", "a/b"]), max_size=2))]
    order = draw(st.permutations(members))
    return draw(st.sampled_from([order, [draw(VALUE), draw(VALUE)]]))


@st.composite
def event_with_data(draw) -> bytes:
    d = draw(data_value())
    if isinstance(d, list) and d and isinstance(d[0], tuple):
        data = "{" + ",".join(draw(json_string(k)) + draw(WS) + ":" + draw(json_text(v)) for k, v in d) + "}"
    else:
        data = draw(json_text(d))
    ext = draw(json_text(draw(st.lists(SCALAR, max_size=12))))
    return ('{"specversion":"1.0","type":"t","id":"e1","source":"s","data":' + data + ',"ext":' + ext + "}").encode()


def reference_extract(value: bytes) -> dict:
    conf = {"t": {f"f{i}": {"event": {"json_pointer": p}} for i, p in enumerate(POINTERS)}}
    return Extractors.from_config(conf).extract("t", orjson.loads(value))


PATHS = tuple((f"f{i}", pointer_parts(p)) for i, p in enumerate(POINTERS))


@pytest.mark.parametrize("impl", IMPLS)
@PROPS
@given(value=event_with_data())
def test_extract_agrees_with_the_extractors(impl, value):
    """Pointer targets found in the bytes equal ``Extractors.extract`` on the decoded event (value keys)."""
    assert impl.scan(value) is not None
    assert impl.extract(value, PATHS, json_value_key) == reference_extract(value)


@pytest.mark.parametrize("impl", IMPLS)
def test_extract_cases(impl):
    value = (b'{"specversion":"1.0","type":"t","id":"1","source":"s","data":{"user":"a","us\\u0065r":"b",'
             b'"a/b":{"k":2,"j":1},"0":true},"ext":[0,1,2,3,4,5,6,7,8,9,"ten"]}')
    assert impl.extract(value, PATHS, json_value_key) == reference_extract(value)
    got = impl.extract(value, PATHS, json_value_key)
    assert got["f0"] == "b"  # the last duplicate, whether its key is escaped or not
    assert got["f3"] == b'{"j":1,"k":2}'  # canonical JSON of a non-string value
    assert got["f6"] == "ten"


@pytest.mark.parametrize("impl", IMPLS)
def test_record_event_position_makes_the_resume_id(impl):
    class Msg:
        def __init__(self, value, offset, headers=None):
            self._v, self._o, self._h = value, offset, headers

        def error(self):
            return None

        def headers(self):
            return self._h

        def value(self):
            return self._v

        def topic(self):
            return "tp"

        def partition(self):
            return 3

        def offset(self):
            return self._o

    left = []
    msgs = [Msg(ev_bytes(), 7), Msg(b"junk", 8), Msg(ev_bytes(), 9, [("content-type", b"x")]),
            Msg(ev_bytes(id="z"), 10)]
    out = impl.scan_records(msgs, lambda m: left.append(m._o) or ("fallback", m._o))
    rids = [e if type(e) is tuple else e.rid for e in out]
    assert rids == ["k:tp:3:7", ("fallback", 8), ("fallback", 9), "k:tp:3:10"]
    assert left == [8, 9]
    assert out[3].id == "z" and out[3].keys is None and out[3].seq == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_scan_records_of_confluent_kafka_messages(impl):
    """confluent-kafka's own Message (whose methods the compiled scanner calls directly): positions, ids and
    types as the records say; an error, headers or an invalid value go to the fallback."""
    from confluent_kafka import KafkaError, Message

    msgs = [Message(topic="tp", partition=1, offset=5, value=ev_bytes(id="a", type="t1")),
            Message(topic="tp", partition=1, offset=6, value=b"junk"),
            Message(topic="tp", partition=0, offset=7, value=ev_bytes(id="b"), headers=[("ce_id", b"x")]),
            Message(topic="tp", partition=0, offset=8, error=KafkaError(KafkaError._PARTITION_EOF)),
            Message(topic="tq", partition=2, offset=9, value=ev_bytes(id="cé", type="t1"))]  # the id escaped (\\u00e9)
    left = []
    out = impl.scan_records(msgs, lambda m: left.append(m.offset()))
    assert left == [6, 7, 8]
    assert [(e.rid, e.type, e.id) for e in out] == [("k:tp:1:5", "t1", "a"), ("k:tq:2:9", "t1", "cé")]
    if impl is not scan_ref:  # the compiled scanner keeps one str for a type met again
        assert out[0].type is out[1].type


@pytest.mark.parametrize("impl", IMPLS)
def test_json_ends_and_event_types(impl):
    evs = [impl.scan(ev_bytes(id=str(k), type=f"t{k % 2}")) for k in range(5)]
    evs.append(cloudevents.parse_structured(ev_bytes(type="other")))
    assert list(impl.json_ends(evs)) == [sum(len(e.json) for e in evs[:k]) for k in range(len(evs) + 1)]
    assert impl.event_types(evs) == {"t0", "t1", "other"}
    assert list(impl.json_ends([])) == [0] and impl.event_types([]) == set()
