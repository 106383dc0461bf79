# cython: language_level=3, boundscheck=False, wraparound=False
"""Response heads in the reverse proxy, compiled: the contract is in ``heads_ref.py`` (its twin),
checked against it by tests/unit/test_ext_heads.py.

Each function is one pass (``forward_fields``: two) over the head's bytes with ``memchr``; the
only Python objects made are the results (and the lowercased names of a Connection field's
tokens, when it names any).
"""

from libc.stdlib cimport free, malloc
from libc.string cimport memchr, memcpy
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

cdef extern from *:
    """
    /* what name_kind says of a field name */
    enum { RF_OTHER, RF_HOP, RF_LENGTH, RF_CONNECTION, RF_TRANSFER, RF_CTYPE, RF_HOST, RF_EXPECT };
    typedef struct { const char *name; Py_ssize_t size; int kind; } rf_field;
    /* the names a proxy looks for (lowercase): hop-by-hop (RFC 9110 7.6.1) and framing */
    static const rf_field rf_fields[] = {
        {"te", 2, RF_HOP}, {"host", 4, RF_HOST}, {"expect", 6, RF_EXPECT}, {"trailer", 7, RF_HOP}, {"upgrade", 7, RF_HOP}, {"connection", 10, RF_CONNECTION},
        {"keep-alive", 10, RF_HOP}, {"content-type", 12, RF_CTYPE}, {"content-length", 14, RF_LENGTH},
        {"proxy-connection", 16, RF_HOP}, {"transfer-encoding", 17, RF_TRANSFER},
        {"proxy-authenticate", 18, RF_HOP}, {"proxy-authorization", 19, RF_HOP},
    };
    #define RF_NFIELDS ((Py_ssize_t)(sizeof(rf_fields) / sizeof(rf_fields[0])))
    """
    enum:
        OTHER "RF_OTHER"
        HOP "RF_HOP"
        LENGTH "RF_LENGTH"
        CONNECTION "RF_CONNECTION"
        TRANSFER "RF_TRANSFER"
        CTYPE "RF_CTYPE"
        HOST "RF_HOST"
        EXPECT "RF_EXPECT"
    ctypedef struct rf_field:
        const char *name
        Py_ssize_t size
        int kind
    const rf_field rf_fields[]
    Py_ssize_t RF_NFIELDS

cdef enum:
    STACK_BYTES = 4096


cdef inline unsigned char low(unsigned char c) noexcept nogil:
    return c + 32 if 65 <= c <= 90 else c


cdef inline bint same(const unsigned char *s, const char *lit, Py_ssize_t n) noexcept nogil:
    """s[:n] equals the lowercase ``lit`` but for case."""
    cdef Py_ssize_t k
    for k in range(n):
        if low(s[k]) != <unsigned char>lit[k]:
            return False
    return True


cdef int name_kind(const unsigned char *s, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(RF_NFIELDS):
        if rf_fields[k].size == n and same(s, rf_fields[k].name, n):
            return rf_fields[k].kind
    return OTHER


cdef inline Py_ssize_t crlf(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """The index of the first CRLF at or after ``i`` (before ``n``), or -1."""
    cdef const unsigned char *p
    while i + 1 < n:
        p = <const unsigned char *>memchr(s + i, 13, n - 1 - i)
        if p == NULL:
            return -1
        i = p - s
        if s[i + 1] == 10:
            return i
        i += 1
    return -1


cdef inline Py_ssize_t colon(const unsigned char *s, Py_ssize_t i, Py_ssize_t eol) noexcept nogil:
    cdef const unsigned char *p = <const unsigned char *>memchr(s + i, 58, eol - i)
    return eol if p == NULL else p - s


cdef inline Py_ssize_t field_line(const unsigned char *s, Py_ssize_t i, Py_ssize_t n, Py_ssize_t *at) noexcept nogil:
    """The end (its CR) of the field line at ``i``, ``at`` set to its colon (or its end: none); -1: no whole line."""
    cdef Py_ssize_t eol = crlf(s, i, n)
    if eol >= 0:
        at[0] = colon(s, i, eol)
    return eol


cdef inline Py_ssize_t skip_ows(const unsigned char *s, Py_ssize_t i, Py_ssize_t j) noexcept nogil:
    while i < j and (s[i] == 32 or s[i] == 9):
        i += 1
    return i


cdef inline Py_ssize_t trim_ows(const unsigned char *s, Py_ssize_t i, Py_ssize_t j) noexcept nogil:
    while j > i and (s[j - 1] == 32 or s[j - 1] == 9):
        j -= 1
    return j


cdef inline long long length_value(const unsigned char *s, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """A Content-Length value s[a:b]: 1 to 18 digits, else -1."""
    cdef long long length = -1 if a == b or b - a > 18 else 0
    cdef Py_ssize_t k
    for k in range(a, b if b - a <= 18 else a):
        if not 48 <= s[k] <= 57:
            return -1
        length = length * 10 + (s[k] - 48)
    return length


cdef inline int transfer_value(const unsigned char *s, Py_ssize_t a, Py_ssize_t b) noexcept nogil:
    """A Transfer-Encoding value s[a:b]: 1 when its last coding is chunked, else 2."""
    cdef Py_ssize_t k = b
    while k > a and s[k - 1] != 44:  # the last coding: after the last comma
        k -= 1
    k = skip_ows(s, k, b)
    return 1 if b - k == 7 and same(s + k, b"chunked", 7) else 2


cdef inline Py_ssize_t head_start(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """Where a head at ``i`` begins: after any empty lines (llhttp skips those)."""
    if i < 0:
        i = 0
    while i < n and (s[i] == 13 or s[i] == 10):
        i += 1
    return i


def response_head(bytes buf, Py_ssize_t start):
    cdef const unsigned char *s = <const unsigned char *>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t i = head_start(s, start, n), eol, c, a, b, fields, end, count = 0
    cdef long long length = -1
    cdef int transfer = 0, kind
    cdef bint sse = False
    eol = crlf(s, i, n)
    if eol < 0:
        return None
    fields = i = eol + 2
    while True:
        eol = field_line(s, i, n, &c)
        if eol < 0:
            return None
        if eol == i:  # the empty line
            end = i
            break
        count += 1
        kind = name_kind(s + i, c - i)
        if kind >= LENGTH:
            a = skip_ows(s, c + 1 if c < eol else eol, eol)
            b = trim_ows(s, a, eol)
            if kind == LENGTH:
                length = length_value(s, a, b)
            elif kind == TRANSFER:
                transfer = transfer_value(s, a, b)
            elif kind == CTYPE:
                sse = b - a >= 17 and same(s + a, b"text/event-stream", 17)
        i = eol + 2
    return fields, end, count, length, transfer, sse


cdef inline bytes lowered(const unsigned char *s, Py_ssize_t n):
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
    cdef unsigned char *o = <unsigned char *>PyBytes_AS_STRING(out)
    cdef Py_ssize_t k
    for k in range(n):
        o[k] = low(s[k])
    return out


def request_head(bytes buf, Py_ssize_t start):
    cdef const unsigned char *s = <const unsigned char *>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(buf)
    cdef Py_ssize_t i = head_start(s, start, n), eol, c, a, b, sp1, sp2
    cdef long long length = -1
    cdef int transfer = 0, nhost = 0, expect = 0, kind
    cdef list fields = []
    eol = crlf(s, i, n)
    if eol < 0:
        return None
    sp1 = i
    while sp1 < eol and s[sp1] != 32:
        sp1 += 1
    sp2 = eol
    while sp2 > sp1 and s[sp2 - 1] != 32:
        sp2 -= 1
    sp2 = sp2 - 1 if sp2 > sp1 + 1 else eol
    target = PyBytes_FromStringAndSize(<const char *>s + sp1 + 1, sp2 - sp1 - 1) if sp1 < eol else b""
    i = eol + 2
    while True:
        eol = field_line(s, i, n, &c)
        if eol < 0:
            return None
        if eol == i:  # the empty line
            break
        kind = name_kind(s + i, c - i)
        a = skip_ows(s, c + 1 if c < eol else eol, eol)
        b = trim_ows(s, a, eol)
        if kind == HOST:
            nhost += 1
        elif kind == EXPECT:
            expect = 1 if b - a == 12 and same(s + a, b"100-continue", 12) else 2
        elif kind == LENGTH:
            length = length_value(s, a, b)
        elif kind == TRANSFER:
            transfer = transfer_value(s, a, b)
        fields.append((lowered(s + i, c - i), PyBytes_FromStringAndSize(<const char *>s + a, b - a)))
        i = eol + 2
    return target, fields, i, length, transfer, nhost, expect


def field_list(bytes buf, Py_ssize_t fields, Py_ssize_t end):
    cdef const unsigned char *s = <const unsigned char *>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = min(end, PyBytes_GET_SIZE(buf))
    cdef Py_ssize_t i = max(fields, 0), eol, c, a, b
    out = []
    while i < n:
        eol = field_line(s, i, n, &c)
        if eol < 0:
            break
        a = skip_ows(s, c + 1 if c < eol else eol, eol)
        b = trim_ows(s, a, eol)
        out.append((PyBytes_FromStringAndSize(<const char *>s + i, c - i).lower(),
                    PyBytes_FromStringAndSize(<const char *>s + a, b - a)))
        i = eol + 2
    return out


def forward_fields(bytes buf, Py_ssize_t fields, Py_ssize_t end, bint keep_length):
    cdef const unsigned char *s = <const unsigned char *>PyBytes_AS_STRING(buf)
    cdef Py_ssize_t n = min(end, PyBytes_GET_SIZE(buf))
    cdef Py_ssize_t i, eol, c, a, b, k, size = 0
    cdef int kind
    cdef unsigned char stack[STACK_BYTES]
    cdef unsigned char *out
    cdef set named = None
    fields = max(fields, 0)
    if fields >= n:
        return b""
    # the names a Connection field lists (besides the hop-by-hop fields, dropped anyway)
    i = fields
    while i < n:
        eol = field_line(s, i, n, &c)
        if eol < 0:
            break
        if name_kind(s + i, c - i) == CONNECTION:
            a = c + 1 if c < eol else eol
            while a < eol:
                k = a
                while k < eol and s[k] != 44:
                    k += 1
                b = trim_ows(s, skip_ows(s, a, k), k)
                a = skip_ows(s, a, k)
                kind = name_kind(s + a, b - a)
                # a hop-by-hop name is dropped anyway; "close" names no field
                if b > a and kind != HOP and kind != CONNECTION and kind != TRANSFER and not (
                        b - a == 5 and same(s + a, b"close", 5)):
                    if named is None:
                        named = set()
                    named.add(PyBytes_FromStringAndSize(<const char *>s + a, b - a).lower())
                a = k + 1
        i = eol + 2
    if n - fields <= STACK_BYTES:
        out = stack
    else:
        out = <unsigned char *>malloc(n - fields)
    if out == NULL:
        raise MemoryError()
    try:
        i = fields
        while i < n:
            eol = field_line(s, i, n, &c)
            if eol < 0:
                break
            kind = name_kind(s + i, c - i)
            if not (kind == HOP or kind == CONNECTION or kind == TRANSFER or (kind == LENGTH and not keep_length)):
                if named is None or PyBytes_FromStringAndSize(<const char *>s + i, c - i).lower() not in named:
                    memcpy(out + size, s + i, eol + 2 - i)
                    size += eol + 2 - i
            i = eol + 2
        return PyBytes_FromStringAndSize(<const char *>out, size)
    finally:
        if out != stack:
            free(out)
