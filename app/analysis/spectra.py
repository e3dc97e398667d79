"""Signal processing for condition monitoring, numpy only: Welch-averaged spectra, overall velocity
RMS from acceleration, spectral lines, the envelope (demodulation) spectrum and the shaft-speed
estimate. Inputs are acceleration in g, one column per axis."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Standard gravity: acceleration in g to mm/s^2.
G_MM_S2 = 9806.65
# ISO 10816/20816 overall velocity band for machines above 600 rpm, Hz.
VELOCITY_BAND_HZ = (10.0, 1000.0)
# Preferred line spacing of every spectrum, Hz: fine enough to split 1x from bearing lines on slow
# machines, coarse enough for several Welch averages in a few seconds of recording.
PREFERRED_RESOLUTION_HZ = 0.5
# Welch segments overlap by this fraction (50 % with a Hann window keeps every sample's weight).
WELCH_OVERLAP = 0.5
# Hann window: a line's energy is spread over +-2 bins; peaks are searched at least this far out.
LINE_HALF_WIDTH_BINS = 2
# Cosine taper of the envelope band-pass edges, as a fraction of the band width (limits ringing).
BAND_TAPER_FRACTION = 0.1
# Floor added before taking logs of spectra (parabolic peak interpolation), g.
_LOG_FLOOR = 1e-20


@dataclass(frozen=True)
class Spectrum:
    """Amplitude spectrum: `amplitude[i, axis]` is the peak amplitude (g) of a sine at `freqs[i]`."""

    freqs: np.ndarray
    amplitude: np.ndarray
    psd: np.ndarray  # one-sided power spectral density, g^2/Hz, same shape as amplitude

    @property
    def resolution_hz(self) -> float:
        return float(self.freqs[1] - self.freqs[0])


def segment_length(n: int, sample_rate: float, resolution_hz: float = PREFERRED_RESOLUTION_HZ) -> int:
    """Welch segment length for a line spacing of `resolution_hz`, at most the whole recording."""
    return int(min(n, math.ceil(sample_rate / resolution_hz)))


def welch(x: np.ndarray, sample_rate: float, nseg: int) -> Spectrum:
    """Hann-windowed, 50 %-overlapped Welch spectrum of each column of `x` (n, axes) or (n,)."""
    data = np.asarray(x, dtype=np.float64)
    if data.ndim == 1:
        data = data[:, None]
    data = data - data.mean(axis=0)
    n = len(data)
    step = max(1, int(nseg * (1.0 - WELCH_OVERLAP)))
    starts = range(0, n - nseg + 1, step)
    w = np.hanning(nseg)
    power = np.zeros((nseg // 2 + 1, data.shape[1]))
    for s in starts:
        power += np.abs(np.fft.rfft(data[s:s + nseg] * w[:, None], axis=0)) ** 2
    power /= len(starts)
    amplitude = np.sqrt(power) * 2.0 / w.sum()
    psd = power * 2.0 / (sample_rate * float(np.sum(w * w)))
    psd[0] /= 2.0
    return Spectrum(np.fft.rfftfreq(nseg, 1.0 / sample_rate), amplitude, psd)


def velocity_rms(spec: Spectrum, band: tuple[float, float] = VELOCITY_BAND_HZ) -> np.ndarray:
    """Overall velocity RMS per axis, mm/s, over `band`: the acceleration PSD divided by (2 pi f)^2,
    integrated over the band (integration in the frequency domain: no drift from a DC offset)."""
    f = spec.freqs
    sel = (f >= band[0]) & (f <= band[1])
    vel_psd = spec.psd[sel] * (G_MM_S2 / (2.0 * np.pi * f[sel, None])) ** 2
    return np.sqrt(vel_psd.sum(axis=0) * spec.resolution_hz)


@dataclass(frozen=True)
class Line:
    """A spectral line found near an expected frequency."""

    expected_hz: float
    freq_hz: float  # interpolated peak frequency
    amplitude: float  # peak amplitude, same unit as the spectrum
    snr: float  # amplitude over the local noise floor (median of the neighbourhood)


def find_line(freqs: np.ndarray, amp: np.ndarray, expected: float, tolerance_hz: float,
              floor_half_width_hz: float | None = None) -> Line:
    """The strongest peak of `amp` (1-D) within `expected` +- `tolerance_hz` (at least +-2 bins),
    with its frequency refined by parabolic interpolation of the log amplitude, and its ratio to
    the median of the spectrum within +-`floor_half_width_hz` (default 5 x the tolerance)."""
    df = float(freqs[1] - freqs[0])
    tol = max(tolerance_hz, LINE_HALF_WIDTH_BINS * df)
    lo = max(1, math.floor((expected - tol) / df))
    hi = min(len(amp) - 2, math.ceil((expected + tol) / df))
    if hi < lo:
        return Line(expected, expected, 0.0, 0.0)
    k = lo + int(np.argmax(amp[lo:hi + 1]))
    a, b, c = np.log(amp[k - 1:k + 2] + _LOG_FLOOR)
    denom = a - 2.0 * b + c
    delta = 0.5 * (a - c) / denom if denom < 0 else 0.0
    half = floor_half_width_hz if floor_half_width_hz is not None else 5.0 * tol
    flo, fhi = max(1, int((expected - half) / df)), min(len(amp) - 1, int((expected + half) / df))
    neighbourhood = np.concatenate([amp[flo:max(flo, k - 3 * LINE_HALF_WIDTH_BINS)],
                                    amp[k + 3 * LINE_HALF_WIDTH_BINS + 1:fhi + 1]])
    floor = float(np.median(neighbourhood)) if len(neighbourhood) else 0.0
    value = float(amp[k])
    return Line(expected, float((k + max(-0.5, min(0.5, delta))) * df), value,
                value / floor if floor > 0 else math.inf)


def estimate_shaft(spec: Spectrum, nominal_hz: float, search_fraction: float, axes: tuple[int, ...],
                   harmonics: int = 3) -> float:
    """Shaft frequency near `nominal_hz` (+- `search_fraction`): the candidate whose 1x..`harmonics`x
    lines, each normalised by its strongest value in the search range, sum highest (so 1x-dominated
    imbalance and 2x-dominated misalignment both lock on); then refined on the strongest harmonic's
    interpolated peak divided by its order."""
    amp = spec.amplitude[:, list(axes)].max(axis=1)
    f = spec.freqs
    df = spec.resolution_hz
    cand = np.arange(nominal_hz * (1 - search_fraction), nominal_hz * (1 + search_fraction), df / 4.0)
    score = np.zeros_like(cand)
    best_k, best_amp = 1, -1.0
    for k in range(1, harmonics + 1):
        values = np.interp(k * cand, f, amp)
        top = float(values.max())
        if top > best_amp:
            best_k, best_amp = k, top
        score += values / top if top > 0 else 0.0
    coarse = float(cand[int(np.argmax(score))])
    line = find_line(f, amp, best_k * coarse, tolerance_hz=best_k * df)
    return line.freq_hz / best_k


def envelope(x: np.ndarray, sample_rate: float, band: tuple[float, float]) -> np.ndarray:
    """Hilbert envelope of each column of `x` band-passed to `band` Hz: the analytic signal built in
    the frequency domain (negative frequencies dropped, the band kept with cosine-tapered edges),
    its magnitude, mean removed."""
    data = np.asarray(x, dtype=np.float64)
    if data.ndim == 1:
        data = data[:, None]
    n = len(data)
    spectrum = np.fft.fft(data - data.mean(axis=0), axis=0)
    f = np.fft.fftfreq(n, 1.0 / sample_rate)
    lo, hi = band
    taper = BAND_TAPER_FRACTION * (hi - lo)
    gain = np.zeros(n)
    pos = f > 0
    rise = np.clip((f[pos] - (lo - taper)) / taper, 0.0, 1.0)
    fall = np.clip(((hi + taper) - f[pos]) / taper, 0.0, 1.0)
    gain[pos] = 2.0 * np.sin(0.5 * np.pi * np.minimum(rise, fall)) ** 2
    analytic = np.fft.ifft(spectrum * gain[:, None], axis=0)
    env = np.abs(analytic)
    return env - env.mean(axis=0)


def band_with_most_energy(spec: Spectrum, lo_hz: float, hi_hz: float, width_hz: float,
                          axes: tuple[int, ...]) -> tuple[float, float]:
    """The `width_hz` wide band inside [lo_hz, hi_hz] holding the most acceleration power: where a
    structural resonance rung by bearing impacts sits."""
    df = spec.resolution_hz
    power = spec.psd[:, list(axes)].sum(axis=1)
    i0, i1 = math.ceil(lo_hz / df), math.floor(hi_hz / df)
    w = max(1, round(width_hz / df))
    sums = np.convolve(power[i0:i1 + 1], np.ones(w), mode="valid")
    start = i0 + int(np.argmax(sums))
    return start * df, (start + w) * df
