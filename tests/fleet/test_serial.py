"""A virtual device over a real pty with the serial adapter, unpaced and paced at a UART baud."""

import hashlib
import time

import pytest
import serial

from app.protocol import messages as m
from app.protocol.codes import ErrorCode
from app.protocol.framing import FrameDecoder, crc32, frame

READ_TIMEOUT_S = 10.0


class Port:
    def __init__(self, path: str) -> None:
        self.s = serial.Serial(path, 115200, timeout=0.1)
        self.dec = FrameDecoder()
        self.pending: list[m.Packet] = []

    def request(self, msg: m.Message, seq: int) -> m.Message:
        seq += 40000  # far from the device's own counter for unsolicited messages
        self.s.write(frame(m.encode(msg, seq)))
        return self.wait(lambda p: p.seq == seq and p.msg.TYPE < 0x20 and not isinstance(p.msg, m.Telemetry)).msg

    def wait(self, pred) -> m.Packet:
        deadline = time.monotonic() + READ_TIMEOUT_S
        while time.monotonic() < deadline:
            for p in self.pending:
                if pred(p):
                    self.pending.remove(p)
                    return p
            data = self.s.read(4096)
            self.pending += [m.decode(x) for x in self.dec.feed(data)]
        raise AssertionError("no matching frame")


def deploy(port: Port, image: bytes, chunk: int = 1024) -> m.Message:
    sha = hashlib.sha256(image).digest()
    st = port.request(m.XferBegin(1, len(image), chunk, 0, sha, "pump-ae", 3, ""), 1)
    assert isinstance(st, m.XferStatus)
    for i in range(st.n_chunks):  # pipelined: write all, then collect the ACKs
        data = image[i * chunk:(i + 1) * chunk]
        port.s.write(frame(m.encode(m.XferChunk(1, i, crc32(data), data), 30000 + i)))
    for i in range(st.n_chunks):
        assert isinstance(port.wait(lambda p, s=30000 + i: p.seq == s).msg, m.Ack)
    return port.request(m.XferCommit(1, 1, 0, 5), 2)


def test_serial_device_speaks_protocol_and_survives_garbage(virtual_fleet, model_image_v3):
    fleet = virtual_fleet(None, 1, serial=True)
    port = Port(fleet.serial_ports["sim-001"])
    try:
        hello = port.request(m.GetInfo(), 9)
        assert isinstance(hello, m.Hello) and hello.device_id == "sim-001"
        port.s.write(b"\x17garbage\x00\x00" + b"\xff" * 50 + b"\x00")
        bad = bytearray(frame(m.encode(m.GetInfo(), 10)))
        bad[3] ^= 0x40  # CRC no longer matches: dropped silently, counted
        port.s.write(bytes(bad))
        assert isinstance(port.request(m.GetInfo(), 11), m.Hello)
        assert port.request(m.Rollback(), 12).code == ErrorCode.NO_PREVIOUS
        tele = port.wait(lambda p: isinstance(p.msg, m.Telemetry)).msg
        assert tele.score > 0
        lat = deploy(port, model_image_v3)
        assert isinstance(lat, m.Latency) and lat.model_version == 3
        assert port.wait(lambda p: isinstance(p.msg, m.Telemetry) and p.msg.model_version == 3)
    finally:
        port.s.close()


@pytest.mark.parametrize("baud", [115200])
def test_paced_line_rate(virtual_fleet, model_image_v3, baud, capsys):
    """The emulated UART never carries a deployment faster than its 8N1 line rate (a lower bound:
    a loaded machine only makes it slower); prints the ratio, which benchmarks/ measures properly."""
    fleet = virtual_fleet(None, 1, serial=True, baud=baud)
    port = Port(fleet.serial_ports["sim-001"])
    try:
        port.request(m.GetInfo(), 1)
        image = model_image_v3
        wire = sum(len(frame(m.encode(m.XferChunk(1, i, 0, image[i * 1024:(i + 1) * 1024]), 0)))
                   for i in range(-(-len(image) // 1024)))
        started = time.perf_counter()
        lat = deploy(port, image)
        elapsed = time.perf_counter() - started
        assert isinstance(lat, m.Latency)
        floor = wire / (baud / 10)
        # 5%: the pacer's clock and this one start a few ms apart
        assert elapsed >= 0.95 * floor, (elapsed, floor)
        with capsys.disabled():
            print(f"\n  pty @ {baud} baud: {wire} chunk wire bytes, deployment {elapsed:.3f} s, "
                  f"line-rate floor {floor:.3f} s, ratio {elapsed / floor:.2f}")
    finally:
        port.s.close()
