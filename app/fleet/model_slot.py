"""A virtual device's model slots' contents: proving a model image on a hardware profile (parse,
ops, arena, load into the real TFLM interpreter, self-test) and timing its inferences, with the
protocol error code for each way an image can fail (PROTOCOL.md 5.3, 4.4)."""

from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass

from app.domain.errors import ModelError
from app.domain.profiles import HardwareProfile
from app.ml import tflm
from app.ml.features import DEFAULT_SPEC
from app.protocol import messages as m
from app.protocol.codes import ERROR_TEXT, ErrorCode, LatencyFlags
from app.protocol.image import ModelImage

# BENCHMARK runs at most this many inferences: more would stall every device sharing the thread.
MAX_BENCH_COUNT = 2000
# Arena for "does it load at all": anything that fails here is broken, not big.
BIG_ARENA = tflm.MAX_ARENA_PROBE

# probe_load forks a child per call; a fleet rolling one model out probes it once per arena size.
_probe_cache: dict[tuple[bytes, int], tuple[bool, bool]] = {}
_probe_lock = threading.Lock()


def probe(tflite: bytes, budget: int) -> tuple[bool, bool]:
    """(loads within budget, loads with a big arena), cached by model hash."""
    key = (hashlib.sha256(tflite).digest(), budget)
    with _probe_lock:
        if key not in _probe_cache:
            ok_budget, ok_big = tflm.probe_load(tflite, [budget, BIG_ARENA])
            _probe_cache[key] = (ok_budget, ok_big)
        return _probe_cache[key]


class Refused(Exception):
    """A command failed with a protocol error code (becomes an ERROR reply)."""

    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(message or ERROR_TEXT.get(code, code.name))
        self.code = code


@dataclass
class LoadedModel:
    """A verified image in a slot, loaded into its own interpreter."""

    raw: bytes
    image: ModelImage
    sha256: bytes
    scorer: tflm.Scorer
    load_us: int


def percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list (PROTOCOL.md 4.4)."""
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def verify(raw: bytes, profile: HardwareProfile) -> LoadedModel:
    """Parse, check ops and arena, load, self-test on `profile`; a Refused with the exact protocol
    code otherwise (PROTOCOL.md 5.3), never a model that could not prove itself."""
    try:
        image = ModelImage.from_bytes(raw)
    except ModelError as exc:
        raise Refused(ErrorCode.BAD_IMAGE, str(exc)) from exc
    if image.selftest_input is None:
        raise Refused(ErrorCode.BAD_IMAGE, "image has no SELFTEST section: a model must prove itself")
    if image.n_features != DEFAULT_SPEC.n_features:
        raise Refused(ErrorCode.BAD_IMAGE, f"model takes {image.n_features} features, device computes "
                       f"{DEFAULT_SPEC.n_features}")
    try:
        ops = tflm.model_ops(image.tflite)
    except tflm.LoadError as exc:
        raise Refused(ErrorCode(exc.code), str(exc)) from exc
    missing = [op for op in ops if op not in profile.ops]
    if missing:
        raise Refused(ErrorCode.UNSUPPORTED_OP, f"{profile.key} cannot run {', '.join(missing)}")
    budget = profile.arena_budget
    try:
        ok_budget, ok_big = probe(image.tflite, budget)
    except tflm.LoadError as exc:
        raise Refused(ErrorCode.LOAD_FAILED, str(exc)) from exc
    if not ok_budget:
        if ok_big:
            raise Refused(ErrorCode.ARENA_TOO_SMALL, f"model does not load in the {budget}-byte arena")
        raise Refused(ErrorCode.LOAD_FAILED, "interpreter refused the model")
    try:
        scorer = tflm.Scorer(image, budget)
    except tflm.LoadError as exc:
        raise Refused(ErrorCode(exc.code), str(exc)) from exc
    passed, value = scorer.self_test()
    if not passed:
        raise Refused(ErrorCode.SELFTEST_FAILED, f"self-test score {value:.6g}, expected "
                       f"{image.selftest_score:.6g} +- {image.selftest_tolerance:.2g}")
    return LoadedModel(raw, image, hashlib.sha256(raw).digest(), scorer, int(scorer.load_s * 1e6))

def latency(model: LoadedModel, deploy_us: int, count: int, trial: bool = False) -> m.Latency:
    """LATENCY for `model`: `count` timed inferences of its self-test input (PROTOCOL.md 4.4)."""
    count = min(count, MAX_BENCH_COUNT)
    times: list[int] = []
    features = model.image.selftest_input
    for _ in range(count):
        _, seconds = model.scorer.timed_score(features)
        times.append(max(1, int(seconds * 1e6)))
    times.sort()
    flags = LatencyFlags.TRIAL if trial else LatencyFlags(0)
    if not times:
        return m.Latency(model.image.version, int(flags), deploy_us, model.load_us, 0, 0, 0, 0, 0)
    return m.Latency(model.image.version, int(flags), deploy_us, model.load_us, len(times), times[0],
                     percentile(times, 50), percentile(times, 95), times[-1])
