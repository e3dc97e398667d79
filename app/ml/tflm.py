"""The real TensorFlow Lite Micro interpreter (PyPI `tflite-micro`), and what we learn from it:
the ops a model uses, the smallest tensor arena it loads in, and the anomaly score of
firmware/PROTOCOL.md section 6.1, computed exactly as a device computes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

from app.domain.errors import ModelError
from app.protocol.codes import ErrorCode
from app.protocol.image import ModelImage

log = logging.getLogger(__name__)

# No project model needs more than this; a model that will not load in it is broken, not big.
MAX_ARENA_PROBE = 8 * 1024 * 1024
# Arena search stops when the bracket is this narrow: TFLM allocates in 16-byte aligned blocks.
ARENA_SEARCH_RESOLUTION = 16
# TFLM (PyPI build) segfaults instead of failing on arenas of a few hundred bytes; never go below.
MIN_ARENA_PROBE = 1024
# A probe child that has not answered in this long is hung on a malformed model.
PROBE_TIMEOUT_S = 30.0


class LoadError(ModelError):
    """The interpreter refused a model; `code` is the protocol error a device would answer."""


def _schema():
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as schema

    return schema


def model_ops(tflite: bytes) -> list[str]:
    """Builtin op names the model's graph uses, in first-use order."""
    schema = _schema()
    try:
        model = schema.Model.GetRootAsModel(tflite, 0)
        codes = []
        for i in range(model.OperatorCodesLength()):
            oc = model.OperatorCodes(i)
            code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
            codes.append(code)
        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        used: list[str] = []
        for s in range(model.SubgraphsLength()):
            sub = model.Subgraphs(s)
            for o in range(sub.OperatorsLength()):
                name = names.get(codes[sub.Operators(o).OpcodeIndex()], "UNKNOWN")
                if name not in used:
                    used.append(name)
        return used
    except Exception as exc:  # flatbuffers raises plain IndexError/struct.error on garbage
        raise LoadError(f"not a valid TFLite flatbuffer: {exc}", code=ErrorCode.BAD_IMAGE) from exc


# dup2 on fds 1/2 affects the whole process: two threads interleaving it (devices loading models at
# once) would leave stdout and stderr pointing at /dev/null for good. One redirection at a time,
# shared with app.ml.tfimport's stderr capture (reentrant: a redirection may nest in the same thread).
_NATIVE_OUTPUT_LOCK = threading.RLock()


def native_output_lock() -> threading.RLock:
    """The lock every dup2 of fds 1/2 in this process holds (see _NATIVE_OUTPUT_LOCK)."""
    return _NATIVE_OUTPUT_LOCK


@contextlib.contextmanager
def _quiet_native_output():
    """TFLM prints allocation failures on the C stdout/stderr; keep them out of the operator's terminal."""
    with _NATIVE_OUTPUT_LOCK:
        saved = []
        try:
            for fd in (1, 2):
                saved.append((fd, os.dup(fd)))
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)
                os.close(devnull)
            yield
        finally:
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)


def load_interpreter(tflite: bytes, arena_size: int):
    """A TFLM interpreter with an arena of `arena_size` bytes, or LoadError."""
    from tflite_micro.python.tflite_micro import runtime

    try:
        with _quiet_native_output():
            return runtime.Interpreter.from_bytes(bytes(tflite), arena_size=int(arena_size))
    except Exception as exc:
        raise LoadError(f"TFLM could not load the model with a {arena_size}-byte arena: {exc}",
                        code=ErrorCode.LOAD_FAILED) from exc


def _probe_child(tflite: bytes, arena_sizes: list[int], conn) -> None:
    import faulthandler

    faulthandler.disable()  # a crash here is an expected answer, not a traceback for the terminal
    global _NATIVE_OUTPUT_LOCK
    _NATIVE_OUTPUT_LOCK = threading.RLock()  # another parent thread may have held it at fork time
    for size in arena_sizes:
        try:
            interp = load_interpreter(tflite, size)
            interp.invoke()
            conn.send(True)
        except LoadError:
            conn.send(False)
    conn.close()


def _probe_once(tflite: bytes, arena_sizes: list[int]) -> tuple[list[bool], bool]:
    """Results up to the first crash, and whether the child crashed."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_probe_child, args=(tflite, arena_sizes, child), daemon=True)
    proc.start()
    child.close()
    results: list[bool] = []
    try:
        while len(results) < len(arena_sizes):
            if not parent.poll(PROBE_TIMEOUT_S):
                raise LoadError("the interpreter hung loading the model", code=ErrorCode.LOAD_FAILED)
            results.append(parent.recv())
        return results, False
    except EOFError:
        return results, True
    finally:
        proc.join(1.0)
        if proc.is_alive():
            proc.kill()
        parent.close()


def probe_load(tflite: bytes, arena_sizes: list[int]) -> list[bool]:
    """Whether the model loads and runs with each arena size, tried in forked child processes.

    TFLM has no flatbuffer verifier and crashes the process on malformed models, and (the PyPI
    build) on some arenas just too small for a valid model. So a model is never loaded in-process
    before a child survived it; a size whose child crashed counts as "does not load".
    """
    model_ops(tflite)  # garbage gets a clear error without a child
    tflite = bytes(tflite)
    results: list[bool] = []
    while len(results) < len(arena_sizes):
        done, crashed = _probe_once(tflite, arena_sizes[len(results):])
        results += done
        if crashed:
            log.debug("TFLM crashed probing a %d-byte arena", arena_sizes[len(results)])
            results.append(False)
    return results


def min_arena_size(tflite: bytes, upper: int = MAX_ARENA_PROBE) -> int:
    """Smallest arena TFLM loads and runs the model in, by bisection over real load attempts
    (in a child process, see probe_load). Raises LoadError when it does not load at all."""
    if not probe_load(tflite, [upper])[0]:
        raise LoadError(f"the model does not load even with a {upper}-byte arena (malformed or "
                        "unsupported)", code=ErrorCode.LOAD_FAILED)
    if probe_load(tflite, [MIN_ARENA_PROBE])[0]:
        return MIN_ARENA_PROBE
    lo, hi = MIN_ARENA_PROBE, upper  # lo fails, hi loads
    while hi - lo > ARENA_SEARCH_RESOLUTION:
        # probe several sizes per child: one fork per bisection round costs more than the loads
        points = sorted({lo + ((hi - lo) * k // 8) // 16 * 16 for k in range(1, 8)} - {lo})
        ok = probe_load(tflite, points)
        for point, good in zip(points, ok, strict=True):
            if good:
                hi = point
                break
            lo = point
    return hi


def round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


@dataclass
class QuantParams:
    scale: float
    zero_point: int


def _quant(details: dict) -> QuantParams:
    q = details["quantization_parameters"]
    return QuantParams(float(q["scales"][0]), int(q["zero_points"][0]))


class Scorer:
    """A loaded model image that scores feature vectors as a device does (PROTOCOL.md 6.1)."""

    def __init__(self, image: ModelImage, arena_size: int) -> None:
        self.image = image
        started = time.perf_counter()
        self.interpreter = load_interpreter(image.tflite, arena_size)
        self.load_s = time.perf_counter() - started
        inp, out = self.interpreter.get_input_details(0), self.interpreter.get_output_details(0)
        if inp["dtype"] is not np.int8 or out["dtype"] is not np.int8:
            raise LoadError("model input and output must be int8 (full-integer quantisation)",
                            code=ErrorCode.UNSUPPORTED_OP)
        n = image.n_features
        if tuple(inp["shape"]) != (1, n) or tuple(out["shape"]) != (1, n):
            raise LoadError(f"model tensors {tuple(inp['shape'])} -> {tuple(out['shape'])} do not match "
                            f"{n} features", code=ErrorCode.BAD_IMAGE)
        self.q_in, self.q_out = _quant(inp), _quant(out)
        self._mean = np.asarray(image.mean, np.float32)
        self._std = np.asarray(image.std, np.float32)

    def normalise(self, features: np.ndarray) -> np.ndarray:
        return ((np.asarray(features, np.float32) - self._mean) / self._std).astype(np.float32)

    def errors(self, features: np.ndarray) -> np.ndarray:
        """Squared reconstruction error per feature, (y - x)^2 in f32: the score is their mean, so
        they say which features drove it (an alarm's cause)."""
        x = self.normalise(features)
        q = round_half_away(x / np.float32(self.q_in.scale)) + self.q_in.zero_point
        self.interpreter.set_input(np.clip(q, -128, 127).astype(np.int8).reshape(1, -1), 0)
        self.interpreter.invoke()
        y_q = self.interpreter.get_output(0).reshape(-1).astype(np.float32)
        y = (y_q - np.float32(self.q_out.zero_point)) * np.float32(self.q_out.scale)
        return (y - x).astype(np.float32) ** 2

    def score(self, features: np.ndarray) -> float:
        err = self.errors(features)
        # index order in f32, as PROTOCOL.md 6.1 and the firmware sum it: add.accumulate is strictly
        # sequential (unlike sum's pairwise reduction), 10x cheaper than a Python loop
        total = np.add.accumulate(err, dtype=np.float32)[-1]
        return float(total / np.float32(len(err)))

    def timed_score(self, features: np.ndarray) -> tuple[float, float]:
        started = time.perf_counter()
        value = self.score(features)
        return value, time.perf_counter() - started

    def self_test(self) -> tuple[bool, float]:
        """(passed, score) for the image's shipped reference input."""
        if self.image.selftest_input is None:
            return False, float("nan")
        value = self.score(self.image.selftest_input)
        return abs(value - self.image.selftest_score) <= self.image.selftest_tolerance, value


# The self-test passes within this many score units plus this fraction of the expected score:
# TFLM is deterministic, so a different device-side result means a different (corrupted) model.
SELFTEST_ABS_TOLERANCE = 1e-4
SELFTEST_REL_TOLERANCE = 1e-3


def build_image(name: str, version: int, tflite: bytes, mean: np.ndarray, std: np.ndarray,
                threshold: float, selftest_features: np.ndarray, arena: int | None = None) -> ModelImage:
    """A complete model image whose self-test expectation was computed by the real TFLM.

    `arena`: a size already proven by `min_arena_size`/`probe_load` for this flatbuffer (saves
    the search); by default it is searched here."""
    image = ModelImage(name, version, float(threshold), np.asarray(mean, np.float32),
                       np.asarray(std, np.float32), bytes(tflite))
    if arena is None:
        arena = min_arena_size(image.tflite)  # proves it loads (in a child) before the in-process load
    expected = Scorer(image, arena).score(selftest_features)
    image.selftest_input = np.asarray(selftest_features, np.float32)
    image.selftest_score = expected
    image.selftest_tolerance = SELFTEST_ABS_TOLERANCE + SELFTEST_REL_TOLERANCE * abs(expected)
    return image
