"""An in-process serial link with faults, between the transfer engine and a VirtualDevice engine.

Every message really goes through the serial framing (COBS + CRC32, `app.protocol.framing`) in
both directions, and through a fault model driven by a seeded RNG: frames are dropped, have bytes
flipped (the receiver's CRC drops them), duplicated, reordered (held back and delivered after the
next frame), or the link "disconnects" (everything in flight is lost and the channel refuses to
send until the engine reconnects). A chunk whose data is corrupted *before* framing (a faulty
sender; the frame CRC is then valid) reaches the device and must be refused with CHUNK_CRC.

`LossyChannel` offers the DeviceChannel surface the engine uses (`send`, `request`,
`on_packet`, `close`); device delivery is synchronous, so hundreds of transfers run in seconds.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.domain.errors import Cancelled, DeviceError, LinkError
from app.protocol import framing
from app.protocol.codes import MsgType
from app.protocol.messages import Error, Message, Packet, decode, encode
from app.services.channel import CANCEL_POLL_S


@dataclass
class Faults:
    """Per-frame probabilities of each fault."""

    drop: float = 0.0
    flip: float = 0.0  # a byte flipped on the line (the frame CRC catches it)
    chunk_corrupt: float = 0.0  # chunk data corrupted before framing (the chunk CRC catches it)
    duplicate: float = 0.0
    reorder: float = 0.0
    disconnect: float = 0.0  # per host->device frame

    @classmethod
    def random(cls, rng: random.Random, severity: float = 1.0) -> Faults:
        return cls(drop=rng.uniform(0, 0.08) * severity, flip=rng.uniform(0, 0.05) * severity,
                   chunk_corrupt=rng.uniform(0, 0.04) * severity, duplicate=rng.uniform(0, 0.08) * severity,
                   reorder=rng.uniform(0, 0.10) * severity, disconnect=rng.uniform(0, 0.01) * severity)


class _Direction:
    """One way of the link: fault model, then the receiver's FrameDecoder, then the receiver."""

    def __init__(self, rng: random.Random, faults: Faults, deliver: Callable[[bytes], None]) -> None:
        self.rng = rng
        self.faults = faults
        self.deliver = deliver
        self.decoder = framing.FrameDecoder()
        self.held: list[bytes] = []
        self.counts: dict[str, int] = {}

    def _count(self, what: str) -> None:
        self.counts[what] = self.counts.get(what, 0) + 1

    def push(self, frame: bytes) -> None:
        f, rng = self.faults, self.rng
        if rng.random() < f.drop:
            self._count("dropped")
            return
        if rng.random() < f.flip:
            at = rng.randrange(len(frame) - 1)  # keep the delimiter
            frame = frame[:at] + bytes([frame[at] ^ (1 << rng.randrange(8)) or 1]) + frame[at + 1:]
            self._count("flipped")
        frames = [frame]
        if rng.random() < f.duplicate:
            frames.append(frame)
            self._count("duplicated")
        if rng.random() < f.reorder:
            self.held.extend(frames)  # overtaken by the next frame
            self._count("reordered")
            return
        for fr in frames + self.held:
            self._feed(fr)
        self.held.clear()

    def _feed(self, frame: bytes) -> None:
        for message in self.decoder.feed(frame):
            self.deliver(message)

    def flush(self) -> None:
        held, self.held = self.held, []
        for fr in held:
            self._feed(fr)

    def lose_in_flight(self) -> None:
        self.held.clear()
        self.decoder = framing.FrameDecoder()


class LossyLink:
    """Both directions between a host channel and a device engine `handle(bytes) -> list[bytes]`."""

    def __init__(self, device_handle: Callable[[bytes], list[bytes]], faults: Faults, seed: int) -> None:
        self.rng = random.Random(seed)
        self.faults = faults
        self.device_handle = device_handle
        self.lock = threading.RLock()
        self.host: LossyChannel | None = None
        self.down = _Direction(self.rng, faults, self._to_device)
        self.up = _Direction(self.rng, faults, self._to_host)
        self.disconnects = 0

    def _to_device(self, message: bytes) -> None:
        for reply in self.device_handle(message):
            self.up.push(framing.frame(reply))

    def _to_host(self, message: bytes) -> None:
        if self.host is not None:
            self.host._receive(message)

    def send_frame(self, message: bytes) -> None:
        with self.lock:
            if self.rng.random() < self.faults.chunk_corrupt and message[1] == MsgType.XFER_CHUNK \
                    and len(message) > 18:
                at = self.rng.randrange(18, len(message))
                message = message[:at] + bytes([message[at] ^ 0x5A]) + message[at + 1:]
                self.down.counts["chunk_corrupted"] = self.down.counts.get("chunk_corrupted", 0) + 1
            self.down.push(framing.frame(message))
            if self.rng.random() < self.faults.disconnect:
                self.disconnect()

    def disconnect(self) -> None:
        self.disconnects += 1
        self.down.lose_in_flight()
        self.up.lose_in_flight()
        if self.host is not None:
            self.host.alive = False

    def idle(self) -> None:
        """Deliver frames still held back for reordering (time passes on a quiet line)."""
        with self.lock:
            self.down.flush()
            self.up.flush()

    def channel(self) -> LossyChannel:
        """A fresh host channel (what a reconnect returns); the old one is dead."""
        if self.host is not None:
            self.host.alive = False
        self.host = LossyChannel(self)
        return self.host


class LossyChannel:
    """DeviceChannel surface over a LossyLink: fire-and-forget send, request with timeout/retries."""

    def __init__(self, link: LossyLink) -> None:
        self.link = link
        self.alive = True
        self._seq = link.rng.randrange(1, 0xFFFF)
        self._callbacks: list[Callable[[Packet], None]] = []
        self._waiting: dict[int, Packet | None] = {}
        self._cond = threading.Condition()

    def _next_seq(self) -> int:
        self._seq = (self._seq % 0xFFFF) + 1
        return self._seq

    def on_packet(self, callback: Callable[[Packet], None]) -> Callable[[], None]:
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def _receive(self, message: bytes) -> None:
        if not self.alive:
            return
        pkt = decode(message)
        with self._cond:
            if pkt.seq in self._waiting and self._waiting[pkt.seq] is None:
                self._waiting[pkt.seq] = pkt
                self._cond.notify_all()
        for cb in list(self._callbacks):
            cb(pkt)

    def send(self, msg: Message, seq: int | None = None) -> int:
        if not self.alive:
            raise LinkError("link is down")
        seq = self._next_seq() if seq is None else seq
        self.link.send_frame(encode(msg, seq))
        return seq

    def request(self, msg: Message, timeout: float = 1.0, retries: int = 0,
                cancel: threading.Event | None = None) -> Packet:
        seq = self._next_seq()
        with self._cond:
            self._waiting[seq] = None
        try:
            for _ in range(retries + 1):
                self.send(msg, seq)
                if self._waiting[seq] is None:
                    self.link.idle()  # the line goes quiet: frames held back for reordering arrive
                deadline = time.monotonic() + timeout
                with self._cond:
                    while self._waiting[seq] is None and (left := deadline - time.monotonic()) > 0:
                        if cancel is not None and cancel.is_set():
                            raise Cancelled("cancelled while waiting for a reply")
                        self._cond.wait(min(left, CANCEL_POLL_S))
                    pkt = self._waiting[seq]
                if pkt is not None:
                    if isinstance(pkt.msg, Error):
                        raise DeviceError(pkt.msg.message or f"error {pkt.msg.code}", code=pkt.msg.code)
                    return pkt
                if not self.alive:
                    raise LinkError("link went down")
            raise LinkError(f"no reply to {msg.TYPE.name} within {timeout} s")
        finally:
            with self._cond:
                self._waiting.pop(seq, None)

    def close(self) -> None:
        self.alive = False
