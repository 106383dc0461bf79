"""A git revision of this repository as a runnable tree, for A/B benchmarks (bench/ab.py, bench/peers).

``tree(rev)`` checks ``rev`` out with ``git worktree add --detach`` under ``$RIGFAST_AB_DIR``
(default ``/tmp/rigfast-ab``, one folder per commit, reused while it exists), builds its
extensions in place with the running Python (``setup.py build_ext --inplace``: the venv that runs
the benchmark runs both revisions, so only the repository's code differs) and checks that a
Python started with ``env(path)`` in that folder imports rigfast, and every rigfast module it
loads, from that folder and not from this checkout. ``remove(rev)`` takes the worktree away.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.environ.get("RIGFAST_AB_DIR", "/tmp/rigfast-ab")

# run in the tree: where every loaded rigfast module comes from, and how many are compiled
_CHECK = """
import json, sys
import rigfast, rigfast.app
mods = {n: getattr(m, "__file__", None) for n, m in list(sys.modules.items()) if n.startswith("rigfast")}
print(json.dumps({"rigfast": rigfast.__file__, "modules": mods}))
"""


def sha(rev: str) -> str:
    return subprocess.run(["git", "-C", REPO, "rev-parse", "--verify", rev + "^{commit}"], check=True,
                          capture_output=True, text=True).stdout.strip()


def env(path: str, base: dict | None = None) -> dict:
    """The environment that runs rigfast from ``path`` (with cwd=path)."""
    e = dict(os.environ if base is None else base)
    e["PYTHONPATH"] = path
    e.pop("RIGFAST_NO_EXTENSIONS", None)
    return e


def check(path: str, python: str = sys.executable) -> dict:
    """Which files the tree's gateway runs; raises if any rigfast module comes from elsewhere."""
    out = subprocess.run([python, "-c", _CHECK], cwd=path, env=env(path), check=True, capture_output=True,
                         text=True).stdout
    info = json.loads(out.strip().splitlines()[-1])
    root = os.path.realpath(path) + os.sep
    stray = {n: f for n, f in info["modules"].items() if f and not os.path.realpath(f).startswith(root)}
    if stray:
        raise SystemExit(f"{path}: rigfast modules loaded from outside the tree: {stray}")
    info["compiled"] = sorted(n for n, f in info["modules"].items() if f and f.endswith(".so"))
    return info


def tree(rev: str, python: str = sys.executable, log=sys.stderr) -> str:
    """The folder holding ``rev`` built in place (made on first use)."""
    commit = sha(rev)
    path = os.path.join(BASE, commit[:12])
    done = os.path.join(path, ".ab-built")
    if not os.path.exists(done):
        if not os.path.isdir(path):
            os.makedirs(BASE, exist_ok=True)
            subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", path, commit], check=True,
                           stdout=subprocess.DEVNULL)
        print(f"[revtree] building {rev} ({commit[:12]}) in {path}", file=log, flush=True)
        subprocess.run([python, "setup.py", "-q", "build_ext", "--inplace", "-j", "2"], cwd=path, check=True,
                       env=dict(os.environ, RIGFAST_REQUIRE_EXTENSIONS="1"), stdout=subprocess.DEVNULL)
        info = check(path, python)
        with open(done, "w") as fh:
            json.dump({"rev": rev, "commit": commit, "compiled": info["compiled"]}, fh)
    return path


def describe(path: str) -> dict:
    with open(os.path.join(path, ".ab-built")) as fh:
        return json.load(fh)


def remove(rev: str) -> None:
    path = os.path.join(BASE, sha(rev)[:12])
    if os.path.isdir(path):
        subprocess.run(["git", "-C", REPO, "worktree", "remove", "--force", path], check=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] in ("tree", "remove"):
        print(tree(sys.argv[2]) if sys.argv[1] == "tree" else remove(sys.argv[2]) or "")
    else:
        raise SystemExit("usage: python bench/revtree.py tree|remove REV")
