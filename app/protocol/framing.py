"""Serial framing: COBS(message || crc32) || 0x00 (firmware/PROTOCOL.md section 2.1).

`FrameDecoder` is fed whatever bytes the port delivers, in any split, and yields whole messages;
garbage, bad CRCs and oversized frames are dropped and counted so the link survives them.
"""

from __future__ import annotations

import logging
import zlib
from collections import Counter
from collections.abc import Iterator

from cobs import cobs

from app.protocol.codes import HEADER_SIZE, MAX_FRAME

log = logging.getLogger(__name__)

CRC_SIZE = 4
DELIMITER = b"\x00"
# PROTOCOL.md 2.1: the rate every UART and the firmware start at; 921600 where the link allows.
DEFAULT_BAUD = 115200
# FrameDecoder's counters of frames dropped as line noise (unframe's ValueError names + oversized).
BAD_FRAME_COUNTERS = ("bad_cobs", "truncated", "bad_crc", "oversized")
# 8N1: start bit, 8 data bits, stop bit; the line-rate floor is wire bytes / (baud / 10).
UART_BITS_PER_BYTE = 10


def line_bytes_per_s(baud: int) -> float:
    """Bytes an 8N1 line carries per second at `baud`."""
    return baud / UART_BITS_PER_BYTE


def crc32(data: bytes | bytearray | memoryview) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def frame(message: bytes) -> bytes:
    """Wrap an encoded message for a serial line."""
    return cobs.encode(message + crc32(message).to_bytes(CRC_SIZE, "little")) + DELIMITER


def wire_size(message_len: int) -> int:
    """Bytes a message of this length costs on the line (worst-case COBS)."""
    body = message_len + CRC_SIZE
    return body + body // 254 + 1 + 1


def unframe(encoded: bytes) -> bytes:
    """Decode one frame without its delimiter; raises ValueError with the counter name."""
    try:
        raw = cobs.decode(encoded)
    except cobs.DecodeError as exc:
        raise ValueError("bad_cobs") from exc
    if len(raw) < HEADER_SIZE + CRC_SIZE:
        raise ValueError("truncated")
    body, crc = raw[:-CRC_SIZE], int.from_bytes(raw[-CRC_SIZE:], "little")
    if crc32(body) != crc:
        raise ValueError("bad_crc")
    return body


class FrameDecoder:
    """Incremental frame splitter with drop counters (`oversized`, `bad_cobs`, `truncated`, `bad_crc`)."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self.max_frame = max_frame
        self.counters: Counter[str] = Counter()
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        start = 0
        while start < len(data):
            end = data.find(0, start)
            piece = data[start:] if end < 0 else data[start:end]
            if not self._skipping:
                self._buf += piece
                if len(self._buf) > self.max_frame:
                    self.counters["oversized"] += 1
                    log.warning("dropped a frame longer than %d bytes", self.max_frame)
                    self._buf.clear()
                    self._skipping = True
            if end < 0:
                return
            start = end + 1
            if self._skipping:
                self._skipping = False
                continue
            if not self._buf:
                continue
            encoded = bytes(self._buf)
            self._buf.clear()
            try:
                message = unframe(encoded)
            except ValueError as exc:
                self.counters[str(exc)] += 1
                log.debug("dropped frame: %s", exc)
                continue
            self.counters["frames"] += 1
            yield message
