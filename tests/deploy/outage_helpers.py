"""Helpers for the MQTT outage tests: act at the moment a device receives a command, count the
retained chunks a broker holds, and wait for a log line. Real broker, real devices; nothing faked."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from app.domain.errors import ProtocolError
from app.fleet.device import VirtualDevice
from app.protocol import messages as m
from app.transport.mqtt_link import MqttConnection


def on_command(devices: list[VirtualDevice], kind: type, action: Callable[[VirtualDevice], None],
               times: int = 1) -> threading.Event:
    """Run `action(device)` when a device receives a command of type `kind`, before it handles it
    (the first `times` such commands, all devices together); the returned Event is set after the
    last. Runs on the device's worker thread, like the device's own code."""
    fired = threading.Event()
    lock = threading.Lock()
    left = [times]
    for dev in devices:
        original = dev.handle

        def handle(data: bytes, now: float | None = None, _dev=dev, _original=original):
            try:
                msg = m.decode(data).msg
            except ProtocolError:
                msg = None
            if isinstance(msg, kind):
                with lock:
                    go = left[0] > 0
                    left[0] -= 1
                if go:
                    action(_dev)
                    if left[0] <= 0:
                        fired.set()
            return _original(data, now)

        dev.handle = handle  # type: ignore[method-assign]
    return fired


def retained_under(url: str, prefix: str, timeout: float = 10.0) -> int:
    """How many retained messages the broker holds under `prefix/+`. Mosquitto queues a new
    subscription's retained messages with its SUBACK, so every one of them arrives before a message
    we publish after the SUBACK: that marker ends the count without any sleep."""
    got: list[str] = []
    marker = f"{prefix}/count-marker"
    done = threading.Event()

    def handler(topic: str, payload: bytes) -> None:
        if topic == marker:
            done.set()
        elif payload:
            got.append(topic)

    conn = MqttConnection(url)
    conn.connect()
    try:
        conn.subscribe(f"{prefix}/+", handler)
        conn.wait_subscribed()
        conn.publish(marker, b"x", qos=1)
        if not done.wait(timeout):
            raise AssertionError(f"the marker on {marker} did not come back within {timeout:g} s")
    finally:
        conn.close()
    return len(got)


class LogEvent(logging.Handler):
    """An Event set when a record of `logger` contains `text`; call `action` then (once)."""

    def __init__(self, logger: str, text: str, action: Callable[[], None] | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.text = text
        self.action = action
        self.event = threading.Event()
        self._logger = logging.getLogger(logger)

    def emit(self, record: logging.LogRecord) -> None:
        if self.event.is_set() or self.text not in record.getMessage():
            return
        if self.action is not None:
            self.action()
        self.event.set()

    def __enter__(self) -> LogEvent:
        self._logger.addHandler(self)
        self._old_level = self._logger.level
        if self._logger.getEffectiveLevel() > logging.INFO:
            self._logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._old_level)
