"""Conversion time of the MLPerf Tiny AD autoencoder (640 -> 128x4 -> 8 -> 128x4 -> 640) through
our pipeline against a bare `tf.lite.TFLiteConverter` call with the same settings, in the same
run, interleaved, median of REPEATS; prints a table with the overhead ratio.

    python benchmarks/conversion.py [--repeats N]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.ml import conversion, importer, mlperf
from app.ml.tfimport import tensorflow

# Medians of this many interleaved runs: conversion time on a shared machine varies by ~20 %.
REPEATS = 5


def bare_int8(model, rows) -> bytes:
    """The reference: TFLiteConverter with full-int8 settings, nothing else."""
    tf = tensorflow()

    def dataset():
        for row in rows:
            yield [row[None, :]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    # same silencing as our pipeline (Keras prints the exported signature on stdout), so both
    # sides pay for the same console work
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return converter.convert()


def timed(fn) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    model = mlperf.build_reference()
    rows = mlperf.representative()
    bare_int8(model, rows)  # warm-up: first conversion pays TensorFlow's graph tracing caches
    times: dict[str, list[float]] = {"bare": [], "ours": [], "ours+check": []}
    sizes = {}
    for _ in range(args.repeats):
        t, out = timed(lambda: bare_int8(model, rows))
        times["bare"].append(t)
        sizes["bare"] = len(out)
        t, out = timed(lambda: conversion.to_int8(model, rows))
        times["ours"].append(t)
        sizes["ours"] = len(out)
        t, imported = timed(lambda: importer._external(conversion.to_int8(model, rows), [1, 640], "bench"))
        times["ours+check"].append(t)
        sizes["ours+check"] = imported.card["tflite_size"]
    ref = statistics.median(times["bare"])
    labels = {"bare": "bare TFLiteConverter (full int8)",
              "ours": "app.ml.conversion.to_int8",
              "ours+check": "to_int8 + ops + TFLM arena search + fit table"}
    print(f"MLPerf Tiny AD autoencoder, {args.repeats} runs each, median")
    print(f"{'path':<48} {'median s':>9} {'min s':>7} {'bytes':>8} {'ratio':>6}")
    for key, label in labels.items():
        med = statistics.median(times[key])
        print(f"{label:<48} {med:>9.3f} {min(times[key]):>7.3f} {sizes[key]:>8} {med / ref:>6.2f}")
    print(f"pipeline conversion overhead: {statistics.median(times['ours']) / ref:.2f}x the bare converter")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
