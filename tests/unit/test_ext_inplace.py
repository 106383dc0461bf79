"""The request path's modules compiled in place (rigfast/_ext/inplace.py): which engine an import gets."""

from __future__ import annotations

import importlib.machinery
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rigfast._ext import inplace

ROOT = Path(__file__).resolve().parents[2]
NAME = inplace.MODULES[0]
LEAF = NAME.rpartition(".")[2]
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def origin(folder: Path) -> str:
    spec = inplace.EngineFinder().find_spec(NAME, [str(folder)])
    return Path(spec.origin).name


def test_the_extension_when_built_the_source_when_not(tmp_path, monkeypatch):
    monkeypatch.delenv("RIGFAST_NO_EXTENSIONS", raising=False)
    src = tmp_path / f"{LEAF}.py"
    src.write_text("")
    assert origin(tmp_path) == src.name  # no compiler: the plain-Python engine
    ext = tmp_path / f"{LEAF}{SUFFIX}"
    ext.write_bytes(b"")
    os.utime(src, (1000, 1000))
    os.utime(ext, (2000, 2000))
    assert origin(tmp_path) == ext.name
    monkeypatch.setenv("RIGFAST_NO_EXTENSIONS", "1")
    assert origin(tmp_path) == src.name


def test_a_source_edited_after_the_build_is_imported_from_source(tmp_path, monkeypatch):
    """A stale build never runs: the edited .py does (until the next build_ext)."""
    monkeypatch.delenv("RIGFAST_NO_EXTENSIONS", raising=False)
    src, ext = tmp_path / f"{LEAF}.py", tmp_path / f"{LEAF}{SUFFIX}"
    src.write_text("")
    ext.write_bytes(b"")
    os.utime(ext, (1000, 1000))
    os.utime(src, (2000, 2000))
    assert origin(tmp_path) == src.name


def test_other_modules_are_left_to_python(tmp_path):
    (tmp_path / "other.py").write_text("")
    assert inplace.EngineFinder().find_spec("rigfast.other", [str(tmp_path)]) is None


def test_every_module_is_a_source_file():
    """setup.py compiles each from its .py (a package's __init__ is not compiled in place)."""
    for name in inplace.MODULES:
        assert (ROOT / inplace.source_path(name)).is_file(), name


@pytest.mark.parametrize("forced", ["1", ""])
def test_a_fresh_interpreter_reports_the_engine_it_imported(forced):
    """rigfast._ext.INPLACE_BUILDS says what each module was imported as, with or without RIGFAST_NO_EXTENSIONS."""
    code = ("import importlib, rigfast._ext as e\n"
            "for n in e.INPLACE_BUILDS:\n"
            "    m = importlib.import_module(n)\n"
            "    print(n, e.INPLACE_BUILDS[n], m.__file__.endswith('.py'))\n")
    env = {k: v for k, v in os.environ.items() if k != "RIGFAST_NO_EXTENSIONS"}
    if forced:
        env["RIGFAST_NO_EXTENSIONS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
                         check=True).stdout.split("\n")
    rows = [line.split() for line in out if line]
    assert [r[0] for r in rows] == list(inplace.MODULES)
    for _, build, from_source in rows:
        assert build == ("python" if from_source == "True" else "cython")
        if forced:
            assert build == "python"
