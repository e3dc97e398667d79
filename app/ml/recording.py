"""Collect a device's STREAM messages into a recording of whole feature windows.

STREAM messages carry 256 samples each with a running `window_seq`; a gap in that sequence (a
lost QoS 0 message) breaks continuity, so the partial feature window in progress is dropped and
only windows of contiguous samples are kept: a dataset never holds a window with a hole in it.
Transport-free: the caller feeds messages from whatever channel delivers them.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable

import numpy as np

from app.domain.errors import DataError
from app.ml.features import DEFAULT_SPEC, FeatureSpec
from app.protocol.messages import Stream

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, float, str], None]


class StreamRecorder:
    """Feed STREAM messages until `windows` whole feature windows are collected (thread-safe)."""

    def __init__(self, seconds: float, spec: FeatureSpec = DEFAULT_SPEC,
                 progress: ProgressFn | None = None) -> None:
        if not seconds > 0:
            raise DataError("recording length must be positive")
        self.spec = spec
        self.windows = max(1, math.ceil(seconds * spec.sample_rate / spec.window))
        self.progress = progress
        self.gaps = 0
        self.received = 0
        self.error: DataError | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._complete: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []
        self._pending_n = 0
        self._last_seq: int | None = None

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def feed(self, msg: Stream) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self.received += 1
            if msg.sample_rate != self.spec.sample_rate:
                self.error = DataError(f"the device streams at {msg.sample_rate} Hz but feature spec "
                                       f"{self.spec.spec_id} needs {self.spec.sample_rate} Hz")
                self._done.set()
                return
            if msg.samples.ndim != 2 or msg.samples.shape[1] != len(self.spec.axes):
                self.error = DataError(f"the device streams {msg.samples.shape[1]} axes, not "
                                       f"{len(self.spec.axes)}")
                self._done.set()
                return
            if self._last_seq is not None and msg.window_seq != (self._last_seq + 1) & 0xFFFFFFFF:
                self.gaps += 1
                self._pending, self._pending_n = [], 0
                log.debug("stream gap after window %d (got %d)", self._last_seq, msg.window_seq)
            self._last_seq = msg.window_seq
            self._pending.append(msg.samples.astype(np.float32) * np.float32(msg.scale))
            self._pending_n += len(msg.samples)
            while self._pending_n >= self.spec.window and len(self._complete) < self.windows:
                block = np.concatenate(self._pending)
                self._complete.append(block[: self.spec.window])
                rest = block[self.spec.window:]
                self._pending, self._pending_n = ([rest] if len(rest) else []), len(rest)
            count = len(self._complete)
            if count >= self.windows:
                self._done.set()
        if self.progress:
            self.progress("record", count / self.windows, f"{count}/{self.windows} windows"
                          + (f", {self.gaps} gaps" if self.gaps else ""))

    def wait(self, timeout: float) -> bool:
        return self._done.wait(timeout)

    def samples(self) -> np.ndarray:
        """The recording: whole windows back to back, float32 (k * window, 3) in g."""
        with self._lock:
            if self.error is not None:
                raise self.error
            if not self._complete:
                return np.zeros((0, len(self.spec.axes)), np.float32)
            return np.concatenate(self._complete).astype(np.float32)
