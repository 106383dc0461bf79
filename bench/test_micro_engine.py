"""Micro benchmarks of the hot-path engine, compiled vs reference in one run.

Run:
    python -m pytest -p no:cacheprovider --benchmark-enable bench/test_micro_engine.py \
        --benchmark-columns=median,iqr,ops --benchmark-sort=name

Each engine benchmark is parametrized over the builds ("python" always,
"cython" when built), so the ratios come out of one table. Setup (index
filling, payloads) is outside the timed part. The last group compares JSON
decoders on a ~1 kB CloudEvent.
"""

from __future__ import annotations

import json as stdlib_json
import os

import orjson
import pytest

from rigfast._ext import frames_ref, match_ref
from rigfast.subscriptions import value_key

try:
    if os.environ.get("RIGFAST_NO_EXTENSIONS") == "1":
        raise ImportError("RIGFAST_NO_EXTENSIONS=1")
    from rigfast._ext import frames as frames_cy
    from rigfast._ext import match as match_cy
except ImportError as exc:  # pragma: no cover - depends on the build
    frames_cy = match_cy = None
    _WHY = f"compiled engine not available: {exc}"
else:
    _WHY = ""

_skip = pytest.mark.skipif(match_cy is None, reason=_WHY or "n/a")
INDEXES = [
    pytest.param(match_ref.SubscriptionIndex, id="python"),
    pytest.param(match_cy.SubscriptionIndex if match_cy else None, id="cython", marks=_skip),
]
ENCODERS = [
    pytest.param(frames_ref, id="python"),
    pytest.param(frames_cy, id="cython", marks=_skip),
]

TYPE = "com.example.message"


def _addressed(Index, n: int):
    ix = Index()
    for i in range(n):
        ix.set(i, [(TYPE, ((("name", f"u{i}"),),))])
    return ix


@pytest.mark.benchmark(group="match-broadcast-2k")
@pytest.mark.parametrize("Index", INDEXES)
def test_match_broadcast(benchmark, Index):
    """match(): one event to 2,000 type-only subscribers."""
    ix = Index()
    for i in range(2000):
        ix.set(i, [(TYPE, ())])
    fields: dict = {}
    assert len(benchmark(ix.match, TYPE, fields)) == 2000


@pytest.mark.benchmark(group="match-addressed-10k")
@pytest.mark.parametrize("Index", INDEXES)
def test_match_addressed(benchmark, Index):
    """match(): one user's event among 10,000 conns each subscribed to one name."""
    ix = _addressed(Index, 10_000)
    fields = {"name": value_key("u4242")}
    assert benchmark(ix.match, TYPE, fields) == [4242]


@pytest.mark.benchmark(group="match-conj2-10k")
@pytest.mark.parametrize("Index", INDEXES)
def test_match_two_field_conjunction(benchmark, Index):
    """match(): 10,000 conns with {name, region} conjunctions (10 conns share each name)."""
    ix = Index()
    for i in range(10_000):
        conj = (("name", f"u{i // 10}"), ("region", value_key(i % 10)))
        ix.set(i, [(TYPE, (conj,))])
    fields = {"name": value_key("u424"), "region": value_key(7)}
    assert benchmark(ix.match, TYPE, fields) == [4247]


@pytest.mark.benchmark(group="match-miss-10k")
@pytest.mark.parametrize("Index", INDEXES)
def test_match_nobody(benchmark, Index):
    """match(): an event for a user nobody subscribed to, among 10,000 addressed conns."""
    ix = _addressed(Index, 10_000)
    fields = {"name": value_key("nobody")}
    assert benchmark(ix.match, TYPE, fields) == []


@pytest.mark.benchmark(group="set-replace")
@pytest.mark.parametrize("Index", INDEXES)
def test_set_replace(benchmark, Index):
    """set(): replace one conn's two subscriptions in an index of 10,000 conns."""
    ix = _addressed(Index, 10_000)
    subs_a = [(TYPE, ((("name", "u1"),),)), ("com.example.other", ())]
    subs_b = [(TYPE, ((("name", "u2"), ("region", b"1")),)), ("com.example.other", ())]
    state = [subs_a, subs_b]

    def flip():
        state.reverse()
        ix.set(10_001, state[0])

    benchmark(flip)
    assert len(ix) == 10_001


PAYLOAD = orjson.dumps(
    {
        "specversion": "1.0",
        "type": TYPE,
        "source": "/bench",
        "id": "5b1b3e9e-0a1c-4f7b-9a43-3c8f0e2d8c11",
        "data": {"name": "u4242", "text": "x" * 40},
    }
)
assert 180 <= len(PAYLOAD) <= 240, len(PAYLOAD)


@pytest.mark.benchmark(group="encode-sse-200B")
@pytest.mark.parametrize("impl", ENCODERS)
def test_encode_sse(benchmark, impl):
    """encode_sse() on a ~200 B event."""
    out = benchmark(impl.encode_sse, TYPE, "5b1b3e9e-0a1c-4f7b-9a43-3c8f0e2d8c11", PAYLOAD)
    assert out.endswith(b"\n\n")


SUBSCRIPTIONS_QUERY = "%5B%7B%22eventType%22%3A%22bench.addressed%22%2C%22oneOf%22%3A%5B%7B%22name%22%3A%22u1234%22%7D%5D%7D%5D"


@pytest.mark.benchmark(group="unquote-subscriptions")
@pytest.mark.parametrize("impl", ENCODERS)
def test_unquote_subscriptions(benchmark, impl):
    """unquote(plus=True) of a connect's URL-encoded subscriptions parameter (104 characters)."""
    out = benchmark(impl.unquote, SUBSCRIPTIONS_QUERY, True)
    assert out.startswith('[{"eventType"')


@pytest.mark.benchmark(group="encode-ws-200B")
@pytest.mark.parametrize("impl", ENCODERS)
def test_encode_ws_text(benchmark, impl):
    """encode_ws_text() on a ~200 B event."""
    out = benchmark(impl.encode_ws_text, PAYLOAD)
    assert out[0] == 0x81


# --- JSON decoding of a ~1 kB CloudEvent ---------------------------------------

CLOUDEVENT_1K = orjson.dumps(
    {
        "specversion": "1.0",
        "type": TYPE,
        "source": "/services/chat/rooms/42",
        "id": "5b1b3e9e-0a1c-4f7b-9a43-3c8f0e2d8c11",
        "time": "2024-05-01T12:34:56.789Z",
        "datacontenttype": "application/json",
        "subject": "room-42",
        "rig": {"correlation": "c0ffee", "tags": ["a", "b", "c"]},
        "data": {
            "name": "u4242",
            "room": 42,
            "flags": {"urgent": False, "edited": True, "pinned": None},
            "text": "lorem ipsum dolor sit amet, " * 18,
            "mentions": [f"u{i}" for i in range(20)],
            "score": 3.14159,
        },
    }
)
assert 900 <= len(CLOUDEVENT_1K) <= 1200, len(CLOUDEVENT_1K)


def _decoders():
    out = [
        pytest.param(orjson.loads, id="orjson.loads"),
        pytest.param(stdlib_json.loads, id="json.loads"),
    ]
    try:
        import msgspec
    except ImportError:  # pragma: no cover
        return out

    class TypeOnly(msgspec.Struct):
        type: str

    out.append(pytest.param(msgspec.json.Decoder().decode, id="msgspec.decode-full"))
    out.append(pytest.param(msgspec.json.Decoder(TypeOnly).decode, id="msgspec.Struct-type-only"))
    return out


@pytest.mark.benchmark(group="json-decode-1kB")
@pytest.mark.parametrize("decode", _decoders())
def test_json_decode(benchmark, decode):
    """Decoding a ~1 kB CloudEvent: orjson vs msgspec (full / type only) vs json."""
    out = benchmark(decode, CLOUDEVENT_1K)
    assert (out["type"] if isinstance(out, dict) else out.type) == TYPE
