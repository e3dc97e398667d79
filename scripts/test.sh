#!/usr/bin/env bash
# The whole test suite, installing what it needs: lint, firmware host tests and QEMU image, pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/bootstrap.sh"
cd "$ROOT"
export QT_QPA_PLATFORM=offscreen
export TF_CPP_MIN_LOG_LEVEL=2
# the firmware fetches its Ed25519 sources with pip at build time (firmware/deps): the venv's pip
export PYTHON="$VENV/bin/python"
echo "== ruff"
"$VENV/bin/ruff" check .
if [ -f firmware/CMakeLists.txt ]; then
    echo "== firmware: host build and ctest"
    cmake -S firmware -B firmware/build-host -DCMAKE_BUILD_TYPE=Release >/dev/null
    cmake --build firmware/build-host -j2 >/dev/null
    ctest --test-dir firmware/build-host --output-on-failure
fi
if [ -f firmware/ports/qemu-mps2-an386/Makefile ]; then
    echo "== firmware: Cortex-M4 image for QEMU"
    make -s -C firmware/ports/qemu-mps2-an386
fi
if [ -f firmware/ports/stm32f4/Makefile ]; then
    echo "== firmware: STM32F4 images (Nucleo-F446RE, QEMU netduinoplus2)"
    make -s -C firmware/ports/stm32f4
fi
echo "== pytest"
# Most tests wait on real time (virtual devices stream at 3200 Hz, recordings last seconds, QEMU boots):
# three workers overlap those waits on 2 cores without starving the CPU-bound ones (training, the
# bundle build) (pytest-xdist; work stealing evens out the long tests). TINYMLOPS_TEST_WORKERS=0 runs everything in this one process.
WORKERS="${TINYMLOPS_TEST_WORKERS:-3}"
if [ "$WORKERS" = "0" ]; then XDIST=(); else XDIST=(-n "$WORKERS" --dist worksteal); fi
"$VENV/bin/python" -m pytest -q "${XDIST[@]}" --durations=25 "$@"
