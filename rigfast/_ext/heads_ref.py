"""Message heads, plain Python: the reference for the compiled ``heads`` module.

The upstream client (rigfast/net/httpclient.py) lets llhttp check a response and frame its body,
but takes the head's fields from the bytes themselves, once the parser has accepted the head
(its ``on_headers_complete``): no callback and no tuple per field, and the reverse proxy passes
the lines it keeps on as the upstream wrote them instead of formatting them again. llhttp is
strict about heads (CRLF line ends, no folded lines, no space before the colon, one
Content-Length), so an accepted head is a status line and ``name:value`` lines, each ending in
CRLF, then an empty line; it may be preceded by empty lines (llhttp skips those).

Interface (the compiled twin must behave identically):

- ``response_head(buf, start)``: the head that starts at ``start`` in ``buf``, as ``(fields,
  end, count, content_length, transfer, sse)``: its header lines are ``buf[fields:end]`` (each
  ending in CRLF; the empty line follows at ``end``), ``count`` how many there are, ``content_length`` the value of its
  Content-Length (-1: none, or not 1 to 18 digits), ``transfer`` 0 without Transfer-Encoding, 1 when the
  last coding of the last one is ``chunked``, 2 otherwise; ``sse`` whether its Content-Type is
  ``text/event-stream``. None when ``buf`` holds no complete head from ``start``.
- ``request_head(buf, start)``: the request head that starts at ``start`` in ``buf`` (read the same way:
  the inbound parser, rigfast/net/protocol.py, lets llhttp check requests and reads their heads so), as
  ``(target, fields, end, content_length, transfer, hosts, expect)``: ``target`` the request line's
  target (between its first and its last space), ``fields`` its ``field_list``, ``end`` where its
  empty line is (the head ends at ``end + 2``), ``content_length`` and ``transfer`` as above,
  ``hosts`` how many Host fields it has, ``expect`` 0 without an Expect field, 1 when the last one is
  ``100-continue`` (any case), 2 otherwise. None when ``buf`` holds no complete head from ``start``.
- ``forward_fields(buf, fields, end, keep_length)``: the lines of ``buf[fields:end]`` an answer
  passes on, as they are: without the hop-by-hop fields (RFC 9110 7.6.1), those the Connection
  field names, and Content-Length unless ``keep_length``.
- ``field_list(buf, fields, end)``: ``[(lowercased name, value without surrounding spaces or
  tabs), ...]`` of the lines of ``buf[fields:end]``, in order.
"""

from __future__ import annotations

HOP_BY_HOP = frozenset((
    b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"proxy-authenticate", b"proxy-authorization",
))
_OWS = b" \t"


def response_head(buf: bytes, start: int) -> tuple[int, int, int, int, int, bool] | None:
    n = len(buf)
    i = start
    while i < n and buf[i] in b"\r\n":
        i += 1
    eol = buf.find(b"\r\n", i)
    if eol < 0:
        return None
    fields = eol + 2
    if buf[fields:fields + 2] == b"\r\n":
        end = fields
    else:
        blank = buf.find(b"\r\n\r\n", fields)
        if blank < 0:
            return None
        end = blank + 2
    length, transfer, sse = -1, 0, False
    lines = field_list(buf, fields, end)
    for name, value in lines:
        if name == b"content-length":
            length = int(value) if value.isdigit() and len(value) <= 18 else -1
        elif name == b"transfer-encoding":
            transfer = 1 if value.rpartition(b",")[2].strip(_OWS).lower() == b"chunked" else 2
        elif name == b"content-type":
            sse = value[:17].lower() == b"text/event-stream"
    return fields, end, len(lines), length, transfer, sse


def field_list(buf: bytes, fields: int, end: int) -> list[tuple[bytes, bytes]]:
    out = []
    for line in buf[fields:end].split(b"\r\n")[:-1]:
        name, _, value = line.partition(b":")
        out.append((name.lower(), value.strip(_OWS)))
    return out


def request_head(buf: bytes, start: int) -> tuple[bytes, list[tuple[bytes, bytes]], int, int, int, int, int] | None:
    found = response_head(buf, start)
    if found is None:
        return None
    fields, end, _, length, transfer, _ = found
    line = buf[start:fields - 2].lstrip(b"\r\n")
    first, last = line.find(b" "), line.rfind(b" ")
    target = b"" if first < 0 else line[first + 1:last if last > first else len(line)]
    lines = field_list(buf, fields, end)
    hosts, expect = 0, 0
    for name, value in lines:
        if name == b"host":
            hosts += 1
        elif name == b"expect":
            expect = 1 if value.lower() == b"100-continue" else 2
    return target, lines, end, length, transfer, hosts, expect


def forward_fields(buf: bytes, fields: int, end: int, keep_length: bool) -> bytes:
    lines = buf[fields:end].split(b"\r\n")[:-1]
    named = set()
    for line in lines:
        name, _, value = line.partition(b":")
        if name.lower() == b"connection":
            named.update(t.strip(_OWS).lower() for t in value.split(b","))
    named -= HOP_BY_HOP | {b"", b"close"}  # dropped anyway; "close" names no field
    out = []
    for line in lines:
        name = line.partition(b":")[0].lower()
        if name in HOP_BY_HOP or name in named or (name == b"content-length" and not keep_length):
            continue
        out.append(line + b"\r\n")
    return b"".join(out)
