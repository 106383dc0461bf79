"""The delivery loop: reference behaviour, and the compiled twin doing exactly the same."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rigfast._ext import fanout_ref
from tests.unit.compiled import load_compiled

compiled_fanout, needs_compiled = load_compiled("fanout")

IMPLS = [
    pytest.param(fanout_ref, id="python"),
    pytest.param(compiled_fanout, id="cython", marks=needs_compiled),
]


class Wire:
    """A transport that records what is written, and can be made to fail."""

    def __init__(self, fail: bool = False):
        self.writes: list[bytes] = []
        self.fail = fail

    def write(self, data: bytes) -> None:
        if self.fail:
            raise OSError("broken socket")
        self.writes.append(data)


def make_session(impl, kind: int, closed: bool = False, fail: bool = False, wire: int = 0):
    """kind 3 is a Phoenix channel: its frames are keyed by ``wire`` (topic "t2" stands for long-polling: no transport)."""

    class Session(impl.Recipient):
        __slots__ = ("flushed", "aborted", "polled")

        def __init__(self):
            self.kind = kind
            self.outbox = None
            self.dirty = False
            self.closed = closed
            self.wire = f"t{wire}" if kind == 3 else None
            self.transport = None if kind == 2 or (kind == 3 and wire == 2) else Wire(fail)
            self.aborted = False
            self.polled: list = []

        def flush(self):  # as SseSession.flush: take the frames, then write (long-poll keeps them)
            data = b"".join(self.outbox or ())
            self.outbox = None
            if self.transport is None:
                self.polled.append(data)
            elif not self.closed and data:
                self.transport.write(data)

        def abort(self):
            self.aborted = True

    return Session()


def run(impl, specs, events, slice_n):
    """Deliver ``events`` (lists of slots) to sessions built from ``specs`` and flush in slices."""
    sessions = {i: make_session(impl, *spec) for i, spec in enumerate(specs)}
    touched: deque = deque()
    encoded = []
    counts = []
    for n, slots in enumerate(events):
        def encode(kind, session, n=n):
            key = session.wire if kind == 3 else None
            encoded.append((n, kind, key))
            return b"e%d/k%d/%s;" % (n, kind, str(key).encode())

        counts.append(impl.deliver(list(slots), sessions, encode, touched))
        impl.flush_slice(touched, slice_n)
    while touched:
        impl.flush_slice(touched, slice_n)
    state = {
        i: (s.transport.writes if s.transport is not None else None, s.polled, s.aborted, s.dirty, s.outbox)
        for i, s in sessions.items()
    }
    return counts, encoded, state


@pytest.mark.parametrize("impl", IMPLS)
def test_each_kind_encoded_once_and_shared(impl):
    """An event to many sessions is encoded once per wire kind and every recipient gets that same object."""
    specs = [(0,), (0,), (1,), (2,), (1,), (3, False, False, 0), (3, False, False, 1), (3, False, False, 0)]
    sessions = {i: make_session(impl, *spec) for i, spec in enumerate(specs)}
    calls = []
    touched: deque = deque()
    encode = lambda k, s: calls.append((k, s.wire)) or object()  # noqa: E731
    counts = impl.deliver(list(range(8)), sessions, encode, touched)
    assert sorted(calls, key=str) == sorted([(0, None), (1, None), (2, None), (3, "t0"), (3, "t1")], key=str)
    assert counts == (2, 2, 1, 3)
    assert sessions[0].outbox[0] is sessions[1].outbox[0]
    assert sessions[2].outbox[0] is sessions[4].outbox[0]
    # Phoenix: one frame per topic key, shared by the channels of that key
    assert sessions[5].outbox[0] is sessions[7].outbox[0] and sessions[6].outbox[0] is not sessions[5].outbox[0]
    assert list(touched) == [sessions[i] for i in range(8)]


@pytest.mark.parametrize("impl", IMPLS)
def test_coalesces_events_into_one_write(impl):
    """Several events delivered before a flush reach an SSE session in one write, in order."""
    s = make_session(impl, 0)
    touched: deque = deque()
    for n in range(3):
        impl.deliver([7], {7: s}, lambda k, _s, n=n: b"ev%d;" % n, touched)
    assert len(touched) == 1
    impl.flush_slice(touched, 10)
    assert s.transport.writes == [b"ev0;ev1;ev2;"] and not s.dirty
    assert s.outbox is None  # written: the session keeps no list while idle


@pytest.mark.parametrize("impl", IMPLS)
def test_broken_session_aborted_others_written(impl):
    """A session whose write fails is aborted; the sessions after it are still written."""
    sessions = {0: make_session(impl, 0, fail=True), 1: make_session(impl, 0)}
    touched: deque = deque()
    impl.deliver([0, 1], sessions, lambda k, _s: b"x", touched)
    impl.flush_slice(touched, 10)
    assert sessions[0].aborted and sessions[1].transport.writes == [b"x"]


@pytest.mark.parametrize("impl", IMPLS)
def test_flush_slice_writes_at_most_n(impl):
    """flush_slice writes at most n sessions and leaves the rest queued, in order."""
    sessions = {i: make_session(impl, 0) for i in range(5)}
    touched: deque = deque()
    impl.deliver(list(range(5)), sessions, lambda k, _s: b"x", touched)
    impl.flush_slice(touched, 2)
    assert [s for s in touched] == [sessions[2], sessions[3], sessions[4]]
    assert sessions[1].transport.writes == [b"x"] and sessions[2].transport.writes == []


spec_st = st.tuples(st.integers(0, 3), st.booleans(), st.booleans(), st.integers(0, 2))


@needs_compiled
@settings(max_examples=150, deadline=None)
@given(
    specs=st.lists(spec_st, min_size=1, max_size=12),
    data=st.data(),
    slice_n=st.integers(1, 5),
)
def test_compiled_matches_reference(specs, data, slice_n):
    """For random sessions (kinds, closed, failing) and event sequences both builds write, keep and abort the same."""
    events = data.draw(st.lists(st.lists(st.sampled_from(range(len(specs))), unique=True), max_size=8))
    assert run(compiled_fanout, specs, events, slice_n) == run(fanout_ref, specs, events, slice_n)
