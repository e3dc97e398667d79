"""Flashing firmware from the app (app/deploy/flash.py, the board registry, `tinymlops firmware`).

The command lines are checked exactly; the real openocd and st-flash run where installed (no probe is
connected here, so they fail, and that failure must come back as a sentence). A successful write
cannot be provoked without a board: those tests put a stand-in tool first on PATH that prints what the
real one prints, and the HELLO comes from a virtual device on a real pty.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from app.cli.main import main
from app.deploy import boards, flash
from app.deploy.boards import BOARDS, BoardError, get_board
from app.deploy.flash import FlashError, FlashStage, plan_flash
from app.domain.profiles import PROFILES
from app.fleet.device import VirtualDevice
from app.fleet.fleet import load_factory_image
from app.fleet.serial_device import SerialDevice

# Generous: a virtual device on a pty answers GET_INFO in milliseconds, even on a loaded machine.
HELLO_WAIT_S = 20.0
# The "nobody answers" case waits this long for a HELLO that never comes.
SILENT_WAIT_S = 2.0


def _everywhere(program: str) -> str:
    return f"/usr/bin/{program}"


def _nowhere(program: str) -> None:
    return None


@pytest.fixture
def build(tmp_path: Path) -> Path:
    """An image set as the Makefile leaves it: tinymlops.elf and its .bin."""
    (tmp_path / "my fw").mkdir()
    for name in ("tinymlops.elf", "tinymlops.bin"):
        (tmp_path / "my fw" / name).write_bytes(b"\x7fELF" if name.endswith("elf") else b"\0" * 64)
    return tmp_path / "my fw"


def test_nucleo_command_lines_are_exact(build):
    elf, bin_ = build / "tinymlops.elf", build / "tinymlops.bin"
    plan = plan_flash("nucleo-f446re", elf, which=_everywhere)
    assert plan.tool.name == "openocd"  # the registry's first choice when both are installed
    assert plan.argv == ("openocd", "-f", "board/st_nucleo_f4.cfg", "-c", f"program {{{elf}}} verify reset exit")
    plan = plan_flash("nucleo-f446re", elf, tool="st-flash", which=_everywhere)
    # st-flash takes the raw .bin built beside the ELF, at the start of flash
    assert plan.argv == ("st-flash", "--reset", "write", str(bin_), "0x08000000")
    only_st = plan_flash("nucleo-f446re", bin_, which=lambda p: _everywhere(p) if p == "st-flash" else None)
    assert only_st.argv == plan.argv


def test_esp32_command_line_is_exact_and_needs_a_port(build):
    image = build / "tinymlops-merged.bin"
    image.write_bytes(b"\xe9" + b"\0" * 63)
    plan = plan_flash("esp32-devkitc", image, port="/dev/ttyUSB0", which=_everywhere)
    assert plan.argv == ("esptool", "--chip", "esp32", "--port", "/dev/ttyUSB0", "--baud", "460800", "--after",
                         "hard-reset", "write-flash", "--flash-mode", "dio", "--flash-size", "4MB", "0x00000000",
                         str(image))
    with pytest.raises(FlashError, match="pass --port"):
        plan_flash("esp32-devkitc", image, which=_everywhere)


def test_every_board_names_a_profile_and_every_tool_is_understood():
    for board in BOARDS.values():
        assert board.profile in PROFILES, board.key
        for tool in board.tools:
            assert tool.name in flash._VERIFIED and tool.name in flash._FAILURES and tool.name in flash._MARKERS
            assert tool.formats and tool.verifies


def test_each_boards_line_rate_is_its_firmwares():
    firmware = Path(boards.FIRMWARE_SRC)
    defines = {"nucleo-f446re": (firmware / "ports/stm32f4/usart2.h", "USART2_BAUD"),
               "esp32-devkitc": (firmware / "ports/esp32/main/board.h", "BOARD_UART_BAUD")}
    assert set(defines) == set(BOARDS)
    for key, (header, name) in defines.items():
        value = re.search(rf"#define {name} (\d+)", header.read_text()).group(1)
        assert get_board(key).baud == int(value), key


def test_no_installed_tool_is_a_sentence_naming_the_packages(build):
    with pytest.raises(FlashError) as err:
        plan_flash("nucleo-f446re", build / "tinymlops.elf", which=_nowhere)
    assert "apt-get install openocd" in str(err.value) and "apt-get install stlink-tools" in str(err.value)
    with pytest.raises(FlashError, match="st-flash is not installed"):
        plan_flash("nucleo-f446re", build / "tinymlops.elf", tool="st-flash", which=_nowhere)


def test_cli_without_tools_says_so_and_exits_2(build, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code = main(["firmware", "flash", "--board", "nucleo-f446re", "--image", str(build / "tinymlops.elf")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: no flash tool for nucleo-f446re is installed") and "Traceback" not in err


def test_bad_board_tool_and_image_are_sentences(build, tmp_path, monkeypatch):
    with pytest.raises(BoardError, match="unknown board 'nucleo-f999'"):
        plan_flash("nucleo-f999", which=_everywhere)
    with pytest.raises(BoardError, match="not flashed with 'esptool'"):
        plan_flash("nucleo-f446re", tool="esptool", which=_everywhere)
    with pytest.raises(FlashError, match="does not exist"):
        plan_flash("nucleo-f446re", tmp_path / "nope.elf", which=_everywhere)
    (build / "tinymlops.bin").unlink()
    with pytest.raises(FlashError, match=r"st-flash takes \.bin images"):
        plan_flash("nucleo-f446re", build / "tinymlops.elf", tool="st-flash", which=_everywhere)
    monkeypatch.setattr(boards, "FIRMWARE_SRC", tmp_path / "no-tree")
    with pytest.raises(BoardError, match="make -C firmware/ports/stm32f4"):
        get_board("nucleo-f446re").default_image()


@pytest.mark.parametrize("tool", ["openocd", "st-flash"])
def test_real_tool_without_a_probe_is_a_sentence(tool, build, capsys):
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (apt-get install openocd stlink-tools)")
    with pytest.raises(FlashError) as err:
        flash.flash("nucleo-f446re", build / "tinymlops.elf", tool=tool)
    assert str(err.value) == (f"{tool}: no ST-LINK probe found: connect the board's USB (ST-LINK) connector, "
                              "check the cable, and try again")
    code = main(["firmware", "flash", "--board", "nucleo-f446re", "--tool", tool, "--image",
                 str(build / "tinymlops.elf")])
    out = capsys.readouterr()
    assert code == 2 and out.err == f"error: {err.value}\n" and out.out == ""


def test_real_esptool_on_a_missing_port_is_a_sentence(build, tmp_path):
    import importlib.util

    if shutil.which("esptool") is None and importlib.util.find_spec("esptool") is None:
        pytest.skip("esptool not installed (pip install 'tinymlops-operator[flash]')")
    image = build / "tinymlops-merged.bin"
    image.write_bytes(b"\xe9" + b"\0" * 63)
    missing = str(tmp_path / "ttyUSB-gone")
    with pytest.raises(FlashError) as err:
        flash.flash("esp32-devkitc", image, port=missing)
    assert str(err.value) == ("esptool: the serial port could not be opened: check --port and that the board "
                              "is plugged in")


def _stand_in(directory: Path, name: str, lines: list[str], status: int = 0) -> None:
    """A program called `name` that prints `lines` (as the real tool does) and exits with `status`."""
    directory.mkdir(exist_ok=True)
    script = directory / name
    script.write_text(f"#!{sys.executable}\n" + textwrap.dedent(f"""\
        import sys
        for line in {lines!r}:
            sys.stdout.write(line)
            sys.stdout.flush()
        sys.exit({status})
        """))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)


# What st-flash 1.7 prints for a write (its progress lines end in a carriage return).
ST_FLASH_OK = ["st-flash 1.7.0\n", "16384/32768 bytes written\r", "32768/32768 bytes written\n",
               "INFO common.c: Starting verification of write complete\n",
               "INFO common.c: Flash written and verified! jolly good!\n"]


@pytest.fixture
def virtual_board():
    """A device reporting the Nucleo's profile on a fresh pty, as the flashed firmware would."""
    device = VirtualDevice("nucleo-1", "plant-a/line-1", "stm32f446", load_factory_image(),
                           firmware="tinymlops-fw 0.1.0")
    serial = SerialDevice(device)
    serial.start()
    yield serial
    serial.stop()


def test_flash_reports_progress_and_the_firmware_the_board_answers_with(build, tmp_path, monkeypatch, virtual_board):
    _stand_in(tmp_path / "bin", "st-flash", ST_FLASH_OK)
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    steps = []
    result = flash.flash("nucleo-f446re", build / "tinymlops.bin", tool="st-flash", port=virtual_board.slave_path,
                         progress=steps.append, hello_timeout=HELLO_WAIT_S)
    assert result.verified and result.firmware == "tinymlops-fw 0.1.0" and result.device_id == "nucleo-1"
    stages = [s.stage for s in steps]
    assert stages[0] is FlashStage.PREPARE and stages[-1] is FlashStage.DONE
    assert FlashStage.WRITE in stages and FlashStage.VERIFY in stages and FlashStage.HELLO in stages
    percents = [s.percent for s in steps]
    assert percents == sorted(percents) and percents[-1] == 100
    assert [s.percent for s in steps if s.stage is FlashStage.WRITE] == [40, 75]  # half-way, then all written


def test_cli_lists_boards_and_prints_the_command_of_a_dry_run(build, tmp_path, monkeypatch, capsys):
    assert main(["firmware", "list", "--json"]) == 0
    listed = {row["board"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(listed) == set(BOARDS) and listed["nucleo-f446re"]["profile"] == "stm32f446"
    assert listed["nucleo-f446re"]["tools"] == ["openocd", "st-flash"]
    _stand_in(tmp_path / "bin", "st-flash", [], status=1)  # never run by a dry run
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    image = build / "tinymlops.bin"
    assert main(["firmware", "flash", "--board", "nucleo-f446re", "--image", str(image), "--dry-run"]) == 0
    assert capsys.readouterr().out == f"st-flash --reset write '{image}' 0x08000000\n"


def test_a_board_that_answers_with_another_profile_is_refused(build, tmp_path, monkeypatch):
    _stand_in(tmp_path / "bin", "st-flash", ST_FLASH_OK)
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    other = SerialDevice(VirtualDevice("esp-1", "plant-a", "esp32-wroom-32", load_factory_image()))
    other.start()
    try:
        with pytest.raises(FlashError, match="reports profile 'esp32-wroom-32', not 'stm32f446'"):
            flash.flash("nucleo-f446re", build / "tinymlops.bin", tool="st-flash", port=other.slave_path,
                        hello_timeout=HELLO_WAIT_S)
    finally:
        other.stop()


def test_no_hello_after_a_verified_write_is_an_error(build, tmp_path, monkeypatch):
    _stand_in(tmp_path / "bin", "st-flash", ST_FLASH_OK)
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    master, slave = os.openpty()  # a port nobody answers on
    try:
        with pytest.raises(FlashError, match="written and verified, but no HELLO came"):
            flash.flash("nucleo-f446re", build / "tinymlops.bin", tool="st-flash", port=os.ttyname(slave),
                        hello_timeout=SILENT_WAIT_S)
    finally:
        os.close(master)
        os.close(slave)


def test_a_tool_that_exits_0_without_verifying_is_not_a_success(build, tmp_path, monkeypatch):
    _stand_in(tmp_path / "bin", "st-flash", ["2/2 pages written\n"])
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    with pytest.raises(FlashError, match="without reporting a verified write"):
        flash.flash("nucleo-f446re", build / "tinymlops.bin", tool="st-flash")


def test_a_verify_mismatch_says_flash_again(build, tmp_path, monkeypatch):
    _stand_in(tmp_path / "bin", "openocd", ["** Programming Started **\n", "** Programming Finished **\n",
                                            "** Verify Started **\n", "Error: checksum mismatch - attempting binary "
                                            "compare\n", "** Verify Failed **\n"], status=1)
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    with pytest.raises(FlashError, match=r"verify failed.*flash again"):
        flash.flash("nucleo-f446re", build / "tinymlops.elf", tool="openocd")


def test_cancel_stops_the_tool_and_says_the_image_may_be_partial(build, tmp_path, monkeypatch):
    from app.domain.errors import Cancelled

    _stand_in(tmp_path / "bin", "st-flash", ["1/2 pages written\n"])
    # the stand-in then waits on its stdin forever, like a tool stuck on a probe
    script = tmp_path / "bin" / "st-flash"
    script.write_text(script.read_text().replace("sys.exit(0)", "import time\nwhile True:\n    time.sleep(1)"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    cancel = threading.Event()

    def on_step(step) -> None:
        if step.stage is FlashStage.WRITE:
            cancel.set()

    with pytest.raises(Cancelled, match="partial image"):
        flash.flash("nucleo-f446re", build / "tinymlops.bin", tool="st-flash", progress=on_step, cancel=cancel)


def test_a_hung_tool_is_stopped_at_the_deadline_and_says_the_image_may_be_partial(build, tmp_path, monkeypatch):
    _stand_in(tmp_path / "bin", "st-flash", ["16384/32768 bytes written\n"])
    script = tmp_path / "bin" / "st-flash"  # then never ends, like a tool stuck on a probe
    script.write_text(script.read_text().replace("sys.exit(0)", "import time\nwhile True:\n    time.sleep(1)"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    plan = plan_flash("nucleo-f446re", build / "tinymlops.bin", tool="st-flash")
    with pytest.raises(FlashError, match="did not finish within 1 s and was stopped: the board may hold a partial"):
        flash.run_tool(plan, timeout=1.0)  # the tool never ends: no machine is fast enough to beat this
