"""packaging/strip_bundle.py strips the symbol tables of the bundle's own libraries and leaves alone
the ones strip breaks (auditwheel's patchelf-rewritten `*.libs/` copies and the libraries whose RPATH
points there), and never the executable, which carries PyInstaller's archive after its ELF image."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGING = ROOT / "packaging"
# Compiling and stripping three one-function libraries takes well under a second; this is a hang guard.
TOOL_TIMEOUT_S = 60


def _has_symtab(path: Path) -> bool:
    sections = subprocess.run(["readelf", "-S", "-W", str(path)], capture_output=True, text=True, check=True,
                              timeout=TOOL_TIMEOUT_S).stdout
    return " .symtab " in sections


def _library(path: Path, *ldflags: str) -> Path:
    """A real shared library with a symbol table, as compilers leave it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    source = path.parent / f"{path.name}.c"
    source.write_text("int answer(void) { return 42; }\n")
    subprocess.run([shutil.which("cc") or "cc", "-shared", "-fPIC", "-o", str(path), str(source), *ldflags],
                   check=True, timeout=TOOL_TIMEOUT_S)
    source.unlink()
    assert _has_symtab(path)
    return path


@pytest.fixture()
def strip_bundle():
    for tool in ("cc", "strip", "readelf"):
        assert shutil.which(tool), f"{tool} not found: install Debian packages gcc and binutils (scripts/bootstrap.sh)"
    sys.path.insert(0, str(PACKAGING))
    try:
        import strip_bundle
    finally:
        sys.path.remove(str(PACKAGING))
    return strip_bundle


def test_strips_the_bundles_libraries_but_not_auditwheel_patched_ones_or_the_executable(tmp_path, strip_bundle):
    bundle = tmp_path / "tinymlops"
    internal = bundle / "_internal"
    own = _library(internal / "tensorflow" / "libown.so")
    copied = _library(internal / "numpy.libs" / "libopenblas.so")
    patched = _library(internal / "numpy" / "_core" / "_ext.so", "-Wl,-rpath,$ORIGIN/../../numpy.libs")
    exe = _library(bundle / "tinymlops")  # stands in for the bootloader: outside _internal
    (internal / "data.txt").write_text("not an ELF file")
    (internal / "libown.so").symlink_to(own)
    # a board's firmware image the app flashes: an ARM ELF the host's strip cannot read (it failed the
    # build before it was left out)
    firmware = internal / "resources" / "firmware" / "nucleo-f446re" / "tinymlops.elf"
    firmware.parent.mkdir(parents=True)
    arm = bytearray(own.read_bytes()[:64])
    arm[18:20] = (40).to_bytes(2, "little")  # e_machine EM_ARM
    firmware.write_bytes(bytes(arm))

    assert strip_bundle.strippable(bundle) == [own]
    count, before, after = strip_bundle.strip_bundle(bundle)

    assert count == 1 and after < before
    assert not _has_symtab(own)
    assert ctypes.CDLL(str(own)).answer() == 42  # the dynamic symbols stay: it still loads and links
    assert all(_has_symtab(path) for path in (copied, patched, exe))


def test_refuses_a_folder_that_is_not_a_bundle(tmp_path, strip_bundle, capsys):
    assert strip_bundle.main([str(tmp_path)]) == 2
    assert "not a PyInstaller one-folder bundle" in capsys.readouterr().err
