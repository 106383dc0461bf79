# C types of rigfast/auth/ratelimit.py in its compiled build (rigfast/_ext/inplace.py): the .py is the
# source of both engines; this file only types its classes' attributes and its internal calls.

cpdef str client_key(peer)


cdef class _Bucket:
    cdef public double tokens, last

    cpdef refill(self, double now, double cap, double rate)
    cpdef double take(self, double rate) except? -1.0
    cpdef double due_s(self, double rate) except? -1.0


cdef class ConnectionRateLimiter:
    cdef public long long per_minute, rejected
    cdef double _rate, _cap
    cdef _Bucket _bucket
    cdef object _clock

    cpdef double wait_s(self) except? -1.0
    cpdef bint allow(self) except -1
    cpdef double retry_after_s(self) except? -1.0


cdef class ClientRateLimiter:
    cdef public long long per_minute, rejected
    cdef public Py_ssize_t max_clients
    cdef double _rate, _cap
    cdef object _clock
    cdef dict _buckets
    cdef object _newest

    cdef _Bucket _bucket(self, str key)
    cpdef double wait_s(self, str key) except? -1.0
    cpdef double peer_wait_s(self, peer) except? -1.0
    cpdef bint allow(self, str key) except -1
    cpdef double retry_after_s(self, str key) except? -1.0
