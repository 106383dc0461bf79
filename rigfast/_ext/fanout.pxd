# The contract of the compiled delivery loop: what it reads of a recipient (every session is one).
cdef class Recipient:
    cdef public long kind          # 0 SSE, 1 WS, 2 long-polling, 3 Phoenix channel
    cdef public list outbox        # encoded frames waiting for the next write; None: nothing waits
    cdef public bint dirty         # queued for writing already
    cdef public bint closed
    cdef public object transport   # written to directly for SSE/WS; None: call flush()
    cdef public object wire        # Phoenix channels: the key of their shared frame (serializer + topic)

