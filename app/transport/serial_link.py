"""Serial link: pyserial port + reader thread + COBS/CRC framing (PROTOCOL.md section 2.1).

Works with real ports, ptys (`/dev/pts/N`) and pyserial URLs such as `socket://host:port` (QEMU).
The reader thread survives any input: bad frames are counted by the FrameDecoder and the link
carries on; a vanished port ends the thread quietly with on_state(False, reason).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable

import serial

from app.domain.errors import LinkError, ProtocolError
from app.protocol.codes import MAX_MESSAGE, ErrorCode
from app.protocol.framing import BAD_FRAME_COUNTERS, DEFAULT_BAUD, FrameDecoder, frame
from app.transport.callbacks import call_each

log = logging.getLogger(__name__)

# Reader poll period: bounds how long close() waits for the reader thread to notice.
READ_TIMEOUT_S = 0.1
# A write that cannot drain (nobody reads the other end, flow stalled) fails instead of hanging.
# 4.3 KB at 115200 baud takes 0.37 s; 5 s leaves room for slow USB adapters.
WRITE_TIMEOUT_S = 5.0
# Largest single read; a frame is at most 4256 bytes, so this drains a burst in a few calls.
READ_CHUNK = 8192
# Time close() waits for the reader thread to end.
JOIN_TIMEOUT_S = 2.0

MessageCallback = Callable[[bytes], None]
StateCallback = Callable[[bool, str], None]


class SerialLink:
    """One serial port speaking framed protocol v1 messages."""

    def __init__(self, url: str, baud: int = DEFAULT_BAUD) -> None:
        self.url = url
        self.baud = baud
        self._port: serial.SerialBase | None = None
        self._decoder = FrameDecoder()
        self._stats: Counter[str] = Counter()
        self._message_callbacks: list[MessageCallback] = []
        self._state_callbacks: list[StateCallback] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._reader: threading.Thread | None = None
        self._stop = threading.Event()
        self._open = False
        self.last_error = ""

    # ------------------------------------------------------------------ lifecycle

    @property
    def is_open(self) -> bool:
        return self._open

    # Counters of frames from the device dropped as line noise: the decoder's, and its own failures.
    BAD_FRAME_COUNTERS = (*BAD_FRAME_COUNTERS, "decoder_errors")

    @property
    def counters(self) -> Counter[str]:
        """Frame counters (`frames`, `bad_crc`, `bad_cobs`, `truncated`, `oversized`) plus byte counts."""
        total = Counter(dict(self._decoder.counters))  # dict() copies atomically while the reader counts
        total.update(dict(self._stats))
        return total

    def open(self) -> SerialLink:
        """Open the port; after the port vanished this reopens it (same callbacks, fresh decoder)."""
        if self._open:
            return self
        stale, self._port = self._port, None
        if stale is not None:  # the handle of a vanished port: its reader has ended or is ending
            try:
                stale.close()
            except (serial.SerialException, OSError):
                pass
        try:
            port = serial.serial_for_url(self.url, baudrate=self.baud, timeout=READ_TIMEOUT_S,
                                         write_timeout=WRITE_TIMEOUT_S)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkError(f"cannot open serial port {self.url}: {exc}") from exc
        self._port = port
        self.last_error = ""
        self._decoder = FrameDecoder()
        self._stop.clear()
        self._open = True
        self._reader = threading.Thread(target=self._read_loop, args=(port,), name=f"serial-reader {self.url}",
                                        daemon=True)
        self._reader.start()
        self._notify(True, "opened")
        log.info("opened serial port %s at %d baud", self.url, self.baud)
        return self

    def close(self) -> None:
        """Stop the reader and close the port; safe to call twice and after the port vanished."""
        self._stop.set()
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(JOIN_TIMEOUT_S)
        self._reader = None
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass
        if self._open:
            self._open = False
            self._notify(False, "closed")

    def __enter__(self) -> SerialLink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def on_message(self, callback: MessageCallback) -> None:
        """`callback(message_bytes)` for every valid frame, on the reader thread."""
        with self._lock:
            self._message_callbacks.append(callback)

    def on_state(self, callback: StateCallback) -> None:
        """`callback(open, reason)` when the port opens, closes or vanishes."""
        with self._lock:
            self._state_callbacks.append(callback)

    # ------------------------------------------------------------------ I/O

    def send(self, message: bytes) -> int:
        """Frame one encoded message and write it; returns the bytes written (the frame), LinkError
        when the port is closed or gone."""
        if len(message) > MAX_MESSAGE:
            raise ProtocolError(f"message of {len(message)} bytes exceeds {MAX_MESSAGE}", code=ErrorCode.BAD_ARGUMENT)
        port = self._port
        if port is None or not self._open:
            if self.last_error:
                raise LinkError(f"serial port {self.url} vanished ({self.last_error})")
            raise LinkError(f"serial port {self.url} is not open")
        data = frame(message)
        try:
            with self._write_lock:
                port.write(data)
        except serial.SerialTimeoutException as exc:
            raise LinkError(f"write to serial port {self.url} timed out after {WRITE_TIMEOUT_S:.0f} s") from exc
        except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
            # TypeError/AttributeError: pyserial's handle became None because another thread closed it.
            self._lost(f"write failed: {exc}")
            raise LinkError(f"serial port {self.url} vanished: {exc}") from exc
        self._stats["bytes_out"] += len(data)
        self._stats["sent"] += 1
        return len(data)

    def _read_loop(self, port: serial.SerialBase) -> None:
        while not self._stop.is_set():
            try:
                waiting = port.in_waiting
                data = port.read(min(max(waiting, 1), READ_CHUNK))
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                if not self._stop.is_set() and port is self._port:  # not the stale handle of a reopened port
                    self._lost(f"read failed: {exc}")
                return
            if not data:
                continue
            self._stats["bytes_in"] += len(data)
            try:
                messages = list(self._decoder.feed(data))
            except Exception:  # the decoder is meant never to raise; if it does, keep reading
                self._stats["decoder_errors"] += 1
                log.exception("frame decoder failed on %d bytes from %s", len(data), self.url)
                self._decoder = FrameDecoder()
                continue
            with self._lock:
                callbacks = list(self._message_callbacks)
            for message in messages:
                call_each(callbacks, (message,), log, "message callback on %s failed", self.url,
                          errors=self._stats, error_key="callback_errors")

    def _lost(self, reason: str) -> None:
        if not self._open:
            return
        self._open = False
        self.last_error = reason
        log.warning("serial port %s lost: %s", self.url, reason)
        self._notify(False, f"serial port {self.url} lost: {reason}")

    def _notify(self, is_open: bool, reason: str) -> None:
        with self._lock:
            callbacks = list(self._state_callbacks)
        call_each(callbacks, (is_open, reason), log, "state callback on %s failed", self.url)
