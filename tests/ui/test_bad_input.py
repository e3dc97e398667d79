"""Bad input the operator must survive: a broker refusing the credentials, a serial port that
vanishes in the middle of a deployment, a device sending garbage over serial. Each gives a clear
message in the right place (banner, wizard row, events), no traceback, and the window keeps working."""

from __future__ import annotations

import os
import tty

from app.protocol.framing import frame
from tests.ui.conftest import FLEET_SIZE, FLEET_TIMEOUT_S, wait_for, wait_for_deploy_run
from tests.ui.test_models_deploy import _write

# Mosquitto answers a refused CONNECT at once; the client gives up on a permanent refusal.
REFUSAL_TIMEOUT_S = 30.0
# A deployment over a 115200-baud pty moves ~11 KB/s: chunks flow within a second or two.
TRANSFER_START_TIMEOUT_S = 30.0
# After the port vanishes the transfer gives up (write errors, reopen attempts) within seconds.
DEPLOY_END_TIMEOUT_S = 90.0
# The window reports dropped serial frames on its 1 s status tick.
REPORT_TIMEOUT_S = 10.0
SERIAL_BAUD = 115200


def test_broker_refusing_credentials_says_so_and_the_window_recovers(qtbot, mosquitto_factory, ui_fleet):
    from app.services.app_session import SessionConfig
    from app.ui.main_window import MainWindow
    from app.ui.settings import Settings

    strict = mosquitto_factory(allow_anonymous=False)  # no password file: every login is refused
    password = "not-the-password"
    win = MainWindow(Settings())
    qtbot.addWidget(win)
    win.show()
    win.start_session(SessionConfig(broker_url=strict.url, username="operator", password=password))
    wait_for(qtbot, lambda: win.banner_box.isVisible(), REFUSAL_TIMEOUT_S, "the refusal message")
    assert win.session is None
    text = win.banner.text()
    assert "refused the user name or password" in text, text
    assert "credentials" in text and "Settings" in text  # says where to fix it
    assert "Traceback" not in text and password not in text
    assert "not connected" in win.broker_label.text()
    errors = [row for row in win.events.model.rows() if row[1] == "error"]
    assert errors and all(password not in row[3] for row in errors)

    # the window keeps working: connecting to a broker that accepts us fills the fleet
    win.start_session(SessionConfig(broker_url=ui_fleet))
    wait_for(qtbot, lambda: len(win.fleet_model.device_ids()) >= FLEET_SIZE, FLEET_TIMEOUT_S, "the fleet")
    assert not win.banner_box.isVisible()
    win.close()


def _serial_device(index: int = 40):
    """One virtual device on its own pty, paced at SERIAL_BAUD (so a transfer takes a while)."""
    from app.fleet.device import VirtualDevice
    from app.fleet.fleet import device_plan, load_factory_image
    from app.fleet.serial_device import SerialDevice

    plan = device_plan(index)
    device = VirtualDevice(plan["device_id"], plan["location"], plan["profile"], load_factory_image(), seed=index,
                           shaft_hz=plan["shaft_hz"])
    serial = SerialDevice(device, SERIAL_BAUD)
    serial.start()
    return serial


def test_serial_port_vanishing_mid_deploy_is_a_per_device_error(window, qtbot, tmp_path, model_image):
    from app.deploy.history import DeploymentHistory

    device = _serial_device()
    device_id, port = device.device.device_id, device.slave_path
    try:
        window.attach_serial(port, SERIAL_BAUD)
        wait_for(qtbot, lambda: window.fleet_model.record(device_id) is not None, 15, "the serial device in the fleet")
        wizard = window.open_deploy_wizard([device_id])
        qtbot.addWidget(wizard)
        wizard.version_page.set_file(_write(tmp_path, model_image))
        wizard.next()
        wizard.next()
        wizard.transport_page.serial.setChecked(True)
        wizard.transport_page.port.setEditText(port)
        wizard.transport_page.baud.setCurrentIndex(wizard.transport_page.baud.findData(SERIAL_BAUD))
        wizard.next()
        wizard.next()
        bar = wizard.run_page.bars[device_id]
        wait_for(qtbot, lambda: bar.value() > 0, TRANSFER_START_TIMEOUT_S, "the transfer to start")
        assert not wizard.run_page.isComplete()
        device.stop()  # the cable is pulled: the pty closes under the transfer
        wait_for_deploy_run(qtbot, wizard, DEPLOY_END_TIMEOUT_S)  # it gives up, and says so on screen
    finally:
        device.stop()

    # the wizard names the device and what happened, as a row of its own
    table = wizard.run_page.table
    assert table.rowCount() == 1
    assert table.item(0, 0).text() == device_id
    assert table.item(0, 1).text() == "failed"
    error = table.item(0, table.columnCount() - 1).text()
    assert port in error or "serial" in error.lower(), error
    status = wizard.run_page.status.text()
    assert "0 of 1" in status and "Traceback" not in status and "Traceback" not in error
    # the history has the failed attempt; the dashboard shows it
    rows = DeploymentHistory().list(device=device_id)
    assert rows and rows[0].outcome == "failed" and rows[0].transport == "serial"
    wait_for(qtbot, lambda: any(r.device == device_id and r.outcome == "failed"
                                for r in window.dashboard.model.records), 10, "the failed row on the Latency page")
    assert any(row[1] == "error" and row[2] == device_id for row in window.events.model.rows())
    assert window.fleet_model.status(device_id) != "deploying"
    wizard.accept()
    # the GUI keeps running: the broker's fleet still updates and can be selected
    assert window.fleet_view.select_device("sim-001")
    assert window.session is not None and window.session.connection.connected


def test_device_sending_garbage_over_serial_is_a_warning_not_a_crash(window, qtbot):
    master, slave = os.openpty()
    tty.setraw(slave)
    port = os.ttyname(slave)
    try:
        window.attach_serial(port, SERIAL_BAUD)
        wait_for(qtbot, lambda: port in window.session.serial, 10, "the port to be attached")
        # line noise between frame delimiters (bad COBS/CRC), and a well-framed message that is not protocol
        os.write(master, b"\x00\x13\x37garbage\xff\xfe\x00" + bytes(range(1, 200)) + b"\x00")
        os.write(master, frame(b"\xde\xad\xbe\xef not a message"))
        wait_for(qtbot, lambda: any(port in row[3] and "malformed" in row[3] for row in window.events.model.rows()),
                 REPORT_TIMEOUT_S, "the dropped-frames warning")
        row = next(r for r in window.events.model.rows() if port in r[3] and "malformed" in r[3])
        assert row[1] == "warning" and "Traceback" not in row[3]
        # the link is still open and the window still works
        assert port in window.session.serial and window.session.serial[port].link.is_open
        assert window.fleet_view.select_device("sim-002")
        assert window.live.primary == "sim-002"
    finally:
        if window.session is not None:
            window.session.detach_serial(port)
        os.close(master)
        os.close(slave)
