"""The simulator's physics, checked through the spectrum as a vibration analyst would."""

import numpy as np
import pytest

from app.domain.bearings import Bearing
from app.fleet.vibration import MachineSimulator, estimate_shaft_hz
from app.protocol.codes import FaultMask

FS = 3200
SECONDS = 4


def amplitude_at(x: np.ndarray, freq: float, fs: int = FS) -> np.ndarray:
    """Peak amplitude per axis of the line nearest `freq` (Hann window, +-2 bins)."""
    n = len(x)
    w = np.hanning(n)
    spec = np.abs(np.fft.rfft((x - x.mean(axis=0)) * w[:, None], axis=0)) * 2 / w.sum()
    k = round(freq * n / fs)
    return spec[k - 2:k + 3].max(axis=0)


def run(mask: int = 0, severity: float = 1.0, seed: int = 7, **kw) -> tuple[np.ndarray, MachineSimulator]:
    sim = MachineSimulator(seed, shaft_hz=25.0, drift_fraction=0.0, **kw)
    sim.set_fault(mask, severity)
    return sim.generate(FS * SECONDS), sim


def test_shape_dtype_and_determinism():
    a, _ = run(FaultMask.BEARING_OUTER)
    b, _ = run(FaultMask.BEARING_OUTER)
    assert a.shape == (FS * SECONDS, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    c, _ = run(FaultMask.BEARING_OUTER, seed=8)
    assert not np.allclose(a, c)


def test_phase_continuous_across_blocks():
    mask = FaultMask.LOOSENESS | FaultMask.BEARING_OUTER | FaultMask.BEARING_INNER
    one = MachineSimulator(3, drift_fraction=0.0)
    many = MachineSimulator(3, drift_fraction=0.0)
    one.set_fault(mask, 0.8)
    many.set_fault(mask, 0.8)
    whole = one.generate(5000)
    parts = np.vstack([many.generate(n) for n in (1, 999, 37, 256, 3707)])
    np.testing.assert_allclose(parts, whole, atol=1e-5)


def test_imbalance_raises_1x_mostly_radial():
    healthy, _ = run()
    faulty, _ = run(FaultMask.IMBALANCE)
    h, f = amplitude_at(healthy, 25.0), amplitude_at(faulty, 25.0)
    assert f[0] > 4 * h[0] and f[1] > 4 * h[1]
    assert f[2] < 0.3 * f[0]  # imbalance is a radial force
    # 2x barely moves
    assert amplitude_at(faulty, 50.0)[0] < 1.5 * amplitude_at(healthy, 50.0)[0]


def test_misalignment_raises_2x_and_3x_with_axial_component():
    healthy, _ = run()
    faulty, _ = run(FaultMask.MISALIGNMENT)
    h2, f2 = amplitude_at(healthy, 50.0), amplitude_at(faulty, 50.0)
    assert np.all(f2 > 4 * h2)
    assert amplitude_at(faulty, 75.0)[2] > 4 * amplitude_at(healthy, 75.0)[2]
    assert f2[2] > 0.8 * f2[0]  # notable axial 2x


def test_looseness_adds_harmonics_and_half_orders():
    healthy, _ = run()
    faulty, _ = run(FaultMask.LOOSENESS)
    for order in (0.5, 1.5, 5.0, 8.0):
        assert amplitude_at(faulty, 25.0 * order)[0] > 5 * amplitude_at(healthy, 25.0 * order)[0]


def band_energy(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    spec = np.abs(np.fft.rfft(x - x.mean(axis=0), axis=0)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / FS)
    return spec[(f >= lo) & (f < hi)].sum(axis=0)


def envelope_spectrum(x: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Classic bearing diagnosis: band-pass around the resonance, Hilbert envelope, its spectrum."""
    n = len(x)
    spec = np.fft.fft(x)
    f = np.fft.fftfreq(n, 1 / FS)
    analytic = np.where((f >= lo) & (f < hi), 2 * spec, 0)  # positive band only -> analytic signal
    env = np.abs(np.fft.ifft(analytic))
    env_spec = np.abs(np.fft.rfft(env - env.mean()))
    return np.fft.rfftfreq(n, 1 / FS), env_spec


def line_prominence(f: np.ndarray, spec: np.ndarray, freq: float) -> float:
    """Height of the envelope-spectrum line at `freq` (+-1.5 Hz) over the median level 20-400 Hz."""
    near = (f > freq - 1.5) & (f < freq + 1.5)
    floor = np.median(spec[(f > 20) & (f < 400)])
    return float(spec[near].max() / floor)


def test_outer_race_fault_rings_resonance_with_envelope_peak_at_bpfo():
    healthy, _ = run()
    faulty, sim = run(FaultMask.BEARING_OUTER)
    res = sim.resonance_hz
    assert band_energy(faulty, res - 200, res + 200)[0] > 20 * band_energy(healthy, res - 200, res + 200)[0]
    f, env = envelope_spectrum(faulty[:, 0], res - 300, res + 300)
    search = (f > 20) & (f < 400)
    peak = f[search][np.argmax(env[search])]
    assert abs(peak - sim.bpfo_hz) < 1.5, (peak, sim.bpfo_hz)


def test_inner_race_fault_envelope_shows_bpfi_with_shaft_sidebands():
    faulty, sim = run(FaultMask.BEARING_INNER)
    res = sim.resonance_hz
    f, env = envelope_spectrum(faulty[:, 0], res - 300, res + 300)
    assert line_prominence(f, env, sim.bpfi_hz) > 10
    # modulated at shaft rate as the defect passes through the load zone
    assert line_prominence(f, env, sim.bpfi_hz - sim.shaft_hz) > 5
    assert line_prominence(f, env, sim.bpfi_hz + sim.shaft_hz) > 5
    assert line_prominence(f, env, sim.bpfo_hz) < 3  # no outer-race line


def test_bearing_geometry_formulas():
    g = Bearing(n_balls=9, ball_diameter_mm=7.94, pitch_diameter_mm=39.04, contact_angle_deg=0.0).orders()
    assert g["BPFO"] == pytest.approx(3.585, abs=1e-3)
    assert g["BPFI"] == pytest.approx(5.415, abs=1e-3)
    assert g["BPFO"] + g["BPFI"] == pytest.approx(9.0)


def test_fault_switches_off_at_run_time():
    sim = MachineSimulator(1, shaft_hz=25.0, drift_fraction=0.0)
    sim.set_fault(FaultMask.IMBALANCE, 1.0)
    loud = sim.generate(FS * 2)
    sim.set_fault(0, 0.0)
    quiet = sim.generate(FS * 2)
    assert amplitude_at(quiet, 25.0)[0] < amplitude_at(loud, 25.0)[0] / 4
    with pytest.raises(ValueError):
        sim.set_fault(FaultMask.IMBALANCE, float("nan"))


def test_shaft_drifts_slowly_and_is_estimated():
    sim = MachineSimulator(5, shaft_hz=27.0, drift_fraction=0.01)
    speeds = []
    for _ in range(60):
        window = sim.generate(FS)
        speeds.append(sim.shaft_hz)
        assert estimate_shaft_hz(window, FS) == pytest.approx(sim.shaft_hz, abs=0.6)
    speeds = np.array(speeds)
    assert speeds.std() > 0.01  # it drifts ...
    assert np.abs(np.diff(speeds)).max() < 0.35  # ... slowly (1.3 % of nominal per second at most)
    assert abs(speeds.mean() - 27.0) < 1.0


def test_rejects_resonance_above_nyquist():
    with pytest.raises(ValueError):
        MachineSimulator(0, sample_rate=2000, resonance_hz=1250.0)
