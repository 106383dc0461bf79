"""Session blacklist (rigfast.auth.blacklist)."""

from __future__ import annotations

import pytest

from rigfast.auth.blacklist import Blacklist


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_add_and_contains():
    """An added session is blacklisted; others are not."""
    bl = Blacklist(clock=Clock())
    bl.add("s1", 60)
    assert bl.contains("s1") and "s1" in bl
    assert not bl.contains("s2")
    assert len(bl) == 1


def test_expiry_is_lazy_and_exact():
    """An entry is present until its validity runs out, then vanishes on lookup."""
    clock = Clock()
    bl = Blacklist(clock=clock)
    bl.add("s1", 60)
    clock.t += 59.9
    assert bl.contains("s1")
    assert 0 < bl.expires_in("s1") <= 0.11
    clock.t += 0.1
    assert not bl.contains("s1")
    assert bl.expires_in("s1") is None
    assert len(bl) == 0


def test_readd_extends_never_shortens():
    """Re-adding with a later expiry extends the ban; a shorter re-add keeps the longer one."""
    clock = Clock()
    bl = Blacklist(clock=clock)
    bl.add("s1", 10)
    clock.t += 5
    bl.add("s1", 30)  # now expires at +35
    clock.t += 20
    assert bl.contains("s1")
    bl.add("s1", 1)  # would be +26, earlier than +35: ignored
    clock.t += 5
    assert bl.contains("s1")
    clock.t += 5.1
    assert not bl.contains("s1")


def test_purge_drops_only_expired():
    """purge() removes expired entries (stale heap pairs ignored) and reports how many."""
    clock = Clock()
    bl = Blacklist(clock=clock)
    bl.add("a", 10)
    bl.add("b", 20)
    bl.add("c", 30)
    bl.add("a", 25)  # extended: the old (10) heap pair is stale
    clock.t += 21
    assert bl.purge() == 1  # only b
    assert sorted(sid for sid, _ in bl.entries()) == ["a", "c"]
    clock.t += 100
    assert bl.purge() == 2
    assert len(bl) == 0


def test_entries_report_remaining_seconds():
    """entries() gives (session_id, seconds left) of live entries only."""
    clock = Clock()
    bl = Blacklist(clock=clock)
    bl.add("a", 10)
    bl.add("b", 100)
    clock.t += 20
    assert bl.entries() == [("b", pytest.approx(80))]


def test_listeners_called_on_every_add():
    """on_add listeners receive the session id on each add, a failing one does not stop the others."""
    bl = Blacklist(clock=Clock())
    seen: list[str] = []

    def boom(sid):
        raise RuntimeError("listener bug")

    bl.on_add(boom)
    bl.on_add(seen.append)
    bl.add("s1", 5)
    bl.add("s1", 5)
    assert seen == ["s1", "s1"]
    bl.remove_listener(seen.append)
    bl.add("s2", 5)
    assert seen == ["s1", "s1"]


def test_remove():
    """remove() lifts a ban early."""
    bl = Blacklist(clock=Clock())
    bl.add("s1", 60)
    assert bl.remove("s1") is True
    assert not bl.contains("s1")
    assert bl.remove("s1") is False


@pytest.mark.parametrize("sid, validity", [("", 5), (None, 5), ("s", 0), ("s", -1), ("s", float("inf")), ("s", "5")])
def test_invalid_input(sid, validity):
    """Empty ids and non-positive, infinite or non-numeric validities are refused."""
    with pytest.raises(ValueError):
        Blacklist(clock=Clock()).add(sid, validity)


def test_heap_compaction_keeps_entries():
    """Many re-adds of a few sessions keep the heap small and the entries right."""
    clock = Clock()
    bl = Blacklist(clock=clock)
    for i in range(1000):
        bl.add(f"s{i % 3}", 10 + i)
    assert len(bl._heap) <= 200
    assert len(bl) == 3
    clock.t += 2000
    assert len(bl) == 0
