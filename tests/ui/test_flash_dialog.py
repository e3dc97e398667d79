"""Fleet > Flash firmware: the dialog runs the flash in a worker and ends on one line, the board's
firmware version or the sentence saying what failed (no traceback, the dialog stays usable)."""

from __future__ import annotations

import os

from app.fleet.device import VirtualDevice
from app.fleet.fleet import load_factory_image
from app.fleet.serial_device import SerialDevice
from tests.deploy.test_flash import ST_FLASH_OK, _stand_in
from tests.ui.conftest import wait_for

# A stand-in tool and a virtual device on a pty: done in well under a second; generous for load.
FLASH_TIMEOUT_S = 30.0


def _dialog(qtbot):
    from PySide6.QtCore import Qt

    from app.ui.flash_dialog import FlashDialog

    dialog = FlashDialog()
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose, False)  # qtbot closes and deletes it
    qtbot.addWidget(dialog)
    dialog.show()
    return dialog


def test_without_a_flash_tool_the_dialog_says_what_to_install(qtbot, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    dialog = _dialog(qtbot)
    dialog.board.setCurrentIndex(dialog.board.findData("nucleo-f446re"))
    image = tmp_path / "fw.elf"
    image.write_bytes(b"\x7fELF")
    dialog.image.setText(str(image))
    worker = dialog.start()
    wait_for(qtbot, lambda: worker.done and dialog.flash_button.isEnabled(), FLASH_TIMEOUT_S, "the flash to end")
    assert dialog.status.text().startswith("no flash tool for nucleo-f446re is installed: install openocd")


def test_flashing_shows_progress_and_the_firmware_the_board_reports(qtbot, tmp_path, monkeypatch):
    _stand_in(tmp_path / "bin", "st-flash", ST_FLASH_OK)
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    board = SerialDevice(VirtualDevice("nucleo-7", "plant-a", "stm32f446", load_factory_image(),
                                       firmware="tinymlops-fw 0.1.0"))
    board.start()
    try:
        dialog = _dialog(qtbot)
        dialog.board.setCurrentIndex(dialog.board.findData("nucleo-f446re"))
        assert [dialog.tool.itemText(i) for i in range(dialog.tool.count())] == ["automatic", "openocd", "st-flash"]
        dialog.tool.setCurrentText("st-flash")
        image = tmp_path / "fw.bin"
        image.write_bytes(b"\0" * 64)
        dialog.image.setText(str(image))
        dialog.port.setCurrentText(board.slave_path)
        worker = dialog.start()
        wait_for(qtbot, lambda: worker.done and dialog.flash_button.isEnabled(), FLASH_TIMEOUT_S, "the flash to end")
        assert worker.failed is None, worker.failed
        assert dialog.status.text() == "fw.bin written and verified with st-flash; nucleo-7 runs tinymlops-fw 0.1.0"
        assert dialog.bar.value() == 100
    finally:
        board.stop()


def test_the_fleet_menu_opens_the_dialog(qtbot):
    from app.ui.flash_dialog import FlashDialog
    from app.ui.main_window import MainWindow
    from app.ui.settings import Settings

    win = MainWindow(Settings())  # no session: the dialog needs none
    qtbot.addWidget(win)
    fleet = next(a.menu() for a in win.menuBar().actions() if a.text() == "&Fleet")
    action = next(a for a in fleet.actions() if a.text() == "F&lash firmware…")
    action.trigger()
    dialogs = win.findChildren(FlashDialog)
    assert len(dialogs) == 1 and dialogs[0].isVisible()
    assert dialogs[0].board.currentData() == "nucleo-f446re"
    dialogs[0].reject()


def test_closing_the_dialog_while_flashing_stops_the_tool(qtbot, tmp_path, monkeypatch):
    from app.domain.errors import Cancelled

    _stand_in(tmp_path / "bin", "st-flash", ["16384/32768 bytes written\n"])
    script = tmp_path / "bin" / "st-flash"  # then hangs, like a tool stuck on a probe
    script.write_text(script.read_text().replace("sys.exit(0)", "import time\nwhile True:\n    time.sleep(1)"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin") + os.pathsep + os.environ["PATH"])
    dialog = _dialog(qtbot)
    dialog.tool.setCurrentText("st-flash")
    image = tmp_path / "fw.bin"
    image.write_bytes(b"\0" * 64)
    dialog.image.setText(str(image))
    worker = dialog.start()
    wait_for(qtbot, lambda: dialog.bar.value() > 5, FLASH_TIMEOUT_S, "the write to start")
    dialog.reject()
    assert worker.done and isinstance(worker.exception, Cancelled)
    assert "partial image" in str(worker.exception)
