# cython: language_level=3
"""The delivery loop, compiled: same interface and behaviour as fanout_ref.py.

Per recipient it does one dict lookup, two attribute reads and a list
append, with the frame encoded once per wire kind (per serializer and topic
name for Phoenix channels) and shared.
"""

from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject

import logging

log = logging.getLogger("rigfast.hub")


cdef class Recipient:
    """What the delivery loop touches of a session, as C fields (sessions derive from it)."""

    def __cinit__(self, *args, **kwargs):
        self.outbox = None
        self.transport = None
        self.wire = None


cpdef tuple deliver(list slots, dict sessions, object encode, object touched):
    cdef Py_ssize_t i, n = len(slots)
    cdef Recipient s
    cdef object frame
    cdef object f0 = None, f1 = None, f2 = None
    cdef dict keyed = None
    cdef long c0 = 0, c1 = 0, c2 = 0, c3 = 0
    cdef long kind
    cdef PyObject* p
    cdef PyObject* q
    cdef list out
    append_touched = touched.append
    for i in range(n):
        p = PyDict_GetItem(sessions, slots[i])
        if p is NULL:
            raise KeyError(slots[i])
        s = <Recipient>p
        kind = s.kind
        if kind == 0:
            if f0 is None:
                f0 = encode(0, s)
            frame = f0
            c0 += 1
        elif kind == 1:
            if f1 is None:
                f1 = encode(1, s)
            frame = f1
            c1 += 1
        elif kind == 3:  # Phoenix channel: one frame per serializer + topic name (s.wire)
            if keyed is None:
                keyed = {}
            q = PyDict_GetItem(keyed, s.wire)
            if q is NULL:
                frame = encode(3, s)
                keyed[s.wire] = frame
            else:
                frame = <object>q
            c3 += 1
        else:
            if f2 is None:
                f2 = encode(kind, s)
            frame = f2
            c2 += 1
        out = s.outbox
        if out is None:
            s.outbox = [frame]
        else:
            out.append(frame)
        if not s.dirty:
            s.dirty = True
            append_touched(s)
    return c0, c1, c2, c3


cpdef flush_slice(object touched, Py_ssize_t n):
    cdef Py_ssize_t i, m = len(touched)
    cdef Recipient s
    cdef list out
    cdef object data
    if n < m:
        m = n
    popleft = touched.popleft
    for i in range(m):
        s = <Recipient>popleft()
        s.dirty = False
        try:
            if s.transport is None:
                s.flush()
                continue
            out = s.outbox
            if out is None:
                continue
            s.outbox = None
            if s.closed:
                continue
            if len(out) == 1:
                data = out[0]
            elif len(out) == 0:
                continue
            else:
                data = b"".join(out)
            s.transport.write(data)
        except Exception:
            log.exception("flush failed; closing session")
            s.abort()
