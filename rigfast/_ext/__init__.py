"""Hot-path engine: compiled (Cython) when built, plain Python otherwise.

``RIGFAST_NO_EXTENSIONS=1`` forces the Python reference at import time.
``BUILD`` says which one is in use ("cython" or "python").
"""

from __future__ import annotations

import os

if os.environ.get("RIGFAST_NO_EXTENSIONS") == "1":
    from rigfast._ext.frames_ref import encode_sse, encode_ws_text
    from rigfast._ext.match_ref import SubscriptionIndex

    BUILD = "python"
else:
    try:
        from rigfast._ext.frames import encode_sse, encode_ws_text  # type: ignore[no-redef]
        from rigfast._ext.match import SubscriptionIndex  # type: ignore[no-redef]

        BUILD = "cython"
    except ImportError:
        from rigfast._ext.frames_ref import encode_sse, encode_ws_text
        from rigfast._ext.match_ref import SubscriptionIndex

        BUILD = "python"

__all__ = ["BUILD", "SubscriptionIndex", "encode_sse", "encode_ws_text"]
