"""Device side of the serial transport over a pseudo-terminal (PROTOCOL.md 2.1).

The adapter creates a pty with `os.openpty`; the host opens `slave_path` like any serial port.
Frames are COBS + CRC32 (app.protocol.framing). With `baud` set, both directions are paced at the
UART line rate, 10 bit times per byte (8N1), so a deployment over the pty takes as long as it
would over a real cable at that baud and its figures mean something.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import select
import threading
import time
import tty

from app.fleet.device import Outgoing, VirtualDevice
from app.protocol.framing import FrameDecoder, frame, line_bytes_per_s

log = logging.getLogger(__name__)

# Time a UART's receive FIFO/DMA keeps the line busy while the device processes what it read.
UART_FIFO_S = 0.0005
# The reader wakes this often to notice `stop()`.
POLL_S = 0.2
# Bytes read per pacing step at a line rate: small enough that pacing is smooth.
PACED_READ = 64
# Bytes read at once without pacing.
READ_SIZE = 65536
# Frames waiting for the line; beyond this, telemetry and stream frames are dropped (a slow baud
# cannot carry a 3.2 kHz stream; replies are always kept).
MAX_TX_QUEUE = 64
# Nobody reading the pty for this long: the frame is dropped, as a UART with no listener loses it.
WRITE_STALL_S = 0.2


class LinePacer:
    """Holds a stream to `baud` bits per second at 10 bits per byte: one direction of a UART.

    The line stays busy from one burst to the next when the caller is late only because our own
    `time.sleep` overshot (plus the device's processing time while its UART FIFO keeps receiving);
    real idle time (nothing to send) is lost as on a real line. Without that, every sleep overshoot
    would count as line time and a fast link would look slower than its wire rate.
    """

    def __init__(self, baud: int | None) -> None:
        if baud is not None and baud <= 0:
            raise ValueError("baud must be positive")
        self.baud = baud
        self._free_at = 0.0
        self._late_allowance = 0.0
        self._lock = threading.Lock()

    def wait(self, nbytes: int) -> None:
        """Block until `nbytes` more bytes have had time to cross the line."""
        if not self.baud:
            return
        with self._lock:
            now = time.monotonic()
            busy = now - self._free_at <= self._late_allowance
            self._free_at = (self._free_at if busy else now) + nbytes / line_bytes_per_s(self.baud)
            target = self._free_at
            delay = target - now
        if delay > 0:
            time.sleep(delay)
            with self._lock:
                self._late_allowance = max(0.0, time.monotonic() - target) + UART_FIFO_S


class SerialDevice:
    """Connects one VirtualDevice to a fresh pty; `pump(now)` runs its tick."""

    def __init__(self, device: VirtualDevice, baud: int | None = None) -> None:
        self.device = device
        self.baud = baud
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: a byte pipe like a UART
        os.set_blocking(self._master, False)
        self.slave_path = os.ttyname(self._slave)
        self._rx = LinePacer(baud)
        self._tx = LinePacer(baud)
        self._decoder = FrameDecoder()
        self._txq: queue.Queue[bytes | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self.counters: dict[str, int] = {"rx_bytes": 0, "tx_bytes": 0, "tx_dropped": 0}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._read_loop, name=f"pty-{self.device.device_id}", daemon=True)
        self._thread.start()
        self._writer = threading.Thread(target=self._write_loop, name=f"pty-tx-{self.device.device_id}",
                                        daemon=True)
        self._writer.start()
        self._send([("status", self._hello())])

    def stop(self) -> None:
        self._stop.set()
        self._txq.put(None)
        for thread in (self._thread, self._writer):
            if thread:
                thread.join(2.0)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def _hello(self) -> bytes:
        from app.protocol.messages import encode

        return encode(self.device.hello(), 0)

    def pump(self, now: float | None = None) -> None:
        self._send(self.device.tick(time.monotonic() if now is None else now))

    def _read_loop(self) -> None:
        size = PACED_READ if self.baud else READ_SIZE
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], POLL_S)
                if not ready:
                    continue
                data = os.read(self._master, size)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    continue
                if self._stop.is_set() or exc.errno == errno.EBADF:
                    return
                log.debug("%s: pty read: %s", self.device.device_id, exc)  # EIO: no host attached
                time.sleep(POLL_S)
                continue
            if not data:
                continue
            self._rx.wait(len(data))
            self.counters["rx_bytes"] += len(data)
            try:
                for message in self._decoder.feed(data):
                    self._send(self.device.handle(message))
            except Exception:  # the reader thread must survive anything
                log.exception("%s: failed handling serial input", self.device.device_id)

    def _send(self, out: list[Outgoing]) -> None:
        """Queue frames for the writer thread: a paced line never stalls the caller."""
        for channel, message in out:
            if channel in ("telemetry", "stream") and self._txq.qsize() >= MAX_TX_QUEUE:
                self.counters["tx_dropped"] += 1
                continue
            self._txq.put(frame(message))

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            data = self._txq.get()
            if data is None:
                return
            self._tx.wait(len(data))
            self._write(data)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + WRITE_STALL_S
        while view:
            try:
                n = os.write(self._master, view)
                view = view[n:]
                self.counters["tx_bytes"] += n
            except BlockingIOError:
                if time.monotonic() > deadline or self._stop.is_set():
                    self.counters["tx_dropped"] += 1
                    return
                time.sleep(0.002)
            except OSError as exc:
                self.counters["tx_dropped"] += 1
                log.debug("%s: pty write: %s", self.device.device_id, exc)
                return
