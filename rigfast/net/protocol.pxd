# C types of rigfast/net/protocol.py in its compiled build (rigfast/_ext/inplace.py): the .py is the
# source of both engines; this file only types its classes' attributes and its internal calls.
cimport cython

from rigfast.wire.http1 cimport Request


cdef class ServerState:
    cdef public object cfg, limit, name, duration, router, error_headers, loop, early_body
    cdef public bint access_log, debug, draining
    cdef public set http_conns, all_conns
    cdef public list spare
    cdef public Py_ssize_t max_head, max_headers, max_body, send_buffer, max_pipelined, spare_max
    cdef public double request_timeout, keepalive_timeout


@cython.final
cdef class HttpProtocol:
    cdef public ServerState server
    cdef public object loop, transport, parser, req, busy, stream, error, leftover, flow, body_sink, backlog, failed
    cdef public object peername, hbuf
    cdef public list body_parts, queue, batch, cstate
    cdef public Py_ssize_t body_size, head_size, batch_bytes, hpos, cpos
    cdef public bint in_head, closing, reading_paused, eof, write_blocked, reusable, keep
    cdef public double deadline
    cdef public int counted, expect

    cpdef _reset(self)
    cpdef _pause_reading(self)
    cpdef _send(self, data)
    cpdef _write_batch(self)
    cpdef _feed(self, data)
    cpdef bint _parse(self, chunk, data, Py_ssize_t base) except -1
    cpdef _protocol_error(self, int status, str message)
    cpdef _body_too_large(self)
    @cython.locals(start=Py_ssize_t, end=Py_ssize_t, length="long long", transfer=int, nhost=int, expect=int,
                   headers=list)
    cpdef _head(self, Request req)
    cpdef _finish_request(self)
    cpdef run_queue(self)
    cpdef park(self)
    cpdef unpark(self)
    cpdef write(self, data)
    cpdef respond(self, req, int status, body=*, content_type=*, headers=*)
    cpdef respond_error(self, req, int status, str message, headers=*)
    cpdef fail(self, int status, str message)
    cpdef close(self)
