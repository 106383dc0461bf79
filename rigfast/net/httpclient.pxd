# C types of rigfast/net/httpclient.py in its compiled build (rigfast/_ext/inplace.py): the .py is the
# source of both engines; this file only types its classes' attributes and its internal calls.

cdef class Pool
cdef class UpstreamConn


cdef class Sink:
    cpdef head(self, int status, bytes head, Py_ssize_t fields, Py_ssize_t end, int kind, long long length)
    cpdef body(self, chunk)
    cpdef end(self)
    cpdef flush(self)
    cpdef error(self, int status, str message)
    cpdef pause_source(self)
    cpdef resume_source(self)
    cpdef upgraded(self, int status, list headers, rest)
    cpdef data(self, data)
    cpdef closed(self)


cdef class Exchange:
    cdef public Pool pool
    cdef public object data, pending
    cdef public str method
    cdef public Sink sink
    cdef public UpstreamConn conn
    cdef public bint head, timed, done, started, streaming, body_done, upgrade, retry
    cdef public int tries
    cdef public double last, timeout_s

    cpdef fail(self, int status, str message, str detail)
    cpdef timed_out(self)
    cpdef cancel(self)
    cpdef _detach(self)
    cpdef pause(self)
    cpdef resume(self)
    cpdef send_body(self, chunk)
    cpdef end_body(self)
    cpdef write(self, data)


cdef class UpstreamConn:
    cdef public Pool pool
    cdef public object transport, parser
    cdef public Exchange ex
    cdef public int status, kind
    cdef public list headers
    cdef public bytes head
    cdef public Py_ssize_t head_at, head_bytes, size, cap
    cdef public bint complete, reused, got_bytes, keep, closed, headers_done, paused, tunnel, write_paused
    cdef public double idle_since

    cpdef send(self, Exchange ex)
    cpdef _upgraded(self, rest)
    cpdef _done(self)
    cpdef _fail(self, int status, str message, str detail)
    cpdef abandon(self)
    cpdef close(self)


cdef class Pool:
    cdef public object loop, ssl, waiting, port
    cdef public str scheme, host, name, label
    cdef public int max_conns, max_idle, connecting, opened
    cdef public Py_ssize_t max_response_bytes
    cdef public list idle
    cdef public set conns, connecting_ex, tunnels
    cdef public double idle_timeout, tick

    cpdef submit(self, Exchange ex, bint retry=*)
    cpdef release(self, UpstreamConn conn)
    cpdef lost(self, UpstreamConn conn)
    cpdef _next(self)
    cpdef sweep(self, double now)


cdef class HttpClient:
    cdef public object loop, _ssl, _sweeping
    cdef public double timeout_s, _finest, idle_timeout_s
    cdef public int max_conns, max_idle
    cdef public Py_ssize_t max_response_bytes
    cdef public dict pools

    cpdef Pool pool(self, tuple key, str label=*)
    cpdef Exchange request(self, tuple key, data, str method, Sink sink, timeout_s=*, str label=*, bint streaming=*,
                           retry=*)
    cpdef _start_sweep(self, double t)


cdef class _Collect(Sink):
    cdef public object future, ex
    cdef public Py_ssize_t max_body, size
    cdef public bint head_only
    cdef public int status
    cdef public list headers, parts
