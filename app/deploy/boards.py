"""The board registry: every board the app can flash firmware onto, one entry per board.

Like esptool's `targets/`, everything that differs between boards lives here and nowhere else: the
MCU, the hardware profile the firmware reports (app/domain/profiles.py), the prebuilt image and the
address it goes to, and for each flash tool the exact arguments that write it, verify what was
written against the file and restart the board. `app.deploy.flash` only fills in the placeholders
`{image}`, `{address}` and `{port}`; adding a board is adding an entry, with a test of its command
lines in tests/deploy/test_flash.py.

Images are looked for first where the installers put them (`resources/firmware/<board>/`, see
packaging/tinymlops.spec), then where `make -C firmware/ports/<port>` leaves them in a source tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from app.domain.errors import TinyMLOpsError
from app.domain.paths import resources_dir

# The source tree's firmware/ (absent in an installed bundle, where resources/firmware/ is used).
FIRMWARE_SRC = Path(__file__).resolve().parents[2] / "firmware"
# Sub-directory of resources/ the installers ship prebuilt images in, one folder per board key.
SHIPPED_DIR = "firmware"


class BoardError(TinyMLOpsError):
    """Unknown board, or a board whose image is not there."""


@dataclass(frozen=True)
class FlashTool:
    """One way to write a board: the program's name on PATH and its argument template.

    `verifies` says how the write is checked against the image (named, not assumed: a tool that
    cannot verify is not listed). `package` is what to install when the program is missing."""

    name: str
    program: str
    args: tuple[str, ...]
    verifies: str
    package: str
    formats: tuple[str, ...]  # image file suffixes it takes, preferred first
    needs_port: bool = False


@dataclass(frozen=True)
class Board:
    key: str
    name: str
    mcu: str
    profile: str
    tools: tuple[FlashTool, ...]
    image: str  # file name inside the board's image folder
    address: int
    build_dir: str  # where `make` leaves the image in a source tree, relative to firmware/
    build_hint: str  # the command that builds it
    baud: int  # the firmware's serial line rate, for the HELLO after flashing (its port's define)
    note: str = ""  # why the image may be missing, added to the error that says so

    def shipped_image(self) -> Path:
        return resources_dir() / SHIPPED_DIR / self.key / self.image

    def built_image(self) -> Path:
        return FIRMWARE_SRC / self.build_dir / self.image

    def default_image(self) -> Path:
        """The prebuilt image for this board: the shipped one, else the one built in this tree.
        BoardError with the command that builds it when there is neither."""
        for path in (self.shipped_image(), self.built_image()):
            if path.is_file():
                return path
        raise BoardError(f"no prebuilt firmware image for {self.key}: neither {self.shipped_image()} nor "
                         f"{self.built_image()} exists; build it with `{self.build_hint}` or pass --image"
                         + (f" ({self.note})" if self.note else ""))

    def tool(self, name: str) -> FlashTool:
        for tool in self.tools:
            if tool.name == name:
                return tool
        raise BoardError(f"{self.key} is not flashed with {name!r}; its tools: "
                         f"{', '.join(t.name for t in self.tools)}")


# OpenOCD: the ST-LINK on the Nucleo board; `program` erases the sectors the ELF covers, writes,
# `verify` reads the flash back and compares it with the file, `reset` starts the new firmware.
# The path is in Tcl braces so one with spaces stays one word.
_OPENOCD_NUCLEO_F4 = FlashTool(
    "openocd", "openocd",
    ("-f", "board/st_nucleo_f4.cfg", "-c", "program {{{image}}} verify reset exit"),
    verifies="openocd `program ... verify` reads the flash back and compares it with the image",
    package="openocd (apt-get install openocd)", formats=(".elf", ".hex"))
# st-flash (stlink-tools) writes a raw .bin at an address; its `write` always reads back and
# compares ("Flash written and verified") and fails otherwise; --reset starts the new firmware.
_ST_FLASH = FlashTool(
    "st-flash", "st-flash", ("--reset", "write", "{image}", "{address}"),
    verifies="st-flash `write` reads every page back and compares it with the image",
    package="stlink-tools (apt-get install stlink-tools)", formats=(".bin",))
# esptool >= 5 (PyPI, the `flash` extra): the merged image (bootloader, partition table, app) at 0x0;
# `write-flash` always compares the MD5 of each written region, computed by the chip, with the image's.
_ESPTOOL = FlashTool(
    "esptool", "esptool",
    ("--chip", "esp32", "--port", "{port}", "--baud", "460800", "--after", "hard-reset", "write-flash",
     "--flash-mode", "dio", "--flash-size", "4MB", "{address}", "{image}"),
    verifies="esptool `write-flash` checks the MD5 of the written flash, computed on the chip, against the image",
    package="esptool (pip install 'tinymlops-operator[flash]' or pip install esptool)", formats=(".bin",),
    needs_port=True)

BOARDS: dict[str, Board] = {
    b.key: b
    for b in (
        # The STM32F4 port's Nucleo-F446RE image (firmware/ports/stm32f4, f446.ld: sectors 0-4 from
        # 0x08000000; the model store in sectors 5-7 is not in the image, so flashing keeps the models).
        Board("nucleo-f446re", "ST Nucleo-F446RE", "STM32F446RE (Cortex-M4F, 180 MHz, 512 KB flash)",
              "stm32f446", (_OPENOCD_NUCLEO_F4, _ST_FLASH), "tinymlops.elf", 0x0800_0000,
              "ports/stm32f4/build/f446", "make -C firmware/ports/stm32f4", baud=115200),
        # The ESP32 port is not built here (firmware/ports/esp32/README.md: no toolchain in the
        # registries this project uses): the entry holds its exact command for an image built with
        # ESP-IDF (`esptool merge-bin` of the build's bootloader, partition table and app).
        Board("esp32-devkitc", "Espressif ESP32-DevKitC (ESP32-WROOM-32)",
              "ESP32 (Xtensa LX6 dual, 240 MHz, 4 MB flash)", "esp32-wroom-32", (_ESPTOOL,),
              "tinymlops-merged.bin", 0x0, "ports/esp32/build",
              "idf.py build in firmware/ports/esp32, then esptool merge-bin into build/tinymlops-merged.bin",
              baud=921600,
              note="the ESP32 port is not built in this repository: firmware/ports/esp32/README.md"),
    )
}

def get_board(key: str) -> Board:
    try:
        return BOARDS[key]
    except KeyError:
        raise BoardError(f"unknown board {key!r}; known: {', '.join(BOARDS)}") from None
