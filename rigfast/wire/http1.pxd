# C types of rigfast/wire/http1.py in its compiled build (rigfast/_ext/inplace.py): the .py is the
# source of both engines; this file only types its request's attributes and the hot functions.
cimport cython


@cython.final
cdef class Request:
    cdef public str method, path, query_string
    cdef public bytes url
    cdef public list headers
    cdef public object body, _query, _cookies, route
    cdef public bint keep_alive, upgrade
    cdef public double t0

    cpdef set_url(self, bytes url)
    cpdef dict _parse_query(self)
    cpdef query_one(self, str name)
    cpdef header(self, bytes name)
    cpdef header_str(self, bytes name)
    cpdef list headers_all(self, bytes name)


cpdef dict parse_query(str qs)
cpdef Py_ssize_t chunked_end(bytes buf, Py_ssize_t i, list state) except -2
cpdef bytes encode_response(int status, body=*, content_type=*, headers=*, bint keep_alive=*)
cpdef bytes encode_stream_head(int status, headers)
