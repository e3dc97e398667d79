"""Strip the symbol tables from the frozen bundle's shared libraries, except the ones strip breaks.

`.symtab`/`.strtab` serve debuggers and crash symbolisers; the dynamic loader and `dlsym` read only
`.dynsym`, so nothing at run time misses them. They are ~280 MB of the bundle, 196 MB of it in
TensorFlow's `libtensorflow_cc.so.2` alone (packaging/README.md, "Size").

PyInstaller's own `strip=True` is not used because it strips every binary: libraries that auditwheel
repaired with patchelf (the `*.libs/` copies in numpy/h5py wheels, and the extensions whose RPATH
patchelf pointed at them) no longer load after `strip` rewrites them ("ELF load command
address/offset not page-aligned", numpy's OpenBLAS). Those are left as they are.

    python3 packaging/strip_bundle.py BUNDLE_DIR      (build.sh runs it; needs binutils' strip, readelf)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

# packaging/ is on sys.path: build.sh runs this file as a script.
from disk_space import NO_SPACE_EXIT, NO_SPACE_PHRASE
from elf_requirements import is_elf

# Files per strip/readelf call: keeps the command line far below the kernel's argument limit.
BATCH = 64


def patched_by_auditwheel(path: Path) -> bool:
    """True for a library auditwheel copied into a `*.libs/` folder, or one whose RPATH/RUNPATH
    patchelf pointed at such a folder."""
    if any(part.endswith(".libs") for part in path.parent.parts):
        return True
    dynamic = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=False).stdout
    return any(("(RPATH)" in line or "(RUNPATH)" in line) and ".libs" in line for line in dynamic.splitlines())


# ELF e_machine (offset 18, 2 bytes, the file's byte order) of the machine this runs on: the bundle
# also carries firmware images for the boards it flashes (Cortex-M ELF files) that the host's strip
# does not understand and must not touch.
E_MACHINE_OFFSET = 18
HOST_MACHINES = {"x86_64": 62, "aarch64": 183, "arm64": 183}


def for_this_machine(path: Path) -> bool:
    """True when the ELF file is built for the machine running the build (not a firmware image)."""
    import platform

    with open(path, "rb") as f:
        header = f.read(E_MACHINE_OFFSET + 2)
    order = "little" if header[5:6] == b"\x01" else "big"
    wanted = HOST_MACHINES.get(platform.machine())
    return wanted is None or int.from_bytes(header[E_MACHINE_OFFSET:E_MACHINE_OFFSET + 2], order) == wanted


def strippable(bundle: Path) -> list[Path]:
    """The shared libraries under BUNDLE/_internal that strip can rewrite safely. The executable is
    never among them: PyInstaller appends its archive to it, which strip would drop."""
    found = []
    for path in sorted((bundle / "_internal").rglob("*")):
        if (path.is_file() and not path.is_symlink() and is_elf(path) and for_this_machine(path)
                and not patched_by_auditwheel(path)):
            found.append(path)
    return found


class StripFailed(Exception):
    """strip refused a batch. It writes each result to a temporary file and renames it over the
    original only when that worked, so every library is either stripped or exactly as it was."""

    def __init__(self, message: str, no_space: bool) -> None:
        super().__init__(message)
        self.no_space = no_space


# strip's own words when the temporary copy does not fit (binutils: "...: No space left on device").
ENOSPC_TEXT = "No space left on device"


def strip_bundle(bundle: Path) -> tuple[int, int, int]:
    """Strip the strippable libraries in place; returns (files, bytes before, bytes after).
    Raises StripFailed with strip's own message (not the batch's file list) when strip fails."""
    files = strippable(bundle)
    before = sum(p.stat().st_size for p in files)
    for start in range(0, len(files), BATCH):
        batch = files[start:start + BATCH]
        done = subprocess.run(["strip", "--strip-all", *map(str, batch)], capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            said = done.stderr.strip() or f"exit status {done.returncode}"
            if ENOSPC_TEXT in said:
                largest = max(p.stat().st_size for p in batch)
                raise StripFailed(f"{NO_SPACE_PHRASE} to strip {bundle}: strip writes a stripped copy beside "
                                  f"each library (up to {largest / 2**20:,.0f} MB here) before it replaces it. "
                                  f"strip said: {said}", no_space=True)
            raise StripFailed(f"strip failed on {len(batch)} libraries of {bundle}: {said}", no_space=False)
    after = sum(p.stat().st_size for p in files)
    return len(files), before, after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="the one-folder bundle (dist/tinymlops)")
    args = parser.parse_args(argv)
    if not (args.bundle / "_internal").is_dir():
        print(f"strip_bundle.py: {args.bundle} is not a PyInstaller one-folder bundle", file=sys.stderr)
        return 2
    try:
        count, before, after = strip_bundle(args.bundle)
    except StripFailed as exc:
        print(f"strip_bundle.py: {exc}", file=sys.stderr)
        return NO_SPACE_EXIT if exc.no_space else 1
    print(f"stripped {count} libraries: {before / 2**20:.0f} -> {after / 2**20:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
