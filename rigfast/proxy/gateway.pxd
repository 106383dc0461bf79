# C types of rigfast/proxy/gateway.py in its compiled build (rigfast/_ext/inplace.py): the .py is the
# source of both engines; this file only types its classes' attributes and its internal calls.
from rigfast.net.httpclient cimport Exchange, HttpClient, Sink
from rigfast.net.protocol cimport HttpProtocol
from rigfast.wire.http1 cimport Request


cdef class Proxy:
    cdef public object cfg, loop, auth, tokens, peers, table, kafka
    cdef public int pid
    cdef public HttpClient client
    cdef public double kafka_timeout_s, async_timeout_s
    cdef public dict apis, versions, waiting, _tls_of, length_lines
    cdef public Py_ssize_t length_lines_max

    cpdef tuple _route(self, Request req)
    cpdef handle(self, HttpProtocol proto, Request req)
    cpdef bytes _encode(self, HttpProtocol proto, Request req, ep, correlation, bytes target, bint upgrade=*,
                        body_length=*)
    cpdef bytes _scheme_line(self, HttpProtocol proto)
    cpdef bytes length_line(self, Py_ssize_t n)
    cpdef bint _error(self, proto, req, int status, str message)


cdef class _Relay(Sink):
    cdef public Proxy proxy
    cdef public HttpProtocol proto
    cdef public Request req
    cdef public Exchange ex
    cdef public list out
    cdef public bint chunked, keep, started, finished, source_paused, uploading

    cpdef _release(self)
    cpdef pause_writing(self)
    cpdef resume_writing(self)
    cpdef connection_lost(self)


cdef class _Upload:
    cdef public _Relay relay
    cdef public bint chunked

    cpdef body(self, chunk)
    cpdef end(self)


cdef class _Tunnel(_Relay):
    pass


cdef class _Forward:
    cdef public bint http
    cdef public object key
    cdef public str label
    cdef public bytes host_line
    cdef public frozenset added
    cdef public list add_headers


cdef _count(int status, Request req=*)
cdef _Forward _plan(ep)
cdef _connection_named(list headers)
