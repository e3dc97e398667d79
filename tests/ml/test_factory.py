"""The shipped factory model (resources/models/factory.tmlm): a valid, self-testing image that fits
the smallest profile and honestly detects simulated faults on machines it never saw."""

from __future__ import annotations

import json

import numpy as np
import pytest

from app.domain.profiles import PROFILES
from app.fleet import factory
from app.ml import pipeline, store, tflm
from app.protocol.codes import FaultMask
from app.protocol.image import ModelImage

from .conftest import simulate


@pytest.fixture(scope="module")
def shipped():
    image_path, card_path = factory.factory_paths()
    data = image_path.read_bytes()
    return data, ModelImage.from_bytes(data), json.loads(card_path.read_text())


def test_factory_image_is_valid_and_fits_the_smallest_profile(shipped):
    data, image, card = shipped
    assert (image.name, image.version, image.n_features) == ("factory", 1, 36)
    assert card["sha256"] == store.sha256_hex(data)
    arena = tflm.min_arena_size(image.tflite)
    assert arena == card["arena"]
    passed, _ = tflm.Scorer(image, arena).self_test()
    assert passed
    f446 = PROFILES["stm32f446"]
    assert len(data) <= f446.slot_size and arena <= f446.arena_budget
    assert set(tflm.model_ops(image.tflite)) <= f446.ops


@pytest.mark.parametrize("fault", [FaultMask.IMBALANCE, FaultMask.BEARING_OUTER, FaultMask.MISALIGNMENT],
                         ids=["imbalance", "bearing_outer", "misalignment"])
def test_factory_model_alarms_on_moderate_faults(shipped, fault):
    _, image, card = shipped
    rows = simulate(seed=70 + int(fault), machines=3, windows=6, fault=fault, severity=0.5, speeds=(24.0, 30.0))
    scores = pipeline.int8_scores(image, card["arena"], rows)
    assert np.mean(scores > image.threshold) >= 0.9


def test_factory_model_is_quiet_on_unseen_healthy_machines(shipped):
    """The virtual fleet runs machines at 24-30 Hz the model never trained on."""
    _, image, card = shipped
    rows = simulate(seed=77, machines=6, windows=8, speeds=(24.0, 30.0))
    scores = pipeline.int8_scores(image, card["arena"], rows)
    assert np.mean(scores > image.threshold) <= 0.05
