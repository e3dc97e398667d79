"""The package layering of app/, checked from the source with `ast` (README, "Layers").

Every import counts, including the ones inside functions: a lazy import hides a cycle from Python
at start-up, not from the design. A failure names the file, the line and the import.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "app"

# Bottom to top: a package may import only from packages at or below its own position. The same
# order is written once, in README.md ("Layers"); the test below checks the README says it too.
LAYERS = ("domain", "protocol", "trust", "transport", "ml", "fleet", "services", "deploy", "analysis", "ui", "cli")
# Top-level modules of app/ itself (the `python -m app` entry point) sit above every package.
ENTRY_MODULES = ("__main__", "__init__")
# Qt bindings: only the desktop UI may import them, so everything else runs headless.
QT_MODULES = ("PySide6", "shiboken6", "pyqtgraph", "superqt")
# TensorFlow costs seconds to import: only the one lazy import helper may import it, and only
# inside a function (the worker jobs that train or convert call it).
TF_MODULES = ("tensorflow", "keras", "tf_keras")
TF_IMPORTER = "app/ml/tfimport.py"


@dataclass(frozen=True)
class Import:
    file: str  # path relative to the repository, e.g. app/ui/jobs.py
    line: int
    target: str  # absolute dotted module name
    lazy: bool  # inside a function or method

    def __str__(self) -> str:
        kind = "lazy import" if self.lazy else "import"
        return f"{self.file}:{self.line}: {kind} {self.target}"


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(APP.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path) -> list[Import]:
    here = _module_name(path)
    package = here if path.name == "__init__.py" else here[:-1]
    return _imports_in(path.read_text(encoding="utf-8"), str(path.relative_to(APP.parent)), package)


def _imports_in(source: str, rel: str, package: list[str]) -> list[Import]:
    """The imports of one module's source; `package` is the dotted package it lives in, split."""
    tree = ast.parse(source, filename=rel)
    found: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend(Import(rel, child.lineno, a.name, lazy) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[: len(package) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                found.append(Import(rel, child.lineno, target, lazy))
                # `from app import ml` imports the package app.ml (`from app import __version__` does not)
                if target == "app":
                    found.extend(Import(rel, child.lineno, f"app.{a.name}", lazy) for a in child.names
                                 if (APP / a.name).is_dir())
            visit(child, inner)

    visit(tree, False)
    return found


def _all_imports() -> list[Import]:
    return [imp for path in sorted(APP.rglob("*.py")) for imp in _imports(path)]


def _package(dotted: str) -> str | None:
    parts = dotted.split(".")
    return parts[1] if parts[0] == "app" and len(parts) > 1 else None


def _source_package(imp: Import) -> str:
    parts = Path(imp.file).with_suffix("").parts
    return parts[1]  # app/<package>/... -> <package>; app/__main__.py -> __main__


def package_edges() -> dict[tuple[str, str], list[Import]]:
    """(from package, to package) -> the imports that make that edge, across app/ packages."""
    edges: dict[tuple[str, str], list[Import]] = {}
    for imp in _all_imports():
        src, dst = _source_package(imp), _package(imp.target)
        if dst is None or dst == src or src in ENTRY_MODULES:
            continue
        edges.setdefault((src, dst), []).append(imp)
    return edges


def package_cycles(edges: dict[tuple[str, str], list[Import]]) -> list[list[str]]:
    """Every elementary cycle of the package graph, each as its packages in order, smallest first."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    cycles: list[list[str]] = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt == start:
                cycles.append(path[:])
            elif nxt > start and nxt not in path:
                walk(start, nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, start, [start])
    return sorted(cycles, key=len)


def _describe_cycle(cycle: list[str], edges: dict[tuple[str, str], list[Import]]) -> str:
    steps = []
    for a, b in zip(cycle, cycle[1:] + cycle[:1], strict=True):
        steps.append(f"  {a} -> {b}: " + "; ".join(str(i) for i in edges[(a, b)]))
    return " -> ".join(cycle + cycle[:1]) + "\n" + "\n".join(steps)


def test_every_package_has_a_layer():
    packages = {p.name for p in APP.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(LAYERS), f"packages without a layer or layers without a package: {packages ^ set(LAYERS)}"


def test_no_import_cycles_between_packages():
    edges = package_edges()
    cycles = package_cycles(edges)
    print(f"{len(edges)} package edges, {len(cycles)} cycles")
    for cycle in cycles:
        print(_describe_cycle(cycle, edges))
    assert not cycles, "import cycles between app/ packages:\n" + "\n".join(_describe_cycle(c, edges) for c in cycles)


def test_imports_follow_the_layer_order():
    bad = [imp for (src, dst), imps in package_edges().items() if LAYERS.index(dst) > LAYERS.index(src)
           for imp in imps]
    print(f"{len(bad)} imports against the layer order")
    assert not bad, ("imports from a lower layer into a higher one (order, bottom to top: "
                     + " < ".join(LAYERS) + "):\n" + "\n".join(f"  {i}" for i in bad))


def test_qt_only_in_ui():
    bad = [imp for imp in _all_imports() if imp.target.split(".")[0] in QT_MODULES
           and not imp.file.startswith("app/ui/")]
    assert not bad, "Qt imported outside app/ui:\n" + "\n".join(f"  {i}" for i in bad)


def test_tensorflow_only_lazily_through_tfimport():
    bad = [imp for imp in _all_imports() if imp.target.split(".")[0] in TF_MODULES
           and (not imp.lazy or imp.file != TF_IMPORTER)]
    assert not bad, (f"TensorFlow imported outside a function of {TF_IMPORTER} (use app.ml.tfimport.tensorflow() "
                     "inside the job that needs it):\n" + "\n".join(f"  {i}" for i in bad))


def test_readme_states_the_same_layer_order():
    readme = (APP.parent / "README.md").read_text(encoding="utf-8")
    order = " < ".join(f"`{name}`" for name in LAYERS)
    assert order in readme, f"README.md's architecture section should state the layer order as: {order}"


def test_the_checker_sees_lazy_and_relative_imports():
    """The parser itself: a relative import and an import inside a function are both found."""
    source = "from . import jobs\nfrom ..ml import store\n\ndef f():\n    from app.cli import main\n"
    found = {(i.target, i.lazy) for i in _imports_in(source, "app/ui/probe.py", ["app", "ui"])}
    assert found == {("app.ui", False), ("app.ml", False), ("app.cli", True)}, found
