"""Opening a channel to one device (serial port, pty, socket:// or via an MQTT broker).

The deploy API works on DeviceChannels; this module is the one place that knows how to reach a
device from what an operator types (`--via serial --port ...` or `--via mqtt --broker ...`).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.domain.errors import LinkError
from app.protocol.framing import DEFAULT_BAUD
from app.protocol.messages import GetInfo, Hello
from app.transport.local_broker import NO_BROKER_HINT, resolve_broker

if TYPE_CHECKING:
    from app.services.channel import DeviceChannel, MqttChannel
    from app.transport.mqtt_link import MqttConnection

log = logging.getLogger(__name__)

# GET_INFO answers at once; a serial device may be mid-frame, so allow one resend.
INFO_TIMEOUT_S = 3.0
INFO_RETRIES = 2


@dataclass
class DeviceLink:
    """A channel to one device, what it said about itself, and how to get a fresh channel."""

    channel: DeviceChannel
    hello: Hello
    transport: str  # "serial" or "mqtt"
    reconnect: Callable[[], DeviceChannel] | None = None
    baud: int | None = None
    port: str | None = None
    broker: str | None = None


def get_info(channel: DeviceChannel, device_id: str = "?", timeout: float = INFO_TIMEOUT_S) -> Hello:
    try:
        return channel.request(GetInfo(), timeout=timeout, retries=INFO_RETRIES).msg
    except LinkError as exc:
        raise LinkError(f"device {device_id} did not answer GET_INFO: {exc}") from exc


@contextlib.contextmanager
def serial_device(port: str, baud: int = DEFAULT_BAUD, expect_id: str | None = None) -> Iterator[DeviceLink]:
    """The device on a serial port; LinkError when it is someone else than `expect_id`."""
    from app.services.channel import SerialChannel

    state = {"channel": SerialChannel.open(port, baud)}

    def reconnect():
        with contextlib.suppress(Exception):
            state["channel"].close()
        state["channel"] = SerialChannel.open(port, baud)
        return state["channel"]

    try:
        hello = get_info(state["channel"], expect_id or port)
        if expect_id and hello.device_id != expect_id:
            raise LinkError(f"{port} is device {hello.device_id!r}, not {expect_id!r}")
        yield DeviceLink(state["channel"], hello, "serial", reconnect, baud=baud, port=port)
    finally:
        with contextlib.suppress(Exception):
            state["channel"].close()


@contextlib.contextmanager
def broker_connection(url: str | None) -> Iterator[MqttConnection]:
    from app.transport.mqtt_link import MqttConnection

    target = resolve_broker(url)
    conn = MqttConnection(target, client_id=f"tinymlops-cli-{secrets.token_hex(4)}")
    try:
        conn.connect()  # mqtt_link.CONNECT_TIMEOUT_S
    except LinkError as exc:
        if url:
            raise
        raise LinkError(f"{exc} ({NO_BROKER_HINT})") from exc
    # retained chunks an earlier rollout could not clear (broker unreachable then): clear them now
    # and whenever this connection comes back (issue 11.14)
    from app.services import cleanups

    cleanups.finish_pending(conn)
    cleanups.finish_on_reconnect(conn)
    try:
        yield conn
    finally:
        conn.close()


def mqtt_channel(connection: MqttConnection, site: str, device_id: str) -> MqttChannel:
    from app.services.channel import MqttChannel

    return MqttChannel(connection, site, device_id)


@contextlib.contextmanager
def mqtt_device(connection: MqttConnection, device_id: str, broker: str | None = None,
                known: Hello | None = None) -> Iterator[DeviceLink]:
    """One device through the broker: its site from its retained HELLO, then a fresh GET_INFO.

    `known`, the device's HELLO the caller already holds (its retained status, the fleet monitor's
    record), saves both: a device publishes its HELLO again on every change of state or model."""
    if known is None:
        from app.deploy.rollout import find_devices, not_online

        found = find_devices(connection, [device_id])
        if device_id not in found:
            raise LinkError(not_online(connection, device_id, broker))
        site, hello = found[device_id].site, None
    else:
        site, hello = known.site, known
    channel = mqtt_channel(connection, site, device_id)
    try:
        hello = hello or get_info(channel, device_id)
        yield DeviceLink(channel, hello, "mqtt", None, broker=broker)
    finally:
        with contextlib.suppress(Exception):
            channel.close()


@contextlib.contextmanager
def open_device(device: str | None, via: str, broker: str | None = None, port: str | None = None,
                baud: int = DEFAULT_BAUD, connection=None, known: Hello | None = None) -> Iterator[DeviceLink]:
    """One device by how the operator named it: `--via serial --port P` (the device there, checked
    against `device` when given) or `--via mqtt --device ID` (on `connection`, else a new one).
    `known`: over MQTT, its HELLO the caller already holds (see mqtt_device)."""
    if via == "serial":
        if not port:
            raise LinkError("--port is required over serial")
        with serial_device(port, baud, device) as link:
            yield link
        return
    if via != "mqtt":
        raise LinkError(f"unknown transport {via!r}: use 'serial' or 'mqtt'")
    if not device:
        raise LinkError("name the --device")
    if connection is not None:
        with mqtt_device(connection, device, broker, known=known) as link:
            yield link
        return
    with broker_connection(broker) as conn, mqtt_device(conn, device, broker, known=known) as link:
        yield link
