"""Bring an outside model into the registry: a TMLM image, a full-int8 `.tflite`, or a float Keras
model (`.keras`, `.h5`, SavedModel directory) that gets converted here. Keras files load in safe
mode; a SavedModel only when every op of its graph is on an allow-list (app.ml.savedmodel_guard).

A feature-spec-1 model (36 features in, 36 out) becomes a deployable version: its normalisation,
int8 calibration and threshold come from a normal dataset (`normal` feature rows), unless it is a
TMLM image that already carries them. Any other full-int8 model can be stored as "external"
(checked against devices, never deployed). Every defect is a ModelError naming the cause, raised
before anything is stored; a model is loaded by TFLM in-process only after a forked probe
survived it (app.ml.tflm.probe_load).
"""

from __future__ import annotations

import logging
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.domain.errors import ModelError
from app.ml import conversion, pipeline, savedmodel_guard, tflm, training, validation
from app.ml.features import DEFAULT_SPEC
from app.protocol.codes import ErrorCode
from app.protocol.image import MAGIC, ModelImage
from app.trust.signing import split_signed_file

log = logging.getLogger(__name__)

# A file bigger than this is not a microcontroller model (the largest slot is 1 MB); refuse it
# before parsing rather than let TensorFlow chew on it.
MAX_MODEL_FILE = 64 * 1024 * 1024
TFLITE_IDENT = b"TFL3"  # flatbuffer file identifier at offset 4
INT8 = 9  # schema.TensorType.INT8

ProgressFn = training.ProgressFn


@dataclass
class Imported:
    tflite: bytes
    card: dict
    image: ModelImage | None  # None for an external model
    # float32 / dynamic-range conversions made on the way (a float model converted here)
    extra_artifacts: dict[str, bytes] = field(default_factory=dict)


def tensor_io(tflite: bytes) -> tuple[list[tuple[int, list[int]]], list[tuple[int, list[int]]]]:
    """[(type, shape)] of the model's inputs and outputs, read from the flatbuffer (no interpreter)."""
    schema = tflm._schema()
    tflm.model_ops(tflite)  # garbage -> LoadError with a clear message
    try:
        model = schema.Model.GetRootAsModel(tflite, 0)
        sub = model.Subgraphs(0)

        def describe(index: int) -> tuple[int, list[int]]:
            t = sub.Tensors(index)
            return t.Type(), [int(v) for v in t.ShapeAsNumpy()]

        return ([describe(sub.Inputs(i)) for i in range(sub.InputsLength())],
                [describe(sub.Outputs(i)) for i in range(sub.OutputsLength())])
    except Exception as exc:
        raise ModelError(f"not a valid TFLite flatbuffer: {exc}", code=ErrorCode.BAD_IMAGE) from exc


def _read(path: Path) -> bytes:
    if not path.exists():
        raise ModelError(f"no such file: {path}")
    size = path.stat().st_size
    if size == 0:
        raise ModelError(f"{path.name} is empty")
    if size > MAX_MODEL_FILE:
        raise ModelError(f"{path.name} is {size} bytes: not a microcontroller model")
    return path.read_bytes()


def check_int8_io(tflite: bytes, what: str) -> list[int]:
    """The input shape of a full-int8 single-input/single-output model, or ModelError."""
    if len(tflite) < 8 or tflite[4:8] != TFLITE_IDENT:
        raise ModelError(f"{what} is not a TFLite flatbuffer (no 'TFL3' identifier)", code=ErrorCode.BAD_IMAGE)
    inputs, outputs = tensor_io(tflite)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{what} has {len(inputs)} inputs and {len(outputs)} outputs; an anomaly "
                         "detector has one of each")
    (in_type, in_shape), (out_type, out_shape) = inputs[0], outputs[0]
    if in_type != INT8 or out_type != INT8:
        raise ModelError(f"{what} is not full-int8 (input and output must be int8 for TFLite Micro on a "
                         "Cortex-M); import the float Keras model instead and it is converted here",
                         code=ErrorCode.UNSUPPORTED_OP)
    if in_shape != out_shape:
        raise ModelError(f"{what} maps {in_shape} to {out_shape}; an autoencoder's output has the "
                         "input's shape")
    return in_shape


def _held_out(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An imported model never trained on `normal`: all of it is held out, split (as in training)
    into the threshold's calibration windows and the card's evaluation windows."""
    config = training.TrainConfig()
    return training.split_held_out(normal, config.eval_share, config.seed)


def _held_out_card(calib: np.ndarray, evaluation: np.ndarray) -> dict:
    return {"calibration": {"n_calibration": len(calib), "n_evaluation": len(evaluation)}}


def _spec_shape() -> list[int]:
    return [1, DEFAULT_SPEC.n_features]


def _external(tflite: bytes, in_shape: list[int], source: str) -> Imported:
    """Card of a check-only model; its image size is that of the TMLM image it would make."""
    ops = tflm.model_ops(tflite)
    validation.check_ops(ops)
    arena = tflm.min_arena_size(tflite)
    n = int(np.prod(in_shape[1:]))
    would_be = ModelImage("external", 1, 0.0, np.zeros(n, np.float32), np.ones(n, np.float32), tflite,
                          selftest_input=np.zeros(n, np.float32)).to_bytes()
    fit = {k: v.to_dict() for k, v in validation.fit_all(len(would_be), arena, ops).items()}
    card = {"kind": "external", "source": source, "input_shape": in_shape, "quantization": "int8",
            "ops": ops, "arena": arena, "image_size": len(would_be), "tflite_size": len(tflite),
            "fit": fit, "metrics": {}}
    return Imported(tflite=tflite, card=card, image=None)


def _spec_from_int8(tflite: bytes, normal: np.ndarray | None, source: str, percentile: float,
                    margin: float, progress: ProgressFn | None = None) -> Imported:
    if normal is None:
        raise ModelError("importing a feature-spec model needs normal data (--data DATASET): its "
                         "normalisation and alarm threshold are computed from it")
    normal = np.asarray(normal, np.float32)
    mean, std = training.normalisation(normal)
    calib, evaluation = _held_out(normal)
    conv = conversion.Conversion(int8=tflite)
    model = pipeline.finish(name="imported", conv=conv, mean=mean, std=std, calib=calib, evaluation=evaluation,
                            fault=None, float_model=None, percentile=percentile, margin=margin,
                            card={"kind": "autoencoder", "source": source, **_held_out_card(calib, evaluation)},
                            progress=progress)
    return Imported(tflite=tflite, card=model.card, image=model.image)


def import_tmlm(data: bytes, source: str) -> Imported:
    # an exported file carries a signature block after the image; registering restamps the
    # version (new bytes), which the registry signs with this operator's key
    data, _signature = split_signed_file(data)
    image = ModelImage.from_bytes(data)
    shape = check_int8_io(image.tflite, source)
    if shape != [1, image.n_features] or image.n_features != DEFAULT_SPEC.n_features:
        raise ModelError(f"{source}: model shape {shape} does not match its {image.n_features} features")
    ops = tflm.model_ops(image.tflite)
    validation.check_ops(ops)
    arena = tflm.min_arena_size(image.tflite)  # probes in a child before the in-process load below
    if image.selftest_input is None:
        raise ModelError(f"{source} has no self-test section: a device would refuse to activate it")
    passed, got = tflm.Scorer(image, arena).self_test()
    if not passed:
        raise ModelError(f"{source} fails its own self-test (score {got:.6f}, expected "
                         f"{image.selftest_score:.6f}): corrupted", code=ErrorCode.SELFTEST_FAILED)
    size = len(image.to_bytes())
    card = {"kind": "autoencoder", "source": source, "feature_spec": DEFAULT_SPEC.to_dict(),
            "input_shape": shape, "quantization": "int8", "ops": ops, "arena": arena, "image_size": size,
            "tflite_size": len(image.tflite), "threshold": {"value": image.threshold}, "metrics": {},
            "imported_from": {"name": image.name, "version": image.version},
            "fit": {k: v.to_dict() for k, v in validation.fit_all(size, arena, ops).items()}}
    return Imported(tflite=image.tflite, card=card, image=image)


def _signature_input_shape(layer, name: str) -> tuple[int, ...]:
    """The feature dimensions (batch excluded) of a SavedModel serving signature's one input."""
    args, kwargs = layer.call_endpoint_fn.structured_input_signature
    specs = [*args, *kwargs.values()]
    if len(specs) != 1:
        raise ModelError(f"the SavedModel in {name} takes {len(specs)} inputs; an anomaly detector takes one")
    dims = list(specs[0].shape)
    if len(dims) < 2 or any(d is None for d in dims[1:]):
        raise ModelError(f"the SavedModel in {name} takes input of shape {dims}: a batch of fixed-size "
                         "rows is needed to convert it for a microcontroller")
    return tuple(int(d) for d in dims[1:])


def _load_keras(path: Path):
    from app.ml.tfimport import keras

    k = keras()
    if path.suffix.lower() in (".keras", ".h5", ".hdf5"):
        if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
            raise ModelError(f"{path.name} is not a Keras model archive (corrupted or truncated)")
        try:
            # safe_mode=True, said here rather than trusted as a default: no Lambda bytecode from a file
            return k.models.load_model(path, compile=False, safe_mode=True)
        except Exception as exc:
            raise ModelError(f"cannot load {path.name} as a Keras model: {exc}") from exc
    # SavedModel directory: Keras 3 reads it as an inference-only layer, whose input shape
    # comes from the serving signature (a SavedModel of any width, checked by the caller)
    if not (path / "saved_model.pb").exists():
        raise ModelError(f"{path} is not a SavedModel directory (no saved_model.pb)")
    savedmodel_guard.check_savedmodel(path)  # its ops, read as data, before TensorFlow loads or calls it
    try:
        layer = k.layers.TFSMLayer(str(path), call_endpoint="serving_default")
    except Exception as exc:
        raise ModelError(f"cannot load the SavedModel in {path.name}: {exc}") from exc
    shape = _signature_input_shape(layer, path.name)
    try:
        inputs = k.Input(shape=shape)
        out = layer(inputs)
        if isinstance(out, dict):
            if len(out) != 1:
                raise ModelError(f"the SavedModel in {path.name} has {len(out)} outputs; an anomaly "
                                 "detector has one")
            out = next(iter(out.values()))
        return k.Model(inputs, out)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot load the SavedModel in {path.name}: {exc}") from exc


def _import_float(path: Path, normal: np.ndarray | None, percentile: float, margin: float,
                  external: bool, progress: ProgressFn | None = None) -> Imported:
    if progress:
        progress("load", 0.0, f"loading {path.name} with TensorFlow")
    model = _load_keras(path)
    if progress:
        progress("load", 1.0, f"loaded {path.name}")
    in_shape = [1, *[int(d) if d is not None else -1 for d in model.input_shape[1:]]]
    out_shape = [1, *[int(d) if d is not None else -1 for d in model.output_shape[1:]]]
    source = f"file:{path.name}"
    if in_shape != _spec_shape() or out_shape != _spec_shape():
        if not external:
            raise ModelError(f"{path.name} maps {in_shape} to {out_shape}, not feature spec 1's "
                             f"{_spec_shape()}; import it with --external to check it against devices")
        rng = np.random.default_rng(0)  # no data of that shape here: calibrate int8 on N(0, 1)
        rep = rng.standard_normal((200, *in_shape[1:])).astype(np.float32)
        started = time.perf_counter()
        if progress:
            progress("convert", 0.0, "converting to int8")
        tflite = conversion.to_int8(model, rep)
        if progress:
            progress("convert", 1.0, "conversion done")
        imported = _external(tflite, in_shape, source)
        imported.card["conversion"] = {"seconds": {"int8": time.perf_counter() - started},
                                       "representative": "standard normal (no data of this shape)"}
        return imported
    if normal is None:
        raise ModelError("importing a float feature-spec model needs normal data (--data DATASET) for "
                         "its normalisation, int8 calibration and threshold")
    normal = np.asarray(normal, np.float32)
    mean, std = training.normalisation(normal)
    calib, evaluation = _held_out(normal)  # before converting: too little data is refused at once
    conv = conversion.convert_all(model, (normal - mean) / std, progress)
    result = pipeline.finish(name="imported", conv=conv, mean=mean, std=std, calib=calib, evaluation=evaluation,
                             fault=None, float_model=model, percentile=percentile, margin=margin,
                             card={"kind": "autoencoder", "source": source, **_held_out_card(calib, evaluation)},
                             progress=progress)
    return Imported(tflite=result.tflite, card=result.card, image=result.image,
                    extra_artifacts=result.extra_artifacts)


def import_model(path: Path, normal: np.ndarray | None = None, external: bool = False,
                 percentile: float = training.TrainConfig.threshold_percentile,
                 margin: float = training.TrainConfig.threshold_margin,
                 progress: ProgressFn | None = None) -> Imported:
    """Read, check and (if needed) convert and calibrate a model file; stores nothing.
    `progress(stage, fraction, message)` as in training: "load", "convert", "validate"."""
    path = Path(path)
    if path.is_dir():
        return _import_float(path, normal, percentile, margin, external, progress)
    data = _read(path)
    suffix = path.suffix.lower()
    source = f"file:{path.name}"
    if suffix == ".tmlm" or data[:4] == MAGIC:
        return import_tmlm(data, source)
    if suffix == ".tflite":
        shape = check_int8_io(data, path.name)
        # an op no device runs is refused before anything else is asked for (data, --external)
        validation.check_ops(tflm.model_ops(data))
        if shape == _spec_shape() and not external:
            return _spec_from_int8(data, normal, source, percentile, margin, progress)
        if not external:
            raise ModelError(f"{path.name} takes input {shape}, not feature spec 1's {_spec_shape()}; "
                             "import it with --external to check it against devices")
        return _external(data, shape, source)
    if suffix in (".keras", ".h5", ".hdf5"):
        return _import_float(path, normal, percentile, margin, external, progress)
    raise ModelError(f"{path.name}: unsupported model format {suffix!r} (use .tmlm, .tflite, .keras, .h5 "
                     "or a SavedModel directory)")
