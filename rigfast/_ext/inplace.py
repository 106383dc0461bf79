"""Plain-Python modules that are also compiled, in place, as the request path's compiled engine.

setup.py compiles each module of ``MODULES`` from its own ``.py`` file (Cython's pure-Python mode;
a ``.pxd`` beside it, where there is one, makes its classes C types) into an extension module of the same name beside it. The ``.py``
stays the plain-Python engine: one source for both. :class:`EngineFinder` (put first on
``sys.meta_path`` by ``rigfast/__init__.py``) decides which of the two an import gets:

- the ``.py`` under ``RIGFAST_NO_EXTENSIONS=1``, when no extension was built (no compiler), and when
  the ``.py`` is newer than its extension (edited since the last build: a stale build never runs;
  rebuild with ``python setup.py build_ext --inplace``);
- the extension module otherwise.

Nothing here imports rigfast: setup.py reads ``MODULES`` from this file without installing anything.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

MODULES = (
    "rigfast.wire.http1",
    "rigfast.net.protocol",
    "rigfast.net.sessions",
    "rigfast.api.inbound",
    "rigfast.hub.hub",
    "rigfast.hub.history",
    "rigfast.subscriptions",
    "rigfast.cloudevents",
    "rigfast.auth.authorizer",
    "rigfast.auth.ratelimit",
    "rigfast.ids",
    "rigfast.net.httpclient",
    "rigfast.proxy.gateway",
)


def source_path(name: str) -> str:
    """The ``.py`` of a module of ``MODULES``, relative to the project's root."""
    return name.replace(".", "/") + ".py"


class EngineFinder:
    """A meta path finder for the modules of ``MODULES`` only (see the module's docstring)."""

    rigfast_engine_finder = True  # found again by install() after the package was imported a second time

    def find_spec(self, name, path=None, target=None):
        if name not in MODULES or not path:
            return None
        leaf = name.rpartition(".")[2]
        for folder in path:
            src = os.path.join(folder, leaf + ".py")
            if not os.path.isfile(src):
                continue
            compiled = None if os.environ.get("RIGFAST_NO_EXTENSIONS") == "1" else _extension(folder, leaf, src)
            return importlib.util.spec_from_file_location(name, compiled or src)
        return None

    def invalidate_caches(self) -> None:
        pass


def _extension(folder: str, leaf: str, src: str) -> str | None:
    """The extension module built from ``src``, if there is one at least as new as ``src``."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        path = os.path.join(folder, leaf + suffix)
        try:
            if os.stat(path).st_mtime >= os.stat(src).st_mtime:
                return path
        except OSError:
            continue
    return None


def install() -> None:
    if not any(getattr(f, "rigfast_engine_finder", False) for f in sys.meta_path):
        sys.meta_path.insert(0, EngineFinder())


def build(name: str) -> str:
    """"cython" when importing ``name`` gets (or got) its extension module, else "python"."""
    module = sys.modules.get(name)
    origin = getattr(module, "__file__", None) if module is not None else None
    if origin is None:
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
    return "cython" if origin and origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)) else "python"
