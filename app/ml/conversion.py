"""Keras -> TensorFlow Lite: float32, dynamic-range and full int8 (the deployable one, int8 input
and output, calibrated with representative training data), each timed. TensorFlow is imported
only inside these functions."""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from app.domain.errors import Cancelled, ModelError
from app.ml.tfimport import native_stderr_to_log, tensorflow

log = logging.getLogger(__name__)

# More calibration rows than this add conversion time without moving the int8 ranges.
MAX_REPRESENTATIVE_ROWS = 500

ProgressFn = Callable[[str, float, str], None]


@dataclass
class Conversion:
    float32: bytes | None = None
    dynamic: bytes | None = None
    int8: bytes | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in (("float32", self.float32), ("dynamic", self.dynamic),
                                       ("int8", self.int8)) if v is not None}


def _converter(model):
    tf = tensorflow()
    try:
        return tf.lite.TFLiteConverter.from_keras_model(model)
    except Exception as exc:
        raise ModelError(f"TensorFlow cannot convert this model: {exc}") from exc


def _run(converter, what: str) -> bytes:
    chatter = io.StringIO()
    try:
        # Keras' export prints "Saved artifact at ..." and a signature dump on stdout; the int8
        # converter warns about input statistics it takes from the representative data anyway
        with contextlib.redirect_stdout(chatter), warnings.catch_warnings(), native_stderr_to_log():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            return bytes(converter.convert())
    except Exception as exc:
        raise ModelError(f"{what} conversion failed: {exc}") from exc
    finally:
        if chatter.getvalue():
            log.debug("converter output: %s", chatter.getvalue())


def to_float32(model) -> bytes:
    return _run(_converter(model), "float32")


def to_dynamic_range(model) -> bytes:
    """Weights int8, activations float: smaller file, but not runnable on int8-only micro kernels."""
    tf = tensorflow()
    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return _run(converter, "dynamic-range")


def to_int8(model, representative: np.ndarray) -> bytes:
    """Full-integer model: int8 weights, activations, input and output (what TFLM on a
    Cortex-M runs). `representative` are rows of the model's (normalised) input."""
    tf = tensorflow()
    rows = np.asarray(representative, np.float32)
    if len(rows) == 0:
        raise ModelError("int8 conversion needs representative data")
    if len(rows) > MAX_REPRESENTATIVE_ROWS:
        idx = np.random.default_rng(0).choice(len(rows), MAX_REPRESENTATIVE_ROWS, replace=False)
        rows = rows[np.sort(idx)]

    def dataset():
        for row in rows:
            yield [row.reshape(1, *row.shape)]

    converter = _converter(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return _run(converter, "full-int8")


def convert_all(model, representative: np.ndarray, progress: ProgressFn | None = None,
                cancel: threading.Event | None = None, kinds: tuple[str, ...] = ("float32", "dynamic", "int8"),
                ) -> Conversion:
    """Every requested conversion, timed; progress after each; Cancelled between them."""
    result = Conversion()
    steps = {"float32": lambda: to_float32(model), "dynamic": lambda: to_dynamic_range(model),
             "int8": lambda: to_int8(model, representative)}
    for i, kind in enumerate(kinds):
        if cancel is not None and cancel.is_set():
            raise Cancelled("conversion cancelled")
        if progress:
            progress("convert", i / len(kinds), f"converting to {kind}")
        started = time.perf_counter()
        data = steps[kind]()
        result.seconds[kind] = time.perf_counter() - started
        setattr(result, kind, data)
        log.info("%s conversion: %d bytes in %.2f s", kind, len(data), result.seconds[kind])
    if progress:
        progress("convert", 1.0, "conversion done")
    return result
