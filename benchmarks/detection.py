"""Detection rate and false-alarm rate of the trained detector on the virtual fleet's machines
(issue 14, "Measure it").

Machines: virtual-fleet devices of different shaft speeds (app.fleet.fleet.device_plan), each its
own MachineSimulator (app/fleet/vibration.py) as the virtual device runs it. For each machine,
TRAIN_S seconds of normal running train (real TensorFlow, the product pipeline app.ml.pipeline with
its default TrainConfig: threshold = the larger of the 99.5th percentile of held-out normal scores
x 1.5 and the log-normal tolerance bound for 1e-6 false alarms a window, app.ml.threshold):
  (a) per-machine: a model per machine, scored on that machine;
  (b) fleet: one model trained on every machine's normal data, scored on each;
  (c) transplanted: the first machine's model deployed to the others (the issue's "Why");
  (d) RMS baseline: overall acceleration RMS of the window against the same calibration rule
      (app.ml.threshold.calibrate on the machine's training windows);
  (a') the per-machine model of (a) under the threshold rule before app.ml.threshold (99.5th
      percentile x 1.5 alone): the reference for what the tail bound buys and costs.
Then fresh normal running (NORMAL_WINDOWS windows after the training data) gives the false-alarm
rate (as a rate per window with its Wilson 95 % interval, and per machine-day at one telemetry
window a second), and each fault of the simulator's fault masks at each severity
(FAULT_WINDOWS windows) gives the detection rate. Scores are int8 through the real TFLM interpreter,
as a device computes them. The fit-to-machine check (app.deploy.fit_check.judge, on a capture-sized
sample of each target's normal windows) is run for (c): it should flag every target where (c)
false-alarms more than once a machine-day.

    python benchmarks/detection.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.deploy import fit_check
from app.fleet.fleet import device_plan
from app.fleet.vibration import MachineSimulator
from app.ml import features, pipeline, threshold, training
from app.ml.intervals import Rate
from app.protocol.codes import FaultMask

# Virtual-fleet devices (0-based plan index): sim-001, sim-003, sim-005 run at three speeds.
MACHINES = (0, 2, 4)
# Normal running trained on per machine, seconds (~375 windows: `adapt`'s default recording).
TRAIN_S = 120.0
# Fresh normal windows per machine for the false-alarm rate: 1.33 machine-days each, so that three
# machines without a false alarm bound the rate under one a machine-day (Wilson upper 95 %: 0.96).
NORMAL_WINDOWS = 115_200
# Fault windows start this many windows after the training data (the same machine, later). Not after
# all the normal windows: the simulator's skip walks the bearing-impact schedule in Python, and 25
# simulators each skipping 1.3 machine-days took longer than everything else.
FAULT_OFFSET_WINDOWS = 1500
# Normal windows are simulated, featurised and scored in batches of this many (a machine-day of raw
# windows is 1 GB of float32).
BATCH_WINDOWS = 5000
# Windows per fault and severity per machine.
FAULT_WINDOWS = 100
SEVERITIES = (0.02, 0.05, 0.1, 0.25, 0.5)
FAULTS = (("imbalance", FaultMask.IMBALANCE), ("misalignment", FaultMask.MISALIGNMENT),
          ("looseness", FaultMask.LOOSENESS), ("outer race", FaultMask.BEARING_OUTER),
          ("inner race", FaultMask.BEARING_INNER))
# One telemetry window a second: false alarms per machine-day = rate per window x this.
WINDOWS_PER_DAY = 86_400
# The targets: at most one false alarm per machine-day; >= 95 % of moderate bearing faults.
TARGET_FALSE_PER_DAY = 1.0
TARGET_DETECTION = 0.95
# --quick: smaller runs, for a look at the shape of the table (not for the README).
QUICK = {"TRAIN_S": 60.0, "NORMAL_WINDOWS": 2000, "FAULT_WINDOWS": 40}
SPEC = features.DEFAULT_SPEC


def windows(sim: MachineSimulator, n: int) -> np.ndarray:
    """(n, window, 3) raw windows, back to back."""
    return sim.generate(n * SPEC.window).reshape(n, SPEC.window, 3)


def rms(raw: np.ndarray) -> np.ndarray:
    """Overall acceleration RMS of each window (3 axes, mean removed per axis)."""
    centred = raw - raw.mean(axis=1, keepdims=True)
    return np.sqrt((centred ** 2).sum(axis=2).mean(axis=1))


class Machine:
    """One virtual-fleet machine's training, normal and fault data (features and RMS)."""

    def __init__(self, index: int, train_s: float, normal_windows: int, fault_windows: int) -> None:
        plan = device_plan(index)
        self.name, self.shaft_hz, self.seed = plan["device_id"], float(plan["shaft_hz"]), index
        sim = MachineSimulator(self.seed, SPEC.sample_rate, self.shaft_hz)
        sim.generate(SPEC.window)  # start-up
        n_train = int(np.ceil(train_s * SPEC.sample_rate / SPEC.window))
        train_raw = windows(sim, n_train)
        self.train, self.train_rms = features.extract_batch(train_raw), rms(train_raw)
        normal, normal_rms = [], []  # later running of the same machine
        for start in range(0, normal_windows, BATCH_WINDOWS):
            raw = windows(sim, min(BATCH_WINDOWS, normal_windows - start))
            normal.append(features.extract_batch(raw))
            normal_rms.append(rms(raw))
        self.normal, self.normal_rms = np.concatenate(normal), np.concatenate(normal_rms)
        self.faults: dict[tuple[str, float], tuple[np.ndarray, np.ndarray]] = {}
        for label, mask in FAULTS:
            for severity in SEVERITIES:
                # the same machine, later: its running FAULT_OFFSET_WINDOWS after the training data, now faulty
                fsim = MachineSimulator(self.seed, SPEC.sample_rate, self.shaft_hz)
                fsim.skip((1 + n_train + FAULT_OFFSET_WINDOWS) * SPEC.window)
                fsim.set_fault(int(mask), severity)
                raw = windows(fsim, fault_windows)
                self.faults[(label, severity)] = (features.extract_batch(raw), rms(raw))


# Scores of a model on a dataset, computed once: the old-rule row reuses the per-machine model's.
_SCORES: dict[tuple[int, int], np.ndarray] = {}


class Detector:
    """A trained model (int8 through TFLM) or the RMS baseline, with its threshold (the model's own
    unless `threshold` says otherwise: the per-machine model under the old percentile x margin rule)."""

    def __init__(self, name: str, trained=None, rms_threshold: float | None = None,
                 threshold: float | None = None) -> None:
        self.name, self.trained, self.rms_threshold = name, trained, rms_threshold
        self.threshold = threshold if threshold is not None else (trained.image.threshold if trained else None)

    def alarms(self, feats: np.ndarray, window_rms: np.ndarray) -> np.ndarray:
        if self.trained is None:
            return window_rms > self.rms_threshold
        return self.scores(feats) > self.threshold

    def scores(self, feats: np.ndarray) -> np.ndarray:
        key = (id(self.trained), id(feats))
        if key not in _SCORES:
            _SCORES[key] = pipeline.int8_scores(self.trained.image, fit_check.SCORING_ARENA, feats)
        return _SCORES[key]


def train(name: str, normal: np.ndarray, config: training.TrainConfig):
    t0 = time.perf_counter()
    trained = pipeline.train_model(normal, name=name, config=config)
    print(f"  trained {name} on {len(normal)} windows in {time.perf_counter() - t0:.0f} s "
          f"(threshold {trained.image.threshold:.3g})", file=sys.stderr)
    return trained


def rms_threshold(values: np.ndarray, config: training.TrainConfig) -> float:
    return threshold.calibrate(values, percentile=config.threshold_percentile, margin=config.threshold_margin,
                               rate=config.threshold_rate).value


def cell(rate: Rate) -> str:
    low, high = rate.interval
    return f"{100 * rate.value:.1f} % ({rate.count}/{rate.total}; {100 * low:.1f}-{100 * high:.1f})"


def day_figure(x: float) -> str:
    """A per-machine-day figure: whole numbers from 10 up, two significant digits below (0.96)."""
    return f"{x:.0f}" if x >= 10 or x == 0 else f"{x:.2g}"


def per_day(rate: Rate) -> str:
    low, high = rate.interval
    return (f"{day_figure(rate.value * WINDOWS_PER_DAY)}/day ({rate.count}/{rate.total}; "
            f"95 % CI {day_figure(low * WINDOWS_PER_DAY)}-{day_figure(high * WINDOWS_PER_DAY)})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller runs (a look at the table, not a measurement)")
    p.add_argument("--normal-windows", type=int, help=f"fresh normal windows per machine ({NORMAL_WINDOWS})")
    args = p.parse_args(argv)
    sizes = dict(QUICK) if args.quick else {"TRAIN_S": TRAIN_S, "NORMAL_WINDOWS": NORMAL_WINDOWS,
                                            "FAULT_WINDOWS": FAULT_WINDOWS}
    if args.normal_windows:
        sizes["NORMAL_WINDOWS"] = args.normal_windows
    config = training.TrainConfig(seed=1)
    t0 = time.perf_counter()
    machines = [Machine(i, sizes["TRAIN_S"], sizes["NORMAL_WINDOWS"], sizes["FAULT_WINDOWS"]) for i in MACHINES]
    print(f"simulated {len(machines)} machines in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    own = {m.name: train(f"own-{m.name}", m.train, config) for m in machines}
    fleet = train("fleet", np.concatenate([m.train for m in machines]), config)
    donor = machines[0]
    kinds = ("(a) per-machine", "(b) fleet", f"(c) {donor.name}'s model", "(d) RMS baseline",
             "(a') per-machine, old threshold rule")

    def detectors(m: Machine) -> dict[str, Detector]:
        return {kinds[0]: Detector(kinds[0], own[m.name]), kinds[1]: Detector(kinds[1], fleet),
                kinds[2]: Detector(kinds[2], own[donor.name]),
                kinds[3]: Detector(kinds[3], rms_threshold=rms_threshold(m.train_rms, config)),
                # the same model with the rule before app.ml.threshold: 99.5th percentile x 1.5 alone
                kinds[4]: Detector(kinds[4], own[m.name], threshold=own[m.name].card["threshold"]["empirical"])}

    # counts summed over machines: {kind: [alarms, windows]} for normal, {(fault, sev, kind): ...}
    normal: dict[str, list[int]] = {k: [0, 0] for k in kinds}
    per_machine_false: dict[tuple[str, str], Rate] = {}
    detected: dict[tuple[str, float, str], list[int]] = {}
    fit_rows = []
    for m in machines:
        dets = detectors(m)
        for kind, det in dets.items():
            alarms = det.alarms(m.normal, m.normal_rms)
            normal[kind][0] += int(alarms.sum())
            normal[kind][1] += len(alarms)
            per_machine_false[(m.name, kind)] = Rate(int(alarms.sum()), len(alarms))
            for (label, severity), (feats, window_rms) in m.faults.items():
                hit = det.alarms(feats, window_rms)
                counts = detected.setdefault((label, severity, kind), [0, 0])
                counts[0] += int(hit.sum())
                counts[1] += len(hit)
        if m is not donor:  # the fit check on a capture-sized sample of this target's normal windows
            sample = m.normal[:int(np.ceil(fit_check.CAPTURE_S * SPEC.sample_rate / SPEC.window))]
            det = dets[kinds[2]]
            verdict = fit_check.judge(m.name, "benchmark", det.trained.image.threshold, det.scores(sample)).verdict
            fit_rows.append((m.name, per_machine_false[(m.name, kinds[2])], verdict))

    print(f"\nMachines: {', '.join(f'{m.name} ({m.shaft_hz:.2f} Hz)' for m in machines)}; "
          f"{sizes['TRAIN_S']:g} s of normal running trained on per machine; "
          f"{sizes['NORMAL_WINDOWS']} fresh normal windows and {sizes['FAULT_WINDOWS']} windows per fault and "
          "severity per machine; rates with (count/total; Wilson 95 % interval, %).\n")
    print("False alarms on normal running (all machines), per window and per machine-day at 1 window/s:\n")
    print("| detector | false-alarm rate | per machine-day |\n|---|---|---|")
    for kind in kinds:
        rate = Rate(*normal[kind])
        print(f"| {kind} | {cell(rate)} | {per_day(rate)} |")
    print("\nDetection rate per fault and severity (all machines):\n")
    print("| fault | severity | " + " | ".join(kinds) + " |\n|---|---|" + "---|" * len(kinds))
    for label, _mask in FAULTS:
        for severity in SEVERITIES:
            cells = [cell(Rate(*detected[(label, severity, k)])) for k in kinds]
            print(f"| {label} | {severity:g} | " + " | ".join(cells) + " |")
    print(f"\n(c) {donor.name}'s model on the other machines, and the fit-to-machine check on "
          f"{fit_check.CAPTURE_S:g} s of each:\n")
    print("| target | false alarms of (c) | per machine-day | fit check |\n|---|---|---|---|")
    for name, rate, verdict in fit_rows:
        print(f"| {name} | {cell(rate)} | {rate.value * WINDOWS_PER_DAY:.0f}/day | {verdict} |")
    flagged_ok = all(verdict == fit_check.WILL_FALSE_ALARM for _n, rate, verdict in fit_rows
                     if rate.value * WINDOWS_PER_DAY > TARGET_FALSE_PER_DAY)
    print(f"\nfit check flags every target where (c) exceeds {TARGET_FALSE_PER_DAY:g} false alarm per machine-day: "
          f"{'yes' if flagged_ok else 'NO'}; total {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
