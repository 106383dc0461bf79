# C types of rigfast/hub/hub.py in its compiled build (rigfast/_ext/inplace.py): the .py is the
# source of both engines; this file only types the hub's attributes and its per-event calls.
cimport cython

from rigfast._ext.match cimport SubscriptionIndex as CIndex
from rigfast.hub.history cimport History

cpdef count(counter, n, tuple labels)
cpdef event_keys(extractors, event)
cpdef list recipients(CIndex index, extractors, event)


@cython.final
cdef class _Frames:
    cdef public Hub hub
    cdef public object event


cdef class Hub:
    cdef public object extractors, loop, relay, interest_listener, _touched
    cdef public CIndex index
    cdef public History history
    cdef public dict sessions, by_token, _latency, _indexed
    cdef public list counts, _pending, _unwritten
    cdef public bint _scheduled, keep_history
    cdef public double _since
    cdef public Py_ssize_t _next_slot, _rids, _seq, replay_max_bytes
    cdef public str boot, rid_prefix, build
    cdef public _Frames _frames

    cpdef publish(self, event, str source=*)
    cpdef _schedule(self)
    cpdef _touch(self, session)
    cpdef _flush(self)
    cpdef _fan_out(self, event, str source, list slots)
    cpdef encode(self, int kind, event, bint with_id=*)
    cpdef event_id(self, event)
