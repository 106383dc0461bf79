"""Request paths as the reverse proxy matches and forwards them. No I/O.

A path is normalised before it is matched, and the normalised path is what
the upstream gets, so that the upstream cannot resolve a path to something
the route did not allow (``/public/../admin``):

- percent-encoded dots and slashes (``%2e``, ``%2f``, any case) count as the
  characters themselves;
- dot segments are removed (RFC 3986 5.2.4), also with a ``;parameter``
  (``..;/``, which some servers read as ``..``);
- runs of slashes are merged (as nginx does);
- an absolute-form target (``http://host/path``) is reduced to its path.

Other percent-encodings stay as the client sent them. The route's regex is
matched against the normalised path percent-decoded (UTF-8).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote_to_bytes

_DOT_SLASH = re.compile(r"%2[eEfF]")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/]*")
_SAFE = "/!$&'()*+,;=:@"


def _unescape(m: re.Match) -> str:
    return "." if m.group()[2] in "eE" else "/"


def normalize(raw: str) -> str | None:
    """The normalised raw path, or None when ``raw`` is not a path at all."""
    if raw[:1] != "/":
        m = _SCHEME.match(raw)
        if m is None:
            return None
        raw = raw[m.end():] or "/"
        if raw[:1] != "/":
            return None
    if "%" in raw:
        raw = _DOT_SLASH.sub(_unescape, raw)
    if "/." not in raw and "//" not in raw:
        return raw
    out: list[str] = []
    segments = raw.split("/")
    last = len(segments) - 1
    trailing = False
    for i, seg in enumerate(segments):
        if i == 0:
            continue
        name = seg.split(";", 1)[0] if ";" in seg else seg
        if name == "..":
            if out:
                out.pop()
            trailing = i == last
        elif name == "." or seg == "":
            trailing = i == last
        else:
            out.append(seg)
            trailing = False
    path = "/" + "/".join(out)
    if trailing and out:
        path += "/"
    return path


def decoded(path: str) -> str:
    """The path to match: percent-decoded, as UTF-8 (``normalize`` already turned %2F into /).

    ``path`` holds the request's bytes as latin-1 characters (raw UTF-8 included).
    """
    if "%" in path or not path.isascii():
        return unquote_to_bytes(path.encode("latin-1")).decode("utf-8", "replace")
    return path


def encoded(path: str) -> bytes:
    """A rewritten (decoded) path as it goes on the wire."""
    return quote(path, safe=_SAFE).encode("ascii")
