"""The layers of DESIGN.md only point down, and no modules import each other in a circle.

    base (atomic, errors, structure, plotting ...) < glass, layers, data, models < analysis, explain < train < runs
        < compress, experiments, report, serve < cli < the package's public API (convolab/__init__.py)

Every ``import`` and ``from ... import`` in every module under src/convolab is read with ``ast`` — at module level
and inside functions (a lazy import is still a dependency: it only moves the failure to run time) — and mapped to
the module it loads. Layers are checked on all of them; circles on the imports that run when a module is imported
(module level, class bodies, ``if``/``try`` blocks — not function bodies), the circles that fail or half-initialise
a module. Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; those implicit parent imports are not
edges here, or every module would sit in a circle with ``convolab/__init__.py``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "convolab"

# Layer of each top-level part of the package (the first name after "convolab."). Base modules hold no
# convolab logic of their own and import only each other; run.py and run_schema.py are re-exports of runs/.
LAYERS = {
    **dict.fromkeys(("atomic", "errors", "device", "tensor_files", "_logging", "plotting", "structure"), 0),
    **dict.fromkeys(("glass", "layers", "data", "models"), 1),
    **dict.fromkeys(("analysis", "explain"), 2),
    "train": 3,
    **dict.fromkeys(("runs", "run", "run_schema"), 4),
    **dict.fromkeys(("compress", "experiments", "report", "serve"), 5),
    **dict.fromkeys(("cli", "__main__"), 6),
    "": 7,  # convolab/__init__.py: the public API re-exports every layer
}
LAYER_NAMES = {0: "base", 1: "glass/layers/data/models", 2: "analysis/explain", 3: "train", 4: "runs",
               5: "compress/experiments/report/serve", 6: "cli", 7: "the public API"}

# ``from convolab import __version__`` reads a constant the package defines before it imports anything: it loads no
# layer, so it counts as a base import.
VERSION = "convolab.__version__"

# Imports allowed for now, by file (relative to src/convolab) -> the modules it may import against the rules. Each
# entry is work in progress of issue 16 ("one training core"); the test fails when an entry is no longer needed, so
# the list only shrinks. Nothing outside train/, cli/ and runs/session.py may be listed here.
PENDING: dict[str, set[str]] = {}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "__pycache__" not in p.parts}


def _layer(module: str) -> int | None:
    if module == VERSION:
        return 0
    parts = module.split(".")
    return LAYERS.get(parts[1] if len(parts) > 1 else "")


def _import_nodes(tree: ast.AST):
    """``(node, lazy)`` for every import statement; ``lazy``: inside a function body (runs when called)."""
    stack = [(tree, False)]
    while stack:
        node, lazy = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, lazy
        inner = lazy or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        stack.extend((child, inner) for child in ast.iter_child_nodes(node))


def _imports(path: Path, module: str, modules: dict[str, Path]) -> list[tuple[int, str, bool]]:
    """``(line, imported convolab module, lazy)`` for every import in the file, nested ones too."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node, lazy in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, lazy) for a in node.names if a.name.split(".")[0] == "convolab"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "convolab":
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in modules:  # from convolab.data import cache: the submodule
                    out.append((node.lineno, sub, lazy))
                elif sub == VERSION:
                    out.append((node.lineno, VERSION, lazy))
                else:
                    out.append((node.lineno, source, lazy))
    return sorted(set(out))


def _graph() -> tuple[dict[str, Path], dict[str, list[tuple[int, str, bool]]]]:
    modules = _modules()
    return modules, {m: _imports(p, m, modules) for m, p in modules.items()}


def _rel(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _pending(path: Path, target: str) -> bool:
    return target in PENDING.get(_rel(path), ())


def test_every_module_has_a_layer():
    modules = _modules()
    unmapped = sorted(m for m in modules if _layer(m) is None)
    assert not unmapped, f"modules of no layer (add their top-level name to LAYERS): {unmapped}"


def test_imports_only_point_down():
    modules, graph = _graph()
    bad = []
    for module, imports in graph.items():
        here = _layer(module)
        for line, target, _ in imports:
            there = _layer(target)
            if there is None:
                bad.append(f"src/convolab/{_rel(modules[module])}:{line}: imports {target}, which is no module here")
            elif there > here and not _pending(modules[module], target):
                bad.append(f"src/convolab/{_rel(modules[module])}:{line}: imports {target} (layer "
                           f"{LAYER_NAMES[there]}) from layer {LAYER_NAMES[here]}")
    assert not bad, "imports from a lower layer to a higher one:\n" + "\n".join(bad)


def test_pending_lists_only_imports_that_still_happen():
    """An entry of PENDING that no longer happens is removed, so the list only shrinks; and only the parts being
    rewritten may have entries."""
    modules, graph = _graph()
    by_file = {_rel(p): {t for _, t, _ in graph[m]} for m, p in modules.items()}
    stale = [f"{f}: {t}" for f, targets in PENDING.items() for t in sorted(targets) if t not in by_file.get(f, set())]
    assert not stale, "PENDING entries no longer needed (remove them):\n" + "\n".join(stale)
    owned = [f for f in PENDING if not f.startswith(("train/", "cli/", "cli.py", "runs/session.py"))]
    assert not owned, f"PENDING may only list files being rewritten (train/, cli/, runs/session.py): {owned}"


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a module importing itself): Tarjan."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []
    counter = [0]

    def visit(v: str) -> None:  # recursion depth is bounded by the module count (a few hundred)
        index[v] = low[v] = counter[0]
        counter[0] += 1
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
            if len(component) > 1 or v in graph.get(v, ()):
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert _cycles({"a": ["a"], "b": []}) == [["a"]]
    assert _cycles({"a": ["b"], "b": []}) == []


def test_no_import_cycles():
    modules, graph = _graph()
    edges = {m: sorted({t for _, t, lazy in imports if not lazy and t in modules and t != VERSION
                        and not _pending(modules[m], t)}) for m, imports in graph.items()}
    cycles = _cycles(edges)
    lines = []
    for component in cycles:
        members = set(component)
        lines.append(" <-> ".join(component) + ": " + "; ".join(
            f"src/convolab/{_rel(modules[m])}:{line} imports {t}" for m in component for line, t, lazy in graph[m]
            if t in members and not lazy))
    assert not cycles, "modules that import each other in a circle:\n" + "\n".join(lines)


def test_a_violation_is_named_with_file_line_and_import(tmp_path, monkeypatch):
    """The checker itself: a models module importing the report is caught, with its line."""
    fake = tmp_path / "convolab"
    (fake / "models").mkdir(parents=True)
    (fake / "report").mkdir()
    for f in ("__init__.py", "models/__init__.py", "report/__init__.py", "report/html.py"):
        (fake / f).write_text("")
    (fake / "models" / "bad.py").write_text("import os\n\n\ndef f():\n    from convolab.report.html import x\n")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    expected = (r"src/convolab/models/bad.py:5: imports convolab.report.html \(layer compress/experiments/report/"
                r"serve\) from layer glass/layers/data/models")
    with pytest.raises(AssertionError, match=expected):
        test_imports_only_point_down()
    test_no_import_cycles()  # a lazy import is no circle
    (fake / "report" / "html.py").write_text("from convolab.models import bad\n")
    (fake / "models" / "bad.py").write_text("import convolab.report.html\n")
    with pytest.raises(AssertionError, match=r"convolab.models.bad <-> convolab.report.html: src/convolab/models/"
                                             r"bad.py:1 imports convolab.report.html; src/convolab/report/html.py:1"):
        test_no_import_cycles()


def test_importing_glass_loads_no_torch():
    """The NumPy engine is usable where PyTorch is not installed: importing it (and the package it sits in) never
    loads torch."""
    code = "import sys, convolab.glass; print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:5])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"import convolab.glass loaded {result.stdout.strip()}"
