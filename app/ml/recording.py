"""Collect a device's STREAM messages into a recording of whole feature windows.

STREAM messages carry 256 samples each with a running `window_seq`; a gap in that sequence (a
lost QoS 0 message) breaks continuity, so the partial feature window in progress is dropped and
only windows of contiguous samples are kept: a dataset never holds a window with a hole in it.
Transport-free: `record_stream` listens on whatever delivers a device's stream (the GUI session's
fleet monitor, or one the command line opens on a broker or a serial port), so the GUI and
`tinymlops data record` record the same way.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from app.domain.errors import Cancelled, DataError, LinkError
from app.ml.datasets import MAX_SAMPLES, MIN_DATASET_WINDOWS
from app.ml.features import DEFAULT_SPEC, FeatureSpec
from app.protocol.messages import Stream

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, float, str], None]
StreamCallback = Callable[[str, Stream], None]

# A recording may take this factor of its nominal length (lost windows are replaced by later ones) ...
RECORD_TIME_FACTOR = 1.5
# ... plus this for the stream request to reach the device and the first windows to come back.
STREAM_START_GRACE_S = 10.0
# How often a recording in progress looks at its cancel flag.
CANCEL_POLL_S = 0.1


class StreamSource(Protocol):
    """What record_stream needs of a fleet monitor (app.services.fleet_monitor.FleetMonitor)."""

    def get(self, device_id: str) -> Any:
        """The device's record (online, last_seen, location, profile, firmware, model, hello), or None."""

    def add_stream_listener(self, device_id: str, callback: StreamCallback) -> None: ...

    def remove_stream_listener(self, device_id: str, callback: StreamCallback) -> None: ...


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


def new_recorder(seconds: float, progress: ProgressFn | None = None,
                 spec: FeatureSpec = DEFAULT_SPEC) -> StreamRecorder:
    """A StreamRecorder for `seconds`; DataError before any device is asked when no dataset could
    hold the recording (too short for training, longer than one dataset holds)."""
    recorder = StreamRecorder(seconds, spec, progress=progress)
    if recorder.windows < MIN_DATASET_WINDOWS:
        shortest = MIN_DATASET_WINDOWS * spec.window / spec.sample_rate
        raise DataError(f"{seconds:g} s gives {recorder.windows} windows; a dataset needs at least "
                        f"{MIN_DATASET_WINDOWS} ({shortest:.1f} s)")
    if recorder.windows * spec.window > MAX_SAMPLES:
        longest = MAX_SAMPLES / spec.sample_rate
        raise DataError(f"{seconds:g} s is longer than one dataset holds (at most {longest:.0f} s); record "
                        "several shorter datasets and train on all of them")
    return recorder


def record_stream(source: StreamSource, device_id: str, recorder: StreamRecorder, *,
                  cancel: threading.Event | None = None, hint: str = "") -> tuple[np.ndarray, dict]:
    """Listen to `device_id`'s stream on `source` until `recorder` is full: (samples, metadata from
    the device's HELLO). LinkError when the device is offline or the stream does not deliver in
    time (`hint` is appended: what may be wrong with this link), Cancelled when `cancel` is set
    (nothing is kept)."""
    record = source.get(device_id)
    if record is None or not record.online:
        seen = f" (last seen {time.ctime(record.last_seen)})" if record is not None and record.last_seen else ""
        raise LinkError(f"device {device_id!r} is offline{seen}")
    spec = recorder.spec
    seconds = recorder.windows * spec.window / spec.sample_rate

    def on_stream(_device_id: str, msg: Stream) -> None:
        recorder.feed(msg)

    source.add_stream_listener(device_id, on_stream)
    try:
        deadline = time.monotonic() + seconds * RECORD_TIME_FACTOR + STREAM_START_GRACE_S
        while not recorder.wait(CANCEL_POLL_S):
            if cancel is not None and cancel.is_set():
                raise Cancelled("recording cancelled; nothing was stored")
            if time.monotonic() > deadline:
                break
    finally:
        source.remove_stream_listener(device_id, on_stream)
    if recorder.error is not None:
        raise recorder.error
    if not recorder.done:
        if recorder.received == 0:
            raise LinkError(f"device {device_id!r} sent no stream windows (is it online and able to stream?)"
                            + hint)
        got = len(recorder.samples()) // spec.window
        raise LinkError(f"device {device_id!r} delivered {got} of {recorder.windows} windows in time "
                        f"({recorder.gaps} gaps in the stream)" + hint)
    record = source.get(device_id) or record
    hello = record.hello
    meta = {"device": device_id, "location": record.location, "profile": record.profile,
            "firmware": record.firmware, "model": f"{record.model_name}@{record.model_version}",
            "shaft_hz": record.shaft_hz, "fault_mask": hello.fault_mask if hello is not None else None,
            "stream_gaps": recorder.gaps}
    return recorder.samples(), meta
