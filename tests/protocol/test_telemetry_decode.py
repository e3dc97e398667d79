"""TELEMETRY's own decoder (two unpacks, no constructor rounding) against the generic field-by-field
parser it replaces on the hot path: same message for every payload, same error for every bad one."""

from __future__ import annotations

import math
import struct

import pytest

from app.domain.errors import ProtocolError
from app.protocol import messages as m
from app.protocol.codes import ErrorCode


def _generic(payload: bytes) -> m.Message:
    """The layout-driven parser every other message uses (Message.from_payload)."""
    return m.Message.from_payload.__func__(m.Telemetry, payload)


def _payload(features: tuple[float, ...], score: float = 0.125) -> bytes:
    return m.Telemetry(uptime_ms=123_456, window_seq=77, model_version=5, score=score, threshold=2.5, flags=5,
                       shaft_hz=24.7, features=features).payload()


@pytest.mark.parametrize("features", [(), (1.5,), tuple(i / 7 for i in range(36)), tuple(float(i) for i in range(255))])
def test_fast_decode_equals_the_generic_parser(features: tuple[float, ...]) -> None:
    payload = _payload(features)
    fast = m.Telemetry.from_payload(payload)
    assert fast == _generic(payload)
    assert type(fast.features) is tuple and all(type(v) is float for v in fast.features)
    assert m.encode(fast, 3) == m.encode(_generic(payload), 3)  # and it encodes back to the same bytes


def test_special_values_come_back_as_the_generic_parser_gives_them() -> None:
    payload = _payload((math.inf, -math.inf, math.nan, -0.0, 1e-45), score=math.nan)
    fast, slow = m.Telemetry.from_payload(payload), _generic(payload)
    assert math.isnan(fast.score) and math.isnan(slow.score)
    assert fast.features[:2] == slow.features[:2] == (math.inf, -math.inf)
    assert math.isnan(fast.features[2])
    assert math.copysign(1, fast.features[3]) == -1.0 and fast.features[4] == slow.features[4] > 0


def test_bytes_after_the_features_are_ignored_as_by_the_generic_parser() -> None:
    payload = _payload((1.0, 2.0)) + b"\x01\x02\x03"  # a later minor revision's appended field
    assert m.Telemetry.from_payload(payload) == _generic(payload) == m.Telemetry.from_payload(payload[:-3])


@pytest.mark.parametrize("cut", [0, 5, 25, 26, 27, 30])
def test_a_short_payload_is_malformed_naming_the_field_it_ends_in(cut: int) -> None:
    payload = _payload((1.0, 2.0))  # 26 bytes of fixed part and count, then 8 bytes of features
    with pytest.raises(ProtocolError) as fast:
        m.Telemetry.from_payload(payload[:cut])
    with pytest.raises(ProtocolError) as slow:
        _generic(payload[:cut])
    assert fast.value.code == ErrorCode.MALFORMED and str(fast.value) == str(slow.value)


def test_a_feature_count_beyond_the_payload_is_malformed() -> None:
    payload = bytearray(_payload((1.0, 2.0)))
    payload[25] = 200  # the count byte claims 200 features, 2 follow
    with pytest.raises(ProtocolError, match="features") as err:
        m.decode(struct.pack("<BBHH", 1, m.Telemetry.TYPE, 1, len(payload)) + bytes(payload))
    assert err.value.code == ErrorCode.MALFORMED
