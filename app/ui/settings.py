"""Operator settings in QSettings (broker URL and credentials, default transport, data directory),
and the dialog that edits them."""

from __future__ import annotations

import os
from dataclasses import dataclass

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QWidget,
)

ORGANIZATION = "tinymlops"
APPLICATION = "operator"
TRANSPORTS = ("mqtt", "serial")
BAUDS = (9600, 57600, 115200, 230400, 460800, 921600)
DEFAULT_BAUD = 115200


def qsettings() -> QSettings:
    return QSettings(ORGANIZATION, APPLICATION)


@dataclass
class Settings:
    """Broker URL empty means the embedded default (in-process broker + virtual fleet)."""

    broker_url: str = ""
    username: str = ""
    password: str = ""
    transport: str = "mqtt"
    baud: int = DEFAULT_BAUD
    data_dir: str = ""

    @classmethod
    def load(cls, store: QSettings | None = None) -> Settings:
        s = store or qsettings()
        transport = str(s.value("deploy/transport", "mqtt"))
        try:
            baud = int(s.value("deploy/baud", DEFAULT_BAUD))
        except (TypeError, ValueError):
            baud = DEFAULT_BAUD
        return cls(broker_url=str(s.value("broker/url", "") or ""), username=str(s.value("broker/username", "") or ""),
                   password=str(s.value("broker/password", "") or ""),
                   transport=transport if transport in TRANSPORTS else "mqtt", baud=baud,
                   data_dir=str(s.value("data/dir", "") or ""))

    def save(self, store: QSettings | None = None) -> None:
        s = store or qsettings()
        s.setValue("broker/url", self.broker_url)
        s.setValue("broker/username", self.username)
        s.setValue("broker/password", self.password)
        s.setValue("deploy/transport", self.transport)
        s.setValue("deploy/baud", int(self.baud))
        s.setValue("data/dir", self.data_dir)
        s.sync()

    def apply_data_dir(self) -> None:
        """Point the registry, datasets and history at the chosen directory (before they open)."""
        from app.domain.paths import DATA_DIR_ENV

        if self.data_dir:
            os.environ[DATA_DIR_ENV] = self.data_dir


def check_broker_url(text: str) -> str | None:
    """None when `text` is empty (embedded default) or a valid broker URL, else the problem."""
    if not text.strip():
        return None
    from app.domain.errors import LinkError
    from app.transport.urls import parse_broker_url

    try:
        parse_broker_url(text)
    except LinkError as exc:
        return str(exc)
    return None


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.settings = settings
        form = QFormLayout(self)
        self.url = QLineEdit(settings.broker_url)
        self.url.setPlaceholderText("empty: embedded broker + virtual fleet;  e.g. mqtt://broker.plant:1883")
        self.url.setToolTip("MQTT broker of the plant. Leave empty for the built-in demo (a broker in this "
                            "program and a virtual fleet).")
        self.user = QLineEdit(settings.username)
        self.user.setToolTip("Broker user name, when the broker asks for one")
        self.password = QLineEdit(settings.password)
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setToolTip("Broker password (kept in this user's settings file)")
        self.transport = QComboBox()
        self.transport.addItems(["MQTT (whole line at once)", "USB serial (laptop next to the machine)"])
        self.transport.setCurrentIndex(TRANSPORTS.index(settings.transport))
        self.baud = QComboBox()
        for b in BAUDS:
            self.baud.addItem(str(b), b)
        self.baud.setCurrentIndex(max(0, self.baud.findData(settings.baud)))
        dir_row = QWidget()
        row = QHBoxLayout(dir_row)
        row.setContentsMargins(0, 0, 0, 0)
        self.data_dir = QLineEdit(settings.data_dir)
        self.data_dir.setPlaceholderText("default: the platform's user data folder")
        self.data_dir.setToolTip("Where the model registry, datasets and deployment history live "
                                 "(takes effect at the next start)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row.addWidget(self.data_dir, 1)
        row.addWidget(browse)
        self.problem = QLabel("")
        self.problem.setStyleSheet("color: #c62828")
        self.problem.setWordWrap(True)
        form.addRow("Broker URL", self.url)
        form.addRow("User", self.user)
        form.addRow("Password", self.password)
        form.addRow("Default transport", self.transport)
        form.addRow("Serial baud rate", self.baud)
        form.addRow("Data directory", dir_row)
        form.addRow(self.problem)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.url.textChanged.connect(lambda t: self.problem.setText(check_broker_url(t) or ""))
        self.resize(560, 0)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Data directory", self.data_dir.text())
        if path:
            self.data_dir.setText(path)

    def accept(self) -> None:
        problem = check_broker_url(self.url.text())
        if problem:
            self.problem.setText(problem)
            return
        super().accept()

    def result_settings(self) -> Settings:
        return Settings(broker_url=self.url.text().strip(), username=self.user.text().strip(),
                        password=self.password.text(), transport=TRANSPORTS[self.transport.currentIndex()],
                        baud=int(self.baud.currentData()), data_dir=self.data_dir.text().strip())
