"""Feature spec 1 against its golden vectors (what the firmware must match too) and against a
straightforward per-axis implementation written from PROTOCOL.md section 8."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from app.ml import features

VECTORS = sorted((Path(__file__).resolve().parents[1] / "vectors").glob("features_*.json"))
REL, ABS = 1e-4, 1e-5  # PROTOCOL.md section 8


def load(path: Path) -> tuple[dict, np.ndarray]:
    data = json.loads(path.read_text())
    window = np.asarray(data["samples"], np.float64).astype(np.float32)
    return data, window


def within_tolerance(got: np.ndarray, want: np.ndarray) -> np.ndarray:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return np.abs(got - want) <= np.maximum(REL * np.abs(want), ABS)


def reference_features(window: np.ndarray) -> np.ndarray:
    """Section 8 written out per axis, with an explicit DFT instead of an FFT."""
    n = features.DEFAULT_SPEC.window
    edges = features.DEFAULT_SPEC.band_edges
    k = np.arange(n // 2 + 1)[:, None]
    t = np.arange(n)[None, :]
    cos, sin = np.cos(2 * np.pi * k * t / n), np.sin(2 * np.pi * k * t / n)
    hann = np.array([0.5 - 0.5 * np.cos(2 * np.pi * i / n) for i in range(n)])
    out = []
    for axis in range(window.shape[1]):
        s = window[:, axis].astype(np.float64)
        d = s - sum(s) / n
        m2 = sum(v * v for v in d) / n
        rms = m2 ** 0.5
        peak = max(abs(v) for v in d)
        crest = peak / (rms + 1e-9)
        kurtosis = (sum(v ** 4 for v in d) / n) / (m2 * m2 + 1e-12)
        dw = d * hann
        power = ((cos @ dw) ** 2 + (sin @ dw) ** 2) / n
        bands = [np.log10(sum(power[edges[b]:edges[b + 1]]) + 1e-12) for b in range(len(edges) - 1)]
        out += [rms, peak, crest, kurtosis, *bands]
    return np.asarray(out)


def test_every_case_is_present():
    names = {p.stem.removeprefix("features_") for p in VECTORS}
    assert {"healthy", "imbalance", "bearing_outer", "misalignment", "sine", "silence"} <= names


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_extract_matches_golden_vector(path):
    data, window = load(path)
    assert window.shape == (1024, 3)
    assert hashlib.sha256(window.astype("<f4").tobytes()).hexdigest() == data["samples_sha256"]
    assert data["feature_names"] == features.DEFAULT_SPEC.names()
    got = features.extract(window)
    ok = within_tolerance(got, data["features"])
    assert ok.all(), [(n, float(g), w) for n, g, w, o in
                      zip(data["feature_names"], got, data["features"], ok, strict=True) if not o]


@pytest.mark.parametrize("path", VECTORS, ids=lambda p: p.stem)
def test_extract_matches_per_axis_reference(path):
    _, window = load(path)
    ok = within_tolerance(features.extract(window), reference_features(window))
    assert ok.all()


def test_batch_equals_single_windows():
    windows = np.stack([load(p)[1] for p in VECTORS])
    batch = features.extract_batch(windows)
    for i, w in enumerate(windows):
        np.testing.assert_array_equal(batch[i], features.extract(w))


def test_golden_vectors_separate_faults_from_healthy():
    """The vectors are meaningful: each fault moves its signature features away from healthy."""
    names = features.DEFAULT_SPEC.names()
    vec = {p.stem.removeprefix("features_"): np.asarray(json.loads(p.read_text())["features"]) for p in VECTORS}
    rms_x = names.index("x_rms")
    assert vec["imbalance"][rms_x] > 2 * vec["healthy"][rms_x]
    z_band_kurt = names.index("x_kurtosis")
    assert vec["bearing_outer"][z_band_kurt] > vec["healthy"][z_band_kurt] + 1.0
    assert np.all(vec["silence"][[names.index(f"{a}_band{b}") for a in "xyz" for b in range(8)]] == -12.0)


def test_wrong_window_shape_is_refused():
    with pytest.raises(ValueError, match="windows must be"):
        features.extract(np.zeros((512, 3)))
