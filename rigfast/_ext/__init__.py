"""Hot-path engine: compiled (Cython) when built, plain Python otherwise.

``RIGFAST_NO_EXTENSIONS=1`` forces the Python reference at import time.
Each compiled module falls back to its Python twin on its own, so a build
that produced only some of them still uses those. ``MATCH_BUILD`` and
``FRAMES_BUILD`` say which one is in use ("cython" or "python");
``BUILD`` is "cython" when all are compiled, "python" when none is, and
"mixed" otherwise.
"""

from __future__ import annotations

import os

_FORCE_PYTHON = os.environ.get("RIGFAST_NO_EXTENSIONS") == "1"

if _FORCE_PYTHON:
    from rigfast._ext.match_ref import SubscriptionIndex

    MATCH_BUILD = "python"
else:
    try:
        from rigfast._ext.match import SubscriptionIndex  # type: ignore[no-redef]

        MATCH_BUILD = "cython"
    except ImportError:
        from rigfast._ext.match_ref import SubscriptionIndex

        MATCH_BUILD = "python"

if _FORCE_PYTHON:
    from rigfast._ext.frames_ref import encode_sse, encode_ws_text

    FRAMES_BUILD = "python"
else:
    try:
        from rigfast._ext.frames import encode_sse, encode_ws_text  # type: ignore[no-redef]

        FRAMES_BUILD = "cython"
    except ImportError:
        from rigfast._ext.frames_ref import encode_sse, encode_ws_text

        FRAMES_BUILD = "python"

_builds = {MATCH_BUILD, FRAMES_BUILD}
BUILD = _builds.pop() if len(_builds) == 1 else "mixed"
del _builds

__all__ = ["BUILD", "FRAMES_BUILD", "MATCH_BUILD", "SubscriptionIndex", "encode_sse", "encode_ws_text"]
