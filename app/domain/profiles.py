"""Hardware profiles: one registry entry per board class (figures from the product brief).

Slot and arena budgets leave room for firmware, the second model slot and stacks; they are what a
model must fit, and what a virtual device of that profile enforces.
"""

from __future__ import annotations

from dataclasses import dataclass

KB = 1024
MB = 1024 * KB

# Ops the portable C engine runs (firmware/core/tm_engine.c: FULLY_CONNECTED, QUANTIZE int8->int8,
# RESHAPE; anything else is UNSUPPORTED_OP at load). It is the engine of every Cortex-M profile
# (STM32, nRF52840, the QEMU emulator), and it is exactly what the converter emits for the project's
# dense autoencoders. tests/firmware/test_op_sets.py checks this set against tm_engine.c.
C_ENGINE_OPS = frozenset({"FULLY_CONNECTED", "QUANTIZE", "RESHAPE"})
# Ops the ESP32 engine registers in its TensorFlow Lite Micro op resolver (esp-tflite-micro,
# firmware/ports/esp32/main/engine_tflm.cc, which refuses any op its resolver lacks).
# tests/firmware/test_op_sets.py checks this set against the resolver's Add* calls.
TFLM_OPS = C_ENGINE_OPS | {"DEQUANTIZE", "RELU", "LOGISTIC", "TANH", "ADD", "MUL", "SUB", "CONV_2D",
                           "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D", "SOFTMAX", "MEAN",
                           "CONCATENATION", "PAD"}


@dataclass(frozen=True)
class HardwareProfile:
    key: str
    name: str
    core: str
    clock_mhz: int
    sram: int
    flash: int
    slot_size: int
    arena_budget: int
    ops: frozenset[str]
    max_chunk: int
    emulated: bool = False


PROFILES: dict[str, HardwareProfile] = {
    p.key: p
    for p in (
        HardwareProfile("esp32-wroom-32", "ESP32-WROOM-32", "Xtensa LX6 dual", 240, 520 * KB, 4 * MB,
                        1 * MB, 96 * KB, TFLM_OPS, 4096),
        HardwareProfile("stm32f446", "STM32F446 (Nucleo)", "Cortex-M4F", 180, 128 * KB, 512 * KB,
                        192 * KB, 32 * KB, C_ENGINE_OPS, 1024),
        HardwareProfile("stm32l4r5", "STM32L4R5 (MLPerf Tiny reference)", "Cortex-M4F", 120, 640 * KB,
                        2 * MB, 512 * KB, 128 * KB, C_ENGINE_OPS, 2048),
        HardwareProfile("nrf52840", "nRF52840", "Cortex-M4F", 64, 256 * KB, 1 * MB, 320 * KB, 64 * KB,
                        C_ENGINE_OPS, 1024),
        HardwareProfile("qemu-mps2-an386", "Emulated Cortex-M4 (QEMU mps2-an386)", "Cortex-M4", 25,
                        4 * MB, 4 * MB, 1 * MB, 256 * KB, C_ENGINE_OPS, 2048, emulated=True),
    )
}


def get_profile(key: str) -> HardwareProfile:
    try:
        return PROFILES[key]
    except KeyError:
        raise KeyError(f"unknown hardware profile {key!r}; known: {', '.join(PROFILES)}") from None
