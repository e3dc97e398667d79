"""The real thing: build the frozen bundle and the .deb, start the bundle headless, and (as root)
install, smoke-test and remove the package. A bundle that was never started in CI will not start
on a plant-floor laptop.

Measured on the project's 2-core machine kind: build 74-115 s with a warm build venv, 157 s from
scratch (pip cache warm); smoke test with .deb install/remove ~30 s; the whole test ~140 s (309 s and
817 s on 2026-12-04 with the machine at load 8-17, the second with the build's PyInstaller step at 510 s). That fits
CI's budget, so CI runs it every time (figures: packaging/README.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.packaging.helpers import packaging_script

ROOT = Path(__file__).resolve().parents[2]
# its exit status that build.sh passes on for "this machine's disk is too full", and what it then says
DISK_SPACE = packaging_script("disk_space")
SMOKE_TEST = packaging_script("smoke_test")  # the same check the test runs as a script, read for its .deb
# First build on a fresh machine: venv + ~700 MB of wheels + PyInstaller analysis of TensorFlow.
BUILD_TIMEOUT_S = 1800
# Three smoke runs (bundle, installed) plus dpkg -i / -r of a 1 GB package.
SMOKE_TIMEOUT_S = 1200
# The .deb's Installed-Size ceiling: 896 MB measured 2026-12-04 (issue 17 item 5: 1,228 MB before the
# strip step and the spec's exclusions), plus room for dependency updates; losing either fails here.
INSTALLED_SIZE_LIMIT_MB = 960


def _installed_size_mb() -> float:
    deb = SMOKE_TEST.DEFAULT_OUT / f"tinymlops_{SMOKE_TEST.project_version()}_amd64.deb"
    return SMOKE_TEST.installed_size_kib(deb) / 1024


@pytest.mark.slow
@pytest.mark.timeout(BUILD_TIMEOUT_S + SMOKE_TIMEOUT_S)
def test_bundle_and_deb_build_and_pass_the_headless_smoke_test():
    build = subprocess.run(["bash", str(ROOT / "packaging" / "build.sh")], cwd=ROOT, capture_output=True, text=True,
                           timeout=BUILD_TIMEOUT_S, check=False)
    if build.returncode == DISK_SPACE.NO_SPACE_EXIT and DISK_SPACE.NO_SPACE_PHRASE in build.stderr:
        # this machine's disk, not the build: said with the figures
        pytest.skip(next(line for line in build.stderr.splitlines() if DISK_SPACE.NO_SPACE_PHRASE in line))
    assert build.returncode == 0, build.stdout[-4000:] + build.stderr[-8000:]
    assert "== done" in build.stdout
    assert _installed_size_mb() <= INSTALLED_SIZE_LIMIT_MB

    args = [sys.executable, str(ROOT / "packaging" / "smoke_test.py")]
    if os.geteuid() == 0:  # CI runs as root: install and remove the .deb as well
        args.append("--deb")
    smoke = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S, check=False)
    print(build.stdout[-600:], smoke.stdout, sep="\n")  # the figures, in pytest -rA / CI logs
    assert smoke.returncode == 0, smoke.stdout + smoke.stderr[-4000:]
    assert "SMOKE TEST PASSED" in smoke.stdout
    skipped = [line for line in smoke.stdout.splitlines() if "  SKIP  " in line]
    if skipped:  # the bundle passed; what this machine could not run is reported, not passed over
        pytest.skip("bundle built and smoke-tested; not run here: " + "; ".join(skipped))
