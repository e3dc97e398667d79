"""Signal processing against analytic signals: velocity RMS of a sine, envelope of a modulated
carrier, ISO zones at their boundaries, defect frequencies against the formulas and the simulator."""

import math

import numpy as np
import pytest

from app.analysis import iso
from app.analysis import spectra as sp
from app.analysis.bearings import CATALOGUE, Bearing, parse_bearing
from app.domain.errors import DataError
from app.fleet.vibration import MachineSimulator

FS = 3200


def sine(freq: float, amp_g: float, seconds: float = 8.0, phase: float = 0.3) -> np.ndarray:
    t = np.arange(int(FS * seconds)) / FS
    x = amp_g * np.sin(2 * np.pi * freq * t + phase)
    return np.stack([x, 0.5 * x, 0.0 * x], axis=1)


@pytest.mark.parametrize("freq", [12.0, 24.7, 49.3, 157.1, 610.0, 980.0])
def test_velocity_rms_of_a_sine_within_2_percent(freq):
    amp_g = 0.2
    x = sine(freq, amp_g)
    spec = sp.welch(x, FS, sp.segment_length(len(x), FS))
    v = sp.velocity_rms(spec)
    expected = amp_g * sp.G_MM_S2 / (2 * np.pi * freq) / math.sqrt(2)
    assert v[0] == pytest.approx(expected, rel=0.02)
    assert v[1] == pytest.approx(0.5 * expected, rel=0.02)
    assert v[2] < 1e-6


@pytest.mark.parametrize("freq", [3.0, 1400.0])
def test_velocity_band_leaves_out_lines_outside_10_to_1000_hz(freq):
    x = sine(freq, 0.2)
    v = sp.velocity_rms(sp.welch(x, FS, sp.segment_length(len(x), FS)))
    in_band = 0.2 * sp.G_MM_S2 / (2 * np.pi * freq) / math.sqrt(2)
    assert v[0] < 0.02 * in_band


def test_envelope_recovers_the_modulation_frequency():
    t = np.arange(FS * 8) / FS
    carrier = np.sin(2 * np.pi * 1100.0 * t)
    x = ((1.0 + 0.5 * np.cos(2 * np.pi * 37.0 * t)) * carrier)[:, None]
    env = sp.envelope(x, FS, (900.0, 1300.0))
    spec = sp.welch(env, FS, sp.segment_length(len(env), FS))
    line = sp.find_line(spec.freqs, spec.amplitude[:, 0], 37.0, 1.0)
    assert abs(line.freq_hz - 37.0) <= spec.resolution_hz
    assert line.amplitude == pytest.approx(0.5, rel=0.05)  # |analytic| = 1 + 0.5 cos
    assert line.snr > 100


def test_find_line_interpolates_between_bins():
    x = sine(100.13, 0.1)
    spec = sp.welch(x, FS, sp.segment_length(len(x), FS))
    line = sp.find_line(spec.freqs, spec.amplitude[:, 0], 100.0, 1.0)
    assert abs(line.freq_hz - 100.13) < 0.25 * spec.resolution_hz
    assert line.amplitude == pytest.approx(0.1, rel=0.2)  # Hann scalloping is at most 15 %


@pytest.mark.parametrize(("klass", "bounds"), [
    ("10816-1/I", (0.71, 1.8, 4.5)), ("20816-3/2/rigid", (1.4, 2.8, 4.5)),
    ("20816-3/2/flexible", (2.3, 4.5, 7.1)), ("20816-3/1/rigid", (2.3, 4.5, 7.1)),
    ("20816-3/1/flexible", (3.5, 7.1, 11.0))])
def test_iso_zone_boundaries(klass, bounds):
    assert iso.classify(0.0, klass).zone == "A"
    for b, zone in zip(bounds, "BCD", strict=True):
        assert iso.classify(b * 0.999, klass).zone == chr(ord(zone) - 1)
        assert iso.classify(b, klass).zone == zone
    assert iso.classify(1e3, klass).colour == iso.ZONE_COLOURS["D"]


def test_machine_class_needs_group_and_foundation():
    assert iso.machine_class(None, None) == iso.CLASS_I
    assert iso.machine_class(2, "rigid") == "20816-3/2/rigid"
    with pytest.raises(DataError, match="foundation"):
        iso.machine_class(2, None)
    with pytest.raises(DataError, match="group must be 1"):
        iso.machine_class(3, "rigid")


def test_defect_frequencies_follow_the_formulas():
    b = Bearing(9, 7.94, 39.04, 10.0)
    fr = 24.7
    r = 7.94 / 39.04 * math.cos(math.radians(10.0))
    f = b.frequencies(fr)
    assert f["BPFO"] == pytest.approx(4.5 * fr * (1 - r))
    assert f["BPFI"] == pytest.approx(4.5 * fr * (1 + r))
    assert f["BSF"] == pytest.approx(39.04 / (2 * 7.94) * fr * (1 - r * r))
    assert f["FTF"] == pytest.approx(fr / 2 * (1 - r))


def test_defect_orders_agree_with_the_simulator():
    sim = MachineSimulator(0)  # the simulator's markers come from the same Bearing as the analysis'
    assert sim.bpfo_hz == pytest.approx(sim.bearing.frequencies(sim.shaft_hz)["BPFO"])
    assert sim.bpfi_hz == pytest.approx(sim.bearing.frequencies(sim.shaft_hz)["BPFI"])
    assert sim.bearing == CATALOGUE["6205"]
    # the CWRU 6205 figures: BPFO 3.5848, BPFI 5.4152 x shaft speed
    assert CATALOGUE["6205"].orders()["BPFO"] == pytest.approx(3.5848, abs=1e-3)
    assert CATALOGUE["6205"].orders()["BPFI"] == pytest.approx(5.4152, abs=1e-3)


def test_parse_bearing_catalogue_and_geometry():
    assert parse_bearing("SKF 6205-2RS") == CATALOGUE["6205"]
    b = parse_bearing("n=9,d=7.94,D=39.04,angle=0")
    assert (b.n_balls, b.ball_diameter_mm, b.pitch_diameter_mm, b.contact_angle_deg) == (9, 7.94, 39.04, 0.0)
    assert parse_bearing("n=8, d=6.75, D=28.5").contact_angle_deg == 0.0


@pytest.mark.parametrize(("text", "message"), [
    ("6999", "unknown bearing"), ("n=9,d=7.94", "lacks D"), ("n=9,d=x,D=39", "not a number"),
    ("n=9.5,d=7.94,D=39", "whole number"), ("n=9,d=40,D=39", "smaller than the pitch"),
    ("n=9,d=7,D=39,angle=95", "contact angle"), ("n=9,d=7,D=39,q=1", "unknown key")])
def test_parse_bearing_rejects_bad_specs(text, message):
    with pytest.raises(DataError, match=message):
        parse_bearing(text)
