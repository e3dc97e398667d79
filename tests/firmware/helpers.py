"""Talking to the emulated device in tests: a channel plus a queue of everything it sends."""

from __future__ import annotations

import queue
import socket
import time

from app.protocol import messages as m
from app.protocol.codes import EventCode
from app.protocol.framing import FrameDecoder, frame
from app.services.channel import SerialChannel

# Telemetry comes every emulated second (about one real second under -icount); allow slack.
TELEMETRY_WAIT_S = 10.0


class Device:
    """A SerialChannel to the emulator that also queues every packet it receives."""

    def __init__(self, url: str) -> None:
        self.channel = SerialChannel.open(url)
        self.packets: queue.Queue[m.Packet] = queue.Queue()
        self.channel.on_packet(self.packets.put)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, msg: m.Message, timeout: float = 5.0) -> m.Packet:
        return self.channel.request(msg, timeout=timeout)

    def wait_for(self, kind: type, timeout: float = TELEMETRY_WAIT_S, where=lambda msg: True) -> m.Message:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind.__name__} within {timeout} s")
            try:
                packet = self.packets.get(timeout=left)
            except queue.Empty:
                continue
            if isinstance(packet.msg, kind) and where(packet.msg):
                return packet.msg

    def telemetry(self, count: int) -> list[m.Telemetry]:
        self.drain()
        return [self.wait_for(m.Telemetry) for _ in range(count)]

    def drain(self) -> None:
        while not self.packets.empty():
            self.packets.get_nowait()


def raw_exchange(port: int, data: bytes, wait_s: float = 1.5) -> list[m.Packet]:
    """Send raw bytes on the serial socket and collect the replies (no telemetry, and no BOOTED
    event: a test that connects while the emulator is still booting would see it first)."""
    decoder = FrameDecoder()
    out: list[m.Packet] = []
    with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
        s.sendall(data)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                continue
            for msg in decoder.feed(chunk):
                packet = m.decode(msg)
                if isinstance(packet.msg, m.Telemetry | m.Stream):
                    continue
                if isinstance(packet.msg, m.Event) and packet.msg.code == EventCode.BOOTED:
                    continue
                out.append(packet)
    return out


def framed(msg: m.Message, seq: int) -> bytes:
    return frame(m.encode(msg, seq))
