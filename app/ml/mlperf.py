"""The MLPerf Tiny anomaly-detection reference model (mlcommons/tiny, `benchmark/training/
anomaly_detection/keras_model.py`): a fully connected autoencoder 640 -> 128x4 -> 8 -> 128x4 ->
640, each hidden Dense followed by BatchNormalization and ReLU, about 270 KB in full int8.

It takes 640 log-mel values (5 frames x 128 bins of machine sound), not our 36 vibration
features, so it is registered as an "external" model: ops, arena and fit are checked against
every profile, but it is never packaged for a device (a device feeds feature spec 1).
Weights are untrained: size, ops and arena depend on the architecture only.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from app.ml import conversion, importer, registry
from app.ml.tfimport import keras

log = logging.getLogger(__name__)

INPUT_DIM = 640  # 5 frames x 128 mel bins
HIDDEN = 128
HIDDEN_LAYERS = 4
LATENT = 8
DEFAULT_NAME = "mlperf-ad"
# Calibration rows for the int8 ranges: standardised log-mel inputs are roughly N(0, 1).
REPRESENTATIVE_ROWS = 200
SEED = 1234


def build_reference(input_dim: int = INPUT_DIM):
    """The reference Keras model (same layers as mlcommons/tiny's `get_model`)."""
    k = keras()
    k.utils.set_random_seed(SEED)
    inputs = k.Input(shape=(input_dim,))
    h = inputs
    for units in [HIDDEN] * HIDDEN_LAYERS + [LATENT] + [HIDDEN] * HIDDEN_LAYERS:
        h = k.layers.Dense(units)(h)
        h = k.layers.BatchNormalization()(h)
        h = k.layers.Activation("relu")(h)
    outputs = k.layers.Dense(input_dim)(h)
    return k.Model(inputs, outputs, name="mlperf_tiny_ad")


def representative(input_dim: int = INPUT_DIM) -> np.ndarray:
    return np.random.default_rng(SEED).standard_normal((REPRESENTATIVE_ROWS, input_dim)).astype(np.float32)


def convert_reference(model=None) -> tuple[bytes, float]:
    """(full-int8 flatbuffer, conversion seconds) through our conversion pipeline."""
    model = model if model is not None else build_reference()
    started = time.perf_counter()
    tflite = conversion.to_int8(model, representative())
    return tflite, time.perf_counter() - started


def register_reference(reg: registry.Registry, name: str = DEFAULT_NAME, notes: str = "",
                       built: tuple[object, bytes] | None = None,
                       progress: importer.ProgressFn | None = None) -> registry.ModelVersion:
    """Build, convert, validate and store the reference as an external model version
    (`built`: an already built (keras model, int8 flatbuffer) pair)."""
    registry.check_name(name)
    seconds = None
    if built is None:
        if progress:
            progress("build", 0.0, "building the MLPerf Tiny AD reference in Keras")
        model = build_reference()
        if progress:
            progress("convert", 0.0, "converting to full int8")
        tflite, seconds = convert_reference(model)
    else:
        model, tflite = built
    if progress:
        progress("validate", 0.0, "finding the tensor arena with TFLM")
    imported = importer._external(tflite, [1, INPUT_DIM], "mlperf-tiny-ad-reference")
    if progress:
        progress("validate", 1.0, "validated")
    imported.card.update(
        architecture={"type": "MLPerf Tiny AD reference", "layers": "640 -> 128x4 -> 8 -> 128x4 -> 640",
                      "batchnorm": True, "params": int(model.count_params()), "trained": False},
        conversion={"seconds": {"int8": seconds} if seconds else {}, "representative": "standard normal rows"})
    return reg.add(name=name, tflite=tflite, card=imported.card, notes=notes or "MLPerf Tiny AD reference "
                   "(untrained weights; check-only, not deployable: 640 log-mel inputs, not feature spec 1)")
