"""`rigfast --version` and the package metadata it reads."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_version_prints_the_pyproject_version_and_exits_0():
    want = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    out = subprocess.run([sys.executable, "-m", "rigfast", "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert re.match(rf"rigfast {re.escape(want)} \(engine: (cython|python|mixed), Python \d", out.stdout), out.stdout


def test_license_is_an_spdx_string_and_test_tools_are_not_runtime_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    runtime = " ".join(project["dependencies"]).lower()
    for test_only in ("pytest", "playwright", "hypothesis", "calfkit", "websockets", "httpx"):
        assert test_only not in runtime
