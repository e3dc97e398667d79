"""Fleet > Flash firmware: write a board's firmware with its vendor tool (app/deploy/flash.py).

The operator picks the board (the registry's entries), the image (the board's prebuilt one unless
another is chosen), the tool and optionally the board's serial port; the flash runs in a worker with
a progress bar, and the dialog ends on one line: the firmware version the board answered with, or the
sentence saying which step failed. Closing the dialog while flashing stops the tool, and says so.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QVBoxLayout,
    QWidget,
)

from app.deploy.boards import BOARDS, BoardError, get_board
from app.ui import workers
from app.ui.file_row import with_browse
from app.ui.progress import JobProgress

AUTO_TOOL = "automatic"
# The port entry left empty: flash without waiting for a HELLO.
NO_PORT = ""


def flash_job(progress, cancel, board: str, image: str | None, tool: str | None, port: str | None):
    """The worker's job: app.deploy.flash.flash with its typed steps shown as percent and text."""
    from app.deploy.flash import flash

    return flash(board, image, tool, port, progress=lambda step: progress(step.percent, step.text), cancel=cancel)


class FlashDialog(QDialog):
    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Flash firmware")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.worker: workers.Worker | None = None
        self.board = QComboBox()
        for board in BOARDS.values():
            self.board.addItem(f"{board.name} ({board.key})", board.key)
        self.image = QLineEdit()
        row = with_browse(self.image, self._browse)
        self.tool = QComboBox()
        self.port = QComboBox()
        self.port.setEditable(True)
        self.port.addItem(NO_PORT)
        from app.transport.discovery import list_serial_ports

        for info in list_serial_ports():
            self.port.addItem(info.device)
        self.port.setToolTip("The board's serial port: after flashing, wait for the firmware's HELLO and "
                             "show its version (empty: do not wait)")
        form = QFormLayout()
        form.addRow("Board", self.board)
        form.addRow("Image", row)
        form.addRow("Tool", self.tool)
        form.addRow("Serial port", self.port)
        self.bar = QProgressBar()
        self.bar.setRange(0, 100)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        self.flash_button = self.buttons.addButton("Flash", QDialogButtonBox.ButtonRole.ActionRole)
        self.flash_button.clicked.connect(self.start)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.bar)
        layout.addWidget(self.status)
        layout.addWidget(self.buttons)
        self.board.currentIndexChanged.connect(self._board_changed)
        self._board_changed()
        self.resize(560, self.sizeHint().height())

    def _board_changed(self) -> None:
        board = get_board(self.board.currentData())
        self.tool.clear()
        self.tool.addItem(AUTO_TOOL)
        for tool in board.tools:
            self.tool.addItem(tool.name)
        try:
            self.image.setPlaceholderText(str(board.default_image()))
        except BoardError:
            self.image.setPlaceholderText(f"no prebuilt image for {board.key}: choose one")

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Firmware image", "", "Firmware (*.elf *.hex *.bin);;All (*)")
        if path:
            self.image.setText(path)

    def start(self) -> workers.Worker:
        """Flash with the dialog's choices in a worker; the dialog shows its progress and outcome."""
        tool = self.tool.currentText()
        port = self.port.currentText().strip()
        self.flash_button.setEnabled(False)
        self.bar.setValue(0)
        self.status.setText("")
        self.worker = workers.run_in_thread(
            flash_job, self.board.currentData(), self.image.text().strip() or None,
            None if tool == AUTO_TOOL else tool, port or None, name="flash-firmware",
            on_progress=self._progress, on_result=self._done, on_error=self._failed,
            on_finished=lambda: self.flash_button.setEnabled(True))
        return self.worker

    def _progress(self, step) -> None:
        if isinstance(step, JobProgress):
            self.bar.setValue(step.percent)
            self.status.setText(step.text)

    def _done(self, result) -> None:
        self.bar.setValue(100)
        text = f"{result.plan.image.name} written and verified with {result.plan.tool.name}"
        if result.firmware is not None:
            text += f"; {result.device_id} runs {result.firmware}"
        self.status.setText(text)

    def _failed(self, exc: BaseException) -> None:
        self.status.setText(workers.error_text(exc))

    def reject(self) -> None:
        if self.worker is not None and not self.worker.done:
            self.worker.cancel()  # the job stops the tool; its Cancelled says the image may be partial
            self.worker.wait()
        super().reject()
