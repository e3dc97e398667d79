"""The diagnosis against the simulator's ground truth, and its refusals of input it cannot analyse."""

import numpy as np
import pytest

from app.analysis import iso
from app.analysis.bearings import CATALOGUE
from app.analysis.diagnosis import analyze
from app.analysis.simulated import record
from app.domain.errors import DataError
from app.protocol.codes import FaultMask

SECONDS = 8.0
# The simulated machine: 6205 bearing, a 15-300 kW pump on a flexible foundation.
KLASS = iso.machine_class(2, "flexible")
CASES = [
    (0, 0.0, "healthy"),
    (FaultMask.IMBALANCE, 0.3, "imbalance"), (FaultMask.IMBALANCE, 1.0, "imbalance"),
    (FaultMask.MISALIGNMENT, 0.3, "misalignment"), (FaultMask.MISALIGNMENT, 1.0, "misalignment"),
    (FaultMask.LOOSENESS, 0.3, "looseness"), (FaultMask.LOOSENESS, 1.0, "looseness"),
    (FaultMask.BEARING_OUTER, 0.3, "outer_race"), (FaultMask.BEARING_OUTER, 1.0, "outer_race"),
    (FaultMask.BEARING_INNER, 0.3, "inner_race"), (FaultMask.BEARING_INNER, 1.0, "inner_race"),
]


@pytest.mark.parametrize(("mask", "severity", "fault"), CASES)
@pytest.mark.parametrize("seed", [11, 12])
def test_diagnosis_names_the_simulated_fault(mask, severity, fault, seed):
    rec = record(seed, mask, severity, SECONDS, shaft_hz=26.3)
    a = analyze(rec.samples, rec.sample_rate, 26.3, rec.bearing, KLASS)
    assert a.fault == fault, a.evidence
    assert a.evidence
    # the speed estimate lands within one spectral line of the true mean speed
    assert abs(a.shaft_hz - rec.shaft_hz) <= a.resolution_hz
    if fault in ("outer_race", "inner_race"):
        name = "BPFO" if fault == "outer_race" else "BPFI"
        assert abs(a.marker(name).found_hz - rec.defect_hz(name)) <= a.resolution_hz


def test_speed_is_estimated_from_a_nominal_speed_that_is_off():
    rec = record(3, FaultMask.BEARING_OUTER, 0.5, SECONDS, shaft_hz=24.0)
    a = analyze(rec.samples, rec.sample_rate, 24.0 * 1.05, rec.bearing, KLASS)  # nominal 5 % high
    assert abs(a.shaft_hz - rec.shaft_hz) <= a.resolution_hz
    assert a.fault == "outer_race"
    assert abs(a.marker("BPFO").expected_hz - rec.defect_hz("BPFO")) <= a.resolution_hz


def test_healthy_machine_zone_and_velocity():
    rec = record(4, 0, 0.0, SECONDS)
    a = analyze(rec.samples, rec.sample_rate, 24.7, rec.bearing, KLASS)
    assert a.zone.zone in ("A", "B")
    assert a.to_dict()["zone"] == a.zone.zone
    severe = record(4, FaultMask.IMBALANCE, 1.0, SECONDS)
    b = analyze(severe.samples, severe.sample_rate, 24.7, severe.bearing, KLASS)
    assert b.zone.zone == "D" and b.velocity_overall_mm_s > 3 * a.velocity_overall_mm_s


def test_marker_positions_follow_the_estimated_speed():
    rec = record(5, FaultMask.BEARING_INNER, 0.6, SECONDS)
    a = analyze(rec.samples, rec.sample_rate, 24.7, rec.bearing, KLASS)
    freqs = rec.bearing.frequencies(a.shaft_hz)
    for name in ("BPFO", "BPFI", "BSF", "FTF"):
        assert a.marker(name).expected_hz == pytest.approx(freqs[name])
        assert a.marker(f"3x{name}").expected_hz == pytest.approx(3 * freqs[name])
    assert a.marker("BPFI-1x").expected_hz == pytest.approx(freqs["BPFI"] - a.shaft_hz)


@pytest.fixture(scope="module")
def healthy():
    return record(6, 0, 0.0, 4.0)


def test_refuses_a_recording_too_short_for_the_envelope_resolution(healthy):
    with pytest.raises(DataError, match=r"too short for the envelope resolution.*FTF"):
        analyze(healthy.samples[:1000], healthy.sample_rate, 24.7, healthy.bearing, KLASS)


def test_refuses_a_sample_rate_too_low_for_the_bearing_band(healthy):
    low = healthy.samples[::4]  # 800 Hz
    with pytest.raises(DataError, match="sample rate 800 Hz is too low for the bearing band"):
        analyze(low, 800, 24.7, healthy.bearing, KLASS)


def test_refuses_a_machine_without_bearing_geometry(healthy):
    with pytest.raises(DataError, match="no bearing geometry"):
        analyze(healthy.samples, healthy.sample_rate, 24.7, None, KLASS)


def test_refuses_missing_shaft_speed(healthy):
    with pytest.raises(DataError, match="no shaft speed"):
        analyze(healthy.samples, healthy.sample_rate, None, CATALOGUE["6205"], KLASS)


@pytest.mark.parametrize(("shaft_hz", "message"), [(600.0, "outside the spectrum: its 3x line"),
                                                   (0.6, "too short for the envelope resolution")])
def test_refuses_a_shaft_speed_outside_the_spectrum(healthy, shaft_hz, message):
    with pytest.raises(DataError, match=message):
        analyze(healthy.samples, healthy.sample_rate, shaft_hz, CATALOGUE["6205"], KLASS)


@pytest.mark.parametrize(("samples", "message"), [(np.zeros((12800, 2)), "3 columns"),
                                                  (np.full((12800, 3), np.nan), "non-finite")])
def test_refuses_malformed_samples(samples, message):
    with pytest.raises(DataError, match=message):
        analyze(samples, 3200, 24.7, CATALOGUE["6205"], KLASS)


def test_other_bearing_and_sample_rate():
    from app.domain.bearings import Bearing

    geo = Bearing(n_balls=8, ball_diameter_mm=10.32, pitch_diameter_mm=43.5)  # a 6305
    rec = record(9, FaultMask.BEARING_INNER, 0.5, SECONDS, shaft_hz=29.5, sample_rate=6400, bearing=geo,
                 resonance_hz=2600.0)
    a = analyze(rec.samples, rec.sample_rate, 29.5, geo, KLASS)
    assert a.fault == "inner_race", a.evidence
    assert a.envelope_band_hz[0] <= 2600.0 <= a.envelope_band_hz[1]  # the band found the resonance
    assert abs(a.marker("BPFI").found_hz - rec.defect_hz("BPFI")) <= a.resolution_hz


def test_a_bearing_defect_on_an_imbalanced_machine_names_both():
    rec = record(10, FaultMask.BEARING_OUTER | FaultMask.IMBALANCE, 0.6, SECONDS)
    a = analyze(rec.samples, rec.sample_rate, 24.7, rec.bearing, KLASS)
    assert a.fault == "outer_race" and "imbalance" in a.also
