"""Overall velocity from a device's telemetry, for the fleet table: every device reports its
feature vector about once a second (PROTOCOL.md 8: per axis, log10 band energies of one Hann-
windowed 1024-sample window), but streams raw samples only on request. The band energies give the
acceleration power per band; velocity weights it by 1/(2 pi f)^2, with f the lowest shaft harmonic
(1x-3x) inside the band, where a rotating machine's velocity sits, else the band's geometric
centre. An estimate (one 0.32 s window, band-wide frequency resolution); `data analyze` and the
live view's panel compute the exact figure from raw samples."""

from __future__ import annotations

import math

import numpy as np

from app.analysis.spectra import G_MM_S2, VELOCITY_BAND_HZ
from app.ml.features import DEFAULT_SPEC, TIME_FEATURES, FeatureSpec

# Shaft harmonics used as the frequency of the band that holds them.
SHAFT_HARMONICS = (1, 2, 3)


def velocity_from_features(features: tuple[float, ...] | np.ndarray, shaft_hz: float | None,
                           spec: FeatureSpec = DEFAULT_SPEC) -> float | None:
    """Estimated overall velocity RMS, mm/s (highest axis), or None when the vector is not spec's."""
    values = np.asarray(features, dtype=np.float64)
    per_axis = len(TIME_FEATURES) + spec.n_bands
    if values.shape != (len(spec.axes) * per_axis,) or not np.all(np.isfinite(values)):
        return None
    bands = values.reshape(len(spec.axes), per_axis)[:, len(TIME_FEATURES):]  # (axes, bands)
    df = spec.sample_rate / spec.window
    # features hold log10(sum |X|^2 / N) over the band's bins; a Hann window's sum of squares is 3N/8,
    # so the one-sided mean square of the band is 2 * sum |X|^2 / (N * 3N/8) = (16 / 3N) * 10^feature
    mean_square = 10.0 ** bands * (16.0 / (3.0 * spec.window))
    weights = []
    for b in range(spec.n_bands):
        lo, hi = spec.band_edges[b] * df, spec.band_edges[b + 1] * df
        if hi <= VELOCITY_BAND_HZ[0] or lo >= VELOCITY_BAND_HZ[1]:
            weights.append(0.0)
            continue
        inside = [k * shaft_hz for k in SHAFT_HARMONICS if shaft_hz and lo <= k * shaft_hz < hi]
        f = inside[0] if inside else math.sqrt(lo * hi)
        weights.append((G_MM_S2 / (2.0 * math.pi * f)) ** 2)
    velocity = np.sqrt(mean_square @ np.asarray(weights))
    return float(velocity.max())
