"""packaging/strip_bundle.py strips the symbol tables of the bundle's own libraries and leaves alone
the ones strip breaks (auditwheel's patchelf-rewritten `*.libs/` copies and the libraries whose RPATH
points there), and never the executable, which carries PyInstaller's archive after its ELF image."""

from __future__ import annotations

import ctypes
import shutil

import pytest

from tests.packaging.helpers import compiled_library, has_symtab, packaging_script


@pytest.fixture()
def strip_bundle():
    for tool in ("cc", "strip", "readelf"):
        assert shutil.which(tool), f"{tool} not found: install Debian packages gcc and binutils (scripts/bootstrap.sh)"
    return packaging_script("strip_bundle")


def test_strips_the_bundles_libraries_but_not_auditwheel_patched_ones_or_the_executable(tmp_path, strip_bundle):
    bundle = tmp_path / "tinymlops"
    internal = bundle / "_internal"
    own = compiled_library(internal / "tensorflow" / "libown.so")
    copied = compiled_library(internal / "numpy.libs" / "libopenblas.so")
    patched = compiled_library(internal / "numpy" / "_core" / "_ext.so", "-Wl,-rpath,$ORIGIN/../../numpy.libs")
    exe = compiled_library(bundle / "tinymlops")  # stands in for the bootloader: outside _internal
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
    assert not has_symtab(own)
    assert ctypes.CDLL(str(own)).answer() == 42  # the dynamic symbols stay: it still loads and links
    assert all(has_symtab(path) for path in (copied, patched, exe))


def test_refuses_a_folder_that_is_not_a_bundle(tmp_path, strip_bundle, capsys):
    assert strip_bundle.main([str(tmp_path)]) == 2
    assert "not a PyInstaller one-folder bundle" in capsys.readouterr().err
