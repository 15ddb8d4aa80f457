"""Import boundaries of the design guide, checked on the source with ``ast`` (nothing is imported).

* No import cycles among our modules. Every import counts: top level, inside a function, and under
  ``if TYPE_CHECKING:``. A function-level import only hides a cycle from the interpreter, and a type-only import
  is still a dependency of one module on the other: both are cycles in substance.
* One-way layers (``LAYERS``): ``ui/``, ``broker/`` and ``simulator/`` import nothing of ours outside themselves,
  ``db`` only ``config``, the service ``db``/``broker``/``config``, and Streamlit (``app.py``, ``pages/``) never
  imports ``services/``.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("app.py", "config.py", "pages", "ui", "db", "services", "broker", "simulator", "scripts", "api")

# Temporary: cycles still to be broken, each the exact set of modules in one cycle. An entry that is no longer a
# cycle fails the test, so it is deleted with the change that breaks it.
ALLOWED_CYCLES: list[frozenset[str]] = []  # none


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Our module names -> their files (a package is its ``__init__.py``)."""
    out: dict[str, Path] = {}
    for src in SOURCES:
        path = root / src
        files = ([path] if path.exists() else []) if path.suffix == ".py" else sorted(path.rglob("*.py"))
        for f in files:
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = f
    return out


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The most specific module of ours that ``name`` (a dotted path, maybe ending in an attribute) names."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        cand = ".".join(parts[:n])
        if cand in modules:
            return cand
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules that ``module`` imports anywhere in its source."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                pkg = pkg[:len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            names = [f"{base}.{a.name}" for a in node.names]  # a submodule, or an attribute of ``base``
        else:
            continue
        for name in names:
            target = _resolve(name, modules)
            if target and target != module:
                found.add(target)
    return found


@functools.cache
def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_files(root)
    return {m: imports_of(m, f, modules) for m, f in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected component of more than one module (Tarjan), sorted, as a list of names."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


def _path_in(comp: list[str], graph: dict[str, set[str]]) -> str:
    """One concrete cycle through the component's first module, for the failure message."""
    start, members = comp[0], set(comp)
    prev: dict[str, str] = {}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                path = [start]
                while v != start:
                    path.append(v)
                    v = prev[v]
                return " -> ".join([start, *reversed(path[1:]), start])
            if w not in prev:
                prev[w] = v
                todo.append(w)
    return " -> ".join(comp)


def test_imports_when_our_modules_are_walked_then_no_module_imports_itself_through_others():
    graph = import_graph()
    comps = cycles(graph)
    found = [c for c in comps if frozenset(c) not in ALLOWED_CYCLES]
    assert not found, "import cycles:\n" + "\n".join(
        f"  {', '.join(c)}  (e.g. {_path_in(c, graph)})" for c in found)
    stale = [sorted(a) for a in ALLOWED_CYCLES if a not in {frozenset(c) for c in comps}]
    assert not stale, f"no longer a cycle, remove from ALLOWED_CYCLES: {stale}"


def test_cycles_when_two_modules_import_each_other_inside_a_function_then_the_cycle_is_found(tmp_path):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "__init__.py").write_text("")
    (tmp_path / "db" / "a.py").write_text("from db.b import x\n")
    (tmp_path / "db" / "b.py").write_text("def f():\n    from . import a\n")
    (tmp_path / "db" / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import db.a\n")
    graph = import_graph(tmp_path)
    assert graph["db.c"] == {"db.a"}
    assert cycles(graph) == [["db.a", "db.b"]]


# What each of our top-level packages may import of ours (itself always). scripts/ (launchers) may import anything.
LAYERS = {
    "ui": (),  # renders what pages hand it: no DB, no HTTP
    "broker": (),  # the OpenAlgo client, used by the service and the Accounts page alike
    "simulator": (),  # stands in for OpenAlgo: it must not lean on the product it tests
    "config": (),
    "db": ("config",),
    "services": ("db", "broker", "config"),
    "app": ("pages", "ui", "db", "broker", "config"),  # Streamlit never imports services/: it writes command rows
    "pages": ("ui", "db", "broker", "config"),
    "api": ("db", "config"),  # the local API writes command rows like the pages; it never calls a broker
}


@pytest.mark.parametrize("package", sorted(LAYERS))
def test_layers_when_a_package_imports_ours_then_only_the_layers_it_may_use(package):
    allowed = {package, *LAYERS[package]}
    bad = sorted(f"{m} imports {t}" for m, ts in import_graph().items() if m.split(".")[0] == package
                 for t in ts if t.split(".")[0] not in allowed)
    assert bad == []
