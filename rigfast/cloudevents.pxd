# C types of rigfast/cloudevents.py in its compiled build (rigfast/_ext/inplace.py): the .py is the
# source of both engines; this file only types the event and the HTTP binding's calls.
cimport cython


# Not GC-tracked (as the scanner's RecordEvent): it holds strings, bytes, ints and JSON-decoded
# objects, never a cycle; so the events a history keeps cost the collector nothing.
@cython.no_gc
@cython.final
@cython.freelist(1024)
cdef class Event:
    cdef public object type, id, obj, json, rid, keys
    cdef public long long seq
