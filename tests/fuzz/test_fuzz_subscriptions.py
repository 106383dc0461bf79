"""Fuzz subscription parsing (connect query and PUT body) with the limits on.

Properties: bad input raises SubscriptionError (400) only; what is accepted respects every
limit, builds a hashable Subscription whatever its values mix (strings, numbers, objects),
and goes into the subscription index, which then matches events without error.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from rigfast._ext import SubscriptionIndex
from rigfast.errors import SubscriptionError
from rigfast.hub.hub import recipients
from rigfast.cloudevents import make_event
from rigfast.subscriptions import Extractors, Limits, merge, parse_subscriptions_json
from tests.fuzz.conftest import FUZZ

EXTRACTORS = Extractors.from_config({
    "greeting": {"name": {"stable_field_index": 1, "event": {"json_pointer": "/data/name"}}},
    "order": {"customer": {"stable_field_index": 1, "event": {"json_pointer": "/data/customer"}},
              "region": {"stable_field_index": 2, "event": {"json_pointer": "/data/r~1x/0"}}},
})
LIMITS = Limits(max_subscriptions=5, max_oneof=8, max_value_bytes=40, max_bytes=2000)

VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
FIELD = st.sampled_from(["name", "customer", "region", "nope", ""])
COND = st.dictionaries(FIELD, VALUE, max_size=3) | VALUE
SUB = st.fixed_dictionaries(
    {"eventType": st.sampled_from(["greeting", "order", "", "other"]) | VALUE},
    optional={"oneOf": st.lists(COND, max_size=10) | VALUE, "x": VALUE},
) | VALUE
TEXT = st.lists(SUB, max_size=7).map(json.dumps) | VALUE.map(json.dumps) | st.text(max_size=40) | st.binary(max_size=40)


@FUZZ
@given(TEXT, st.lists(st.tuples(st.sampled_from(["greeting", "order"]), VALUE, VALUE), max_size=4))
def test_fuzz_subscriptions(text, events):
    try:
        subs = parse_subscriptions_json(text, EXTRACTORS, LIMITS)
    except SubscriptionError as exc:
        assert exc.message and exc.status == 400
        return
    assert len(subs) <= LIMITS.max_subscriptions
    assert sum(len(s.one_of) for s in subs) <= LIMITS.max_oneof
    assert len(text) <= LIMITS.max_bytes
    merged = merge(subs, subs)
    assert len(merged) == len(set(subs))
    index = SubscriptionIndex()
    index.set(1, [(s.event_type, s.conjunctions) for s in subs])
    for etype, a, b in events:
        ev = make_event(etype, {"name": a, "customer": a, "r/x": [b]})
        got = recipients(index, EXTRACTORS, ev)
        assert got in ([], [1])
    index.remove(1)
