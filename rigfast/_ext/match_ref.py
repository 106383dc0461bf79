"""SubscriptionIndex, plain Python: the reference for the compiled ``match`` module.

How it works: per event type, the connections subscribed to every event
of the type (a dict of conn -> None, smaller than a set), and for constrained subscriptions an index
``field -> value key -> {conn: [conjunction, ...]}``. Each conjunction (one
``oneOf`` object) is filed under its first field only (its anchor); at match
time the event's value for each indexed field picks the candidate
conjunctions, whose remaining fields are then compared. The cost of a match
depends on the number of candidates, never on the number of subscribers.

Interface (the compiled twin must behave identically):
- ``set(conn, subs)``: replace ``conn``'s subscriptions. ``subs`` is a sequence
  of ``(event_type, conjunctions)``; ``conjunctions`` is a tuple of tuples of
  ``(field, value_key)`` pairs, sorted by field; an empty ``conjunctions``
  means every event of that type.
- ``remove(conn)``; ``match(event_type, fields) -> list[int]`` of distinct
  conns, ``fields`` mapping field name -> value key (absent fields left out);
  ``wanted(event_type)`` the fields worth extracting (every field named by
  some conjunction of that type, anchor or not); ``len(index)`` the number
  of conns with at least one subscription; ``subscription_count``.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

Conj = tuple[tuple[str, Any], ...]
_MISSING = object()


class _TypeEntry:
    __slots__ = ("everyone", "by_field", "field_refs")

    def __init__(self) -> None:
        self.everyone: dict[int, None] = {}
        # field -> value key -> conn -> list of conjunctions anchored there
        self.by_field: dict[str, dict[Any, dict[int, list[Conj]]]] = {}
        # field -> number of filed conjunctions naming it (anchor or not)
        self.field_refs: dict[str, int] = {}


class SubscriptionIndex:
    def __init__(self) -> None:
        self._types: dict[str, _TypeEntry] = {}
        self._conns: dict[int, tuple | str] = {}  # (entries, number of subscriptions), or one type
        self.subscription_count = 0

    def __len__(self) -> int:
        return len(self._conns)

    def set(self, conn: int, subs: Sequence[tuple[str, Sequence[Conj]]]) -> None:
        self.remove(conn)
        entries = []
        for etype, conjs in subs:
            te = self._types.get(etype)
            if te is None:
                te = self._types[etype] = _TypeEntry()
            if not conjs:
                te.everyone[conn] = None
                entries.append((etype, None))
                continue
            for conj in conjs:
                field, key = conj[0]
                bucket = te.by_field.setdefault(field, {}).setdefault(key, {})
                bucket.setdefault(conn, []).append(conj)
                refs = te.field_refs
                for f, _ in conj:
                    refs[f] = refs.get(f, 0) + 1
                entries.append((etype, conj))
        if entries:
            # one type-only subscription (the usual idle subscriber): only its type is kept
            self._conns[conn] = entries[0][0] if len(subs) == 1 and entries[0][1] is None else (tuple(entries), len(subs))
            self.subscription_count += len(subs)

    def remove(self, conn: int) -> None:
        held = self._conns.pop(conn, None)
        if held is None:
            return
        entries, nsubs = (((held, None),), 1) if type(held) is str else held
        self.subscription_count -= nsubs
        types = set()
        for etype, conj in entries:
            te = self._types[etype]
            types.add(etype)
            if conj is None:
                te.everyone.pop(conn, None)
                continue
            refs = te.field_refs
            for f, _ in conj:
                n = refs[f] - 1
                if n:
                    refs[f] = n
                else:
                    del refs[f]
            field, key = conj[0]
            # several of conn's conjunctions may share one anchor: the first
            # one popped conn from the bucket (and maybe dropped the bucket)
            by_value = te.by_field.get(field)
            if by_value is None:
                continue
            bucket = by_value.get(key)
            if bucket is None:
                continue
            bucket.pop(conn, None)
            if not bucket:
                del by_value[key]
                if not by_value:
                    del te.by_field[field]
        for etype in types:
            te = self._types[etype]
            if not te.everyone and not te.by_field:
                del self._types[etype]

    def wanted(self, event_type: str) -> tuple[str, ...]:
        te = self._types.get(event_type)
        return tuple(te.field_refs) if te is not None else ()

    def match(self, event_type: str, fields: Mapping[str, Any]) -> list[int]:
        te = self._types.get(event_type)
        if te is None:
            return []
        if not te.by_field:
            return list(te.everyone)
        out = set(te.everyone)
        for field, by_value in te.by_field.items():
            v = fields.get(field, _MISSING)
            if v is _MISSING:
                continue
            bucket = by_value.get(v)
            if bucket is None:
                continue
            for conn, conjs in bucket.items():
                if conn in out:
                    continue
                for conj in conjs:
                    if len(conj) == 1 or all(fields.get(f, _MISSING) == k for f, k in conj[1:]):
                        out.add(conn)
                        break
        return list(out)
