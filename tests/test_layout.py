"""The package's architecture, checked from the source: the engine (coar.*) never imports the paper's
reproduction (coar.paper.*), only the CLI spans both, and no two modules import each other, directly or
through others, at module level or inside functions (a cycle hidden in a function is still a cycle)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "coar"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    if not level:
        return name or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _target(name: str) -> str | None:
    """The coar module an import of `name` loads (its longest prefix that is a module of ours)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in MODULES:
            return candidate
    return None


def import_graph() -> dict[str, set[str]]:
    """module -> the coar modules it imports, anywhere in its body."""
    graph = {}
    for module, path in MODULES.items():
        edges = set()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node.level, node.module)
                # `from pkg import sub` loads pkg.sub when sub is a module, else pkg
                names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
            else:
                continue
            for name in names:
                target = _target(name)
                if target is not None and target != module:
                    edges.add(target)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
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
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _engine(module: str) -> bool:
    return not module.startswith("coar.paper") and module != "coar.cli"


def test_the_checker_finds_a_cycle_and_a_layering_breach():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    # imports inside functions count: a module whose function imports its importer closes a cycle
    g = import_graph()
    assert "coar.components" in g["coar.ablation"]  # a top-level import is seen
    assert "coar.attention" in g["coar.api"]  # an import inside a function is seen too


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_engine_never_imports_the_paper_reproduction():
    graph = import_graph()
    breaches = sorted(f"{m} -> {t}" for m, targets in graph.items() if _engine(m)
                      for t in targets if t.startswith("coar.paper"))
    assert not breaches, breaches
    assert any(t.startswith("coar.paper") for t in graph["coar.cli"])  # the CLI is where both meet


@pytest.mark.parametrize("module", ["coar.api", "coar.regression", "coar.pipeline", "coar.store",
                                    "coar.baselines", "coar.editing"])
def test_engine_modules_reach_no_paper_module_transitively(module):
    graph = import_graph()
    seen, todo = set(), [module]
    while todo:
        m = todo.pop()
        for t in graph[m]:
            if t not in seen:
                seen.add(t)
                todo.append(t)
    assert not [m for m in seen if m.startswith("coar.paper")]
