# cython: language_level=3, boundscheck=False, wraparound=False
"""Record scanner, compiled: what routing needs from a structured-mode CloudEvent, found in its bytes.

Contract (shared with ``scan_ref.py``, checked against
``cloudevents.parse_structured`` by tests/unit/test_ext_scan.py):

- :func:`scan` returns a :class:`RecordEvent` (``type``, ``id``, ``json`` =
  the value itself) only for a value that ``parse_structured`` accepts with
  the same type and id and whose bytes can be forwarded as they are (no line
  break). For anything else it returns None and the caller runs the full
  parser for that record: it accepts what the scanner was unsure of, and
  rejects, with its precise message, what is invalid. The scanner never
  rejects anything itself.
- One pass over the bytes, no Python object per JSON value: it checks the
  whole text against the JSON grammar as orjson reads it (UTF-8, escapes
  and surrogate pairs, number grammar, nesting up to 1024, nothing after
  the value), and remembers where the top-level attributes are. Duplicate
  keys: the last one wins, as in orjson (and only the last one is checked).
  Line breaks need no pass of their own: the scanner's whitespace is space
  and tab only, so a line break between tokens breaks its grammar, and one
  in a string is a control character, invalid JSON anyway.
- Per record it makes the event and its ``type``: the type's text is kept
  for the next records (a few recent types; a topic carries few), so a
  batch of one type shares one ``str``. The ``id`` is decoded from the
  bytes the first time someone reads it: for the records nobody wants, never.
- It is unsure of (returns None): a line break anywhere (the full path
  re-serializes the event on one line), an escaped top-level key, a
  top-level value that is not an object, CloudEvents 0.1 (no
  ``specversion``), a number whose magnitude may overflow a double (orjson
  rejects those), nesting deeper than 1024, and every invalid value.
- :func:`extract` finds RFC 6901 pointer targets in a value :func:`scan`
  accepted (last duplicate key wins, array indexes without leading zeros, as
  ``subscriptions.compile_pointer``): a string target is returned decoded,
  any other JSON value as ``canon(its bytes)``.
"""

cimport cython
from cpython cimport array
from cpython.object cimport PyObject
from libc.string cimport memchr, memcmp
from rigfast._ext.hexdigit cimport hexval
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.unicode cimport PyUnicode_DecodeUTF8

import array

import orjson

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t* size) except NULL
    ctypedef struct PyMethodDef:
        void* ml_meth
        int ml_flags
    ctypedef struct PyMethodDescrObject:
        PyMethodDef* d_method
    int METH_NOARGS
    int METH_COEXIST

_MethodDescriptorType = type(str.upper)

cdef object _loads = orjson.loads

cdef extern from *:
    """
    /* The index of the first byte at or after i that a JSON string scan must look at (a quote, a
       backslash, a control character or a non-ASCII byte), or n. 16 bytes per step with SSE2,
       8 with a word-at-a-time test elsewhere. */
    #include <stdint.h>
    #include <string.h>
    #if defined(__SSE2__)
    #include <emmintrin.h>
    static inline Py_ssize_t plain_run(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) {
        const __m128i quote = _mm_set1_epi8(0x22), bslash = _mm_set1_epi8(0x5C), space = _mm_set1_epi8(0x20);
        while (i + 16 <= n) {
            __m128i v = _mm_loadu_si128((const __m128i *)(s + i));
            /* signed compare: bytes >= 0x80 are negative, so below 0x20 too */
            __m128i hit = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, bslash)),
                                       _mm_cmplt_epi8(v, space));
            int mask = _mm_movemask_epi8(hit);
            if (mask) return i + __builtin_ctz((unsigned)mask);
            i += 16;
        }
        return i;
    }
    #else
    static inline Py_ssize_t plain_run(const unsigned char *s, Py_ssize_t i, Py_ssize_t n) {
        const uint64_t ones = 0x0101010101010101ULL;
        while (i + 8 <= n) {
            uint64_t x;
            memcpy(&x, s + i, 8);
            if (((x - ones * 0x20) | ((x ^ (ones * 0x22)) - ones) | ((x ^ (ones * 0x5C)) - ones) | x) & (ones * 0x80))
                return i;
            i += 8;
        }
        return i;
    }
    #endif
    """
    Py_ssize_t plain_run(const unsigned char* s, Py_ssize_t i, Py_ssize_t n) noexcept nogil

# top-level attributes the scanner looks at (index into the span arrays): the first N_REQUIRED are required
cdef enum:
    A_SPECVERSION = 0
    A_TYPE = 1
    A_ID = 2
    A_SOURCE = 3
    N_REQUIRED = 4
    N_ATTRS = 11
    MAX_DEPTH = 1024
    MAX_EXP = 300
    N_TYPES = 8  # recent event types whose text is kept for the next records


# per byte inside a JSON string: 1 = ordinary ASCII, 0 = needs a look (quote, backslash, control, non-ASCII)
cdef unsigned char PLAIN[256]
cdef int _b
for _b in range(256):
    PLAIN[_b] = 1 if (0x20 <= _b < 0x80 and _b != 0x22 and _b != 0x5C) else 0


@cython.no_gc
@cython.final
@cython.freelist(4096)  # freed events kept for reuse: the history frees about as many as a batch makes
cdef class RecordEvent:
    """A Kafka record's event as the scanner found it: what the hub needs, the value kept as the event JSON.

    Duck-typed like ``cloudevents.Event`` (type, id, json, seq, rid, obj, keys). ``obj`` is decoded
    from ``json`` on first use; ``rid`` (``k:<topic>:<partition>:<offset>``) is made on first use, and
    so is ``id`` of a scanned record (from the bytes scanned, kept with it whatever happens to ``json``);
    ``keys`` are the extractor field values (value keys) once someone matched the event on fields.
    Not GC-tracked: it holds strings, bytes, ints and JSON-decoded objects, never a cycle."""

    cdef public object type
    cdef public object json
    cdef public object keys
    cdef public long long seq
    cdef object _o
    cdef object _rid
    cdef object _topic
    cdef long long _part
    cdef long long _off
    cdef object _id
    cdef object _id_src  # the scanned bytes the id is in, while it is not decoded
    cdef Py_ssize_t _id_start
    cdef Py_ssize_t _id_end
    cdef bint _id_esc

    def __init__(self, type, id, json, rid="", keys=None):
        self.type = type
        self._id = id
        self.json = json
        self._rid = rid
        self.keys = keys

    @property
    def id(self):
        if self._id is None and self._id_src is not None:
            self._id = _text(<const unsigned char*>PyBytes_AS_STRING(self._id_src), self._id_start, self._id_end,
                             self._id_esc)
            self._id_src = None
        return self._id

    @id.setter
    def id(self, value):
        self._id = value
        self._id_src = None

    @property
    def rid(self):
        if self._rid is None:
            self._rid = f"k:{self._topic}:{self._part}:{self._off}"
        return self._rid

    @rid.setter
    def rid(self, value):
        self._rid = value

    @property
    def obj(self):
        if self._o is None:
            self._o = _loads(self.json)
        return self._o

    @obj.setter
    def obj(self, value):
        self._o = value

    def __repr__(self):
        return f"Event({self.type!r}, id={self.id!r})"


cdef inline bint _ws(unsigned char c) noexcept nogil:
    return c == 32 or c == 9  # JSON's line feed and carriage return are not taken: see the module's docstring


cdef inline Py_ssize_t _skip_ws(const unsigned char* s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    while i < n and _ws(s[i]):
        i += 1
    return i


cdef inline int _u4(const unsigned char* s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """The code unit of the 4 hex digits at s[i], or -1."""
    cdef int a, b, c, d
    if i + 4 > n:
        return -1
    a = hexval(s[i]); b = hexval(s[i + 1]); c = hexval(s[i + 2]); d = hexval(s[i + 3])
    if a < 0 or b < 0 or c < 0 or d < 0:
        return -1
    return (a << 12) | (b << 8) | (c << 4) | d


cdef Py_ssize_t _string(const unsigned char* s, Py_ssize_t i, Py_ssize_t n, bint* escaped) noexcept nogil:
    """s[i] is the opening quote: the index after the closing one, or -1 when the string is not valid JSON."""
    cdef unsigned char c, c1, c2, c3
    cdef int u, lo
    i += 1
    while True:
        i = plain_run(s, i, n)
        while i < n and PLAIN[s[i]]:
            i += 1
        if i >= n:
            return -1
        c = s[i]
        if c == 0x22:
            return i + 1
        if c == 0x5C:
            escaped[0] = True
            if i + 1 >= n:
                return -1
            c = s[i + 1]
            if c == 0x75:  # \uXXXX: a high surrogate needs its low half right after, a lone low one is invalid
                u = _u4(s, i + 2, n)
                if u < 0 or 0xDC00 <= u <= 0xDFFF:
                    return -1
                i += 6
                if 0xD800 <= u <= 0xDBFF:
                    if i + 1 >= n or s[i] != 0x5C or s[i + 1] != 0x75:
                        return -1
                    lo = _u4(s, i + 2, n)
                    if lo < 0xDC00 or lo > 0xDFFF:
                        return -1
                    i += 6
            elif c == 0x22 or c == 0x5C or c == 0x2F or c == 0x62 or c == 0x66 or c == 0x6E or c == 0x72 or c == 0x74:
                i += 2
            else:
                return -1
        elif c < 0x80:  # a control character
            return -1
        elif 0xC2 <= c <= 0xDF:
            if i + 1 >= n or (s[i + 1] & 0xC0) != 0x80:
                return -1
            i += 2
        elif 0xE0 <= c <= 0xEF:
            if i + 2 >= n:
                return -1
            c1 = s[i + 1]; c2 = s[i + 2]
            if (c1 & 0xC0) != 0x80 or (c2 & 0xC0) != 0x80:
                return -1
            if (c == 0xE0 and c1 < 0xA0) or (c == 0xED and c1 >= 0xA0):  # overlong, or a surrogate
                return -1
            i += 3
        elif 0xF0 <= c <= 0xF4:
            if i + 3 >= n:
                return -1
            c1 = s[i + 1]; c2 = s[i + 2]; c3 = s[i + 3]
            if (c1 & 0xC0) != 0x80 or (c2 & 0xC0) != 0x80 or (c3 & 0xC0) != 0x80:
                return -1
            if (c == 0xF0 and c1 < 0x90) or (c == 0xF4 and c1 >= 0x90):  # overlong, or above U+10FFFF
                return -1
            i += 4
        else:
            return -1


cdef Py_ssize_t _number(const unsigned char* s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """A JSON number at s[i]: the index after it, or -1 (invalid, or a magnitude that may not fit a double)."""
    cdef Py_ssize_t digits = 0, start
    cdef long exp = 0
    cdef bint neg_exp = False
    if i < n and s[i] == 45:  # -
        i += 1
    if i >= n:
        return -1
    if s[i] == 48:  # 0
        i += 1
    elif 49 <= s[i] <= 57:
        start = i
        while i < n and 48 <= s[i] <= 57:
            i += 1
        digits = i - start
    else:
        return -1
    if i < n and s[i] == 46:  # .
        i += 1
        start = i
        while i < n and 48 <= s[i] <= 57:
            i += 1
        if i == start:
            return -1
    if i < n and (s[i] == 101 or s[i] == 69):  # e E
        i += 1
        if i < n and (s[i] == 43 or s[i] == 45):
            neg_exp = s[i] == 45
            i += 1
        start = i
        while i < n and 48 <= s[i] <= 57:
            if exp < 100000:
                exp = exp * 10 + (s[i] - 48)
            i += 1
        if i == start:
            return -1
        if neg_exp:
            exp = -exp
    if exp < -MAX_EXP or digits + exp > MAX_EXP:
        return -1  # may overflow (orjson rejects infinity) or underflow: the full parser decides
    return i


cdef Py_ssize_t _value(const unsigned char* s, Py_ssize_t i, Py_ssize_t n, int depth) noexcept nogil:
    """Any JSON value at s[i] (no leading whitespace): the index after it, or -1."""
    cdef unsigned char c
    cdef bint esc = False
    if i >= n:
        return -1
    c = s[i]
    if c == 0x22:
        return _string(s, i, n, &esc)
    if c == 0x7B or c == 0x5B:  # { or [: members or elements up to the matching } or ] (the opener + 2)
        if depth >= MAX_DEPTH:
            return -1
        i = _skip_ws(s, i + 1, n)
        if i < n and s[i] == c + 2:
            return i + 1
        while True:
            if c == 0x7B:  # "key":
                if i >= n or s[i] != 0x22:
                    return -1
                i = _string(s, i, n, &esc)
                if i < 0:
                    return -1
                i = _skip_ws(s, i, n)
                if i >= n or s[i] != 0x3A:
                    return -1
                i = _skip_ws(s, i + 1, n)
            i = _value(s, i, n, depth + 1)
            if i < 0:
                return -1
            i = _skip_ws(s, i, n)
            if i >= n:
                return -1
            if s[i] == c + 2:
                return i + 1
            if s[i] != 0x2C:
                return -1
            i = _skip_ws(s, i + 1, n)
    if c == 0x74:
        return i + 4 if i + 4 <= n and memcmp(s + i, b"true", 4) == 0 else -1
    if c == 0x66:
        return i + 5 if i + 5 <= n and memcmp(s + i, b"false", 5) == 0 else -1
    if c == 0x6E:
        return i + 4 if i + 4 <= n and memcmp(s + i, b"null", 4) == 0 else -1
    return _number(s, i, n)


cdef inline int _attr(const unsigned char* k, Py_ssize_t n) noexcept nogil:
    """The attribute index of the key k[:n], or -1 for any other key."""
    if n == 2:
        return A_ID if memcmp(k, b"id", 2) == 0 else -1
    if n == 4:
        return A_TYPE if memcmp(k, b"type", 4) == 0 else (4 if memcmp(k, b"time", 4) == 0 else -1)
    if n == 6:
        return A_SOURCE if memcmp(k, b"source", 6) == 0 else -1
    if n == 7:
        return 5 if memcmp(k, b"subject", 7) == 0 else -1
    if n == 9:
        return 9 if memcmp(k, b"schemaurl", 9) == 0 else -1
    if n == 10:
        return 7 if memcmp(k, b"dataschema", 10) == 0 else -1
    if n == 11:
        if memcmp(k, b"specversion", 11) == 0:
            return A_SPECVERSION
        if memcmp(k, b"contenttype", 11) == 0:
            return 8
        return 10 if memcmp(k, b"data_base64", 11) == 0 else -1
    if n == 15:
        return 6 if memcmp(k, b"datacontenttype", 15) == 0 else -1
    return -1


cdef object _text(const unsigned char* s, Py_ssize_t start, Py_ssize_t end, bint escaped):
    """The decoded JSON string s[start:end] (quotes included), already validated."""
    if escaped:
        return _loads((<const char*>s)[start:end])
    return PyUnicode_DecodeUTF8(<const char*>s + start + 1, end - start - 2, NULL)


# the last N_TYPES event types met, as their bytes between the quotes and their text (round-robin)
cdef list _type_bytes = [b""] * N_TYPES
cdef list _type_text = [None] * N_TYPES
cdef Py_ssize_t _type_next = 0


cdef object _type_of(const unsigned char* s, Py_ssize_t start, Py_ssize_t end, bint escaped):
    """The decoded JSON string s[start:end] (a type: never empty), the same ``str`` as for a recent record
    with the same bytes."""
    global _type_next
    cdef Py_ssize_t n = end - start - 2, k
    cdef object raw, text
    if escaped:
        return _text(s, start, end, True)
    for k in range(N_TYPES):
        raw = _type_bytes[k]
        if PyBytes_GET_SIZE(raw) == n and memcmp(PyBytes_AS_STRING(raw), s + start + 1, <size_t>n) == 0:
            return _type_text[k]
    text = _text(s, start, end, False)
    k = _type_next
    _type_next = (k + 1) % N_TYPES
    _type_bytes[k] = PyBytes_FromStringAndSize(<const char*>s + start + 1, n)
    _type_text[k] = text
    return text


def scan(bytes value):
    """A :class:`RecordEvent` for a structured-mode value the full parser accepts as it is; None when unsure."""
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
    cdef Py_ssize_t i, kstart, kend, vstart, vend
    cdef Py_ssize_t starts[N_ATTRS]
    cdef Py_ssize_t ends[N_ATTRS]
    cdef bint escs[N_ATTRS]
    cdef bint esc
    cdef int a
    cdef RecordEvent ev
    for a in range(N_ATTRS):
        starts[a] = -1
    i = _skip_ws(s, 0, n)
    if i >= n or s[i] != 0x7B:
        return None
    i = _skip_ws(s, i + 1, n)
    if i < n and s[i] == 0x7D:
        return None  # {}: no specversion
    while True:
        if i >= n or s[i] != 0x22:
            return None
        esc = False
        kstart = i
        i = _string(s, i, n, &esc)
        if i < 0 or esc:
            return None
        kend = i
        i = _skip_ws(s, i, n)
        if i >= n or s[i] != 0x3A:
            return None
        vstart = _skip_ws(s, i + 1, n)
        a = _attr(s + kstart + 1, kend - kstart - 2)
        if a >= 0 and vstart < n and s[vstart] == 0x22:
            esc = False
            vend = _string(s, vstart, n, &esc)
            escs[a] = esc
        else:
            vend = _value(s, vstart, n, 1)
        if vend < 0:
            return None
        if a >= 0:
            starts[a] = vstart
            ends[a] = vend
        i = _skip_ws(s, vend, n)
        if i >= n:
            return None
        if s[i] == 0x7D:
            break
        if s[i] != 0x2C:
            return None
        i = _skip_ws(s, i + 1, n)
    if _skip_ws(s, i + 1, n) != n:
        return None
    for a in range(N_ATTRS):
        if starts[a] < 0:
            if a < N_REQUIRED:
                return None  # no specversion (0.1 or invalid) or a required attribute missing
            continue
        if s[starts[a]] != 0x22:
            return None  # not a string
        if a < N_REQUIRED and ends[a] - starts[a] == 2:
            return None  # empty
    vstart = starts[A_SPECVERSION]
    if escs[A_SPECVERSION]:
        if _text(s, vstart, ends[A_SPECVERSION], True) not in ("1.0", "0.3", "0.2"):
            return None
    elif ends[A_SPECVERSION] - vstart != 5 or not (
            memcmp(s + vstart, b'"1.0"', 5) == 0 or memcmp(s + vstart, b'"0.3"', 5) == 0
            or memcmp(s + vstart, b'"0.2"', 5) == 0):
        return None
    ev = RecordEvent.__new__(RecordEvent)
    ev.type = _type_of(s, starts[A_TYPE], ends[A_TYPE], escs[A_TYPE])
    ev._id_src = value
    ev._id_start = starts[A_ID]
    ev._id_end = ends[A_ID]
    ev._id_esc = escs[A_ID]
    ev.json = value
    ev._rid = ""
    return ev


cdef Py_ssize_t _target(const unsigned char* s, Py_ssize_t i, Py_ssize_t n, tuple parts, Py_ssize_t p,
                        Py_ssize_t* vend) except -2:
    """The start of the value at ``parts[p:]`` below the value at s[i] (sets ``vend``), or -1 when missing."""
    cdef Py_ssize_t plen, kstart, kend, vstart, e, found = -1, found_end = 0, idx, k
    cdef const char* pb
    cdef bint esc
    cdef object part
    if p == len(parts):
        vend[0] = _value(s, i, n, 1)
        return i
    part = parts[p]
    pb = PyUnicode_AsUTF8AndSize(part, &plen)
    if s[i] == 0x7B:
        i = _skip_ws(s, i + 1, n)
        if s[i] == 0x7D:
            return -1
        while True:
            esc = False
            kstart = i
            kend = _string(s, i, n, &esc)
            i = _skip_ws(s, kend, n)
            vstart = _skip_ws(s, i + 1, n)
            e = _value(s, vstart, n, 1)
            if esc:
                if _text(s, kstart, kend, True) == part:
                    found, found_end = vstart, e
            elif kend - kstart - 2 == plen and memcmp(s + kstart + 1, pb, <size_t>plen) == 0:
                found, found_end = vstart, e  # the last duplicate wins
            i = _skip_ws(s, e, n)
            if s[i] == 0x7D:
                break
            i = _skip_ws(s, i + 1, n)
        if found < 0:
            return -1
        return _target(s, found, found_end, parts, p + 1, vend)
    if s[i] == 0x5B:
        if plen == 0 or (plen > 1 and pb[0] == 48) or plen > 18:
            return -1
        idx = 0
        for k in range(plen):
            if not (48 <= pb[k] <= 57):
                return -1
            idx = idx * 10 + (pb[k] - 48)
        i = _skip_ws(s, i + 1, n)
        if s[i] == 0x5D:
            return -1
        k = 0
        while True:
            e = _value(s, i, n, 1)
            if k == idx:
                return _target(s, i, e, parts, p + 1, vend)
            i = _skip_ws(s, e, n)
            if s[i] == 0x5D:
                return -1
            i = _skip_ws(s, i + 1, n)
            k += 1
    return -1


def extract(bytes value, paths, canon):
    """{name: value key} for each (name, pointer parts) of ``paths`` found in ``value`` (one :func:`scan` accepted)."""
    cdef const unsigned char* s = <const unsigned char*>PyBytes_AS_STRING(value)
    cdef Py_ssize_t n = PyBytes_GET_SIZE(value)
    cdef Py_ssize_t start, end = 0, i0
    cdef bint esc
    cdef tuple parts
    cdef dict out = {}
    i0 = _skip_ws(s, 0, n)
    for name, parts in paths:
        start = _target(s, i0, n, parts, 0, &end)
        if start < 0:
            continue
        if s[start] == 0x22:
            esc = memchr(s + start, 0x5C, <size_t>(end - start)) != NULL
            out[name] = _text(s, start, end, esc)
        else:
            out[name] = canon((<const char*>s)[start:end])
    return out


# A message type whose record methods (RECORD_METHODS) are all C functions without arguments (confluent-kafka's
# Message) has them called here directly: the C function a method call would reach, without looking the method
# up on every record. Any other type (a subclass, a Python class) gets ordinary method calls.
ctypedef object (*_NoArgs)(object, PyObject*)
RECORD_METHODS = ("error", "headers", "value", "topic", "partition", "offset")
cdef enum:
    M_ERROR = 0
    M_HEADERS = 1
    M_VALUE = 2
    M_TOPIC = 3
    M_PARTITION = 4
    M_OFFSET = 5
    N_METHODS = 6
cdef object _direct_type = None
cdef _NoArgs _direct[N_METHODS]


cdef bint _learn(type t) except -1:
    """Whether messages of exactly type ``t`` get their record methods called directly (learnt once per type)."""
    global _direct_type
    cdef _NoArgs found[N_METHODS]
    cdef PyMethodDef* d
    cdef int k
    if t is _direct_type:
        return True
    for k in range(N_METHODS):
        descr = getattr(t, RECORD_METHODS[k], None)
        if type(descr) is not _MethodDescriptorType:
            return False
        d = (<PyMethodDescrObject*>descr).d_method
        if (d.ml_flags & ~METH_COEXIST) != METH_NOARGS:
            return False
        found[k] = <_NoArgs>d.ml_meth
    for k in range(N_METHODS):  # no Python call from here on: another thread never sees half of it
        _direct[k] = found[k]
    _direct_type = t
    return True


def scan_records(list msgs, fallback):
    """The events of a consumed batch, in order: scanned where :func:`scan` takes the record (no error,
    no headers), else ``fallback(message)`` (an event, or None for a record that is skipped)."""
    cdef list out = []
    cdef object ev, value
    cdef type seen = None
    cdef bint direct = False
    cdef RecordEvent rec
    for m in msgs:
        if type(m) is not seen:
            seen = type(m)
            direct = _learn(seen)
        if direct:
            value = _direct[M_VALUE](m, NULL) if _direct[M_ERROR](m, NULL) is None \
                and _direct[M_HEADERS](m, NULL) is None else None
        else:
            value = m.value() if m.error() is None and m.headers() is None else None
        if type(value) is bytes:
            ev = scan(value)
            if ev is not None:
                rec = <RecordEvent>ev
                if direct:
                    rec._topic = _direct[M_TOPIC](m, NULL)
                    rec._part = _direct[M_PARTITION](m, NULL)
                    rec._off = _direct[M_OFFSET](m, NULL)
                else:
                    rec._topic = m.topic()
                    rec._part = m.partition()
                    rec._off = m.offset()
                rec._rid = None
                out.append(ev)
                continue
        ev = fallback(m)
        if ev is not None:
            out.append(ev)
    return out


cdef array.array _ENDS = array.array("q")


def json_ends(list events):
    """``array('q')`` of the running total of the events' JSON sizes: ``ends[i]`` bytes in ``events[:i]``
    (``ends[0] == 0``, ``ends[-1]`` all of them). The history's byte bounds, one pass in C."""
    cdef Py_ssize_t n = len(events), k
    cdef array.array ends = array.clone(_ENDS, n + 1, False)
    cdef long long* out = ends.data.as_longlongs
    cdef long long total = 0
    cdef object json
    out[0] = 0
    for k in range(n):
        ev = events[k]
        json = (<RecordEvent>ev).json if type(ev) is RecordEvent else ev.json
        total += PyBytes_GET_SIZE(json) if type(json) is bytes else len(json)
        out[k + 1] = total
    return ends


def event_types(list events):
    """The set of the events' types."""
    cdef set out = set()
    for ev in events:
        out.add((<RecordEvent>ev).type if type(ev) is RecordEvent else ev.type)
    return out
