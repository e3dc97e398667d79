"""What the live view draws from, filled by IO threads (Qt-free): one device's bounded ring buffers
of raw 3-axis samples and of anomaly scores, and the amplitude spectrum computed from them."""

from __future__ import annotations

import threading
import time

import numpy as np

from app.protocol.codes import MAX_SAMPLE_RATE_HZ
from app.ui.ringbuffer import RingBuffer

# Waveform history kept per device (bounded memory: 4 s x 3200 Hz x 3 axes x 4 B = 154 KB; at most
# 4 s x MAX_SAMPLE_RATE_HZ, 4.8 MB, whatever rate a STREAM claims: the decoder refuses higher ones).
WAVE_SECONDS = 4.0
# Score trend: one point per telemetry second, ten minutes kept.
SCORE_POINTS = 600
# Until a device's first STREAM says otherwise (PROTOCOL.md 8: fs = 3200 Hz).
DEFAULT_SAMPLE_RATE = 3200


class DeviceFeed:
    """One device's buffers; `on_stream` / `on_telemetry` are called from IO threads."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        self.sample_rate = DEFAULT_SAMPLE_RATE
        self.wave = RingBuffer(int(WAVE_SECONDS * DEFAULT_SAMPLE_RATE), 3)
        self.scores = RingBuffer(SCORE_POINTS, 2, np.float64)  # (time.time(), score)
        self.threshold: float | None = None
        self.shaft_hz: float | None = None
        self.last_seq: int | None = None
        self.gaps = 0
        self.windows = 0
        self._lock = threading.Lock()

    def on_stream(self, _device_id: str, msg) -> None:
        samples = msg.samples.astype(np.float32) * np.float32(msg.scale)
        with self._lock:
            if msg.sample_rate and msg.sample_rate != self.sample_rate:
                self.sample_rate = min(int(msg.sample_rate), MAX_SAMPLE_RATE_HZ)
                self.wave = RingBuffer(int(WAVE_SECONDS * self.sample_rate), 3)
            if self.last_seq is not None and msg.window_seq != (self.last_seq + 1) & 0xFFFFFFFF:
                self.gaps += 1
                self.wave.write(np.full((1, 3), np.nan, np.float32))  # a lost window is a gap in the plot
            self.last_seq = msg.window_seq
            self.windows += 1
        self.wave.write(samples)

    def on_record(self, record) -> None:
        if record.score is not None:
            self.scores.write(np.array([[record.last_seen or time.time(), record.score]]))
        self.threshold = record.threshold
        self.shaft_hz = record.shaft_hz


def amplitude_spectrum(samples: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Single-sided amplitude spectrum (g) per axis of the last SPECTRUM_N samples, Hann window."""
    n = len(samples)
    window = np.hanning(n).astype(np.float32)
    detrended = samples - samples.mean(axis=0)
    spec = np.abs(np.fft.rfft(detrended * window[:, None], axis=0)) * (2.0 / window.sum())
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    return freqs, spec
