"""Normal feature vectors in, a deployable model out: train -> convert -> score the int8 model
through TFLM exactly as a device does -> calibrate the threshold on held-out normal windows ->
detection metrics on other held-out normal windows (and fault data, when given) -> model image
with self-test -> fit table. The threshold and the card's metrics never share a window: measured
on the windows that set it, a 99.5th-percentile threshold would show ~0 false alarms by
construction. The result is not stored; the registry does that in one step, so a failure stores
nothing."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from app.domain.errors import Cancelled
from app.ml import conversion, metrics, tflm, training, validation
from app.ml import threshold as thresholds
from app.ml.features import DEFAULT_SPEC, FeatureSpec
from app.protocol.image import ModelImage

log = logging.getLogger(__name__)

ProgressFn = training.ProgressFn


@dataclass
class TrainedModel:
    image: ModelImage  # version 0 until the registry assigns one
    tflite: bytes  # the deployable full-int8 flatbuffer
    conversion: conversion.Conversion
    card: dict  # the model card (JSON-able)
    keras_model: object = None
    # other conversions of the same model ("float32", "dynamic"), stored by the registry as
    # content-addressed artifacts of the version (not deployable: a device runs the int8 one)
    extra_artifacts: dict[str, bytes] = field(default_factory=dict)


def int8_scores(image: ModelImage, arena: int, features: np.ndarray) -> np.ndarray:
    """Anomaly scores of raw feature rows through the real TFLM interpreter (PROTOCOL.md 6.1)."""
    scorer = tflm.Scorer(image, arena)
    return np.array([scorer.score(f) for f in np.asarray(features, np.float32)], np.float32)


def _check(cancel: threading.Event | None, what: str) -> None:
    if cancel is not None and cancel.is_set():
        raise Cancelled(f"{what} cancelled")


def train_model(normal: np.ndarray, *, name: str, fault: np.ndarray | None = None,
                config: training.TrainConfig = training.TrainConfig(),
                spec: FeatureSpec = DEFAULT_SPEC, progress: ProgressFn | None = None,
                cancel: threading.Event | None = None, provenance: dict | None = None,
                calib: np.ndarray | None = None) -> TrainedModel:
    """Train, convert and validate a model from raw feature rows (normal, optional fault).
    `calib`: held-out normal rows from other machines than `normal` (held out by source rather
    than at random), split into the threshold's calibration set and the card's evaluation set;
    by default random shares of `normal` are held out for both."""
    started = time.perf_counter()
    split = training.split_normal(normal, config, calib=calib)
    fitted = training.fit(split, config, progress, cancel)
    x_train = (split.train - fitted.mean) / fitted.std
    _check(cancel, "training")
    conv = conversion.convert_all(fitted.model, x_train, progress, cancel)
    _check(cancel, "conversion")
    card = {
        "kind": "autoencoder",
        "architecture": {"type": "dense autoencoder", "n_features": spec.n_features,
                         "hidden": list(config.hidden), "latent": config.latent,
                         "params": int(fitted.model.count_params())},
        "training": {**config.to_dict(), "n_train": len(split.train), "n_val": len(split.val),
                     "n_calibration": len(split.calib), "n_evaluation": len(split.evaluation),
                     "epochs_run": fitted.epochs_run,
                     "loss": fitted.final_loss, "val_loss": fitted.final_val_loss, **(provenance or {})},
    }
    model = finish(name=name, conv=conv, mean=fitted.mean, std=fitted.std, calib=split.calib,
                   evaluation=split.evaluation, fault=fault, float_model=fitted.model,
                   percentile=config.threshold_percentile, margin=config.threshold_margin, card=card,
                   spec=spec, progress=progress, cancel=cancel, rate=config.threshold_rate)
    model.card["pipeline_seconds"] = time.perf_counter() - started
    return model


def finish(*, name: str, conv: conversion.Conversion, mean: np.ndarray, std: np.ndarray, calib: np.ndarray,
           evaluation: np.ndarray, fault: np.ndarray | None, float_model, percentile: float, margin: float,
           card: dict, spec: FeatureSpec = DEFAULT_SPEC, progress: ProgressFn | None = None,
           cancel: threading.Event | None = None,
           rate: float = thresholds.DESIGN_FALSE_ALARM_RATE) -> TrainedModel:
    """From a converted model and its normalisation: arena, device scores of the held-out
    `calib` windows -> threshold (app.ml.threshold: percentile x margin, or the log-normal tail
    bound for a per-window false-alarm `rate` when higher); device scores of the held-out `evaluation` windows (disjoint
    from `calib`) and of `fault` -> the card's false-alarm rate, detection and int8-vs-float
    metrics; self-tested image, fit table."""
    if progress:
        progress("validate", 0.0, "finding the tensor arena with TFLM")
    ops = tflm.model_ops(conv.int8)
    validation.check_ops(ops)
    arena = tflm.min_arena_size(conv.int8)  # also proves (in a child) that TFLM loads it
    probe = ModelImage(name, 0, 0.0, mean, std, conv.int8)
    calib_int8 = int8_scores(probe, arena, calib)
    calibrated = thresholds.calibrate(calib_int8, percentile=percentile, margin=margin, rate=rate)
    threshold = calibrated.value
    selftest = np.asarray(calib, np.float32)[int(np.argsort(calib_int8)[len(calib_int8) // 2])]
    image = tflm.build_image(name, 0, conv.int8, mean, std, threshold, selftest, arena=arena)
    _check(cancel, "validation")

    def float_scores(rows: np.ndarray) -> np.ndarray:
        return training.keras_scores(float_model, (np.asarray(rows, np.float32) - mean) / std)

    eval_int8 = int8_scores(probe, arena, evaluation)
    eval_float = float_scores(evaluation) if float_model is not None else None
    agreement: dict = {}
    if eval_float is not None:
        agreement["pearson_normal"] = metrics.pearson(eval_float, eval_int8)
        agreement["pearson"] = agreement["pearson_normal"]
    # every rate carries its count, total and 95 % Wilson interval (app.ml.intervals)
    false_alarms = int(np.sum(eval_int8 > threshold))
    detection: dict = {**metrics.rate_fields("false_alarm_rate", false_alarms, len(eval_int8)),
                       "n_normal": len(eval_int8),
                       **metrics.rate_fields("false_alarm_rate_calibration", int(np.sum(calib_int8 > threshold)),
                                             len(calib_int8)),
                       "n_calibration": len(calib_int8)}
    if fault is not None and len(fault):
        fault_int8 = int8_scores(probe, arena, fault)
        auc_int8 = metrics.roc_auc(eval_int8, fault_int8)
        true_alarms = int(np.sum(fault_int8 > threshold))
        detection.update(auc=auc_int8, n_fault=len(fault),
                         **metrics.rate_fields("precision", true_alarms, true_alarms + false_alarms),
                         **metrics.rate_fields("recall", true_alarms, len(fault_int8)))
        if eval_float is not None:
            fault_float = float_scores(fault)
            auc_float = metrics.roc_auc(eval_float, fault_float)
            agreement.update(pearson=metrics.pearson(np.concatenate([eval_float, fault_float]),
                                                     np.concatenate([eval_int8, fault_int8])),
                             auc_float=auc_float, auc_int8=auc_int8, auc_change=auc_int8 - auc_float)

    image_size = len(image.to_bytes())
    fit = {k: v.to_dict() for k, v in validation.fit_all(image_size, arena, ops).items()}
    if progress:
        progress("validate", 1.0, "validated")
    card = {
        **card,
        "name": name,
        "feature_spec": spec.to_dict(),
        "threshold": {**calibrated.to_dict(), "percentile": percentile, "margin": margin,
                      "design_false_alarm_rate": rate, "computed_with": "int8 model in TFLM (device score)",
                      "n_windows": len(calib_int8)},
        "metrics": detection,
        "conversion": {"seconds": conv.seconds, "sizes": conv.sizes(), "int8_vs_float": agreement},
        "quantization": "int8",
        "input_shape": [1, spec.n_features],
        "ops": ops,
        "arena": arena,
        "image_size": image_size,
        "tflite_size": len(conv.int8),
        "fit": fit,
    }
    training_counts = card.get("training", {})
    n_total = sum(int(training_counts.get(k, 0)) for k in ("n_train", "n_val", "n_calibration", "n_evaluation"))
    n_windows, window_s = n_total or len(calib) + len(evaluation), spec.window / spec.sample_rate
    evidence = metrics.evidence_warning(len(eval_int8), false_alarms, n_windows, window_s)
    spread = thresholds.spread_warning(calibrated, len(calib), n_windows, window_s)
    for text in (evidence, spread):
        if text:
            card["warnings"] = [*card.get("warnings", []), text]
            log.info("model %s: %s", name, text)
    log.info("model %s: threshold %.4f, arena %d, image %d bytes", name, threshold, arena, image_size)
    extras = {kind: data for kind, data in (("float32", conv.float32), ("dynamic", conv.dynamic)) if data}
    return TrainedModel(image=image, tflite=conv.int8, conversion=conv, card=card, keras_model=float_model,
                        extra_artifacts=extras)
