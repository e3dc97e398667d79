"""Shared fixtures of the model-pipeline tests: simulated features and one small trained model
(trained once per session: TensorFlow training is the slow part)."""

from __future__ import annotations

import numpy as np
import pytest

from app.ml import features

# Small and quick: the point is a real model trained on real simulated vibration, not a good one.
TEST_EPOCHS = 60
TEST_PATIENCE = 8


def simulate(seed: int, machines: int, windows: int, fault: int = 0, severity: float = 0.0,
             speeds: tuple[float, float] = (18.0, 32.0)) -> np.ndarray:
    """Feature rows of `windows` windows from each of `machines` simulated machines."""
    from app.fleet.vibration import MachineSimulator

    rng = np.random.default_rng(seed)
    rows = []
    for m in range(machines):
        sim = MachineSimulator(seed * 100 + m, shaft_hz=float(rng.uniform(*speeds)))
        sim.set_fault(fault, severity)
        rows.append(features.extract_batch(features.windows_from_recording(
            sim.generate(features.DEFAULT_SPEC.window * windows))))
    return np.concatenate(rows)


def recording(seed: int, seconds: float, fault: int = 0, severity: float = 0.0, shaft_hz: float = 24.0):
    from app.fleet.vibration import MachineSimulator

    sim = MachineSimulator(seed, shaft_hz=shaft_hz)
    sim.set_fault(fault, severity)
    return sim.generate(int(seconds * features.DEFAULT_SPEC.sample_rate))


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """Every test that stores something does it in its own data dir, never the user's."""
    monkeypatch.setenv("TINYMLOPS_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


@pytest.fixture(scope="session")
def normal_rows() -> np.ndarray:
    return simulate(seed=11, machines=8, windows=25)


@pytest.fixture(scope="session")
def fault_rows() -> dict[str, np.ndarray]:
    from app.protocol.codes import FaultMask

    return {"bearing_outer": simulate(12, machines=3, windows=10, fault=FaultMask.BEARING_OUTER, severity=0.5),
            "imbalance": simulate(13, machines=3, windows=10, fault=FaultMask.IMBALANCE, severity=0.5)}


@pytest.fixture(scope="session")
def trained(normal_rows, fault_rows):
    """One small model trained through the whole pipeline (train, convert, TFLM threshold, image)."""
    from app.ml import pipeline, training

    config = training.TrainConfig(epochs=TEST_EPOCHS, patience=TEST_PATIENCE, seed=3)
    return pipeline.train_model(normal_rows, name="test-ae", fault=np.concatenate(list(fault_rows.values())),
                                config=config)
