"""A serial device whose cable is pulled and plugged back in comes back on its own.

udev gives a USB adapter a stable name (/dev/serial/by-id/...) that is a symlink to whatever
ttyUSBn it got this time; here the symlink points at a fresh pty after the "re-plug"."""

from __future__ import annotations

import os
import time

from app.fleet.device import VirtualDevice
from app.fleet.fleet import device_plan, load_factory_image
from app.fleet.serial_device import SerialDevice
from app.services.app_session import SERIAL_REOPEN_S, AppSession, SessionConfig

# A HELLO over a pty arrives in milliseconds; the reopen watcher polls every SERIAL_REOPEN_S.
COME_BACK_TIMEOUT_S = SERIAL_REOPEN_S * 5
GONE_TIMEOUT_S = 10.0


def _plugged_device(index: int) -> SerialDevice:
    plan = device_plan(index)
    device = VirtualDevice(plan["device_id"], plan["location"], plan["profile"], load_factory_image(), seed=index,
                           shaft_hz=plan["shaft_hz"])
    serial = SerialDevice(device)
    serial.start()
    return serial


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _watcher_passes(session: AppSession, passes: int) -> None:
    """Return once the reopen watcher has finished `passes` more passes (not after a guessed sleep)."""
    start = session.serial_watch_passes
    _wait(lambda: session.serial_watch_passes >= start + passes, SERIAL_REOPEN_S * passes + GONE_TIMEOUT_S,
          f"{passes} passes of the serial reopen watcher")


def _state(session: AppSession, device_id: str) -> str | None:
    record = session.monitor.get(device_id)
    return record.state if record else None


def test_a_replugged_serial_device_comes_back_without_reattaching(mosquitto_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))  # the session's fleet memory goes there
    # a broker of its own: on the shared one another test's virtual fleet may have announced the same
    # device id over MQTT, and the fleet would show it online whatever the serial port does
    mosquitto_url = mosquitto_factory().url
    by_id = tmp_path / "usb-tinymlops-sensor-if00"
    first = _plugged_device(50)
    device_id = first.device.device_id
    os.symlink(first.slave_path, by_id)
    session = AppSession(SessionConfig(broker_url=mosquitto_url)).start()
    second = None
    try:
        session.attach_serial(str(by_id), 115200)
        _wait(lambda: _state(session, device_id) == "online", GONE_TIMEOUT_S, "the device over serial")

        first.stop()  # cable pulled
        _wait(lambda: _state(session, device_id) == "offline", GONE_TIMEOUT_S, "the device to go offline")
        assert str(by_id) in session.serial  # still attached: the operator does not have to do it again
        _watcher_passes(session, 2)  # the watcher tries while nothing is there, and keeps trying
        assert _state(session, device_id) == "offline"

        second = _plugged_device(50)  # plugged back in: a new tty behind the same stable name
        by_id.unlink()
        os.symlink(second.slave_path, by_id)
        _wait(lambda: _state(session, device_id) == "online", COME_BACK_TIMEOUT_S, "the device to come back")
        link = session.serial[str(by_id)].link
        assert link.is_open and not link.last_error
        # and it is a working channel again, not just a HELLO: telemetry flows
        seen = session.monitor.get(device_id).last_seen

        def telemetry_arrived() -> bool:
            second.pump()  # the device's tick: telemetry once a second
            return session.monitor.get(device_id).last_seen > seen

        _wait(telemetry_arrived, GONE_TIMEOUT_S, "telemetry after the re-plug")

        # a port the operator detached is not reopened behind their back
        assert session.detach_serial(str(by_id))
        _watcher_passes(session, 2)  # a whole pass of the watcher after the detach
        assert str(by_id) not in session.serial
    finally:
        session.close()
        first.stop()
        if second is not None:
            second.stop()
