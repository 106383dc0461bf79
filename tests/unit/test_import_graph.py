"""The rigfast import graph has no cycle (imports inside functions count; ``if TYPE_CHECKING:`` ones do not).

Run: python -m pytest -q tests/unit/test_import_graph.py  (python -m tests.unit.test_import_graph prints the graph)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "rigfast"


def module_names() -> dict[str, Path]:
    out = {}
    for path in (ROOT / PACKAGE).rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking_only(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """rigfast modules ``name`` imports: each target, and the packages Python loads on the way
    (not ``name``'s own ancestors, which are loaded before it anyway)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    targets: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking_only(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                targets.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    pkg = name.split(".") if is_package else name.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (child.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                targets.add(base)
                targets.update(f"{base}.{a.name}" for a in child.names if f"{base}.{a.name}" in modules)
            visit(child)

    visit(tree)
    own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    out = set()
    for t in targets:
        if not (t == PACKAGE or t.startswith(PACKAGE + ".")):
            continue
        parts = t.split(".")
        for i in range(2, len(parts) + 1):  # the target and the packages on the way to it
            m = ".".join(parts[:i])
            if m in modules and m not in own and m != name:
                out.add(m)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = module_names()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def dfs(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = dfs(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = dfs(n)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_check_sees_a_cycle():
    """The detector itself: a two-module and a three-module cycle are found, a chain is not."""
    assert find_cycle({"a": {"b"}, "b": {"a"}}) is not None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_graph_reads_deferred_imports():
    """An import inside a function is an edge (a deferred import cannot hide a cycle)."""
    graph = import_graph()
    assert "rigfast.app" in graph["rigfast.cli"]  # cli imports the app inside main()


if __name__ == "__main__":
    g = import_graph()
    for name in sorted(g):
        print(name, "->", ", ".join(sorted(g[name])) or "-")
    cyc = find_cycle(g)
    print("cycle:", " -> ".join(cyc) if cyc else "none")
    sys.exit(1 if cyc else 0)
