# cython: language_level=3, boundscheck=False, wraparound=False
"""Wire encoders, compiled twin of ``frames_ref.py`` (byte-identical output).

Each builds its result in one allocation and copies the parts in with
memcpy. Arguments of other types than ``str``/``bytes`` go to the reference,
so odd inputs behave (and fail) exactly as there.
"""

from libc.string cimport memcpy
from rigfast._ext.hexdigit cimport hexval
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

from rigfast._ext import frames_ref as _ref


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL


cdef inline char* _put(char* dst, const char* src, Py_ssize_t n) noexcept:
    memcpy(dst, src, <size_t>n)
    return dst + n


def encode_sse(event_type, event_id, json):
    """``event:``/``id:``/``data:`` lines and the blank line. JSON is single-line by construction."""
    cdef Py_ssize_t ntype, nid, njson, total
    cdef const char* ptype
    cdef const char* pid
    cdef char* dst
    cdef bytes out
    if type(event_type) is not str or type(event_id) is not str or type(json) is not bytes:
        return _ref.encode_sse(event_type, event_id, json)
    ptype = PyUnicode_AsUTF8AndSize(event_type, &ntype)
    pid = PyUnicode_AsUTF8AndSize(event_id, &nid)
    njson = PyBytes_GET_SIZE(json)
    if nid:
        # "event: " T "\nid: " I "\ndata: " J "\n\n"
        total = 7 + ntype + 5 + nid + 7 + njson + 2
    else:
        # "event: " T "\ndata: " J "\n\n"
        total = 7 + ntype + 7 + njson + 2
    out = PyBytes_FromStringAndSize(NULL, total)
    dst = PyBytes_AS_STRING(out)
    dst = _put(dst, b"event: ", 7)
    dst = _put(dst, ptype, ntype)
    if nid:
        dst = _put(dst, b"\nid: ", 5)
        dst = _put(dst, pid, nid)
    dst = _put(dst, b"\ndata: ", 7)
    dst = _put(dst, PyBytes_AS_STRING(json), njson)
    dst[0] = b'\n'
    dst[1] = b'\n'
    return out


def encode_ws_text(payload):
    """One unmasked, unfragmented server text frame (RFC 6455)."""
    cdef Py_ssize_t n, head, i
    cdef unsigned long long un
    cdef char* dst
    cdef bytes out
    if type(payload) is not bytes:
        return _ref.encode_ws_text(payload)
    n = PyBytes_GET_SIZE(payload)
    if n < 126:
        head = 2
    elif n < 65536:
        head = 4
    else:
        head = 10
    out = PyBytes_FromStringAndSize(NULL, head + n)
    dst = PyBytes_AS_STRING(out)
    dst[0] = <char>0x81
    if head == 2:
        dst[1] = <char>n
    elif head == 4:
        dst[1] = <char>126
        dst[2] = <char>((n >> 8) & 0xFF)
        dst[3] = <char>(n & 0xFF)
    else:
        dst[1] = <char>127
        un = <unsigned long long>n
        for i in range(8):
            dst[9 - i] = <char>((un >> (8 * i)) & 0xFF)
    memcpy(dst + head, PyBytes_AS_STRING(payload), <size_t>n)
    return out


def unquote(text, bint plus=False):
    """Percent-decoding of a URL part, exactly ``urllib.parse.unquote`` (``plus``: ``+`` is a space
    first, as ``unquote_plus``). ASCII text is decoded here in one pass; anything else (non-ASCII
    characters, other types) goes to the reference."""
    cdef Py_ssize_t n, i = 0, j = 0
    cdef const unsigned char* src
    cdef unsigned char c
    cdef int hi, lo
    cdef bytes buf
    cdef char* dst
    if type(text) is not str or not (<str>text).isascii():
        return _ref.unquote(text, plus)
    src = <const unsigned char*>PyUnicode_AsUTF8AndSize(text, &n)
    buf = PyBytes_FromStringAndSize(NULL, n)
    dst = PyBytes_AS_STRING(buf)
    while i < n:
        c = src[i]
        if c == 37 and i + 2 < n:  # '%' and two more characters
            hi = hexval(src[i + 1])
            lo = hexval(src[i + 2])
            if hi >= 0 and lo >= 0:
                dst[j] = <char>(hi * 16 + lo)
                j += 1
                i += 3
                continue
        elif c == 43 and plus:  # '+'
            c = 32
        dst[j] = <char>c
        j += 1
        i += 1
    if j == n:
        return text if not plus else (<bytes>buf).decode("ascii")
    return buf[:j].decode("utf-8", "replace")
