"""The code's layout, as the README's "How the code is laid out" describes it: imports flow one way (tuners ->
library -> engine -> CLI, builder, app), nothing imports in a circle, hora never imports gradio, and no file or
function is longer than a newcomer can read in one go unless it says why."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("hora", "app")

# Layers, lowest first: a module may import from its own layer and the layers below it, never from above.
LAYERS = {
    "tuners": ["hora.registration", "hora.tuners", "hora.geometry", "hora.generator"],
    "library": [
        "hora.io",
        "hora.memo",
        "hora.cards",
        "hora.models",
        "hora.data",
        "hora.inspect",
        "hora.coupling",
        "hora.analysis",
        "hora.knockout",
        "hora.export",
        "hora.validate",
        "hora.hub",
        "hora.packaged",
        "hora.loaders",
        "hora.variants",
        "hora.mixed_terms",
        "hora.mixed",
        "hora.infer",
        "hora.methods",
        "hora.push",
        "hora",  # the package's __init__: the public API, registration included
    ],
    "engine": ["hora.task", "hora.config", "hora.optim", "hora.runs", "hora.train", "hora.jobs", "hora.bench"],
    "tools": ["hora.cli", "hora.__main__", "hora.assets", "hora.docs", "app"],
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _imports(path: Path, name: str, top_level_only: bool) -> set[str]:
    """The project modules ``path`` imports (at module level only, when ``top_level_only``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative import
                base = name.rsplit(".", node.level)[0] if not path.name == "__init__.py" else name
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.split(".")[0] in PACKAGES}


def _known(module: str, sources: dict[str, Path]) -> str | None:
    """The project module an import names (``hora.data.load_data`` -> ``hora.data``)."""
    while module and module not in sources:
        module = module.rpartition(".")[0]
    return module or None


def _layer(module: str) -> str:
    best, layer_of = "", None
    for layer, prefixes in LAYERS.items():
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best):
                best, layer_of = prefix, layer
    assert layer_of is not None, f"{module} is in no layer of tests/test_layout.py: add it where it belongs"
    return layer_of


def test_no_import_cycles():
    """No two modules import each other, directly or around a circle, counting imports inside functions (a lazy
    import that only dodges a circle at import time is still a circle in the design)."""
    sources = _sources()
    graph = {
        name: {m for m in (_known(i, sources) for i in _imports(path, name, top_level_only=False)) if m and m != name}
        for name, path in sources.items()
    }
    # a package imports its own submodules when they are imported: not a cycle of the code's design
    for name in graph:
        graph[name] = {m for m in graph[name] if not (name.startswith(m + ".") and sources[m].name == "__init__.py")}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_imports_flow_one_way():
    sources = _sources()
    order = list(LAYERS)
    wrong = []
    for name, path in sources.items():
        mine = order.index(_layer(name))
        for imported in _imports(path, name, top_level_only=False):  # lazy imports count too
            target = _known(imported, sources)
            if target and order.index(_layer(target)) > mine:
                wrong.append(f"{name} ({_layer(name)}) imports {target} ({_layer(target)})")
    assert not wrong, "\n".join(wrong)


def test_hora_knows_nothing_of_gradio():
    offenders = []
    for path in sorted((ROOT / "hora").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "gradio" or n.startswith("gradio.") for n in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders


def test_files_and_functions_stay_readable():
    """No file over 500 lines, no function over 80, unless the file's docstring says why it must be."""
    too_long = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
            doc = ast.get_docstring(tree) or ""
            if "longer than" in doc:  # "This file is longer than ... because ..."
                continue
            if source.count("\n") > 500:
                too_long.append(f"{path.relative_to(ROOT)}: {source.count(chr(10))} lines")
            for node in ast.walk(tree):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_long, "\n".join(too_long)


def test_tests_share_helpers_through_one_module():
    """Test files import shared helpers from tests/helpers.py, never from one another."""
    offenders = []
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            module = node.module if isinstance(node, ast.ImportFrom) else None
            if module and module.startswith("test_"):
                offenders.append(f"{path.name} imports {module}")
    assert not offenders
