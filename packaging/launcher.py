"""Entry script of the frozen bundle: the same `tinymlops` command as the console script.

PyInstaller needs a script rather than an entry point; keeping it outside `app/` makes the bundle
use the installed `app` package of the build venv, exactly what `pip install` would give a user.
"""

import multiprocessing
import sys

from app.cli.main import main

if __name__ == "__main__":
    # TFLM probes run in forked children; freeze_support keeps any spawn-based child from
    # re-running the CLI in a frozen executable.
    multiprocessing.freeze_support()
    sys.exit(main())
