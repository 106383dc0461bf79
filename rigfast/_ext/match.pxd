# Contract of the compiled SubscriptionIndex (see match_ref.py for semantics).
# Other compiled modules (e.g. a fan-out loop) may cimport this and call the
# cpdef methods without Python dispatch.

cimport cython


@cython.final
cdef class _Bucket:
    # conns with a one-field conjunction anchored here: they match outright
    cdef set direct
    # conn -> list of conjunction tails (conj[1:]) anchored here
    cdef dict cond


@cython.final
cdef class _TypeEntry:
    cdef object etype
    # conns subscribed to every event of the type (conn -> None: a dict's table is smaller than a set's)
    cdef dict everyone
    # list(everyone), built on demand by match(), dropped when everyone changes
    cdef list everyone_list
    # anchor field -> value key -> _Bucket
    cdef dict by_field
    # field -> number of filed conjunctions naming it (what wanted() reports)
    cdef dict field_refs


@cython.final
cdef class SubscriptionIndex:
    cdef dict _types
    # conn -> (tuple of (_TypeEntry, conj or None), number of subscriptions), or only the
    # _TypeEntry when conn has one subscription and it is type-only (the usual idle subscriber)
    cdef dict _conns
    cdef readonly Py_ssize_t subscription_count

    cpdef set(self, object conn, object subs)
    cpdef remove(self, object conn)
    cpdef tuple wanted(self, object event_type)
    cpdef list match(self, object event_type, object fields)
