"""Rotary-machine vibration simulator: what a 3-axis MEMS accelerometer on a pump or motor sees.

Physics (product brief): a shaft turning at fr with slow random speed drift makes lines at 1x, 2x
and 3x fr; imbalance raises 1x (radial, x/y), misalignment raises 2x and 3x (notably axial, z),
looseness adds many harmonics and half orders; a rolling-bearing defect makes impacts that ring a
structural resonance, repeated at BPFO (outer race) or BPFI (inner race, amplitude-modulated at
shaft rate as the defect passes through the load zone), with a little random slip. Everything is
vectorised numpy; phase, speed and bearing ringing continue across successive `generate` calls,
and a seed makes a run reproducible. `skip(n)` advances a machine without producing samples (a
device that only looks at one window a second), exactly but for the sensor noise it does not draw.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from app.domain.bearings import Bearing
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

# `skip(n)` only pays off beyond this many ring-kernel lengths; shorter skips just generate.
_SKIP_MIN_FACTOR = 2
# Shaft lines are summed over blocks of at most this many samples: OpenBLAS runs a GEMM above
# ~64k multiply-adds on several threads, which spin against the fleet's own threads (10x slower);
# the block's work arrays are reused per thread: freshly allocated, their page faults cost 5x the maths.
_HARMONIC_BLOCK = 1024
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


# The simulated machines' bearing: an SKF 6205 deep-groove ball bearing (the CWRU data set's).
SIM_BEARING = Bearing(9, 7.94, 39.04, 0.0, "6205")


class MachineSimulator:
    """One machine's 3-axis vibration, generated block by block in g (float32, shape (n, 3))."""

    def __init__(
        self,
        seed: int = 0,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        shaft_hz: float = 24.7,
        *,
        bearing: Bearing | None = None,
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
        self.bearing = bearing or SIM_BEARING
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
        # True: sum the shaft lines with a sin and a cos per line and sample (`direct_harmonics`),
        # the reference the fast path is checked and benchmarked against
        self.reference_lines = False
        self._lines = self._build_lines()
        self._line_powers = self._as_powers(self._lines)

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
        return self.bearing.orders()["BPFO"] * self.shaft_hz

    @property
    def bpfi_hz(self) -> float:
        return self.bearing.orders()["BPFI"] * self.shaft_hz

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
        self._line_powers = self._as_powers(self._lines)

    def generate(self, n: int) -> np.ndarray:
        """The next `n` samples, float32 (n, 3) in g."""
        if n < 0:
            raise ValueError("n must be >= 0")
        if n == 0:
            return np.zeros((0, 3), np.float32)
        theta = self._advance_shaft(n)
        out = direct_harmonics(theta, self._lines) if self.reference_lines else self._harmonics(theta)
        ringing = self._bearing_signal(theta, n)
        if ringing is not None:
            out += ringing
        out += self._noise_rng.standard_normal((n, 3)) * self.noise_g
        self._samples += n
        return out.astype(np.float32)

    def skip(self, n: int) -> None:
        """Advance over the next `n` samples without producing them: what a device that only looks
        at some windows does between them. Shaft angle and speed drift move exactly as `generate(n)`
        would move them (same drift draw, closed-form phase), the bearing impact schedule is consumed
        exactly, impacts in the last few ms are rung so their ringing carries into the next block,
        and the sensor noise (independent per sample) is simply not drawn. So what follows a skip is
        statistically the same signal as what follows `generate(n)`, at a small fixed cost."""
        if n < 0:
            raise ValueError("n must be >= 0")
        tail = len(self._ring_tail)
        if n <= _SKIP_MIN_FACTOR * tail:  # too short to be worth a special path
            self.generate(n)
            return
        start, end = self._step_drift(n)
        c = 2.0 * np.pi * self.nominal_shaft_hz / self.sample_rate
        theta0 = self._theta  # the angle of the first skipped sample
        # theta[k] of `_advance_shaft`: theta0 + c * sum_{i<=k} (1 + ramp_i) - omega_0, closed form
        k = np.arange(n - tail - 1, n, dtype=np.float64)  # the sample before the rung tail, then the tail
        theta = theta0 + c * ((k + 1.0) * (1.0 + start) + (end - start) * (k + 1.0) * (k + 2.0) / (2.0 * n)
                              - (1.0 + start + (end - start) / n))
        omega_last = c * (1.0 + end)
        self._theta = float(theta[-1] + omega_last)
        if self._theta > _THETA_WRAP:
            self._wrap_theta()
            theta, theta0 = theta - _THETA_WRAP, theta0 - _THETA_WRAP
        for race, order in self._race_orders():
            self._races[race].drop_until(theta0 * order, theta[0] * order)
        self._ring_tail[:] = 0.0  # ringing from before the skip died out within it (n > 2 tails)
        self._bearing_signal(theta[1:], tail)  # sets the ring tail from the last impacts
        self._samples += n

    # -- internals --------------------------------------------------------------------------------
    def _step_drift(self, n: int) -> tuple[float, float]:
        """Ornstein-Uhlenbeck speed deviation at the start and end of an n-sample block (one draw)."""
        dt = n / self.sample_rate
        start = self._speed_dev
        decay = math.exp(-dt / DRIFT_TIME_CONSTANT_S)
        noise = self.drift_fraction * math.sqrt(1.0 - decay * decay) * float(self._drift_rng.standard_normal())
        end = start * decay + noise
        self._speed_dev = end
        return start, end

    def _race_orders(self) -> tuple[tuple[FaultMask, float], ...]:
        return ((FaultMask.BEARING_OUTER, self.bearing.orders()["BPFO"]),
                (FaultMask.BEARING_INNER, self.bearing.orders()["BPFI"]))

    def _wrap_theta(self) -> None:
        """Keep sin() arguments small; every order is a multiple of 0.5, so lines stay continuous."""
        self._theta -= _THETA_WRAP
        for race, order in self._race_orders():
            self._races[race].shift(_THETA_WRAP * order)

    def _harmonics(self, theta: np.ndarray) -> np.ndarray:
        """Sum of the shaft lines, (n, 3). Every order is a multiple of 0.5, so each line is a power
        of z = exp(i theta / 2): one complex exponential and a few multiplications replace a sin and
        a cos per line and sample; Re(z^m (a_cos - i a_sin)) = a_sin sin(m theta/2) + a_cos cos(m theta/2)."""
        m, coef_t = self._line_powers
        out = np.empty((len(theta), 3))
        rows, running = _scratch(len(m))
        for start in range(0, len(theta), _HARMONIC_BLOCK):
            z = np.exp(0.5j * theta[start:start + _HARMONIC_BLOCK])
            size = len(z)
            p = running[:size]
            p[:] = z
            row = 0
            for power in range(1, int(m[-1]) + 1):
                if power > 1:
                    np.multiply(p, z, out=p)
                if power == m[row]:
                    rows[row, :size] = p
                    row += 1
            out[start:start + size] = (coef_t @ rows[:len(m), :size]).real.T
        return out

    def _advance_shaft(self, n: int) -> np.ndarray:
        """Shaft angle for each of the next n samples; speed follows an Ornstein-Uhlenbeck drift,
        interpolated linearly over the block so the angle (and so every line's phase) is continuous."""
        start, end = self._step_drift(n)
        ramp = start + (end - start) * (np.arange(1, n + 1) / n)
        omega = 2.0 * np.pi * self.nominal_shaft_hz * (1.0 + ramp) / self.sample_rate
        theta = self._theta + np.cumsum(omega) - omega[0]
        self._theta = float(theta[-1] + omega[-1])
        if self._theta > _THETA_WRAP:
            self._wrap_theta()
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

    @staticmethod
    def _as_powers(lines: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Each line as a power m of exp(i theta / 2) with complex coefficient a_cos - i a_sin."""
        orders, a_sin, a_cos = lines
        return np.round(orders * 2).astype(np.intp), np.ascontiguousarray((a_cos - 1j * a_sin).T)

    def _make_ring_kernel(self) -> np.ndarray:
        omega = 2.0 * np.pi * self.resonance_hz
        tau = 1.0 / (RESONANCE_DAMPING * omega)
        t = np.arange(int(RING_LENGTH_TAUS * tau * self.sample_rate) + 1) / self.sample_rate
        return np.exp(-t / tau) * np.sin(omega * t + 0.5 * np.pi)  # starts at its peak

    def _bearing_signal(self, theta: np.ndarray, n: int) -> np.ndarray | None:
        """Impacts rung through the resonance, overlap-added so ringing carries into the next block."""
        tail_len = len(self._ring_tail)
        impulses = np.zeros(n)
        gain = _BEARING_IMPACT_G * self._severity
        for race, order in self._race_orders():
            if not (self._fault_mask & race) or gain <= 0:
                # advance the schedule all the same: turning a fault on later does not burst
                self._races[race].drop_until(float(theta[0]) * order, float(theta[-1]) * order)
                continue
            idx, amp = self._races[race].take(theta * order)
            if race == FaultMask.BEARING_INNER:
                # the inner-race defect turns with the shaft: strongest when it passes the load zone
                amp = amp * (0.55 + 0.45 * np.cos(theta[idx]))
            np.add.at(impulses, idx, gain * amp)
        if not impulses.any() and not self._ring_tail.any():
            return None  # nothing rings: the common healthy case costs no (n, 3) array
        ring = np.convolve(impulses, self._ring_kernel)  # length n + tail_len
        full = ring[:, None] * _BEARING_AXES[None, :]
        full[:tail_len] += self._ring_tail
        self._ring_tail = full[n:].copy()
        return full[:n]


_scratch_local = threading.local()


def _scratch(rows: int) -> tuple[np.ndarray, np.ndarray]:
    """This thread's (rows, _HARMONIC_BLOCK) and (_HARMONIC_BLOCK,) complex work arrays."""
    buf = getattr(_scratch_local, "rows", None)
    if buf is None or len(buf) < rows:
        buf = _scratch_local.rows = np.empty((rows, _HARMONIC_BLOCK), np.complex128)
        _scratch_local.running = np.empty(_HARMONIC_BLOCK, np.complex128)
    return buf, _scratch_local.running


class _ImpactSchedule:
    """Future impact angles of one bearing race: 2 pi apart in defect angle, with random slip, and
    a random amplitude each; drawn in batches from the race's own random stream."""

    _BATCH = 256  # ~3 s of impacts at a typical BPFO: one draw per few blocks

    def __init__(self, rng: np.random.Generator, slip: float) -> None:
        self._rng = rng
        self._slip = slip
        self._angles = np.array([2.0 * np.pi * float(rng.uniform())])
        self._amps = rng.uniform(0.8, 1.2, 1)

    def shift(self, delta: float) -> None:
        self._angles = self._angles - delta

    def _extend_past(self, angle: float) -> None:
        while self._angles[-1] <= angle:
            steps = 2.0 * np.pi * (1.0 + self._slip * self._rng.standard_normal(self._BATCH))
            self._angles = np.concatenate([self._angles, self._angles[-1] + np.cumsum(steps)])
            self._amps = np.concatenate([self._amps, self._rng.uniform(0.8, 1.2, self._BATCH)])

    def _catch_up(self, first: float) -> None:
        if self._angles[0] < first - 2.0 * np.pi:  # the fault was off for long: catch up
            skipped = np.floor((first - self._angles[0]) / (2.0 * np.pi))
            self._angles = self._angles + skipped * 2.0 * np.pi

    def drop_until(self, first: float, last: float) -> None:
        """Consume every impact of a skipped stretch of defect angles [first, last] unrung: the
        same random draws, in the same order, as `take` over that stretch."""
        self._catch_up(first)
        self._extend_past(last)
        count = int(np.searchsorted(self._angles, last, side="right"))
        self._angles, self._amps = self._angles[count:], self._amps[count:]

    def take(self, defect_angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Sample indices and amplitudes of the impacts that fall within this block's angles."""
        last = defect_angle[-1]
        self._catch_up(defect_angle[0])
        self._extend_past(last)
        count = int(np.searchsorted(self._angles, last, side="right"))
        idx = np.searchsorted(defect_angle, self._angles[:count])
        amps = self._amps[:count]
        self._angles, self._amps = self._angles[count:], self._amps[count:]
        return np.minimum(idx, len(defect_angle) - 1), amps


def direct_harmonics(theta: np.ndarray, lines: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Reference sum of shaft lines, (n, 3): a_sin sin(order theta) + a_cos cos(order theta) per line."""
    orders, a_sin, a_cos = lines
    arg = theta[:, None] * orders[None, :]
    return np.sin(arg) @ a_sin + np.cos(arg) @ a_cos


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
