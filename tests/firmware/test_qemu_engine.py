"""The engine's Cortex-M4 build on the emulated Cortex-M4 (QEMU mps2-an386), against the real TFLM:
the engine test image (firmware/ports/qemu-mps2-an386/bench_engine.c) runs every model of
firmware/tests/data/models.txt the C engine supports on inputs whose TFLM outputs
firmware/tests/gen_models.py recorded, and reports the mismatching output bytes per model. On this
core the build selects the DSP (SMLAD) kernel; the host's ctest (firmware/tests/test_engine.c)
checks the portable C kernel on the same data."""

from __future__ import annotations

import struct
import subprocess
import threading
from pathlib import Path

from tests.firmware.conftest import DATA, PORT_DIR
from tests.fixtures.qemu import ICOUNT_SHIFT, build

ENGINE_ELF = PORT_DIR / "build" / "bench_engine.elf"
# The image runs ~20 M emulated instructions (24 MLPerf AD inferences dominate): about a second on
# an idle host; a loaded CI machine gets this long before QEMU is stopped and the test fails.
ENGINE_RUN_TIMEOUT_S = 120


def run_engine_image(elf: Path) -> dict[str, dict[str, str]]:
    """Boot `elf` with UART0 on stdout and collect its "engine-bench model=..." lines, by model."""
    proc = subprocess.Popen(["qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none",
                             "-icount", f"shift={ICOUNT_SHIFT}", "-serial", "stdio", "-kernel", str(elf)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    watchdog = threading.Timer(ENGINE_RUN_TIMEOUT_S, proc.kill)  # then readline() meets EOF
    watchdog.start()
    results: dict[str, dict[str, str]] = {}
    try:
        for line in proc.stdout or ():
            if line.startswith("engine-bench done"):
                return results
            if line.startswith("engine-bench model="):
                fields = dict(part.split("=", 1) for part in line.split()[1:])
                results[fields["model"]] = fields
        raise AssertionError(f"the engine image stopped before it finished (got {sorted(results)})")
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()


def _engine_models() -> dict[str, int]:
    """The models the C engine runs (models.txt minus TANH), with the cases their .io file records."""
    found = {}
    for line in (DATA / "models.txt").read_text().splitlines():
        name, _arena, ops = line.split()
        if "TANH" not in ops.split(","):
            found[name] = struct.unpack_from("<I", (DATA / f"{name}.io").read_bytes(), 4)[0]
    return found


def test_dsp_kernel_is_bit_exact_with_tflm_on_every_model():
    build("bench-engine")
    results = run_engine_image(ENGINE_ELF)
    expected = _engine_models()
    assert set(results) == set(expected)
    assert {"mlperf_ad", "ae37_odd"} <= set(expected)  # the MLPerf AD model and the odd shapes
    for name, cases in expected.items():
        r = results[name]
        assert r["kernel"] == "dsp-smlad", r  # the Cortex-M4 build selected the DSP kernel
        assert r["load"] == "0", r
        assert int(r["cases"]) == cases > 0, r
        assert r["mismatches"] == "0", r
