"""Subscriptions and the extractor configuration.

A subscription is ``{"eventType": t, "oneOf": [{field: value, ...}, ...]}``.
Fields are named by ``EXTRACTORS``; each names an RFC 6901 JSON pointer into
the event (``event.json_pointer``) and optionally into the JWT claims
(``jwt.json_pointer``, which makes it an automatic subscription).

Values are compared through :func:`value_key`, so that equal JSON values hash
equally and ``true`` never equals ``1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import orjson

from rigfast.errors import ConfigError, SubscriptionError

MISSING = object()  # what a pointer finds when the event has no such value


def value_key(value: Any) -> Any:
    """A hashable key with JSON equality: strings stay strings, others become canonical JSON bytes."""
    if type(value) is str:
        return value
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def json_value_key(raw: bytes) -> Any:
    """:func:`value_key` of a JSON text (a field value found in an event's bytes)."""
    return value_key(orjson.loads(raw))


def pointer_parts(pointer: str) -> tuple[str, ...]:
    """RFC 6901: ``/a/b~1c/0`` -> ("a", "b/c", "0"); "" (the whole document) -> ()."""
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ValueError(f"JSON pointer must be empty or start with '/': {pointer!r}")
    return tuple(p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/"))


def compile_pointer(pointer: str) -> Callable[[Any], Any]:
    """RFC 6901: compile ``/a/b~1c/0`` into a function doc -> value (or MISSING)."""
    parts = pointer_parts(pointer)
    if not parts:
        return lambda doc: doc

    if len(parts) == 1:
        (only,) = parts

        def get1(doc: Any) -> Any:
            if type(doc) is dict:
                return doc.get(only, MISSING)
            return walk_pointer(doc, parts)

        return get1
    if len(parts) == 2:
        first, second = parts

        def get2(doc: Any) -> Any:
            if type(doc) is dict:
                inner = doc.get(first, MISSING)
                if type(inner) is dict:
                    return inner.get(second, MISSING)
            return walk_pointer(doc, parts)

        return get2
    return lambda doc: walk_pointer(doc, parts)


def walk_pointer(doc: Any, parts: tuple[str, ...]) -> Any:
    """The value at ``parts`` (see :func:`pointer_parts`) in a decoded document, or MISSING."""
    for part in parts:
        if isinstance(doc, dict):
            doc = doc.get(part, MISSING)
        elif isinstance(doc, list):
            if not part.isdigit() or (len(part) > 1 and part[0] == "0"):
                return MISSING
            idx = int(part)
            if idx >= len(doc):
                return MISSING
            doc = doc[idx]
        else:
            return MISSING
        if doc is MISSING:
            return MISSING
    return doc


@dataclass(frozen=True)
class Field:
    name: str
    index: int
    event_pointer: str
    jwt_pointer: str | None
    get_event: Callable[[Any], Any]
    get_jwt: Callable[[Any], Any] | None


class Extractors:
    """The parsed ``EXTRACTORS`` configuration: event type -> field name -> Field."""

    def __init__(self, types: Mapping[str, Mapping[str, Field]]):
        self._types = {t: dict(fields) for t, fields in types.items()}
        # field list per type, in stable_field_index order
        self._ordered = {
            t: tuple(sorted(fields.values(), key=lambda f: (f.index, f.name))) for t, fields in self._types.items()
        }
        # (field name, its event getter) per type: what extract() walks for every field
        self._getters = {t: tuple((f.name, f.get_event) for f in fs.values()) for t, fs in self._types.items()}
        self._jwt_fields = {
            t: tuple(f for f in fs if f.get_jwt is not None) for t, fs in self._ordered.items()
        }
        # (field name, pointer parts) per type: what the record scanner looks for in an event's bytes
        self._paths = {
            t: tuple((f.name, pointer_parts(f.event_pointer)) for f in fs) for t, fs in self._ordered.items()
        }

    @classmethod
    def from_config(cls, conf: Any) -> "Extractors":
        if conf is None:
            return cls({})
        if not isinstance(conf, dict):
            raise ConfigError("EXTRACTORS: must be a JSON object of event types")
        types: dict[str, dict[str, Field]] = {}
        for etype, fields in conf.items():
            if not isinstance(fields, dict):
                raise ConfigError(f"EXTRACTORS: {etype!r} must map field names to extractor objects")
            out: dict[str, Field] = {}
            for fname, spec in fields.items():
                where = f"EXTRACTORS: {etype}.{fname}"
                if not isinstance(spec, dict):
                    raise ConfigError(f"{where} must be an object")
                idx = spec.get("stable_field_index", 0)
                if not isinstance(idx, int) or isinstance(idx, bool):
                    raise ConfigError(f"{where}.stable_field_index must be an integer")
                ev = spec.get("event")
                if not isinstance(ev, dict) or not isinstance(ev.get("json_pointer"), str):
                    raise ConfigError(f"{where}.event.json_pointer is required (a string)")
                jw = spec.get("jwt")
                jwt_ptr = None
                if jw is not None:
                    if not isinstance(jw, dict) or not isinstance(jw.get("json_pointer"), str):
                        raise ConfigError(f"{where}.jwt.json_pointer must be a string")
                    jwt_ptr = jw["json_pointer"]
                try:
                    get_event = compile_pointer(ev["json_pointer"])
                    get_jwt = compile_pointer(jwt_ptr) if jwt_ptr is not None else None
                except ValueError as exc:
                    raise ConfigError(f"{where}: {exc}") from None
                out[fname] = Field(fname, idx, ev["json_pointer"], jwt_ptr, get_event, get_jwt)
            types[etype] = out
        return cls(types)

    def fields(self, event_type: str) -> tuple[Field, ...]:
        return self._ordered.get(event_type, ())

    def paths(self, event_type: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(field name, pointer parts) of every field of ``event_type``."""
        return self._paths.get(event_type, ())

    def has_field(self, event_type: str, name: str) -> bool:
        return name in self._types.get(event_type, ())

    def extract(self, event_type: str, obj: Any, wanted: Iterable[str] | None = None) -> dict[str, Any]:
        """Field values (as value keys) of an event; absent fields are left out."""
        if wanted is None:
            getters = self._getters.get(event_type, ())
        else:
            fields = self._types.get(event_type) or {}
            getters = [(name, fields[name].get_event) for name in wanted if name in fields]
        out = {}
        for name, get in getters:
            v = get(obj)
            if v is not MISSING:
                out[name] = value_key(v)
        return out

    def automatic(self, claims_list: Iterable[Mapping[str, Any]]) -> list["Subscription"]:
        """Automatic subscriptions from JWT claims: one per (type, field, value) found."""
        subs: list[Subscription] = []
        seen = set()
        for claims in claims_list:
            for etype, fields in self._jwt_fields.items():
                for f in fields:
                    v = f.get_jwt(claims)  # type: ignore[misc]
                    if v is MISSING:
                        continue
                    k = (etype, f.name, value_key(v))
                    if k in seen:
                        continue
                    seen.add(k)
                    subs.append(Subscription(etype, ({f.name: v},)))
        return subs


class Subscription:
    """One subscription: an event type and a disjunction of conjunctions.

    ``one_of`` is what is matched; ``shown`` (default: ``one_of``) is what the client sent and
    sees again in ``rig.subscriptions_set``: constraints on fields no extractor defines are
    kept there but not matched (RIG ignores them)."""

    __slots__ = ("event_type", "one_of", "shown", "_key", "_json")

    def __init__(self, event_type: str, one_of: tuple[dict, ...] = (), shown: tuple[dict, ...] | None = None):
        self.event_type = event_type
        self.one_of = one_of
        self.shown = one_of if shown is None else shown
        conjs = (tuple(sorted((k, value_key(v)) for k, v in o.items())) for o in one_of)
        # value keys are str or bytes: order by (field, kind, key) so the two kinds are never compared
        self._key = (event_type, tuple(sorted(conjs, key=lambda c: [(f, type(k) is bytes, k) for f, k in c])))
        self._json: bytes | None = None

    @property
    def conjunctions(self) -> tuple[tuple[tuple[str, Any], ...], ...]:
        """The oneOf objects as sorted (field, value_key) tuples; () means every event of the type."""
        conj = self._key[1]
        return () if any(len(c) == 0 for c in conj) else conj

    def to_json(self) -> dict:
        return {"eventType": self.event_type, "oneOf": list(self.shown)}

    def json_bytes(self) -> bytes:
        """``orjson.dumps(self.to_json())``, made once (a subscription is immutable)."""
        if self._json is None:
            self._json = orjson.dumps(self.to_json())
        return self._json

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Subscription) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"Subscription({self.event_type!r}, {self.one_of!r})"


@dataclass(frozen=True)
class Limits:
    """What one connection may ask for (0: no limit). Bounds the memory a connection's
    subscriptions take: at most ``max_oneof`` conjunctions of values of at most
    ``max_value_bytes``, from a list of at most ``max_bytes`` as sent."""

    max_subscriptions: int = 50
    max_oneof: int = 100
    max_value_bytes: int = 512
    max_bytes: int = 16384

    @classmethod
    def from_config(cls, cfg: Any) -> "Limits":
        return cls(cfg.max_subscriptions, cfg.max_oneof, cfg.max_subscription_value_bytes, cfg.max_subscriptions_bytes)

    def check_size(self, n: int) -> None:
        if self.max_bytes and n > self.max_bytes:
            raise SubscriptionError(
                f"subscriptions too large: {n} bytes (limit {self.max_bytes}, RIGFAST_MAX_SUBSCRIPTIONS_BYTES)"
            )


NO_LIMITS = Limits(0, 0, 0, 0)


def _value_size(v: Any) -> int:
    if type(v) is str:
        return len(v) if v.isascii() else len(v.encode("utf-8", "surrogatepass"))
    if v is None or type(v) in (bool, int, float):
        return 8
    return len(orjson.dumps(v))


def parse_subscriptions(raw: Any, extractors: Extractors, limits: Limits = NO_LIMITS) -> list[Subscription]:
    """Validate a decoded JSON subscription list; raises SubscriptionError naming the problem."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise SubscriptionError("subscriptions must be a JSON list")
    if limits.max_subscriptions and len(raw) > limits.max_subscriptions:
        raise SubscriptionError(
            f"too many subscriptions: {len(raw)} (limit {limits.max_subscriptions}, RIGFAST_MAX_SUBSCRIPTIONS)"
        )
    max_value = limits.max_value_bytes
    oneof_left = limits.max_oneof or -1
    out: list[Subscription] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise SubscriptionError(f"subscription #{i} must be an object")
        etype = item.get("eventType")
        if not isinstance(etype, str) or not etype:
            raise SubscriptionError(f"subscription #{i}: eventType must be a non-empty string")
        one_of = item.get("oneOf", [])
        if one_of is None:
            one_of = []
        if not isinstance(one_of, list):
            raise SubscriptionError(f"subscription #{i}: oneOf must be a list of objects")
        if oneof_left >= 0:
            oneof_left -= len(one_of)
            if oneof_left < 0:
                raise SubscriptionError(
                    f"subscription #{i}: too many oneOf entries (limit {limits.max_oneof} per connection, RIGFAST_MAX_ONEOF)"
                )
        matched = []
        for j, cond in enumerate(one_of):
            if not isinstance(cond, dict):
                raise SubscriptionError(f"subscription #{i}: oneOf[{j}] must be an object")
            for fname, value in cond.items():
                if max_value and _value_size(value) > max_value:
                    raise SubscriptionError(
                        f"subscription #{i}: oneOf[{j}].{fname} value too large"
                        f" (limit {max_value} bytes, RIGFAST_MAX_SUBSCRIPTION_VALUE_BYTES)"
                    )
            known = {f: v for f, v in cond.items() if extractors.has_field(etype, f)}
            matched.append(known if len(known) != len(cond) else cond)
        # a constraint on a field no extractor defines is accepted, echoed and ignored (as in RIG)
        out.append(Subscription(etype, tuple(matched), tuple(one_of)))
    return out


def parse_subscriptions_json(text: bytes | str, extractors: Extractors, limits: Limits = NO_LIMITS) -> list[Subscription]:
    limits.check_size(len(text))
    try:
        raw = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise SubscriptionError(f"subscriptions are not valid JSON: {exc}") from None
    return parse_subscriptions(raw, extractors, limits)


class SubscriptionTexts:
    """Connect subscriptions (``?subscriptions=``) parsed once per distinct text: the connects
    of one application usually ask for the same, and then share one tuple of (immutable)
    Subscription objects instead of holding a copy each (~250 B per idle connection).
    At most ``keep`` texts of at most ``max_text`` characters are kept, the oldest dropped
    first; longer texts are parsed every time."""

    __slots__ = ("extractors", "limits", "keep", "max_text", "_parsed")

    def __init__(self, extractors: Extractors, limits: Limits, keep: int = 256, max_text: int = 2048):
        self.extractors = extractors
        self.limits = limits
        self.keep = keep
        self.max_text = max_text
        self._parsed: dict[str, tuple[Subscription, ...]] = {}

    def parse(self, text: str) -> tuple[Subscription, ...]:
        """The subscriptions of ``text``, duplicates dropped (raises SubscriptionError like parse_subscriptions)."""
        subs = self._parsed.get(text)
        if subs is None:
            subs = tuple(merge(parse_subscriptions_json(text, self.extractors, self.limits)))
            if len(text) <= self.max_text:
                if len(self._parsed) >= self.keep:
                    del self._parsed[next(iter(self._parsed))]
                self._parsed[text] = subs
        return subs


def subscriptions_json(subs: Iterable[Subscription]) -> bytes:
    """``orjson.dumps([s.to_json() for s in subs])`` (what ``rig.subscriptions_set`` carries), from each one's cached JSON."""
    return b"[" + b",".join([s.json_bytes() for s in subs]) + b"]"


def merge(*lists: Iterable[Subscription]) -> list[Subscription]:
    """Union of subscription lists, first occurrence kept, order stable."""
    seen: set[Subscription] = set()
    out = []
    for lst in lists:
        for s in lst:
            if s not in seen:
                seen.add(s)
                out.append(s)
    return out
