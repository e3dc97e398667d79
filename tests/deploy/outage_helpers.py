"""Helpers for the MQTT deploy and outage tests: act at the moment a device receives a command,
reach the broker through a proxy that the test breaks, run a rollout, wait for a device's message,
list the retained messages a broker holds, and wait for a log line. Real broker, real devices;
nothing faked."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from app.deploy.rollout import Rollout, RolloutReport, find_devices
from app.domain.errors import ProtocolError
from app.fleet.device import VirtualDevice
from app.protocol import messages as m
from app.protocol import topics
from app.transport.mqtt_link import MqttConnection
from tests.deploy.tcp_proxy import TcpProxy

# How long the broker may take to send a fresh subscription's retained messages and our marker back.
RETAINED_WAIT_S = 10.0


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


def device_message(url: str, device: VirtualDevice, kind: str, predicate: Callable[[object], bool],
                   timeout: float) -> object:
    """The first message on the device's `kind` topic (topics.STATUS, TELEMETRY, ...) that satisfies
    `predicate` (a retained one counts), within `timeout` seconds; an AssertionError otherwise."""
    got: queue.Queue = queue.Queue()
    conn = MqttConnection(url)
    conn.connect()
    try:
        conn.subscribe(topics.device_topic(device.site, device.device_id, kind),
                       lambda _t, payload: got.put(m.decode(payload).msg) if payload else None)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = got.get(timeout=left)
            except queue.Empty:
                break
            if predicate(msg):
                return msg
        raise AssertionError(f"no matching {kind} message from {device.device_id} in {timeout:g} s")
    finally:
        conn.close()


def retained_topics(url: str, topic_filter: str, marker: str, timeout: float = RETAINED_WAIT_S) -> list[str]:
    """The topics under `topic_filter` on which the broker holds a retained message. Mosquitto
    queues a new subscription's retained messages with its SUBACK, so every one of them arrives
    before `marker` (a topic the filter matches), published after the SUBACK: no sleep ends the count."""
    got: list[str] = []
    done = threading.Event()

    def handler(topic: str, payload: bytes) -> None:
        if topic == marker:
            done.set()
        elif payload:
            got.append(topic)

    conn = MqttConnection(url)
    conn.connect()
    try:
        conn.subscribe(topic_filter, handler)
        conn.wait_subscribed()
        conn.publish(marker, b"x", qos=1)
        if not done.wait(timeout):
            raise AssertionError(f"the marker on {marker} did not come back within {timeout:g} s")
    finally:
        conn.close()
    return got


def retained_under(url: str, prefix: str, timeout: float = RETAINED_WAIT_S) -> int:
    """How many retained messages the broker holds under `prefix/+` (a model's chunks)."""
    return len(retained_topics(url, f"{prefix}/+", f"{prefix}/count-marker", timeout))


@dataclass
class OperatorLink:
    proxy: TcpProxy
    conn: MqttConnection
    fired: threading.Event  # set once `fault` ran (never set without a fault)


@contextmanager
def operator_link(broker_port: int, devices: list[VirtualDevice],
                  fault: Callable[[TcpProxy], None] | None = None) -> Iterator[OperatorLink]:
    """The operator's connection to the broker, through a TcpProxy the test can break; `fault(proxy)`
    runs when the first device receives XFER_BEGIN (cut, take down or stall the operator's link
    at the moment a rollout has begun). Closed, proxy and connection, on leaving."""
    with TcpProxy(broker_port) as proxy:
        fired = on_command(devices, m.XferBegin, lambda _dev: fault(proxy)) if fault else threading.Event()
        conn = MqttConnection(proxy.url)
        conn.connect()
        try:
            yield OperatorLink(proxy, conn, fired)
        finally:
            conn.close()


def roll_out(conn: MqttConnection, image: bytes, device_ids: list[str], version: int,
             command_timeout_s: float) -> RolloutReport:
    """Roll `image` (pump-ae@`version`) out to `device_ids`, found by their retained HELLOs."""
    return Rollout(conn, image, find_devices(conn, device_ids), model_name="pump-ae", model_version=version,
                   command_timeout_s=command_timeout_s).run()


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
