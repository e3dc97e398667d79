"""Say plainly when the build or the package install lacks disk space, before it starts failing.

The build writes about 2.5 GB (the bundle, a stripped copy of TensorFlow's 790 MB library while
strip rewrites it, the .deb) and 3 GB more for a new build venv (with pip's downloads). Without a
check, a nearly full disk shows up as `strip` exiting 1 in the middle of a list of 64 file names.
Every packaging script that runs out of space exits with NO_SPACE_EXIT and a message that says how
much is free and how much is needed, so a caller (and the packaging test) can tell "this machine's
disk is full" from "the build is broken".

    python3 packaging/disk_space.py PATH NEED_MB WHAT     exit 0, or NO_SPACE_EXIT with the message
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

# Exit status of build.sh, strip_bundle.py and this script when the disk is too full; 1 stays "failed".
NO_SPACE_EXIT = 3
# The phrase every such message carries, for callers that read stderr.
NO_SPACE_PHRASE = "not enough disk space"
MB = 2**20


def existing_ancestor(path: Path) -> Path:
    """The nearest folder of PATH that exists (the output folder may not be created yet)."""
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def shortfall(path: Path, need_bytes: int, what: str) -> str | None:
    """None when the filesystem holding PATH has NEED_BYTES free; otherwise the message to show."""
    free = shutil.disk_usage(existing_ancestor(path)).free
    if free >= need_bytes:
        return None
    return (f"{NO_SPACE_PHRASE} for {what} under {path}: {free / MB:,.0f} MB free, "
            f"about {need_bytes / MB:,.0f} MB needed; free some space and run it again")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 3:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    path, need_mb, what = Path(args[0]), int(args[1]), args[2]
    message = shortfall(path, need_mb * MB, what)
    if message is None:
        return 0
    print(f"disk_space.py: {message}", file=sys.stderr)
    return NO_SPACE_EXIT


if __name__ == "__main__":
    sys.exit(main())
