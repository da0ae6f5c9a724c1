"""The package is layered: imports only go downwards, and no two packages import each other.

Every ``import`` in ``src/deepclust`` counts, including the lazy ones inside functions (a lazy
import hides a cycle from Python, not from the design). See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "deepclust"

#: Bottom to top. A unit (a sub-package, or a top-level module) may import units of its own
#: layer or of the layers below it.
LAYERS: list[set[str]] = [
    {"errors", "core"},                                            # foundation
    {"cluster", "evaluate", "heads"},                              # k-means, Sinkhorn, metrics, heads
    {"data", "models", "losses"},                                  # sources, encoders, losses
    {"methods"},                                                   # what a method computes
    {"train"},                                                     # orchestration
    {"features"},                                                  # any model spec -> Encoder
    {"report", "attention", "naming", "zeroshot", "output", "pipeline", "curate"},  # pipeline stages
    {"commands", "cli", "estimator", "__main__"},                  # thin fronts
]
LAYER_OF = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}


def _unit(module: str) -> str | None:
    """``deepclust.train.loop`` -> ``train``; the package root itself -> None."""
    parts = module.split(".")
    if parts[0] != "deepclust" or len(parts) < 2:
        return None
    return parts[1]


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names of every deepclust module imported anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            found.update(f"{prefix}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("deepclust")}


def _unit_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        unit = _unit(_module_name(path))
        if unit is None:
            continue  # deepclust/__init__.py: the facade (lazy re-exports of the top layer)
        targets = {_unit(name) for name in _imports(path)}
        graph.setdefault(unit, set()).update(t for t in targets if t and t != unit)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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


def test_every_unit_has_a_layer():
    units = {_unit(_module_name(p)) for p in SRC.rglob("*.py")} - {None}
    assert units <= set(LAYER_OF), f"add these to LAYERS (and docs/ARCHITECTURE.md): {sorted(units - set(LAYER_OF))}"


def test_no_import_cycle_between_packages():
    assert _cycles(_unit_graph()) == []


def test_imports_only_go_downwards():
    upward = sorted(f"{unit} -> {target}" for unit, targets in _unit_graph().items() for target in targets
                    if LAYER_OF.get(target, -1) > LAYER_OF.get(unit, len(LAYERS)))
    assert upward == []


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "deepclust" / "sub"
    pkg.mkdir(parents=True)
    f = pkg / "mod.py"
    f.write_text("def f():\n    from deepclust.train import loop\n    from ..core import io\n"
                 "    import deepclust.data.store\n")
    global SRC
    saved, SRC = SRC, tmp_path / "deepclust"
    try:
        assert _imports(f) >= {"deepclust.train.loop", "deepclust.core.io", "deepclust.data.store"}
    finally:
        SRC = saved
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
