"""Flashing ends by asking the new firmware for its HELLO: here the real STM32F4 firmware answers
(the port's image on QEMU netduinoplus2, USART2 on a socket), so the board registry's profile for the
Nucleo-F446RE is checked against what the firmware itself reports. The write is a stand-in tool's
(no probe or board on this machine): tests/deploy/test_flash.py runs the real tools without a probe."""

from __future__ import annotations

import os

from app.deploy import flash
from app.deploy.boards import get_board
from tests.deploy.test_flash import ST_FLASH_OK, _stand_in
from tests.fixtures.qemu import STM32F4_DIR

# QEMU boots the image in well under a second; generous for a loaded 2-core machine.
HELLO_WAIT_S = 30.0
# The version string the port's main.c puts in HELLO.
PORT_FIRMWARE = "tinymlops-fw 0.1.0"


def test_the_flashed_firmware_answers_with_the_boards_profile(stm32f4_device, tmp_path, monkeypatch):
    _stand_in(tmp_path / "bin", "st-flash", ST_FLASH_OK)
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    image = STM32F4_DIR / "build" / "f446" / "tinymlops.elf"  # the Nucleo image the Makefile builds beside QEMU's
    result = flash.flash("nucleo-f446re", image, tool="st-flash", port=stm32f4_device.url,
                         hello_timeout=HELLO_WAIT_S)
    assert result.plan.argv[-2:] == (str(image.with_suffix(".bin")), "0x08000000")
    assert (result.firmware, result.profile) == (PORT_FIRMWARE, get_board("nucleo-f446re").profile)
