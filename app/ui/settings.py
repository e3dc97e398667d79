"""Operator settings in QSettings (broker URL and credentials, default transport, data directory),
and the dialog that edits them."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
)

from app.protocol.framing import DEFAULT_BAUD
from app.ui.file_row import with_browse

log = logging.getLogger(__name__)

ORGANIZATION = "tinymlops"
APPLICATION = "operator"
TRANSPORTS = ("mqtt", "serial")
BAUDS = (9600, 57600, 115200, 230400, 460800, 921600)
# The settings file holds no secret (the broker password goes to the OS keyring, see
# app.transport.credentials), and is still readable and writable by the user only: it names the
# broker, the user and the certificate files. QSettings rewrites it through QSaveFile, which keeps
# the mode of the file it replaces.
SETTINGS_FILE_MODE = stat.S_IRUSR | stat.S_IWUSR  # 0600
# Text formats QSettings reads back from an empty file (safe to create the file before it writes).
TEXT_SETTINGS_SUFFIXES = (".conf", ".ini")


def qsettings() -> QSettings:
    return QSettings(ORGANIZATION, APPLICATION)


def settings_file() -> str:
    """Where the settings are stored: a file, or the registry on Windows (never the password)."""
    return qsettings().fileName()


def _create_private(path: Path) -> None:
    """Create an empty settings file that only the user can read before the first write."""
    if os.name != "posix" or not path.is_absolute() or path.suffix not in TEXT_SETTINGS_SUFFIXES:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, SETTINGS_FILE_MODE))
    except FileExistsError:
        pass
    except OSError as exc:  # the write that follows reports a real problem through QSettings.status()
        log.warning("could not create %s: %s", path, exc)


def restrict_settings_file(path: str) -> None:
    """chmod the settings file to SETTINGS_FILE_MODE (POSIX; the Windows registry is per user already)."""
    file = Path(path)
    if os.name != "posix" or not file.is_file():
        return
    try:
        if stat.S_IMODE(file.stat().st_mode) != SETTINGS_FILE_MODE:
            file.chmod(SETTINGS_FILE_MODE)
    except OSError as exc:
        log.warning("could not restrict the permissions of %s: %s", file, exc)


def _broker_for(url: str, user: str):
    from app.transport.local_broker import resolve_broker
    from app.transport.urls import parse_broker_url

    try:
        return replace(parse_broker_url(url or resolve_broker(None)), username=user or None, password=None)
    except Exception:  # an unparsable URL has no keyring entry; the dialog reports the URL itself
        return None


def _stored_password(url: str, user: str) -> str:
    from app.transport.credentials import password_for

    broker = _broker_for(url, user) if user else None
    return (password_for(broker) or "") if broker is not None else ""


def _keep_password(url: str, user: str, password: str) -> bool:
    from app.transport.credentials import store_password

    broker = _broker_for(url, user) if user else None
    return broker is not None and store_password(broker, password)


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
        url, user = str(s.value("broker/url", "") or ""), str(s.value("broker/username", "") or "")
        # an older version kept the password in this file: it is read once more, and the next save
        # moves it to the keyring (or drops it) and removes it from the file
        legacy = str(s.value("broker/password", "") or "")
        return cls(broker_url=url, username=user, password=legacy or _stored_password(url, user),
                   transport=transport if transport in TRANSPORTS else "mqtt", baud=baud,
                   data_dir=str(s.value("data/dir", "") or ""))

    def save(self, store: QSettings | None = None) -> bool:
        """Write the settings (readable by the user only) and the password to the OS keyring;
        returns False when a password was given but no keyring keeps it (it then lasts for this
        session only; $TINYMLOPS_BROKER_PASSWORD is the other way)."""
        s = store or qsettings()
        _create_private(Path(s.fileName()))
        s.setValue("broker/url", self.broker_url)
        s.setValue("broker/username", self.username)
        s.remove("broker/password")
        kept = not self.password or _keep_password(self.broker_url, self.username, self.password)
        s.setValue("deploy/transport", self.transport)
        s.setValue("deploy/baud", int(self.baud))
        s.setValue("data/dir", self.data_dir)
        s.sync()
        restrict_settings_file(s.fileName())
        return kept

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


# The TLS files of an mqtts:// broker (app.transport.urls.TLS_FILES), as the dialog names them.
TLS_FIELDS = (("ca", "CA certificate", "the CA that signed the broker's certificate (kit/ca.crt of "
               "`tinymlops broker kit`)"),
              ("cert", "Client certificate", "this operator's certificate, when the broker asks for one "
               "(kit/operator.crt)"),
              ("key", "Client key", "the private key of the client certificate (kit/operator.key); keep it "
               "readable by you only"))
PEM_FILTER = "PEM files (*.pem *.crt *.key);;All files (*)"


def split_tls_files(url: str) -> tuple[str, dict[str, str]]:
    """The broker URL without its ?ca=&cert=&key= query, and those files (empty when none or unparsable)."""
    from app.domain.errors import LinkError
    from app.transport.urls import TLS_FILES, parse_broker_url

    if "?" not in url:
        return url, {}
    try:
        parsed = parse_broker_url(url)
    except LinkError:
        return url, {}
    files = {name: value for name in TLS_FILES if (value := getattr(parsed, name))}
    return str(replace(parsed, ca=None, cert=None, key=None)), files


def join_tls_files(url: str, files: dict[str, str]) -> tuple[str, str | None]:
    """The full broker URL with the given files in its query, and the problem when there is one
    (a file that does not exist, files on a plain mqtt:// URL, a certificate without its key)."""
    from app.domain.errors import LinkError
    from app.transport.urls import parse_broker_url

    chosen = {name: path for name, path in files.items() if path}
    if not url.strip():
        return "", ("certificate files need a broker URL (mqtts://host:8883)" if chosen else None)
    for name, label, _why in TLS_FIELDS:
        if name in chosen and not Path(chosen[name]).expanduser().is_file():
            return url, f"{label} {chosen[name]} does not exist"
    try:
        parsed = parse_broker_url(url)
        full = replace(parsed, **{name: str(Path(path).expanduser()) for name, path in chosen.items()})
        return str(parse_broker_url(str(full)) if chosen else url.strip()), None
    except LinkError as exc:
        return url, str(exc)


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Settings")
        self.settings = settings
        form = QFormLayout(self)
        base_url, tls_files = split_tls_files(settings.broker_url)
        self.url = QLineEdit(base_url)
        self.url.setPlaceholderText("empty: embedded broker + virtual fleet;  e.g. mqtt://broker.plant:1883")
        self.url.setToolTip("MQTT broker of the plant. Leave empty for the built-in demo (a broker in this "
                            "program and a virtual fleet).")
        self.user = QLineEdit(settings.username)
        self.user.setToolTip("Broker user name, when the broker asks for one")
        self.password = QLineEdit(settings.password)
        self.password.setEchoMode(QLineEdit.EchoMode.Password)
        self.password.setToolTip("Broker password. Kept in the OS keyring (never in the settings file "
                                 f"{settings_file()}); without a keyring it lasts for this session only, or "
                                 "set $TINYMLOPS_BROKER_PASSWORD.")
        self.transport = QComboBox()
        self.transport.addItems(["MQTT (whole line at once)", "USB serial (laptop next to the machine)"])
        self.transport.setCurrentIndex(TRANSPORTS.index(settings.transport))
        self.baud = QComboBox()
        for b in BAUDS:
            self.baud.addItem(str(b), b)
        self.baud.setCurrentIndex(max(0, self.baud.findData(settings.baud)))
        self.data_dir = QLineEdit(settings.data_dir)
        self.data_dir.setPlaceholderText("default: the platform's user data folder")
        self.data_dir.setToolTip("Where the model registry, datasets and deployment history live "
                                 "(takes effect at the next start)")
        dir_row = with_browse(self.data_dir, self._browse)
        self.problem = QLabel("")
        self.problem.setStyleSheet("color: #c62828")
        self.problem.setWordWrap(True)
        form.addRow("Broker URL", self.url)
        form.addRow("User", self.user)
        form.addRow("Password", self.password)
        self.tls: dict[str, QLineEdit] = {}
        for name, label, why in TLS_FIELDS:
            edit = QLineEdit(tls_files.get(name, ""))
            edit.setPlaceholderText("mqtts:// only; empty: none")
            edit.setToolTip(f"{label}: {why}. Used with an mqtts:// broker URL.")
            edit.textChanged.connect(self._recheck)
            self.tls[name] = edit
            form.addRow(label, with_browse(edit, lambda _=False, e=edit, t=label: self._pick_file(e, t)))
        form.addRow("Default transport", self.transport)
        form.addRow("Serial baud rate", self.baud)
        form.addRow("Data directory", dir_row)
        form.addRow(self.problem)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.url.textChanged.connect(self._recheck)
        self.resize(560, 0)

    def _pick_file(self, edit: QLineEdit, title: str) -> None:
        path, _filter = QFileDialog.getOpenFileName(self, title, edit.text(), PEM_FILTER)
        if path:
            edit.setText(path)

    def _full_url(self) -> tuple[str, str | None]:
        return join_tls_files(self.url.text(), {name: edit.text().strip() for name, edit in self.tls.items()})

    def _recheck(self, _text: str = "") -> None:
        url, problem = self._full_url()
        self.problem.setText(problem or check_broker_url(url) or "")

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Data directory", self.data_dir.text())
        if path:
            self.data_dir.setText(path)

    def accept(self) -> None:
        url, problem = self._full_url()
        problem = problem or check_broker_url(url)
        if problem:
            self.problem.setText(problem)
            return
        super().accept()

    def result_settings(self) -> Settings:
        return Settings(broker_url=self._full_url()[0].strip(), username=self.user.text().strip(),
                        password=self.password.text(), transport=TRANSPORTS[self.transport.currentIndex()],
                        baud=int(self.baud.currentData()), data_dir=self.data_dir.text().strip())
