"""Start-up: `tinymlops gui` opens the window on the embedded default (in-process broker +
virtual fleet) without importing TensorFlow, and a bad broker gives a message, not a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.ui.conftest import wait_for

ROOT = Path(__file__).resolve().parents[2]
# The embedded default's broker and devices come up in a few seconds; allow a loaded machine.
STARTUP_TIMEOUT_S = 120


def test_default_start_shows_the_virtual_fleet_without_tensorflow(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", TINYMLOPS_DATA_DIR=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"))
    proc = subprocess.run([sys.executable, "-m", "app", "gui", "--smoke-test", "--devices", "3"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] is True
    assert result["devices"] == 3
    assert result["tensorflow_imported"] is False, "start-up must not import TensorFlow"
    assert result["seconds"]["window"] <= result["seconds"]["devices"]


def test_tinymlops_without_command_routes_to_the_gui(tmp_path):
    from app.cli import gui, main

    parser = main.build_parser()
    assert parser.parse_args([]).command is None
    args = parser.parse_args(["gui", "--broker", "mqtt://h:1", "--devices", "5"])
    assert args.func is gui.run and args.broker == "mqtt://h:1" and args.devices == 5


def test_unreachable_broker_shows_a_clear_message_in_the_window(qtbot):
    from app.services.app_session import SessionConfig
    from app.ui.main_window import MainWindow
    from app.ui.settings import Settings
    from tests.fixtures.brokers import free_port

    win = MainWindow(Settings())
    qtbot.addWidget(win)
    win.show()
    win.start_session(SessionConfig(broker_url=f"mqtt://127.0.0.1:{free_port()}"))
    wait_for(qtbot, lambda: win.banner_box.isVisible(), 30, "the connection attempt's message")
    assert win.session is None
    assert win.banner_box.isVisible()
    text = win.banner.text()
    assert "refused" in text and "Settings" in text
    assert "Traceback" not in text
    assert any("connection failed" in row[3] for row in win.events.model.rows())
    # the window keeps working: a second attempt with a malformed URL says what is wrong with it
    win.start_session(SessionConfig(broker_url="mqtt://127.0.0.1:99999"))
    wait_for(qtbot, lambda: "invalid broker URL" in win.banner.text(), 10, "the second attempt's message")
    assert win.session is None
    win.close()


def test_settings_and_layout_are_remembered(qtbot):
    from app.ui.main_window import TAB_LATENCY, MainWindow
    from app.ui.settings import Settings, check_broker_url

    Settings(broker_url="mqtt://plant:1883", username="op", transport="serial", baud=921600).save()
    loaded = Settings.load()
    assert (loaded.broker_url, loaded.username, loaded.transport, loaded.baud) == \
        ("mqtt://plant:1883", "op", "serial", 921600)
    assert check_broker_url("") is None and check_broker_url("ftp://x") is not None

    win = MainWindow(Settings())
    qtbot.addWidget(win)
    win.resize(700, 520)
    win.tabs.setCurrentIndex(TAB_LATENCY)
    win.save_layout()
    win.shutdown()
    again = MainWindow(Settings())
    qtbot.addWidget(again)
    assert again.tabs.currentIndex() == TAB_LATENCY
    assert (again.width(), again.height()) == (700, 520)
    again.shutdown()


def test_about_lists_the_versions():
    from app.ui.about import about_html, versions

    v = versions()
    for key in ("Tiny-MLOps operator", "Qt", "PySide6", "pyqtgraph", "numpy", "Python"):
        assert v[key]
    assert v["PySide6"] in about_html()
