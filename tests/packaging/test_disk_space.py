"""A packaging run on a nearly full disk says so, with the figures, and exits NO_SPACE_EXIT; it never
fails as a list of file names from `strip` (what CI once saw), and it leaves every library intact.

The full-disk cases use a real small tmpfs (root only, as CI runs); elsewhere they skip and say why."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.packaging.helpers import PACKAGING, compiled_library, packaging_script

ROOT = Path(__file__).resolve().parents[2]
# Compiling, stripping or the build script's checks before its first real step: seconds; a hang guard.
TOOL_TIMEOUT_S = 120
# Big enough for a small library and its stripped copy, so the filler decides when it is full.
TMPFS_MB = 8


@pytest.fixture()
def packaging_modules():
    return packaging_script("disk_space"), packaging_script("strip_bundle")


@pytest.fixture()
def small_disk(tmp_path):
    """A real TMPFS_MB filesystem, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(mount)],
                          capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
    if done.returncode != 0:
        pytest.skip(f"this machine refuses a tmpfs mount: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], timeout=TOOL_TIMEOUT_S, check=False)


def _fill(folder: Path, leave_bytes: int) -> None:
    """Write a filler file until only about LEAVE_BYTES stay free."""
    free = shutil.disk_usage(folder).free
    with open(folder / "filler", "wb") as fh:
        fh.write(b"\0" * max(0, free - leave_bytes))


def test_shortfall_states_what_is_free_and_what_is_needed(tmp_path, packaging_modules):
    disk_space, _ = packaging_modules
    total = shutil.disk_usage(tmp_path).total
    assert disk_space.shortfall(tmp_path / "not" / "made" / "yet", 1, "the build") is None
    message = disk_space.shortfall(tmp_path, total + 1, "the build")
    assert disk_space.NO_SPACE_PHRASE in message and "MB free" in message and "needed" in message
    assert disk_space.main([str(tmp_path), str(total // 2**20 + 1), "the build"]) == disk_space.NO_SPACE_EXIT
    assert disk_space.main([str(tmp_path), "1", "the build"]) == 0


def test_a_library_strip_cannot_read_fails_with_strips_words_and_is_left_as_it_was(tmp_path, packaging_modules,
                                                                                  capsys):
    _, strip_bundle = packaging_modules
    broken = tmp_path / "tinymlops" / "_internal" / "libbroken.so"
    whole = compiled_library(broken).read_bytes()
    broken.write_bytes(whole[:4096])  # an ELF header for this machine, the rest cut off
    assert strip_bundle.main([str(tmp_path / "tinymlops")]) == 1
    err = capsys.readouterr().err
    assert "strip failed on 1 libraries" in err and "strip:" in err
    assert broken.read_bytes() == whole[:4096]


def test_strip_on_a_full_disk_exits_no_space_and_keeps_every_library_whole(small_disk, packaging_modules, capsys):
    disk_space, strip_bundle = packaging_modules
    # enough symbols that the stripped copy needs more room than the filler leaves
    library = compiled_library(small_disk / "tinymlops" / "_internal" / "libown.so", extra_functions=2000)
    original = library.read_bytes()
    _fill(small_disk, leave_bytes=len(original) // 8)

    assert strip_bundle.main([str(small_disk / "tinymlops")]) == disk_space.NO_SPACE_EXIT
    err = capsys.readouterr().err
    assert disk_space.NO_SPACE_PHRASE in err and "No space left on device" in err
    assert library.read_bytes() == original
    assert ctypes.CDLL(str(library)).answer() == 42


def test_build_refuses_to_start_on_a_disk_without_room(small_disk):
    env = dict(os.environ, TINYMLOPS_PACKAGING_OUT=str(small_disk / "out"))
    build = subprocess.run(["bash", str(PACKAGING / "build.sh")], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=TOOL_TIMEOUT_S, check=False)
    disk_space = packaging_script("disk_space")
    assert build.returncode == disk_space.NO_SPACE_EXIT, build.stdout + build.stderr
    assert disk_space.NO_SPACE_PHRASE in build.stderr and "MB free" in build.stderr
    assert not (small_disk / "out" / "venv").exists()  # it stopped before creating anything large
