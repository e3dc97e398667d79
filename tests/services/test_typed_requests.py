"""Typed requests: each command names its reply types (firmware/PROTOCOL.md section 3), a channel
matches replies by them, and both transports a channel sits on are DeviceTransports."""

from __future__ import annotations

import re
from pathlib import Path

from app.protocol import messages as m
from app.services.channel import MqttChannel, SerialChannel
from app.transport.device_link import DeviceTransport, MqttDeviceLink
from app.transport.mqtt_link import MqttConnection
from app.transport.serial_link import SerialLink
from tests.transport.ptys import PtyDevice

PROTOCOL = Path(__file__).resolve().parents[2] / "firmware" / "PROTOCOL.md"


def _spec_replies() -> dict[str, set[str]]:
    """command name -> the message names whose "reply to" column in section 3 lists it."""
    replies: dict[str, set[str]] = {}
    for line in PROTOCOL.read_text(encoding="utf-8").splitlines():
        row = re.match(r"\| `0x0\d` \| (\w+) \| [^|]+ \| ([^|]+) \|$", line)
        if row is None:
            continue
        reply, commands = row.groups()
        for command in re.findall(r"\b[A-Z][A-Z_]{2,}\b", commands.split(";")[0]):
            replies.setdefault(command, set()).add(reply)
    return replies


def test_every_command_names_the_replies_the_protocol_gives_it():
    spec = _spec_replies()
    commands = [cls for cls in m.MESSAGE_CLASSES.values() if cls.TYPE >= 0x20]
    assert commands and spec
    for cls in commands:
        assert issubclass(cls, m.Request), f"{cls.__name__} is a command but not a Request"
        named = {reply.TYPE.name for reply in cls.REPLY}
        assert spec.get(cls.TYPE.name, set()) <= named, (cls.__name__, named, spec.get(cls.TYPE.name))
        assert named, f"{cls.__name__} names no reply"
    assert (m.Hello,) == m.GetInfo.REPLY and (m.Hello, m.Ack) == m.Confirm.REPLY


def test_serial_and_mqtt_links_are_device_transports(mosquitto_url: str):
    pty = PtyDevice()
    try:
        link = SerialLink(pty.path)
        assert isinstance(link, DeviceTransport)
        with SerialChannel(link) as channel:
            assert channel.transport is link
    finally:
        pty.close()
    with MqttConnection(mosquitto_url) as conn, MqttChannel(conn, "plant-t", "dev-t") as channel:
        assert isinstance(channel.transport, MqttDeviceLink)
        assert isinstance(channel.transport, DeviceTransport)
