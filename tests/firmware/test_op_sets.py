"""Each hardware profile's op set (app/domain/profiles.py) is what the engine on that profile really
runs: the C engine's opcode table (firmware/core/tm_engine.c) for the Cortex-M profiles, the ops the
ESP32 engine registers in its TFLM resolver (firmware/ports/esp32/main/engine_tflm.cc) for esp32.
Read from the sources, so a kernel added to one side without the other fails here."""

from __future__ import annotations

import re

from app.domain.profiles import C_ENGINE_OPS, PROFILES, TFLM_OPS
from tests.firmware.conftest import ROOT

TM_ENGINE = ROOT / "firmware" / "core" / "tm_engine.c"
ENGINE_TFLM = ROOT / "firmware" / "ports" / "esp32" / "main" / "engine_tflm.cc"
# The port each profile's firmware is built from, and so its engine.
ESP32_PROFILES = {"esp32-wroom-32"}


def c_engine_ops() -> set[str]:
    """The builtin opcodes tm_engine.c dispatches on: `enum { OP_FULLY_CONNECTED = 9, ... }`."""
    enum = re.search(r"enum\s*\{([^}]*\bOP_FULLY_CONNECTED\b[^}]*)\}", TM_ENGINE.read_text())
    assert enum, "tm_engine.c no longer has its builtin opcode enum"
    return set(re.findall(r"\bOP_(\w+)\s*=", enum.group(1)))


def tflm_resolver_ops() -> set[str]:
    """The resolver's Add* calls in register_ops(), as TFLite builtin names (Conv2D -> CONV_2D)."""
    body = re.search(r"bool register_ops\(Resolver &r\) \{(.*?)\n\}", ENGINE_TFLM.read_text(), re.S)
    assert body, "engine_tflm.cc no longer has register_ops()"
    methods = re.findall(r"\br\.Add(\w+)\(\)", body.group(1))
    return {re.sub(r"(?<!^)(?=[A-Z][a-z]|\d)", "_", name).upper() for name in methods}


def test_c_engine_profiles_run_exactly_tm_engine_ops():
    assert c_engine_ops() == set(C_ENGINE_OPS) == {"FULLY_CONNECTED", "QUANTIZE", "RESHAPE"}
    for key, profile in PROFILES.items():
        if key not in ESP32_PROFILES:
            assert profile.ops == C_ENGINE_OPS, key


def test_esp32_profile_runs_exactly_its_tflm_resolver_ops():
    registered = tflm_resolver_ops()
    count = int(re.search(r"kOpCount = (\d+);", ENGINE_TFLM.read_text()).group(1))
    assert len(registered) == count  # the resolver's capacity holds every Add* (none fails at boot)
    assert registered == set(TFLM_OPS)
    assert {"TANH", "DEQUANTIZE", "CONV_2D"} <= registered
    for key in ESP32_PROFILES:
        assert PROFILES[key].ops == TFLM_OPS
