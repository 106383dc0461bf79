# C types of rigfast/hub/history.py in its compiled build (rigfast/_ext/inplace.py): the .py is the
# source of both engines; this file only types the history's attributes and its per-flush calls.
cimport cython


@cython.final
cdef class History:
    cdef public Py_ssize_t max_events, max_bytes, bytes, _head, _count
    cdef public double max_age_s
    cdef public object _batches

    cpdef append(self, event, double now)
    cpdef extend(self, list events, double now)
    cpdef _trim(self)
    cpdef _drop_oldest(self)
    cpdef expire(self, double now)
