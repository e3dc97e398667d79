"""Condition-monitoring analysis against the simulator's ground truth (issue 15, item 5).

For each simulated fault and severity, over SEEDS machines with random speeds (and a nominal speed
off by up to NOMINAL_ERROR): how often the diagnosis names the right fault, the error of the
estimated shaft speed and of the BPFO/BPFI peak frequency against the truth, in spectral lines
(target: within one line). Then velocity RMS against analytic sines of known amplitude (target
within 2 %), and the time one analysis takes.

    python benchmarks/diagnosis.py [--seeds N] [--seconds S]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.analysis import iso
from app.analysis import spectra as sp
from app.analysis.diagnosis import analyze
from app.analysis.simulated import record
from app.protocol.codes import FaultMask

# Machines per fault and severity: enough to see a miss rate, quick enough for a laptop.
SEEDS = 8
# Recording length, s: what `data record` gives in a few seconds of a maintenance round.
SECONDS = 8.0
SEVERITIES = (0.1, 0.25, 0.5, 1.0)
# Simulated machines run at 18-32 Hz (1080-1920 rpm), the fleet's range ...
SPEED_RANGE_HZ = (18.0, 32.0)
# ... and the engineer's nominal speed is off by up to this fraction (slip, a drive's set point).
NOMINAL_ERROR = 0.03
FAULTS = [("healthy", 0), ("imbalance", FaultMask.IMBALANCE), ("misalignment", FaultMask.MISALIGNMENT),
          ("looseness", FaultMask.LOOSENESS), ("outer_race", FaultMask.BEARING_OUTER),
          ("inner_race", FaultMask.BEARING_INNER)]
# The simulated machines: 15-300 kW pumps on flexible foundations.
KLASS = iso.machine_class(2, "flexible")
# The live view's panel analyses the feed's buffer (app/ui/live_feed.py WAVE_SECONDS) once a second.
LIVE_SECONDS = 4.0
# Timed analyses per length (median and max printed: the machine is shared and noisy).
TIMING_RUNS = 20
SINES = [(f, a) for f in (12.0, 24.7, 60.0, 157.1, 400.0, 980.0) for a in (0.05, 0.5)]


def fault_rows(seeds: int, seconds: float) -> list[str]:
    rows = ["| fault | severity | named right | shaft error, lines (max) | defect line error, lines (max) | "
            "zones seen |", "|---|---|---|---|---|---|"]
    for name, mask in FAULTS:
        for severity in (SEVERITIES if mask else (0.0,)):
            right, shaft_err, defect_err, zones, calls = 0, [], [], set(), {}
            for seed in range(seeds):
                rng = np.random.default_rng(1000 + seed)
                speed = float(rng.uniform(*SPEED_RANGE_HZ))
                nominal = speed * (1 + float(rng.uniform(-NOMINAL_ERROR, NOMINAL_ERROR)))
                rec = record(seed, mask, severity, seconds, shaft_hz=speed)
                a = analyze(rec.samples, rec.sample_rate, nominal, rec.bearing, KLASS)
                right += a.fault == name
                calls[a.fault] = calls.get(a.fault, 0) + 1
                shaft_err.append(abs(a.shaft_hz - rec.shaft_hz) / a.resolution_hz)
                zones.add(a.zone.zone)
                if name in ("outer_race", "inner_race"):
                    key = "BPFO" if name == "outer_race" else "BPFI"
                    defect_err.append(abs(a.marker(key).found_hz - rec.defect_hz(key)) / a.resolution_hz)
            wrong = ", ".join(f"{k} {v}" for k, v in calls.items() if k != name)
            defect = f"{max(defect_err):.2f}" if defect_err else "-"
            rows.append(f"| {name} | {severity:g} | {right}/{seeds}" + (f" ({wrong})" if wrong else "")
                        + f" | {max(shaft_err):.2f} | {defect} | {''.join(sorted(zones))} |")
    return rows


def velocity_rows() -> list[str]:
    fs = 3200
    t = np.arange(int(fs * SECONDS)) / fs
    worst = 0.0
    rows = ["| sine Hz | amplitude g | expected mm/s | measured mm/s | error % |", "|---|---|---|---|---|"]
    for freq, amp in SINES:
        x = np.stack([amp * np.sin(2 * np.pi * freq * t + 0.7)] * 3, axis=1)
        v = float(sp.velocity_rms(sp.welch(x, fs, sp.segment_length(len(x), fs)))[0])
        expected = amp * sp.G_MM_S2 / (2 * np.pi * freq) / math.sqrt(2)
        err = 100 * (v - expected) / expected
        worst = max(worst, abs(err))
        rows.append(f"| {freq:g} | {amp:g} | {expected:.3f} | {v:.3f} | {err:+.2f} |")
    rows.append(f"\nworst velocity RMS error: {worst:.2f} % (target 2 %)")
    return rows


def timing_row(seconds: float) -> str:
    rec = record(99, FaultMask.BEARING_OUTER, 0.5, seconds)
    times = []
    for _ in range(TIMING_RUNS):
        start = time.perf_counter()
        analyze(rec.samples, rec.sample_rate, 24.7, rec.bearing, KLASS)
        times.append(time.perf_counter() - start)
    return (f"one analysis of {seconds:g} s at 3200 Hz: median {statistics.median(times) * 1e3:.1f} ms, "
            f"max {max(times) * 1e3:.1f} ms ({TIMING_RUNS} runs)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=SEEDS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    args = parser.parse_args()
    print(f"{args.seeds} machines per row, {args.seconds:g} s recordings at 3200 Hz, speeds "
          f"{SPEED_RANGE_HZ[0]:g}-{SPEED_RANGE_HZ[1]:g} Hz, nominal speed off by up to {NOMINAL_ERROR:.0%}, "
          f"bearing 6205, class {KLASS}\n")
    print("\n".join(fault_rows(args.seeds, args.seconds)))
    print()
    print("\n".join(velocity_rows()))
    print()
    print(timing_row(args.seconds))
    print(timing_row(LIVE_SECONDS) + "  <- the live view's panel, once a second")
    return 0


if __name__ == "__main__":
    sys.exit(main())
