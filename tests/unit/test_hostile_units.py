"""Unit tests of the bounded structures: history, subscription limits, per-client connection rate."""

from __future__ import annotations

import pytest

from rigfast.auth.ratelimit import ClientRateLimiter, client_key
from rigfast.cloudevents import make_event
from rigfast.errors import SubscriptionError
from rigfast.hub.history import History
from rigfast.subscriptions import Extractors, Limits, parse_subscriptions, parse_subscriptions_json

EXTRACTORS = Extractors.from_config({"t": {"f": {"event": {"json_pointer": "/data/f"}}}})


def _ev(i: int, size: int = 10):
    e = make_event("t", {"f": i, "pad": "x" * size})
    e.rid = f"r{i}"
    return e


def test_history_bounded_by_bytes_count_and_age():
    h = History(max_events=100, max_age_s=10, max_bytes=10_000)
    for i in range(50):
        h.append(_ev(i, 1000), now=float(i))
    assert h.bytes <= 10_000 and len(h) < 50
    assert [e.rid for e in h][-1] == "r49"
    assert h.bytes == sum(len(e.json) for e in h)
    h.expire(now=55.0)
    assert all(int(e.rid[1:]) >= 45 for e in h)
    h.append(_ev(99, 20_000), now=56.0)  # larger than the whole history: not kept
    assert "r99" not in [e.rid for e in h]
    c = History(max_events=3, max_age_s=10, max_bytes=0)
    for i in range(10):
        c.append(_ev(i), now=0.0)
    assert [e.rid for e in c] == ["r7", "r8", "r9"]


@pytest.mark.parametrize("bounds", [dict(max_events=7, max_bytes=0), dict(max_events=100, max_bytes=3_500),
                                    dict(max_events=5, max_bytes=3_500), dict(max_events=100, max_bytes=900)])
def test_history_extend_keeps_what_append_keeps(bounds):
    """The batch form (the node reader's) keeps the same events and byte count as one append per event,
    whatever bound bites (count, bytes, both; an event larger than the whole budget is skipped)."""
    sizes = [10, 1000, 500, 2000, 10, 10, 1000, 300, 10, 700, 10, 10, 1200]
    one, batched = History(max_age_s=100, **bounds), History(max_age_s=100, **bounds)
    evs = [_ev(i, size) for i, size in enumerate(sizes)]
    for e in evs:
        one.append(e, now=0.0)
    for k in range(0, len(evs), 4):
        batched.extend(evs[k:k + 4], now=0.0)
    assert [e.rid for e in batched] == [e.rid for e in one]
    assert batched.bytes == one.bytes == sum(len(e.json) for e in one)


def test_history_replay_budget_and_gap():
    h = History(max_events=1000, max_age_s=100, max_bytes=0)
    evs = [_ev(i, 100) for i in range(100)]
    for e in evs:
        h.append(e, now=0.0)
    rid = lambda e: e.rid  # noqa: E731
    every = lambda e: True  # noqa: E731
    assert h.replay("r97", rid, every) == (False, evs[98:])
    gap, got = h.replay("unknown", rid, every, budget=len(evs[-1].json) * 3 + 1)
    assert gap and got == evs[-3:]
    gap, got = h.replay("r10", rid, every, budget=len(evs[-1].json) * 5)
    assert gap and got == evs[-5:]
    assert h.replay("r10", rid, lambda e: int(e.rid[1:]) % 2 == 0) == (False, [e for e in evs[11:] if int(e.rid[1:]) % 2 == 0])


@pytest.mark.parametrize(
    "subs, setting",
    [
        ([{"eventType": "t"}] * 4, "RIGFAST_MAX_SUBSCRIPTIONS"),
        ([{"eventType": "t", "oneOf": [{"f": 1}] * 3}] * 2, "RIGFAST_MAX_ONEOF"),
        ([{"eventType": "t", "oneOf": [{"f": "é" * 20}]}], "RIGFAST_MAX_SUBSCRIPTION_VALUE_BYTES"),
        ([{"eventType": "t", "oneOf": [{"f": [1] * 20}]}], "RIGFAST_MAX_SUBSCRIPTION_VALUE_BYTES"),
    ],
)
def test_subscription_limits(subs, setting):
    limits = Limits(max_subscriptions=3, max_oneof=5, max_value_bytes=32, max_bytes=1000)
    with pytest.raises(SubscriptionError, match=setting):
        parse_subscriptions(subs, EXTRACTORS, limits)
    parse_subscriptions(subs, EXTRACTORS)  # no limits: accepted


def test_subscription_bytes_limit_before_decoding():
    limits = Limits(max_bytes=50)
    with pytest.raises(SubscriptionError, match="RIGFAST_MAX_SUBSCRIPTIONS_BYTES"):
        parse_subscriptions_json(b"[" + b" " * 100 + b"]", EXTRACTORS, limits)  # refused unparsed
    assert parse_subscriptions_json(b'[{"eventType":"t"}]', EXTRACTORS, limits)[0].event_type == "t"


def test_client_rate_limiter_per_address_and_bounded_table():
    now = [0.0]
    lim = ClientRateLimiter(6, clock=lambda: now[0], max_clients=3)
    assert [lim.allow("a") for _ in range(8)] == [True] * 6 + [False] * 2
    assert lim.allow("b")
    assert lim.retry_after_s("a") == pytest.approx(10.0)
    now[0] = 10.0
    assert lim.allow("a") and not lim.allow("a")
    for k in "cdefg":
        lim.allow(k)
    assert len(lim) == 3


def test_client_key():
    assert client_key(("10.1.2.3", 5)) == "10.1.2.3"
    assert client_key(("::ffff:10.1.2.3", 5, 0, 0)) == "10.1.2.3"
    assert client_key(("2001:db8:1:2:aaaa::1", 5, 0, 0)) == client_key(("2001:db8:1:2:bbbb::9", 5, 0, 0))
    assert client_key(("2001:db8:1:3::1", 5, 0, 0)) != client_key(("2001:db8:1:2::1", 5, 0, 0))
    assert client_key(None) == ""
