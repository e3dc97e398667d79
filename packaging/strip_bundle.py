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

from elf_requirements import is_elf  # packaging/ is on sys.path: build.sh runs this file as a script

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


def strip_bundle(bundle: Path) -> tuple[int, int, int]:
    """Strip the strippable libraries in place; returns (files, bytes before, bytes after)."""
    files = strippable(bundle)
    before = sum(p.stat().st_size for p in files)
    for start in range(0, len(files), BATCH):
        subprocess.run(["strip", "--strip-all", *map(str, files[start:start + BATCH])], check=True)
    after = sum(p.stat().st_size for p in files)
    return len(files), before, after


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path, help="the one-folder bundle (dist/tinymlops)")
    args = parser.parse_args(argv)
    if not (args.bundle / "_internal").is_dir():
        print(f"strip_bundle.py: {args.bundle} is not a PyInstaller one-folder bundle", file=sys.stderr)
        return 2
    count, before, after = strip_bundle(args.bundle)
    print(f"stripped {count} libraries: {before / 2**20:.0f} -> {after / 2**20:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
