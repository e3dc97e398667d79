"""The QEMU device fixtures: the real firmware on an emulated Cortex-M4 whose UART is a TCP server;
pyserial reaches it as `socket://127.0.0.1:PORT`. The launcher and the image builds live in
tests/fixtures/qemu.py (the conformance suite boots the same images)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.qemu import MPS2_DIR, ROOT, QemuDevice, boot, boot_stm32f4, build

PORT_DIR = MPS2_DIR
DATA = ROOT / "firmware" / "tests" / "data"
# Tensor arena per model instance of the small-arena build variant (Makefile ARENA_SIZE): above the
# factory model's need (1200 B on the C engine), so the device boots with its model, and below
# firmware/tests/data/wide_v5.tmlm's (2576 B), so pushing that model meets ARENA_TOO_SMALL. The real
# profile's 256 KB would need a > 512 KB image to exceed (arena need <= weights for dense layers):
# a second ~1 s build is cheaper in CI than a ~12 s transfer.
SMALL_ARENA = 2048


@pytest.fixture(scope="session")
def small_arena_elf() -> Path:
    """The same firmware built with SMALL_ARENA bytes of tensor arena per model instance."""
    build(f"ARENA_SIZE={SMALL_ARENA}")
    return PORT_DIR / "build" / f"arena-{SMALL_ARENA}" / "tinymlops.elf"


@pytest.fixture
def qemu_device(firmware_elf: Path) -> Iterator[QemuDevice]:
    """A freshly booted emulated device (empty model flash: it installs its factory model)."""
    yield from boot(firmware_elf)


@pytest.fixture
def small_arena_device(small_arena_elf: Path) -> Iterator[QemuDevice]:
    """A freshly booted emulated device whose tensor arenas are SMALL_ARENA bytes each."""
    yield from boot(small_arena_elf)


@pytest.fixture
def stm32f4_device(stm32f4_elf: Path) -> Iterator[QemuDevice]:
    """A freshly booted STM32F4 port on netduinoplus2 (its store empty: it installs its factory model)."""
    yield from boot_stm32f4(stm32f4_elf)
