# cython: language_level=3, boundscheck=False, wraparound=False
"""SubscriptionIndex, compiled twin of ``match_ref.py`` (same interface and semantics).

Layout per event type: the type-only conns (a dict of conn -> None: at 10,000
conns its table is ~27 bytes a conn where a set's is ~52), and for constrained
subscriptions ``anchor field -> value key -> _Bucket``. A bucket splits the
conjunctions anchored there into conns whose conjunction has that single
field (``direct``: they match outright, one C-level set union) and conns with
longer conjunctions (``cond``: only their tails are compared). ``match`` does
one dict lookup per indexed field of the type plus the work on the buckets
the event selects; it never walks the subscriber population.
"""

from cpython.dict cimport PyDict_Contains, PyDict_GetItemWithError, PyDict_Next
from cpython.object cimport PyObject, PyObject_RichCompareBool, Py_EQ
from cpython.list cimport PyList_Append
from cpython.set cimport PySet_Add, PySet_Contains, PySet_Discard, PySet_New


cdef class _Bucket:
    def __cinit__(self):
        self.direct = set()
        self.cond = {}


cdef class _TypeEntry:
    def __cinit__(self, etype):
        self.etype = etype
        self.everyone = {}
        self.everyone_list = None
        self.by_field = {}
        self.field_refs = {}


cdef inline bint _conj_tail_matches(tuple tail, dict fields) except -1:
    """Every (field, value key) pair of ``tail`` is present in ``fields`` with an equal key."""
    cdef object pair
    cdef PyObject* got
    for pair in tail:
        got = PyDict_GetItemWithError(fields, (<tuple>pair)[0])
        if got is NULL:
            return False
        if not PyObject_RichCompareBool(<object>got, (<tuple>pair)[1], Py_EQ):
            return False
    return True


cdef inline bint _any_tail_matches(list tails, dict fields) except -1:
    cdef object tail
    for tail in tails:
        if _conj_tail_matches(<tuple>tail, fields):
            return True
    return False


cdef class SubscriptionIndex:
    """Event type and field values -> subscribed connections (see ``match_ref``)."""

    def __cinit__(self):
        self._types = {}
        self._conns = {}
        self.subscription_count = 0

    def __len__(self):
        return len(self._conns)

    cpdef set(self, object conn, object subs):
        """Replace ``conn``'s subscriptions with ``subs`` (``(event_type, conjunctions)`` pairs)."""
        cdef list entries = []
        cdef Py_ssize_t nsubs = 0
        cdef _TypeEntry te
        cdef _Bucket bucket
        cdef dict by_value
        cdef dict refs
        cdef object etype, conjs, conj, field, key, f, tails, pair
        cdef PyObject* p
        self.remove(conn)
        for etype, conjs in subs:
            nsubs += 1
            p = PyDict_GetItemWithError(self._types, etype)
            if p is NULL:
                te = _TypeEntry(etype)
                self._types[etype] = te
            else:
                te = <_TypeEntry>p
            if not conjs:
                te.everyone[conn] = None
                te.everyone_list = None
                entries.append((te, None))
                continue
            refs = te.field_refs
            for conj in conjs:
                field, key = conj[0]
                p = PyDict_GetItemWithError(te.by_field, field)
                if p is NULL:
                    by_value = {}
                    te.by_field[field] = by_value
                else:
                    by_value = <dict>p
                p = PyDict_GetItemWithError(by_value, key)
                if p is NULL:
                    bucket = _Bucket()
                    by_value[key] = bucket
                else:
                    bucket = <_Bucket>p
                if len(conj) == 1:
                    bucket.direct.add(conn)
                else:
                    p = PyDict_GetItemWithError(bucket.cond, conn)
                    if p is NULL:
                        bucket.cond[conn] = [tuple(conj[1:])]
                    else:
                        (<list>p).append(tuple(conj[1:]))
                for pair in conj:
                    f = pair[0]
                    refs[f] = refs.get(f, 0) + 1
                entries.append((te, conj))
        if entries:
            if nsubs == 1 and len(entries) == 1 and (<tuple>entries[0])[1] is None:
                self._conns[conn] = te  # the usual idle subscriber (one type, no constraint): no tuples kept
            else:
                self._conns[conn] = (tuple(entries), nsubs)
            self.subscription_count += nsubs

    cpdef remove(self, object conn):
        """Drop every subscription of ``conn`` (no-op if it has none)."""
        cdef object held = self._conns.pop(conn, None)
        cdef tuple entries
        cdef _TypeEntry te
        cdef _Bucket bucket
        cdef dict by_value
        cdef dict refs
        cdef object entry, conj, field, key, pair, f
        cdef Py_ssize_t n
        cdef PyObject* p
        if held is None:
            return
        if type(held) is _TypeEntry:
            entries = ((held, None),)
            self.subscription_count -= 1
        else:
            entries = <tuple>(<tuple>held)[0]
            self.subscription_count -= <Py_ssize_t>(<tuple>held)[1]
        for entry in entries:
            te = <_TypeEntry>(<tuple>entry)[0]
            conj = (<tuple>entry)[1]
            if conj is None:
                te.everyone.pop(conn, None)
                te.everyone_list = None
                continue
            refs = te.field_refs
            for pair in conj:
                f = pair[0]
                n = refs[f] - 1
                if n:
                    refs[f] = n
                else:
                    del refs[f]
            field, key = conj[0]
            # several of conn's conjunctions may share one anchor: the first
            # one emptied conn's place in the bucket (and maybe the bucket)
            p = PyDict_GetItemWithError(te.by_field, field)
            if p is NULL:
                continue
            by_value = <dict>p
            p = PyDict_GetItemWithError(by_value, key)
            if p is NULL:
                continue
            bucket = <_Bucket>p
            bucket.direct.discard(conn)
            bucket.cond.pop(conn, None)
            if not bucket.direct and not bucket.cond:
                del by_value[key]
                if not by_value:
                    del te.by_field[field]
        for entry in entries:
            te = <_TypeEntry>(<tuple>entry)[0]
            if not te.everyone and not te.by_field:
                p = PyDict_GetItemWithError(self._types, te.etype)
                if p is not NULL and p == <PyObject*>te:
                    del self._types[te.etype]

    cpdef tuple wanted(self, object event_type):
        """The fields named by any conjunction of ``event_type`` (worth extracting)."""
        cdef PyObject* p = PyDict_GetItemWithError(self._types, event_type)
        if p is NULL:
            return ()
        return tuple((<_TypeEntry>p).field_refs)

    cpdef list match(self, object event_type, object fields):
        """Distinct conns subscribed to an event of ``event_type`` with field value keys ``fields``."""
        cdef PyObject* p = PyDict_GetItemWithError(self._types, event_type)
        cdef _TypeEntry te
        cdef dict everyone
        cdef list every_list
        # conns matched through field values: a bucket's own ``direct`` set
        # while it is the only source (``pending``, not copied), else ``extra``
        cdef set pending = None
        cdef set extra = None
        cdef dict fd
        cdef dict cond
        cdef _Bucket bucket
        cdef Py_ssize_t pos = 0, pos2
        cdef PyObject *pfield
        cdef PyObject *pby_value
        cdef PyObject *pv
        cdef PyObject *pconn
        cdef PyObject *ptails
        cdef bint has_everyone
        cdef list out
        cdef object conn
        if p is NULL:
            return []
        te = <_TypeEntry>p
        everyone = te.everyone
        has_everyone = len(everyone) != 0
        if has_everyone:
            every_list = te.everyone_list
            if every_list is None:
                every_list = te.everyone_list = list(everyone)
        if not te.by_field:
            return every_list[:] if has_everyone else []
        if type(fields) is dict:
            fd = <dict>fields
        else:
            fd = dict(fields)
        while PyDict_Next(te.by_field, &pos, &pfield, &pby_value):
            pv = PyDict_GetItemWithError(fd, <object>pfield)
            if pv is NULL:
                continue
            p = PyDict_GetItemWithError(<dict>pby_value, <object>pv)
            if p is NULL:
                continue
            bucket = <_Bucket>p
            if bucket.direct:
                if extra is None and pending is None:
                    pending = bucket.direct
                else:
                    if extra is None:
                        extra = PySet_New(pending)
                        pending = None
                    extra |= bucket.direct
            cond = bucket.cond
            if cond:
                pos2 = 0
                while PyDict_Next(cond, &pos2, &pconn, &ptails):
                    conn = <object>pconn
                    if has_everyone and PyDict_Contains(everyone, conn):
                        continue
                    if extra is not None:
                        if PySet_Contains(extra, conn):
                            continue
                    elif pending is not None and PySet_Contains(pending, conn):
                        continue
                    if _any_tail_matches(<list>ptails, fd):
                        if extra is None:
                            extra = set() if pending is None else PySet_New(pending)
                            pending = None
                        PySet_Add(extra, conn)
        if extra is None:
            extra = pending
            if extra is None:
                return every_list[:] if has_everyone else []
        if not has_everyone:
            return list(extra)
        out = every_list[:]
        for conn in extra:
            if not PyDict_Contains(everyone, conn):
                PyList_Append(out, conn)
        return out
