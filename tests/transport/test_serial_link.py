"""SerialLink and SerialChannel over a real pty pair."""

from __future__ import annotations

import threading

import pytest

from app.domain.errors import DeviceError, LinkError
from app.protocol import messages as m
from app.protocol.codes import MAX_FRAME, ErrorCode
from app.protocol.framing import FrameDecoder, frame
from app.services.channel import SEQ_MODULO, SerialChannel
from app.transport.serial_link import SerialLink
from tests.transport.helpers import wait_until
from tests.transport.ptys import PtyDevice

# The responder thread answers over a pty in milliseconds; the wait it gets while other workers keep
# both cores busy (one attempt: these requests must not be resent).
REPLY_S = 10.0


@pytest.fixture
def pty() -> PtyDevice:
    dev = PtyDevice()
    yield dev
    dev.close()


def _hello(n: int) -> bytes:
    return m.encode(m.Hello(device_id=f"dev-{n}", uptime_s=n), n)


def test_valid_frames_survive_garbage_bad_crc_truncated_and_oversized(pty: PtyDevice) -> None:
    got: list[bytes] = []
    with SerialLink(pty.path) as link:
        link.on_message(got.append)
        good = frame(_hello(1))
        bad_crc = bytearray(frame(_hello(99)))
        bad_crc[5] ^= 0x01  # still valid COBS (non-zero byte changed to non-zero), CRC now wrong
        if bad_crc[5] == 0:
            bad_crc[5] = 0x55
        stream = (
            b"\xff\xfe line noise \x01\x02\x00"  # garbage terminated by a delimiter
            + good
            + bytes(bad_crc)
            + frame(_hello(2))[:7] + b"\x00"  # truncated frame
            + frame(_hello(3))
            + b"\x07" * (MAX_FRAME + 100) + b"\x00"  # oversized
            + frame(_hello(4))
        )
        for i in range(0, len(stream), 333):  # arbitrary splits, as a UART delivers them
            pty.write(stream[i : i + 333])
        wait_until(lambda: len(got) == 3, what="three valid frames")
        assert [m.decode(x).msg.device_id for x in got] == ["dev-1", "dev-3", "dev-4"]
        counters = link.counters
        assert counters["bad_crc"] == 1
        assert counters["oversized"] == 1
        assert counters["truncated"] + counters["bad_cobs"] >= 2  # the garbage and the cut-off frame
        assert link.is_open


def test_send_frames_the_message(pty: PtyDevice) -> None:
    with SerialLink(pty.path) as link:
        link.send(_hello(7))
        decoder = FrameDecoder()
        out: list[bytes] = []
        wait_until(lambda: out.extend(decoder.feed(pty.read())) or out, what="frame at the device")
        assert out == [_hello(7)]


def test_port_vanishing_reports_state_and_send_raises(pty: PtyDevice) -> None:
    states: list[tuple[bool, str]] = []
    link = SerialLink(pty.path).open()
    link.on_state(lambda up, reason: states.append((up, reason)))
    pty.vanish()
    wait_until(lambda: states, what="state change")
    assert states[0][0] is False and "lost" in states[0][1]
    with pytest.raises(LinkError, match="vanished"):
        link.send(_hello(1))
    link.close()  # safe after the port vanished, and no reader thread is left behind
    assert not [t for t in threading.enumerate() if t.name == f"serial-reader {pty.path}"]


def test_open_missing_port_is_a_link_error() -> None:
    with pytest.raises(LinkError, match="cannot open serial port /dev/does-not-exist"):
        SerialLink("/dev/does-not-exist").open()


class Responder:
    """A minimal device on the pty master: answers GET_INFO with HELLO, BENCHMARK with ERROR."""

    def __init__(self, pty: PtyDevice, answer: bool = True) -> None:
        self.pty = pty
        self.answer = answer
        self.seen: list[m.Packet] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        decoder = FrameDecoder()
        while not self._stop.is_set():
            for raw in decoder.feed(self.pty.read(0.05)):
                packet = m.decode(raw)
                self.seen.append(packet)
                if not self.answer:
                    continue
                # an unsolicited HELLO carrying the same seq must not be taken for the reply
                self.pty.write(frame(m.encode(m.Telemetry(score=1.0), packet.seq)))
                if isinstance(packet.msg, m.GetInfo):
                    reply = m.Hello(device_id="pty-dev")
                else:
                    reply = m.Error(ref_type=packet.msg.TYPE, code=ErrorCode.NO_MODEL, message="no model")
                self.pty.write(frame(m.encode(reply, packet.seq)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


def test_channel_request_reply_and_listeners(pty: PtyDevice) -> None:
    device = Responder(pty)
    seen: list[m.Packet] = []
    with SerialChannel.open(pty.path) as channel:
        channel.on_packet(seen.append)
        reply = channel.request(m.GetInfo(), timeout=REPLY_S, retries=0)
        assert reply.msg == m.Hello(device_id="pty-dev")
        with pytest.raises(DeviceError, match="NO_MODEL") as err:
            channel.request(m.Benchmark(count=3), timeout=REPLY_S, retries=0)
        assert err.value.code == ErrorCode.NO_MODEL
        wait_until(lambda: sum(isinstance(p.msg, m.Telemetry) for p in seen) == 2, what="unsolicited telemetry")
    device.stop()


def test_channel_retries_then_link_error(pty: PtyDevice) -> None:
    device = Responder(pty, answer=False)
    with SerialChannel.open(pty.path) as channel:
        with pytest.raises(LinkError, match=r"no reply from .* to GET_INFO after 3 attempts"):
            channel.request(m.GetInfo(), timeout=0.2, retries=2)
        wait_until(lambda: len(device.seen) == 3)
        assert len({p.seq for p in device.seen}) == 1  # retries reuse the seq: the device can drop duplicates
        assert channel.counters["retries"] == 2
    device.stop()


def test_sequence_numbers_wrap_at_16_bits(pty: PtyDevice) -> None:
    with SerialChannel.open(pty.path) as channel:
        channel._seq = SEQ_MODULO - 2
        assert [channel.next_seq() for _ in range(3)] == [SEQ_MODULO - 1, 0, 1]


def test_channel_send_after_port_vanished_raises(pty: PtyDevice) -> None:
    with SerialChannel.open(pty.path) as channel:
        pty.vanish()
        wait_until(lambda: not channel.link.is_open)
        with pytest.raises(LinkError):
            channel.send(m.GetInfo())
