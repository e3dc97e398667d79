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
    """The stored threshold is the larger of percentile x margin and the log-normal tail bound of
    held-out scores computed by TFLM, and the image proves itself with the interpreter a device uses."""
    thr = trained.card["threshold"]
    assert trained.image.threshold == pytest.approx(thr["value"], rel=1e-6)
    assert thr["empirical"] == pytest.approx(thr["percentile_score"] * thr["margin"], rel=1e-6)
    assert thr["value"] == pytest.approx(max(thr["empirical"], thr["tail_bound"] or 0.0), rel=1e-6)
    assert thr["rule"] in ("tail bound", "percentile x margin")
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


def _row_keys(rows: np.ndarray) -> set[bytes]:
    return {np.asarray(r, np.float32).tobytes() for r in rows}


def test_threshold_and_card_metrics_use_disjoint_held_out_windows(trained, normal_rows):
    """The split the pipeline made is reproducible from its seed: the threshold is the percentile
    of the calibration windows' device scores, the card's false-alarm rate that of the evaluation
    windows, and no window is in both (or in training)."""
    from .conftest import TEST_EPOCHS, TEST_PATIENCE

    config = training.TrainConfig(epochs=TEST_EPOCHS, patience=TEST_PATIENCE, seed=3)  # as `trained`
    split = training.split_normal(normal_rows, config)
    card, m = trained.card, trained.card["metrics"]
    assert card["training"]["n_calibration"] == len(split.calib) == m["n_calibration"] == card["threshold"]["n_windows"]
    assert card["training"]["n_evaluation"] == len(split.evaluation) == m["n_normal"]
    assert len(split.calib) >= training.MIN_HELD_OUT_WINDOWS and len(split.evaluation) >= training.MIN_HELD_OUT_WINDOWS
    calib_keys, eval_keys = _row_keys(split.calib), _row_keys(split.evaluation)
    assert len(calib_keys) == len(split.calib) and len(eval_keys) == len(split.evaluation)
    assert not calib_keys & eval_keys
    assert not (calib_keys | eval_keys) & _row_keys(np.concatenate([split.train, split.val]))

    arena = card["arena"]
    calib_scores = pipeline.int8_scores(trained.image, arena, split.calib)
    eval_scores = pipeline.int8_scores(trained.image, arena, split.evaluation)
    assert card["threshold"]["percentile_score"] == pytest.approx(
        float(np.percentile(calib_scores, config.threshold_percentile)), rel=1e-6)
    assert m["false_alarm_rate"] == pytest.approx(float(np.mean(eval_scores > trained.image.threshold)))


def test_card_false_alarms_are_measured_on_the_evaluation_windows(trained, normal_rows, fault_rows):
    """Hand `finish` evaluation windows that alarm (imbalanced machines passed as "normal"): a card
    computed on the calibration windows would still show ~0 false alarms; this one must not."""
    config = training.TrainConfig(seed=3)
    split = training.split_normal(normal_rows, config)
    alarming = fault_rows["imbalance"]
    model = pipeline.finish(name="eval-check", conv=trained.conversion, mean=trained.image.mean,
                            std=trained.image.std, calib=split.calib, evaluation=alarming,
                            fault=fault_rows["bearing_outer"], float_model=trained.keras_model,
                            percentile=config.threshold_percentile, margin=config.threshold_margin, card={})
    m = model.card["metrics"]
    assert m["false_alarm_rate_calibration"] <= 0.05
    assert m["false_alarm_rate"] > 0.5, m
    assert m["n_normal"] == len(alarming) and m["n_calibration"] == len(split.calib)
    # the threshold still comes from the calibration windows alone
    assert model.image.threshold == pytest.approx(trained.image.threshold, rel=1e-6)
    # and precision counts those false alarms against the fault windows' true ones
    assert m["precision"] < trained.card["metrics"]["precision"]


def test_held_out_windows_given_by_source_are_split_too(normal_rows):
    calib_source = simulate(seed=41, machines=2, windows=20)
    split = training.split_normal(normal_rows, training.TrainConfig(), calib=calib_source)
    assert len(split.calib) + len(split.evaluation) == len(calib_source)
    assert len(split.train) + len(split.val) == len(normal_rows)
    assert not _row_keys(split.calib) & _row_keys(split.evaluation)
    with pytest.raises(DataError, match="held-out normal windows"):
        training.split_normal(normal_rows, training.TrainConfig(), calib=calib_source[:10])


def test_a_short_recording_warns_that_its_threshold_is_unsteady():
    """30 s of one machine: the tail bound sets the threshold from 19 calibration windows, and the
    card (Models page, `model show`) says so and how much more to record (app.ml.threshold)."""
    from app.ml import features
    from app.ml.threshold import STEADY_TAIL_WINDOWS, TAIL_RULE

    from .conftest import TEST_EPOCHS, TEST_PATIENCE

    rows = features.extract_batch(features.windows_from_recording(recording(5, 30.0)))
    model = pipeline.train_model(rows, name="short", config=training.TrainConfig(
        epochs=TEST_EPOCHS, patience=TEST_PATIENCE, seed=3))
    assert model.card["training"]["n_calibration"] < STEADY_TAIL_WINDOWS
    assert model.card["threshold"]["rule"] == TAIL_RULE  # seeded data and training: the same every run
    [spread] = [w for w in model.card["warnings"] if "calibration windows" in w]
    assert "s more normal data" in spread
