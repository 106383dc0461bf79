"""Builds the Cython extensions as part of `pip install .`: every rigfast/_ext/*.pyx, and the
request path's plain-Python modules (rigfast/_ext/inplace.py: MODULES), each compiled from its own
.py into an extension module of the same name beside it (Cython's pure-Python mode, typed by the
.pxd beside the .py).

RIGFAST_NO_EXTENSIONS=1 skips them (the plain-Python twins are used).
RIGFAST_REQUIRE_EXTENSIONS=1 makes a failed build fatal; otherwise a machine
without a C compiler gets a warning and the plain-Python engine.
"""

import glob
import os
import runpy
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - any compiler failure
            self._fail(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def _fail(self, exc):
        if os.environ.get("RIGFAST_REQUIRE_EXTENSIONS") == "1":
            raise exc
        sys.stderr.write(
            f"WARNING: rigfast's Cython extensions could not be built ({exc}); "
            "the plain-Python engine will be used.\n"
        )


def extensions():
    if os.environ.get("RIGFAST_NO_EXTENSIONS") == "1":
        return []
    sources = sorted(glob.glob("rigfast/_ext/*.pyx"))
    inplace = runpy.run_path("rigfast/_ext/inplace.py")
    modules = inplace["MODULES"]
    try:
        from Cython.Build import cythonize
    except ImportError:
        if os.environ.get("RIGFAST_REQUIRE_EXTENSIONS") == "1":
            raise
        sys.stderr.write("WARNING: Cython not available; the plain-Python engine will be used.\n")
        return []
    from setuptools import Extension

    exts = [
        Extension(
            "rigfast._ext." + os.path.splitext(os.path.basename(src))[0],
            [src],
            extra_compile_args=["-O3"],
        )
        for src in sources
    ]
    plain = [Extension(name, [inplace["source_path"](name)], extra_compile_args=["-O3"]) for name in modules]
    try:
        return cythonize_all(cythonize, exts, FAST) + cythonize_all(cythonize, plain, PYTHON_SEMANTICS)
    except Exception as exc:  # noqa: BLE001 - a .pyx that does not compile
        if os.environ.get("RIGFAST_REQUIRE_EXTENSIONS") == "1":
            raise
        sys.stderr.write(f"WARNING: Cython failed ({exc}); the plain-Python engine will be used.\n")
        return []


# the .pyx modules: written for C semantics
FAST = {"language_level": "3", "boundscheck": False, "wraparound": False, "cdivision": True}
# the plain-Python modules keep Python's semantics (negative indexes, bounds, division); their
# annotations are documentation, not C types (the .pxd beside each types it)
PYTHON_SEMANTICS = {"language_level": "3", "annotation_typing": False}


def cythonize_all(cythonize, exts, directives):
    return cythonize(exts, compiler_directives=directives, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
