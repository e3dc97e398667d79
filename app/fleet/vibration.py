"""Rotary-machine vibration simulator: what a 3-axis MEMS accelerometer on a pump or motor sees.

Physics (product brief): a shaft turning at fr with slow random speed drift makes lines at 1x, 2x
and 3x fr; imbalance raises 1x (radial, x/y), misalignment raises 2x and 3x (notably axial, z),
looseness adds many harmonics and half orders; a rolling-bearing defect makes impacts that ring a
structural resonance, repeated at BPFO (outer race) or BPFI (inner race, amplitude-modulated at
shaft rate as the defect passes through the load zone), with a little random slip. Everything is
vectorised numpy; phase, speed and bearing ringing continue across successive `generate` calls,
and a seed makes a run reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from app.protocol.codes import FaultMask

# ADXL345-class accelerometer: up to 3.2 kHz output data rate.
DEFAULT_SAMPLE_RATE = 3200
# Sensor noise, g rms per axis (MEMS noise density times bandwidth, order of magnitude).
DEFAULT_NOISE_G = 0.012
# Shaft speed drifts by about this fraction of nominal (load and line-frequency changes) ...
DEFAULT_DRIFT_FRACTION = 0.004
# ... with this correlation time, seconds: slow compared with one 0.32 s feature window.
DRIFT_TIME_CONSTANT_S = 20.0
# Structural resonance rung by bearing impacts: inside the brief's 1-5 kHz, below Nyquist at 3.2 kHz.
DEFAULT_RESONANCE_HZ = 1250.0
# Damping ratio of that resonance; ~5 % is typical of a bolted bearing housing.
RESONANCE_DAMPING = 0.05
# The ringing kernel is cut after this many time constants (exp(-6) < 0.3 %).
RING_LENGTH_TAUS = 6.0
# Random slip of rolling elements: the impact period varies by this fraction (1-2 % is typical).
BEARING_SLIP = 0.015

# The shaft angle is wrapped by this much (a multiple of 4 pi, so half orders stay continuous).
_THETA_WRAP = 4.0 * np.pi * 4096
# Healthy machine, g amplitude per harmonic order and axis (x, y radial; z axial).
_BASE_AMPLITUDE = {1.0: (0.060, 0.045, 0.015), 2.0: (0.020, 0.016, 0.012), 3.0: (0.008, 0.007, 0.005)}
# Amplitude added at severity 1, per fault, order -> (x, y, z).
_IMBALANCE = {1.0: (0.45, 0.38, 0.04)}
_MISALIGNMENT = {1.0: (0.04, 0.03, 0.10), 2.0: (0.22, 0.18, 0.35), 3.0: (0.10, 0.08, 0.16)}
_LOOSENESS = {
    **{k + 0.5: (0.05 / (k + 1), 0.06 / (k + 1), 0.015 / (k + 1)) for k in range(0, 6)},
    **{float(k): (0.10 / math.sqrt(k), 0.12 / math.sqrt(k), 0.03 / math.sqrt(k)) for k in range(1, 11)},
}
# Peak acceleration, g, of one bearing impact at severity 1, and its split over the axes.
_BEARING_IMPACT_G = 1.2
_BEARING_AXES = np.array([1.0, 0.75, 0.35])


@dataclass(frozen=True)
class BearingGeometry:
    """Rolling-element bearing geometry (default: SKF 6205 deep-groove ball bearing)."""

    n_balls: int = 9
    ball_diameter_mm: float = 7.94
    pitch_diameter_mm: float = 39.04
    contact_angle_deg: float = 0.0

    def _ratio(self) -> float:
        return self.ball_diameter_mm / self.pitch_diameter_mm * math.cos(math.radians(self.contact_angle_deg))

    def bpfo_order(self) -> float:
        """Ball-pass frequency, outer race, in multiples of shaft frequency: (n/2)(1 - d/D cos a)."""
        return self.n_balls / 2.0 * (1.0 - self._ratio())

    def bpfi_order(self) -> float:
        """Ball-pass frequency, inner race, in multiples of shaft frequency: (n/2)(1 + d/D cos a)."""
        return self.n_balls / 2.0 * (1.0 + self._ratio())


class MachineSimulator:
    """One machine's 3-axis vibration, generated block by block in g (float32, shape (n, 3))."""

    def __init__(
        self,
        seed: int = 0,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        shaft_hz: float = 24.7,
        *,
        bearing: BearingGeometry | None = None,
        resonance_hz: float = DEFAULT_RESONANCE_HZ,
        noise_g: float = DEFAULT_NOISE_G,
        drift_fraction: float = DEFAULT_DRIFT_FRACTION,
        bearing_slip: float = BEARING_SLIP,
    ) -> None:
        if sample_rate <= 0 or shaft_hz <= 0:
            raise ValueError("sample_rate and shaft_hz must be positive")
        if resonance_hz >= sample_rate / 2:
            raise ValueError(f"resonance {resonance_hz} Hz must be below Nyquist ({sample_rate / 2} Hz)")
        self.sample_rate = int(sample_rate)
        self.nominal_shaft_hz = float(shaft_hz)
        self.bearing = bearing or BearingGeometry()
        self.resonance_hz = float(resonance_hz)
        self.noise_g = float(noise_g)
        self.drift_fraction = float(drift_fraction)
        self.bearing_slip = float(bearing_slip)
        # separate streams, so that how a run is cut into blocks changes neither noise nor impacts
        machine, drift, noise, outer, inner = (np.random.default_rng(s)
                                               for s in np.random.SeedSequence(seed).spawn(5))
        self._drift_rng, self._noise_rng = drift, noise
        # Each machine differs a little: amplitude (+-25 %) and phase of every line, per axis.
        self._machine_gain = machine.uniform(0.75, 1.25, size=(64, 3))
        self._machine_phase = machine.uniform(0.0, 2.0 * np.pi, size=(64, 3))
        self._theta = float(machine.uniform(0.0, 2.0 * np.pi))  # shaft angle, radians
        self._speed_dev = 0.0  # fractional deviation from nominal speed (OU process)
        self._samples = 0
        self._fault_mask = FaultMask(0)
        self._severity = 0.0
        # bearing impacts happen when the defect angle passes these scheduled angles
        self._races = {FaultMask.BEARING_OUTER: _ImpactSchedule(outer, self.bearing_slip),
                       FaultMask.BEARING_INNER: _ImpactSchedule(inner, self.bearing_slip)}
        self._ring_kernel = self._make_ring_kernel()
        self._ring_tail = np.zeros((len(self._ring_kernel) - 1, 3))
        self._lines = self._build_lines()

    # -- public -----------------------------------------------------------------------------------
    @property
    def shaft_hz(self) -> float:
        """Current shaft frequency, Hz (nominal plus drift)."""
        return self.nominal_shaft_hz * (1.0 + self._speed_dev)

    @property
    def fault_mask(self) -> FaultMask:
        return self._fault_mask

    @property
    def severity(self) -> float:
        return self._severity

    @property
    def bpfo_hz(self) -> float:
        return self.bearing.bpfo_order() * self.shaft_hz

    @property
    def bpfi_hz(self) -> float:
        return self.bearing.bpfi_order() * self.shaft_hz

    @property
    def elapsed_s(self) -> float:
        return self._samples / self.sample_rate

    def set_fault(self, mask: int, severity: float = 1.0) -> None:
        """Switch the fault mode at run time: FaultMask bits, severity 0 (none) .. 1 (severe)."""
        if not math.isfinite(severity):
            raise ValueError("severity must be a finite number")
        self._fault_mask = FaultMask(int(mask) & int(sum(FaultMask)))
        self._severity = min(max(float(severity), 0.0), 1.0)
        self._lines = self._build_lines()

    def generate(self, n: int) -> np.ndarray:
        """The next `n` samples, float32 (n, 3) in g."""
        if n < 0:
            raise ValueError("n must be >= 0")
        if n == 0:
            return np.zeros((0, 3), np.float32)
        theta = self._advance_shaft(n)
        orders, a_sin, a_cos = self._lines
        arg = theta[:, None] * orders[None, :]
        out = np.sin(arg) @ a_sin + np.cos(arg) @ a_cos
        out += self._bearing_signal(theta, n)
        out += self._noise_rng.standard_normal((n, 3)) * self.noise_g
        self._samples += n
        return out.astype(np.float32)

    # -- internals --------------------------------------------------------------------------------
    def _advance_shaft(self, n: int) -> np.ndarray:
        """Shaft angle for each of the next n samples; speed follows an Ornstein-Uhlenbeck drift,
        interpolated linearly over the block so the angle (and so every line's phase) is continuous."""
        dt = n / self.sample_rate
        start = self._speed_dev
        decay = math.exp(-dt / DRIFT_TIME_CONSTANT_S)
        noise = self.drift_fraction * math.sqrt(1.0 - decay * decay) * float(self._drift_rng.standard_normal())
        end = start * decay + noise
        self._speed_dev = end
        ramp = start + (end - start) * (np.arange(1, n + 1) / n)
        omega = 2.0 * np.pi * self.nominal_shaft_hz * (1.0 + ramp) / self.sample_rate
        theta = self._theta + np.cumsum(omega) - omega[0]
        self._theta = float(theta[-1] + omega[-1])
        if self._theta > _THETA_WRAP:  # keep sin() arguments small; every order is a multiple of 0.5
            self._theta -= _THETA_WRAP
            self._races[FaultMask.BEARING_OUTER].shift(_THETA_WRAP * self.bearing.bpfo_order())
            self._races[FaultMask.BEARING_INNER].shift(_THETA_WRAP * self.bearing.bpfi_order())
            theta = theta - _THETA_WRAP
        return theta

    def _build_lines(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Harmonic orders and their (sin, cos) amplitude matrices, each (orders, 3)."""
        amp: dict[float, np.ndarray] = {k: np.array(v) for k, v in _BASE_AMPLITUDE.items()}
        s = self._severity
        for bit, table in ((FaultMask.IMBALANCE, _IMBALANCE), (FaultMask.MISALIGNMENT, _MISALIGNMENT),
                           (FaultMask.LOOSENESS, _LOOSENESS)):
            if self._fault_mask & bit and s > 0:
                for order, add in table.items():
                    amp[order] = amp.get(order, np.zeros(3)) + s * np.array(add)
        orders = np.array(sorted(amp))
        idx = np.round(orders * 2).astype(int)  # each half order has its own gain and phase
        mag = np.stack([amp[o] for o in orders]) * self._machine_gain[idx]
        phase = self._machine_phase[idx]
        return orders, mag * np.cos(phase), mag * np.sin(phase)

    def _make_ring_kernel(self) -> np.ndarray:
        omega = 2.0 * np.pi * self.resonance_hz
        tau = 1.0 / (RESONANCE_DAMPING * omega)
        t = np.arange(int(RING_LENGTH_TAUS * tau * self.sample_rate) + 1) / self.sample_rate
        return np.exp(-t / tau) * np.sin(omega * t + 0.5 * np.pi)  # starts at its peak

    def _bearing_signal(self, theta: np.ndarray, n: int) -> np.ndarray:
        """Impacts rung through the resonance, overlap-added so ringing carries into the next block."""
        tail_len = len(self._ring_tail)
        impulses = np.zeros(n)
        gain = _BEARING_IMPACT_G * self._severity
        for race, order in ((FaultMask.BEARING_OUTER, self.bearing.bpfo_order()),
                            (FaultMask.BEARING_INNER, self.bearing.bpfi_order())):
            idx, amp = self._races[race].take(theta * order)
            if not (self._fault_mask & race) or gain <= 0:
                continue  # the schedule still advanced: turning a fault on later does not burst
            if race == FaultMask.BEARING_INNER:
                # the inner-race defect turns with the shaft: strongest when it passes the load zone
                amp = amp * (0.55 + 0.45 * np.cos(theta[idx]))
            np.add.at(impulses, idx, gain * amp)
        if not impulses.any() and not self._ring_tail.any():
            return np.zeros((n, 3))
        ring = np.convolve(impulses, self._ring_kernel)  # length n + tail_len
        full = ring[:, None] * _BEARING_AXES[None, :]
        full[:tail_len] += self._ring_tail
        self._ring_tail = full[n:].copy()
        return full[:n]


class _ImpactSchedule:
    """Future impact angles of one bearing race: 2 pi apart in defect angle, with random slip, and
    a random amplitude each; drawn in batches from the race's own random stream."""

    _BATCH = 64

    def __init__(self, rng: np.random.Generator, slip: float) -> None:
        self._rng = rng
        self._slip = slip
        self._angles = np.array([2.0 * np.pi * float(rng.uniform())])
        self._amps = rng.uniform(0.8, 1.2, 1)

    def shift(self, delta: float) -> None:
        self._angles = self._angles - delta

    def take(self, defect_angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sample indices and amplitudes of the impacts that fall within this block's angles."""
        last = defect_angle[-1]
        if self._angles[0] < defect_angle[0] - 2.0 * np.pi:  # the fault was off for long: catch up
            skipped = np.floor((defect_angle[0] - self._angles[0]) / (2.0 * np.pi))
            self._angles = self._angles + skipped * 2.0 * np.pi
        while self._angles[-1] <= last:
            steps = 2.0 * np.pi * (1.0 + self._slip * self._rng.standard_normal(self._BATCH))
            self._angles = np.concatenate([self._angles, self._angles[-1] + np.cumsum(steps)])
            self._amps = np.concatenate([self._amps, self._rng.uniform(0.8, 1.2, self._BATCH)])
        count = int(np.searchsorted(self._angles, last, side="right"))
        idx = np.searchsorted(defect_angle, self._angles[:count])
        amps = self._amps[:count]
        self._angles, self._amps = self._angles[count:], self._amps[count:]
        return np.minimum(idx, len(defect_angle) - 1), amps


def estimate_shaft_hz(window: np.ndarray, sample_rate: int, lo_hz: float = 10.0, hi_hz: float = 60.0) -> float:
    """Shaft frequency estimate from a (n, 3) window: strongest radial spectral line in [lo, hi] Hz,
    refined by parabolic interpolation; 0.0 when the window is too short."""
    x = np.asarray(window, dtype=np.float64)
    n = len(x)
    if n < 64:
        return 0.0
    d = x[:, :2] - x[:, :2].mean(axis=0)
    spec = (np.abs(np.fft.rfft(d * np.hanning(n)[:, None], axis=0)) ** 2).sum(axis=1)
    lo = max(1, int(lo_hz * n / sample_rate))
    hi = min(len(spec) - 2, int(hi_hz * n / sample_rate) + 1)
    if hi <= lo:
        return 0.0
    k = lo + int(np.argmax(spec[lo:hi + 1]))
    a, b, c = np.log(spec[k - 1:k + 2] + 1e-20)
    denom = a - 2 * b + c
    delta = 0.5 * (a - c) / denom if denom != 0 else 0.0
    return float((k + max(-0.5, min(0.5, delta))) * sample_rate / n)
