"""Generate the engine's bit-exactness test data: small int8 dense autoencoders and the MLPerf Tiny
AD autoencoder converted by TensorFlow, random int8 inputs, and the outputs of the real TFLM
interpreter (PyPI tflite-micro). Run from the repo root: `python3 firmware/tests/gen_models.py [NAME...]`,
then `python3 firmware/tests/gen_models.py images [FILE...]` for the TMLM images.

Outputs (committed) in firmware/tests/data/:
  <name>.tflite   the model (MLPerf AD only inside mlperf_ad_v4.tmlm, to keep one copy)
  <name>.io       "TIO1", u32 cases, u32 in_len, u32 out_len, then per case int8 in[in_len], int8 out[out_len]
  models.txt      one line per model: name arena_bytes ops
"""

from __future__ import annotations

import os
import struct
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
OUT = Path(__file__).resolve().parent / "data"
CASES = 24  # random inputs per model: enough to hit saturation, zero and negative paths


def dense_ae(n, hidden, latent, bn=False, seed=0, act="relu"):
    from app.ml.tfimport import keras

    k = keras()
    k.utils.set_random_seed(seed)
    inp = k.Input(shape=(n,))
    x = inp
    for units in [*hidden, latent, *reversed(hidden)]:
        if bn:
            x = k.layers.Dense(units)(x)
            x = k.layers.BatchNormalization()(x)
            x = k.layers.Activation("relu")(x)
        else:
            x = k.layers.Dense(units, activation=act)(x)
    out = k.layers.Dense(n)(x)
    model = k.Model(inp, out)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, k.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape).astype("f4"), rng.normal(0, 0.2, b.shape).astype("f4"),
                               rng.normal(0, 0.2, m.shape).astype("f4"), rng.uniform(0.5, 2, v.shape).astype("f4")])
        elif isinstance(layer, k.layers.Dense):
            w, b = layer.get_weights()
            layer.set_weights([w, rng.normal(0, 0.1, b.shape).astype("f4")])
    return model


def to_int8(model, n, per_channel: bool, seed=0):
    from app.ml.tfimport import tensorflow

    tf = tensorflow()
    rows = np.random.default_rng(seed).normal(0, 1, (200, n)).astype("f4")

    def rep():
        for r in rows:
            yield [r[None, :]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    conv._experimental_disable_per_channel_quantization_for_dense_layers = not per_channel
    return bytes(conv.convert())


def tflm_outputs(tflite: bytes, inputs: np.ndarray, arena: int) -> np.ndarray:
    from tflite_micro.python.tflite_micro import runtime

    interp = runtime.Interpreter.from_bytes(tflite, arena_size=arena)
    outs = []
    for x in inputs:
        interp.set_input(x.reshape(1, -1), 0)
        interp.invoke()
        outs.append(interp.get_output(0).reshape(-1).copy())
    return np.stack(outs).astype(np.int8)


def main() -> None:
    from app.ml.tflm import min_arena_size, model_ops

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    OUT.mkdir(exist_ok=True)
    specs = [
        ("ae36", dense_ae(36, (16,), 8, seed=1), 36, False),
        ("ae36_pc", dense_ae(36, (16,), 8, seed=2), 36, True),
        ("ae36_default", dense_ae(36, (32, 16), 8, seed=3), 36, True),
        ("mlperf_ad", dense_ae(640, (128, 128, 128, 128), 8, bn=True, seed=4), 640, True),
        # an op the engine must refuse (TANH): the unsupported-op test model
        ("ae36_tanh", dense_ae(36, (16,), 8, seed=5, act="tanh"), 36, False),
        # a wider hidden layer: the per-channel constants of its 300 units need ~2.7 KB of arena,
        # more than the factory model's 1.2 KB (the ARENA_TOO_SMALL device test, small-arena build)
        ("ae36_wide", dense_ae(36, (128,), 8, seed=6), 36, True),
        # no layer a multiple of 4 wide or deep: the kernels' remainder paths (the DSP kernel takes
        # 4 inputs and 4 output rows at a time) and weight rows at every alignment
        ("ae37_odd", dense_ae(37, (13, 6), 5, seed=8), 37, True),
    ]
    only = set(sys.argv[1:])
    lines = [ln for ln in (OUT / "models.txt").read_text().splitlines()
             if only and ln.split()[0] not in only] if (OUT / "models.txt").exists() else []
    for name, model, n, pc in specs:
        if only and name not in only:
            continue
        tfl = to_int8(model, n, pc)
        arena = min_arena_size(tfl)
        ops = model_ops(tfl)
        rng = np.random.default_rng(len(name))
        inputs = rng.integers(-128, 128, (CASES, n)).astype(np.int8)
        inputs[0] = 0
        inputs[1] = 127
        inputs[2] = -128
        outs = tflm_outputs(tfl, inputs, arena + 1024)
        (OUT / f"{name}.tflite").write_bytes(tfl)
        with open(OUT / f"{name}.io", "wb") as f:
            f.write(b"TIO1" + struct.pack("<III", CASES, n, outs.shape[1]))
            for x, y in zip(inputs, outs, strict=True):
                f.write(x.tobytes() + y.tobytes())
        lines.append(f"{name} {arena} {','.join(ops)}")
        print(name, len(tfl), arena, ops)
    (OUT / "models.txt").write_text("\n".join(sorted(lines)) + "\n")


def images(only: set[str] | None = None) -> None:
    """Model images (TMLM) for the device tests, self-test expectations computed by the real TFLM.
    `only`: file names (e.g. {"wide_v5"}) to (re)build, leaving the others untouched."""
    from app.ml.tflm import build_image
    from app.protocol.image import ModelImage

    factory = ModelImage.from_bytes((ROOT / "resources/models/factory.tmlm").read_bytes())
    arenas = {ln.split()[0]: int(ln.split()[1]) for ln in (OUT / "models.txt").read_text().splitlines() if ln}
    rng = np.random.default_rng(7)
    feats = (factory.mean + factory.std * rng.normal(0, 1, 36)).astype("f4")
    specs = [
        # (file, name, version, tflite, mean, std, threshold, selftest features)
        ("fw_test_v2", "fw-test", 2, "ae36_default", factory.mean, factory.std * 1.5, 0.5, feats),
        ("tanh_v3", "tanh-model", 3, "ae36_tanh", factory.mean, factory.std, 0.5, feats),
        ("mlperf_ad_v4", "mlperf-ad", 4, "mlperf_ad", np.zeros(640, "f4"), np.ones(640, "f4"), 10.0,
         rng.normal(0, 1, 640).astype("f4")),
        # the factory network normalising with a quarter of its std: inputs 4x larger, scores ~16x
        # (17-38x on the emulator's healthy machine), a change no window-to-window variation mimics
        # (tests/firmware/test_qemu_deploy.py); the threshold follows, so a healthy machine is no alarm
        ("factory_v2", factory.name, 2, None, factory.mean, factory.std * 0.25, factory.threshold * 16.0, feats),
        ("wide_v5", "wide-ae", 5, "ae36_wide", factory.mean, factory.std, 0.5, feats),
    ]
    for fname, name, version, tfl_name, mean, std, thr, st in specs:
        if only and fname not in only:
            continue
        tfl = factory.tflite if tfl_name is None else _flatbuffer(tfl_name)
        arena = 65536 if tfl_name is None else arenas[tfl_name] + 1024
        img = build_image(name, version, tfl, mean, std, thr, st, arena=arena)
        (OUT / f"{fname}.tmlm").write_bytes(img.to_bytes())
        print(fname, len(img.to_bytes()), img.selftest_score)
    # The MLPerf flatbuffer (318 KB) is committed once, inside its image; the engine test reads it there.
    if (OUT / "mlperf_ad.tflite").exists():
        (OUT / "mlperf_ad.tflite").unlink()


def _flatbuffer(name: str) -> bytes:
    """A generated model's flatbuffer: its .tflite, or the TFLITE section of an image holding it."""
    from app.protocol.image import ModelImage

    path = OUT / f"{name}.tflite"
    if path.exists():
        return path.read_bytes()
    for image in sorted(OUT.glob(f"{name}_v*.tmlm")):
        return ModelImage.from_bytes(image.read_bytes()).tflite
    raise FileNotFoundError(path)


if __name__ == "__main__":
    if sys.argv[1:2] == ["images"]:
        images(set(sys.argv[2:]))
    else:
        main()
