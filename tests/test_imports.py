"""The library's import graph: no cycles, and the library never imports the applications.

Every ``import`` statement in ``src/recompose`` counts, including those inside functions (a
lazy import is still a dependency). ``recompose.cli`` is the command line (an application
inside the package): only it may import itself; nothing may import ``experiments``.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in (SRC / "recompose").rglob("*.py")}


def _imports(name: str, source: str, is_package: bool, known: dict[str, Path]) -> set[str]:
    """Modules imported by ``name`` (resolved; ``from pkg import sub`` counts as ``pkg.sub``)."""
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = {f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known}
            attrs = [a for a in node.names if f"{mod}.{a.name}" not in known]
            out |= subs | ({mod} if attrs else set())
    return out


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {name: _deps(name, path.read_text(), path.name == "__init__.py", known)
            for name, path in known.items()}


def _deps(name: str, source: str, is_package: bool, known: dict[str, Path]) -> set[str]:
    return {m for m in _imports(name, source, is_package, known)
            if m in known or m.split(".")[0] == "experiments"}


def _forbidden(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Edges from the library to the applications (``python -m recompose`` may start the CLI)."""
    return [(name, dep) for name, deps in graph.items() for dep in deps
            if dep.split(".")[0] == "experiments"
            or (dep.startswith("recompose.cli") and not name.startswith("recompose.cli")
                and name != "recompose.__main__")]


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path of module names, or None (iterative DFS)."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for root in sorted(graph):
        if state.get(root):
            continue
        stack = [(root, iter(sorted(graph[root])))]
        state[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                stack.pop()
            elif state.get(child) == 1:
                path = [n for n, _ in stack]
                return path[path.index(child):] + [child]
            elif not state.get(child) and child in graph:
                state[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
    return None


def test_no_import_cycles():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_library_never_imports_the_applications():
    bad = _forbidden(_graph())
    assert not bad, f"library modules importing applications: {bad}"


def test_the_checks_see_cycles_and_forbidden_imports():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
    known = _modules()
    lazy = "def f():\n    from ..cli.main import main\n    import experiments.toy2d\n"
    deps = _deps("recompose.models.fake", lazy, False, known)
    assert deps == {"recompose.cli.main", "experiments.toy2d"}
    assert len(_forbidden({"recompose.models.fake": deps})) == 2
    back = _deps("recompose.compose", "from .models import base\n", False, known)
    assert _cycle({"recompose.compose": back, "recompose.models.base": {"recompose.compose"}})


@pytest.mark.parametrize("module", ["recompose", "recompose.cli.main"])
def test_the_package_imports_without_experiments_on_the_path(module):
    import subprocess
    import sys

    code = f"import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; import {module}"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=SRC.parent / "docs")
