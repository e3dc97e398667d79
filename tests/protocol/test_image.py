"""Model image container: round trip and every defect named (PROTOCOL.md section 6)."""

from __future__ import annotations

import numpy as np
import pytest

from app.domain.errors import ModelError
from app.protocol.image import ALIGN, ModelImage


def _image(n: int = 36) -> ModelImage:
    rng = np.random.default_rng(3)
    return ModelImage("pump-ae", 4, 0.25, rng.normal(size=n).astype(np.float32),
                      rng.uniform(0.5, 2, size=n).astype(np.float32), bytes(range(200)),
                      rng.normal(size=n).astype(np.float32), 0.125, 0.001)


def test_round_trip_preserves_everything():
    img = _image()
    back = ModelImage.from_bytes(img.to_bytes())
    assert (back.name, back.version, back.tflite) == ("pump-ae", 4, img.tflite)
    assert back.threshold == pytest.approx(0.25)
    np.testing.assert_array_equal(back.mean, img.mean)
    np.testing.assert_array_equal(back.std, img.std)
    np.testing.assert_array_equal(back.selftest_input, img.selftest_input)
    assert back.selftest_score == pytest.approx(0.125)


def test_tflite_section_is_16_byte_aligned_for_in_place_parsing():
    raw = _image().to_bytes()
    assert raw.index(bytes(range(200))) % ALIGN == 0


@pytest.mark.parametrize("mutate, reason", [
    (lambda b: b[:10], "shorter"),
    (lambda b: b"XXXX" + b[4:], "magic"),
    (lambda b: b[:-5], "truncated"),
    (lambda b: b + b"\0" * 16, "holds"),
])
def test_defects_are_named(mutate, reason):
    with pytest.raises(ModelError, match=reason):
        ModelImage.from_bytes(mutate(_image().to_bytes()))


def test_missing_required_section_is_refused():
    img = _image()
    raw = bytearray(img.to_bytes())
    # turn the TFLITE section (type 3) into an unknown type 9: it is skipped, so TFLITE is missing
    at = raw.index((3).to_bytes(4, "little") + (200).to_bytes(4, "little"))
    raw[at] = 9
    with pytest.raises(ModelError, match="required section 3"):
        ModelImage.from_bytes(bytes(raw))
