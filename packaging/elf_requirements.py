"""The Debian version bounds of libc6 and libstdc++6 that a bundle really needs, from its ELF files.

PyInstaller leaves the C library and (see tinymlops.spec) the C++ runtime to the system, so the .deb
must say how new they have to be: the newest GLIBC_x.y / GLIBCXX_3.4.n symbol version any bundled
binary asks for. Used by build.sh:  python3 packaging/elf_requirements.py DIST/tinymlops
prints e.g. "libc6 (>= 2.35), libstdc++6 (>= 12)".
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

# GLIBCXX_3.4.N -> the GCC release whose libstdc++ first provides it (Debian's libstdc++6 version
# follows the GCC version). From the libstdc++ ABI history in the GCC manual.
GLIBCXX_TO_GCC = {19: 4.9, 20: 5, 21: 5, 22: 6, 23: 7, 24: 7, 25: 8, 26: 9, 27: 9, 28: 10, 29: 11, 30: 12,
                  31: 13, 32: 13, 33: 14, 34: 15}
_NEED = re.compile(rb"Name: (GLIBCXX_3\.4(?:\.(\d+))?|GLIBC_(\d+)\.(\d+)(?:\.\d+)?)\b")
ELF_MAGIC = b"\x7fELF"


def is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == ELF_MAGIC
    except OSError:
        return False


def needed_versions(paths: list[Path]) -> tuple[tuple[int, int], int]:
    """(newest GLIBC (major, minor), newest GLIBCXX 3.4.N patch number) over all files."""
    glibc, glibcxx = (2, 17), 0
    for path in paths:
        out = subprocess.run(["readelf", "-V", "--wide", str(path)], capture_output=True, check=False).stdout
        for match in _NEED.finditer(out):
            if match.group(1).startswith(b"GLIBCXX"):
                glibcxx = max(glibcxx, int(match.group(2) or 0))
            else:
                glibc = max(glibc, (int(match.group(3)), int(match.group(4))))
    return glibc, glibcxx


def depends(bundle: Path) -> str:
    files = [p for p in bundle.rglob("*") if p.is_file() and not p.is_symlink() and is_elf(p)]
    (major, minor), patch = needed_versions(files)
    gcc = GLIBCXX_TO_GCC.get(patch, max(GLIBCXX_TO_GCC.values()) if patch > max(GLIBCXX_TO_GCC) else 4.9)
    return f"libc6 (>= {major}.{minor}), libstdc++6 (>= {gcc})"


if __name__ == "__main__":
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: elf_requirements.py BUNDLE_DIR")
    print(depends(Path(sys.argv[1])))
