"""Feature specification 1 (firmware/PROTOCOL.md section 8): one numpy implementation used by
training, by the virtual devices and to make the golden vectors the firmware must match."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

AXES = ("x", "y", "z")
TIME_FEATURES = ("rms", "peak", "crest", "kurtosis")


@dataclass(frozen=True)
class FeatureSpec:
    spec_id: int = 1
    window: int = 1024
    hop: int = 1024
    sample_rate: int = 3200
    band_edges: tuple[int, ...] = (4, 7, 12, 22, 41, 77, 144, 272, 513)
    axes: tuple[str, ...] = field(default=AXES)

    @property
    def n_bands(self) -> int:
        return len(self.band_edges) - 1

    @property
    def n_features(self) -> int:
        return len(self.axes) * (len(TIME_FEATURES) + self.n_bands)

    def names(self) -> list[str]:
        per_axis = [*TIME_FEATURES, *(f"band{b}" for b in range(self.n_bands))]
        return [f"{axis}_{name}" for axis in self.axes for name in per_axis]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureSpec:
        return cls(**{**data, "band_edges": tuple(data["band_edges"]), "axes": tuple(data["axes"])})


DEFAULT_SPEC = FeatureSpec()


def _hann(n: int) -> np.ndarray:
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float64)


def extract(window: np.ndarray, spec: FeatureSpec = DEFAULT_SPEC) -> np.ndarray:
    """Features of one window of shape (spec.window, axes) in g -> float32[n_features]."""
    return extract_batch(np.asarray(window)[None, ...], spec)[0]


def extract_batch(windows: np.ndarray, spec: FeatureSpec = DEFAULT_SPEC) -> np.ndarray:
    """Features of windows shaped (batch, spec.window, axes) -> float32[batch, n_features]."""
    w = np.asarray(windows, dtype=np.float64)
    if w.ndim != 3 or w.shape[1] != spec.window or w.shape[2] != len(spec.axes):
        raise ValueError(f"windows must be (batch, {spec.window}, {len(spec.axes)}), got {w.shape}")
    d = w - w.mean(axis=1, keepdims=True)
    m2 = np.mean(d**2, axis=1)
    rms = np.sqrt(m2)
    peak = np.max(np.abs(d), axis=1)
    crest = peak / (rms + 1e-9)
    kurt = np.mean(d**4, axis=1) / (m2**2 + 1e-12)
    spectrum = np.abs(np.fft.rfft(d * _hann(spec.window)[None, :, None], axis=1)) ** 2 / spec.window
    edges = spec.band_edges
    bands = np.stack([np.log10(spectrum[:, edges[b] : edges[b + 1], :].sum(axis=1) + 1e-12)
                      for b in range(spec.n_bands)], axis=1)  # (batch, bands, axes)
    per_axis = np.concatenate([np.stack([rms, peak, crest, kurt], axis=1), bands], axis=1)
    # (batch, features_per_axis, axes) -> axis-major order: x features, then y, then z
    return per_axis.transpose(0, 2, 1).reshape(w.shape[0], -1).astype(np.float32)


def windows_from_recording(samples: np.ndarray, spec: FeatureSpec = DEFAULT_SPEC) -> np.ndarray:
    """Cut a (n, axes) recording into non-overlapping windows (hop = spec.hop)."""
    samples = np.asarray(samples, dtype=np.float32)
    count = 0 if len(samples) < spec.window else 1 + (len(samples) - spec.window) // spec.hop
    if count == 0:
        return np.zeros((0, spec.window, samples.shape[1] if samples.ndim == 2 else 3), np.float32)
    idx = np.arange(spec.window)[None, :] + spec.hop * np.arange(count)[:, None]
    return samples[idx]
