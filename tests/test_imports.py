"""The house: every module of ``sweep`` imports only from modules below it (no import cycle,
function-level and type-checking imports included), and the store knows nothing of Optuna."""

from __future__ import annotations

import ast
from pathlib import Path

import sweep

SRC = Path(sweep.__file__).parent


def _module(file: Path) -> str:
    parts = ["sweep", *file.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Module -> the ``sweep`` modules it imports anywhere in its text."""
    files = {_module(f): f for f in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, file in files.items():
        package = name if file.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{up}.{base}" if base else up
                # ``from sweep import store`` imports the module store, not the package's names
                names = [f"{base}.{a.name}" for a in node.names]
                found.update(n for n in names if n in files)
                if any(n not in files for n in names):
                    found.add(base)
        graph[name] = {m for m in found if m in files and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected group of more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(groups)


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_store_knows_nothing_of_optuna_or_the_sweeper():
    text = (SRC / "store.py").read_text()
    assert "import optuna" not in text and "from optuna" not in text
    assert not {d for d in _graph()["sweep.store"] if d.startswith("sweep.search")}


def test_every_module_imports():
    """The graph above reads text; this imports each module, so a name moved away breaks here."""
    import importlib

    for file in sorted(SRC.rglob("*.py")):
        name = _module(file)
        if name != "sweep.__main__":  # runs the command line
            importlib.import_module(name)
