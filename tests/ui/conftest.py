"""GUI test fixtures: real Qt (offscreen), a real Mosquitto and a virtual fleet shared by the folder,
an isolated data directory and QSettings per test, and a main window connected to that broker."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# Devices of the shared fleet: sim-004 boots with a bearing fault (VirtualFleet: every 7th from the 4th).
FLEET_SIZE = 6
FAULTY_DEVICE = "sim-004"
# Devices connect and announce themselves in about a second; a loaded 2-core machine takes longer.
FLEET_TIMEOUT_S = 30.0
# Training + int8 conversion + TFLM checks with TensorFlow on a busy machine.
JOB_TIMEOUT_S = 240.0


@pytest.fixture(autouse=True)
def _gc_on_gui_thread(gc_on_gui_thread):
    """Every GUI test collects garbage on the GUI thread (tests/fixtures/qt_gc.py)."""


@pytest.fixture(scope="session")
def ui_fleet() -> Iterator[str]:
    """A virtual fleet on a Mosquitto of its own; yields the broker URL. Not the session's shared
    broker: this fleet lives until the session ends, and its sim-001... would share ids with the
    fleets other tests start there (a recording then mixed two machines' streams)."""
    from app.fleet.fleet import VirtualFleet
    from tests.fixtures.brokers import MosquittoProcess

    broker = MosquittoProcess()
    url = broker.start()
    fleet = VirtualFleet(url, FLEET_SIZE, seed=5)
    fleet.start()
    try:
        yield url
    finally:
        fleet.stop()
        broker.close()


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch) -> Iterator[None]:
    """Each test gets its own registry/datasets/history and its own settings file."""
    from PySide6.QtCore import QSettings

    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))
    for fmt in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    yield


def wait_for(qtbot, predicate, timeout_s: float, what: str) -> None:
    """qtbot.waitUntil with a message that says what did not happen."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {what}"
        qtbot.wait(20)


def wait_for_deploy_run(qtbot, wizard, timeout_s: float = JOB_TIMEOUT_S) -> None:
    """The wizard's deployment has ended AND its queued result/error and finished slots have run on
    the GUI thread (`isComplete` turns true in the worker thread, before those slots)."""
    page = wizard.run_page
    wait_for(qtbot, lambda: page.isComplete() and (wizard.results or wizard.error is not None)
             and not page.cancel_button.isEnabled(), timeout_s, "the deployment and its result on screen")


@pytest.fixture
def window(qtbot, ui_fleet):
    """The real main window connected to the shared broker, with every device in the fleet view."""
    from app.services.app_session import SessionConfig
    from app.ui.main_window import MainWindow
    from app.ui.settings import Settings

    win = MainWindow(Settings())
    qtbot.addWidget(win)
    win.show()
    win.start_session(SessionConfig(broker_url=ui_fleet))
    wait_for(qtbot, lambda: len(win.fleet_model.device_ids()) >= FLEET_SIZE, FLEET_TIMEOUT_S, "the fleet")
    yield win
    win.close()
