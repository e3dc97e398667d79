"""What the packaging tests share: the packaging/ scripts imported as build.sh runs them (top-level
modules with packaging/ on sys.path, so `from disk_space import ...` inside them resolves), and a
real compiled shared library to strip."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

PACKAGING = Path(__file__).resolve().parents[2] / "packaging"
# Compiling or reading one small library takes well under a second; this is a hang guard.
TOOL_TIMEOUT_S = 60


def packaging_script(name: str) -> ModuleType:
    """packaging/NAME.py as a module."""
    sys.path.insert(0, str(PACKAGING))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(PACKAGING))


def has_symtab(path: Path) -> bool:
    sections = subprocess.run(["readelf", "-S", "-W", str(path)], capture_output=True, text=True, check=True,
                              timeout=TOOL_TIMEOUT_S).stdout
    return " .symtab " in sections


def compiled_library(path: Path, *ldflags: str, extra_functions: int = 0) -> Path:
    """A real shared library with a symbol table, as compilers leave it: `answer()` returns 42, and
    `extra_functions` more exported functions make its symbol tables (and its stripped copy) bigger."""
    path.parent.mkdir(parents=True, exist_ok=True)
    source = path.parent / f"{path.name}.c"
    source.write_text("".join(f"int function_{i}(void) {{ return {i}; }}\n" for i in range(extra_functions))
                      + "int answer(void) { return 42; }\n")
    subprocess.run([shutil.which("cc") or "cc", "-shared", "-fPIC", "-o", str(path), str(source), *ldflags],
                   check=True, timeout=TOOL_TIMEOUT_S)
    source.unlink()
    assert has_symtab(path)
    return path
