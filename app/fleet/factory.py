"""Build the factory model every virtual device boots with: `python -m app.fleet.factory`.

Normal vibration from the fleet's machine simulator over several machines and shaft speeds ->
windows -> features -> the default dense autoencoder -> full int8 -> TMLM image, threshold
calibrated on held-out normal windows. Honestly trained: the build fails unless simulated
imbalance, bearing outer-race and misalignment faults at moderate severity score above the
threshold. Deterministic for a given seed (on the same TensorFlow build and thread count).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from app.domain import paths
from app.domain.errors import ModelError
from app.fleet.vibration import MachineSimulator
from app.ml import features, pipeline, store, training
from app.protocol.codes import FaultMask

log = logging.getLogger(__name__)

FACTORY_NAME = "factory"
FACTORY_VERSION = 1
SEED = 20260
# Shaft speeds the factory model must treat as normal: 720 .. 2400 rpm pumps, fans and motors.
SHAFT_SPEEDS_HZ = (12.0, 15.0, 18.0, 21.0, 24.7, 28.0, 32.0, 36.0, 40.0)
# Simulated machines (simulator seeds) per shaft speed: machine-to-machine spread is normal too.
MACHINES_PER_SPEED = 6
# Normal windows per machine: many machines with few windows each teach the spread between machines.
WINDOWS_PER_MACHINE = 10
# Further machines per speed, never trained on, whose windows calibrate the threshold: the factory
# model runs on machines it has never seen, so its threshold is set on such machines.
CALIB_MACHINES_PER_SPEED = 3
# Faults the factory model must detect, at this severity (0..1), with these windows each.
FAULTS = {"imbalance": FaultMask.IMBALANCE, "bearing_outer": FaultMask.BEARING_OUTER,
          "misalignment": FaultMask.MISALIGNMENT}
FAULT_SEVERITY = 0.5
FAULT_WINDOWS = 24
# The build fails when fewer than this fraction of a fault's windows score above the threshold.
MIN_FAULT_RECALL = 0.9


def factory_paths() -> tuple[Path, Path]:
    base = paths.resources_dir() / "models"
    return base / "factory.tmlm", base / "factory.json"


def simulate(seed: int, shaft_hz: float, n_windows: int, fault: int = 0, severity: float = 0.0,
             spec: features.FeatureSpec = features.DEFAULT_SPEC) -> np.ndarray:
    """Feature rows of `n_windows` windows from one simulated machine."""
    sim = MachineSimulator(seed, sample_rate=spec.sample_rate, shaft_hz=shaft_hz)
    if fault:
        sim.set_fault(int(fault), float(severity))
    sim.generate(spec.window)  # let start-up transients (if any) pass
    samples = sim.generate(n_windows * spec.window)
    return features.extract_batch(features.windows_from_recording(samples, spec), spec)


def normal_features(seed: int = SEED, first_machine: int = 0,
                    machines: int = MACHINES_PER_SPEED) -> np.ndarray:
    rows = []
    for i, hz in enumerate(SHAFT_SPEEDS_HZ):
        for m in range(first_machine, first_machine + machines):
            rows.append(simulate(seed + 100 * i + m, hz, WINDOWS_PER_MACHINE))
    return np.concatenate(rows)


def fault_features(seed: int = SEED) -> dict[str, np.ndarray]:
    out = {}
    for j, (label, mask) in enumerate(FAULTS.items()):
        per_speed = max(1, FAULT_WINDOWS // len(SHAFT_SPEEDS_HZ))
        out[label] = np.concatenate([simulate(seed + 10_000 + 100 * j + i, hz, per_speed, mask, FAULT_SEVERITY)
                                     for i, hz in enumerate(SHAFT_SPEEDS_HZ)])
    return out


def build(seed: int = SEED, progress: training.ProgressFn | None = None) -> pipeline.TrainedModel:
    normal = normal_features(seed)
    calib = normal_features(seed, MACHINES_PER_SPEED, CALIB_MACHINES_PER_SPEED)
    faults = fault_features(seed)
    config = training.TrainConfig(seed=seed)
    model = pipeline.train_model(normal, name=FACTORY_NAME, fault=np.concatenate(list(faults.values())),
                                 config=config, progress=progress, calib=calib,
                                 provenance={"source": "app.fleet.vibration.MachineSimulator",
                                             "shaft_speeds_hz": list(SHAFT_SPEEDS_HZ),
                                             "machines_per_speed": MACHINES_PER_SPEED,
                                             "calibration_machines_per_speed": CALIB_MACHINES_PER_SPEED})
    model.image.version = FACTORY_VERSION
    threshold = model.image.threshold
    per_fault = {}
    for label, rows in faults.items():
        scores = pipeline.int8_scores(model.image, model.card["arena"], rows)
        recall = float(np.mean(scores > threshold))
        per_fault[label] = {"severity": FAULT_SEVERITY, "windows": len(rows), "recall": recall,
                            "median_score": float(np.median(scores))}
        if recall < MIN_FAULT_RECALL:
            raise ModelError(f"factory model detects only {recall:.0%} of {label} windows at severity "
                             f"{FAULT_SEVERITY} (threshold {threshold:.3f}); refusing to ship it")
    model.card.update(version=FACTORY_VERSION, per_fault=per_fault)
    return model


def write(model: pipeline.TrainedModel, image_path: Path, card_path: Path) -> None:
    image = model.image.to_bytes()
    card = {**model.card, "sha256": store.sha256_hex(image)}
    card.pop("pipeline_seconds", None)  # wall time of this build, not a property of the model
    store.write_atomic(image_path, image)
    store.write_atomic(card_path, (json.dumps(card, indent=2, sort_keys=True, default=float) + "\n").encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", type=Path, help="image path (default resources/models/factory.tmlm)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    image_path, card_path = factory_paths()
    if args.out:
        image_path, card_path = args.out, args.out.with_suffix(".json")
    model = build(args.seed)
    write(model, image_path, card_path)
    c = model.card
    print(f"{image_path}: {c['image_size']} bytes, arena {c['arena']} bytes, threshold "
          f"{model.image.threshold:.4f}, AUC {c['metrics'].get('auc', float('nan')):.3f}, "
          + ", ".join(f"{k} recall {v['recall']:.0%}" for k, v in c["per_fault"].items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
