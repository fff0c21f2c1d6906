"""The package's layers, read from its source: the imports between ladderlab's own modules.

DESIGN.md: data flows one way (course -> environments -> learner work | grading -> ladder -> reports),
and each part has things it never does. Two of those are checked here for every module, whatever
level an import sits at:

* no import cycle among modules at import time (imports at module level, including class bodies and
  ``try`` blocks; an import inside a function, or under ``if TYPE_CHECKING:``, runs later or never);
* neither ``environments`` nor the course layer imports ``grading``, not even inside a function.

The walk is over the source with :mod:`ast`, so a module that is never imported by a test is covered too.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "ladderlab"
SRC = Path(__file__).resolve().parents[2] / "src" / PACKAGE

#: The course layer (DESIGN.md's ``course`` part): whether these are top-level modules or one package.
COURSE_LAYER = ("ladderlab.course", "ladderlab.course.labs", "ladderlab.course.loading", "ladderlab.course.sources",
                "ladderlab.course.seeds")
ENVIRONMENTS = ("ladderlab.environments",)
GRADING = "ladderlab.grading"


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # a ladderlab module or package that the import runs
    line: int
    at_import_time: bool  # module level (not in a function, not under TYPE_CHECKING)


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(src: Path = SRC) -> dict[str, Path]:
    return {module_name(p, src): p for p in sorted(src.rglob("*.py")) if "__pycache__" not in p.parts}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST, at_import_time: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under ``node`` and whether it runs when the module is imported."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, at_import_time
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, False)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), False)
            for stmt in child.orelse:
                yield from _walk(ast.Module(body=[stmt], type_ignores=[]), at_import_time)
        else:
            yield from _walk(child, at_import_time)


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports_of(name: str, path: Path, known: set[str]) -> list[Import]:
    """The ladderlab modules ``name`` imports: each named module, and the packages whose ``__init__``
    the import runs first (except the importer's own packages, which are already being imported)."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    own = set(_ancestors(name)) | {name}
    found: list[Import] = []
    for node, at_import_time in _walk(tree, True):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [module]
            # ``from ladderlab.grading import checks`` runs the submodule ladderlab.grading.checks
            targets += [f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in known]
        for target in targets:
            if target != PACKAGE and not target.startswith(PACKAGE + "."):
                continue
            for t in [*_ancestors(target), target]:
                if t in known and t not in own:
                    found.append(Import(name, t, node.lineno, at_import_time))
    return found


def import_graph(src: Path = SRC) -> list[Import]:
    mods = modules(src)
    known = set(mods)
    return [imp for name, path in mods.items() for imp in imports_of(name, path, known)]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle (``[a, b, ..., a]``) in a directed graph, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def _in(name: str, layer: tuple[str, ...] | str) -> bool:
    prefixes = (layer,) if isinstance(layer, str) else layer
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# --- the walker itself, on a package made for it ---------------------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    src = tmp_path / PACKAGE
    for rel, text in files.items():
        path = src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return src


def test_the_walker_sees_every_kind_of_import(tmp_path):
    src = _package(tmp_path, {
        "__init__.py": "",
        "a.py": "from ladderlab import b\nimport os\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ladderlab import c\n"
                "def f():\n    from .c import thing\n",
        "c.py": "class K:\n    from ladderlab.sub import deep\n",
        "sub/__init__.py": "from . import deep\n",
        "sub/deep.py": "try:\n    import ladderlab.a\nexcept ImportError:\n    pass\n",
    })
    got = {(i.source, i.target, i.at_import_time) for i in import_graph(src)}
    assert got == {
        ("ladderlab.a", "ladderlab.b", True),
        ("ladderlab.b", "ladderlab.c", False),  # under TYPE_CHECKING, and relative inside a function
        ("ladderlab.c", "ladderlab.sub", True),  # the package's __init__ runs first
        ("ladderlab.c", "ladderlab.sub.deep", True),
        ("ladderlab.sub", "ladderlab.sub.deep", True),
        ("ladderlab.sub.deep", "ladderlab.a", True),
    }
    edges: dict[str, set[str]] = {}
    for i in import_graph(src):
        if i.at_import_time:
            edges.setdefault(i.source, set()).add(i.target)
    assert find_cycle(edges) is None  # b -> c only inside a function
    edges["ladderlab.b"] = {"ladderlab.c"}
    assert find_cycle(edges) == ["ladderlab.a", "ladderlab.b", "ladderlab.c", "ladderlab.sub",
                                 "ladderlab.sub.deep", "ladderlab.a"]


# --- the real package ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def graph() -> list[Import]:
    found = import_graph()
    assert len({i.source for i in found}) > 20, "the walk found too few modules: is SRC right?"
    return found


def test_no_import_cycle_at_import_time(graph):
    edges: dict[str, set[str]] = {}
    lines: dict[tuple[str, str], int] = {}
    for i in graph:
        if i.at_import_time:
            edges.setdefault(i.source, set()).add(i.target)
            lines.setdefault((i.source, i.target), i.line)
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(
        f"{a} (line {lines[a, b]})" for a, b in itertools.pairwise(cycle)) + f" -> {cycle[-1]}"


@pytest.mark.parametrize("layer", [ENVIRONMENTS, COURSE_LAYER], ids=["environments", "course"])
def test_upstream_layers_never_import_grading(graph, layer):
    bad = sorted(f"{i.source} line {i.line} imports {i.target}" for i in graph
                 if _in(i.source, layer) and _in(i.target, GRADING))
    assert not bad, "\n".join(bad)
    assert any(_in(name, layer) for name in modules()), f"no module of {layer} found"
