"""Builds the Cython extensions in rigfast/_ext as part of `pip install .`.

RIGFAST_NO_EXTENSIONS=1 skips them (the plain-Python twins are used).
RIGFAST_REQUIRE_EXTENSIONS=1 makes a failed build fatal; otherwise a machine
without a C compiler gets a warning and the plain-Python engine.
"""

import glob
import os
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
    if not sources:
        return []
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
    try:
        return cythonize_all(cythonize, exts)
    except Exception as exc:  # noqa: BLE001 - a .pyx that does not compile
        if os.environ.get("RIGFAST_REQUIRE_EXTENSIONS") == "1":
            raise
        sys.stderr.write(f"WARNING: Cython failed ({exc}); the plain-Python engine will be used.\n")
        return []


def cythonize_all(cythonize, exts):
    return cythonize(
        exts,
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
        },
        quiet=True,
    )


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
