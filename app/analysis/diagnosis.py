"""Rule-based diagnosis of a rotary machine from one recording, as a vibration analyst reads it.

From the recording (acceleration in g; x, y radial, z axial, the sensor mounting the fleet uses)
and the machine's description (nominal shaft speed, bearing geometry, ISO class):
- the shaft speed, estimated from the spectrum near the nominal speed;
- overall velocity RMS (10-1000 Hz) per axis and the ISO zone of the highest;
- the shaft-order lines 1x/2x/3x with their half-order sidebands (looseness), and 4x-10x;
- the envelope spectrum of the band holding the structural resonance, with BPFO, BPFI, BSF, FTF and
  harmonics marked;
- the likely fault with the evidence that named it. The rules are the classic ones (e.g. ISO
  13373-3 Annex; Randall 2011): a bearing defect shows as envelope lines at BPFO or BPFI (inner race
  with shaft-rate sidebands); looseness as half orders and a comb of harmonics; misalignment as 2x/3x
  high against 1x, notably axial; imbalance as a dominant radial 1x that alone lifts the machine out
  of zone B. Bearing evidence wins (it shows long before overall levels rise).

Every input this cannot analyse honestly (too short, sample rate too low for the bearing band, no
bearing geometry, a shaft speed the spectrum cannot hold) raises DataError saying what is missing,
rather than drawing a marker in the wrong place.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from app.analysis import iso
from app.analysis import spectra as sp
from app.analysis.bearings import Bearing
from app.domain.errors import DataError

RADIAL_AXES = (0, 1)
AXIAL_AXIS = 2
FAULTS = ("healthy", "imbalance", "misalignment", "looseness", "outer_race", "inner_race", "unclassified")
# The real speed lies within this fraction of the nominal one (induction-motor slip under load is a
# few %, a drive's set point a little more); the estimate searches this range.
SPEED_SEARCH_FRACTION = 0.08
# Shaft harmonics 1x..3x are marked and used; the shaft region for looseness runs to 10x.
SHAFT_HARMONICS = 3
LOOSENESS_ORDERS = range(4, 11)
# The envelope band starts above this many shaft orders, clear of the shaft lines (looseness: 10x).
ENVELOPE_MIN_ORDER = 12.0
# The anti-aliasing filter eats the top of the spectrum: the band ends below this fraction of Nyquist.
USABLE_NYQUIST_FRACTION = 0.9
# Defect markers at 1x..3x of each defect frequency.
DEFECT_HARMONICS = 3
# The envelope band must pass the highest marked defect harmonic plus one shaft-rate sideband.
ENVELOPE_BAND_MARGIN_ORDERS = 1.0
# Envelope lines must be at most this fraction of FTF apart (the slowest defect frequency), so FTF
# and the shaft-rate sidebands stand apart from their neighbours.
ENVELOPE_MAX_LINE_FRACTION_OF_FTF = 0.25
# A shaft-order line is searched within +-0.2 % of k x the estimated speed (at least +-1 line): the
# speed estimate is far better than that, and the drift within a recording about as large.
ORDER_TOLERANCE = 0.002
# Noise floors are the median of the spectrum within this many shaft orders of the line (orders)
# or of the marker (envelope): wide enough for a robust median, narrow enough to follow the slope.
ORDER_FLOOR_HALF_WIDTH = 0.4
ENVELOPE_FLOOR_HALF_WIDTH = 0.5
# Real bearings slip: a defect line is searched within +-2 % of its kinematic frequency.
BEARING_SLIP_TOLERANCE = 0.02
# An envelope line this many times its local noise floor is a defect line (noise peaks reach ~2-3).
BEARING_MIN_SNR = 5.0
# A shaft-order line is present at this many times its local noise floor ...
LINE_MIN_SNR = 6.0
# ... and, for looseness, when it is at least this fraction of the radial 1x.
LOOSENESS_MIN_FRACTION = 0.05
# Looseness: at least this many half orders (0.5x, 1.5x, 2.5x) or harmonics 4x..10x present.
LOOSENESS_MIN_HALF_ORDERS = 2
LOOSENESS_MIN_HARMONICS = 4
# Misalignment: (2x + 3x) / 1x radial at least this, or axial 2x / radial 1x at least this
# (a healthy machine runs around 0.3-0.5 and 0.1-0.3).
MISALIGNMENT_HARMONIC_RATIO = 0.9
MISALIGNMENT_AXIAL_RATIO = 0.6
# Imbalance: (2x + 3x) / 1x radial below this and axial 1x / radial 1x below this, ...
IMBALANCE_MAX_HARMONIC_RATIO = 0.35
IMBALANCE_MAX_AXIAL_RATIO = 0.5
# ... and the 1x line's velocity alone at least the machine's zone B/C boundary.


@dataclass
class Marker:
    """A defect or shaft-order marker and what the spectrum holds there."""

    name: str  # "BPFO", "2xBPFI", "BPFI-1x", "1x", "1.5x", ...
    expected_hz: float
    found_hz: float
    amplitude: float
    snr: float


@dataclass
class Analysis:
    sample_rate: float
    seconds: float
    resolution_hz: float
    shaft_nominal_hz: float
    shaft_hz: float
    velocity_mm_s: list[float]  # per axis x, y, z
    zone: iso.Zone
    order_markers: list[Marker]
    spectrum_freqs: np.ndarray
    spectrum_amplitude: np.ndarray  # g, radial (max of x, y): the order spectrum's data
    envelope_band_hz: tuple[float, float]
    envelope_freqs: np.ndarray
    envelope_amplitude: np.ndarray  # g, radial axes combined
    defect_markers: list[Marker]
    fault: str
    evidence: list[str]
    also: list[str] = field(default_factory=list)  # other patterns present, weaker

    @property
    def velocity_overall_mm_s(self) -> float:
        return float(max(self.velocity_mm_s))

    def marker(self, name: str) -> Marker:
        for m in self.order_markers + self.defect_markers:
            if m.name == name:
                return m
        raise KeyError(name)

    def to_dict(self, spectra: bool = False) -> dict:
        out = {
            "sample_rate": self.sample_rate, "seconds": self.seconds, "resolution_hz": self.resolution_hz,
            "shaft_nominal_hz": self.shaft_nominal_hz, "shaft_hz": self.shaft_hz,
            "velocity_mm_s": self.velocity_mm_s, "velocity_overall_mm_s": self.velocity_overall_mm_s,
            "zone": self.zone.zone, "zone_meaning": self.zone.meaning, "machine_class": self.zone.machine_class,
            "zone_boundaries_mm_s": list(self.zone.boundaries),
            "fault": self.fault, "evidence": self.evidence, "also": self.also,
            "envelope_band_hz": list(self.envelope_band_hz),
            "order_markers": [asdict(m) for m in self.order_markers],
            "defect_markers": [asdict(m) for m in self.defect_markers],
        }
        if spectra:
            out["envelope_freqs"] = self.envelope_freqs.tolist()
            out["envelope_amplitude"] = self.envelope_amplitude.tolist()
        return out


def _check_inputs(x: np.ndarray, sample_rate: float, shaft_hz: float | None, bearing: Bearing | None) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise DataError(f"the recording must have 3 columns (x, y radial, z axial, in g), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise DataError("the recording holds non-finite values (NaN or inf)")
    if not sample_rate or sample_rate <= 0:
        raise DataError(f"sample rate must be positive, got {sample_rate}")
    if shaft_hz is None or not math.isfinite(shaft_hz) or shaft_hz <= 0:
        raise DataError("no shaft speed: describe the machine (`tinymlops machine set ID --shaft-hz F`) "
                        "or pass --shaft-hz")
    if bearing is None:
        raise DataError("the machine has no bearing geometry, so there is nowhere to put BPFO/BPFI markers: "
                        "describe it (`tinymlops machine set DEVICE --bearing 6205`, a catalogue bearing, or "
                        "--bearing n=9,d=7.94,D=39.04,angle=0) or pass --bearing")
    return arr


def _plan(n: int, sample_rate: float, shaft_hz: float, bearing: Bearing) -> tuple[int, float, float, float]:
    """(Welch segment length, envelope band low edge, high edge limit, band width) or DataError."""
    nyquist = sample_rate / 2.0
    top_shaft = shaft_hz * (1 + SPEED_SEARCH_FRACTION)
    if SHAFT_HARMONICS * top_shaft >= USABLE_NYQUIST_FRACTION * nyquist:
        raise DataError(f"shaft speed {shaft_hz:g} Hz is outside the spectrum: its {SHAFT_HARMONICS}x line "
                        f"({SHAFT_HARMONICS * top_shaft:.0f} Hz) is above the usable "
                        f"{USABLE_NYQUIST_FRACTION * nyquist:.0f} Hz "
                        f"at {sample_rate:g} Hz sampling")
    freqs = bearing.frequencies(shaft_hz)
    max_line = freqs["FTF"] * ENVELOPE_MAX_LINE_FRACTION_OF_FTF
    nseg = sp.segment_length(n, sample_rate, min(sp.PREFERRED_RESOLUTION_HZ, max_line))
    if sample_rate / nseg > max_line * (1 + 1e-9):
        need = 1.0 / max_line  # line spacing is 1 / (segment duration)
        raise DataError(f"recording of {n / sample_rate:.2f} s is too short for the envelope resolution: lines "
                        f"{sample_rate / nseg:.2f} Hz apart, but FTF {freqs['FTF']:.2f} Hz needs <= {max_line:.2f} Hz "
                        f"(at least {need:.2f} s of recording)")
    if shaft_hz * (1 - SPEED_SEARCH_FRACTION) < 2 * sp.LINE_HALF_WIDTH_BINS * sample_rate / nseg:
        raise DataError(f"shaft speed {shaft_hz:g} Hz is outside the spectrum: below its lowest resolvable line "
                        f"({2 * sp.LINE_HALF_WIDTH_BINS * sample_rate / nseg:.2f} Hz)")
    highest = max(freqs["BPFO"], freqs["BPFI"]) * DEFECT_HARMONICS + ENVELOPE_BAND_MARGIN_ORDERS * top_shaft
    width = highest  # a band W Hz wide demodulates every modulation frequency up to W
    lo = ENVELOPE_MIN_ORDER * top_shaft
    hi = USABLE_NYQUIST_FRACTION * nyquist
    if hi - lo < width:
        need = (lo + width) / USABLE_NYQUIST_FRACTION * 2.0
        raise DataError(f"sample rate {sample_rate:g} Hz is too low for the bearing band: the envelope needs a "
                        f"{width:.0f} Hz band above the shaft lines ({lo:.0f} Hz) and below {hi:.0f} Hz; "
                        f"sample at {need:.0f} Hz or more")
    return nseg, lo, hi, width


def _order_markers(spec: sp.Spectrum, fr: float) -> tuple[list[Marker], dict[str, float]]:
    """Shaft-order lines on the radial (max of x, y) and axial spectra; returns markers and the
    amplitudes the rules use (r1, r2, r3: radial 1x..3x; a1, a2: axial)."""
    radial = spec.amplitude[:, list(RADIAL_AXES)].max(axis=1)
    axial = spec.amplitude[:, AXIAL_AXIS]
    df = spec.resolution_hz
    markers: list[Marker] = []
    values: dict[str, float] = {}
    orders = [k * 0.5 for k in range(1, 2 * SHAFT_HARMONICS + 1)] + [float(k) for k in LOOSENESS_ORDERS]
    for order in orders:
        line = sp.find_line(spec.freqs, radial, order * fr, tolerance_hz=max(df, ORDER_TOLERANCE * order * fr),
                            floor_half_width_hz=ORDER_FLOOR_HALF_WIDTH * fr)
        name = f"{order:g}x"
        markers.append(Marker(name, order * fr, line.freq_hz, line.amplitude, line.snr))
        values[name] = line.amplitude if line.snr >= LINE_MIN_SNR else 0.0
    for k in (1, 2):
        line = sp.find_line(spec.freqs, axial, k * fr, tolerance_hz=max(df, ORDER_TOLERANCE * k * fr),
                            floor_half_width_hz=ORDER_FLOOR_HALF_WIDTH * fr)
        values[f"axial {k}x"] = line.amplitude
    return markers, values


def _defect_markers(freqs: np.ndarray, env: np.ndarray, fr: float, bearing: Bearing) -> list[Marker]:
    markers = []
    for name, f0 in bearing.frequencies(fr).items():
        for h in range(1, DEFECT_HARMONICS + 1):
            expected = h * f0
            line = sp.find_line(freqs, env, expected, BEARING_SLIP_TOLERANCE * expected,
                                floor_half_width_hz=ENVELOPE_FLOOR_HALF_WIDTH * fr)
            markers.append(Marker(name if h == 1 else f"{h}x{name}", expected, line.freq_hz, line.amplitude, line.snr))
    bpfi = bearing.frequencies(fr)["BPFI"]
    for sign, label in ((-1, "BPFI-1x"), (1, "BPFI+1x")):
        expected = bpfi + sign * fr
        line = sp.find_line(freqs, env, expected, BEARING_SLIP_TOLERANCE * bpfi,
                            floor_half_width_hz=ENVELOPE_FLOOR_HALF_WIDTH * fr)
        markers.append(Marker(label, expected, line.freq_hz, line.amplitude, line.snr))
    return markers


def _velocity_of_line(amplitude_g: float, freq_hz: float) -> float:
    """RMS velocity, mm/s, of a sine of peak acceleration `amplitude_g` at `freq_hz`."""
    return amplitude_g * sp.G_MM_S2 / (2.0 * np.pi * freq_hz) / math.sqrt(2.0)


def _findings(v: dict[str, float], fr: float, defects: list[Marker],
              zone: iso.Zone) -> list[tuple[str, float, list[str]]]:
    """(fault, strength, evidence) of every pattern present, strongest first within each rule."""
    found: list[tuple[str, float, list[str]]] = []
    by_name = {m.name: m for m in defects}
    for fault, key in (("outer_race", "BPFO"), ("inner_race", "BPFI")):
        m = by_name[key]
        if m.snr >= BEARING_MIN_SNR:
            ev = [f"envelope line at {m.found_hz:.2f} Hz, {m.snr:.1f}x its noise floor, where {key} is "
                  f"{m.expected_hz:.2f} Hz"]
            for h in range(2, DEFECT_HARMONICS + 1):
                mh = by_name[f"{h}x{key}"]
                if mh.snr >= BEARING_MIN_SNR:
                    ev.append(f"harmonic {h}x{key} at {mh.found_hz:.2f} Hz ({mh.snr:.1f}x floor)")
            if fault == "inner_race":
                for side in ("BPFI-1x", "BPFI+1x"):
                    if by_name[side].snr >= BEARING_MIN_SNR:
                        ev.append(f"shaft-rate sideband {side} at {by_name[side].found_hz:.2f} Hz (defect "
                                  "turning through the load zone)")
            found.append((fault, 10.0 + m.snr, ev))
    r1 = v["1x"]
    if r1 <= 0:
        return sorted(found, key=lambda f: -f[1])
    halves = [o for o in ("0.5x", "1.5x", "2.5x") if v[o] >= LOOSENESS_MIN_FRACTION * r1]
    combs = [f"{k}x" for k in LOOSENESS_ORDERS if v[f"{k}x"] >= LOOSENESS_MIN_FRACTION * r1]
    if len(halves) >= LOOSENESS_MIN_HALF_ORDERS or len(combs) >= LOOSENESS_MIN_HARMONICS:
        ev = []
        if halves:
            ev.append(f"half orders {', '.join(halves)} at >= {LOOSENESS_MIN_FRACTION:.0%} of 1x")
        if combs:
            ev.append(f"harmonic comb {', '.join(combs)} at >= {LOOSENESS_MIN_FRACTION:.0%} of 1x")
        found.append(("looseness", 5.0 + len(halves) + len(combs), ev))
    harmonic_ratio = (v["2x"] + v["3x"]) / r1
    axial_ratio = v["axial 2x"] / r1
    if harmonic_ratio >= MISALIGNMENT_HARMONIC_RATIO or axial_ratio >= MISALIGNMENT_AXIAL_RATIO:
        ev = []
        if harmonic_ratio >= MISALIGNMENT_HARMONIC_RATIO:
            ev.append(f"(2x + 3x) / 1x radial = {harmonic_ratio:.2f} (>= {MISALIGNMENT_HARMONIC_RATIO})")
        if axial_ratio >= MISALIGNMENT_AXIAL_RATIO:
            ev.append(f"axial 2x / radial 1x = {axial_ratio:.2f} (>= {MISALIGNMENT_AXIAL_RATIO})")
        found.append(("misalignment", 3.0 + harmonic_ratio + axial_ratio, ev))
    v1 = _velocity_of_line(r1, fr)
    axial1 = v["axial 1x"] / r1
    if (harmonic_ratio < IMBALANCE_MAX_HARMONIC_RATIO and axial1 < IMBALANCE_MAX_AXIAL_RATIO
            and v1 >= zone.boundaries[1]):
        found.append(("imbalance", 2.0 + v1 / zone.boundaries[1], [
            f"radial 1x alone is {v1:.2f} mm/s RMS, above the zone B/C boundary {zone.boundaries[1]:g} mm/s",
            f"(2x + 3x) / 1x = {harmonic_ratio:.2f} (< {IMBALANCE_MAX_HARMONIC_RATIO}), axial 1x / radial 1x = "
            f"{axial1:.2f} (< {IMBALANCE_MAX_AXIAL_RATIO})"]))
    return sorted(found, key=lambda f: -f[1])


def analyze(x: np.ndarray, sample_rate: float, shaft_hz: float | None, bearing: Bearing | None,
            machine_class: str = iso.CLASS_I, *, estimate_speed: bool = True) -> Analysis:
    """Analyse one recording (n, 3) in g of a machine running near `shaft_hz` with `bearing`.
    `estimate_speed` False takes `shaft_hz` as measured (a tachometer) instead of nominal."""
    arr = _check_inputs(x, sample_rate, shaft_hz, bearing)
    assert shaft_hz is not None and bearing is not None
    nseg, lo, hi, width = _plan(len(arr), sample_rate, shaft_hz, bearing)
    spec = sp.welch(arr, sample_rate, nseg)
    fr = sp.estimate_shaft(spec, shaft_hz, SPEED_SEARCH_FRACTION, RADIAL_AXES) if estimate_speed else shaft_hz
    velocity = sp.velocity_rms(spec)
    zone = iso.classify(float(velocity.max()), machine_class)
    order_markers, values = _order_markers(spec, fr)
    band = sp.band_with_most_energy(spec, max(lo, ENVELOPE_MIN_ORDER * fr), hi, width, RADIAL_AXES)
    env = sp.envelope(arr[:, list(RADIAL_AXES)], sample_rate, band)
    env_spec = sp.welch(env, sample_rate, nseg)
    env_amp = np.sqrt((env_spec.amplitude ** 2).mean(axis=1))
    defects = _defect_markers(env_spec.freqs, env_amp, fr, bearing)
    findings = _findings(values, fr, defects, zone)
    if findings:
        fault, _, evidence = findings[0]
        also = [f[0] for f in findings[1:]]
    elif zone.zone in ("C", "D"):
        fault, also = "unclassified", []
        evidence = [f"overall {zone.velocity_mm_s:.2f} mm/s is zone {zone.zone}, but no known fault pattern "
                    "in the order or envelope spectrum"]
    else:
        fault, also = "healthy", []
        evidence = [f"overall {zone.velocity_mm_s:.2f} mm/s (zone {zone.zone}); no bearing line in the envelope "
                    f"(all below {BEARING_MIN_SNR:g}x floor), no half orders, harmonic comb or high 2x"]
    return Analysis(sample_rate=float(sample_rate), seconds=len(arr) / sample_rate,
                    resolution_hz=spec.resolution_hz, shaft_nominal_hz=float(shaft_hz), shaft_hz=float(fr),
                    velocity_mm_s=[float(v) for v in velocity], zone=zone, order_markers=order_markers,
                    spectrum_freqs=spec.freqs, spectrum_amplitude=spec.amplitude[:, list(RADIAL_AXES)].max(axis=1),
                    envelope_band_hz=(float(band[0]), float(band[1])), envelope_freqs=env_spec.freqs,
                    envelope_amplitude=env_amp, defect_markers=defects, fault=fault, evidence=evidence, also=also)
