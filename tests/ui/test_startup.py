"""Start-up: `tinymlops gui` opens the window on the embedded default (in-process broker +
virtual fleet) without importing TensorFlow, and a bad broker gives a message, not a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.ui.conftest import FLEET_SIZE, wait_for

ROOT = Path(__file__).resolve().parents[2]
# The embedded default's broker and devices come up in a few seconds; allow a loaded machine.
STARTUP_TIMEOUT_S = 120
# A session on the shared local broker connects in well under a second; allow a loaded machine.
SESSION_START_TIMEOUT_MS = 30_000


def test_default_start_shows_the_virtual_fleet_and_trains_in_a_child_without_tensorflow(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", TINYMLOPS_DATA_DIR=str(tmp_path / "data"),
               XDG_CONFIG_HOME=str(tmp_path / "config"))
    proc = subprocess.run([sys.executable, "-m", "app", "gui", "--smoke-test", "--devices", "3"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] is True
    assert result["devices"] == 3
    # the tiny training job ran through the GUI's worker path (a spawned child) and produced a model
    training = result["training"]
    assert training["ok"] is True, training
    assert training["seconds"] > 0 and training["image_size"] > training["tflite_size"] > 0
    assert result["seconds"]["training"] == training["seconds"]
    # ... and TensorFlow stayed in that child: neither start-up nor training imports it in the GUI process
    assert result["tensorflow_imported"] is False, "the GUI process must not import TensorFlow"


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


def _closed_off_the_gui_thread(session) -> list:
    """Wrap `session.close` to record the thread each call ran on (and still close)."""
    import threading

    threads: list = []
    close = session.close

    def recording_close() -> None:
        threads.append(threading.current_thread())
        close()

    session.close = recording_close
    return threads


def test_a_start_superseded_after_it_came_up_is_closed_not_attached(qtbot, ui_fleet):
    import threading

    from app.services.app_session import SessionConfig
    from app.ui.main_window import MainWindow
    from app.ui.settings import Settings

    win = MainWindow(Settings())
    qtbot.addWidget(win)
    win.show()
    first_worker = win.start_session(SessionConfig(broker_url=ui_fleet))
    # the first session comes up, but its result is still queued for the GUI thread (no events processed) ...
    assert first_worker.thread.wait(SESSION_START_TIMEOUT_MS)
    first = first_worker.value
    assert first is not None and first_worker.failed is None
    first_close_threads = _closed_off_the_gui_thread(first)
    # ... when the operator starts again: only the newer session may be attached
    second_worker = win.start_session(SessionConfig(broker_url=ui_fleet))
    wait_for(qtbot, lambda: second_worker.done and win.session is not None, SESSION_START_TIMEOUT_MS / 1000,
             "the second session")
    second = second_worker.value
    assert win.session is second and second is not first
    wait_for(qtbot, lambda: first.closed and not first.connection.connected, 15, "the superseded session's close")
    assert first_close_threads and first_close_threads[0] is not threading.main_thread()
    assert not second.closed

    # a reconnect closes the attached session in a worker, not on the GUI thread
    second_close_threads = _closed_off_the_gui_thread(second)
    third_worker = win.start_session(SessionConfig(broker_url=ui_fleet))
    wait_for(qtbot, lambda: second.closed and not second.connection.connected, 15, "the replaced session's close")
    assert second_close_threads and second_close_threads[0] is not threading.main_thread()
    wait_for(qtbot, lambda: win.session is not None, SESSION_START_TIMEOUT_MS / 1000, "the third session")
    third = third_worker.value
    assert win.session is third

    # at exit the window waits for its session to be closed
    win.close()
    assert third.closed and not third.connection.connected


def test_two_quick_starts_attach_only_the_second(qtbot, ui_fleet):
    from app.services.app_session import SessionConfig
    from app.ui.main_window import MainWindow
    from app.ui.settings import Settings

    win = MainWindow(Settings())
    qtbot.addWidget(win)
    win.show()
    first_worker = win.start_session(SessionConfig(broker_url=ui_fleet))
    first = first_worker.fn.__self__  # the AppSession whose start() the worker runs
    second_worker = win.start_session(SessionConfig(broker_url=ui_fleet))
    second = second_worker.fn.__self__
    wait_for(qtbot, lambda: win.session is not None and first_worker.done, SESSION_START_TIMEOUT_MS / 1000,
             "the sessions")
    assert win.session is second
    # the first was cancelled part-way (it closed what it had started) or came up and was closed
    wait_for(qtbot, lambda: first.closed, 15, "the first session's close")
    assert first.connection is None or not first.connection.connected
    assert not win.banner_box.isVisible(), win.banner.text()  # a superseded start is not an error to show
    wait_for(qtbot, lambda: len(win.fleet_model.device_ids()) >= FLEET_SIZE, 30, "the fleet from the second session")
    win.close()
    assert second.closed


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


def test_settings_file_is_private_and_never_holds_the_password(qtbot, tmp_path):
    import stat

    from app.ui.settings import Settings, SettingsDialog, qsettings

    path = Path(qsettings().fileName())
    assert str(path).startswith(str(tmp_path))  # the isolated settings directory of this test
    old_umask = os.umask(0o022)  # the usual default: new files are world-readable
    try:
        # the tests keep the OS keyring out (TINYMLOPS_KEYRING=off): the password lasts for the session
        assert Settings(broker_url="mqtt://plant:1883", username="op", password="s3cret").save() is False
    finally:
        os.umask(old_umask)
    assert "s3cret" not in path.read_text() and "op" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # a password an older version left in the file is read once, then removed by the next save
    legacy = qsettings()
    legacy.setValue("broker/password", "old-secret")
    legacy.sync()
    assert Settings.load().password == "old-secret"
    Settings.load().save()
    assert "old-secret" not in path.read_text()
    # a file an older version left world-readable is restricted at the next save, and layout writes keep it so
    path.chmod(0o644)
    Settings(password="s3cret").save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    s = qsettings()
    s.setValue("window/tab", 2)
    s.sync()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # the dialog says where the password is kept (and where not)
    dialog = SettingsDialog(Settings.load())
    qtbot.addWidget(dialog)
    assert "OS keyring" in dialog.password.toolTip() and str(path) in dialog.password.toolTip()


def test_about_lists_the_versions_without_importing_tensorflow(tmp_path):
    from importlib import metadata

    # a fresh interpreter: this test process may already have imported TensorFlow for other tests
    code = ("import json, sys\n"
            "from PySide6.QtWidgets import QApplication\n"
            "app = QApplication([])\n"
            "from app.ui.about import about_html, versions\n"
            "print(json.dumps({'versions': versions(), 'html': about_html(),\n"
            "                  'tensorflow_imported': any(m == 'tensorflow' or m.startswith('tensorflow.')\n"
            "                                             for m in sys.modules)}))\n")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", TINYMLOPS_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=STARTUP_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    v, html = out["versions"], out["html"]
    expected = {"TensorFlow": metadata.version("tensorflow-cpu"), "tflite-micro": metadata.version("tflite-micro"),
                "paho-mqtt": metadata.version("paho-mqtt"), "amqtt": metadata.version("amqtt"),
                "numpy": metadata.version("numpy"), "pyserial": metadata.version("pyserial"),
                "pyqtgraph": metadata.version("pyqtgraph")}
    for key, version in expected.items():
        assert v[key] == version, (key, v)
        assert f"<td>{key}</td><td><b>{version}</b></td>" in html
    for key in ("Tiny-MLOps operator", "Qt", "PySide6", "Python"):
        assert v[key] and v[key] in html
    assert out["tensorflow_imported"] is False, "the About box must not import TensorFlow"


def test_settings_dialog_takes_the_tls_files_of_an_mqtts_broker(qtbot, tmp_path):
    """The CA, client certificate and key of `tinymlops broker kit` are picked in the dialog and travel in
    the broker URL's query; a missing file, files on mqtt:// or a certificate without its key is a
    sentence in the dialog, which then stays open."""
    from app.transport.urls import parse_broker_url
    from app.ui.settings import Settings, SettingsDialog

    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in files.values():
        path.write_text("-----BEGIN CERTIFICATE-----\n")
    dialog = SettingsDialog(Settings())
    qtbot.addWidget(dialog)
    dialog.url.setText("mqtts://broker.plant:8883")
    for name, path in files.items():
        dialog.tls[name].setText(str(path))
    assert dialog.problem.text() == ""
    dialog.accept()
    assert dialog.result() == dialog.DialogCode.Accepted
    url = dialog.result_settings().broker_url
    parsed = parse_broker_url(url)
    assert (parsed.tls, parsed.ca, parsed.cert, parsed.key) == (True, str(files["ca"]), str(files["cert"]),
                                                                 str(files["key"]))

    # the saved URL comes back split: the address in the URL field, each file in its own
    again = SettingsDialog(Settings(broker_url=url))
    qtbot.addWidget(again)
    assert again.url.text() == "mqtts://broker.plant:8883"
    assert {name: edit.text() for name, edit in again.tls.items()} == {k: str(v) for k, v in files.items()}

    for change, expected in (
            (lambda d: d.tls["ca"].setText(str(tmp_path / "gone.pem")), "does not exist"),
            (lambda d: d.url.setText("mqtt://broker.plant:1883"), "need mqtts://"),
            (lambda d: d.tls["key"].setText(""), "needs its key")):
        bad = SettingsDialog(Settings(broker_url=url))
        qtbot.addWidget(bad)
        change(bad)
        assert expected in bad.problem.text()
        bad.accept()
        assert bad.result() != bad.DialogCode.Accepted and expected in bad.problem.text()


def _headless_env(tmp_path) -> dict:
    """The environment of an SSH session or a server: no display, no Qt platform chosen."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    return {**env, "TINYMLOPS_DATA_DIR": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config")}


def test_without_a_display_the_window_says_so_instead_of_qt_aborting(tmp_path):
    """Before, Qt aborted the process (SIGABRT, exit -6, a core file) after a paragraph on plugins."""
    proc = subprocess.run([sys.executable, "-m", "app"], cwd=ROOT, env=_headless_env(tmp_path), capture_output=True,
                          text=True, timeout=STARTUP_TIMEOUT_S)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "no display to open the operator window on" in proc.stderr and "tinymlops --help" in proc.stderr
    assert "qt.qpa" not in proc.stderr and "Traceback" not in proc.stderr


def test_the_smoke_test_needs_no_display(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "app", "gui", "--smoke-test", "--devices", "2"], cwd=ROOT,
                          env=_headless_env(tmp_path), capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["ok"] is True
