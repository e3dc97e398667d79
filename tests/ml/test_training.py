"""Training on simulated normal vibration, detection of simulated faults by the int8 model in the
real TFLM, int8-vs-float agreement, progress and cancel."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from app.domain.errors import Cancelled, DataError
from app.ml import metrics, pipeline, tflm, training
from app.protocol.codes import FaultMask

from .conftest import recording, simulate


@pytest.fixture(scope="module")
def held_out_normal():
    """Machines neither training nor calibration saw."""
    return simulate(seed=21, machines=4, windows=10)


@pytest.mark.parametrize("fault", [FaultMask.BEARING_OUTER, FaultMask.IMBALANCE], ids=["bearing", "imbalance"])
def test_int8_model_detects_simulated_fault(trained, held_out_normal, fault):
    faulty = simulate(seed=30 + int(fault), machines=3, windows=8, fault=fault, severity=0.5)
    arena = trained.card["arena"]
    normal_scores = pipeline.int8_scores(trained.image, arena, held_out_normal)
    fault_scores = pipeline.int8_scores(trained.image, arena, faulty)
    assert metrics.roc_auc(normal_scores, fault_scores) > 0.9
    # at the stored threshold, most fault windows alarm and few normal ones do
    assert np.mean(fault_scores > trained.image.threshold) > 0.8
    assert np.mean(normal_scores > trained.image.threshold) < 0.2


def test_model_card_records_detection_metrics(trained):
    m = trained.card["metrics"]
    assert m["auc"] > 0.9
    assert 0.0 <= m["precision"] <= 1.0 and m["recall"] > 0.8
    assert m["n_fault"] == 60


def test_threshold_is_calibrated_on_device_scores(trained):
    """The stored threshold is percentile x margin of held-out scores computed by TFLM, and the
    image proves itself with the same interpreter a device uses."""
    thr = trained.card["threshold"]
    assert trained.image.threshold == pytest.approx(thr["value"], rel=1e-6)
    assert thr["value"] == pytest.approx(thr["percentile_score"] * thr["margin"], rel=1e-6)
    scorer = tflm.Scorer(trained.image, trained.card["arena"])
    passed, score = scorer.self_test()
    assert passed and score == pytest.approx(trained.image.selftest_score)
    assert trained.card["metrics"]["false_alarm_rate_calibration"] <= 0.02


def test_int8_scores_agree_with_float(trained, held_out_normal, fault_rows):
    agreement = trained.card["conversion"]["int8_vs_float"]
    assert agreement["pearson"] > 0.95
    assert abs(agreement["auc_change"]) < 0.05
    # and on data the card never saw
    rows = np.concatenate([held_out_normal, fault_rows["bearing_outer"][:10], fault_rows["imbalance"][:10]])
    mean, std = trained.image.mean, trained.image.std
    float_scores = training.keras_scores(trained.keras_model, (rows - mean) / std)
    int8_scores = pipeline.int8_scores(trained.image, trained.card["arena"], rows)
    assert metrics.pearson(float_scores, int8_scores) > 0.95


def test_card_records_three_conversions(trained):
    conv = trained.card["conversion"]
    assert set(conv["seconds"]) == {"float32", "dynamic", "int8"}
    assert all(v > 0 for v in conv["seconds"].values())
    assert conv["sizes"]["int8"] < conv["sizes"]["float32"]
    assert trained.card["ops"] == ["FULLY_CONNECTED"]
    assert trained.card["fit"]["stm32f446"]["fits"], "the default model must fit the smallest profile"


def test_progress_per_epoch_and_early_stopping_config(normal_rows):
    calls = []
    config = training.TrainConfig(epochs=3, patience=10)
    split = training.split_normal(normal_rows, config)
    result = training.fit(split, config, progress=lambda *a: calls.append(a))
    epochs = [c for c in calls if c[0] == "train"]
    assert len(epochs) == 3 and epochs[-1][1] == pytest.approx(1.0)
    assert result.epochs_run == 3 and np.isfinite(result.final_loss)


@pytest.mark.parametrize("bad", [{"hidden": (32, 0)}, {"latent": 0}, {"epochs": 0}, {"threshold_percentile": 0},
                                 {"threshold_margin": -1.0}])
def test_bad_training_configuration_is_refused(bad):
    from app.domain.errors import ModelError

    with pytest.raises(ModelError, match="bad training configuration"):
        training.TrainConfig(**bad)


def test_too_few_windows_for_training(normal_rows):
    with pytest.raises(DataError, match="training needs at least"):
        training.split_normal(normal_rows[:10], training.TrainConfig())


def test_cancelled_training_stores_nothing(data_dir):
    from app.ml.datasets import DatasetStore
    from app.ml.registry import Registry
    from app.ml.workflows import train_and_register

    with DatasetStore() as store:
        ds = store.add(recording(1, 20.0), 3200, "normal", source="test")
    cancel = threading.Event()

    def progress(stage, fraction, message):
        if stage == "train":
            cancel.set()  # the operator presses Cancel after the first epoch

    with pytest.raises(Cancelled):
        train_and_register([ds.id], [], "cancelled", config=training.TrainConfig(epochs=50),
                           progress=progress, cancel=cancel)
    with Registry() as reg:
        assert reg.list() == []
    assert list((data_dir / "artifacts").iterdir()) == []


def test_fault_dataset_refused_as_normal(data_dir):
    from app.ml.datasets import DatasetStore
    from app.ml.workflows import train_and_register

    with DatasetStore() as store:
        ds = store.add(recording(2, 5.0, FaultMask.IMBALANCE, 0.5), 3200, "fault", source="test")
    with pytest.raises(DataError, match=r"labelled 'fault'.*--fault-data"):
        train_and_register([ds.id], [], "x")
