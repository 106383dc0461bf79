"""SubscriptionIndex: reference semantics, and the compiled twin against the reference.

The reference (``match_ref``) is always tested, against a brute-force oracle.
The compiled build (``match.pyx``) is tested against the reference; those
tests skip with the reason when it is not built or RIGFAST_NO_EXTENSIONS=1.
"""

from __future__ import annotations

from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.compiled import load_compiled
from rigfast._ext import match_ref
from rigfast.subscriptions import value_key


compiled_match, needs_compiled = load_compiled("match")

IMPLS = [
    pytest.param(match_ref.SubscriptionIndex, id="python"),
    pytest.param(
        compiled_match.SubscriptionIndex if compiled_match else None, id="cython", marks=needs_compiled
    ),
]

_MISSING = object()


class Subscription:
    """A subscription as the index sees it: event type and conjunctions.

    Built here rather than with ``rigfast.subscriptions.Subscription``, whose
    constructor cannot sort a oneOf mixing string and non-string values of one
    field; the conjunctions follow the same contract (pairs sorted by field,
    ``()`` when some object is empty).
    """

    __slots__ = ("event_type", "conjunctions")

    def __init__(self, event_type: str, one_of: tuple[dict, ...] = ()):
        self.event_type = event_type
        conjs = tuple(tuple(sorted((k, value_key(v)) for k, v in o.items())) for o in one_of)
        self.conjunctions = () if any(not c for c in conjs) else conjs

    def __repr__(self) -> str:
        return f"Subscription({self.event_type!r}, {self.conjunctions!r})"


def subs(*subscriptions: Subscription):
    """Index input for a list of subscriptions."""
    return [(s.event_type, s.conjunctions) for s in subscriptions]


def ev(**fields):
    """Event field values as value keys."""
    return {k: value_key(v) for k, v in fields.items()}


# --- examples: the semantics, on every build --------------------------------


@pytest.mark.parametrize("Index", IMPLS)
def test_type_only_gets_every_event_of_its_type(Index):
    """A subscription without oneOf receives every event of its type, and only of its type."""
    ix = Index()
    ix.set(1, subs(Subscription("greeting")))
    ix.set(2, subs(Subscription("other")))
    assert ix.match("greeting", {}) == [1]
    assert ix.match("greeting", ev(name="x")) == [1]
    assert ix.match("unknown", {}) == []


@pytest.mark.parametrize("Index", IMPLS)
def test_one_of_any_object_suffices(Index):
    """A oneOf list matches when any one of its objects matches."""
    ix = Index()
    ix.set(1, subs(Subscription("t", ({"name": "alice"}, {"name": "bob"}))))
    assert ix.match("t", ev(name="alice")) == [1]
    assert ix.match("t", ev(name="bob")) == [1]
    assert ix.match("t", ev(name="carol")) == []
    assert ix.match("t", {}) == []


@pytest.mark.parametrize("Index", IMPLS)
def test_conjunction_needs_every_field(Index):
    """An object with several fields matches only when every field is present and equal."""
    ix = Index()
    ix.set(1, subs(Subscription("t", ({"name": "alice", "region": "eu"},))))
    assert ix.match("t", ev(name="alice", region="eu")) == [1]
    assert ix.match("t", ev(name="alice", region="us")) == []
    assert ix.match("t", ev(name="alice")) == []
    assert ix.match("t", ev(region="eu")) == []


@pytest.mark.parametrize("Index", IMPLS)
def test_true_is_not_one(Index):
    """JSON true, 1 and "1" are three different values."""
    ix = Index()
    ix.set(1, subs(Subscription("t", ({"v": True},))))
    ix.set(2, subs(Subscription("t", ({"v": 1},))))
    ix.set(3, subs(Subscription("t", ({"v": "1"},))))
    assert ix.match("t", ev(v=True)) == [1]
    assert ix.match("t", ev(v=1)) == [2]
    assert ix.match("t", ev(v="1")) == [3]
    assert ix.match("t", ev(v=None)) == []


@pytest.mark.parametrize("Index", IMPLS)
def test_remove_drops_every_subscription(Index):
    """remove() forgets a conn entirely; removing an unknown conn is a no-op."""
    ix = Index()
    ix.set(1, subs(Subscription("t"), Subscription("t", ({"name": "a"},))))
    ix.set(2, subs(Subscription("t", ({"name": "a"},))))
    assert (len(ix), ix.subscription_count) == (2, 3)
    ix.remove(1)
    ix.remove(99)
    assert ix.match("t", ev(name="a")) == [2]
    assert ix.match("t", {}) == []
    assert (len(ix), ix.subscription_count) == (1, 1)
    ix.remove(2)
    assert (len(ix), ix.subscription_count, ix.wanted("t")) == (0, 0, ())


@pytest.mark.parametrize("Index", IMPLS)
def test_set_again_replaces(Index):
    """set() on a known conn replaces its subscriptions; set() with none removes it."""
    ix = Index()
    ix.set(1, subs(Subscription("t", ({"name": "a"},))))
    ix.set(1, subs(Subscription("t", ({"name": "b"},))))
    assert ix.match("t", ev(name="a")) == []
    assert ix.match("t", ev(name="b")) == [1]
    assert ix.subscription_count == 1
    ix.set(1, [])
    assert (len(ix), ix.subscription_count, ix.match("t", ev(name="b"))) == (0, 0, [])


@pytest.mark.parametrize("Index", IMPLS)
def test_recipients_are_distinct(Index):
    """A conn matched through several subscriptions appears once."""
    ix = Index()
    ix.set(
        1,
        subs(
            Subscription("t"),
            Subscription("t", ({"name": "a"}, {"region": "eu"})),
            Subscription("t", ({"name": "a", "region": "eu"},)),
        ),
    )
    ix.set(2, subs(Subscription("t", ({"name": "a"},), ), Subscription("t", ({"region": "eu"},))))
    assert sorted(ix.match("t", ev(name="a", region="eu"))) == [1, 2]


@pytest.mark.parametrize("Index", IMPLS)
def test_remove_with_shared_anchor(Index):
    """Removing a conn whose conjunctions share their first field and value works (regression)."""
    ix = Index()
    ix.set(1, subs(Subscription("t", ({"name": "a"}, {"name": "a", "zz": 1}))))
    ix.set(2, subs(Subscription("t", ({"name": "a"},)), Subscription("t", ({"name": "a", "x": 2},))))
    ix.remove(1)
    ix.set(2, subs(Subscription("t")))
    assert ix.match("t", ev(name="a")) == [2]
    assert ix.wanted("t") == ()


@pytest.mark.parametrize("Index", IMPLS)
def test_wanted_names_every_conjunction_field(Index):
    """wanted() lists every field a conjunction of the type names, not only the first (regression)."""
    ix = Index()
    ix.set(1, subs(Subscription("t", ({"age": 3, "name": "b"},))))
    assert set(ix.wanted("t")) == {"age", "name"}
    assert ix.wanted("other") == ()
    ix.set(2, subs(Subscription("t")))
    ix.remove(1)
    assert ix.wanted("t") == ()


@pytest.mark.parametrize("Index", IMPLS)
def test_result_belongs_to_caller(Index):
    """Mutating a returned recipient list does not change later matches."""
    ix = Index()
    ix.set(1, subs(Subscription("t")))
    ix.set(2, subs(Subscription("t", ({"name": "a"},))))
    ix.match("t", {}).append(99)
    ix.match("t", ev(name="a")).clear()
    assert ix.match("t", {}) == [1]
    assert sorted(ix.match("t", ev(name="a"))) == [1, 2]


@pytest.mark.parametrize("Index", IMPLS)
def test_fields_may_be_any_mapping(Index):
    """match() accepts any mapping of field values, not only a dict."""
    ix = Index()
    ix.set(1, subs(Subscription("t", ({"name": "a", "zz": 1},))))
    assert ix.match("t", MappingProxyType(ev(name="a", zz=1))) == [1]


# --- properties ---------------------------------------------------------------

TYPES = ["t1", "t2", "t3"]
FIELDS = ["a", "b", "name", "zz"]
CONNS = st.integers(0, 7)
VALUES = st.one_of(
    st.sampled_from(["u1", "u2", "1", "true", "null", ""]),
    st.integers(-1, 2),
    st.booleans(),
    st.none(),
)
SUBSCRIPTION = st.builds(
    lambda t, one_of: Subscription(t, tuple(one_of)),
    st.sampled_from(TYPES),
    st.lists(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=3), max_size=3),
)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), CONNS, st.lists(SUBSCRIPTION, max_size=3)),
        st.tuples(st.just("remove"), CONNS),
    ),
    max_size=25,
)
EVENTS = st.lists(
    st.tuples(
        st.sampled_from(TYPES + ["nobody"]),
        st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=4).map(lambda d: ev(**d)),
    ),
    min_size=1,
    max_size=8,
)
PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def oracle(model: dict[int, list[Subscription]], etype: str, fields: dict) -> set[int]:
    """Brute force: every conn with a subscription of the type that the event satisfies."""
    out = set()
    for conn, ss in model.items():
        for s in ss:
            if s.event_type != etype:
                continue
            conjs = s.conjunctions
            if not conjs or any(all(fields.get(f, _MISSING) == k for f, k in c) for c in conjs):
                out.add(conn)
    return out


def apply(op, *indexes, model=None):
    """Apply one random operation to each index (and to the model)."""
    if op[0] == "set":
        _, conn, ss = op
        for ix in indexes:
            ix.set(conn, subs(*ss))
        if model is not None:
            model.pop(conn, None)
            if ss:
                model[conn] = list(ss)
    else:
        for ix in indexes:
            ix.remove(op[1])
        if model is not None:
            model.pop(op[1], None)


@PROPS
@given(OPS, EVENTS)
def test_reference_agrees_with_oracle(ops, events):
    """The reference index picks exactly the brute-force recipients, counts, and wanted fields."""
    ix = match_ref.SubscriptionIndex()
    model: dict[int, list[Subscription]] = {}
    for op in ops:
        apply(op, ix, model=model)
    assert len(ix) == len(model)
    assert ix.subscription_count == sum(len(ss) for ss in model.values())
    for etype, fields in events:
        got = ix.match(etype, fields)
        assert len(got) == len(set(got))
        assert set(got) == oracle(model, etype, fields)
        # extracting only the wanted fields loses no recipient
        wanted = set(ix.wanted(etype))
        assert set(ix.match(etype, {f: v for f, v in fields.items() if f in wanted})) == set(got)
        named = {f for ss in model.values() for s in ss if s.event_type == etype for c in s.conjunctions for f, _ in c}
        assert wanted == named


@needs_compiled
@PROPS
@given(OPS, EVENTS)
def test_compiled_agrees_with_reference(ops, events):
    """After every random set/remove, the compiled index picks the same recipients as the reference."""
    ref = match_ref.SubscriptionIndex()
    cyt = compiled_match.SubscriptionIndex()
    for op in ops:
        apply(op, ref, cyt)
        assert len(cyt) == len(ref)
        assert cyt.subscription_count == ref.subscription_count
        for etype, fields in events:
            got = cyt.match(etype, fields)
            assert len(got) == len(set(got))
            assert set(got) == set(ref.match(etype, fields))
            assert cyt.wanted(etype) == ref.wanted(etype)


@needs_compiled
def test_compiled_is_in_use():
    """With the extension built and not disabled, rigfast._ext exports the compiled index."""
    import rigfast._ext as ext

    assert ext.MATCH_BUILD == "cython"
    assert ext.SubscriptionIndex is compiled_match.SubscriptionIndex
