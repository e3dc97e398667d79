"""Why a device alarmed: the per-feature reconstruction error behind its anomaly score.

The score is the mean of the squared reconstruction errors of the 36 features (PROTOCOL.md 6.1),
so each feature's error is its share of the score. A device's TELEMETRY carries the feature vector
it scored; the host runs the same model image (found in the registry by the HELLO's model name,
version and SHA-256 prefix) through the same TFLM interpreter and gets the same errors. That turns
"sim-004 alarm 1131" into "driven by x band 850-1603 Hz energy (46 %), y kurtosis (20 %)". When
the host cannot reproduce the device's score (another image, a model it does not have), it says
nothing rather than a wrong cause.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from app.domain.errors import TinyMLOpsError
from app.ml.features import DEFAULT_SPEC, FeatureSpec
from app.protocol.image import ModelImage, sha256

log = logging.getLogger(__name__)

# Features named in an alarm's sentence: the largest errors; the rest is rarely the story.
TOP_FEATURES = 3
# A feature with less than this share of the score is not named (the largest one always is):
# "x RMS (0 %)" would say nothing.
MIN_SHARE = 0.05
# The host's recomputed score must match the device's within this (relative, absolute): TFLM is
# deterministic, so a larger difference means another model or other features, not rounding.
SCORE_MATCH_REL = 1e-3
SCORE_MATCH_ABS = 1e-4
# Host-side interpreter arena: generous (the host is not the device), every project model fits.
HOST_ARENA_BYTES = 1024 * 1024
# Models whose scorer is kept: a fleet runs a handful of versions at a time.
MAX_CACHED_MODELS = 16

_TIME_WORDS = {"rms": "RMS", "peak": "peak", "crest": "crest factor", "kurtosis": "kurtosis"}

ImageLookup = Callable[[str, int], bytes | None]


@dataclass(frozen=True)
class FeatureError:
    """One feature's part of the score."""

    name: str  # the feature's name in the spec, e.g. "x_band7"
    label: str  # what an engineer reads, e.g. "x band 850-1603 Hz energy"
    axis: str
    error: float  # (y - x)^2 / n: this feature's contribution to the score
    share: float  # error / score, 0..1

    def to_dict(self) -> dict:
        return {"feature": self.name, "label": self.label, "axis": self.axis, "error": self.error,
                "share": self.share}


@dataclass(frozen=True)
class AlarmCause:
    score: float  # as the host recomputed it (matches the device's)
    features: tuple[FeatureError, ...]  # the largest contributions first, at most TOP_FEATURES

    def text(self) -> str:
        return "driven by " + ", ".join(f"{f.label} ({f.share * 100:.0f} %)" for f in self.features)

    def to_dict(self) -> dict:
        return {"score": self.score, "features": [f.to_dict() for f in self.features]}


def feature_label(name: str, spec: FeatureSpec = DEFAULT_SPEC) -> tuple[str, str]:
    """(axis, words) of a feature name: "x_band7" -> ("x", "x band 850-1603 Hz energy")."""
    axis, _, kind = name.partition("_")
    if kind.startswith("band") and kind[4:].isdigit():
        band = int(kind[4:])
        hz_per_bin = spec.sample_rate / spec.window
        lo, hi = spec.band_edges[band] * hz_per_bin, spec.band_edges[band + 1] * hz_per_bin
        return axis, f"{axis} band {lo:.0f}-{hi:.0f} Hz energy"
    return axis, f"{axis} {_TIME_WORDS.get(kind, kind)}"


def cause_of(errors: np.ndarray, top: int = TOP_FEATURES, spec: FeatureSpec = DEFAULT_SPEC) -> AlarmCause:
    """The cause the squared errors `errors` (one per feature of `spec`, as Scorer.errors gives)
    tell: score = their mean, the `top` largest contributions (of at least MIN_SHARE, but always
    the largest) with their shares."""
    names = spec.names()
    errors = np.asarray(errors, np.float64)
    if errors.shape != (len(names),):
        raise ValueError(f"{errors.shape} errors for {len(names)} features")
    parts = errors / len(errors)
    score = float(parts.sum())
    order = np.argsort(-parts, kind="stable")[:top]
    found = []
    for rank, i in enumerate(order):
        share = float(parts[i] / score) if score else 0.0
        if rank and share < MIN_SHARE:
            break
        axis, label = feature_label(names[i], spec)
        found.append(FeatureError(names[i], label, axis, float(parts[i]), share))
    return AlarmCause(score, tuple(found))


def registry_image(name: str, version: int) -> bytes | None:
    """The image of model `name`@`version` from the registry, or the virtual fleet's factory model;
    None when this host does not have it."""
    from app.ml.registry import Registry

    try:
        with Registry() as registry:
            return registry.image_bytes(registry.resolve(f"{name}@{version}"))
    except TinyMLOpsError:
        pass
    if name == "factory":
        from app.fleet.fleet import load_factory_image

        try:
            raw = load_factory_image()
        except TinyMLOpsError:
            return None
        return raw if ModelImage.from_bytes(raw).version == version else None
    return None


class AlarmExplainer:
    """Explains alarms of device records (app.services.fleet_monitor.DeviceRecord): one scorer per
    model image, loaded on the first alarm of that model. Thread-safe; never raises for a record
    it cannot explain (returns None and logs why at debug level)."""

    def __init__(self, images: ImageLookup = registry_image) -> None:
        self._images = images
        self._scorers: dict[tuple[str, int, bytes], object | None] = {}
        self._lock = threading.Lock()

    def explain(self, record) -> AlarmCause | None:
        features = getattr(record, "features", ())
        if not record.model_name or record.score is None or len(features) != DEFAULT_SPEC.n_features:
            return None
        sha = record.hello.model_sha if record.hello is not None else b""
        with self._lock:
            scorer = self._scorer(record.model_name, record.model_version, sha)
            if scorer is None:
                return None
            errors = scorer.errors(np.asarray(features, np.float32))
        cause = cause_of(errors)
        if not math.isclose(cause.score, record.score, rel_tol=SCORE_MATCH_REL, abs_tol=SCORE_MATCH_ABS):
            log.debug("%s: host score %.6g differs from the device's %.6g; no cause given", record.device_id,
                      cause.score, record.score)
            return None
        return cause

    def text(self, record) -> str | None:
        """The cause as a phrase for the events panel and the CLI, or None."""
        cause = self.explain(record)
        return cause.text() if cause is not None else None

    def _scorer(self, name: str, version: int, sha: bytes):
        key = (name, version, bytes(sha))
        if key not in self._scorers:
            if len(self._scorers) >= MAX_CACHED_MODELS:
                self._scorers.pop(next(iter(self._scorers)))
            self._scorers[key] = self._load(name, version, bytes(sha))
        return self._scorers[key]

    def _load(self, name: str, version: int, sha: bytes):
        from app.ml import tflm

        raw = self._images(name, version)
        if raw is None:
            log.debug("no image of %s@%d on this host: alarms of it are not explained", name, version)
            return None
        if sha and sha256(raw)[:len(sha)] != sha:
            log.debug("this host's %s@%d is not the image the device runs (SHA-256 differs)", name, version)
            return None
        try:
            image = ModelImage.from_bytes(raw)
            if image.n_features != DEFAULT_SPEC.n_features:
                return None
            return tflm.Scorer(image, HOST_ARENA_BYTES)
        except TinyMLOpsError as exc:
            log.debug("cannot load %s@%d on the host: %s", name, version, exc)
            return None

