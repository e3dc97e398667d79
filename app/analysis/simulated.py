"""Recordings from the vibration simulator together with their ground truth (the mean shaft speed
over the recording and the defect frequencies it implies), for tests and benchmarks/diagnosis.py."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.analysis.bearings import Bearing
from app.fleet.vibration import MachineSimulator

# The simulator's speed drifts slowly; the mean speed is sampled once per block of this many
# samples (0.1 s at 3.2 kHz: the drift's 20 s time constant makes finer steps pointless).
TRUTH_BLOCK = 320


@dataclass(frozen=True)
class SimulatedRecording:
    samples: np.ndarray  # (n, 3) g
    sample_rate: int
    shaft_hz: float  # mean over the recording
    bearing: Bearing

    def defect_hz(self, name: str) -> float:
        return self.bearing.frequencies(self.shaft_hz)[name]


def record(seed: int, mask: int, severity: float, seconds: float, shaft_hz: float = 24.7,
           **sim_kw) -> SimulatedRecording:
    """`seconds` of a simulated machine with fault `mask` at `severity`, and its ground truth."""
    sim = MachineSimulator(seed, shaft_hz=shaft_hz, **sim_kw)
    sim.set_fault(mask, severity)
    n = round(seconds * sim.sample_rate)
    blocks, speeds, weights = [], [], []
    for start in range(0, n, TRUTH_BLOCK):
        size = min(TRUTH_BLOCK, n - start)
        before = sim.shaft_hz
        blocks.append(sim.generate(size))
        speeds.append(0.5 * (before + sim.shaft_hz))  # the speed ramps linearly within a block
        weights.append(size)
    return SimulatedRecording(np.vstack(blocks), sim.sample_rate, float(np.average(speeds, weights=weights)),
                              sim.bearing)
