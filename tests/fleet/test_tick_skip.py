"""The simulator's skip path and the device's fast window analysis measure what the full-rate
reference measures: same phase, drift and bearing impacts, same spectrum, same features."""

import numpy as np
import pytest

from app.fleet.vibration import MachineSimulator, direct_harmonics, estimate_shaft_hz
from app.fleet.window_analysis import WindowAnalyzer
from app.ml.features import DEFAULT_SPEC, extract
from app.protocol.codes import FaultMask

FS = 3200
W = DEFAULT_SPEC.window
SKIP = FS - W  # what an idle device skips between two 1 Hz telemetry windows
ALL_FAULTS = FaultMask.IMBALANCE | FaultMask.MISALIGNMENT | FaultMask.LOOSENESS | FaultMask.BEARING_OUTER \
    | FaultMask.BEARING_INNER
MODES = [0, FaultMask.IMBALANCE, FaultMask.MISALIGNMENT, FaultMask.LOOSENESS, FaultMask.BEARING_OUTER,
         FaultMask.BEARING_INNER, ALL_FAULTS]


def pair(mask: int, seed: int = 5, severity: float = 0.7, **kw) -> tuple[MachineSimulator, MachineSimulator]:
    sims = MachineSimulator(seed, **kw), MachineSimulator(seed, **kw)
    for s in sims:
        s.set_fault(mask, severity)
    return sims


@pytest.mark.parametrize("skip", [1, 60, SKIP, 7 * FS + 13])
def test_skip_differs_from_generate_only_by_sensor_noise(skip):
    """Phase (with drift), impact schedule and ringing come out exactly as if generated."""
    full, skipping = pair(ALL_FAULTS)
    for _ in range(4):
        full.generate(skip)
        skipping.skip(skip)
        a, b = full.generate(W), skipping.generate(W)
        assert skipping.elapsed_s == full.elapsed_s
        assert skipping.shaft_hz == full.shaft_hz
        diff = (a - b).std(axis=0)
        if skip <= 2 * len(full._ring_tail):  # a short skip is generated: the same noise draws
            assert diff.max() < 0.05
        else:  # two independent noise draws: sqrt(2) * noise rms, nothing else
            np.testing.assert_allclose(diff, np.sqrt(2) * full.noise_g, rtol=0.15)
        assert a.std(axis=0).min() > 5 * diff.max()  # the signal itself is far larger


def test_skip_across_the_phase_wrap():
    """A skip of minutes (the shaft angle wraps) lands where generating would, impacts included."""
    full, skipping = pair(FaultMask.BEARING_OUTER | FaultMask.BEARING_INNER | FaultMask.LOOSENESS)
    n = 400 * FS  # > 4 pi * 4096 rad at 24.7 Hz
    full.generate(n)
    skipping.skip(n)
    assert abs(full._theta - skipping._theta) < 1e-6
    diff = (full.generate(W) - skipping.generate(W)).std(axis=0)
    np.testing.assert_allclose(diff, np.sqrt(2) * full.noise_g, rtol=0.15)


def test_skip_is_deterministic_for_a_seed():
    a, b = pair(ALL_FAULTS, seed=11)
    other = MachineSimulator(12)
    other.set_fault(ALL_FAULTS, 0.7)
    runs = []
    for sim in (a, b, other):
        out = []
        for n in (SKIP, 5000, 100, SKIP):
            sim.skip(n)
            out.append(sim.generate(W))
        runs.append(np.vstack(out))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])
    with pytest.raises(ValueError):
        a.skip(-1)


def amplitude(x: np.ndarray, freq: float) -> np.ndarray:
    """Peak amplitude per axis of the line nearest `freq` (Hann, +-2 bins)."""
    w = np.hanning(len(x))
    spec = np.abs(np.fft.rfft((x - x.mean(axis=0)) * w[:, None], axis=0)) * 2 / w.sum()
    k = round(freq * len(x) / FS)
    return spec[k - 2:k + 3].max(axis=0)


def band_energy(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    spec = np.abs(np.fft.rfft(x - x.mean(axis=0), axis=0)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / FS)
    return spec[(f >= lo) & (f < hi)].sum(axis=0)


def envelope_spectrum(ws: list[np.ndarray], lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Bearing diagnosis on axis x: band-pass around the resonance, Hilbert envelope, its spectrum,
    averaged over the windows."""
    f = np.fft.fftfreq(W, 1 / FS)
    spectra = []
    for w in ws:
        env = np.abs(np.fft.ifft(np.where((f >= lo) & (f < hi), 2 * np.fft.fft(w[:, 0]), 0)))
        spectra.append(np.abs(np.fft.rfft((env - env.mean()) * np.hanning(W))))
    return np.fft.rfftfreq(W, 1 / FS), np.mean(spectra, axis=0)


def line_level(f: np.ndarray, spec: np.ndarray, freq: float) -> tuple[float, float]:
    """(envelope level at `freq` +-1 bin, median level 20-400 Hz)."""
    near = np.abs(f - freq) <= FS / W
    return float(spec[near].max()), float(np.median(spec[(f > 20) & (f < 400)]))


def windows(mask: int, skip: bool, count: int = 24, seed: int = 3) -> tuple[list[np.ndarray], MachineSimulator]:
    """Telemetry windows as an idle device takes them (skip path) or from a full-rate run."""
    sim = MachineSimulator(seed, shaft_hz=25.0, drift_fraction=0.0)
    sim.set_fault(mask, 1.0)
    out = []
    for _ in range(count):
        if skip:
            sim.skip(SKIP)
        else:
            sim.generate(SKIP)
        out.append(sim.generate(W))
    return out, sim


@pytest.mark.parametrize("mask, order", [(FaultMask.IMBALANCE, 1.0), (FaultMask.MISALIGNMENT, 2.0),
                                         (FaultMask.LOOSENESS, 1.5), (0, 1.0), (0, 2.0)])
def test_skip_windows_keep_the_shaft_lines(mask, order):
    full, _ = windows(mask, skip=False)
    fast, _ = windows(mask, skip=True)
    a = np.mean([amplitude(w, order * 25.0) for w in full], axis=0)
    b = np.mean([amplitude(w, order * 25.0) for w in fast], axis=0)
    np.testing.assert_allclose(b, a, rtol=0.05)


@pytest.mark.parametrize("mask", [FaultMask.BEARING_OUTER, FaultMask.BEARING_INNER])
def test_skip_windows_keep_the_bearing_signature(mask):
    full, sim = windows(mask, skip=False)
    fast, _ = windows(mask, skip=True)
    healthy, _ = windows(0, skip=True)
    res = sim.resonance_hz
    energy = [np.mean([band_energy(w, res - 200, res + 200) for w in ws], axis=0) for ws in (full, fast, healthy)]
    np.testing.assert_allclose(energy[1], energy[0], rtol=0.15)
    assert energy[1][0] > 20 * energy[2][0]
    line = sim.bpfo_hz if mask == FaultMask.BEARING_OUTER else sim.bpfi_hz
    levels = []
    for ws in (full, fast):
        f, env = envelope_spectrum(ws, res - 300, res + 300)
        level, floor = line_level(f, env, line)
        assert level > 4 * floor
        levels.append(level)
        if mask == FaultMask.BEARING_OUTER:  # the outer-race line is the strongest of the envelope
            search = (f > 20) & (f < 400)
            assert abs(f[search][np.argmax(env[search])] - line) <= FS / W
    assert levels[1] == pytest.approx(levels[0], rel=0.2)


@pytest.mark.parametrize("mask", MODES)
def test_skip_windows_give_the_same_features(mask):
    """Each feature's mean over windows agrees within a fraction of its spread between windows."""
    full = np.array([extract(w) for w in windows(mask, skip=False, count=40)[0]])
    fast = np.array([extract(w) for w in windows(mask, skip=True, count=40)[0]])
    spread = np.maximum(full.std(axis=0), 1e-3 * np.abs(full.mean(axis=0)) + 1e-6)
    assert np.all(np.abs(fast.mean(axis=0) - full.mean(axis=0)) < 1.0 * spread + 0.02 * np.abs(full.mean(axis=0)))


@pytest.mark.parametrize("mask", MODES)
def test_fast_lines_equal_the_sin_cos_reference(mask):
    fast, ref = pair(mask, seed=9)
    ref.reference_lines = True
    for n in (1, 700, 2500, 3200):
        np.testing.assert_allclose(fast.generate(n), ref.generate(n), atol=2e-6)


@pytest.mark.parametrize("mask", MODES)
def test_analyzer_matches_reference_features_and_shaft(mask):
    sim = MachineSimulator(4, shaft_hz=19.0 + 3 * int(mask).bit_length())
    sim.set_fault(mask, 0.6)
    analyzer = WindowAnalyzer()
    for _ in range(8):
        w = sim.generate(W)
        features, shaft = analyzer.analyse(w)
        ref = extract(w)
        assert features.dtype == np.float32 and features.shape == ref.shape
        np.testing.assert_allclose(features, ref, rtol=1e-4, atol=1e-5)  # PROTOCOL.md 8 tolerance
        assert shaft == pytest.approx(estimate_shaft_hz(w, FS), abs=0.01)
        if not mask & FaultMask.MISALIGNMENT:  # there 2x is the strongest line, for the reference too
            assert shaft == pytest.approx(sim.shaft_hz, abs=0.6)


def test_analyzer_refuses_wrong_window_shape():
    with pytest.raises(ValueError, match="window must be"):
        WindowAnalyzer().analyse(np.zeros((512, 3), np.float32))


def test_direct_harmonics_is_the_documented_formula():
    sim = MachineSimulator(2)
    theta = np.linspace(0.0, 50.0, 11)
    orders, a_sin, a_cos = sim._lines
    expect = sum(np.outer(np.sin(o * theta), a_sin[i]) + np.outer(np.cos(o * theta), a_cos[i])
                 for i, o in enumerate(orders))
    np.testing.assert_allclose(direct_harmonics(theta, sim._lines), expect, atol=1e-12)
    np.testing.assert_allclose(sim._harmonics(theta), expect, atol=1e-12)
