# C types of rigfast/cloudevents.py in its compiled build (rigfast/_ext/inplace.py): the .py is the
# source of both engines; this file only types the event.
cimport cython


@cython.final
cdef class Event:
    cdef public object type, id, obj, json, rid, keys
    cdef public long long seq
