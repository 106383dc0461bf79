"""Loading a compiled ``rigfast._ext`` module for the differential tests, or the reason it is absent."""

from __future__ import annotations

import importlib
import os

import pytest


def load_compiled(name: str):
    """(module, skip mark): the mark skips compiled-only tests with the reason when it is not available."""
    reason = ""
    module = None
    if os.environ.get("RIGFAST_NO_EXTENSIONS") == "1":
        reason = "compiled engine disabled by RIGFAST_NO_EXTENSIONS=1"
    else:
        try:
            module = importlib.import_module(f"rigfast._ext.{name}")
        except ImportError as exc:
            reason = f"rigfast._ext.{name} is not built (python setup.py build_ext --inplace): {exc}"
    return module, pytest.mark.skipif(module is None, reason=reason or "n/a")
