"""Fit checks: the arena found by bisection is the real TFLM minimum, each profile's verdict comes
with its reason, and a model that does not fit is refused."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from app.domain.errors import ModelError
from app.domain.profiles import C_ENGINE_OPS, PROFILES
from app.ml import conversion, tflm, validation
from app.protocol.codes import ErrorCode


def small_model(activation: str):
    from app.ml.tfimport import keras

    k = keras()
    k.utils.set_random_seed(0)
    inputs = k.Input(shape=(36,))
    x = k.layers.Dense(16, activation=activation)(inputs)
    return k.Model(inputs, k.layers.Dense(36)(x))


def rep() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((64, 36)).astype(np.float32)


def test_arena_search_finds_the_tflm_minimum(trained):
    arena = tflm.min_arena_size(trained.tflite)
    assert arena == trained.card["arena"]
    assert tflm.probe_load(trained.tflite, [arena, arena - tflm.ARENA_SEARCH_RESOLUTION]) == [True, False]


def test_small_model_fits_every_profile(trained):
    checked = validation.validate(trained.tflite, trained.card["image_size"])
    assert set(checked.fit) == set(PROFILES)
    assert all(f.fits and not f.reasons for f in checked.fit.values())


def test_arena_over_budget_is_refused_with_reason(trained):
    tiny = dataclasses.replace(PROFILES["stm32f446"], arena_budget=1024)
    fit = validation.fit_profile(tiny, trained.card["image_size"], trained.card["arena"], trained.card["ops"])
    assert not fit.fits
    assert fit.reasons == [f"tensor arena {trained.card['arena'] / 1024:.1f} KB exceeds the 1.0 KB RAM budget"]


def test_image_over_slot_is_refused_with_device_code():
    slot = PROFILES["stm32f446"].slot_size
    with pytest.raises(ModelError, match=r"exceeds the 192\.0 KB model slot") as err:
        validation.require_fit("stm32f446", slot + 1, 4096, ["FULLY_CONNECTED"], label="big@1")
    assert err.value.code == ErrorCode.TOO_LARGE
    validation.require_fit("stm32f446", slot, 4096, ["FULLY_CONNECTED"])  # exactly full still fits


def test_op_outside_a_profiles_set_is_reported_per_profile():
    tflite = conversion.to_int8(small_model("tanh"), rep())
    checked = validation.validate(tflite, len(tflite) + 512)
    assert "TANH" in checked.ops
    assert checked.fit["esp32-wroom-32"].fits  # TFLM engine: TANH is in its op resolver
    # every profile running the C engine (firmware/core/tm_engine.c) refuses it, with the reason
    c_engine = [key for key, p in PROFILES.items() if p.ops == C_ENGINE_OPS]
    assert sorted(c_engine) == ["nrf52840", "qemu-mps2-an386", "stm32f446", "stm32l4r5"]
    for key in c_engine:
        fit = checked.fit[key]
        assert not fit.fits and fit.unsupported_ops == ["TANH"]
        assert "ops not supported on this device: TANH" in fit.reasons
        with pytest.raises(ModelError) as err:
            validation.require_fit(key, len(tflite), checked.arena, checked.ops)
        assert err.value.code == ErrorCode.UNSUPPORTED_OP
    validation.require_fit("esp32-wroom-32", len(tflite), checked.arena, checked.ops)


def test_dequantize_is_only_an_esp32_op():
    """The C engine runs int8 end to end (no DEQUANTIZE kernel); the ESP32's TFLM resolver has one."""
    ops = ["QUANTIZE", "FULLY_CONNECTED", "DEQUANTIZE"]
    fit = validation.fit_all(8 * 1024, 4096, ops)
    assert fit["esp32-wroom-32"].fits
    assert {key for key, f in fit.items() if not f.fits} == {"nrf52840", "qemu-mps2-an386", "stm32f446", "stm32l4r5"}
    assert all(f.unsupported_ops == ["DEQUANTIZE"] for f in fit.values() if not f.fits)


def test_op_no_device_supports_is_an_error():
    tflite = conversion.to_int8(small_model("exponential"), rep())
    with pytest.raises(ModelError, match="ops no supported device runs: EXP") as err:
        validation.validate(tflite, len(tflite))
    assert err.value.code == ErrorCode.UNSUPPORTED_OP


def test_fit_table_text_names_reasons():
    fit = {k: v.to_dict() for k, v in validation.fit_all(300 * 1024, 20000, ["FULLY_CONNECTED"]).items()}
    text = validation.format_table(fit)
    assert "stm32f446" in text and "image 300.0 KB exceeds the 192.0 KB model slot" in text
    assert text.count(" yes ") == 4


def test_pipeline_modules_do_not_import_tensorflow_at_import_time():
    import subprocess
    import sys

    modules = ["app.ml." + m for m in ("registry", "datasets", "validation", "pipeline", "importer", "mlperf",
                                       "conversion", "training", "workflows", "export", "recording")]
    modules.append("app.fleet.factory")  # the factory model's build (moved from app.ml: it simulates)
    code = f"import sys; import {', '.join(modules)}, app.cli.model, app.cli.data; " \
           "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == ["False", "False"]
