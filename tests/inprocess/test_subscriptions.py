"""Subscription matching in process: extractor fields, oneOf, conjunctions, JSON equality by type."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from tests.inprocess.harness import http_request, parse_responses
from tests.inprocess.test_hub import ev, publish, sse, sse_frames


def ids(client) -> list[str]:
    return [json.loads(f["data"])["id"] for f in sse_frames(client.read())]


def test_field_constraint_selects_one_user(make_gateway):
    g = make_gateway()
    ann, _ = sse(g, [{"eventType": "greeting", "oneOf": [{"name": "ann"}]}])
    bob, _ = sse(g, [{"eventType": "greeting", "oneOf": [{"name": "bob"}]}])
    anyone, _ = sse(g, [{"eventType": "greeting"}])
    publish(g, ev("greeting", "1", name="ann"))
    publish(g, ev("greeting", "2", name="bob"))
    publish(g, ev("greeting", "3"))  # no name: only the unconstrained subscriber
    assert ids(ann) == ["1"] and ids(bob) == ["2"] and ids(anyone) == ["1", "2", "3"]


def test_one_of_is_a_disjunction_and_fields_in_one_entry_a_conjunction(make_gateway):
    g = make_gateway()
    either, _ = sse(g, [{"eventType": "order", "oneOf": [{"customer": "c1"}, {"region": "eu"}]}])
    both, _ = sse(g, [{"eventType": "order", "oneOf": [{"customer": "c1", "region": "eu"}]}])
    publish(g, ev("order", "1", customer="c1", region="us"))
    publish(g, ev("order", "2", customer="c2", region="eu"))
    publish(g, ev("order", "3", customer="c1", region="eu"))
    assert ids(either) == ["1", "2", "3"] and ids(both) == ["3"]


@pytest.mark.parametrize("wanted, sent, match", [
    ("1", "1", True), ("1", 1, False), (1, 1.0, False), (True, 1, False), ({"a": [1]}, {"a": [1]}, True),
])
def test_values_compare_as_json_by_type(make_gateway, wanted, sent, match):
    g = make_gateway()
    s, _ = sse(g, [{"eventType": "greeting", "oneOf": [{"name": wanted}]}])
    publish(g, ev("greeting", "1", name=sent))
    assert ids(s) == (["1"] if match else [])


def test_constraint_on_a_field_without_extractor_is_accepted_and_echoed(make_gateway):
    """As RIG: a constraint on a field no extractor defines is accepted and shown in rig.subscriptions_set."""
    g = make_gateway()
    c = g.client()
    subs = quote(json.dumps([{"eventType": "greeting", "oneOf": [{"nope": 1}]}]))
    c.send(http_request("GET", f"/_rig/v1/connection/sse?subscriptions={subs}"))
    g.settle()
    out = c.read()
    assert out.startswith(b"HTTP/1.1 200") and b'"oneOf":[{"nope":1}]' in out, out[:300]


def test_malformed_subscriptions_are_400(make_gateway):
    g = make_gateway()
    c = g.client()
    c.send(http_request("GET", "/_rig/v1/connection/sse?subscriptions=" + quote("[{")))
    assert parse_responses(c.read())[0][0] == 400


def test_index_recipients_directly(rf):
    """The hub's matcher on the engine's SubscriptionIndex: slots of matching subscriptions only."""
    ex = rf.subscriptions.Extractors.from_config(
        {"greeting": {"name": {"stable_field_index": 1, "event": {"json_pointer": "/data/name"}}}})
    index = rf.ext.SubscriptionIndex()
    for slot, subs in enumerate([[{"eventType": "greeting"}], [{"eventType": "greeting", "oneOf": [{"name": "a"}]}],
                                 [{"eventType": "other"}]]):
        parsed = rf.subscriptions.parse_subscriptions(subs, ex)
        index.set(slot, [(s.event_type, s.conjunctions) for s in parsed])
    event = rf.cloudevents.parse_structured(json.dumps(ev("greeting", "1", name="a")).encode())
    assert sorted(rf.hub.recipients(index, ex, event)) == [0, 1]
    event = rf.cloudevents.parse_structured(json.dumps(ev("greeting", "2", name="b")).encode())
    assert sorted(rf.hub.recipients(index, ex, event)) == [0]


def test_connects_asking_the_same_share_one_parse(make_gateway):
    """Two connects with the same subscription text share its parsed subscriptions; a PUT on one
    replaces that connection's only, and the other keeps getting what it asked for."""
    g = make_gateway()
    asked = [{"eventType": "greeting", "oneOf": [{"name": "ann"}]}] * 2
    a, token_a = sse(g, asked)
    b, _ = sse(g, asked)
    first, second = g.gw.hub.sessions.values()
    assert first.subscriptions is second.subscriptions
    assert len(first.subscriptions) == 1  # the duplicate is dropped
    put = g.client()
    put.send(http_request("PUT", f"/_rig/v1/connection/sse/{token_a}/subscriptions",
                          json.dumps({"subscriptions": [{"eventType": "greeting", "oneOf": [{"name": "bob"}]}]}).encode(),
                          {"content-type": "application/json"}))
    g.settle()
    assert parse_responses(put.read())[0][0] == 204
    a.read()
    publish(g, ev("greeting", "1", name="ann"))
    publish(g, ev("greeting", "2", name="bob"))
    assert ids(a) == ["2"] and ids(b) == ["1"]


def test_parsed_subscription_texts_are_bounded(rf):
    ex = rf.subscriptions.Extractors.from_config({})
    texts = rf.subscriptions.SubscriptionTexts(ex, rf.subscriptions.Limits(), keep=2, max_text=40)
    one = '[{"eventType":"a"}]'
    assert texts.parse(one) is texts.parse(one)
    texts.parse('[{"eventType":"b"}]')
    texts.parse('[{"eventType":"c"}]')  # the oldest text goes
    assert len(texts._parsed) == 2 and one not in texts._parsed
    long = json.dumps([{"eventType": "x" * 50}])
    assert texts.parse(long) == texts.parse(long) and long not in texts._parsed  # over max_text: parsed, not kept
    with pytest.raises(rf.subscriptions.SubscriptionError):
        texts.parse("[{")
