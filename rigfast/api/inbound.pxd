# C types of rigfast/api/inbound.py in its compiled build (rigfast/_ext/inplace.py): the .py is the
# source of both engines; this file only types the routes' attributes and the submission's calls.
cimport cython

from rigfast.auth.authorizer cimport Authorizer
from rigfast.hub.hub cimport Hub
from rigfast.net.protocol cimport HttpProtocol


@cython.final
cdef class InboundApi:
    cdef public object cfg, ready, tokens, fallback, owners, extractors, limits, texts, phoenix
    cdef public Hub hub
    cdef public Authorizer auth
    cdef public bytes cors_origin, _sse_head_any
    cdef public list _cors_any

    cpdef list cors(self, req, bint credentials=*)
    cpdef submit(self, HttpProtocol proto, req, str source=*, bint checked=*)
    cpdef _accept(self, HttpProtocol proto, req, event, str source, cors)
